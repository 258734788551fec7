// Winograd F(m×m, 3×3) transforms (csrc/core/winograd.cpp, per-ISA winograd.cpp; the scalar
// twin is csrc/kernels/winograd_twin.h): the element-wise halves of a Winograd convolution, whose
// products are BRGEMMs (layers/winograd.cpp). The core sees tiles of vectors of `lanes`
// channels, one vector per pixel, as in the blocked layout [C/bc][H][W][bc].
//
// The matrices are Lavin & Gray's ("Fast Algorithms for Convolutional Neural Networks", 2016):
// y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A for a 3×3 filter g, an a × a input tile d (a = m + 2) and an
// m × m output tile y; interpolation points 0, ±1 (m = 2), 0, ±1, ±2 (m = 4) and
// 0, ±1, ±2, ±1/2 (m = 6), plus ∞.
// Every ISA gives the twin's bits: each output is the same sum of the same products by the
// same constants (no fused multiply-add) in the same order, lane by lane.
#pragma once
#include <cstdint>
#include "brgemm/brgemm.h"

namespace brgemm {

// The tables of F(m×m, 3×3), row-major, a = m + 2 columns for Bᵀ and Aᵀ, 3 for G.
constexpr float winograd_bt2[4][4] = {{1, 0, -1, 0}, {0, 1, 1, 0}, {0, -1, 1, 0}, {0, 1, 0, -1}};
constexpr float winograd_at2[2][4] = {{1, 1, 1, 0}, {0, 1, -1, -1}};
constexpr double winograd_g2[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};
constexpr float winograd_bt4[6][6] = {{4, 0, -5, 0, 1, 0},  {0, -4, -4, 1, 1, 0}, {0, 4, -4, -1, 1, 0},
                                      {0, -2, -1, 2, 1, 0}, {0, 2, -1, -2, 1, 0}, {0, 4, 0, -5, 0, 1}};
constexpr float winograd_at4[4][6] = {{1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -2, 0}, {0, 1, 1, 4, 4, 0}, {0, 1, -1, 8, -8, 1}};
constexpr double winograd_g4[6][3] = {{1.0 / 4, 0, 0},
                                      {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                                      {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                                      {1.0 / 24, 1.0 / 12, 1.0 / 6},
                                      {1.0 / 24, -1.0 / 12, 1.0 / 6},
                                      {0, 0, 1}};

// F(6×6, 3×3): points 0, ±1, ±2, ±1/2 (every entry exact in float). Its transforms' larger
// coefficients (21/4, 17/4, 32) make it the least accurate of the three (layers/winograd.h).
constexpr float winograd_bt6[8][8] = {{1, 0, -5.25f, 0, 5.25f, 0, -1, 0},
                                      {0, 1, 1, -4.25f, -4.25f, 1, 1, 0},
                                      {0, -1, 1, 4.25f, -4.25f, -1, 1, 0},
                                      {0, 0.5f, 0.25f, -2.5f, -1.25f, 2, 1, 0},
                                      {0, -0.5f, 0.25f, 2.5f, -1.25f, -2, 1, 0},
                                      {0, 2, 4, -2.5f, -5, 0.5f, 1, 0},
                                      {0, -2, 4, 2.5f, -5, -0.5f, 1, 0},
                                      {0, -1, 0, 5.25f, 0, -5.25f, 0, 1}};
constexpr float winograd_at6[6][8] = {{1, 1, 1, 1, 1, 1, 1, 0},
                                      {0, 1, -1, 2, -2, 0.5f, -0.5f, 0},
                                      {0, 1, 1, 4, 4, 0.25f, 0.25f, 0},
                                      {0, 1, -1, 8, -8, 0.125f, -0.125f, 0},
                                      {0, 1, 1, 16, 16, 0.0625f, 0.0625f, 0},
                                      {0, 1, -1, 32, -32, 0.03125f, -0.03125f, 1}};
constexpr double winograd_g6[8][3] = {{1, 0, 0},
                                      {-2.0 / 9, -2.0 / 9, -2.0 / 9},
                                      {-2.0 / 9, 2.0 / 9, -2.0 / 9},
                                      {1.0 / 90, 1.0 / 45, 2.0 / 45},
                                      {1.0 / 90, -1.0 / 45, 2.0 / 45},
                                      {32.0 / 45, 16.0 / 45, 8.0 / 45},
                                      {32.0 / 45, -16.0 / 45, 8.0 / 45},
                                      {0, 0, 1}};

// The input transform of one tile over `blocks` channel blocks: the a × a patch whose top-left
// pixel is (y0, x0) of an h × w plane (pixels outside it read as zero: the padding; y0, x0 may
// be negative), V = Bᵀ d B, point (i, j) of block b stored at dst + b·dst_block + (i·a + j)·dst_point.
// Plane b starts at src + b·src_block; pixel (y, x) at + (y·w + x)·lanes.
struct winograd_input_args {
  const float* src;
  int64_t src_block, h, w, y0, x0, lanes, blocks;
  float* dst;
  int64_t dst_block, dst_point;
};

// The output transform of one tile over `blocks` channel blocks: Y = Aᵀ M A from the a × a
// points of block b at src + b·src_block + (i·a + j)·src_point, then the epilogue on the first
// rows × cols pixels of Y (a partial tile at the bottom or right edge):
//   v = Y + bias[b·lanes + l] (bias may be null); v = v + add[pixel] (add may be null);
//   z[pixel] = v (z may be null); out[pixel] = act(v), act none, relu or relu6 (as the BRGEMM
//   epilogue: max(0, v), min(6, ·), NaN stays NaN).
// Pixel (i, j) of block b is at + b·out_block + i·out_row + j·lanes in out, add and z alike.
struct winograd_output_args {
  const float* src;
  int64_t src_block, src_point, lanes, blocks;
  int64_t rows, cols;
  const float* bias;
  const float* add;
  float* z;
  float* out;
  int64_t out_block, out_row;
  activation act;
};

using winograd_input_fn = void (*)(int m, const winograd_input_args& a);
using winograd_output_fn = void (*)(int m, const winograd_output_args& a);
struct winograd_transforms {
  winograd_input_fn input;
  winograd_output_fn output;
  const char* isa;
};
// The transforms of `level` (the VNNI and BF16 levels use AVX-512's), for a plan to keep:
// m = 2, 4 or 6, and the activations above only.
winograd_transforms winograd_transforms_for(isa level);

}  // namespace brgemm
