// Direct convolution driver (conv.h). Each output row of a block of output channels is a few
// BRGEMM calls, one per run of output columns that see the same kernel taps:
//   forward          Y[n][kb][oh][ow…] = act(Σ_{cb,r,s} X[n][cb][ih][iw…] · Wf[kb][cb][r][s] + b)
//   backward data    dX[n][cb][ih][iw…] = Σ_{kb,r,s} dZ[n][kb][oh][ow…] · Wb[cb][kb][r][s]
//   weight gradient  dWᵀ[kb][cb][r][s] = Σ_{n,oh} dZᵀ[n][kb][·][oh, ow…] · X[n][cb][ih][iw…]
// with ih = oh·stride − pad + r·dilation (iw likewise). Padding is never materialised: a border
// row or column has fewer taps in its batch (an empty batch writes zeros, then the epilogue).
// For stride > 1, backward data walks its results in stride classes (iw ≡ q mod stride), each
// run writing every stride-th column. A run narrower than the rows sharing its row taps (a
// border column) is computed down the column instead (run_pass).
#include "conv.h"
#include "blocks.h"
#include <cmath>
#include <omp.h>

namespace brgemm::layers {

namespace {

// A tap of a run: its index along the axis, and the source position it reads for the run's
// first result (sources then advance by the axis' source step per result).
struct tap {
  int64_t t, src;
};
struct run {
  int64_t p0, m;
  std::vector<tap> taps;
};

// The source position result p reads through tap t, or −1 when it reads none.
struct forward_axis {  // results are outputs: src = p·stride − pad + t·dil, inside the input
  int64_t in, stride, pad, dil;
  int64_t operator()(int64_t p, int64_t t) const {
    const int64_t q = p * stride - pad + t * dil;
    return q >= 0 && q < in ? q : -1;
  }
};
struct backward_axis {  // results are inputs: the output that read input p through tap t
  int64_t out, stride, pad, dil;
  int64_t operator()(int64_t p, int64_t t) const {
    const int64_t q = p + pad - t * dil;
    if (q < 0 || q % stride) return -1;
    return q / stride < out ? q / stride : -1;
  }
};

template <class Axis>
std::vector<tap> taps_at(int64_t p, int64_t taps, const Axis& src) {
  std::vector<tap> out;
  for (int64_t t = 0; t < taps; ++t)
    if (const int64_t q = src(p, t); q >= 0) out.push_back({t, q});
  return out;
}

// The results 0..n−1 of an axis, class by class (p ≡ q mod step), cut into runs of consecutive
// class members that see the same taps, each tap's source advancing by src_step.
template <class Axis>
std::vector<run> make_runs(int64_t n, int64_t step, int64_t src_step, int64_t taps, const Axis& src) {
  std::vector<run> runs;
  for (int64_t q = 0; q < step; ++q) {
    bool open = false;  // runs.back() is of this class
    for (int64_t p = q; p < n; p += step) {
      std::vector<tap> here = taps_at(p, taps, src);
      if (open) {
        run& r = runs.back();
        bool same = r.taps.size() == here.size();
        for (size_t i = 0; same && i < here.size(); ++i)
          same = here[i].t == r.taps[i].t && here[i].src == r.taps[i].src + r.m * src_step;
        if (same) {
          ++r.m;
          continue;
        }
      }
      runs.push_back({p, 1, std::move(here)});
      open = true;
    }
  }
  return runs;
}

// A 1×1, stride-1, unpadded convolution reads each image as one long row, so g rows (g dividing
// h, g·w ≤ 128) become one: the kernel sees runs of g·w columns instead of w.
void merge_rows(const conv_geometry& g, int64_t& h, int64_t& w) {
  if (g.r != 1 || g.s != 1 || g.stride_h != 1 || g.stride_w != 1 || g.pad_t || g.pad_b || g.pad_l || g.pad_r)
    return;
  int64_t rows = 1;
  for (int64_t d = 2; d <= h; ++d)
    if (h % d == 0 && d * w <= 128) rows = d;
  h /= rows;
  w *= rows;
}

// Per-thread batch offsets that only grow.
int64_t* offsets(int slot, int64_t n) {
  static thread_local std::vector<int64_t> buf[2];
  if ((int64_t)buf[slot].size() < n) buf[slot].resize((size_t)n);
  return buf[slot].data();
}

// The kernels of one call shape over a reduction in chunks: the last chunk's (with the
// epilogue; beta 1 after earlier chunks), the first's (beta 0) and the middle ones' (beta 1).
struct chunk_kernels {
  const kernel *last = nullptr, *first = nullptr, *mid = nullptr;
  status make(desc d, int64_t chunks) {
    d.beta = chunks > 1 ? 1.0f : 0.0f;
    if (status s = dispatch(d, &last); s != status::ok) return s;
    d.ep = epilogue_desc{};
    d.beta = 0.0f;
    if (chunks > 1)
      if (status s = dispatch(d, &first); s != status::ok) return s;
    d.beta = 1.0f;
    if (chunks > 2)
      if (status s = dispatch(d, &mid); s != status::ok) return s;
    return status::ok;
  }
  const kernel& at(int64_t ch, int64_t chunks) const { return ch + 1 == chunks ? *last : ch == 0 ? *first : *mid; }
};

// One direct-convolution pass over blocked arrays (forward, or backward data):
//   res[n][j][row][col…] = epilogue(Σ_{q, taps} src[n][q][src row][src col…] · wts[j][q][r][s])
// Result rows come in groups per item; the reduction blocks q in chunks whose weight blocks
// (for one j) fit in L2, so that each chunk is reused by every row of the group: with a small
// image (7 × 7) one row alone reuses a weight block five times, too few to outrun L3.
// Partial sums go to the result itself (f32) or to a per-thread accumulator tile (bf16
// results, int8). An int8 source with a zero point z reads real zeros as z where the padding
// is: the epilogue subtracts z·Σ W over the taps each run reads (col_offset).
struct direct_pass {
  dtype t;
  int64_t n, red, res, taps_r, taps_s;     // images, reduction and result blocks, kernel taps
  int64_t bi, bo;                          // channel blocks of the source and of the result
  int64_t src_rows, src_cols, src_step;    // source columns advance src_step per result column
  int64_t res_rows, res_cols, res_step;    // a run writes every res_step-th column
  int64_t src_row_step;                    // source rows per result row (0: not uniform)
  const std::vector<std::vector<tap>>* rows;
  const std::vector<run>* runs;
  const void* src;
  const char* wts;
  epilogue_desc e;
  epilogue_args ea;                        // from result channel 0 (bias, int8 scale, u8 output)
  const int32_t* tapsum = nullptr;         // int8 with a zero point: [res][taps_r][taps_s][bo]
  int32_t zero = 0;                        //   Σ_c W of each tap, and the source's zero point
  void* out;
  float* z = nullptr;                      // with z: out = act(z), z = the epilogue's result (f32)
  brgemm::activation act = activation::none;
  int threads;
};

status run_pass(const direct_pass& p) {
  const int64_t blk = p.bi * p.bo, taps = p.taps_r * p.taps_s;
  const int64_t per = std::clamp<int64_t>((256 << 10) / (taps * blk * dtype_b_bytes(p.t)), 1, p.red);
  const int64_t chunks = ceil_div(p.red, per);
  int64_t group = p.res_rows;
  if (chunks > 1) group = std::min(group, std::max<int64_t>(1, (128 << 10) / (p.res_cols * p.bo * 4)));
  while (group > 1 && p.res * p.n * ceil_div(p.res_rows, group) < 4 * (int64_t)p.threads) group = ceil_div(group, 2);
  const bool c_is_acc = p.e.out == out_type::acc || (p.e.out == out_type::f32 && !dtype_is_int8(p.t));
  const bool tile = !c_is_acc && chunks > 1;
  const std::vector<run>& runs = *p.runs;
  const int64_t ldc = p.res_step * p.bo;

  // Kernels per run (runs differ only in M).
  desc d{p.t, 0, p.bo, p.bi, p.src_step * p.bi, p.bo, ldc, batch_kind::offset, 0.0f, p.e};
  std::vector<chunk_kernels> kr(runs.size());
  for (size_t u = 0; u < runs.size(); ++u) {
    d.m = runs[u].m;
    if (status s = kr[u].make(d, chunks); s != status::ok) return s;
  }

  // Column runs. A run narrower than the stack of result rows that share its row taps (the
  // border columns of a padded image are one result wide) goes down the column instead: one
  // call per column over those rows, whose sources lie src_row_step rows apart. A one-row tile
  // cannot hide the FMA latency: at 7 × 7 the border columns were a fifth of the work at a third
  // of the speed. Stacks: per group, the rows whose taps continue the previous row's.
  const int64_t groups = ceil_div(p.res_rows, group);
  std::vector<std::vector<std::pair<int64_t, int64_t>>> stacks(groups);  // (first row, rows)
  int64_t narrowest = INT64_MAX, tallest = 1;
  for (const run& r : runs) narrowest = std::min(narrowest, r.m);
  for (int64_t gi = 0; gi < groups; ++gi)
    for (int64_t o = gi * group; o < std::min(p.res_rows, (gi + 1) * group); ++o) {
      const std::vector<tap>& here = (*p.rows)[o];
      bool more = p.src_row_step > 0 && !stacks[gi].empty();
      if (more) {
        const std::vector<tap>& prev = (*p.rows)[o - 1];
        more = prev.size() == here.size();
        for (size_t x = 0; more && x < here.size(); ++x)
          more = prev[x].t == here[x].t && here[x].src == prev[x].src + p.src_row_step;
      }
      if (more)
        tallest = std::max(tallest, ++stacks[gi].back().second);
      else
        stacks[gi].push_back({o, 1});
    }
  std::vector<chunk_kernels> kc(tallest + 1);  // by the stack's height
  d.lda = p.src_row_step * p.src_cols * p.bi;
  d.ldc = p.res_cols * p.bo;
  for (int64_t m = narrowest + 1; m <= tallest; ++m) {
    d.m = m;
    if (status s = kc[m].make(d, chunks); s != status::ok) return s;
  }

  const int64_t src_plane = p.src_rows * p.src_cols * p.bi, res_plane = p.res_rows * p.res_cols * p.bo;
  const int64_t ob = p.z ? 4 : out_type_bytes(p.t, p.e.out);
  char* final_out = p.z ? (char*)p.z : (char*)p.out;
#pragma omp parallel for num_threads(p.threads) schedule(static)
  for (int64_t item = 0; item < p.res * p.n * groups; ++item) {
    const int64_t j = item / (p.n * groups), i = item / groups % p.n, gi = item % groups, o0 = gi * group;
    const int64_t o1 = std::min(p.res_rows, o0 + group);
    float* part = tile ? scratch(2, (o1 - o0) * p.res_cols * p.bo) : nullptr;  // f32 or s32
    int64_t* oa = offsets(0, per * taps);
    int64_t* ow = offsets(1, per * taps);
    int32_t* col = p.tapsum ? (int32_t*)scratch(1, p.bo) : nullptr;
    epilogue_args args = p.ea.at(0, j * p.bo, p.e.scale, p.t);
    args.col_offset = col;
    for (int64_t ch = 0; ch < chunks; ++ch) {
      const bool last = ch + 1 == chunks;
      // The product for the results of run r from row o, column c of the run on (just that
      // column when down the column).
      auto call = [&](const kernel& kr, int64_t o, const run& r, int64_t c, int64_t ld) {
        const int64_t shift = c * p.src_step;
        int64_t count = 0;
        for (int64_t q = ch * per; q < std::min(p.red, (ch + 1) * per); ++q)
          for (const tap& tr : (*p.rows)[o])
            for (const tap& ts : r.taps) {
              oa[count] = (i * p.red + q) * src_plane + (tr.src * p.src_cols + ts.src + shift) * p.bi;
              ow[count++] = (((j * p.red + q) * p.taps_r + tr.t) * p.taps_s + ts.t) * blk;
            }
        batch_ref batch;
        batch.count = count;
        batch.a = p.src;
        batch.b = p.wts;
        batch.offs_a = oa;
        batch.offs_b = ow;
        const int64_t rc = r.p0 + c * p.res_step;
        const int64_t at = (i * p.res + j) * res_plane + (o * p.res_cols + rc) * p.bo;
        float* acc = tile ? part + ((o - o0) * p.res_cols + rc) * p.bo : (float*)(final_out + at * ob);
        if (!last) return execute(kr, batch, acc);
        if (col) {  // −z·Σ W over the taps of this row and run
          std::fill(col, col + p.bo, 0);
          for (const tap& tr : (*p.rows)[o])
            for (const tap& ts : r.taps) {
              const int32_t* t = p.tapsum + ((j * p.taps_r + tr.t) * p.taps_s + ts.t) * p.bo;
              for (int64_t x = 0; x < p.bo; ++x) col[x] -= p.zero * t[x];
            }
        }
        args.acc_in = acc;
        args.ld_acc_in = ld;
        execute(kr, batch, final_out + at * ob, &args);
      };
      for (const auto& [first, rows] : stacks[gi])
        for (size_t u = 0; u < runs.size(); ++u)
          if (runs[u].m < rows)  // then narrowest < rows <= tallest: kc[rows] was made
            for (int64_t c = 0; c < runs[u].m; ++c) call(kc[rows].at(ch, chunks), first, runs[u], c, p.res_cols * p.bo);
          else
            for (int64_t o = first; o < first + rows; ++o) call(kr[u].at(ch, chunks), o, runs[u], 0, ldc);
    }
    if (p.z) {  // the activation on the group's rows while they are in cache (res_step is 1 here)
      const int64_t at = (i * p.res + j) * res_plane + o0 * p.res_cols * p.bo, len = (o1 - o0) * p.res_cols * p.bo;
      if (p.t != dtype::bf16) {  // out has the layer's type (p.e.out is z's f32 here)
        activation_f32(p.act, p.z + at, (float*)p.out + at, len);
      } else {
        float* y = scratch(0, len);
        activation_f32(p.act, p.z + at, y, len);
        f32_to_bf16(y, (uint16_t*)p.out + at, len);
      }
    }
  }
  return status::ok;
}

int64_t element_bytes(element e) { return e == element::f32 ? 4 : e == element::bf16 ? 2 : 1; }

void transpose_elems(const void* src, int64_t rows, int64_t cols, int64_t ld_src, void* dst, int64_t ld_dst,
                     element e) {
  if (e == element::f32)
    transpose((const uint32_t*)src, rows, cols, ld_src, (uint32_t*)dst, ld_dst);
  else if (e == element::bf16)
    transpose((const uint16_t*)src, rows, cols, ld_src, (uint16_t*)dst, ld_dst);
  else
    transpose((const uint8_t*)src, rows, cols, ld_src, (uint8_t*)dst, ld_dst);
}

// w values from src to dst, src and dst f32 or bf16, or f32 → u8 quantized (as the epilogue's
// u8 output: the quotient rounded to nearest even, then the zero point, saturated; NaN → 0).
void convert_elems(const void* src, element st, void* dst, element dt, int64_t w, float scale, int32_t zero) {
  if (dt != element::u8) return convert(src, st == element::bf16, dst, dt == element::bf16, w);
  const float* x = (const float*)src;
  uint8_t* q = (uint8_t*)dst;
  for (int64_t i = 0; i < w; ++i) {
    const float v = std::nearbyint(x[i] / scale) + (float)zero;
    q[i] = v >= 255.0f ? 255 : v > 0.0f ? (uint8_t)v : 0;
  }
}

}  // namespace

int64_t conv_block(int64_t channels) {
  if (channels < 16) return round_up(channels, 4);
  int64_t best = 64;
  for (int64_t b : {32, 16})
    if (round_up(channels, b) < round_up(channels, best)) best = b;
  return best;
}

void conv_to_blocked(const void* x, element xt, int64_t n, int64_t c, int64_t hw, void* xb, element bt, int64_t bc,
                     float scale, int32_t zero_point) {
  const int64_t cb = ceil_div(c, bc), xs = element_bytes(xt), bs = element_bytes(bt);
#pragma omp parallel for collapse(2) num_threads(threads_for(16.0 * n * c * hw)) schedule(static)
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < cb; ++j) {
      const int64_t ch = std::min(bc, c - j * bc);
      const void* src = (const char*)x + (i * c + j * bc) * hw * xs;
      char* dst = (char*)xb + (i * cb + j) * hw * bc * bs;
      if (xt != bt) {  // convert the channels' planes first, then transpose
        void* t = scratch(0, ch * hw);
        convert_elems(src, xt, t, bt, ch * hw, scale, zero_point);
        src = t;
      }
      transpose_elems(src, ch, hw, hw, dst, bc, bt);
      if (ch < bc)
        for (int64_t p = 0; p < hw; ++p) std::memset(dst + (p * bc + ch) * bs, 0, (size_t)((bc - ch) * bs));
    }
}

