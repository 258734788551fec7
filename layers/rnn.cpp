// Recurrent layer driver (rnn.h). Forward, per step s and (row block, hidden block):
//   tile = h_s[rows] · W_hhᵀ[:, block's gates]          one BRGEMM call (kernel per row count)
//   gates = f(Gx[t][rows, block's gates] + tile)       while the tile is in L1
// Backward, per step from the last, per (row block, run of hidden units; one run per thread):
//   dh[rows, units] += dGh_{s+1}[rows, :] · W_hh[:, units]     one BRGEMM call (beta 1)
//   dG_s[rows, units' gates] from dh + dy, the saved gates and the cell state
// then three large products for the weight gradients and dx, after the time loop. Block-sparse
// (rnn_sparse.cpp): the run is one column block, its call an offset batch over the kept blocks;
// dx and, under a pruning mask, the weight gradients likewise over the kept blocks.
#include "rnn.h"
#include <cmath>
#include <numeric>
#include <omp.h>
#include "blocks.h"
#include "gemm.h"

namespace brgemm::layers {

namespace {

// What the gate math reads and writes, for the per-ISA copies below.
struct gate_view {
  int64_t n, h, hp, g, steps;
  bool lstm, k, bf16, reverse, y16;  // y16: y in bf16
  const int64_t* lengths;  // or null
  const float *gx, *bhn;
  float *hs, *cs, *act, *dgx, *dgh, *dh, *dc;
  uint16_t* h16;
  int64_t gx_ld;           // Gx's per-row stride: G·Hp, or 0 when the step's tile holds x's product (gx: the bias)
  int64_t time(int64_t s, int64_t i) const { return reverse ? (lengths ? lengths[i] : steps) - 1 - s : s; }
};
constexpr int64_t bh = rnn_layer::bh;

// A step's rows of one hidden block: the core's gate kernels (brgemm.h: lstm_gates, gru_gates)
// on each run of rows that share their time (all of them but in a reverse direction over
// sequences of different lengths).
void gate_rows(const gate_view& v, int64_t s, int64_t r0, int64_t m, int64_t blk, const float* tile, void* y,
               int64_t ldy, bool train) {
  const int64_t n = v.n, wb = v.g * bh, u0 = blk * bh, hp = v.hp;
  for (int64_t r = 0; r < m;) {
    const int64_t i = r0 + r, t = v.time(s, i);
    int64_t e = r + 1;
    while (e < m && v.time(s, r0 + e) == t) ++e;
    lstm_gate_rows g;
    g.m = e - r;
    g.pre = tile + r * wb, g.ld_pre = wb;
    g.add = v.gx + (t * n + i) * v.gx_ld + blk * wb, g.ld_add = v.gx_ld;
    if (v.lstm) {
      g.c_prev = v.cs + (s * n + i) * hp + u0, g.ld_c_prev = hp;
      g.c = v.cs + ((s + 1) * n + i) * hp + u0, g.ld_c = hp;
    } else {  // the GRU reads h before the step
      g.c_prev = v.hs + (s * n + i) * hp + u0, g.ld_c_prev = hp;
    }
    g.h = v.hs + ((s + 1) * n + i) * hp + u0, g.ld_h = hp;
    if (v.bf16) g.h16 = v.h16 + (((s + 1) % 2) * n + i) * hp + u0, g.ld_h16 = hp;
    if (v.y16)
      g.y16 = (uint16_t*)y + (t * n + i) * ldy + u0;
    else
      g.y = (float*)y + (t * n + i) * ldy + u0;
    g.ld_y = ldy, g.y_units = std::min(bh, v.h - u0);
    if (train) g.act = v.act + (s * n + i) * 4 * hp + blk * 4 * bh, g.ld_act = 4 * hp;
    g.ktanh = v.k;
    if (v.lstm)
      lstm_gates(g);
    else
      gru_gates(g, v.bhn + u0);
    r = e;
  }
}

// The backward of a step's rows over the units [u0, u0 + un): the core's gate kernels
// (lstm_gates_backward, gru_gates_backward) per hidden block, on each run of rows that share
// their time (as gate_rows).
void backward_rows(const gate_view& v, int64_t s, int64_t r0, int64_t m, int64_t u0, int64_t un, const float* dy,
                   int64_t ldy) {
  const int64_t n = v.n, ghp = v.g * v.hp, wb = v.g * bh;
  for (int64_t r = 0; r < m;) {
    const int64_t i = r0 + r, t = v.time(s, i);
    int64_t e = r + 1;
    while (e < m && v.time(s, r0 + e) == t) ++e;
    for (int64_t b0 = u0; b0 < u0 + un; b0 += bh) {
      const int64_t blk = b0 / bh;
      gate_grad_rows g;
      g.m = e - r;
      g.act = v.act + (s * n + i) * 4 * v.hp + blk * 4 * bh, g.ld_act = 4 * v.hp;
      if (v.lstm) g.c = v.cs + ((s + 1) * n + i) * v.hp + b0, g.ld_c = v.hp;
      const float* prev = v.lstm ? v.cs : v.hs;  // c_{t−1}, or the GRU's h_{t−1}
      g.c_prev = prev + (s * n + i) * v.hp + b0, g.ld_c_prev = v.hp;
      g.dh = v.dh + i * v.hp + b0, g.ld_dh = v.hp;
      if (dy) g.dy = dy + (t * n + i) * ldy + b0, g.ld_dy = ldy;
      g.y_units = std::max<int64_t>(0, std::min(bh, v.h - b0));
      if (v.lstm) g.dc = v.dc + i * v.hp + b0, g.ld_dc = v.hp;
      g.dgx = v.dgx + (t * n + i) * ghp + blk * wb, g.ld_dgx = ghp;
      g.dgh = v.dgh + (s * n + i) * ghp + blk * wb, g.ld_dgh = ghp;
      g.ktanh = v.k;
      v.lstm ? lstm_gates_backward(g) : gru_gates_backward(g);
    }
    r = e;
  }
}

// f32 values rounded through bf16 (the weights a bf16 layer multiplies).
void round_bf16(float* v, int64_t n) {
  std::vector<uint16_t> b((size_t)n);
  f32_to_bf16(v, b.data(), n);
  bf16_to_f32(b.data(), v, n);
}

// dst (cols × rows) = srcᵀ (rows × cols, row-major), in parallel over row chunks.
void transpose_parallel(const float* src, int64_t rows, int64_t cols, float* dst, int threads) {
  const int64_t chunk = 64;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t r0 = 0; r0 < rows; r0 += chunk)
    transpose(src + r0 * cols, std::min(chunk, rows - r0), cols, cols, dst + r0, rows);
}

}  // namespace

