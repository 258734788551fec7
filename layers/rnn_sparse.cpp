// Block-sparse products of the recurrent layer driver (rnn.h): the tables of the kept blocks of
// W_hh's per-hidden-block slices and of W_ihᵀ's column blocks (built at each pack), and the
// input product Gx = X·W_ihᵀ + b, dense or over the kept blocks; backward data's transposed
// tables and its dx product; the weight gradient's blocks under a pruning mask. The loops that
// walk the recurrent tables step by step are rnn.cpp's.
#include <algorithm>
#include <cstring>
#include <numeric>
#include "blocks.h"
#include "gemm.h"
#include "rnn.h"

namespace brgemm::layers {

// The input product's kept blocks: per hidden block, the kbx-row blocks of its columns of W_ihᵀ
// (I × G·Hp) holding a nonzero, read from the internal rows (bf16: already rounded).
void rnn_layer::index_input() {
  const int64_t wb = g_ * bh, blocks = hp_ / bh, ghp = g_ * hp_;
  if (in_ % 16) return;  // x_gen_ stays 0: a partial row block would need a kernel of its own
  kbx_ = in_ % 64 == 0 ? 64 : in_ % 32 == 0 ? 32 : 16;
  const int64_t per = in_ / kbx_;
  std::vector<int64_t> at(1, 0), offs_a, offs_b;
  for (int64_t blk = 0; blk < blocks; ++blk) {
    for (int64_t q = 0; q < per; ++q) {
      bool nonzero = false;
      for (int64_t r = blk * wb; r < (blk + 1) * wb && !nonzero; ++r)
        for (int64_t c = q * kbx_; c < (q + 1) * kbx_ && !nonzero; ++c) {
          uint32_t bits;
          std::memcpy(&bits, &wih_b_[(size_t)(r * in_ + c)], 4);
          nonzero = bits != 0;
        }
      if (!nonzero) continue;
      offs_a.push_back(q * kbx_);
      offs_b.push_back(q * kbx_ * ghp);  // kbx rows of W_ihᵀ (whole kp-row groups when packed)
    }
    at.push_back((int64_t)offs_a.size());
  }
  const double density = (double)offs_a.size() / (double)(blocks * per);
  const int32_t was = x_gen_;
  x_gen_ = 0;
  if (policy_ != sparse_policy::sparse && !(policy_ == sparse_policy::automatic && density <= rnn_sparse_crossover))
    return;
  x_gen_ = was && at == x_at_ && offs_b == x_offs_b_ ? was : ++gen_;  // plans key on it
  x_at_ = std::move(at);
  x_offs_a_ = std::move(offs_a);
  x_offs_b_ = std::move(offs_b);
}

// The kept row blocks of each hidden block's packed W_hh slice (rows kb·q .. kb·q + kb − 1 are
// contiguous from element kb·q·G·bh: f32 row-major, bf16 pairs with kb even), and the choice.
void rnn_layer::index_recurrent() {
  const int64_t wb = g_ * bh, blocks = hp_ / bh, eb = dtype_b_bytes(t_);
  const int64_t blk_elems = packed_b_elements(t_, hp_, wb);
  kb_ = hp_ % 64 == 0 ? 64 : hp_ % 32 == 0 ? 32 : 16;
  const int64_t per = hp_ / kb_;
  const char* whh = aligned(whh_, 0);
  std::vector<int64_t> at(1, 0), offs_a, offs_b;
  for (int64_t blk = 0; blk < blocks; ++blk) {
    for (int64_t q = 0; q < per; ++q) {
      const char* p = whh + (blk * blk_elems + q * kb_ * wb) * eb;
      bool nonzero = false;
      for (int64_t i = 0; i < kb_ * wb * eb && !nonzero; ++i) nonzero = p[i] != 0;
      if (!nonzero) continue;
      offs_a.push_back(q * kb_);
      offs_b.push_back(blk * blk_elems + q * kb_ * wb);
    }
    at.push_back((int64_t)offs_a.size());
  }
  const double density = (double)offs_a.size() / (double)(blocks * per);
  const bool on = policy_ == sparse_policy::sparse ||
                  (policy_ == sparse_policy::automatic && density <= rnn_sparse_crossover);
  index_input();
  if (!on) {
    hh_gen_ = 0;
  } else {
    if (hh_gen_ == 0 || at != hh_at_ || offs_b != hh_offs_b_) hh_gen_ = ++gen_;  // plans key on it
    hh_at_ = std::move(at);
    hh_offs_a_ = std::move(offs_a);
    hh_offs_b_ = std::move(offs_b);
  }
  index_backward();
}

// The forward tables transposed, for backward data: per column block q of W (kb inputs of the
// forward's row blocks), the hidden blocks kept there in ascending order, so that the offset
// batch sums dG·W over q's columns in the dense product's order of k, skipping only zero blocks.
// W in f32 (internal rows, bf16-rounded for bf16), each column block a (G·Hp × kb) panel.
void rnn_layer::index_backward() {
  const int64_t wb = g_ * bh, ghp = g_ * hp_;
  // at/offs: per hidden block, its kept q as offsets_a = q·kw; panel: w (ghp × cols) → (cols/kw) panels
  auto transpose_table = [&](const std::vector<int64_t>& at, const std::vector<int64_t>& offs_a, int64_t kw,
                             int64_t cols, const std::vector<float>& w, std::vector<int64_t>* bat,
                             std::vector<int64_t>* boa, std::vector<int64_t>* bob, std::vector<float>* panels) {
    const int64_t per = cols / kw;
    std::vector<std::vector<int64_t>> lists((size_t)per);
    for (int64_t blk = 0; blk + 1 < (int64_t)at.size(); ++blk)
      for (int64_t e = at[blk]; e < at[blk + 1]; ++e) lists[(size_t)(offs_a[e] / kw)].push_back(blk);
    bat->assign(1, 0), boa->clear(), bob->clear();
    for (const auto& l : lists) {
      for (int64_t blk : l) {
        boa->push_back(blk * wb);       // dG's columns of the hidden block
        bob->push_back(blk * wb * kw);  // its rows of the column block's panel
      }
      bat->push_back((int64_t)boa->size());
    }
    panels->resize((size_t)(ghp * cols));
    for (int64_t q = 0; q < per; ++q)
      for (int64_t r = 0; r < ghp; ++r)
        std::copy(w.data() + r * cols + q * kw, w.data() + r * cols + (q + 1) * kw,
                  panels->data() + (q * ghp + r) * kw);
  };
  if (hh_gen_)
    transpose_table(hh_at_, hh_offs_a_, kb_, hp_, whh_b_, &bt_at_, &bt_offs_a_, &bt_offs_b_, &whh_q_);
  else
    bt_at_.clear(), whh_q_.clear();
  if (x_gen_)
    transpose_table(x_at_, x_offs_a_, kbx_, in_, wih_b_, &bx_at_, &bx_offs_a_, &bx_offs_b_, &wih_q_);
  else
    bx_at_.clear(), wih_q_.clear();
}

// dx (T·N × I) (+)= dGx · W_ih over the kept blocks: per (64 rows, column block), one offset
// batch per K chunk of the dense gemm() that holds a kept block (the first always: it writes).
status rnn_layer::input_backward(float* dx, bool dx_add, const step_plan& plan, int threads) {
  const int64_t rows = steps_ * rows_, ghp = g_ * hp_, per = in_ / kbx_, chunks = ceil_div(rows, 64);
  const int64_t nc = plan.dx_chunks;
  const float* w = wih_q_.data();
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t item = 0; item < chunks * per; ++item) {
    const int64_t r0 = item / per * 64, q = item % per;
    for (int64_t c = 0; c < nc; ++c) {
      const int64_t* at = plan.dx_at.data() + q * nc + c;
      if (c > 0 && at[1] == at[0]) continue;  // C + 0
      batch_ref batch;
      batch.count = at[1] - at[0];
      batch.a = dgx_.data() + r0 * ghp;
      batch.b = w + q * ghp * kbx_;
      batch.offs_a = plan.dx_offs_a.data() + at[0];
      batch.offs_b = plan.dx_offs_b.data() + at[0];
      execute(*plan.kdx[c > 0 || dx_add][rows - r0 < 64], batch, dx + r0 * in_ + q * kbx_);
    }
  }
  return status::ok;
}

