// Fully-connected driver (linear.h): blocking, weight packing and the three products of a
// layer, each one BRGEMM call per block of its result over a row of blocks:
//   forward          Y[nb][kb]  = act(Σ_cb X[nb][cb] · Wᵀ[cb][kb] + b)      batch over C/bc
//   backward data    dX[nb][cb] = Σ_kb dZ[nb][kb] · W[kb][cb]               batch over K/bk
//   backward weights dW[kb][cb] += Σ_nb dZᵀ[kb][nb] · X[nb][cb]             batch over N/bn
// with dZ = dY ⊙ act'(·) computed block by block first (and transposed for the weight
// gradient, whose result is written straight into the plain (out, in) gradient).
#include "linear.h"
#include "blocks.h"
#include "gemm.h"

namespace brgemm::layers {

int64_t fc_block(int64_t size) { return size >= 64 ? 64 : round_up(size, 16); }
int64_t fc_row_block(int64_t n) { return round_up(ceil_div(n, ceil_div(n, 64)), 2); }

void fc_to_blocked(const void* x, element xt, int64_t n, int64_t c, int64_t ld, void* xb, element bt, int64_t bn,
                   int64_t bc) {
  const int64_t nb = ceil_div(n, bn), cb = ceil_div(c, bc), xs = element_bytes(xt), bs = element_bytes(bt);
  const bool x_bf16 = xt == element::bf16, xb_bf16 = bt == element::bf16;
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

void fc_from_blocked(const void* xb, element bt, int64_t n, int64_t c, int64_t bn, int64_t bc, void* x, element xt,
                     int64_t ld) {
  const int64_t cb = ceil_div(c, bc), xs = element_bytes(xt), bs = element_bytes(bt);
  const bool x_bf16 = xt == element::bf16, xb_bf16 = bt == element::bf16;
#pragma omp parallel for num_threads(threads_for(16.0 * n * c)) schedule(static)
  for (int64_t r = 0; r < n; ++r)
    for (int64_t j = 0; j < cb; ++j)
      convert((const char*)xb + (((r / bn) * cb + j) * bn * bc + (r % bn) * bc) * bs, xb_bf16,
              (char*)x + (r * ld + j * bc) * xs, x_bf16, std::min(bc, c - j * bc));
}

fc_layer::fc_layer(dtype t, int64_t in, int64_t out, brgemm::activation act)
    : t_(t), c_(in), k_(out), bc_(fc_block(in)), bk_(fc_block(out)), act_(act) {}

int64_t fc_layer::total_blocks() const { return ceil_div(k_, bk_) * ceil_div(c_, bc_); }

void fc_layer::set_sparse_policy(sparse_policy p) {
  if (p != policy_) packed_ = false;  // the next refresh packs in the new form
  policy_ = p;
}

// Whether any of `width` floats is nonzero (±0 both zero: a weight pruned by a multiply keeps
// its sign). Bitwise, so NaN counts as nonzero.
static bool any_nonzero(const float* v, int64_t width) {
  uint32_t acc = 0;
  for (int64_t e = 0; e < width; ++e) {
    uint32_t u;
    std::memcpy(&u, v + e, 4);
    acc |= u & 0x7FFFFFFFu;
  }
  return acc != 0;
}

void fc_layer::index_blocks() {
  const int64_t cb = ceil_div(c_, bc_), kb = ceil_div(k_, bk_), total = kb * cb;
  int64_t kept = 0;
  for (uint8_t k : keep_) kept += k;
  const bool on = policy_ == sparse_policy::sparse ||
                  (policy_ == sparse_policy::automatic && (double)kept <= fc_sparse_crossover * (double)total);
  block_index& x = index_;
  // A dense packing places every block, so its index is the same whatever the pattern.
  const bool same = !x.fwd_slot.empty() && on == x.on && (!on || kept == x.kept);
  std::vector<int64_t> fwd(total), bwd(total);
  int64_t p = 0;
  for (int64_t i = 0; i < kb; ++i)
    for (int64_t j = 0; j < cb; ++j) fwd[i * cb + j] = !on || keep_[i * cb + j] ? p++ : -1;
  p = 0;
  for (int64_t j = 0; j < cb; ++j)
    for (int64_t i = 0; i < kb; ++i) bwd[i * cb + j] = !on || keep_[i * cb + j] ? p++ : -1;
  if (same && fwd == x.fwd_slot) return;  // the pattern held (a pruned layer in training)
  x.on = on;
  x.kept = kept;
  ++x.generation;
  x.fwd_slot.swap(fwd);
  x.bwd_slot.swap(bwd);
  x.col_start.assign(kb + 1, 0);
  x.row_start.assign(cb + 1, 0);
  x.col_cb.clear();
  x.row_kb.clear();
  for (int64_t i = 0; i < kb; ++i) {
    for (int64_t j = 0; j < cb; ++j)
      if (x.fwd_slot[i * cb + j] >= 0) x.col_cb.push_back(j);
    x.col_start[i + 1] = (int64_t)x.col_cb.size();
  }
  for (int64_t j = 0; j < cb; ++j) {
    for (int64_t i = 0; i < kb; ++i)
      if (x.bwd_slot[i * cb + j] >= 0) x.row_kb.push_back(i);
    x.row_start[j + 1] = (int64_t)x.row_kb.size();
  }
}

void fc_layer::set_mask(const uint8_t* mask) {
  ++mask_generation_;
  if (!mask) {
    mask_.clear();
    return;
  }
  const int64_t cb = ceil_div(c_, bc_), kb = ceil_div(k_, bk_);
  mask_.assign(mask, mask + k_ * c_);
  mask_blocks_.assign((size_t)(kb * cb), 0);
  for (int64_t k = 0; k < k_; ++k)
    for (int64_t c = 0; c < c_; ++c) mask_blocks_[(k / bk_) * cb + c / bc_] |= mask[k * c_ + c] != 0;
}

void fc_layer::pack(float* w, const float* wg, float lr, bool stochastic, uint64_t seed) {
  const int64_t cb = ceil_div(c_, bc_), kb = ceil_div(k_, bk_);
  const int64_t eb = dtype_b_bytes(t_), blk_bytes = bk_ * bc_ * eb;  // bk, bc even: no K padding
  const bool bf16 = t_ == dtype::bf16;
  // f32 keeps its copy in the backward blocks; bf16 snapshots w's rows as it goes.
  float* seen = bf16 ? (float*)w_seen_.resize({{w, k_ * c_ * 4}}) : nullptr;
  keep_.resize((size_t)(kb * cb));
  const int threads = threads_for(8.0 * k_ * c_);
  const uint8_t* mask = mask_.empty() || !wg ? nullptr : mask_.data();
  // Phase 1, one block row of W per iteration: update its blocks, snapshot them, and note which
  // hold a nonzero. A block the mask prunes whole is skipped: zero since prune(), it stays so
  // (and if the caller wrote it since, the next refresh sees the difference and packs again).
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t i = 0; i < kb; ++i) {
    const int64_t rows = std::min(bk_, k_ - i * bk_);
    for (int64_t j = 0; j < cb; ++j) {
      if (mask && !mask_blocks_[i * cb + j]) {
        keep_[i * cb + j] = 0;
        continue;
      }
      const int64_t width = std::min(bc_, c_ - j * bc_);
      bool any = false;
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t at = (i * bk_ + r) * c_ + j * bc_;
        float* wr = w + at;
        if (mask) {
          for (int64_t e = 0; e < width; ++e) wr[e] = mask[at + e] ? wr[e] - lr * wg[at + e] : 0.0f;
        } else if (wg) {
          for (int64_t e = 0; e < width; ++e) wr[e] -= lr * wg[at + e];
        }
        if (bf16) std::memcpy(seen + at, wr, (size_t)width * 4);
        any = any || any_nonzero(wr, width);
      }
      keep_[i * cb + j] = any;
    }
  }
  index_blocks();
  const int64_t packed = index_.on ? index_.kept : kb * cb;
  char* fwd = aligned(fwd_, packed * blk_bytes);
  char* bwd = aligned(bwd_, packed * blk_bytes);
  // Phase 2: each packed block of the row, while its rows are in cache. A block row owns forward
  // blocks [i][*] and backward blocks [*][i].
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t i = 0; i < kb; ++i) {
    const int64_t rows = std::min(bk_, k_ - i * bk_);
    const float* wi = w + i * bk_ * c_;
    // t: the W block (bk × bc) in the weights' type, zero-padded.
    char* t = (char*)scratch(0, bk_ * bc_);
    for (int64_t j = 0; j < cb; ++j) {
      const int64_t fs = index_.fwd_slot[i * cb + j], bs = index_.bwd_slot[i * cb + j];
      if (fs < 0) continue;  // a pruned block: not packed, never read
      const int64_t width = std::min(bc_, c_ - j * bc_);
      char* fb = fwd + fs * blk_bytes;
      char* bb = bwd + bs * blk_bytes;
      if (rows < bk_ || width < bc_) std::memset(bf16 ? t : bb, 0, (size_t)blk_bytes);
      for (int64_t r = 0; r < rows; ++r) {
        const float* src = wi + r * c_ + j * bc_;
        const int64_t first = (i * bk_ + r) * c_ + j * bc_;
        if (!bf16)
          std::memcpy(bb + r * bc_ * 4, src, (size_t)width * 4);
        else if (stochastic)
          f32_to_bf16_stochastic(src, (uint16_t*)t + r * bc_, width, seed, (uint64_t)first);
        else
          f32_to_bf16(src, (uint16_t*)t + r * bc_, width);
      }
      // The backward block is t (f32) or t's VNNI-2 row pairs (bf16); the forward block is its
      // transpose in 32-bit units: f32 elements, or the bf16 pairs (q, q+1) VNNI-2 wants.
      if (bf16) interleave_pairs((const uint16_t*)t, bk_, bc_, (uint16_t*)bb);
      const uint32_t* t32 = (const uint32_t*)(bf16 ? t : bb);
      const int64_t units = bc_ * eb / 4;
      transpose(t32, bk_, units, units, (uint32_t*)fb, bk_);
    }
  }
  packed_ = true;
}

