// Fully-connected driver (linear.h): blocking, weight packing and the three products of a
// layer, each one BRGEMM call per block of its result over a row of blocks:
//   forward          Y[nb][kb]  = act(Σ_cb X[nb][cb] · Wᵀ[cb][kb] + b)      batch over C/bc
//   backward data    dX[nb][cb] = Σ_kb dZ[nb][kb] · W[kb][cb]               batch over K/bk
//   backward weights dW[kb][cb] += Σ_nb dZᵀ[kb][nb] · X[nb][cb]             batch over N/bn
// with dZ = dY ⊙ act'(·) computed block by block first (and transposed for the weight
// gradient, whose result is written straight into the plain (out, in) gradient).
#include "linear.h"
#include <algorithm>
#include <atomic>
#include <cstring>
#include <omp.h>

namespace brgemm::layers {

namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// Threads for a product of `flops`: small ones are not worth waking the team.
int threads_for(double flops) { return flops < 4e6 ? 1 : num_threads(); }

// A per-thread f32 scratch block that only grows.
float* scratch(int slot, int64_t elems) {
  static thread_local std::vector<float> buf[2];
  if ((int64_t)buf[slot].size() < elems) buf[slot].resize((size_t)elems);
  return buf[slot].data();
}

// Copies `w` values from src (f32 or bf16) to dst (f32 or bf16).
void convert(const void* src, bool src_bf16, void* dst, bool dst_bf16, int64_t w) {
  if (src_bf16 == dst_bf16)
    std::memcpy(dst, src, (size_t)(w * (src_bf16 ? 2 : 4)));
  else if (src_bf16)
    bf16_to_f32((const uint16_t*)src, (float*)dst, w);
  else
    f32_to_bf16((const float*)src, (uint16_t*)dst, w);
}

char* aligned(std::vector<char>& v, int64_t bytes) {
  if ((int64_t)v.size() < bytes + 64) v.resize((size_t)(bytes + 64));
  return (char*)(((uintptr_t)v.data() + 63) & ~(uintptr_t)63);
}

// True when [a, a + n) and [b, b + n) hold the same bytes; compared in parallel chunks.
bool same_bytes(const void* a, const void* b, int64_t n) {
  const int threads = n < (int64_t(1) << 20) ? 1 : num_threads();
  std::atomic<bool> same{true};
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t part = 0; part < threads; ++part) {
    const int64_t lo = n * part / threads, hi = n * (part + 1) / threads;
    if (std::memcmp((const char*)a + lo, (const char*)b + lo, (size_t)(hi - lo))) same = false;
  }
  return same;
}

}  // namespace

int64_t fc_block(int64_t size) { return size >= 64 ? 64 : round_up(size, 16); }
int64_t fc_row_block(int64_t n) { return round_up(ceil_div(n, ceil_div(n, 64)), 2); }

void fc_to_blocked(const void* x, bool x_bf16, int64_t n, int64_t c, int64_t ld, void* xb, bool xb_bf16, int64_t bn,
                   int64_t bc) {
  const int64_t nb = ceil_div(n, bn), cb = ceil_div(c, bc), xs = x_bf16 ? 2 : 4, bs = xb_bf16 ? 2 : 4;
#pragma omp parallel for collapse(2) num_threads(threads_for(16.0 * n * c)) schedule(static)
  for (int64_t i = 0; i < nb; ++i)
    for (int64_t j = 0; j < cb; ++j) {
      char* blk = (char*)xb + ((i * cb + j) * bn * bc) * bs;
      const int64_t w = std::min(bc, c - j * bc);
      for (int64_t r = 0; r < bn; ++r) {
        char* row = blk + r * bc * bs;
        const int64_t src_row = i * bn + r;
        int64_t done = 0;
        if (src_row < n) {
          convert((const char*)x + (src_row * ld + j * bc) * xs, x_bf16, row, xb_bf16, w);
          done = w;
        }
        std::memset(row + done * bs, 0, (size_t)((bc - done) * bs));
      }
    }
}

