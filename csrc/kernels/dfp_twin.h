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

// Of `cols` pixels of `lanes` (≤ 64) float32 values each (a row of a blocked tensor): the largest
// squared norm of a pixel's lanes and of one lane along the row, raised into *pixel2 and *row2
// (double: the squares are exact). One order for every ISA: a lane's sum runs over the pixels in
// turn; a pixel's sum keeps 8 partial sums, p_j over the lanes ≡ j (mod 8) in turn, then adds
// them as ((p0+p1)+(p2+p3))+((p4+p5)+(p6+p7)), which 8-wide (or twice 4-wide) vectors compute as is.
static inline double brgemm_dfp_tree8(const double* p) {
  return ((p[0] + p[1]) + (p[2] + p[3])) + ((p[4] + p[5]) + (p[6] + p[7]));
}
static inline void brgemm_dfp_slice_norms_twin(const float* x, int64_t cols, int64_t lanes, double* pixel2,
                                               double* row2) {
  double lane[64] = {};
  for (int64_t c = 0; c < cols; ++c) {
    double p[8] = {};
    for (int64_t l = 0; l < lanes; ++l) {
      const double v = x[c * lanes + l], sq = v * v;
      p[l % 8] += sq;
      lane[l] += sq;
    }
    const double s = brgemm_dfp_tree8(p);
    *pixel2 = s > *pixel2 ? s : *pixel2;
  }
  for (int64_t l = 0; l < lanes; ++l) *row2 = lane[l] > *row2 ? lane[l] : *row2;
}

// y·s in place (s a power of two: exact unless y·s leaves the float range).
static inline void brgemm_dfp_scale_twin(float* y, int64_t n, float s) {
  for (int64_t i = 0; i < n; ++i) y[i] *= s;
}