void fc_layer::set_bias(const float* b) {
  has_bias_ = b != nullptr;
  b_seen_.take({{b, k_ * 4}});
  bias_.assign((size_t)round_up(k_, bk_), 0.0f);
  if (b) std::copy(b, b + k_, bias_.begin());
}

// Whether w holds what was packed last: the snapshot for bf16; for f32 the backward blocks,
// which are W's own rows.
bool fc_layer::same_weights(const float* w) const {
  if (t_ == dtype::bf16) return w_seen_.same({{w, k_ * c_ * 4}});
  const int64_t cb = ceil_div(c_, bc_);
  const float* bwd = (const float*)aligned(const_cast<std::vector<char>&>(bwd_), 0);
  std::atomic<bool> same{true};
#pragma omp parallel for num_threads(threads_for(k_ * c_)) schedule(static)
  for (int64_t k = 0; k < k_; ++k) {
    if (!same.load(std::memory_order_relaxed)) continue;
    for (int64_t j = 0; j < cb; ++j) {
      const int64_t slot = index_.bwd_slot[(k / bk_) * cb + j], width = std::min(bc_, c_ - j * bc_);
      const float* row = w + k * c_ + j * bc_;
      // a block that is not packed holds ±0 only
      if (slot < 0 ? any_nonzero(row, width) : std::memcmp(row, bwd + (slot * bk_ + k % bk_) * bc_, (size_t)width * 4))
        same = false;
    }
  }
  return same;
}

