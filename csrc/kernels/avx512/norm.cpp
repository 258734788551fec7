// The per-lane kernels of brgemm/norm.h with AVX-512: lanes in groups of 16 (one zmm of f32, two
// of double for the sums), the last group of a width that is not a multiple of 16 masked. The
// sums of a group stay in registers over a block of rows (the block fits L1, so the other groups
// of a wide row find it there), each lane accumulated over the rows in order as the twin does.
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

// Rows per block: 16 KB of f32 values.
inline int64_t block_rows(int64_t width) { return std::max<int64_t>(1, 4096 / width); }

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

template <bool BF16, bool SQ>
void moments(const lane_rows& g, const void* x, const double* shift, double* sum, double* sumsq) {
  const lane_groups gr(g);
  const int64_t rb = gr.n == 1 ? g.rows : block_rows(g.width);
  for (int64_t r0 = 0; r0 < g.rows; r0 += rb) {
    const int64_t r1 = std::min(g.rows, r0 + rb);
    for (int j = 0; j < gr.n; ++j) {
      const int64_t l0 = 16 * j;
      const __mmask16 k = gr.in[j];
      const __mmask8 k0 = (__mmask8)k, k1 = (__mmask8)(k >> 8);
      const __m512d c0 = _mm512_maskz_loadu_pd(k0, shift + l0), c1 = _mm512_maskz_loadu_pd(k1, shift + l0 + 8);
      __m512d s0 = _mm512_maskz_loadu_pd(k0, sum + l0), s1 = _mm512_maskz_loadu_pd(k1, sum + l0 + 8);
      __m512d q0 = _mm512_setzero_pd(), q1 = _mm512_setzero_pd();
      if constexpr (SQ) q0 = _mm512_maskz_loadu_pd(k0, sumsq + l0), q1 = _mm512_maskz_loadu_pd(k1, sumsq + l0 + 8);
      const char* p = (const char*)x + l0 * (BF16 ? 2 : 4);
      for (int64_t r = r0; r < r1; ++r) {
        const __m512 v = load16<BF16>(p, r * g.width, k);
        const __m512d d0 = _mm512_sub_pd(lo_pd(v), c0), d1 = _mm512_sub_pd(hi_pd(v), c1);
        s0 = _mm512_add_pd(s0, d0);
        s1 = _mm512_add_pd(s1, d1);
        if constexpr (SQ) {
          q0 = _mm512_fmadd_pd(d0, d0, q0);
          q1 = _mm512_fmadd_pd(d1, d1, q1);
        }
      }
      _mm512_mask_storeu_pd(sum + l0, k0, s0);
      _mm512_mask_storeu_pd(sum + l0 + 8, k1, s1);
      if constexpr (SQ) {
        _mm512_mask_storeu_pd(sumsq + l0, k0, q0);
        _mm512_mask_storeu_pd(sumsq + l0 + 8, k1, q1);
      }
    }
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

template <bool BF16, bool MASK, bool GOUT>
void grad_moments(const lane_rows& g, const lane_grad_args& a) {
  const lane_groups gr(g);
  const int64_t rb = gr.n == 1 ? g.rows : block_rows(g.width);
  for (int64_t r0 = 0; r0 < g.rows; r0 += rb) {
    const int64_t r1 = std::min(g.rows, r0 + rb);
    for (int j = 0; j < gr.n; ++j) {
      const int64_t l0 = 16 * j;
      const __mmask16 k = gr.in[j];
      const __mmask8 k0 = (__mmask8)k, k1 = (__mmask8)(k >> 8);
      const __m512d m0 = _mm512_maskz_loadu_pd(k0, a.mean_d + l0), m1 = _mm512_maskz_loadu_pd(k1, a.mean_d + l0 + 8);
      __m512d s0 = _mm512_maskz_loadu_pd(k0, a.sum + l0), s1 = _mm512_maskz_loadu_pd(k1, a.sum + l0 + 8);
      __m512d t0 = _mm512_maskz_loadu_pd(k0, a.dot + l0), t1 = _mm512_maskz_loadu_pd(k1, a.dot + l0 + 8);
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t i = r * g.width + l0;
        const __m512 gv = grad16<BF16, MASK>(a.dy, a.y, i, k);
        if constexpr (GOUT) store16<BF16>(a.g_out, i, k, _mm512_maskz_mov_ps(gr.real[j], gv));
        const __m512 xv = load16<BF16>(a.x, i, k);
        const __m512d g0 = lo_pd(gv), g1 = hi_pd(gv);
        s0 = _mm512_add_pd(s0, g0);
        s1 = _mm512_add_pd(s1, g1);
        t0 = _mm512_fmadd_pd(g0, _mm512_sub_pd(lo_pd(xv), m0), t0);
        t1 = _mm512_fmadd_pd(g1, _mm512_sub_pd(hi_pd(xv), m1), t1);
      }
      _mm512_mask_storeu_pd(a.sum + l0, k0, s0);
      _mm512_mask_storeu_pd(a.sum + l0 + 8, k1, s1);
      _mm512_mask_storeu_pd(a.dot + l0, k0, t0);
      _mm512_mask_storeu_pd(a.dot + l0 + 8, k1, t1);
    }
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
    return sumsq ? moments<true, true>(g, x, shift, sum, sumsq) : moments<true, false>(g, x, shift, sum, sumsq);
  return sumsq ? moments<false, true>(g, x, shift, sum, sumsq) : moments<false, false>(g, x, shift, sum, sumsq);
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
    case 0: return grad_moments<false, false, false>(g, a);
    case 1: return grad_moments<false, false, true>(g, a);
    case 2: return grad_moments<false, true, false>(g, a);
    case 3: return grad_moments<false, true, true>(g, a);
    case 4: return grad_moments<true, false, false>(g, a);
    case 5: return grad_moments<true, false, true>(g, a);
    case 6: return grad_moments<true, true, false>(g, a);
    default: return grad_moments<true, true, true>(g, a);
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