void conv_from_blocked(const void* xb, element bt, int64_t n, int64_t c, int64_t hw, int64_t bc, void* x,
                       element xt) {
  const int64_t cb = ceil_div(c, bc), xs = element_bytes(xt), bs = element_bytes(bt);
#pragma omp parallel for collapse(2) num_threads(threads_for(16.0 * n * c * hw)) schedule(static)
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < cb; ++j) {
      const int64_t ch = std::min(bc, c - j * bc);
      const char* src = (const char*)xb + (i * cb + j) * hw * bc * bs;
      char* dst = (char*)x + (i * c + j * bc) * hw * xs;
      if (xt == bt) {
        transpose_elems(src, hw, ch, bc, dst, hw, xt);
      } else {
        void* t = scratch(0, ch * hw);
        transpose_elems(src, hw, ch, bc, t, hw, bt);
        convert_elems(t, bt, dst, xt, ch * hw, 1.0f, 0);
      }
    }
}

conv_layer::conv_layer(dtype t, const conv_geometry& g, brgemm::activation act)
    : t_(t), g_(g), bc_(conv_block(g.c)), bk_(conv_block(g.k)), act_(act) {}

void conv_layer::pack(const float* w) {
  const int64_t cb = ceil_div(g_.c, bc_), kb = ceil_div(g_.k, bk_), taps = g_.r * g_.s;
  const int64_t blk = bc_ * bk_, bytes = blk * dtype_b_bytes(t_);  // bc, bk even: VNNI-2 adds nothing
  char* fwd = aligned(fwd_, kb * cb * taps * bytes);
  char* bwd = aligned(bwd_, kb * cb * taps * bytes);
  const bool bf16 = t_ == dtype::bf16;
#pragma omp parallel for collapse(2) num_threads(threads_for(8.0 * g_.k * g_.c * taps)) schedule(static)
  for (int64_t i = 0; i < kb; ++i)
    for (int64_t j = 0; j < cb; ++j) {
      float* f = scratch(0, blk);     // the tap as plain (bc × bk) f32,
      float* ft = scratch(1, blk);    // its transpose (bk × bc),
      float* b16 = scratch(2, blk);   // either in bf16 when that is the weights' type
      const int64_t ks = std::min(bk_, g_.k - i * bk_), cs = std::min(bc_, g_.c - j * bc_);
      for (int64_t tap = 0; tap < taps; ++tap) {
        std::fill(f, f + blk, 0.0f);
        for (int64_t kk = 0; kk < ks; ++kk)
          for (int64_t cc = 0; cc < cs; ++cc) f[cc * bk_ + kk] = w[((i * bk_ + kk) * g_.c + j * bc_ + cc) * taps + tap];
        transpose(f, bc_, bk_, bk_, ft, bc_);
        for (int side = 0; side < 2; ++side) {  // the forward block, then the backward one
          const void* s = side ? ft : f;
          if (bf16) {
            f32_to_bf16(side ? ft : f, (uint16_t*)b16, blk);
            s = b16;
          }
          const int64_t rows = side ? bk_ : bc_, cols = side ? bc_ : bk_;
          char* dst = side ? bwd + ((j * kb + i) * taps + tap) * bytes : fwd + ((i * cb + j) * taps + tap) * bytes;
          pack_b(t_, s, rows, cols, cols, dst, cols, nullptr);
        }
      }
    }
  packed_ = true;
}