bool fc_layer::refresh(const float* w, const float* b) {
  const bool w_same = packed_ && same_weights(w);
  const bool b_same = b_seen_.same({{b, k_ * 4}});
  if (!w_same) pack(const_cast<float*>(w), nullptr, 0.0f, false, 0);  // no gradient: w is only read
  if (!b_same) set_bias(b);
  return !(w_same && b_same);
}

void fc_layer::sgd(float* w, float* b, const float* wg, const float* bg, float lr, bool stochastic, uint64_t seed) {
  pack(w, wg, lr, stochastic && t_ == dtype::bf16, seed);
  if (b)
    for (int64_t i = 0; i < k_; ++i) b[i] -= lr * bg[i];
  set_bias(b);
}

status fc_layer::forward_plan_for(int64_t bn, int threads, bool z, std::shared_ptr<const forward_plan>* out) {
  forward_key key = zeroed<forward_key>();
  key.bn = bn, key.level = (int32_t)active_isa(), key.threads = threads, key.bias = has_bias_, key.z = z;
  key.sparse = index_.on ? index_.generation + 1 : 0;
  return fwd_plans_.get(key, out, [&](forward_plan& pl) {
    if (index_.on) {  // A_i = X[nb][cb_i] (offset within the row of blocks), B_i = the i-th kept block
      const int64_t fblk = bc_ * bk_;
      for (size_t q = 0; q < index_.col_cb.size(); ++q) {
        pl.offs_a.push_back(index_.col_cb[q] * bn * bc_);
        pl.offs_b.push_back((int64_t)q * fblk);
      }
    }
    if (z && t_ == dtype::bf16) reserve_scratch(threads, {{0, bn * bk_}});
    // With z the epilogue stops at the bias (into z) and the activation follows on the block
    // while it is in cache; without, it is all one epilogue.
    epilogue_desc e;
    e.bias = has_bias_;
    e.act = z ? activation::none : act_;
    e.out = z || t_ != dtype::bf16 ? out_type::f32 : out_type::bf16;
    const batch_kind kind = index_.on ? batch_kind::offset : batch_kind::stride;
    return dispatch(desc{t_, bn, bk_, bc_, bc_, bk_, bk_, kind, 0.0f, e}, &pl.kr);
  });
}