void rnn_layer::set_mask(const uint8_t* mask_ih, const uint8_t* mask_hh) {
  const int64_t gh = g_ * h_;
  mask_ih_.assign(mask_ih, mask_ih ? mask_ih + gh * in_ : nullptr);
  mask_hh_.assign(mask_hh, mask_hh ? mask_hh + gh * h_ : nullptr);
  index_gradient();
}

// The weight gradient's blocks: (gate g, hidden block blk, wg_cols inputs from c0) of each
// matrix, kept unless its mask prunes it whole; the product runs over the kept ones only when
// the policy says so (a mask, and at most rnn_sparse_crossover of the blocks kept, or forced).
void rnn_layer::index_gradient() {
  wg_row_.clear(), wg_col_.clear();
  const int64_t blocks = hp_ / bh;
  int64_t total = 0;
  auto add = [&](const std::vector<uint8_t>& mask, int64_t cols, int64_t padded) {
    for (int64_t c0 = 0; c0 < padded; c0 += wg_cols)
      for (int64_t blk = 0; blk < blocks; ++blk)
        for (int64_t g = 0; g < g_; ++g) {
          ++total;
          bool kept = mask.empty();
          for (int64_t u = blk * bh; u < std::min(h_, (blk + 1) * bh) && !kept; ++u)
            for (int64_t c = c0; c < std::min(cols, c0 + wg_cols) && !kept; ++c) kept = mask[(g * h_ + u) * cols + c];
          if (!kept) continue;
          wg_row_.push_back(col(g, blk * bh));
          wg_col_.push_back(c0);
        }
  };
  add(mask_ih_, in_, in_);
  wg_split_ = (int64_t)wg_row_.size();
  add(mask_hh_, h_, hp_);
  const bool masked = !mask_ih_.empty() || !mask_hh_.empty();
  const double density = (double)wg_row_.size() / (double)total;
  const bool on = masked && (policy_ == sparse_policy::sparse ||
                             (policy_ == sparse_policy::automatic && density <= rnn_sparse_crossover));
  wg_gen_ = on ? ++gen_ : 0;
}