bool conv_layer::refresh(const float* w, const float* b) {
  const int64_t we = g_.k * g_.c * g_.r * g_.s;
  const bool w_same = packed_ && same_bytes(w, seen_w_.data(), we * 4);
  const bool b_same = packed_ && (b != nullptr) == has_bias_ && (!b || same_bytes(b, seen_b_.data(), g_.k * 4));
  if (!w_same) {
    pack(w);
    seen_w_.assign(w, w + we);
  }
  if (!b_same) {
    has_bias_ = b != nullptr;
    if (b) seen_b_.assign(b, b + g_.k);
    bias_.assign((size_t)round_up(g_.k, bk_), 0.0f);
    if (b) std::copy(b, b + g_.k, bias_.begin());
  }
  return !(w_same && b_same);
}

status conv_layer::forward(int64_t n, int64_t h, int64_t w, const void* xb, void* yb, float* zb) {
  merge_rows(g_, h, w);
  const int64_t oh = g_.out_h(h), ow = g_.out_w(w), cb = ceil_div(g_.c, bc_), kb = ceil_div(g_.k, bk_);
  const bool bf16 = t_ == dtype::bf16;
  std::vector<std::vector<tap>> rows(oh);
  const forward_axis along_h{h, g_.stride_h, g_.pad_t, g_.dil_h};
  for (int64_t o = 0; o < oh; ++o) rows[o] = taps_at(o, g_.r, along_h);
  const std::vector<run> runs = make_runs(ow, 1, g_.stride_w, g_.s, forward_axis{w, g_.stride_w, g_.pad_l, g_.dil_w});
  // With zb the epilogue stops at the bias (into zb) and the activation follows on the rows
  // while they are in cache; without, it is all one epilogue.
  direct_pass p{t_, n, cb, kb, g_.r, g_.s, bc_, bk_, h, w, g_.stride_w, oh, ow, 1, g_.stride_h,
                &rows, &runs, xb, aligned(fwd_, 0)};
  p.e.bias = has_bias_;
  p.e.act = zb ? activation::none : act_;
  p.e.out = zb || !bf16 ? out_type::f32 : out_type::bf16;
  p.ea.bias = has_bias_ ? bias_.data() : nullptr;
  p.out = yb;
  p.z = zb;
  p.act = act_;
  p.threads = threads_for(2.0 * n * oh * ow * g_.k * g_.c * g_.r * g_.s);
  return run_pass(p);
}

