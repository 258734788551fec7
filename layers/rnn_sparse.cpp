// Block-sparse products of the recurrent layer driver (rnn.h): the tables of the kept blocks of
// W_hh's per-hidden-block slices and of W_ihᵀ's column blocks (built at each pack), and the
// input product Gx = X·W_ihᵀ + b, dense or over the kept blocks. The loops that walk the
// recurrent tables step by step are rnn.cpp's.
#include <cstring>
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
    return;
  }
  if (hh_gen_ == 0 || at != hh_at_ || offs_b != hh_offs_b_) hh_gen_ = ++gen_;  // plans key on it
  hh_at_ = std::move(at);
  hh_offs_a_ = std::move(offs_a);
  hh_offs_b_ = std::move(offs_b);
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
  plan_key key = zeroed<plan_key>();
  key.rows = N, key.level = (int32_t)active_isa(), key.threads = threads, key.sparse = x_gen_;
  std::shared_ptr<const step_plan> plan;
  if (status st = xin_plans_.get(key, &plan, [&](step_plan& pl) {
        pl.k.assign(2, nullptr);
        for (int i = 0; i < 2; ++i)
          if (const int64_t m = i ? N % rb : rb; m > 0)
            if (status s = dispatch(desc{t_, m, wb, kbx_, in_, ghp, ghp, batch_kind::offset, 0.0f, e}, &pl.k[i]);
                s != status::ok)
              return s;
        return status::ok;
      });
      st != status::ok)
    return st;
  const int64_t kp = dtype_kpack(t_), chunks = ceil_div(N, rb), ab = dtype_a_bytes(t_), wbytes = dtype_b_bytes(t_);
  const char* w = aligned(wih_, 0);
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t item = 0; item < T * chunks * blocks; ++item) {
    const int64_t row = item / (chunks * blocks) * N + item / blocks % chunks * rb, blk = item % blocks;
    const int64_t m = std::min(rb, N - row % N);
    batch_ref batch;
    batch.count = x_at_[blk + 1] - x_at_[blk];
    batch.a = (const char*)x + row * in_ * ab;
    batch.b = w + blk * wb * kp * wbytes;  // the column block (packed: kp rows interleaved)
    batch.offs_a = x_offs_a_.data() + x_at_[blk];
    batch.offs_b = x_offs_b_.data() + x_at_[blk];
    epilogue_args args = ea;
    args.bias = bias_.data() + blk * wb;
    execute(*plan->k[m == rb ? 0 : 1], batch, gx_.data() + row * ghp + blk * wb, &args);
  }
  return status::ok;
}

void rnn_layer::set_sparse_policy(sparse_policy p) {
  policy_ = p;
  if (!whh_.empty()) index_recurrent();
}

}  // namespace brgemm::layers