rnn_layer::rnn_layer(rnn_cell cell, dtype t, int64_t input, int64_t hidden, bool reverse, bool ktanh)
    : cell_(cell), t_(t), in_(input), h_(hidden), hp_(round_up(hidden, bh)), g_(gates()), reverse_(reverse),
      ktanh_(ktanh) {}

bool rnn_layer::refresh(const float* w_ih, const float* w_hh, const float* b_ih, const float* b_hh) {
  const int64_t nih = g_ * h_ * in_, nhh = g_ * h_ * h_, nb = g_ * h_, ghp = g_ * hp_;
  // One snapshot of all four: any change repacks everything (the biases are folded together).
  const packed_weights::parts args{{w_ih, nih * 4}, {w_hh, nhh * 4}, {b_ih, nb * 4}, {b_hh, nb * 4}};
  if (seen_.same(args)) return false;
  seen_.take(args);
  const bool bias = b_ih != nullptr;
  has_bias_ = bias;
  const bool b16 = t_ == dtype::bf16;

  // Backward copies first (f32, in internal gate order; rounded through bf16 for bf16).
  wih_b_.assign((size_t)(ghp * in_), 0.0f);
  whh_b_.assign((size_t)(ghp * hp_), 0.0f);
  for (int64_t g = 0; g < g_; ++g)
    for (int64_t u = 0; u < h_; ++u) {
      std::copy(w_ih + (g * h_ + u) * in_, w_ih + (g * h_ + u + 1) * in_, wih_b_.begin() + col(g, u) * in_);
      std::copy(w_hh + (g * h_ + u) * h_, w_hh + (g * h_ + u + 1) * h_, whh_b_.begin() + col(g, u) * hp_);
    }
  if (b16) {
    round_bf16(wih_b_.data(), ghp * in_);
    round_bf16(whh_b_.data(), ghp * hp_);
  }

  // Backward's recurrent product reads W_hh up to 64 units (a panel) at a time: those columns as contiguous
  // panels (G·Hp × 64), which the prefetcher follows (rows 4·Hp bytes apart did not).
  whh_p_.resize((size_t)(ghp * hp_));
  for (int64_t u0 = 0; u0 < hp_; u0 += panel) {
    const int64_t un = std::min(panel, hp_ - u0);
    for (int64_t r = 0; r < ghp; ++r)
      std::copy(whh_b_.data() + r * hp_ + u0, whh_b_.data() + r * hp_ + u0 + un, whh_p_.data() + u0 * ghp + r * un);
  }

  // Forward: W_ihᵀ (I × G·Hp) for the input projection, and per hidden block the (Hp × G·bh)
  // slice of W_hhᵀ, each in the kernel's B layout.
  std::vector<float> b((size_t)(in_ * ghp));
  transpose(wih_b_.data(), ghp, in_, in_, b.data(), ghp);
  std::vector<uint16_t> b16v;
  if (!b16) {
    std::memcpy(aligned(wih_, in_ * ghp * 4), b.data(), (size_t)(in_ * ghp * 4));
  } else {
    b16v.resize(b.size());
    f32_to_bf16(b.data(), b16v.data(), in_ * ghp);
    pack_b(t_, b16v.data(), in_, ghp, ghp, aligned(wih_, packed_b_elements(t_, in_, ghp) * 2), ghp, nullptr);
  }
  const int64_t wb = g_ * bh, blk_bytes = packed_b_elements(t_, hp_, wb) * dtype_b_bytes(t_), blocks = hp_ / bh;
  char* whh = aligned(whh_, blocks * blk_bytes);
  std::vector<float> slice((size_t)(hp_ * wb));
  std::vector<uint16_t> slice16(b16 ? slice.size() : 0);
  for (int64_t blk = 0; blk < blocks; ++blk) {
    // rows v, columns g·bh + j: W_hh[g·H + u][v] for u = blk·bh + j (internal row col(g, u))
    transpose(whh_b_.data() + blk * wb * hp_, wb, hp_, hp_, slice.data(), wb);
    if (!b16) {
      std::memcpy(whh + blk * blk_bytes, slice.data(), (size_t)(hp_ * wb * 4));
    } else {
      f32_to_bf16(slice.data(), slice16.data(), hp_ * wb);
      pack_b(t_, slice16.data(), hp_, wb, wb, whh + blk * blk_bytes, wb, nullptr);
    }
  }
  // LSTM: also W_ihᵀ by hidden block (I × G·bh), for the steps that multiply x_t themselves.
  if (cell_ == rnn_cell::lstm) {
    const int64_t xblk_bytes = packed_b_elements(t_, in_, wb) * dtype_b_bytes(t_);
    char* wx = aligned(wih_blk_, blocks * xblk_bytes);
    std::vector<float> xs((size_t)(in_ * wb));
    std::vector<uint16_t> xs16(b16 ? xs.size() : 0);
    for (int64_t blk = 0; blk < blocks; ++blk) {
      transpose(wih_b_.data() + blk * wb * in_, wb, in_, in_, xs.data(), wb);
      if (!b16) {
        std::memcpy(wx + blk * xblk_bytes, xs.data(), (size_t)(in_ * wb * 4));
      } else {
        f32_to_bf16(xs.data(), xs16.data(), in_ * wb);
        pack_b(t_, xs16.data(), in_, wb, wb, wx + blk * xblk_bytes, wb, nullptr);
      }
    }
  }

  index_recurrent();

  bias_.assign((size_t)ghp, 0.0f);
  bhn_.assign((size_t)hp_, 0.0f);
  if (bias)
    for (int64_t g = 0; g < g_; ++g)
      for (int64_t u = 0; u < h_; ++u) {
        const bool recurrent_inside = cell_ == rnn_cell::gru && g == 2;  // r ⊙ (W_hn·h + b_hn)
        bias_[col(g, u)] = b_ih[g * h_ + u] + (recurrent_inside ? 0.0f : b_hh[g * h_ + u]);
        if (recurrent_inside) bhn_[u] = b_hh[g * h_ + u];
      }
  return true;
}