void fc_from_blocked(const void* xb, bool xb_bf16, int64_t n, int64_t c, int64_t bn, int64_t bc, void* x, bool x_bf16,
                     int64_t ld) {
  const int64_t cb = ceil_div(c, bc), xs = x_bf16 ? 2 : 4, bs = xb_bf16 ? 2 : 4;
#pragma omp parallel for num_threads(threads_for(16.0 * n * c)) schedule(static)
  for (int64_t r = 0; r < n; ++r)
    for (int64_t j = 0; j < cb; ++j)
      convert((const char*)xb + (((r / bn) * cb + j) * bn * bc + (r % bn) * bc) * bs, xb_bf16,
              (char*)x + (r * ld + j * bc) * xs, x_bf16, std::min(bc, c - j * bc));
}

fc_layer::fc_layer(dtype t, int64_t in, int64_t out, brgemm::activation act)
    : t_(t), c_(in), k_(out), bc_(fc_block(in)), bk_(fc_block(out)), act_(act) {}

void fc_layer::pack(const float* w, bool stochastic, uint64_t seed) {
  const int64_t kp = dtype_kpack(t_), eb = dtype_b_bytes(t_);  // kp = 2 for bf16, else 1
  const int64_t cb = ceil_div(c_, bc_), kb = ceil_div(k_, bk_);
  const int64_t fblk = round_up(bc_, kp) * bk_ * eb, bblk = round_up(bk_, kp) * bc_ * eb;  // block bytes
  char* fwd = aligned(fwd_, kb * cb * fblk);
  char* bwd = aligned(bwd_, kb * cb * bblk);
  const bool bf16 = t_ == dtype::bf16;
  // One block row of W per iteration: it owns forward blocks [kb][*] and backward blocks [*][kb].
#pragma omp parallel for num_threads(threads_for(8.0 * k_ * c_)) schedule(static)
  for (int64_t i = 0; i < kb; ++i) {
    for (int64_t j = 0; j < cb; ++j) {
      std::memset(fwd + (i * cb + j) * fblk, 0, (size_t)fblk);
      std::memset(bwd + (j * kb + i) * bblk, 0, (size_t)bblk);
    }
    uint16_t* seg16 = (uint16_t*)scratch(0, bc_);
    for (int64_t j = 0; j < cb; ++j) {
      char* fb = fwd + (i * cb + j) * fblk;
      char* bb = bwd + (j * kb + i) * bblk;
      const int64_t width = std::min(bc_, c_ - j * bc_);
      for (int64_t r = 0; r < std::min(bk_, k_ - i * bk_); ++r) {
        const int64_t k = i * bk_ + r;
        const float* wr = w + k * c_ + j * bc_;
        // forward block (bc × bk) holds element (q, r); backward block (bk × bc) holds (r, q)
        if (bf16) {
          if (stochastic)
            f32_to_bf16_stochastic(wr, seg16, width, seed, (uint64_t)(k * c_ + j * bc_));
          else
            f32_to_bf16(wr, seg16, width);
          uint16_t *f = (uint16_t*)fb + r * 2, *b = (uint16_t*)bb + (r / 2) * bc_ * 2 + r % 2;
          for (int64_t q = 0; q < width; ++q) {
            f[(q / 2) * bk_ * 2 + q % 2] = seg16[q];
            b[q * 2] = seg16[q];
          }
        } else {
          float *f = (float*)fb + r, *b = (float*)bb + r * bc_;
          for (int64_t q = 0; q < width; ++q) f[q * bk_] = wr[q];
          std::memcpy(b, wr, (size_t)width * 4);
        }
      }
    }
  }
  packed_ = true;
}

void fc_layer::set_bias(const float* b) {
  has_bias_ = b != nullptr;
  if (b) seen_b_.assign(b, b + k_);
  bias_.assign((size_t)round_up(k_, bk_), 0.0f);
  if (b) std::copy(b, b + k_, bias_.begin());
}

bool fc_layer::refresh(const float* w, const float* b) {
  const bool w_same = packed_ && same_bytes(w, seen_w_.data(), k_ * c_ * 4);
  const bool b_same = packed_ && (b != nullptr) == has_bias_ && (!b || same_bytes(b, seen_b_.data(), k_ * 4));
  if (!w_same) {
    seen_w_.assign(w, w + k_ * c_);
    pack(w, false, 0);
  }
  if (!b_same) set_bias(b);
  return !(w_same && b_same);
}

