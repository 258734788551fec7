// The per-lane kernels of brgemm/norm.h with AVX-512: lanes in groups of 16 (one zmm of f32, two
// of double for the sums), the last group of a width that is not a multiple of 16 masked. Rows
// are walked in memory order with every group's sums and coefficients in registers (the group
// count, 1-4, is a template argument), each lane accumulated over the rows in order as the twin.
#include <algorithm>
// gcc 12 with -Wall reports the intrinsics headers' own _mm512_undefined_* operands of masked
// conversions as uninitialized (a false positive, hundreds of lines per build): silenced here.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include "../norm_kernels.h"
#include "../norm_twin.h"
#include "activation.h"  // bf16_rne

namespace brgemm::kernels {

namespace {

// The 16-lane groups of a row: masks of the lanes inside the width (loads and stores) and of the
// real ones (kept; padding lanes are written 0).
struct lane_groups {
  int n = 0;
  __mmask16 in[4] = {}, real[4] = {};
  explicit lane_groups(const lane_rows& g) {
    n = (int)((g.width + 15) / 16);
    for (int j = 0; j < n; ++j) {
      in[j] = (__mmask16)(g.width - 16 * j >= 16 ? 0xFFFF : (1u << (g.width - 16 * j)) - 1u);
      const int64_t r = std::clamp<int64_t>(g.lanes - 16 * j, 0, 16);
      real[j] = (__mmask16)(in[j] & (r >= 16 ? 0xFFFFu : (1u << r) - 1u));
    }
  }
};

template <bool BF16>
inline __m512 load16(const void* p, int64_t i, __mmask16 k) {
  if constexpr (BF16) {
    const __m512i h = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(k, (const uint16_t*)p + i));
    return _mm512_castsi512_ps(_mm512_slli_epi32(h, 16));
  } else {
    return _mm512_maskz_loadu_ps(k, (const float*)p + i);
  }
}

template <bool BF16>
inline void store16(void* p, int64_t i, __mmask16 k, __m512 v) {
  if constexpr (BF16)
    _mm256_mask_storeu_epi16((uint16_t*)p + i, k, _mm512_cvtepi32_epi16(bf16_rne(v)));
  else
    _mm512_mask_storeu_ps((float*)p + i, k, v);
}

inline __m512d lo_pd(__m512 v) { return _mm512_cvtps_pd(_mm512_castps512_ps256(v)); }
inline __m512d hi_pd(__m512 v) { return _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1)); }

// Rows in order, every group of a row before the next row (the memory is read as it lies: a
// group-by-group walk over wide rows measured 4-9x slower once the data left L2), the NG groups'
// sums in registers (NG ≤ 4: at most 16 accumulators and 8 shifts).
template <bool BF16, bool SQ, int NG>
void moments(const lane_rows& g, const void* x, const double* shift, double* sum, double* sumsq) {
  const lane_groups gr(g);
  __m512d c[2 * NG], s[2 * NG], q[2 * NG];
  for (int j = 0; j < NG; ++j)
    for (int h = 0; h < 2; ++h) {
      const __mmask8 k = (__mmask8)(gr.in[j] >> (8 * h));
      const int64_t l = 16 * j + 8 * h;
      c[2 * j + h] = _mm512_maskz_loadu_pd(k, shift + l);
      s[2 * j + h] = _mm512_maskz_loadu_pd(k, sum + l);
      q[2 * j + h] = SQ ? _mm512_maskz_loadu_pd(k, sumsq + l) : _mm512_setzero_pd();
    }
  for (int64_t r = 0; r < g.rows; ++r)
    for (int j = 0; j < NG; ++j) {
      const __m512 v = load16<BF16>(x, r * g.width + 16 * j, gr.in[j]);
      const __m512d d0 = _mm512_sub_pd(lo_pd(v), c[2 * j]), d1 = _mm512_sub_pd(hi_pd(v), c[2 * j + 1]);
      s[2 * j] = _mm512_add_pd(s[2 * j], d0);
      s[2 * j + 1] = _mm512_add_pd(s[2 * j + 1], d1);
      if constexpr (SQ) {
        q[2 * j] = _mm512_fmadd_pd(d0, d0, q[2 * j]);
        q[2 * j + 1] = _mm512_fmadd_pd(d1, d1, q[2 * j + 1]);
      }
    }
  for (int j = 0; j < NG; ++j)
    for (int h = 0; h < 2; ++h) {
      const __mmask8 k = (__mmask8)(gr.in[j] >> (8 * h));
      const int64_t l = 16 * j + 8 * h;
      _mm512_mask_storeu_pd(sum + l, k, s[2 * j + h]);
      if constexpr (SQ) _mm512_mask_storeu_pd(sumsq + l, k, q[2 * j + h]);
    }
}

template <bool BF16, bool SQ>
void moments_ng(const lane_rows& g, const void* x, const double* shift, double* sum, double* sumsq) {
  switch ((g.width + 15) / 16) {
    case 1: return moments<BF16, SQ, 1>(g, x, shift, sum, sumsq);
    case 2: return moments<BF16, SQ, 2>(g, x, shift, sum, sumsq);
    case 3: return moments<BF16, SQ, 3>(g, x, shift, sum, sumsq);
    default: return moments<BF16, SQ, 4>(g, x, shift, sum, sumsq);
  }
}