// The gate math's view of a layer.
#define RNN_VIEW                                                                                          \
  gate_view v{rows_, h_, hp_, g_, steps_, cell_ == rnn_cell::lstm, ktanh_, t_ == dtype::bf16, reverse_, false, \
              lengths_.empty() ? nullptr : lengths_.data(), gx_.data(), bhn_.data(), hs_p_, cs_p_, act_p_,      \
              dgx_.data(), dgh_.data(), dh_.data(), dc_.data(), h16_.data(), g_ * hp_};

status rnn_layer::forward_plan_for(int64_t N, int threads, std::shared_ptr<const step_plan>* out) {
  plan_key key = zeroed<plan_key>();
  key.rows = N, key.level = (int32_t)active_isa(), key.threads = threads, key.sparse = hh_gen_, key.xsparse = x_gen_;
  return fwd_plans_.get(key, out, [&](step_plan& pl) {
    const int64_t wb = g_ * bh, rb = std::min<int64_t>(N, 64);
    pl.level = (isa)key.level;
    pl.sparse = key.sparse != 0;
    const desc d = pl.sparse ? desc{t_, 1, wb, kb_, hp_, wb, wb, batch_kind::offset, 0.0f}
                             : desc{t_, 1, wb, hp_, hp_, wb, wb, batch_kind::stride, 0.0f};
    pl.k.assign((size_t)rb, nullptr);
    pl.kx.assign((size_t)rb, nullptr);
    pl.k1.assign((size_t)rb, nullptr);
    for (int64_t m = 1; m <= rb; ++m) {
      if (status st = dispatch(desc{d.type, m, d.n, d.k, d.lda, d.ldb, d.ldc, d.batch, 0.0f}, &pl.k[m - 1]);
          st != status::ok)
        return st;
      if (cell_ != rnn_cell::lstm) continue;
      // x's product over W_ih by hidden block (dense), or over the kept row blocks of W_ihᵀ's
      // column block (sparse: input_product's offsets); h's with beta 1, as k.
      const desc dx = key.xsparse ? desc{t_, m, wb, kbx_, in_, g_ * hp_, wb, batch_kind::offset, 0.0f}
                                  : desc{t_, m, wb, in_, in_, wb, wb, batch_kind::stride, 0.0f};
      if (status st = dispatch(dx, &pl.kx[m - 1]); st != status::ok) return st;
      if (status st = dispatch(desc{d.type, m, d.n, d.k, d.lda, d.ldb, d.ldc, d.batch, 1.0f}, &pl.k1[m - 1]);
          st != status::ok)
        return st;
    }
    reserve_scratch(threads, {{0, rb * wb}});  // the step's tile
    return status::ok;
  });
}

