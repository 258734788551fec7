// The per-lane functions of brgemm/norm.h one value at a time: the scalar twin every ISA's
// vector version must match bit for bit, and the lanes the AVX2 vectors do not cover.
// Static, so each ISA translation unit keeps its own copy (see batch_block.h).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include "brgemm/norm.h"
#include "epilogue_twin.h"  // brgemm_bf16_rne, brgemm_from_bits

static inline float brgemm_lane_get(const void* p, int64_t i, bool bf16) {
  return bf16 ? brgemm_from_bits((uint32_t)((const uint16_t*)p)[i] << 16) : ((const float*)p)[i];
}
static inline void brgemm_lane_put(void* p, int64_t i, bool bf16, float v) {
  if (bf16)
    ((uint16_t*)p)[i] = brgemm_bf16_rne(v);
  else
    ((float*)p)[i] = v;
}

// One lane's moments over rows [r0, r1): the loop every ISA runs, per lane.
static inline void brgemm_lane_moments_twin(const brgemm::lane_rows& g, const void* x, int64_t l, int64_t r0,
                                            int64_t r1, const double* shift, double* sum, double* sumsq) {
  double s = sum[l], q = sumsq ? sumsq[l] : 0.0;
  const double k = shift[l];
  for (int64_t r = r0; r < r1; ++r) {
    const double d = (double)brgemm_lane_get(x, r * g.width + l, g.bf16) - k;
    s = s + d;
    if (sumsq) q = std::fma(d, d, q);
  }
  sum[l] = s;
  if (sumsq) sumsq[l] = q;
}

// y of lane_affine for one value (not a padding lane).
static inline float brgemm_lane_affine_twin(float x, float mean, float scale, float shift, const float* r,
                                            bool relu) {
  float v = (x - mean) * scale;
  v = v + shift;
  if (r) v = v + *r;
  return relu ? brgemm_maxps(0.0f, v) : v;
}

// g of lane_grad_*: dy where the mask passes (y > 0), else 0, whatever dy holds.
static inline float brgemm_lane_grad_twin(float dy, const float* y) { return !y || *y > 0.0f ? dy : 0.0f; }

// One lane of lane_grad_moments over rows [r0, r1).
static inline void brgemm_lane_grad_moments_twin(const brgemm::lane_rows& g, const brgemm::lane_grad_args& a,
                                                 int64_t l, int64_t r0, int64_t r1) {
  double s = a.sum[l], t = a.dot[l];
  const double m = a.mean_d[l];
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t i = r * g.width + l;
    float yv = 0.0f;
    if (a.y) yv = brgemm_lane_get(a.y, i, g.bf16);
    const float gv = brgemm_lane_grad_twin(brgemm_lane_get(a.dy, i, g.bf16), a.y ? &yv : nullptr);
    if (a.g_out) {  // dy's bits or +0: bf16 truncated, not rounded (a NaN keeps its payload)
      const float v = l < g.lanes ? gv : 0.0f;
      if (g.bf16)
        ((uint16_t*)a.g_out)[i] = (uint16_t)(brgemm_bits(v) >> 16);
      else
        ((float*)a.g_out)[i] = v;
    }
    const double gd = (double)gv;
    s = s + gd;
    t = std::fma(gd, (double)brgemm_lane_get(a.x, i, g.bf16) - m, t);
  }
  a.sum[l] = s;
  a.dot[l] = t;
}

// dx of lane_grad_affine for one value (not a padding lane).
static inline float brgemm_lane_grad_affine_twin(float gv, float x, float mean, float a, float c, float d) {
  float v = a * gv;
  v = v + c * (x - mean);
  return v + d;
}
