// DFP-16 direct convolution (Das et al., ICLR 2018): forward, backward data and the weight
// gradient with int16 mantissas (one shared exponent per tensor, brgemm/dfp.h), each batch
// element's products summed exactly in int32 and the sums converted to float and added (the
// s16s16f32 kernels). Forward and backward data are conv_plan.h's passes with dtype s16s16f32: a
// batch element is one (channel block, tap) slice, a reduction of bc (or bk) channels. The weight
// gradient reduces over output pixels: a batch element is one output row of one tap.
//
// No overflow, by Cauchy–Schwarz: a batch element's sum |Σ a·b| ≤ ‖a‖₂·‖b‖₂ over its slice. The
// weights' largest slice norms (per tap and output channel over an input block, and transposed)
// are found when they are packed; the activations' (per pixel over a channel block, per channel
// over an image row) when they are converted. Where the product of the two largest norms could
// exceed 2^31 − 1, the dynamic tensor (x in forward, dZ in backward) takes a larger exponent,
// one bit at a time, until it cannot: a few mantissa bits fewer, never a wrapped sum, and the
// same choice for the same data (deterministic).
//
// Layouts: activations blocked [N][C/bc][H][W][bc] as conv.h (f32 in and out); the mantissas
// kept between forward and backward are the same layout in int16. Groups 1, activation none or
// ReLU (ReLU commutes with the positive 2^e scale: the epilogue adds the bias scaled by 2^−e).
#pragma once
#include <cstdint>
#include <vector>
#include "brgemm/brgemm.h"
#include "conv.h"
#include "conv_plan.h"
#include "packed_weights.h"
#include "plan.h"

namespace brgemm::layers {

struct dfp_wgrad_plan;  // dfp_conv.cpp: the weight gradient's kernels and batch offsets

class dfp_conv_layer {
 public:
  dfp_conv_layer(const conv_geometry& g, bool relu);

  const conv_geometry& geometry() const { return g_; }
  int64_t bc() const { return bc_; }
  int64_t bk() const { return bk_; }

  // Converts and packs w (K, C, R, S) and keeps b (K, or null) when they differ from what was
  // packed last. Returns whether it packed; weights_finite() is false after weights holding an
  // inf or a NaN (the binding raises).
  bool refresh(const float* w, const float* b);
  bool weights_finite() const { return w_finite_; }
  // Whether the last call stopped at a tensor holding an inf or a NaN (x, or dZ); its outputs
  // are then unwritten. ready(): whether backward may follow (a forward of this size first).
  bool nonfinite() const { return nonfinite_; }
  bool ready(int64_t n, int64_t h, int64_t w) const { return n == saved_n_ && h == saved_h_ && w == saved_w_; }

  // yb = act(conv(xb, W) + b), blocked f32. Keeps x's mantissas for backward. With x_plain
  // (NCHW, else null) xb is first written from it, plane by plane, each plane scanned for the
  // exponent while it is in cache (one pass over x instead of two).
  status forward(int64_t n, int64_t h, int64_t w, const float* x_plain, float* xb, float* yb, float* y_plain = nullptr);
  // From gyb (blocked f32) and the last forward: gxb (null to skip), dW (K, C, R, S) and db
  // added to wg, bg when `accumulate`, else written. With gy_plain (NCHW, else null) gyb is
  // first written from it, as forward's x_plain. y_plain, gx_plain (NCHW, or null): yb and gxb
  // also written plain, each group of rows while it is in cache (conv_plan.h's pass_data::plain).
  status backward(int64_t n, int64_t h, int64_t w, const float* gy_plain, float* gyb, const float* yb, float* gxb,
                  float* wg, float* bg, bool accumulate, float* gx_plain = nullptr);

  // The exponents of the last calls (x, W, dZ) and the bits the overflow bound took from x and
  // dZ (0 when none): for tests and the docs' measurements.
  int32_t ex() const { return ex_; }
  int32_t ew() const { return ew_; }
  int32_t ez() const { return ez_; }
  int32_t x_shift() const { return x_shift_; }
  int32_t z_shift() const { return z_shift_; }

 private:
  conv_geometry g_;
  int64_t bc_, bk_;
  channel_split fs_, bs_;
  bool relu_;
  bool has_bias_ = false, w_finite_ = true, nonfinite_ = false;
  packed_weights seen_;
  std::vector<float> bias_, bias_e_;          // the bias padded to K/bk, and scaled by 2^−e per call
  std::vector<char> fwd_, bwd_;               // packed int16 mantissas (forward, transposed)
  std::vector<int16_t> wm_;                   // W's mantissas as (K, C, R, S), while packing
  int32_t ew_ = 0, ex_ = 0, ez_ = 0, x_shift_ = 0, z_shift_ = 0;
  int64_t wf_norm2_ = 0, wb_norm2_ = 0;       // largest squared slice norms of fwd_ and bwd_
  int64_t x_row2_ = 0;                        // largest squared norm of a channel's image row of x
  std::vector<char> xm_, dz_, dzm_, xt_, dzp_, part_;  // scratch: grown, never shrunk
  int64_t saved_n_ = -1, saved_h_ = 0, saved_w_ = 0;
  plan_cache<conv_plan_key, conv_pass_plan> fwd_plans_, bwd_plans_;
  plan_cache<conv_plan_key, dfp_wgrad_plan> wg_plans_;
};

}  // namespace brgemm::layers
