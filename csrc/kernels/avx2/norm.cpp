// The per-lane kernels of brgemm/norm.h with AVX2: lanes in groups of 8 (one ymm of f32, two of
// double for the sums); the lanes past the last whole group (widths that are not a multiple of
// 8) go through the scalar twin, which gives the same bits. Rows are walked in memory order,
// each lane accumulated over the rows in order.
#include <algorithm>
#include "../norm_kernels.h"
#include "../norm_twin.h"
#include "activation.h"  // bf16_rne, narrow16

namespace brgemm::kernels {

namespace {

template <bool BF16>
inline __m256 load8(const void* p, int64_t i) {
  if constexpr (BF16) {
    const __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)((const uint16_t*)p + i)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(h, 16));
  } else {
    return _mm256_loadu_ps((const float*)p + i);
  }
}

template <bool BF16>
inline void store8(void* p, int64_t i, __m256 v) {
  if constexpr (BF16)
    _mm_storeu_si128((__m128i*)((uint16_t*)p + i), narrow16(bf16_rne(v)));
  else
    _mm256_storeu_ps((float*)p + i, v);
}

inline __m256d lo_pd(__m256 v) { return _mm256_cvtps_pd(_mm256_castps256_ps128(v)); }
inline __m256d hi_pd(__m256 v) { return _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)); }

// All-ones in the real lanes of group j (8 lanes from 8·j), zeros in the padding ones.
inline __m256 real_mask(const lane_rows& g, int64_t j) {
  alignas(32) int32_t m[8];
  for (int l = 0; l < 8; ++l) m[l] = 8 * j + l < g.lanes ? -1 : 0;
  return _mm256_castsi256_ps(_mm256_load_si256((const __m256i*)m));
}

// Rows in memory order, every 8-lane group of a row before the next row (a group-by-group walk
// over wide rows measured 4-9x slower once the data left L2); NG whole groups (0-8, a template
// argument) whose sums the compiler keeps in registers as far as they go (16 ymm: up to 3
// groups; the rest live in L1). Lanes past the whole groups go through the twin afterwards.
template <bool BF16, bool SQ, int NG>
void moments(const lane_rows& g, const void* x, const double* shift, double* sum, double* sumsq) {
  const int64_t rows = g.rows, width = g.width;  // (locals: the stores could alias g)
  __m256d c[2 * NG + 1], s[2 * NG + 1], q[2 * NG + 1];  // (+1: no zero-length arrays)
  #pragma GCC unroll 16
  for (int k = 0; k < 2 * NG; ++k) {
    c[k] = _mm256_loadu_pd(shift + 4 * k);
    s[k] = _mm256_loadu_pd(sum + 4 * k);
    q[k] = SQ ? _mm256_loadu_pd(sumsq + 4 * k) : _mm256_setzero_pd();
  }
  if (NG > 0)
    for (int64_t r = 0; r < rows; ++r)
      #pragma GCC unroll 16
      for (int j = 0; j < NG; ++j) {
        const __m256 v = load8<BF16>(x, r * width + 8 * j);
        const __m256d d0 = _mm256_sub_pd(lo_pd(v), c[2 * j]), d1 = _mm256_sub_pd(hi_pd(v), c[2 * j + 1]);
        s[2 * j] = _mm256_add_pd(s[2 * j], d0);
        s[2 * j + 1] = _mm256_add_pd(s[2 * j + 1], d1);
        if constexpr (SQ) {
          q[2 * j] = _mm256_fmadd_pd(d0, d0, q[2 * j]);
          q[2 * j + 1] = _mm256_fmadd_pd(d1, d1, q[2 * j + 1]);
        }
      }
  #pragma GCC unroll 16
  for (int k = 0; k < 2 * NG; ++k) {
    _mm256_storeu_pd(sum + 4 * k, s[k]);
    if constexpr (SQ) _mm256_storeu_pd(sumsq + 4 * k, q[k]);
  }
  for (int64_t l = 8 * NG; l < g.width; ++l) brgemm_lane_moments_twin(g, x, l, 0, g.rows, shift, sum, sumsq);
}

// The whole-group count of a width ≤ 64 as a template argument.
template <template <int> class F, class... A>
void by_groups(const lane_rows& g, A&&... args) {
  switch (g.width / 8) {
    case 0: return F<0>::run(g, args...);
    case 1: return F<1>::run(g, args...);
    case 2: return F<2>::run(g, args...);
    case 3: return F<3>::run(g, args...);
    case 4: return F<4>::run(g, args...);
    case 5: return F<5>::run(g, args...);
    case 6: return F<6>::run(g, args...);
    case 7: return F<7>::run(g, args...);
    default: return F<8>::run(g, args...);
  }
}

template <bool BF16, bool SQ>
struct moments_of {
  template <int NG>
  struct at {
    static void run(const lane_rows& g, const void* x, const double* shift, double* sum, double* sumsq) {
      moments<BF16, SQ, NG>(g, x, shift, sum, sumsq);
    }
  };
};

