// Fully-connected layer driver: y = act(x·Wᵀ + b) and its backward pass, on blocked arrays.
//
// Layouts (every block row-major, everything past the real sizes zero):
//   activations  [N/bn][C/bc][bn][bc]   f32 or bf16 (uint16 bits); the output of one layer is
//                                       the input of the next, with bc = that layer's bk
//   W forward    [K/bk][C/bc] blocks of Wᵀ (bc × bk) in the kernel's B layout (VNNI-2 for bf16)
//   W backward   [C/bc][K/bk] blocks of W  (bk × bc) in the kernel's B layout
// W itself (K × C, PyTorch's (out, in)), its gradient and the bias stay plain f32: the master
// copy. Every product is one BRGEMM call per block of the result, reducing over a row of blocks.
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
  // reproducible for a given seed), else to nearest even.
  void sgd(float* w, float* b, const float* wg, const float* bg, float lr, bool stochastic, uint64_t seed);

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
  // Packs w (after w −= lr·wg when wg is given); bf16 keeps a copy of w in w_seen_.
  void pack(float* w, const float* wg, float lr, bool stochastic, uint64_t seed);
  void set_bias(const float* b);
  bool same_weights(const float* w) const;

  // Kernels dispatched once per call shape (dispatch() takes a lock and hashes; the loops only
  // invoke). Forward: one kernel. Backward: data (one shape) and weight gradient (full or edge
  // rows × full or edge columns).
  struct forward_key {
    int64_t bn;
    int32_t level, threads, bias, z;
  };
  struct forward_plan {
    const kernel* kr = nullptr;
  };
  struct backward_key {
    int64_t bn;
    int32_t level, threads, data, accumulate;
  };
  struct backward_plan {
    const kernel* kd = nullptr;
    const kernel* kw[2][2] = {};
  };
  status forward_plan_for(int64_t bn, int threads, bool z, std::shared_ptr<const forward_plan>* out);
  status backward_plan_for(int64_t bn, int threads, bool data, bool accumulate,
                           std::shared_ptr<const backward_plan>* out);

  dtype t_;
  int64_t c_, k_, bc_, bk_;
  brgemm::activation act_;
  bool has_bias_ = false, packed_ = false;
  packed_weights w_seen_, b_seen_;             // w as packed last (bf16 only), b
  std::vector<float> bias_;                    // the bias padded to K/bk
  std::vector<char> fwd_, bwd_;                // the packed weights (64-byte aligned inside)
  std::vector<char> dy_, dyt_, xv_;            // backward scratch: grown, never shrunk
  plan_cache<forward_key, forward_plan> fwd_plans_;
  plan_cache<backward_key, backward_plan> bwd_plans_;
};

}  // namespace brgemm::layers