// tmp2_ (G·Hp × ld, internal rows) = aᵀ-rows · b on the kept blocks of one matrix (W_ih, or
// W_hh when hh): a is dGᵀ (G·Hp × K, lda), b the K × ld inputs (x, or h). Each block is one
// call per K chunk of the dense gemm() (plan.wkc), summed as it sums them: bit-identical.
status rnn_layer::weight_gradient(const step_plan& plan, bool hh, const float* a, int64_t lda, const float* b,
                                  int threads) {
  const int64_t lo = hh ? wg_split_ : 0, hi = hh ? (int64_t)wg_row_.size() : wg_split_, ld = hh ? hp_ : in_;
  const int64_t k = hh ? used_ * rows_ : steps_ * rows_, kc = plan.wkc[hh];
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t p = lo; p < hi; ++p) {
    const int64_t r = wg_row_[p], c0 = wg_col_[p];
    for (int64_t k0 = 0; k0 < k; k0 += kc) {
      batch_ref batch;
      batch.count = 1;
      batch.a = a + r * lda + k0;
      batch.b = b + k0 * ld + c0;
      execute(*plan.kw[hh][ld - c0 < wg_cols][k0 == 0][k - k0 < kc], batch, tmp2_.data() + r * ld + c0);
    }
  }
  return status::ok;
}

