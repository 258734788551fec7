// The per-lane kernels of brgemm/norm.h with AVX-512: lanes in groups of 16 (one zmm of f32; the
// sums in double, two zmm per group, fed by 8-lane loads), the last group of a width that is not
// a multiple of 16 masked. Rows are walked in memory order with every group's sums and
// coefficients in registers (the group count, 1-4, is a template argument), each lane
// accumulated over the rows in order as the twin.
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

// 8 lanes as f32 (masked load) and as double: the sums work on halves of a group loaded as
// such (an extract per 16 lanes cost 15 % of the moments' throughput).
template <bool BF16>
inline __m256 load8(const void* p, int64_t i, __mmask8 k) {
  if constexpr (BF16) {
    const __m256i h = _mm256_cvtepu16_epi32(_mm_maskz_loadu_epi16(k, (const uint16_t*)p + i));
    return _mm256_castsi256_ps(_mm256_slli_epi32(h, 16));
  } else {
    return _mm256_maskz_loadu_ps(k, (const float*)p + i);
  }
}
template <bool BF16>
inline __m512d load8d(const void* p, int64_t i, __mmask8 k) {
  if constexpr (BF16) return _mm512_cvtps_pd(load8<true>(p, i, k));
  return _mm512_cvtps_pd(_mm256_maskz_loadu_ps(k, (const float*)p + i));
}

