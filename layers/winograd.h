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
#include <mutex>
#include <vector>
#include "brgemm/brgemm.h"
#include "brgemm/winograd.h"
#include "conv.h"
#include "plan.h"

namespace brgemm::layers {

// Why a layer of `g`, t and act cannot run as a Winograd convolution, or null when it can.
const char* winograd_unsupported(const conv_geometry& g, dtype t, activation act);

// The tile size "auto" picks for n images of h × w: 4, 2, or 0 for the direct convolution, by
// the smallest winograd_cost, Winograd only when it is below 1/1.1 of the direct cost.
// `forced` (algorithm "winograd"): the cheaper of F(2×2) and F(4×4), whatever direct's cost.
int winograd_auto_tile(const conv_geometry& g, int64_t n, int64_t h, int64_t w, bool forced = false);

// The cost model, in units of one flop of the BRGEMM's products, of a forward pass of n images
// of h × w by the direct convolution (m = 0) or F(m×m, 3×3):
//   direct   18·C·K·N·OH·OW (products) + 15·36·C·K (weights read from memory)
//   F(m×m)   2·a²·C·K·tiles + 15·4·a²·C·K (the transformed filters, a² = (m + 2)² per pair)
//            + 40·a²·(C + K)·tiles (the input and output transforms, per value)
// with tiles = N·⌈OH/m⌉·⌈OW/m⌉. The weights: a byte from memory costs what 15 flops do (2 cores
// at ~300 GFLOP/s against ~20 GB/s); the transforms: 40 flops per value, measured (64 channels
// at 56×56, F(4×4): the transforms take about 40 % of the time, the products 60 %). So the
// filters' (m + 2)²/9 growth makes Winograd lose on few tiles and many channels (512 channels
// at 7×7, N = 1: 38 MB of F(4×4) filters for 4 tiles), the transforms make it lose with few
// channels (a 3 → 64 layer), and F(4×4) beats F(2×2) from about 6×6 outputs up.
double winograd_cost(const conv_geometry& g, int64_t n, int64_t h, int64_t w, int m);

struct winograd_plan;
struct winograd_plan_key {
  int64_t n, h, w;
  int32_t level, threads, bias, z, add, backward;
};

class winograd_conv {
 public:
  // g must be supported (winograd_unsupported(g, f32, act) is null); m is 2, 4 or 6.
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
  std::mutex shared_mutex_;      // one call at a time uses shared_ (taken once per call)
  plan_cache<winograd_plan_key, winograd_plan> plans_;
};

}  // namespace brgemm::layers