status conv_layer::backward(int64_t n, int64_t h, int64_t w, const float* gyb, const void* yb, const float* zb,
                            const void* xb, float* gxb, float* wg, float* bg, bool accumulate) {
  merge_rows(g_, h, w);
  const int64_t oh = g_.out_h(h), ow = g_.out_w(w), cb = ceil_div(g_.c, bc_), kb = ceil_div(g_.k, bk_);
  const int64_t taps = g_.r * g_.s, pix = oh * ow, plane_x = h * w * bc_, plane_y = pix * bk_, blk = bc_ * bk_;
  const bool bf16 = t_ == dtype::bf16;
  const int threads = threads_for(2.0 * n * pix * g_.k * g_.c * taps);

  // The weight gradient's block product is dWᵀ (bk × bc) = dZᵀ·X, or dW (bc × bk) = Xᵀ·dZ with X
  // transposed by stride phase as the A and dZ itself the B. One of them is transposed: the
  // smaller, so Xᵀ·dZ when C < K (64 → 256 1×1: 4.6 → 3.5 ms), and when the input channels are
  // few (bc < 16 would fill a fraction of the kernel's 16-lane columns).
  const bool narrow = bc_ < 16 || g_.c < g_.k;

  // dZ = dY ⊙ act'(·) plane by plane: the A of backward data (in the kernel's A type), in f32
  // for the weight gradient (transposed, or as it is when narrow) and its per-plane column sums
  // (the bias).
  const bool dz_is_dy = !bf16 && act_ == activation::none;
  const int64_t dz_bytes = n * kb * plane_y * (bf16 ? 2 : 4), sums = n * kb * bk_;
  char* dz = dz_is_dy ? (char*)gyb : aligned(dz_, round_up(dz_bytes, 64) + sums * 4);
  float* colsum = dz_is_dy ? (float*)aligned(dz_, sums * 4) : (float*)(dz + round_up(dz_bytes, 64));
  float* dzt = narrow && !bf16 ? (float*)dz : (float*)aligned(dzt_, n * kb * plane_y * 4);
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t pl = 0; pl < n * kb; ++pl) {
    const int64_t at = pl * plane_y;
    const float* d =
        activation_grad(act_, gyb, yb, bf16, zb, at, plane_y, bf16 ? scratch(0, plane_y) : (float*)dz + at, 1);
    if (bf16) f32_to_bf16(d, (uint16_t*)dz + at, plane_y);
    float* sum = colsum + pl * bk_;
    std::fill(sum, sum + bk_, 0.0f);
    for (int64_t p = 0; p < pix; ++p)
      for (int64_t q = 0; q < bk_; ++q) sum[q] += d[p * bk_ + q];
    if (!narrow)
      transpose(d, pix, bk_, bk_, dzt + at, pix);
    else if (bf16)
      std::copy(d, d + plane_y, dzt + at);
  }
  if (bg)
    for (int64_t k = 0; k < g_.k; ++k) {
      float s = 0.0f;
      for (int64_t i = 0; i < n; ++i) s += colsum[(i * kb + k / bk_) * bk_ + k % bk_];
      bg[k] = (accumulate ? bg[k] : 0.0f) + s;
    }

  // Backward data: results are input rows and stride classes of input columns.
  if (gxb) {
    std::vector<std::vector<tap>> rows(h);
    const backward_axis along_h{oh, g_.stride_h, g_.pad_t, g_.dil_h};
    for (int64_t i = 0; i < h; ++i) rows[i] = taps_at(i, g_.r, along_h);
    const std::vector<run> runs =
        make_runs(w, g_.stride_w, 1, g_.s, backward_axis{ow, g_.stride_w, g_.pad_l, g_.dil_w});
    direct_pass p{t_, n, kb, cb, g_.r, g_.s, bk_, bc_, oh, ow, 1, h, w, g_.stride_w, g_.stride_h == 1,
                   &rows, &runs, dz, aligned(bwd_, 0)};
    p.out = gxb;
    p.threads = threads;
    if (status s = run_pass(p); s != status::ok) return s;
  }

  // Weight gradient, in f32 (bf16 X widened: the products are exact in f32 either way). Each
  // tap (r, s) is one block product reducing over output rows; the rows are cut into `splits`
  // parts summed afterwards, so that small layers still give every thread work.
  // Narrow: Xᵀ by stride phase, xt[n][cb][ih][q][bc][wq] = X[n][cb][ih][j·stride + q][bc], so that
  // the columns a tap reads (every stride-th) are consecutive in one row of each channel.
  const int64_t sw = g_.stride_w, wq = ceil_div(w, sw), row_t = sw * bc_ * wq;
  const int64_t wide = bf16 ? n * cb * plane_x : 0, trans = narrow ? n * cb * h * row_t : 0;
  float* buf = (float*)aligned(x32_, (wide + trans) * 4);
  const float* x = (const float*)xb;
  if (bf16) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t pl = 0; pl < n * cb; ++pl)
      bf16_to_f32((const uint16_t*)xb + pl * plane_x, buf + pl * plane_x, plane_x);
    x = buf;
  }
  if (narrow) {
    float* xt = buf + wide;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t row = 0; row < n * cb * h; ++row)
      for (int64_t q = 0; q < std::min(sw, w); ++q)
        transpose(x + row * w * bc_ + q * bc_, ceil_div(w - q, sw), bc_, sw * bc_, xt + row * row_t + q * bc_ * wq, wq);
    x = xt;
  }
  std::vector<int64_t> lo(g_.s), len(g_.s);  // the output columns tap s reads inside the input
  std::vector<const kernel*> kw(g_.s, nullptr), kw_add(g_.s, nullptr);  // beta 0 and 1
  const forward_axis along_w{w, g_.stride_w, g_.pad_l, g_.dil_w};
  for (int64_t s = 0; s < g_.s; ++s) {
    lo[s] = 0;
    while (lo[s] < ow && along_w(lo[s], s) < 0) ++lo[s];
    len[s] = 0;
    while (lo[s] + len[s] < ow && along_w(lo[s] + len[s], s) >= 0) ++len[s];
    desc d = narrow ? desc{dtype::f32, bc_, bk_, len[s], wq, bk_, bk_, batch_kind::offset, 0.0f}
                    : desc{dtype::f32, bk_, bc_, len[s], pix, sw * bc_, bc_, batch_kind::offset, 0.0f};
    if (len[s] > 0) {
      if (status st = dispatch(d, &kw[s]); st != status::ok) return st;
      d.beta = 1.0f;
      if (status st = dispatch(d, &kw_add[s]); st != status::ok) return st;
    }
  }
  // Two orders. Few blocks (all of dW fits in L2 per thread): each thread takes chunks of output
  // rows and runs every block over them while their dZ and X rows are in cache, summing into its
  // own dW (beta 1 after its first chunk); otherwise each (block, part of the rows) is an item,
  // so that dW blocks stay in cache. Either way the parts are summed at the end.
  const int64_t blocks = kb * cb * taps, rows_total = n * oh;
  const bool rows_outer = blocks * blk * 4 <= (256 << 10);
  const int64_t row_bytes = (kb * ow * bk_ + cb * g_.stride_h * w * bc_) * 4;
  const int64_t chunk = std::clamp<int64_t>((512 << 10) / row_bytes, 1, ceil_div(rows_total, threads));
  const int64_t splits = rows_outer ? threads
                                    : std::max<int64_t>(1, std::min<int64_t>(rows_total, ceil_div(8 * (int64_t)threads, blocks)));
  float* part = (float*)aligned(part_, splits * blocks * blk * 4);
  auto part_at = [&](int64_t b, int64_t sp) { return part + (rows_outer ? sp * blocks + b : b * splits + sp) * blk; };
  const forward_axis along_h{h, g_.stride_h, g_.pad_t, g_.dil_h};
  // One block's product over output rows [first, last) into out (adding when `add`).
  auto block_product = [&](int64_t b, int64_t first, int64_t last, float* out, bool add) {
    const int64_t k = b / (cb * taps), c = b / taps % cb, r = b % taps / g_.s, s = b % g_.s;
    if (!kw[s]) {
      if (!add) std::fill(out, out + blk, 0.0f);
      return;
    }
    int64_t* oa = offsets(0, last - first);
    int64_t* ob = offsets(1, last - first);
    int64_t count = 0;
    const int64_t iw = along_w(lo[s], s);
    for (int64_t row = first; row < last; ++row) {
      const int64_t i = row / oh, o = row % oh, ih = along_h(o, r);
      if (ih < 0) continue;
      if (narrow) {  // A: the tap's phase row of Xᵀ; B: dZ's row from its first valid column
        oa[count] = ((i * cb + c) * h + ih) * row_t + iw % sw * bc_ * wq + iw / sw;
        ob[count++] = (i * kb + k) * plane_y + (o * ow + lo[s]) * bk_;
      } else {
        oa[count] = (i * kb + k) * plane_y + o * ow + lo[s];
        ob[count++] = (i * cb + c) * plane_x + (ih * w + iw) * bc_;
      }
    }
    batch_ref batch;
    batch.count = count;
    batch.a = narrow ? x : dzt;
    batch.b = narrow ? dzt : x;
    batch.offs_a = oa;
    batch.offs_b = ob;
    execute(add ? *kw_add[s] : *kw[s], batch, out);
  };
