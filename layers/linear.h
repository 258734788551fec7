// Fully-connected layer driver: y = act(x·Wᵀ + b) and its backward pass, on blocked arrays.
//
// Layouts (every block row-major, everything past the real sizes zero):
//   activations  [N/bn][C/bc][bn][bc]   f32 or bf16 (uint16 bits); the output of one layer is
//                                       the input of the next, with bc = that layer's bk
//   W forward    [K/bk][C/bc] blocks of Wᵀ (bc × bk) in the kernel's B layout (VNNI-2 for bf16)
//   W backward   [C/bc][K/bk] blocks of W  (bk × bc) in the kernel's B layout
// W itself (K × C, PyTorch's (out, in)), its gradient and the bias stay plain f32: the master
// copy. Every product is one BRGEMM call per block of the result, reducing over a row of blocks.
//
// Block sparsity (pruned weights, Han et al. 2015): the unit is one bk × bc weight block, the B_i
// of one batch entry, so a block of zeros is skipped by leaving it out of the batch. When few
// enough blocks hold a nonzero (fc_sparse_crossover), only those are packed, in the forward
// order (by output block, kept input blocks ascending) and the backward order (by input block),
// with an index; the batches become offset batches over the kept blocks. The weight gradient
// skips the blocks a pruning mask (set_mask) removes whole: their gradient is zero.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>
#include "brgemm/brgemm.h"
#include "packed_weights.h"
#include "plan.h"

namespace brgemm::layers {

// The block size for a dimension of `size`: 64, or size rounded up to 16 when smaller.
int64_t fc_block(int64_t size);
// The block of batch rows for n rows: at most 64, even (bf16 pairs rows in the weight
// gradient), and as little padding as that allows (65 rows → 2 blocks of 34).
int64_t fc_row_block(int64_t n);

// Packed block-sparse when at most this fraction of the weight blocks holds a nonzero (policy
// automatic). The offset batches over the kept blocks cost what the dense strided ones do per
// block, so the sparse packing pays as soon as a few blocks are skipped. Measured (Zen 4, one
// thread, process time, 64 × 4096 → 4096 forward, dense / forced sparse): 0.99 with no block
// pruned, 1.00 at 2 %, 1.06 at 5 %, 1.09 at 10 %, 1.23 at 20 % (bench --sparse, docs/api.md).
constexpr double fc_sparse_crossover = 0.95;
enum class sparse_policy : int { automatic = 0, dense, sparse };

// Plain rows (n × c, row stride ld) ↔ blocked [n/bn][c/bc][bn][bc]; either side element::f32
// or element::bf16 (f32 → bf16 rounds to nearest even). to_blocked writes the padding with zeros.
void fc_to_blocked(const void* x, element xt, int64_t n, int64_t c, int64_t ld, void* xb, element bt, int64_t bn,
                   int64_t bc);
void fc_from_blocked(const void* xb, element bt, int64_t n, int64_t c, int64_t bn, int64_t bc, void* x, element xt,
                     int64_t ld);

class fc_layer {
 public:
  // t is f32 or bf16 (bf16 activations and packed weights, f32 master weights and gradients).
  fc_layer(dtype t, int64_t in, int64_t out, brgemm::activation act);

  int64_t in() const { return c_; }
  int64_t out() const { return k_; }
  int64_t bc() const { return bc_; }
  int64_t bk() const { return bk_; }
  bool bf16() const { return t_ == dtype::bf16; }
  // Whether backward needs the pre-activation z (saved by a training forward), not y.
  bool needs_z() const { return activation_backward_needs_x(act_); }

  // Packs w (out × in) and b (out, or null) when they differ from what was packed last (an
  // exact comparison: in-place writes to the master copy are seen). Returns whether it packed.
  bool refresh(const float* w, const float* b);
  // w −= lr·wg, b −= lr·bg, then repacks. For bf16 the packed weights are rounded from the
  // f32 master stochastically when `stochastic` (a hash of seed and position: unbiased, and
  // reproducible for a given seed), else to nearest even. Under a mask, pruned weights are not
  // updated: they stay zero through training.
  void sgd(float* w, float* b, const float* wg, const float* bg, float lr, bool stochastic, uint64_t seed);
  // The pruning mask (out × in, 0 = pruned; copied), or null for none. sgd skips the blocks it
  // prunes whole, so a training step costs in proportion to the kept blocks.
  void set_mask(const uint8_t* mask);

  // Dense or block-sparse packing: automatic (by fc_sparse_crossover), or forced (benchmarks and
  // tests). Takes effect at the next pack (the next refresh packs again).
  void set_sparse_policy(sparse_policy p);
  sparse_policy policy() const { return policy_; }
  bool block_sparse() const { return index_.on; }
  int64_t kept_blocks() const { return index_.kept; }
  int64_t total_blocks() const;

