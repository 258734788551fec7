// Winograd F(m×m, 3×3) convolution (issue 21): 3×3, stride 1, dilation 1, groups 1, f32, on the
// direct convolution's blocked layouts (conv.h), with its epilogue (bias, residual, none / relu /
// relu6). Tiles of m × m outputs go in groups sized for L2; per group:
//   (a) input transform of the group's (m+2)² patches, V = Bᵀ d B, into per-thread scratch laid
//       out as the kernel's A: [point][C/bi][tiles][bi];
//   (b) per transform point and result block, ONE BRGEMM: [tiles × bi] · [bi × bo] reduced over
//       the source blocks (a batch of offsets), B the transformed filters G g Gᵀ packed once;
//   (c) output transform Y = Aᵀ M A with the epilogue, partial tiles at the bottom and right.
// The transforms are per-ISA kernels (brgemm/winograd.h); the products are the BRGEMM's.
// Backward data is the same pass on ∂z with the filters flipped and the channels swapped,
// padding 2 − p per side. conv_layer (conv.h) owns these layers and picks them (algorithm).
#pragma once
#include <cstdint>
#include <vector>
#include "brgemm/brgemm.h"
#include "brgemm/winograd.h"
#include "conv.h"
#include "plan.h"

namespace brgemm::layers {

// Why a layer of `g`, t and act cannot run as a Winograd convolution, or null when it can.
const char* winograd_unsupported(const conv_geometry& g, dtype t, activation act);

// The tile size "auto" picks for n images of h × w: 4, 2, or 0 for the direct convolution.
// The model: F(m×m) does (m+2)²/m² multiplies per output where the direct convolution does 9,
// on tiles that cover the output rounded up to m; its transform passes move about
// 4·(m+2)²·(C + K) bytes per tile through L2 for 2·(m+2)²·C·K flops of products, which only
// pays when the channels are not few. So: direct below 16 input or output channels; F(4×4)
// when the output is at least 8×8, else F(2×2); and that m only if its multiply count (edge
// tiles included) is at most 1/1.5 of the direct one (the transforms cost about a third of
// the saving), else direct. `forced` (algorithm "winograd"): the m, whatever the channels and
// the saving.
int winograd_auto_tile(const conv_geometry& g, int64_t h, int64_t w, bool forced = false);

struct winograd_plan;
struct winograd_plan_key {
  int64_t n, h, w;
  int32_t level, threads, bias, z, add, backward;
};

class winograd_conv {
 public:
  // g must be supported (winograd_unsupported(g, f32, act) is null); m is 2 or 4.
  winograd_conv(const conv_geometry& g, activation act, int m);
  int m() const { return m_; }

  // Transforms and packs w (K, C, 3, 3) for forward and backward data.
  void pack(const float* w);

  // As conv_layer::forward (f32): yb = act(conv(xb) + bias + add), the pre-activation into zb
  // when given; bias is K rounded up to the output block, or null.
  status forward(int64_t n, int64_t h, int64_t w, const float* xb, float* yb, float* zb, const float* add,
                 const float* bias);
  // gxb (blocked like x) = the convolution's transpose applied to dzb (blocked like y).
  status backward_data(int64_t n, int64_t h, int64_t w, const float* dzb, float* gxb);

 private:
  conv_geometry g_;
  activation act_;
  int m_;
  int64_t bc_, bk_;
  std::vector<char> fwd_, bwd_;  // transformed filters, [point][result block][source block] packed B blocks
  std::vector<char> shared_;     // V and M of a shared tile group (winograd.cpp): grown, kept
  plan_cache<winograd_plan_key, winograd_plan> plans_;
};

}  // namespace brgemm::layers