template <bool BF16, bool RES, bool RELU>
void affine(const lane_rows& g, const lane_affine_args& a) {
  const int64_t rows = g.rows, width = g.width;  // (locals: the stores could alias g)
  const int64_t groups = g.width / 8;
  __m256 keep[8];
  for (int64_t j = 0; j < groups; ++j) keep[j] = real_mask(g, j);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < groups; ++j) {
      const int64_t l0 = 8 * j, i = r * width + l0;
      __m256 v = _mm256_mul_ps(_mm256_sub_ps(load8<BF16>(a.x, i), _mm256_loadu_ps(a.mean + l0)),
                               _mm256_loadu_ps(a.scale + l0));
      v = _mm256_add_ps(v, _mm256_loadu_ps(a.shift + l0));
      if constexpr (RES) v = _mm256_add_ps(v, load8<BF16>(a.r, i));
      if constexpr (RELU) v = _mm256_max_ps(_mm256_setzero_ps(), v);  // NaN stays: the 2nd operand
      store8<BF16>(a.y, i, _mm256_and_ps(v, keep[j]));
    }
    for (int64_t l = 8 * groups; l < g.width; ++l) {
      const int64_t i = r * width + l;
      float rv = 0.0f;
      if (RES) rv = brgemm_lane_get(a.r, i, BF16);
      brgemm_lane_put(a.y, i, BF16,
                      l >= g.lanes ? 0.0f
                                   : brgemm_lane_affine_twin(brgemm_lane_get(a.x, i, BF16), a.mean[l], a.scale[l],
                                                             a.shift[l], RES ? &rv : nullptr, RELU));
    }
  }
}

template <bool BF16, bool MASK>
inline __m256 grad8(const void* dy, const void* y, int64_t i) {
  const __m256 d = load8<BF16>(dy, i);
  if constexpr (!MASK) return d;
  return _mm256_and_ps(_mm256_cmp_ps(load8<BF16>(y, i), _mm256_setzero_ps(), _CMP_GT_OQ), d);
}

// Rows in memory order as moments does; per group two sums and two dots.
template <bool BF16, bool MASK, bool GOUT, int NG>
void grad_moments(const lane_rows& g, const lane_grad_args& a) {
  const int64_t rows = g.rows, width = g.width;  // (locals: the stores could alias g)
  __m256d m[2 * NG + 1], s[2 * NG + 1], t[2 * NG + 1];
  __m256 keep[NG + 1];
  #pragma GCC unroll 16
  for (int k = 0; k < 2 * NG; ++k) {
    m[k] = _mm256_loadu_pd(a.mean_d + 4 * k);
    s[k] = _mm256_loadu_pd(a.sum + 4 * k);
    t[k] = _mm256_loadu_pd(a.dot + 4 * k);
  }
  #pragma GCC unroll 16
  for (int j = 0; j < NG; ++j) keep[j] = real_mask(g, j);
  if (NG > 0)
    for (int64_t r = 0; r < rows; ++r)
      #pragma GCC unroll 16
      for (int j = 0; j < NG; ++j) {
        const int64_t i = r * width + 8 * j;
        const __m256 gv = grad8<BF16, MASK>(a.dy, a.y, i);
        if constexpr (GOUT) {  // dy's bits or +0 (bf16: the upper halves, not rounded)
          const __m256 v = _mm256_and_ps(gv, keep[j]);
          if constexpr (BF16)
            _mm_storeu_si128((__m128i*)((uint16_t*)a.g_out + i),
                             narrow16(_mm256_srli_epi32(_mm256_castps_si256(v), 16)));
          else
            _mm256_storeu_ps((float*)a.g_out + i, v);
        }
        const __m256 xv = load8<BF16>(a.x, i);
        const __m256d g0 = lo_pd(gv), g1 = hi_pd(gv);
        s[2 * j] = _mm256_add_pd(s[2 * j], g0);
        s[2 * j + 1] = _mm256_add_pd(s[2 * j + 1], g1);
        t[2 * j] = _mm256_fmadd_pd(g0, _mm256_sub_pd(lo_pd(xv), m[2 * j]), t[2 * j]);
        t[2 * j + 1] = _mm256_fmadd_pd(g1, _mm256_sub_pd(hi_pd(xv), m[2 * j + 1]), t[2 * j + 1]);
      }
  #pragma GCC unroll 16
  for (int k = 0; k < 2 * NG; ++k) {
    _mm256_storeu_pd(a.sum + 4 * k, s[k]);
    _mm256_storeu_pd(a.dot + 4 * k, t[k]);
  }
  for (int64_t l = 8 * NG; l < g.width; ++l) brgemm_lane_grad_moments_twin(g, a, l, 0, g.rows);
}