#pragma omp parallel num_threads(threads)
  {
    if (rows_outer) {
      const int tid = omp_get_thread_num();
      bool add = false;
#pragma omp for schedule(static)
      for (int64_t ch = 0; ch < ceil_div(rows_total, chunk); ++ch) {
        for (int64_t b = 0; b < blocks; ++b)
          block_product(b, ch * chunk, std::min(rows_total, (ch + 1) * chunk), part_at(b, tid), add);
        add = true;
      }
      if (!add) std::fill(part_at(0, tid), part_at(0, tid) + blocks * blk, 0.0f);  // no chunk came here
    } else {
#pragma omp for schedule(static)
      for (int64_t item = 0; item < blocks * splits; ++item) {
        const int64_t b = item / splits, sp = item % splits;
        block_product(b, rows_total * sp / splits, rows_total * (sp + 1) / splits, part_at(b, sp), false);
      }
    }
    // Sum the parts into the plain (K, C, R, S) gradient.
#pragma omp for schedule(static)
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t k0 = b / (cb * taps) * bk_, c0 = b / taps % cb * bc_, tap = b % taps;
      const int64_t ks = std::min(bk_, g_.k - k0), cs = std::min(bc_, g_.c - c0);
      for (int64_t kk = 0; kk < ks; ++kk)
        for (int64_t cc = 0; cc < cs; ++cc) {
          float v = 0.0f;
          const int64_t at = narrow ? cc * bk_ + kk : kk * bc_ + cc;
          for (int64_t sp = 0; sp < splits; ++sp) v += part_at(b, sp)[at];
          float& g = wg[((k0 + kk) * g_.c + c0 + cc) * taps + tap];
          g = (accumulate ? g : 0.0f) + v;
        }
    }
  }
  return status::ok;
}