// NG groups per row (1-4), known at compile time so that the coefficients stay in registers.
template <bool BF16, bool RES, bool RELU, int NG>
void affine(const lane_rows& g, const lane_affine_args& a) {
  const lane_groups gr(g);
  __m512 m[NG], s[NG], b[NG];
  for (int j = 0; j < NG; ++j) {
    m[j] = _mm512_maskz_loadu_ps(gr.in[j], a.mean + 16 * j);
    s[j] = _mm512_maskz_loadu_ps(gr.in[j], a.scale + 16 * j);
    b[j] = _mm512_maskz_loadu_ps(gr.in[j], a.shift + 16 * j);
  }
  for (int64_t r = 0; r < g.rows; ++r)
    for (int j = 0; j < NG; ++j) {
      const int64_t i = r * g.width + 16 * j;
      __m512 v = _mm512_mul_ps(_mm512_sub_ps(load16<BF16>(a.x, i, gr.in[j]), m[j]), s[j]);
      v = _mm512_add_ps(v, b[j]);
      if constexpr (RES) v = _mm512_add_ps(v, load16<BF16>(a.r, i, gr.in[j]));
      if constexpr (RELU) v = _mm512_max_ps(_mm512_setzero_ps(), v);  // NaN stays: the 2nd operand
      store16<BF16>(a.y, i, gr.in[j], _mm512_maskz_mov_ps(gr.real[j], v));
    }
}

template <bool BF16, bool RES, bool RELU>
void affine_ng(const lane_rows& g, const lane_affine_args& a) {
  switch ((g.width + 15) / 16) {
    case 1: return affine<BF16, RES, RELU, 1>(g, a);
    case 2: return affine<BF16, RES, RELU, 2>(g, a);
    case 3: return affine<BF16, RES, RELU, 3>(g, a);
    default: return affine<BF16, RES, RELU, 4>(g, a);
  }
}

// g = dy·[y > 0] (MASK) or dy, 16 lanes.
template <bool BF16, bool MASK>
inline __m512 grad16(const void* dy, const void* y, int64_t i, __mmask16 k) {
  const __m512 d = load16<BF16>(dy, i, k);
  if constexpr (!MASK) return d;
  return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(load16<BF16>(y, i, k), _mm512_setzero_ps(), _CMP_GT_OQ), d);
}

// Rows in order as moments does; per group two sums and two dots (16 accumulators, 8 means).
template <bool BF16, bool MASK, bool GOUT, int NG>
void grad_moments(const lane_rows& g, const lane_grad_args& a) {
  const lane_groups gr(g);
  __m512d m[2 * NG], s[2 * NG], t[2 * NG];
  for (int j = 0; j < NG; ++j)
    for (int h = 0; h < 2; ++h) {
      const __mmask8 k = (__mmask8)(gr.in[j] >> (8 * h));
      const int64_t l = 16 * j + 8 * h;
      m[2 * j + h] = _mm512_maskz_loadu_pd(k, a.mean_d + l);
      s[2 * j + h] = _mm512_maskz_loadu_pd(k, a.sum + l);
      t[2 * j + h] = _mm512_maskz_loadu_pd(k, a.dot + l);
    }
  for (int64_t r = 0; r < g.rows; ++r)
    for (int j = 0; j < NG; ++j) {
      const int64_t i = r * g.width + 16 * j;
      const __m512 gv = grad16<BF16, MASK>(a.dy, a.y, i, gr.in[j]);
      if constexpr (GOUT) store16<BF16>(a.g_out, i, gr.in[j], _mm512_maskz_mov_ps(gr.real[j], gv));
      const __m512 xv = load16<BF16>(a.x, i, gr.in[j]);
      const __m512d g0 = lo_pd(gv), g1 = hi_pd(gv);
      s[2 * j] = _mm512_add_pd(s[2 * j], g0);
      s[2 * j + 1] = _mm512_add_pd(s[2 * j + 1], g1);
      t[2 * j] = _mm512_fmadd_pd(g0, _mm512_sub_pd(lo_pd(xv), m[2 * j]), t[2 * j]);
      t[2 * j + 1] = _mm512_fmadd_pd(g1, _mm512_sub_pd(hi_pd(xv), m[2 * j + 1]), t[2 * j + 1]);
    }
  for (int j = 0; j < NG; ++j)
    for (int h = 0; h < 2; ++h) {
      const __mmask8 k = (__mmask8)(gr.in[j] >> (8 * h));
      const int64_t l = 16 * j + 8 * h;
      _mm512_mask_storeu_pd(a.sum + l, k, s[2 * j + h]);
      _mm512_mask_storeu_pd(a.dot + l, k, t[2 * j + h]);
    }
}