status rnn_layer::input_product(int64_t T, int64_t N, const void* x, int threads) {
  const int64_t ghp = g_ * hp_, wb = g_ * bh, blocks = hp_ / bh, rb = std::min<int64_t>(N, 64);
  gx_.resize((size_t)(T * N * ghp));
  epilogue_desc e;
  e.bias = true;
  e.out = out_type::f32;
  epilogue_args ea;
  ea.bias = bias_.data();
  if (!x_gen_) return gemm(t_, T * N, ghp, in_, x, in_, aligned(wih_, 0), ghp, gx_.data(), ghp, 0.0f, e, &ea);
  // Summed in the K chunks of the dense gemm() (each from zero, then added; the bias on the
  // last): the same sums, so the same bits, also past one chunk (input_size > 512 for f32).
  plan_key key = zeroed<plan_key>();
  key.rows = N, key.steps = T, key.level = (int32_t)active_isa(), key.threads = threads, key.sparse = x_gen_;
  std::shared_ptr<const step_plan> plan;
  if (status st = xin_plans_.get(key, &plan, [&](step_plan& pl) {
        int64_t kc;
        if (status s = gemm_k_chunk(t_, T * N, ghp, in_, &kc); s != status::ok) return s;
        // ek rows of W_ihᵀ per entry (whole kp-row groups when packed)
        pl.chunk_entries(x_at_, x_offs_a_, blocks, kbx_, kc, in_, ghp);
        const int64_t ek = pl.dx_k;
        pl.k.assign(8, nullptr);  // [rb rows, N mod rb][first chunk][last chunk]
        for (int i = 0; i < 2; ++i)
          for (int first = 0; first < 2; ++first)
            for (int last = 0; last < 2; ++last)
              if (const int64_t m = i ? N % rb : rb; m > 0)
                if (status s = dispatch(desc{t_, m, wb, ek, in_, ghp, ghp, batch_kind::offset, first ? 0.0f : 1.0f,
                                             last ? e : epilogue_desc{}},
                                        &pl.k[(i * 2 + first) * 2 + last]);
                    s != status::ok)
                  return s;
        return status::ok;
      });
      st != status::ok)
    return st;
  const int64_t kp = dtype_kpack(t_), chunks = ceil_div(N, rb), ab = dtype_a_bytes(t_), wbytes = dtype_b_bytes(t_);
  const int64_t nc = plan->dx_chunks;
  const char* w = aligned(wih_, 0);
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t item = 0; item < T * chunks * blocks; ++item) {
    const int64_t row = item / (chunks * blocks) * N + item / blocks % chunks * rb, blk = item % blocks;
    const int64_t m = std::min(rb, N - row % N);
    epilogue_args args = ea;
    args.bias = bias_.data() + blk * wb;
    for (int64_t c = 0; c < nc; ++c) {
      const int64_t* at = plan->dx_at.data() + blk * nc + c;
      const bool first = c == 0, last = c + 1 == nc;
      if (!first && !last && at[1] == at[0]) continue;  // C + 0
      batch_ref batch;
      batch.count = at[1] - at[0];
      batch.a = (const char*)x + row * in_ * ab;
      batch.b = w + blk * wb * kp * wbytes;  // the column block (packed: kp rows interleaved)
      batch.offs_a = plan->dx_offs_a.data() + at[0];
      batch.offs_b = plan->dx_offs_b.data() + at[0];
      execute(*plan->k[((m == rb ? 0 : 1) * 2 + first) * 2 + last], batch, gx_.data() + row * ghp + blk * wb,
              last ? &args : nullptr);
    }
  }
  return status::ok;
}

void rnn_layer::set_sparse_policy(sparse_policy p) {
  policy_ = p;
  if (!whh_.empty()) index_recurrent();
  index_gradient();
}

}  // namespace brgemm::layers