qconv_layer::qconv_layer(const conv_geometry& g, brgemm::activation act, out_type out)
    : g_(g), bc_(conv_block(g.c)), bk_(conv_block(g.k)), act_(act), out_(out) {}

bool qconv_layer::refresh(const int8_t* w, const float* w_scale, const float* b, const conv_quant& q) {
  const int64_t we = g_.k * g_.c * g_.r * g_.s, kp = round_up(g_.k, bk_);
  const bool w_same = packed_ && same_bytes(w, seen_w_.data(), we);
  const bool rest_same = packed_ && same_bytes(w_scale, seen_ws_.data(), g_.k * 4) && (b != nullptr) == has_bias_ &&
                         (!b || same_bytes(b, seen_b_.data(), g_.k * 4)) && same_bytes(&q, &q_, sizeof q);
  if (w_same && rest_same) return false;
  if (!w_same) {
    const int64_t cb = ceil_div(g_.c, bc_), kb = ceil_div(g_.k, bk_), taps = g_.r * g_.s, blk = bc_ * bk_;
    char* fwd = aligned(fwd_, kb * cb * taps * blk);
    tapsum_.assign((size_t)(kb * taps * bk_), 0);
#pragma omp parallel for num_threads(threads_for(8.0 * g_.k * g_.c * taps)) schedule(static)
    for (int64_t i = 0; i < kb; ++i) {
      int8_t* f = (int8_t*)scratch(0, blk / 4);  // one tap as plain (bc × bk) s8
      std::vector<int32_t> colsum((size_t)bk_);
      const int64_t ks = std::min(bk_, g_.k - i * bk_);
      for (int64_t j = 0; j < cb; ++j) {
        const int64_t cs = std::min(bc_, g_.c - j * bc_);
        for (int64_t tap = 0; tap < taps; ++tap) {
          std::fill(f, f + blk, (int8_t)0);
          for (int64_t kk = 0; kk < ks; ++kk)
            for (int64_t cc = 0; cc < cs; ++cc) f[cc * bk_ + kk] = w[((i * bk_ + kk) * g_.c + j * bc_ + cc) * taps + tap];
          pack_b(dtype::u8s8, f, bc_, bk_, bk_, fwd + ((i * cb + j) * taps + tap) * blk, bk_, colsum.data());
          int32_t* sum = tapsum_.data() + (i * taps + tap) * bk_;
          for (int64_t x = 0; x < bk_; ++x) sum[x] += colsum[x];
        }
      }
    }
    seen_w_.assign(w, w + we);
  }
  seen_ws_.assign(w_scale, w_scale + g_.k);
  has_bias_ = b != nullptr;
  if (b) seen_b_.assign(b, b + g_.k);
  q_ = q;
  // A u8 output through no activation or ReLU (which commutes with a positive factor) folds
  // 1/y_scale into the scale and the bias: the epilogue then skips its division.
  fold_ = out_ == out_type::u8 && (act_ == activation::none || act_ == activation::relu);
  const float div = fold_ ? q.y_scale : 1.0f;
  bias_.assign((size_t)kp, 0.0f);
  scale_.assign((size_t)kp, 0.0f);
  for (int64_t k = 0; k < g_.k; ++k) {
    scale_[k] = fold_ ? q.x_scale * w_scale[k] / div : q.x_scale * w_scale[k];
    if (b) bias_[k] = fold_ ? b[k] / div : b[k];
  }
  packed_ = true;
  return true;
}