template <bool BF16, bool MASK, bool GOUT>
void grad_moments_ng(const lane_rows& g, const lane_grad_args& a) {
  switch ((g.width + 15) / 16) {
    case 1: return grad_moments<BF16, MASK, GOUT, 1>(g, a);
    case 2: return grad_moments<BF16, MASK, GOUT, 2>(g, a);
    case 3: return grad_moments<BF16, MASK, GOUT, 3>(g, a);
    default: return grad_moments<BF16, MASK, GOUT, 4>(g, a);
  }
}

template <bool BF16, bool MASK, bool DXBF16, int NG>
void grad_affine(const lane_rows& g, const lane_grad_args& a) {
  const lane_groups gr(g);
  __m512 m[NG], ca[NG], cc[NG], cd[NG];
  for (int j = 0; j < NG; ++j) {
    m[j] = _mm512_maskz_loadu_ps(gr.in[j], a.mean + 16 * j);
    ca[j] = _mm512_maskz_loadu_ps(gr.in[j], a.a + 16 * j);
    cc[j] = _mm512_maskz_loadu_ps(gr.in[j], a.c + 16 * j);
    cd[j] = _mm512_maskz_loadu_ps(gr.in[j], a.d + 16 * j);
  }
  for (int64_t r = 0; r < g.rows; ++r)
    for (int j = 0; j < NG; ++j) {
      const int64_t i = r * g.width + 16 * j;
      const __m512 gv = grad16<BF16, MASK>(a.dy, a.y, i, gr.in[j]);
      const __m512 t = _mm512_sub_ps(load16<BF16>(a.x, i, gr.in[j]), m[j]);
      __m512 v = _mm512_add_ps(_mm512_mul_ps(ca[j], gv), _mm512_mul_ps(cc[j], t));
      v = _mm512_add_ps(v, cd[j]);
      store16<DXBF16>(a.dx, i, gr.in[j], _mm512_maskz_mov_ps(gr.real[j], v));
    }
}

template <bool BF16, bool MASK, bool DXBF16>
void grad_affine_ng(const lane_rows& g, const lane_grad_args& a) {
  switch ((g.width + 15) / 16) {
    case 1: return grad_affine<BF16, MASK, DXBF16, 1>(g, a);
    case 2: return grad_affine<BF16, MASK, DXBF16, 2>(g, a);
    case 3: return grad_affine<BF16, MASK, DXBF16, 3>(g, a);
    default: return grad_affine<BF16, MASK, DXBF16, 4>(g, a);
  }
}

}  // namespace

void lane_moments__avx512(const lane_rows& g, const void* x, const double* shift, double* sum, double* sumsq) {
  if (g.bf16)
    return sumsq ? moments_ng<true, true>(g, x, shift, sum, sumsq) : moments_ng<true, false>(g, x, shift, sum, sumsq);
  return sumsq ? moments_ng<false, true>(g, x, shift, sum, sumsq) : moments_ng<false, false>(g, x, shift, sum, sumsq);
}

void lane_affine__avx512(const lane_rows& g, const lane_affine_args& a) {
  const int f = (g.bf16 ? 4 : 0) | (a.r ? 2 : 0) | (a.relu ? 1 : 0);
  switch (f) {
    case 0: return affine_ng<false, false, false>(g, a);
    case 1: return affine_ng<false, false, true>(g, a);
    case 2: return affine_ng<false, true, false>(g, a);
    case 3: return affine_ng<false, true, true>(g, a);
    case 4: return affine_ng<true, false, false>(g, a);
    case 5: return affine_ng<true, false, true>(g, a);
    case 6: return affine_ng<true, true, false>(g, a);
    default: return affine_ng<true, true, true>(g, a);
  }
}

void lane_grad_moments__avx512(const lane_rows& g, const lane_grad_args& a) {
  const int f = (g.bf16 ? 4 : 0) | (a.y ? 2 : 0) | (a.g_out ? 1 : 0);
  switch (f) {
    case 0: return grad_moments_ng<false, false, false>(g, a);
    case 1: return grad_moments_ng<false, false, true>(g, a);
    case 2: return grad_moments_ng<false, true, false>(g, a);
    case 3: return grad_moments_ng<false, true, true>(g, a);
    case 4: return grad_moments_ng<true, false, false>(g, a);
    case 5: return grad_moments_ng<true, false, true>(g, a);
    case 6: return grad_moments_ng<true, true, false>(g, a);
    default: return grad_moments_ng<true, true, true>(g, a);
  }
}

void lane_grad_affine__avx512(const lane_rows& g, const lane_grad_args& a) {
  const int f = (g.bf16 ? 4 : 0) | (a.y ? 2 : 0) | (a.dx_bf16 ? 1 : 0);
  switch (f) {
    case 0: return grad_affine_ng<false, false, false>(g, a);
    case 1: return grad_affine_ng<false, false, true>(g, a);
    case 2: return grad_affine_ng<false, true, false>(g, a);
    case 3: return grad_affine_ng<false, true, true>(g, a);
    case 4: return grad_affine_ng<true, false, false>(g, a);
    case 5: return grad_affine_ng<true, false, true>(g, a);
    case 6: return grad_affine_ng<true, true, false>(g, a);
    default: return grad_affine_ng<true, true, true>(g, a);
  }
}

}  // namespace brgemm::kernels