status fc_layer::backward_plan_for(int64_t bn, int threads, bool data, bool accumulate,
                                   std::shared_ptr<const backward_plan>* out) {
  backward_key key = zeroed<backward_key>();
  key.bn = bn, key.level = (int32_t)active_isa(), key.threads = threads, key.data = data, key.accumulate = accumulate;
  key.sparse = index_.on ? index_.generation + 1 : 0;
  key.mask = mask_generation_;
  return bwd_plans_.get(key, out, [&](backward_plan& pl) {
    reserve_scratch(threads, {{0, bn * bk_}, {1, bk_}, {2, bn * bk_}});  // dZ's per-block scratch
    const int64_t cb = ceil_div(c_, bc_), kb = ceil_div(k_, bk_);
    if (index_.on) {  // A_i = dZ[nb][kb_i], B_i = the i-th kept block in backward order
      for (size_t q = 0; q < index_.row_kb.size(); ++q) {
        pl.offs_a.push_back(index_.row_kb[q] * bn * bk_);
        pl.offs_b.push_back((int64_t)q * bk_ * bc_);
      }
    }
    // The weight gradient: every block but those a pruning mask removes whole (their gradient is
    // zero, as for PyTorch's weight·mask), so an unmasked block of zeros still learns.
    for (int64_t b = 0; b < kb * cb; ++b)
      (!mask_.empty() && !mask_blocks_[b] ? pl.pruned : pl.kept).push_back(b);
    const batch_kind kind = index_.on ? batch_kind::offset : batch_kind::stride;
    if (data)
      if (status s = dispatch(desc{t_, bn, bc_, bk_, bk_, bc_, bc_, kind, 0.0f}, &pl.kd); s != status::ok)
        return s;
    const int64_t m_edge = k_ - (kb - 1) * bk_, n_edge = c_ - (cb - 1) * bc_;
    for (int fm = 0; fm < (kb > 1 ? 2 : 1); ++fm)
      for (int fn = 0; fn < (cb > 1 ? 2 : 1); ++fn) {
        desc d{t_, fm ? bk_ : m_edge, fn ? bc_ : n_edge, bn, bn, bc_, c_, batch_kind::stride, accumulate ? 1.0f : 0.0f};
        if (status s = dispatch(d, &pl.kw[fm][fn]); s != status::ok) return s;
      }
    return status::ok;
  });
}