status qconv_layer::forward(int64_t n, int64_t h, int64_t w, const uint8_t* xb, void* yb) {
  merge_rows(g_, h, w);
  const int64_t oh = g_.out_h(h), ow = g_.out_w(w), cb = ceil_div(g_.c, bc_), kb = ceil_div(g_.k, bk_);
  std::vector<std::vector<tap>> rows(oh);
  const forward_axis along_h{h, g_.stride_h, g_.pad_t, g_.dil_h};
  for (int64_t o = 0; o < oh; ++o) rows[o] = taps_at(o, g_.r, along_h);
  const std::vector<run> runs = make_runs(ow, 1, g_.stride_w, g_.s, forward_axis{w, g_.stride_w, g_.pad_l, g_.dil_w});
  direct_pass p{dtype::u8s8, n, cb, kb, g_.r, g_.s, bc_, bk_, h, w, g_.stride_w, oh, ow, 1, g_.stride_h,
                &rows, &runs, xb, aligned(fwd_, 0)};
  p.e.out = out_;
  p.e.act = act_;
  p.e.bias = has_bias_;
  p.e.scale = scale_kind::column;
  p.e.col_offset = q_.x_zero != 0;
  p.ea.bias = has_bias_ ? bias_.data() : nullptr;
  p.ea.scale = scale_.data();
  p.ea.out_scale = fold_ ? 1.0f : q_.y_scale;
  p.ea.out_zero_point = q_.y_zero;
  if (q_.x_zero) {
    p.tapsum = tapsum_.data();
    p.zero = q_.x_zero;
  }
  p.out = yb;
  p.threads = threads_for(2.0 * n * oh * ow * g_.k * g_.c * g_.r * g_.s);
  return run_pass(p);
}

}  // namespace brgemm::layers
