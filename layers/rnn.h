// Recurrent layer driver: one direction of one LSTM or GRU layer, forward and backward
// through time (Banerjee et al., "Optimizing deep learning RNN topologies on Intel
// architecture", Supercomputing Frontiers and Innovations, 2019, for the scheme):
//   the input projection Gx = X·W_ihᵀ + b for every time step is one large product (an LSTM
//   whose rows of a step share its time instead multiplies x_t in the step's tile, below);
//   each step's recurrent product h·W_hhᵀ is one BRGEMM call per (row block, hidden block),
//   and the gate math of that block (sigmoid, tanh, the cell update) runs on its tile while
//   it is in L1, instead of in a separate pass over the step's gates.
//
// Gate columns are kept hidden block by hidden block: column (b·G + g)·bh + j holds gate g of
// hidden unit b·bh + j (bh = 16, G = 4 for LSTM (i, f, g, o), 3 for GRU (r, z, n)), so a
// block's gates are adjacent and one kernel call computes them all. The hidden size is padded
// to whole blocks with zero weights; padded units stay exactly zero.
//
// Row-major arrays throughout: x (T, N, I), y (T, N, ldy) with this direction's H columns
// from its pointer, states (N, H). Sequences may end early (lengths sorted descending): past
// its end a row's state stays as it was and its outputs are not written.
#pragma once
#include <cstdint>
#include <memory>
#include <numeric>
#include <vector>
#include "brgemm/brgemm.h"
#include "linear.h"  // sparse_policy
#include "packed_weights.h"
#include "plan.h"

namespace brgemm::layers {

enum class rnn_cell : int { lstm = 0, gru };

class rnn_layer {
 public:
  static constexpr int64_t bh = 16;  // hidden units per block (one zmm of each gate)

  // t: f32, or bf16 (bf16 x, h and weights in the products, f32 gates, cell state and
  // accumulation; backward in f32 on the bf16-rounded weights). ktanh: K-TanH for tanh and
  // sigmoid in the gates.
  rnn_layer(rnn_cell cell, dtype t, int64_t input, int64_t hidden, bool reverse, bool ktanh);

  int64_t gates() const { return cell_ == rnn_cell::lstm ? 4 : 3; }
  int64_t input() const { return in_; }
  int64_t hidden() const { return h_; }
  bool bf16() const { return t_ == dtype::bf16; }

  // Packs PyTorch's w_ih (G·H, I), w_hh (G·H, H), b_ih, b_hh (G·H, or null) when they differ
  // from what was packed last (exact comparisons). Returns whether it packed.
  bool refresh(const float* w_ih, const float* w_hh, const float* b_ih, const float* b_hh);

  // Block-sparse recurrent product (forward): each hidden block's W_hh slice (Hp × G·bh) is
  // read in row blocks of kb (64, 32 or 16 hidden inputs), and one offset batch lists only
  // the row blocks that hold a nonzero: automatically when at most rnn_sparse_crossover of
  // them do, or forced. Same order of sums as the dense call on finite inputs (bit-identical).
  // The input product likewise per hidden block's columns of W_ihᵀ, when in_ is a multiple of
  // 16 (index_input). Backward data runs over the same kept blocks, transposed: dh's and dx's
  // column blocks each sum an offset batch over the hidden blocks kept in that column block,
  // in the dense call's order (bit-identical too; products the dense layer runs through gemm()
  // are summed in its K chunks, gemm_k_chunk).
  void set_sparse_policy(sparse_policy p);
  sparse_policy policy() const { return policy_; }
  bool block_sparse() const { return hh_gen_ > 0; }
  // The pruning masks of w_ih (G·H × I) and w_hh (G·H × H), PyTorch's layout, 0 = pruned
  // (copied), or null for none. Under a mask the weight gradient is zero where it prunes (the
  // gradient of w·mask); the weight gradient's products skip its (gate, 16 units, 64 inputs)
  // blocks that it prunes whole, when the packing policy says sparse (at most
  // rnn_sparse_crossover of them kept, or forced).
  void set_mask(const uint8_t* mask_ih, const uint8_t* mask_hh);
  bool gradient_sparse() const { return wg_gen_ > 0; }