status fc_layer::forward(int64_t n, int64_t bn, const void* xb, void* yb, float* zb) {
  const int64_t nb = ceil_div(n, bn), cb = ceil_div(c_, bc_), kb = ceil_div(k_, bk_);
  const int64_t ab = dtype_a_bytes(t_), ob = t_ == dtype::bf16 ? 2 : 4;
  const int64_t fblk = bc_ * bk_;  // a weight block, in B elements (bc, bk even)
  const bool bf16 = t_ == dtype::bf16;
  const int threads = threads_for(2.0 * n * c_ * k_);
  std::shared_ptr<const forward_plan> plan;
  if (status s = forward_plan_for(bn, threads, zb != nullptr, &plan); s != status::ok) return s;
  const kernel* kr = plan->kr;
  const char* fwd = aligned(fwd_, 0);
  const int64_t items = kb * nb;
  const bool sparse = index_.on;
  const int64_t* col = index_.col_start.data();
  // Items walk N fastest, so a thread's consecutive items share a column of weight blocks.
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t item = 0; item < items; ++item) {
    const int64_t i = item % nb, j = item / nb;
    batch_ref batch;
    batch.a = (const char*)xb + i * cb * bn * bc_ * ab;
    if (sparse) {  // only the kept blocks of column j
      batch.count = col[j + 1] - col[j];
      batch.b = fwd;
      batch.offs_a = plan->offs_a.data() + col[j];
      batch.offs_b = plan->offs_b.data() + col[j];
    } else {
      batch.count = cb;
      batch.stride_a = bn * bc_;
      batch.b = fwd + j * cb * fblk * dtype_b_bytes(t_);
      batch.stride_b = fblk;
    }
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

bool fc_layer::has_rows_forward() const {
  return t_ == dtype::f32 && bk_ == panel_width && !needs_z() && !index_.on;
}

status fc_layer::forward_rows(int64_t n, const float* x, int64_t ldx, float* y, int64_t ldy) {
  // Measured on Zen 4, 2 threads, (700 × 650) · Wᵀ (650 × 10 000), the word language model's
  // decoder: 53 ms through the blocked copies (x's 650 features padded to 704, the output
  // unblocked), 45 ms here (brgemm.torch.Linear's training forward; a plain gemm: 43 ms).
  if (!has_rows_forward()) return status::bad_dtype;
  epilogue_desc e;
  e.bias = has_bias_;
  e.act = act_;
  e.out = out_type::f32;
  epilogue_args args;
  args.bias = bias_.data();
  return gemm(t_, n, k_, c_, x, ldx, aligned(fwd_, 0), panel_width, y, ldy, 0.0f, e, e.any() ? &args : nullptr,
              b_layout::panels, ceil_div(c_, bc_) * bc_);
}

status fc_layer::backward(int64_t n, int64_t bn, const float* gyb, const void* yb, const float* zb, const void* xb,
                          float* gxb, float* wg, float* bg, bool accumulate) {
  const int64_t nb = ceil_div(n, bn), cb = ceil_div(c_, bc_), kb = ceil_div(k_, bk_);
  const int64_t ab = dtype_a_bytes(t_);
  const bool bf16 = t_ == dtype::bf16;
  const int64_t blk = bn * bk_;
  const int threads = threads_for(4.0 * n * c_ * k_);
  std::shared_ptr<const backward_plan> plan;
  if (status s = backward_plan_for(bn, threads, gxb != nullptr, accumulate, &plan); s != status::ok) return s;

  // dZ = dY ⊙ act'(·), blocked as dY (the A of backward data) and transposed (the A of the
  // weight gradient), in the kernel's A type; the bias gradient is its column sums.
  const bool dz_is_dy = !bf16 && act_ == activation::none;
  char* dz = dz_is_dy ? (char*)gyb : aligned(dy_, nb * kb * blk * ab);
  char* dzt = aligned(dyt_, nb * kb * blk * ab);
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t j = 0; j < kb; ++j) {
    const int64_t cols = std::min(bk_, k_ - j * bk_);
    float* sum = scratch(1, bk_);
    std::fill(sum, sum + bk_, 0.0f);
    for (int64_t i = 0; i < nb; ++i) {
      const int64_t at = (i * kb + j) * blk;
      const float* d = activation_grad(act_, gyb, yb, bf16, zb, at, blk, bf16 ? scratch(0, blk) : (float*)dz + at, 2);
      for (int64_t r = 0; r < std::min(bn, n - i * bn); ++r)
        for (int64_t q = 0; q < cols; ++q) sum[q] += d[r * bk_ + q];
      char* t = dzt + (j * nb + i) * blk * ab;
      if (bf16) {
        uint16_t* d16 = (uint16_t*)dz + at;
        f32_to_bf16(d, d16, blk);
        transpose(d16, bn, bk_, bk_, (uint16_t*)t, bn);
      } else {
        transpose(d, bn, bk_, bk_, (float*)t, bn);
      }
    }
    if (bg)
      for (int64_t q = 0; q < cols; ++q) bg[j * bk_ + q] = (accumulate ? bg[j * bk_ + q] : 0.0f) + sum[q];
  }

  // The weight gradient reduces over rows of X, so bf16 X goes into VNNI-2 pairs of rows.
  const char* xw = (const char*)xb;
  if (bf16) {
    char* xv = aligned(xv_, nb * cb * bn * bc_ * 2);
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t b = 0; b < nb * cb; ++b)
      interleave_pairs((const uint16_t*)xb + b * bn * bc_, bn, bc_, (uint16_t*)xv + b * bn * bc_);
    xw = xv;
  }

  const kernel* kd = plan->kd;
  const kernel* const(&kw)[2][2] = plan->kw;

  const char* bwd = aligned(bwd_, 0);
  const int64_t bblk = bk_ * bc_;
  const bool sparse = index_.on;
  const int64_t* row = index_.row_start.data();
  // The weight gradient of the blocks the mask keeps; the others are zero (written unless
  // accumulating).
  const std::vector<int64_t>&pruned = plan->pruned, &kept = plan->kept;
  const int64_t wg_items = (int64_t)kept.size();
  // Two loops of equal work per thread (an item of backward data is kb times larger).