void fc_layer::sgd(float* w, float* b, const float* wg, const float* bg, float lr, bool stochastic, uint64_t seed) {
  const int64_t wn = k_ * c_;
#pragma omp parallel for num_threads(threads_for(4.0 * wn)) schedule(static)
  for (int64_t i = 0; i < wn; ++i) w[i] -= lr * wg[i];
  if (b)
    for (int64_t i = 0; i < k_; ++i) b[i] -= lr * bg[i];
  seen_w_.assign(w, w + wn);
  pack(w, stochastic && t_ == dtype::bf16, seed);
  set_bias(b);
}

status fc_layer::forward(int64_t n, int64_t bn, const void* xb, void* yb, float* zb) {
  const int64_t nb = ceil_div(n, bn), cb = ceil_div(c_, bc_), kb = ceil_div(k_, bk_);
  const int64_t kp = dtype_kpack(t_), ab = dtype_a_bytes(t_), ob = t_ == dtype::bf16 ? 2 : 4;
  const int64_t fblk = round_up(bc_, kp) * bk_;  // in B elements
  const bool bf16 = t_ == dtype::bf16;
  // With zb the epilogue stops at the bias (into zb) and the activation follows on the block
  // while it is in cache; without, it is all one epilogue.
  epilogue_desc e;
  e.bias = has_bias_;
  e.act = zb ? activation::none : act_;
  e.out = zb || !bf16 ? out_type::f32 : out_type::bf16;
  const kernel* kr;
  if (status s = dispatch(desc{t_, bn, bk_, bc_, bc_, bk_, bk_, batch_kind::stride, 0.0f, e}, &kr); s != status::ok)
    return s;
  const char* fwd = aligned(fwd_, 0);
  const int64_t items = kb * nb;
  // Items walk N fastest, so a thread's consecutive items share a column of weight blocks.
#pragma omp parallel for num_threads(threads_for(2.0 * n * c_ * k_)) schedule(static)
  for (int64_t item = 0; item < items; ++item) {
    const int64_t i = item % nb, j = item / nb;
    batch_ref batch;
    batch.count = cb;
    batch.a = (const char*)xb + i * cb * bn * bc_ * ab;
    batch.stride_a = bn * bc_;
    batch.b = fwd + j * cb * fblk * dtype_b_bytes(t_);
    batch.stride_b = fblk;
    epilogue_args args;
    args.bias = bias_.data() + j * bk_;
    const int64_t blk = (i * kb + j) * bn * bk_;
    if (!zb) {
      execute(*kr, batch, (char*)yb + blk * ob, &args);
      continue;
    }
    float* z = zb + blk;
    execute(*kr, batch, z, &args);
    if (!bf16) {
      activation_f32(act_, z, (float*)yb + blk, bn * bk_);
    } else {
      float* y = scratch(0, bn * bk_);
      activation_f32(act_, z, y, bn * bk_);
      f32_to_bf16(y, (uint16_t*)yb + blk, bn * bk_);
    }
  }
  return status::ok;
}