// Rows in order, every group of a row before the next row (the memory is read as it lies: a
// group-by-group walk over wide rows measured 4-9x slower once the data left L2), the groups'
// sums in registers: 2·NG halves of 8 lanes (NG ≤ 4: at most 16 accumulators and 8 shifts).
// The loops over halves are unrolled before gcc splits the arrays into registers (#pragma GCC
// unroll): unrolled later, it kept a copy of every accumulator on the stack, stored each row.
template <bool BF16, bool SQ, int NG>
void moments(const lane_rows& g, const void* x, const double* shift, double* sum, double* sumsq) {
  const lane_groups gr(g);
  const int64_t rows = g.rows, width = g.width;
  __mmask8 in[2 * NG];
  __m512d c[2 * NG], s[2 * NG], q[2 * NG];
#pragma GCC unroll 8
  for (int k = 0; k < 2 * NG; ++k) {
    in[k] = (__mmask8)(gr.in[k / 2] >> (8 * (k % 2)));
    c[k] = _mm512_maskz_loadu_pd(in[k], shift + 8 * k);
    s[k] = _mm512_maskz_loadu_pd(in[k], sum + 8 * k);
    q[k] = SQ ? _mm512_maskz_loadu_pd(in[k], sumsq + 8 * k) : _mm512_setzero_pd();
  }
  for (int64_t r = 0; r < rows; ++r)
#pragma GCC unroll 8
    for (int k = 0; k < 2 * NG; ++k) {
      const __m512d d = _mm512_sub_pd(load8d<BF16>(x, r * width + 8 * k, in[k]), c[k]);
      s[k] = _mm512_add_pd(s[k], d);
      if constexpr (SQ) q[k] = _mm512_fmadd_pd(d, d, q[k]);
    }
#pragma GCC unroll 8
  for (int k = 0; k < 2 * NG; ++k) {
    _mm512_mask_storeu_pd(sum + 8 * k, in[k], s[k]);
    if constexpr (SQ) _mm512_mask_storeu_pd(sumsq + 8 * k, in[k], q[k]);
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
  const int64_t rows = g.rows, width = g.width;  // locals: the stores to y could alias g and a
  const void *x = a.x, *res = a.r;
  void* y = a.y;
  __m512 m[NG], s[NG], b[NG];
#pragma GCC unroll 4
  for (int j = 0; j < NG; ++j) {
    m[j] = _mm512_maskz_loadu_ps(gr.in[j], a.mean + 16 * j);
    s[j] = _mm512_maskz_loadu_ps(gr.in[j], a.scale + 16 * j);
    b[j] = _mm512_maskz_loadu_ps(gr.in[j], a.shift + 16 * j);
  }
  for (int64_t r = 0; r < rows; ++r)
#pragma GCC unroll 4
    for (int j = 0; j < NG; ++j) {
      const int64_t i = r * width + 16 * j;
      __m512 v = _mm512_mul_ps(_mm512_sub_ps(load16<BF16>(x, i, gr.in[j]), m[j]), s[j]);
      v = _mm512_add_ps(v, b[j]);
      if constexpr (RES) v = _mm512_add_ps(v, load16<BF16>(res, i, gr.in[j]));
      if constexpr (RELU) v = _mm512_max_ps(_mm512_setzero_ps(), v);  // NaN stays: the 2nd operand
      store16<BF16>(y, i, gr.in[j], _mm512_maskz_mov_ps(gr.real[j], v));
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

// Rows in order as moments does, in halves of 8 lanes: two sums and two dots per group.
template <bool BF16, bool MASK, bool GOUT, int NG>
void grad_moments(const lane_rows& g, const lane_grad_args& a) {
  const lane_groups gr(g);
  const int64_t rows = g.rows, width = g.width;  // locals: the stores to g_out could alias g and a
  const void *dy = a.dy, *y = a.y, *x = a.x;
  void* g_out = a.g_out;
  __mmask8 in[2 * NG], real[2 * NG];
  __m512d m[2 * NG], s[2 * NG], t[2 * NG];
#pragma GCC unroll 8
  for (int k = 0; k < 2 * NG; ++k) {
    in[k] = (__mmask8)(gr.in[k / 2] >> (8 * (k % 2)));
    real[k] = (__mmask8)(gr.real[k / 2] >> (8 * (k % 2)));
    m[k] = _mm512_maskz_loadu_pd(in[k], a.mean_d + 8 * k);
    s[k] = _mm512_maskz_loadu_pd(in[k], a.sum + 8 * k);
    t[k] = _mm512_maskz_loadu_pd(in[k], a.dot + 8 * k);
  }
  for (int64_t r = 0; r < rows; ++r)
#pragma GCC unroll 8
    for (int k = 0; k < 2 * NG; ++k) {
      const int64_t i = r * width + 8 * k;
      __m128i dy16 = _mm_setzero_si128();  // bf16: dy's bits, which g_out gets as they are
      __m256 gv;
      if constexpr (BF16) {
        dy16 = _mm_maskz_loadu_epi16(in[k], (const uint16_t*)dy + i);
        gv = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(dy16), 16));
      } else {
        gv = _mm256_maskz_loadu_ps(in[k], (const float*)dy + i);
      }
      const __mmask8 pass = MASK ? _mm256_cmp_ps_mask(load8<BF16>(y, i, in[k]), _mm256_setzero_ps(), _CMP_GT_OQ)
                                 : (__mmask8)0xFF;
      if constexpr (MASK) gv = _mm256_maskz_mov_ps(pass, gv);
      if constexpr (GOUT && BF16)
        _mm_mask_storeu_epi16((uint16_t*)g_out + i, in[k], _mm_maskz_mov_epi16(pass & real[k], dy16));
      else if constexpr (GOUT)
        _mm256_mask_storeu_ps((float*)g_out + i, in[k], _mm256_maskz_mov_ps(real[k], gv));
      const __m512d gd = _mm512_cvtps_pd(gv);
      s[k] = _mm512_add_pd(s[k], gd);
      t[k] = _mm512_fmadd_pd(gd, _mm512_sub_pd(load8d<BF16>(x, i, in[k]), m[k]), t[k]);
    }
#pragma GCC unroll 8
  for (int k = 0; k < 2 * NG; ++k) {
    _mm512_mask_storeu_pd(a.sum + 8 * k, in[k], s[k]);
    _mm512_mask_storeu_pd(a.dot + 8 * k, in[k], t[k]);
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
  const int64_t rows = g.rows, width = g.width;  // locals: the stores to dx could alias g and a
  const void *dy = a.dy, *y = a.y, *x = a.x;
  void* dx = a.dx;
  __m512 m[NG], ca[NG], cc[NG], cd[NG];
#pragma GCC unroll 4
  for (int j = 0; j < NG; ++j) {
    m[j] = _mm512_maskz_loadu_ps(gr.in[j], a.mean + 16 * j);
    ca[j] = _mm512_maskz_loadu_ps(gr.in[j], a.a + 16 * j);
    cc[j] = _mm512_maskz_loadu_ps(gr.in[j], a.c + 16 * j);
    cd[j] = _mm512_maskz_loadu_ps(gr.in[j], a.d + 16 * j);
  }
  for (int64_t r = 0; r < rows; ++r)
#pragma GCC unroll 4
    for (int j = 0; j < NG; ++j) {
      const int64_t i = r * width + 16 * j;
      const __m512 gv = grad16<BF16, MASK>(dy, y, i, gr.in[j]);
      const __m512 t = _mm512_sub_ps(load16<BF16>(x, i, gr.in[j]), m[j]);
      __m512 v = _mm512_add_ps(_mm512_mul_ps(ca[j], gv), _mm512_mul_ps(cc[j], t));
      v = _mm512_add_ps(v, cd[j]);
      store16<DXBF16>(dx, i, gr.in[j], _mm512_maskz_mov_ps(gr.real[j], v));
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