status rnn_layer::backward_plan_for(int64_t N, int threads, std::shared_ptr<const step_plan>* out) {
  plan_key key = zeroed<plan_key>();
  key.rows = N, key.level = (int32_t)active_isa(), key.threads = threads;
  key.sparse = hh_gen_, key.xsparse = x_gen_, key.wsparse = wg_gen_;
  if (x_gen_ || wg_gen_) key.steps = steps_, key.used = (int32_t)used_;  // their products' M or K
  return bwd_plans_.get(key, out, [&](step_plan& pl) {
    const int64_t ghp = g_ * hp_, rb = std::min<int64_t>(N, 64), last = hp_ % panel, wb = g_ * bh;
    pl.level = (isa)key.level;
    if (key.sparse) {  // dh's column block of kb_ units over its kept hidden blocks (wb rows of W_hh each)
      pl.ks.assign((size_t)rb, nullptr);
      for (int64_t m = 1; m <= rb; ++m)
        if (status st = dispatch(desc{dtype::f32, m, kb_, wb, ghp, kb_, hp_, batch_kind::offset, 1.0f}, &pl.ks[m - 1]);
            st != status::ok)
          return st;
      // Column blocks split among the threads by their work: the kept blocks' products plus the
      // gate math of kb_ units (about one block product's time). In equal counts, the 8 column
      // blocks of an LSTM 512 at 75 % pruned held 37 and 27 kept blocks.
      const int64_t per = hp_ / kb_, parts = std::min<int64_t>(threads, per);
      int64_t total = 0;
      for (int64_t q = 0; q < per; ++q) total += bt_at_[q + 1] - bt_at_[q] + 1;
      pl.qsplit.assign(1, 0);
      for (int64_t q = 0, done = 0; q < per && (int64_t)pl.qsplit.size() < parts; ++q) {
        done += bt_at_[q + 1] - bt_at_[q] + 1;
        // part p − 1 ends after q when it has its share, or when each later part needs one block
        const int64_t p = (int64_t)pl.qsplit.size(), left = per - (q + 1), parts_left = parts - p;
        if (left >= parts_left && (done * parts >= p * total || left == parts_left)) pl.qsplit.push_back(q + 1);
      }
      pl.qsplit.push_back(per);  // every part holds at least one column block
    }
    // dx and the weight gradients sum in the K chunks the dense gemm() uses (each chunk from
    // zero, then added to the output): the same sums, so the same bits.
    if (key.xsparse) {  // dx's 64 rows (or the last ones) of a column block of kbx_ inputs
      const int64_t rows = key.steps * N, per = in_ / kbx_;
      int64_t kc;
      if (status st = gemm_k_chunk(dtype::f32, rows, in_, ghp, &kc); st != status::ok) return st;
      pl.chunk_entries(bx_at_, bx_offs_a_, per, wb, kc, ghp, kbx_);  // the kept blocks' rows of K
      const int64_t e = pl.dx_k;
      for (int beta = 0; beta < 2; ++beta)
        for (int edge = 0; edge < 2; ++edge)
          if (const int64_t m = edge ? rows % 64 : std::min<int64_t>(rows, 64); m > 0)
            if (status st = dispatch(desc{dtype::f32, m, kbx_, e, ghp, kbx_, in_, batch_kind::offset, (float)beta},
                                     &pl.kdx[beta][edge]);
                st != status::ok)
              return st;
    }
    if (key.wsparse) {  // a weight gradient block: 16 rows of dGᵀ times all of x's (h's) rows
      const int64_t rows_x = key.steps * N, rows_h = key.used * N;
      const int64_t lda_h = cell_ == rnn_cell::lstm && !reverse_ ? rows_x : rows_h;  // dgh_is_dgx
      for (int hh = 0; hh < 2; ++hh) {
        const int64_t ld = hh ? hp_ : in_, k = hh ? rows_h : rows_x;
        if (status st = gemm_k_chunk(dtype::f32, ghp, ld, k, &pl.wkc[hh]); st != status::ok) return st;
        for (int edge = 0; edge < 2; ++edge)
          for (int first = 0; first < 2; ++first)
            for (int rem = 0; rem < 2; ++rem) {
              const int64_t n = edge ? ld % wg_cols : std::min(ld, wg_cols), kcur = rem ? k % pl.wkc[hh] : pl.wkc[hh];
              if (n == 0 || kcur == 0 || (first && rem && k > pl.wkc[hh])) continue;
              if (status st = dispatch(desc{dtype::f32, bh, n, kcur, hh ? lda_h : rows_x, ld, ld, batch_kind::stride,
                                            first ? 0.0f : 1.0f},
                                       &pl.kw[hh][edge][first][rem]);
                  st != status::ok)
                return st;
            }
      }
    }
    if (key.sparse) return status::ok;
    // dh[rows, units] += dGh[rows, :] · W_hh[:, units] on a run of whole 16-unit blocks inside
    // one 64-unit panel of W_hh: kernels per row count, run width and panel (full, or the last
    // narrower one: its ldb differs).
    pl.k.assign((size_t)(rb * (panel / bh) * 2), nullptr);
    for (int64_t m = 1; m <= rb; ++m)
      for (int64_t w = bh; w <= panel; w += bh)
        for (int64_t narrow : {0, 1}) {
          const int64_t ldb = narrow ? last : std::min(panel, hp_);
          if (w > ldb || (narrow && last == 0)) continue;
          if (status st = dispatch(desc{dtype::f32, m, w, ghp, ghp, ldb, hp_, batch_kind::stride, 1.0f},
                                   &pl.k[(size_t)bwd_slot(m, w, narrow)]);
              st != status::ok)
            return st;
        }
    return status::ok;
  });
}

