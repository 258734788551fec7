// The element-wise functions of brgemm.h one value at a time: the scalar twin that every ISA's
// vector version must match bit for bit (same IEEE operations in the same order; the kernels
// are compiled with -ffp-contract=off), and the tail of the vector loops.
// Static, so each ISA translation unit keeps its own copy (see batch_block.h).
#pragma once
#include <cmath>
#include <cstring>
#include "brgemm/brgemm.h"
#include "brgemm/ktanh_table.h"

// The table entries packed for the vector versions: (shift << 16) | (exponent·128 + bias).
struct brgemm_ktanh_entries {
  int32_t v[32];
};
static constexpr brgemm_ktanh_entries brgemm_ktanh_packed = [] {
  brgemm_ktanh_entries t{};
  for (int i = 0; i < 32; ++i)
    t.v[i] = (brgemm::ktanh::shift[i] << 16) | (brgemm::ktanh::exponent[i] * 128 + brgemm::ktanh::bias[i]);
  return t;
}();

// The same as 16-bit entries for the 32-lane version: exponent·128 + bias (shift is as is).
struct brgemm_ktanh_entries16 {
  int16_t v[32];
};
static constexpr brgemm_ktanh_entries16 brgemm_ktanh_add16 = [] {
  brgemm_ktanh_entries16 t{};
  for (int i = 0; i < 32; ++i) t.v[i] = (int16_t)(brgemm::ktanh::exponent[i] * 128 + brgemm::ktanh::bias[i]);
  return t;
}();

// Constants of the composite functions, as float (the vector versions broadcast these).
static constexpr float brgemm_gelu_c = 0.7978845608028654f;  // √(2/π)
static constexpr float brgemm_gelu_a = 0.044715f;

static inline uint32_t brgemm_bits(float v) {
  uint32_t u;
  std::memcpy(&u, &v, sizeof u);
  return u;
}
static inline float brgemm_from_bits(uint32_t u) {
  float v;
  std::memcpy(&v, &u, sizeof v);
  return v;
}

// K-TanH on bf16 bits h (sign, 8-bit exponent E, 7-bit mantissa M): y = x below 2^-2, ±1 from
// 2^2 on (±inf too), else the table entry of ((E & 3) << 3) | (M >> 4) = (|h| >> 4) & 31.
static inline uint16_t brgemm_ktanh_bits(uint16_t h) {
  namespace kt = brgemm::ktanh;
  const uint32_t sign = h & 0x8000u, a = h & 0x7FFFu;
  if (a < (uint32_t)kt::low_exp << 7) return h;
  if (a >= (uint32_t)kt::high_exp << 7) return (uint16_t)(sign | 0x3F80u);
  const uint32_t i = (a >> 4) & 31u;
  // exponent·128 + bias + (M >> shift): the mantissa stays in [0, 128), so no carry crosses.
  return (uint16_t)(sign | ((uint32_t)(kt::exponent[i] * 128 + kt::bias[i]) + ((a & 0x7Fu) >> kt::shift[i])));
}

static inline float brgemm_ktanh(float x) {
  if (x != x) return x;
  return brgemm_from_bits((uint32_t)brgemm_ktanh_bits((uint16_t)(brgemm_bits(x) >> 16)) << 16);
}
static inline float brgemm_ksigmoid(float x) { return (1.0f + brgemm_ktanh(x * 0.5f)) * 0.5f; }
static inline float brgemm_kgelu_inner(float x) { return brgemm_gelu_c * (x + brgemm_gelu_a * ((x * x) * x)); }
static inline float brgemm_kgelu(float x) { return (x * 0.5f) * (1.0f + brgemm_ktanh(brgemm_kgelu_inner(x))); }

// The exact functions in double, rounded once (erfc, not 1 + erf, keeps GELU's negative side
// accurate).
static inline double brgemm_sigmoid_d(double x) { return 1.0 / (1.0 + std::exp(-x)); }
static inline double brgemm_gelu_cdf_d(double x) { return 0.5 * std::erfc(-x * 0.70710678118654752); }
static inline float brgemm_sigmoid(float x) { return (float)brgemm_sigmoid_d(x); }
static inline float brgemm_gelu(float x) { return (float)(x * brgemm_gelu_cdf_d(x)); }

// Stage 4 of the epilogue on one value. A NaN comes back as it went in, whatever the function
// (NaN propagation through libm and commuted operations could change its sign bit).
static inline float brgemm_activation(brgemm::activation a, float v) {
  using brgemm::activation;
  if (v != v) return v;
  switch (a) {
    case activation::relu: return 0.0f > v ? 0.0f : v;
    case activation::relu6: return 0.0f > v ? 0.0f : 6.0f < v ? 6.0f : v;
    case activation::tanh: return (float)std::tanh((double)v);
    case activation::sigmoid: return brgemm_sigmoid(v);
    case activation::gelu: return brgemm_gelu(v);
    case activation::swish: return (float)(v * brgemm_sigmoid_d(v));
    case activation::ktanh: return brgemm_ktanh(v);
    case activation::ksigmoid: return brgemm_ksigmoid(v);
    case activation::kgelu: return brgemm_kgelu(v);
    case activation::kswish: return v * brgemm_ksigmoid(v);
    default: return v;
  }
}

// f'(x)·g, from y = f(x) where that is enough, else from x (see brgemm.h).
static inline float brgemm_activation_backward(brgemm::activation a, float g, float x, float y) {
  using brgemm::activation;
  switch (a) {
    case activation::relu: return y > 0.0f ? g : 0.0f;
    case activation::relu6: return y > 0.0f && y < 6.0f ? g : 0.0f;
    case activation::tanh:
    case activation::ktanh: return g * (1.0f - y * y);
    case activation::sigmoid:
    case activation::ksigmoid: return g * (y * (1.0f - y));
    case activation::gelu: {  // Φ(x) + x·φ(x)
      const double xd = x;
      return g * (float)(brgemm_gelu_cdf_d(xd) + xd * (0.3989422804014327 * std::exp(-0.5 * xd * xd)));
    }
    case activation::swish: {  // s + x·s·(1 − s)
      const double s = brgemm_sigmoid_d(x);
      return g * (float)(s + x * (s * (1.0 - s)));
    }
    case activation::kswish: {
      const float s = brgemm_ksigmoid(x);
      return g * (s + x * (s * (1.0f - s)));
    }
    case activation::kgelu: {  // (1 + t)/2 + x/2·(1 − t²)·√(2/π)·(1 + 3·0.044715·x²)
      const float t = brgemm_ktanh(brgemm_kgelu_inner(x));
      const float du = brgemm_gelu_c * (1.0f + (3.0f * brgemm_gelu_a) * (x * x));
      return g * ((1.0f + t) * 0.5f + (x * 0.5f) * ((1.0f - t * t) * du));
    }
    default: return g;
  }
}