#pragma omp parallel num_threads(threads)
  {
    batch_ref batch;
    if (gxb) {
#pragma omp for schedule(static) nowait
      for (int64_t item = 0; item < nb * cb; ++item) {
        const int64_t i = item % nb, j = item / nb;  // N fastest: a thread's items share weight blocks
        batch.a = dz + i * kb * blk * ab;
        if (sparse) {
          batch.count = row[j + 1] - row[j];
          batch.b = bwd;
          batch.offs_a = plan->offs_a.data() + row[j];
          batch.offs_b = plan->offs_b.data() + row[j];
        } else {
          batch.count = kb;
          batch.stride_a = blk;
          batch.b = bwd + j * kb * bblk * dtype_b_bytes(t_);
          batch.stride_b = bblk;
        }
        execute(*kd, batch, gxb + (i * cb + j) * bn * bc_);
      }
    }
    if (!accumulate) {
#pragma omp for schedule(static) nowait
      for (int64_t p = 0; p < (int64_t)pruned.size(); ++p) {
        const int64_t j = pruned[p] / cb, q = pruned[p] % cb;
        for (int64_t r = j * bk_; r < std::min(k_, (j + 1) * bk_); ++r)
          std::memset(wg + r * c_ + q * bc_, 0, (size_t)std::min(bc_, c_ - q * bc_) * 4);
      }
    }
#pragma omp for schedule(static) nowait
    for (int64_t p = 0; p < wg_items; ++p) {
      const int64_t b = kept[p], j = b / cb, q = b % cb;  // output block j, input block q
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
