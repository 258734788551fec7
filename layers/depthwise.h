// Depthwise convolution (groups = C = K): a per-channel stencil, not a product, so not a BRGEMM.
// conv_layer (conv.h) hands its passes here when its geometry is depthwise; each output row is a
// few calls of the core's depthwise_forward (brgemm/depthwise.h), one per run of output columns
// that see the same taps (the direct convolution's runs, conv_plan.h), on the blocked layout
// [N][C/bc][H][W][bc] of the other convolutions.
//   forward          Y[n][cb][oh][ow] = act(b + Σ_{r,s} W[cb][r][s] ⊙ X[n][cb][ih][iw] (+ add))
//   backward data    dX[n][cb][ih][iw] = Σ_{r,s} W[cb][r][s] ⊙ dZ[n][cb][oh][ow]   (the same stencil,
//                    its results input rows and stride classes of input columns, as in conv.cpp)
//   weight gradient  dW[cb][r][s] = Σ_{n,oh,ow} dZ[n][cb][oh][ow] ⊙ X[n][cb][ih][iw]
// with ih = oh·stride − pad + r·dilation (iw likewise). The weights are packed as
// [C/bc][R][S][bc] f32 (rounded to bf16 values for a bf16 layer: what its products use).
#pragma once
#include <cstdint>
#include <memory>
#include <vector>
#include "brgemm/brgemm.h"
#include "conv.h"
#include "plan.h"

namespace brgemm::layers {

struct depthwise_plan;

class depthwise_conv {
 public:
  depthwise_conv(dtype t, const conv_geometry& g, int64_t bc, brgemm::activation act);
  ~depthwise_conv();

  // w: (C, 1, R, S) f32.
  void pack(const float* w);
  // As conv_layer::forward and backward; bias: the layer's, padded to whole blocks (or null).
  status forward(int64_t n, int64_t h, int64_t w, const void* xb, void* yb, float* zb, const void* add,
                 const float* bias);
  status backward(int64_t n, int64_t h, int64_t w, const float* gyb, const void* yb, const float* zb,
                  const void* xb, float* gxb, float* wg, float* bg, bool accumulate);

 private:
  status build(depthwise_plan& pl, int64_t n, int64_t h, int64_t w, int threads) const;

  dtype t_;
  conv_geometry g_;
  int64_t bc_;
  brgemm::activation act_;
  std::vector<float> w_;                       // [C/bc][R][S][bc]
  std::vector<float> parts_;                   // backward: per-thread dW and db
  plan_cache<conv_plan_key, depthwise_plan> plans_;
};

}  // namespace brgemm::layers