  // T steps of N rows: x (T, N, I) (f32, or bf16 for a bf16 layer), lengths (N, descending,
  // 1..T) or null for all T, h0/c0 (N, H) or null for zeros → y (T, N, ldy) from column 0 of
  // the pointer (f32, or with y_bf16 bf16: h rounded to nearest even, written by the gate math),
  // hT/cT (N, H): each row's state after its last step. c0, cT: LSTM only.
  // With train, keeps what backward needs (x must stay alive until then): in the layer, or in
  // `ws` (workspace_size(T, N) floats) when given, so that the forward's caller can keep it.
  status forward(int64_t T, int64_t N, const void* x, const int64_t* lengths, const float* h0, const float* c0,
                 void* y, bool y_bf16, int64_t ldy, float* hT, float* cT, bool train, float* ws = nullptr);
  int64_t workspace_size(int64_t T, int64_t N) const;
  // From dy (T, N, ldy) (null: zero), dhT, dcT (N, H) (null: zero) of the last training
  // forward: dx (T, N, I) written, or added to when dx_add; dh0, dc0 (N, H); the weight and
  // bias gradients (PyTorch's shapes) added to when `accumulate`, else written.
  status backward(const float* dy, int64_t ldy, const float* dhT, const float* dcT, float* dx, bool dx_add,
                  float* dh0, float* dc0, float* gw_ih, float* gw_hh, float* gb_ih, float* gb_hh, bool accumulate);
  // The same from a forward that kept its state in ws, given its T, N, x and lengths again.
  status backward(int64_t T, int64_t N, const void* x, const int64_t* lengths, const float* ws, const float* dy,
                  int64_t ldy, const float* dhT, const float* dcT, float* dx, bool dx_add, float* dh0, float* dc0,
                  float* gw_ih, float* gw_hh, float* gb_ih, float* gb_hh, bool accumulate);

 private:
  // Set up once per batch size (and ISA, threads): the recurrent products' kernels, one per
  // row count of a row block (dispatch() takes a lock: not once per step), and the ISA the gate
  // loops are compiled for, which follows the kernels' level.
  struct plan_key {
    int64_t rows, steps;  // steps: backward only (the weight gradient's K)
    int32_t level, threads;
    int32_t sparse;  // 0 dense, else hh_gen_
    int32_t xsparse;  // 0 dense input product, else x_gen_
    int32_t wsparse;  // backward: 0 dense weight gradient, else wg_gen_
    int32_t used;     // backward: steps any row takes
  };
  struct step_plan {
    isa level = isa::scalar;
    bool sparse = false;           // forward's kernels take the kept row blocks (offset batches)
    std::vector<const kernel*> k;  // forward: [m − 1]; backward: [bwd_slot(m, width, narrow panel)]
    std::vector<const kernel*> kx, k1;  // LSTM forward, x_t in the step: x's product, then h's (beta 1)
    std::vector<const kernel*> ks;      // backward, sparse: dh's column block over its kept blocks [m − 1]
    std::vector<int64_t> qsplit;        // backward, sparse: thread p's column blocks [qsplit[p], qsplit[p + 1])
    // backward, sparse dx: kernels [beta][edge rows] of entries of dx_k rows of K; per (column
    // block q, chunk c of gemm's K chunks) the entries [dx_at[q·dx_chunks + c], …[+ 1]) of dx_offs_*
    const kernel* kdx[2][2] = {};
    int64_t dx_k = 0, dx_chunks = 0;
    std::vector<int64_t> dx_at, dx_offs_a, dx_offs_b;
    // The dx_* tables (also the sparse input product's) for the kept blocks [at[q], at[q + 1]) of
    // each of `groups` groups, each block `width` rows of K from its row offs[i]: entries of
    // gcd(kc, width) rows (none straddles one of gemm's K chunks of kc rows over k), listed per
    // (group, chunk) in block order; B's offset is the entry's row · ldb.
    void chunk_entries(const std::vector<int64_t>& at, const std::vector<int64_t>& offs, int64_t groups,
                       int64_t width, int64_t kc, int64_t k, int64_t ldb) {
      dx_k = std::gcd(kc, width), dx_chunks = (k + kc - 1) / kc;
      dx_at.assign(1, 0);
      for (int64_t q = 0; q < groups; ++q)
        for (int64_t c = 0; c < dx_chunks; ++c) {
          for (int64_t i = at[q]; i < at[q + 1]; ++i)
            for (int64_t k0 = offs[i]; k0 < offs[i] + width; k0 += dx_k)
              if (k0 / kc == c) {
                dx_offs_a.push_back(k0);
                dx_offs_b.push_back(k0 * ldb);
              }
          dx_at.push_back((int64_t)dx_offs_a.size());
        }
    }
    // backward, sparse weight gradient: [w_hh][edge columns][first chunk][last, shorter chunk],
    // in gemm's K chunks of wkc[w_hh] rows
    const kernel* kw[2][2][2][2] = {};
    int64_t wkc[2] = {};
  };
  static constexpr int64_t panel = 64;  // backward's W_hh panels: units per panel
  static int64_t bwd_slot(int64_t m, int64_t w, bool narrow) { return ((m - 1) * (panel / bh) + w / bh - 1) * 2 + narrow; }
  status forward_plan_for(int64_t N, int threads, std::shared_ptr<const step_plan>* out);
  // Gx = X·W_ihᵀ + b for T steps of N rows: one gemm, or block-sparse (x_gen_) one offset batch
  // per (step, row block, hidden block) over the kept kbx-row blocks of W_ihᵀ's column block.
  status input_product(int64_t T, int64_t N, const void* x, int threads);
  status backward_plan_for(int64_t N, int threads, std::shared_ptr<const step_plan>* out);

