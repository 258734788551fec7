// Per-channel stencils on rows of channel vectors (csrc/core/depthwise.cpp, per-ISA
// depthwise.cpp; the scalar twin is csrc/kernels/ref/depthwise.cpp): the arithmetic of a
// depthwise convolution, which the core sees only as results that are sums of sources
// multiplied lane by lane by weight vectors. It is not a product (one multiply-add per value
// and tap, nothing to reuse across channels), so it is not a BRGEMM either.
//
// A vector holds `bc` values (any bc ≥ 1: whole registers when bc is a multiple of 16 on
// AVX-512 or of 8 on AVX2, a masked last register otherwise). Arrays of f32 or bf16 (uint16
// bits) elements; steps and sizes count elements.
#pragma once
#include <cstdint>
#include "brgemm/brgemm.h"

namespace brgemm {

// m results of one row: result j (j < m) at y + j·y_step, tap t's source for it at
// x[t] + j·x_step, tap t's weights at w[t] (bc f32 values):
//   y_j = act(bias + Σ_{t < taps} w[t] ⊙ x[t]_j + add_j)
// summed from the bias in tap order (one fused multiply-add per tap on the vector ISAs; the
// scalar twin rounds the product and the sum apart), then add_j (laid out as y, of y's type),
// then the activation (any of brgemm.h's). bias and add may be null; taps may be 0 (then
// y_j = act(bias + add_j)). A bf16 y is rounded to nearest even from the f32 value.
struct depthwise_row {
  int64_t m = 0, bc = 0, taps = 0;
  const void* const* x = nullptr;
  int64_t x_step = 0;
  element xt = element::f32;
  const float* const* w = nullptr;
  const float* bias = nullptr;
  const void* add = nullptr;
  void* y = nullptr;
  int64_t y_step = 0;
  element yt = element::f32;
  activation act = activation::none;
};
void depthwise_forward(const depthwise_row& r);

// The weights' gradient over one row: for each tap t, dw[t] += Σ_{j < m} g_j ⊙ x[t]_j (g_j at
// g + j·g_step, f32; x as in depthwise_row), and db += Σ_j g_j when db is not null. Each sum is
// taken in f32 (the scalar twin in four interleaved partial sums, j mod 4; the vector kernels
// in one or four, depending on the taps), then added to dw[t] or db.
struct depthwise_grad_row {
  int64_t m = 0, bc = 0, taps = 0;
  const float* g = nullptr;
  int64_t g_step = 0;
  const void* const* x = nullptr;
  int64_t x_step = 0;
  element xt = element::f32;
  float* const* dw = nullptr;
  float* db = nullptr;
};
void depthwise_weight_grad(const depthwise_grad_row& r);

}  // namespace brgemm