  // yb = act(xb·Wᵀ + b) for n rows in blocks of bn. When zb is given (a training forward of an
  // activation whose derivative needs its input), the pre-activation goes there too (f32,
  // blocked like yb).
  status forward(int64_t n, int64_t bn, const void* xb, void* yb, float* zb);
  // The same from plain f32 rows x (n × in, row stride ldx) into plain y (n × out, row stride
  // ldy), without blocked copies: one gemm reads the forward blocks as its column panels (a
  // column of [C/bc] blocks of Wᵀ is a panel of 64 columns and cb·bc rows, the padding rows
  // never read), and the epilogue adds the bias and applies the activation. For f32 layers
  // with bk = panel_width whose activation's derivative needs no pre-activation (has_rows_forward).
  bool has_rows_forward() const;
  status forward_rows(int64_t n, const float* x, int64_t ldx, float* y, int64_t ldy);
  // From gyb (f32, blocked like yb) and what forward saw: gxb (f32, blocked like xb; null to
  // skip), and the gradients dW = dZᵀ·X, db = Σ_rows dZ (f32, plain) added to wg and bg when
  // `accumulate` (as PyTorch does), else written over them.
  status backward(int64_t n, int64_t bn, const float* gyb, const void* yb, const float* zb, const void* xb,
                  float* gxb, float* wg, float* bg, bool accumulate);

 private:
  // Packs w (after w −= lr·wg under the mask when wg is given); bf16 keeps a copy of w in w_seen_.
  void pack(float* w, const float* wg, float lr, bool stochastic, uint64_t seed);
  // After keep_ is filled: the positions of the packed blocks, dense or kept-only.
  void index_blocks();

  // Where each weight block (kb, cb) is packed. Dense: every block, forward [kb][cb], backward
  // [cb][kb]. Block-sparse: the kept blocks only, in those orders.
  struct block_index {
    bool on = false;                           // block-sparse
    int64_t kept = 0;                          // blocks holding a nonzero
    uint32_t generation = 0;                   // changes with the pattern: plans key on it
    std::vector<int64_t> fwd_slot, bwd_slot;   // [kb·cb + cb] → packed position, −1 when skipped
    std::vector<int64_t> col_start, col_cb;    // output block kb: input blocks col_cb[col_start[kb]..col_start[kb+1])
    std::vector<int64_t> row_start, row_kb;    // input block cb: output blocks row_kb[row_start[cb]..row_start[cb+1])
  };
  void set_bias(const float* b);
  bool same_weights(const float* w) const;

  // Kernels dispatched once per call shape (dispatch() takes a lock and hashes; the loops only
  // invoke). Forward: one kernel. Backward: data (one shape) and weight gradient (full or edge
  // rows × full or edge columns).
  // Block-sparse plans also hold the offset tables of their batches (A offsets depend on bn).
  struct forward_key {
    int64_t bn;
    int32_t level, threads, bias, z;
    uint32_t sparse;  // 0 dense, else the index generation + 1
  };
  struct forward_plan {
    const kernel* kr = nullptr;
    std::vector<int64_t> offs_a, offs_b;  // per kept block, forward order
  };
  struct backward_key {
    int64_t bn;
    int32_t level, threads, data, accumulate;
    uint32_t sparse, mask;  // mask: mask_generation_
  };
  struct backward_plan {
    const kernel* kd = nullptr;
    const kernel* kw[2][2] = {};
    std::vector<int64_t> offs_a, offs_b;  // backward data, per kept block, backward order
    std::vector<int64_t> kept, pruned;    // blocks kb·cb + cb with a weight gradient, and masked whole (zero)
  };
  status forward_plan_for(int64_t bn, int threads, bool z, std::shared_ptr<const forward_plan>* out);
  status backward_plan_for(int64_t bn, int threads, bool data, bool accumulate,
                           std::shared_ptr<const backward_plan>* out);

  dtype t_;
  int64_t c_, k_, bc_, bk_;
  brgemm::activation act_;
  bool has_bias_ = false, packed_ = false;
  sparse_policy policy_ = sparse_policy::automatic;
  std::vector<uint8_t> keep_;                  // [kb][cb]: the block holds a nonzero (pack's phase 1)
  std::vector<uint8_t> mask_, mask_blocks_;    // the pruning mask, and [kb][cb]: it keeps a weight
  uint32_t mask_generation_ = 0;               // changes with the mask: backward plans key on it
  block_index index_;
  packed_weights w_seen_, b_seen_;             // w as packed last (bf16 only), b
  std::vector<float> bias_;                    // the bias padded to K/bk
  std::vector<char> fwd_, bwd_;                // the packed weights (64-byte aligned inside)
  std::vector<char> dy_, dyt_, xv_;            // backward scratch: grown, never shrunk
  plan_cache<forward_key, forward_plan> fwd_plans_;
  plan_cache<backward_key, backward_plan> bwd_plans_;
};

}  // namespace brgemm::layers
