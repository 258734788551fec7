// The scalar twin of the DFP-16 conversions (brgemm/dfp.h): the reference kernels (ref/dfp.cpp)
// and the vector kernels' tails use these, so every ISA gives these bits. Static: each ISA's
// translation unit keeps its own copy (see batch_block.h).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

// |x| as its bits: for non-negative floats the integer order is the numeric order, so the largest
// of these is max |x| (and ≥ 0x7F800000 exactly when x holds an inf or a NaN).
static inline uint32_t brgemm_abs_bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u & 0x7FFFFFFFu;
}

static inline uint32_t brgemm_dfp_absmax_twin(const float* x, int64_t n, uint32_t best) {
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t u = brgemm_abs_bits(x[i]);
    best = u > best ? u : best;
  }
  return best;
}

// m = clamp(round_half_even(x·s1·s2), ±32767) for finite x: two exact power-of-two scalings (one
// could leave the float range), then the current rounding mode's nearest-even, as cvtps2dq does.
static inline void brgemm_dfp_quantize_twin(const float* x, int16_t* m, int64_t n, float s1, float s2) {
  for (int64_t i = 0; i < n; ++i) {
    float v = std::nearbyint(x[i] * s1 * s2);
    v = v > 32767.0f ? 32767.0f : v < -32767.0f ? -32767.0f : v;
    m[i] = (int16_t)v;
  }
}

static inline void brgemm_dfp_dequantize_twin(const int16_t* m, float* y, int64_t n, float s1, float s2) {
  for (int64_t i = 0; i < n; ++i) y[i] = (float)m[i] * s1 * s2;
}

// y·s in place (s a power of two: exact unless y·s leaves the float range).
static inline void brgemm_dfp_scale_twin(float* y, int64_t n, float s) {
  for (int64_t i = 0; i < n; ++i) y[i] *= s;
}