template <bool BF16, bool MASK, bool GOUT>
struct grad_moments_of {
  template <int NG>
  struct at {
    static void run(const lane_rows& g, const lane_grad_args& a) { grad_moments<BF16, MASK, GOUT, NG>(g, a); }
  };
};

template <bool BF16, bool MASK, bool DXBF16>
void grad_affine(const lane_rows& g, const lane_grad_args& a) {
  const int64_t rows = g.rows, width = g.width;  // (locals: the stores could alias g)
  const int64_t groups = g.width / 8;
  __m256 keep[8];
  for (int64_t j = 0; j < groups; ++j) keep[j] = real_mask(g, j);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < groups; ++j) {
      const int64_t l0 = 8 * j, i = r * width + l0;
      const __m256 gv = grad8<BF16, MASK>(a.dy, a.y, i);
      const __m256 t = _mm256_sub_ps(load8<BF16>(a.x, i), _mm256_loadu_ps(a.mean + l0));
      __m256 v = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(a.a + l0), gv),
                               _mm256_mul_ps(_mm256_loadu_ps(a.c + l0), t));
      v = _mm256_add_ps(v, _mm256_loadu_ps(a.d + l0));
      store8<DXBF16>(a.dx, i, _mm256_and_ps(v, keep[j]));
    }
    for (int64_t l = 8 * groups; l < g.width; ++l) {
      const int64_t i = r * width + l;
      if (l >= g.lanes) {
        brgemm_lane_put(a.dx, i, DXBF16, 0.0f);
        continue;
      }
      float yv = 0.0f;
      if (MASK) yv = brgemm_lane_get(a.y, i, BF16);
      const float gv = brgemm_lane_grad_twin(brgemm_lane_get(a.dy, i, BF16), MASK ? &yv : nullptr);
      brgemm_lane_put(a.dx, i, DXBF16,
                      brgemm_lane_grad_affine_twin(gv, brgemm_lane_get(a.x, i, BF16), a.mean[l], a.a[l], a.c[l],
                                                   a.d[l]));
    }
  }
}

}  // namespace

void lane_moments__avx2(const lane_rows& g, const void* x, const double* shift, double* sum, double* sumsq) {
  if (g.bf16)
    return sumsq ? by_groups<moments_of<true, true>::at>(g, x, shift, sum, sumsq)
                 : by_groups<moments_of<true, false>::at>(g, x, shift, sum, sumsq);
  return sumsq ? by_groups<moments_of<false, true>::at>(g, x, shift, sum, sumsq)
               : by_groups<moments_of<false, false>::at>(g, x, shift, sum, sumsq);
}

void lane_affine__avx2(const lane_rows& g, const lane_affine_args& a) {
  const int f = (g.bf16 ? 4 : 0) | (a.r ? 2 : 0) | (a.relu ? 1 : 0);
  switch (f) {
    case 0: return affine<false, false, false>(g, a);
    case 1: return affine<false, false, true>(g, a);
    case 2: return affine<false, true, false>(g, a);
    case 3: return affine<false, true, true>(g, a);
    case 4: return affine<true, false, false>(g, a);
    case 5: return affine<true, false, true>(g, a);
    case 6: return affine<true, true, false>(g, a);
    default: return affine<true, true, true>(g, a);
  }
}

void lane_grad_moments__avx2(const lane_rows& g, const lane_grad_args& a) {
  const int f = (g.bf16 ? 4 : 0) | (a.y ? 2 : 0) | (a.g_out ? 1 : 0);
  switch (f) {
    case 0: return by_groups<grad_moments_of<false, false, false>::at>(g, a);
    case 1: return by_groups<grad_moments_of<false, false, true>::at>(g, a);
    case 2: return by_groups<grad_moments_of<false, true, false>::at>(g, a);
    case 3: return by_groups<grad_moments_of<false, true, true>::at>(g, a);
    case 4: return by_groups<grad_moments_of<true, false, false>::at>(g, a);
    case 5: return by_groups<grad_moments_of<true, false, true>::at>(g, a);
    case 6: return by_groups<grad_moments_of<true, true, false>::at>(g, a);
    default: return by_groups<grad_moments_of<true, true, true>::at>(g, a);
  }
}

void lane_grad_affine__avx2(const lane_rows& g, const lane_grad_args& a) {
  const int f = (g.bf16 ? 4 : 0) | (a.y ? 2 : 0) | (a.dx_bf16 ? 1 : 0);
  switch (f) {
    case 0: return grad_affine<false, false, false>(g, a);
    case 1: return grad_affine<false, false, true>(g, a);
    case 2: return grad_affine<false, true, false>(g, a);
    case 3: return grad_affine<false, true, true>(g, a);
    case 4: return grad_affine<true, false, false>(g, a);
    case 5: return grad_affine<true, false, true>(g, a);
    case 6: return grad_affine<true, true, false>(g, a);
    default: return grad_affine<true, true, true>(g, a);
  }
}

}  // namespace brgemm::kernels