int64_t rnn_layer::workspace_size(int64_t T, int64_t N) const {
  return ((cell_ == rnn_cell::lstm ? 2 : 1) * (T + 1) + 4 * T) * N * hp_;
}

void rnn_layer::set_sequence(int64_t T, int64_t N, const void* x, const int64_t* lengths, float* ws, bool train) {
  steps_ = T, rows_ = N, x_ = x;
  lengths_.assign(lengths ? lengths : nullptr, lengths ? lengths + N : nullptr);
  used_ = lengths ? lengths[0] : T;
  active_.assign((size_t)used_, N);
  if (lengths)
    for (int64_t s = 0; s < used_; ++s) {
      int64_t a = 0;
      while (a < N && lengths[a] > s) ++a;
      active_[s] = a;
    }
  const bool lstm = cell_ == rnn_cell::lstm;
  const int64_t states = (used_ + 1) * N * hp_;
  if (ws) {  // hs, cs, act at the offsets workspace_size counts
    hs_p_ = ws;
    cs_p_ = lstm ? ws + (T + 1) * N * hp_ : nullptr;
    act_p_ = ws + (lstm ? 2 : 1) * (T + 1) * N * hp_;
  } else {
    hs_.resize((size_t)states);
    if (lstm) cs_.resize((size_t)states);
    if (train) act_.resize((size_t)(used_ * N * 4 * hp_));  // the gates only backward reads
    hs_p_ = hs_.data(), cs_p_ = lstm ? cs_.data() : nullptr, act_p_ = act_.data();
  }
}