status fc_layer::backward(int64_t n, int64_t bn, const float* gyb, const void* yb, const float* zb, const void* xb,
                          float* gxb, float* wg, float* bg) {
  const int64_t nb = ceil_div(n, bn), cb = ceil_div(c_, bc_), kb = ceil_div(k_, bk_);
  const int64_t kp = dtype_kpack(t_), ab = dtype_a_bytes(t_);
  const bool bf16 = t_ == dtype::bf16;
  const int64_t blk = bn * bk_;
  const int threads = threads_for(4.0 * n * c_ * k_);

  // dZ = dY ⊙ act'(·), blocked as dY (the A of backward data) and transposed (the A of the
  // weight gradient), in the kernel's A type; the bias gradient is its column sums.
  const bool dz_is_dy = !bf16 && act_ == activation::none;
  char* dz = dz_is_dy ? nullptr : aligned(dy_, nb * kb * blk * ab);
  char* dzt = aligned(dyt_, nb * kb * blk * ab);
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t j = 0; j < kb; ++j) {
    const int64_t cols = std::min(bk_, k_ - j * bk_);
    for (int64_t i = 0; i < nb; ++i) {
      const int64_t at = (i * kb + j) * blk;
      const float* g = gyb + at;
      float* d = scratch(0, blk);
      if (act_ == activation::none) {
        std::memcpy(d, g, (size_t)blk * 4);
      } else {
        const float* y = nullptr;
        if (!needs_z()) {
          if (bf16) {
            float* y32 = scratch(1, blk);
            bf16_to_f32((const uint16_t*)yb + at, y32, blk);
            y = y32;
          } else {
            y = (const float*)yb + at;
          }
        }
        activation_backward_f32(act_, g, needs_z() ? zb + at : nullptr, y, d, blk);
      }
      if (bg) {
        const int64_t rows = std::min(bn, n - i * bn);
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t q = 0; q < cols; ++q) bg[j * bk_ + q] += d[r * bk_ + q];
      }
      // The transposed block: (bk × bn), row q holds column q of d.
      char* t = dzt + (j * nb + i) * blk * ab;
      if (bf16) {
        uint16_t* d16 = (uint16_t*)(dz + at * ab);
        f32_to_bf16(d, d16, blk);
        for (int64_t q = 0; q < bk_; ++q)
          for (int64_t r = 0; r < bn; ++r) ((uint16_t*)t)[q * bn + r] = d16[r * bk_ + q];
      } else {
        if (dz) std::memcpy(dz + at * ab, d, (size_t)blk * 4);
        for (int64_t q = 0; q < bk_; ++q)
          for (int64_t r = 0; r < bn; ++r) ((float*)t)[q * bn + r] = d[r * bk_ + q];
      }
    }
  }

  // The weight gradient reduces over rows of X, so bf16 X goes into VNNI-2 pairs of rows.
  const char* xw = (const char*)xb;
  if (bf16) {
    char* xv = aligned(xv_, nb * cb * bn * bc_ * 2);
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t blkno = 0; blkno < nb * cb; ++blkno) {
      const uint16_t* src = (const uint16_t*)xb + blkno * bn * bc_;
      uint16_t* dst = (uint16_t*)xv + blkno * bn * bc_;
      for (int64_t r = 0; r < bn; ++r)
        for (int64_t q = 0; q < bc_; ++q) dst[((r / 2) * bc_ + q) * 2 + r % 2] = src[r * bc_ + q];
    }
    xw = xv;
  }

  // Kernels: backward data (one shape), weight gradient (full or edge rows × full or edge columns).
  const kernel* kd = nullptr;
  const kernel* kw[2][2] = {};
  if (gxb)
    if (status s = dispatch(desc{t_, bn, bc_, bk_, bk_, bc_, bc_, batch_kind::stride, 0.0f}, &kd); s != status::ok)
      return s;
  const int64_t m_edge = k_ - (kb - 1) * bk_, n_edge = c_ - (cb - 1) * bc_;
  for (int fm = 0; fm < (kb > 1 ? 2 : 1); ++fm)
    for (int fn = 0; fn < (cb > 1 ? 2 : 1); ++fn) {
      desc d{t_, fm ? bk_ : m_edge, fn ? bc_ : n_edge, bn, bn, bc_, c_, batch_kind::stride, 1.0f};
      if (status s = dispatch(d, &kw[fm][fn]); s != status::ok) return s;
    }

  const int64_t data_items = gxb ? nb * cb : 0, items = data_items + kb * cb;
  const char* bwd = aligned(bwd_, 0);
  const int64_t bblk = round_up(bk_, kp) * bc_;  // backward weight block, in B elements
  const char* a_dz = dz_is_dy ? (const char*)gyb : dz;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t item = 0; item < items; ++item) {
    batch_ref batch;
    if (item < data_items) {
      const int64_t i = item / cb, j = item % cb;
      batch.count = kb;
      batch.a = a_dz + i * kb * blk * ab;
      batch.stride_a = blk;
      batch.b = bwd + j * kb * bblk * dtype_b_bytes(t_);
      batch.stride_b = bblk;
      execute(*kd, batch, gxb + (i * cb + j) * bn * bc_);
    } else {
      const int64_t j = (item - data_items) / cb, q = (item - data_items) % cb;
      batch.count = nb;
      batch.a = dzt + j * nb * blk * ab;
      batch.stride_a = blk;
      batch.b = xw + q * bn * bc_ * ab;  // X and its VNNI form have blocks of the same size
      batch.stride_b = cb * bn * bc_;
      execute(*kw[j + 1 < kb][q + 1 < cb], batch, wg + j * bk_ * c_ + q * bc_);
    }
  }
  return status::ok;
}

}  // namespace brgemm::layers