  void set_sequence(int64_t T, int64_t N, const void* x, const int64_t* lengths, float* ws, bool train);
  int64_t col(int64_t g, int64_t u) const { return (u / bh * g_ + g) * bh + u % bh; }  // internal gate column
  rnn_cell cell_;
  dtype t_;
  int64_t in_, h_, hp_, g_;
  bool reverse_, ktanh_;
  bool has_bias_ = false;
  packed_weights seen_;                      // w_ih, w_hh, b_ih, b_hh as packed last
  std::vector<char> wih_, whh_;              // forward: (I × G·Hp), per hidden block (Hp × G·bh)
  std::vector<char> wih_blk_;                // LSTM forward: per hidden block (I × G·bh)
  std::vector<float> wih_b_, whh_b_, whh_p_;  // backward, f32: (G·Hp × I), (G·Hp × Hp), its 64-unit panels
  std::vector<float> bias_, bhn_;            // (G·Hp): b_ih + b_hh (GRU: b_hh of r, z only); GRU's b_hn (Hp)
  // The last forward: its sizes and what backward reads.
  int64_t steps_ = 0, rows_ = 0, used_ = 0;  // T, N, steps any row takes
  const void* x_ = nullptr;
  bool trained_ = false;
  std::vector<int64_t> lengths_, active_;    // active_[s]: rows still running at step s
  std::vector<float> gx_, hs_, cs_, act_;    // Gx; h and c before each step and after the last; gates
  float *hs_p_ = nullptr, *cs_p_ = nullptr, *act_p_ = nullptr;  // hs_, cs_, act_ or a caller's workspace
  std::vector<uint16_t> h16_;                // bf16 copies of h for the next product (two steps)
  std::vector<float> dgx_, dgh_, dh_, dc_, tmp_, tmp2_, x32_, hr_;
  plan_cache<plan_key, step_plan> fwd_plans_, bwd_plans_;
  // The block-sparse recurrent product: per hidden block blk, entries [hh_at_[blk],
  // hh_at_[blk + 1]) of the offsets (h's column, whh_'s element) of its kept row blocks.
  sparse_policy policy_ = sparse_policy::automatic;
  int64_t kb_ = 0;
  std::vector<int64_t> hh_at_, hh_offs_a_, hh_offs_b_;
  int32_t hh_gen_ = 0, gen_ = 0;
  int64_t kbx_ = 0;                          // the input product's row blocks (in_ % 16 == 0 only)
  std::vector<int64_t> x_at_, x_offs_a_, x_offs_b_;
  int32_t x_gen_ = 0;
  plan_cache<plan_key, step_plan> xin_plans_;  // the sparse input product's kernels (k) and chunk tables (dx_*)
  void index_recurrent();
  void index_input();
  // Backward data over the kept blocks: per column block q of W_hh (kb_ units) and of W_ih
  // (kbx_ inputs), the hidden blocks kept there, ascending ([bt_at_[q], bt_at_[q + 1]) of
  // offsets into dG's row and into the (G·Hp × kb) panel of W in internal row order).
  std::vector<int64_t> bt_at_, bt_offs_a_, bt_offs_b_, bx_at_, bx_offs_a_, bx_offs_b_;
  std::vector<float> whh_q_, wih_q_;         // f32 W_hh and W_ih (internal rows), per column block (G·Hp × kb)
  void index_backward();
  status input_backward(float* dx, bool dx_add, const step_plan& plan, int threads);
  // The weight gradient's kept (gate, 16 units, 64 inputs) blocks: their first internal row and
  // column, for W_ih then W_hh ([0, wg_split_) and [wg_split_, end)).
  static constexpr int64_t wg_cols = 64;
  std::vector<uint8_t> mask_ih_, mask_hh_;
  std::vector<int64_t> wg_row_, wg_col_;
  int64_t wg_split_ = 0;
  int32_t wg_gen_ = 0;
  void index_gradient();
  status weight_gradient(const step_plan& plan, bool hh, const float* a, int64_t lda, const float* b, int threads);
};

// Block-sparse when at most this fraction of a product's row blocks holds a nonzero. Measured
// (LSTM 512 → 512, T = 20, N = 64, forward, one thread, process time; dense ÷ forced sparse):
// 0.95 with no block zero (the input product's per-block batches against one tiled gemm),
// 1.02 at 10 %: the sparse form pays from about a tenth of the blocks gone. The backward (same
// layer, a training step, pruned by prune(·, block="gates")): 1.00 forced with nothing pruned,
// 1.06 at 10 %, 5.25 at 90 %.
constexpr double rnn_sparse_crossover = 0.9;

}  // namespace brgemm::layers