status rnn_layer::forward(int64_t T, int64_t N, const void* x, const int64_t* lengths, const float* h0,
                          const float* c0, void* y, bool y_bf16, int64_t ldy, float* hT, float* cT, bool train,
                          float* ws) {
  set_sequence(T, N, x, lengths, ws, train);
  const int64_t ghp = g_ * hp_, wb = g_ * bh, blocks = hp_ / bh, rb = std::min<int64_t>(N, 64);
  const bool lstm = cell_ == rnn_cell::lstm, b16 = t_ == dtype::bf16;
  const int threads = threads_for(2.0 * T * N * ghp * (in_ + hp_));

  // The input projection: an LSTM whose rows of a step share its time (all but a reverse
  // direction over sequences of different lengths) multiplies x_t in each step's tile, before
  // h's product adds to it: Gx (T·N·G·H floats) never goes to memory and back (2 × 13 MB at
  // H = 256, N = 64, T = 50). Otherwise one product for every step, biases included. Dense or
  // block-sparse, the sums run in the same order (the kept blocks in place; acc + a·0 = acc).
  // Past 8 MiB of packed weights the step would stream W_ih from beyond L2 at every step, and
  // the one product is faster (one thread, T = 35: LSTM 650 at N = 20 f32 ~53 → ~48 ms, 1024 at
  // N = 16 ~124 → ~96 ms; at 512 and below fusing wins: 256 at N = 64 f32 34 against 37–48 ms).
  const bool fused = lstm && !(reverse_ && lengths) && (in_ + hp_) * ghp * dtype_b_bytes(t_) <= (int64_t(8) << 20);
  if (!fused)
    if (status st = input_product(T, N, x, threads); st != status::ok) return st;

  // States before each step; rows that have ended keep zeros past their end (read as A with
  // zero dG in backward).
  const int64_t states = (used_ + 1) * N * hp_;
  if (lengths) {
    std::fill(hs_p_, hs_p_ + states, 0.0f);
    if (lstm) std::fill(cs_p_, cs_p_ + states, 0.0f);
  }
  for (int64_t i = 0; i < N; ++i)
    for (int64_t u = 0; u < hp_; ++u) {
      hs_p_[i * hp_ + u] = h0 && u < h_ ? h0[i * h_ + u] : 0.0f;
      if (lstm) cs_p_[i * hp_ + u] = c0 && u < h_ ? c0[i * h_ + u] : 0.0f;
    }
  if (b16) {
    h16_.resize((size_t)(2 * N * hp_));
    f32_to_bf16(hs_p_, h16_.data(), N * hp_);
  }

  std::shared_ptr<const step_plan> plan;
  if (status st = forward_plan_for(N, threads, &plan); st != status::ok) return st;
  const std::vector<const kernel*>& k = fused ? plan->k1 : plan->k;
  const bool sparse = plan->sparse;
  RNN_VIEW
  if (fused) v.gx = bias_.data(), v.gx_ld = 0;
  v.y16 = y_bf16;
  const int64_t blk_bytes = packed_b_elements(t_, hp_, wb) * dtype_b_bytes(t_);
  const int64_t xblk_bytes = packed_b_elements(t_, in_, wb) * dtype_b_bytes(t_), xb = b16 ? 2 : 4;
  const char* whh = aligned(whh_, 0);
  const char* wx = fused ? aligned(wih_blk_, 0) : nullptr;
#pragma omp parallel num_threads(threads)
  for (int64_t s = 0; s < used_; ++s) {
    const int64_t n = active_[s];
#pragma omp for schedule(static)
    for (int64_t item = 0; item < ceil_div(n, rb) * blocks; ++item) {
      const int64_t r0 = item / blocks * rb, blk = item % blocks, m = std::min(rb, n - r0);
      float* tile = scratch(0, m * wb);
      batch_ref batch;
      batch.count = 1;
      batch.a = b16 ? (const void*)(h16_.data() + ((s % 2) * N + r0) * hp_) : hs_p_ + (s * N + r0) * hp_;
      batch.b = whh + blk * blk_bytes;
      if (fused) {  // tile = x_t[rows]·W_ihᵀ[:, block's gates], then h's product adds to it (k1: beta 1)
        batch_ref bx;
        bx.count = 1;
        bx.a = (const char*)x + (v.time(s, r0) * N + r0) * in_ * xb;
        bx.b = wx + blk * xblk_bytes;
        if (x_gen_) {  // the kept row blocks of W_ihᵀ's column block (input_product's tables)
          bx.count = x_at_[blk + 1] - x_at_[blk];
          bx.b = aligned(wih_, 0) + blk * wb * dtype_kpack(t_) * dtype_b_bytes(t_);
          bx.offs_a = x_offs_a_.data() + x_at_[blk];
          bx.offs_b = x_offs_b_.data() + x_at_[blk];
        }
        execute(*plan->kx[m - 1], bx, tile);
      } else {
        // The rows' input projections, fetched while the product runs: Gx is written long before
        // (T·N·G·H floats, from memory) and its rows lie G·Hp floats apart, a stride the hardware
        // prefetcher did not follow; the gate math stalled on them (a fifth of a bf16 step).
        for (int64_t r = 0; r < m; ++r) {
          const float* g = v.gx + (v.time(s, r0 + r) * N + r0 + r) * ghp + blk * wb;
          for (int64_t l = 0; l < wb; l += 16) __builtin_prefetch(g + l);
        }
      }
      if (sparse) {  // the kept row blocks of this hidden block (offsets from whh itself)
        batch.count = hh_at_[blk + 1] - hh_at_[blk];
        batch.b = whh;
        batch.offs_a = hh_offs_a_.data() + hh_at_[blk];
        batch.offs_b = hh_offs_b_.data() + hh_at_[blk];
      }
      execute(*k[m - 1], batch, tile);
      gate_rows(v, s, r0, m, blk, tile, y, ldy, train);
    }
  }
  for (int64_t i = 0; i < N; ++i) {
    const int64_t end = lengths ? lengths[i] : T;
    std::copy(hs_p_ + (end * N + i) * hp_, hs_p_ + (end * N + i) * hp_ + h_, hT + i * h_);
    if (lstm && cT) std::copy(cs_p_ + (end * N + i) * hp_, cs_p_ + (end * N + i) * hp_ + h_, cT + i * h_);
  }
  trained_ = train;
  return status::ok;
}

status rnn_layer::backward(int64_t T, int64_t N, const void* x, const int64_t* lengths, const float* ws,
                           const float* dy, int64_t ldy, const float* dhT, const float* dcT, float* dx, bool dx_add,
                           float* dh0, float* dc0, float* gw_ih, float* gw_hh, float* gb_ih, float* gb_hh,
                           bool accumulate) {
  set_sequence(T, N, x, lengths, const_cast<float*>(ws), true);  // the backward only reads it
  return backward(dy, ldy, dhT, dcT, dx, dx_add, dh0, dc0, gw_ih, gw_hh, gb_ih, gb_hh, accumulate);
}

status rnn_layer::backward(const float* dy, int64_t ldy, const float* dhT, const float* dcT, float* dx, bool dx_add,
                           float* dh0, float* dc0, float* gw_ih, float* gw_hh, float* gb_ih, float* gb_hh,
                           bool accumulate) {
  const int64_t T = steps_, N = rows_, ghp = g_ * hp_, rb = std::min<int64_t>(N, 64);
  const bool lstm = cell_ == rnn_cell::lstm, ragged = !lengths_.empty();
  const int threads = threads_for(4.0 * T * N * ghp * (in_ + hp_));

  dgx_.resize((size_t)(T * N * ghp));
  dgh_.resize((size_t)(used_ * N * ghp));
  if (ragged) {  // entries past a row's end stay zero
    std::fill(dgx_.begin(), dgx_.end(), 0.0f);
    std::fill(dgh_.begin(), dgh_.end(), 0.0f);
  }
  dh_.assign((size_t)(N * hp_), 0.0f);
  if (lstm) dc_.assign((size_t)(N * hp_), 0.0f);
  for (int64_t i = 0; i < N; ++i)
    for (int64_t u = 0; u < h_; ++u) {
      if (dhT) dh_[i * hp_ + u] = dhT[i * h_ + u];
      if (lstm && dcT) dc_[i * hp_ + u] = dcT[i * h_ + u];
    }

  std::shared_ptr<const step_plan> plan;
  if (status st = backward_plan_for(N, threads, &plan); st != status::ok) return st;
  const std::vector<const kernel*>& k = plan->k;
  RNN_VIEW
  // Units [u0, u0 + un) (whole 16-unit blocks) from step s's dGh, one call per panel they touch.
  auto recurrent = [&](int64_t s, int64_t r0, int64_t m, int64_t u0, int64_t un) {
    batch_ref batch;
    batch.count = 1;
    batch.a = dgh_.data() + (s * N + r0) * ghp;
    for (int64_t u = u0; u < u0 + un;) {
      const int64_t p0 = u / panel * panel, pw = std::min(panel, hp_ - p0), w = std::min(u0 + un, p0 + pw) - u;
      batch.b = whh_p_.data() + p0 * ghp + (u - p0);
      execute(*k[(size_t)bwd_slot(m, w, pw < std::min(panel, hp_))], batch, dh_.data() + r0 * hp_ + u);
      u += w;
    }
  };
  // Each row block's units in `parts` near-equal runs of 16-unit blocks, so that every thread
  // gets the same work: in 64-unit items, H = 650 (41 blocks) made 11 items, 6 for one thread
  // and 4 + a 16-unit one for the other (this time loop's per-thread CPU ms at T = 35, N = 20
  // on 2 threads: 15.8 / 12.1 then, 13.1 / 13.3 now).
  const int64_t blocks = hp_ / bh, parts = std::min<int64_t>(threads, blocks);
  auto part = [&](int64_t p, int64_t* u0, int64_t* un) {
    *u0 = p * blocks / parts * bh;
    *un = (p + 1) * blocks / parts * bh - *u0;
  };
  // Block-sparse: per (row block, column block q of kb_ units), one offset batch over the hidden
  // blocks kept in q (index_backward), in the dense call's order of k; a run of column blocks a thread.
  const bool sparse = hh_gen_ != 0;
  // Column blocks [q0, q1) (a thread's part, plan->qsplit).
  auto recurrent_sparse = [&](int64_t s, int64_t r0, int64_t m, int64_t p) {
    for (int64_t q = plan->qsplit[p]; q < plan->qsplit[p + 1]; ++q) {
      batch_ref batch;
      batch.count = bt_at_[q + 1] - bt_at_[q];
      batch.a = dgh_.data() + (s * N + r0) * ghp;
      batch.b = whh_q_.data() + q * ghp * kb_;
      batch.offs_a = bt_offs_a_.data() + bt_at_[q];
      batch.offs_b = bt_offs_b_.data() + bt_at_[q];
      execute(*plan->ks[m - 1], batch, dh_.data() + r0 * hp_ + q * kb_);
    }
  };
  const int64_t cols = sparse ? (int64_t)plan->qsplit.size() - 1 : parts;  // items per row block
#pragma omp parallel num_threads(threads)
  {
    for (int64_t s = used_ - 1; s >= 0; --s) {
      const int64_t n = active_[s], n1 = s + 1 < used_ ? active_[s + 1] : 0;
#pragma omp for schedule(static)
      for (int64_t item = 0; item < ceil_div(n, rb) * cols; ++item) {
        const int64_t r0 = item / cols * rb, m = std::min(rb, n - r0), m1 = std::min(rb, n1 - r0);
        int64_t u0, un;
        if (sparse)
          u0 = plan->qsplit[item % cols] * kb_, un = plan->qsplit[item % cols + 1] * kb_ - u0;
        else
          part(item % cols, &u0, &un);
        if (m1 > 0) sparse ? recurrent_sparse(s + 1, r0, m1, item % cols) : recurrent(s + 1, r0, m1, u0, un);
        backward_rows(v, s, r0, m, u0, un, dy, ldy);
      }
    }
#pragma omp for schedule(static)
    for (int64_t item = 0; item < ceil_div(active_[0], rb) * cols; ++item) {
      const int64_t r0 = item / cols * rb, m = std::min(rb, active_[0] - r0);
      int64_t u0, un;
      if (sparse) {
        recurrent_sparse(0, r0, m, item % cols);
        continue;
      }
      part(item % cols, &u0, &un);
      recurrent(0, r0, m, u0, un);
    }
  }
  for (int64_t i = 0; i < N; ++i) {
    if (dh0) std::copy(dh_.data() + i * hp_, dh_.data() + i * hp_ + h_, dh0 + i * h_);
    if (lstm && dc0) std::copy(dc_.data() + i * hp_, dc_.data() + i * hp_ + h_, dc0 + i * h_);
  }

  // dx = dGx · W_ih, then the weight gradients dW = dGᵀ · (X or h), one product each.
  if (dx && x_gen_) {
    if (status st = input_backward(dx, dx_add, *plan, threads); st != status::ok) return st;
  } else if (dx) {
    if (status st = gemm(dtype::f32, T * N, in_, ghp, dgx_.data(), ghp, wih_b_.data(), in_, dx, in_,
                         dx_add ? 1.0f : 0.0f);
        st != status::ok)
      return st;
  }
  const float* x = (const float*)x_;
  if (t_ == dtype::bf16) {
    x32_.resize((size_t)(T * N * in_));
    bf16_to_f32((const uint16_t*)x_, x32_.data(), T * N * in_);
    x = x32_.data();
  }
  // gw (G·H × cols, PyTorch's gate order) (+)= tmp2 (G·Hp × ld, internal order), real units
  // only; zero where a pruning mask prunes (tmp2 is not computed for its blocks pruned whole).
  auto add_gradient = [&](float* gw, int64_t cols, int64_t ld, const std::vector<uint8_t>& mask) {
    const uint8_t* keep = mask.empty() ? nullptr : mask.data();
#pragma omp parallel for collapse(2) num_threads(threads) schedule(static)
    for (int64_t g = 0; g < g_; ++g)
      for (int64_t u = 0; u < h_; ++u)
        for (int64_t c = 0; c < cols; ++c) {
          const int64_t e = (g * h_ + u) * cols + c;
          const float d = !keep || keep[e] ? tmp2_[col(g, u) * ld + c] : 0.0f;
          gw[e] = (accumulate ? gw[e] : 0.0f) + d;
        }
  };
  const bool wsparse = wg_gen_ != 0;
  const int64_t rows_x = T * N, rows_h = used_ * N;
  tmp_.resize((size_t)(ghp * std::max(rows_x, rows_h)));
  tmp2_.resize((size_t)(ghp * std::max(in_, hp_)));
  transpose_parallel(dgx_.data(), rows_x, ghp, tmp_.data(), threads);
  if (status st = wsparse ? weight_gradient(*plan, false, tmp_.data(), rows_x, x, threads)
                          : gemm(dtype::f32, ghp, in_, rows_x, tmp_.data(), rows_x, x, in_, tmp2_.data(), in_, 0.0f);
      st != status::ok)
    return st;
  add_gradient(gw_ih, in_, in_, mask_ih_);
  // An LSTM forward in time stores the same gate gradients as dGx (by time) and dGh (by step,
  // = time): tmp holds dGhᵀ already, in its first rows_h columns, and dGh's column sums are
  // dGx's (its rows past rows_h are zero). The parts skipped measured 1.3 ms (transpose) and
  // 0.9 ms (sums) of a 100 ms backward on one thread (LSTM 650, T = 35, N = 20).
  const bool dgh_is_dgx = lstm && !reverse_;
  if (!dgh_is_dgx) transpose_parallel(dgh_.data(), rows_h, ghp, tmp_.data(), threads);
  const float* hs = hs_p_;
  if (t_ == dtype::bf16) {  // the h the forward products multiplied
    hr_.assign(hs_p_, hs_p_ + rows_h * hp_);
    round_bf16(hr_.data(), rows_h * hp_);
    hs = hr_.data();
  }
  const int64_t lda_h = dgh_is_dgx ? rows_x : rows_h;
  if (status st = wsparse ? weight_gradient(*plan, true, tmp_.data(), lda_h, hs, threads)
                          : gemm(dtype::f32, ghp, hp_, rows_h, tmp_.data(), lda_h, hs, hp_, tmp2_.data(), hp_, 0.0f);
      st != status::ok)
    return st;
  add_gradient(gw_hh, h_, hp_, mask_hh_);
  if (gb_ih) {
    // Column sums of dGx (b_ih) and dGh (b_hh; the same but for GRU's n gate), 128 columns a
    // task: with 16 (one cache line a row, rows 10 KB apart at H = 650) this took 2.8 ms of a
    // 100 ms backward on one thread (LSTM 650, T = 35, N = 20), now 1.8.
    constexpr int64_t cw = 128;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t c0 = 0; c0 < ghp; c0 += cw) {
      const int64_t w = std::min(cw, ghp - c0);
      double sx[cw] = {}, sh[cw] = {};
      column_sums(dgx_.data() + c0, rows_x, ghp, w, sx);
      if (dgh_is_dgx)
        std::copy(sx, sx + w, sh);
      else
        column_sums(dgh_.data() + c0, rows_h, ghp, w, sh);
      for (int64_t c = 0; c < w; ++c) {
        const int64_t ic = c0 + c, g = ic / bh % g_, u = ic / (g_ * bh) * bh + ic % bh;  // col(g, u) = ic
        if (u >= h_) continue;
        float& bi = gb_ih[g * h_ + u];
        float& bhh = gb_hh[g * h_ + u];
        bi = (accumulate ? bi : 0.0f) + (float)sx[c];
        bhh = (accumulate ? bhh : 0.0f) + (float)sh[c];
      }
    }
  }
  return status::ok;
}

}  // namespace brgemm::layers
