// The reductions of brgemm/window.h with AVX2: 8 lanes of a vector a step (a shorter last step
// through masked loads and stores, or a small copy for bf16), the same compare-and-select and
// the same order of sums as the scalar twin.
#include <immintrin.h>
#include <cmath>
#include <cstring>
#include "../ukernels.h"
#include "../window_twin.h"
#include "activation.h"

namespace brgemm::kernels {

namespace {

// Lanes 0..n−1 of 8 (all bits set), for maskload/maskstore and blends.
inline __m256i lanes(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n >= 8 ? 8 : (int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// n ≤ 8 values as f32 (bf16 widened exactly); lanes past n are 0 and touch no memory.
inline __m256 load8(const float* p, int64_t n, __m256i k) {
  return n >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, k);
}
inline __m256 load8(const uint16_t* p, int64_t n, __m256i) {
  __m128i h;
  if (n >= 8) {
    h = _mm_loadu_si128((const __m128i*)p);
  } else {
    uint16_t b[8] = {};
    std::memcpy(b, p, (size_t)n * 2);
    h = _mm_loadu_si128((const __m128i*)b);
  }
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
inline void store8(float* p, int64_t n, __m256i k, __m256 v) {
  if (n >= 8) _mm256_storeu_ps(p, v);
  else _mm256_maskstore_ps(p, k, v);
}
// bf16 lanes: the low halves of `bits` (32-bit lanes holding values that fit 16 bits).
inline void store8_bits(uint16_t* p, int64_t n, __m256i bits) {
  const __m128i h = narrow16(bits);
  if (n >= 8) {
    _mm_storeu_si128((__m128i*)p, h);
  } else {
    uint16_t b[8];
    _mm_storeu_si128((__m128i*)b, h);
    std::memcpy(p, b, (size_t)n * 2);
  }
}
inline void store8(uint16_t* p, int64_t n, __m256i, __m256 v) {  // values that are bf16 already
  store8_bits(p, n, _mm256_srli_epi32(_mm256_castps_si256(v), 16));
}

// v if it is greater than m or NaN, else m (brgemm_max_takes): vmaxps(v, m) gives m when either
// is NaN and on ties, then a NaN v is put back.
inline __m256 max_step(__m256 v, __m256 m) {
  return _mm256_blendv_ps(_mm256_max_ps(v, m), v, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
}

template <class T>
void window_max(const window_rows& g, const T* x, T* y) {
  const __m256 ninf = _mm256_set1_ps(-INFINITY);
  for (int64_t o = 0; o < g.out_width; ++o) {
    int64_t c0, c1;
    brgemm_window_columns(g, o, &c0, &c1);
    for (int64_t j = 0; j < g.len; j += 8) {
      const int64_t n = g.len - j;
      const __m256i k = lanes(n);
      __m256 m = ninf;
      for (int64_t r = 0; r < g.rows; ++r) {
        const T* row = x + r * g.ld + j;
        for (int64_t c = c0; c < c1; ++c) m = max_step(load8(row + c * g.len, n, k), m);
      }
      store8(y + o * g.len + j, n, k, m);
    }
  }
}

template <class T>
void window_max_backward(const window_rows& g, const T* x, const float* gy, float* gx) {
  const __m256 ninf = _mm256_set1_ps(-INFINITY);
  for (int64_t o = 0; o < g.out_width; ++o) {
    int64_t c0, c1;
    brgemm_window_columns(g, o, &c0, &c1);
    if (c0 >= c1 || g.rows <= 0) continue;
    for (int64_t j = 0; j < g.len; j += 8) {
      const int64_t n = g.len - j;
      const __m256i k = lanes(n);
      __m256 m = ninf;
      __m256i at = _mm256_setzero_si256();  // the window position, counted row by row
      int32_t t = 0;
      for (int64_t r = 0; r < g.rows; ++r)
        for (int64_t c = c0; c < c1; ++c, ++t) {
          const __m256 v = load8(x + r * g.ld + c * g.len + j, n, k);
          const __m256 take = _mm256_or_ps(_mm256_cmp_ps(v, m, _CMP_GT_OQ), _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
          m = _mm256_blendv_ps(m, v, take);
          at = _mm256_castps_si256(
              _mm256_blendv_ps(_mm256_castsi256_ps(at), _mm256_castsi256_ps(_mm256_set1_epi32(t)), take));
        }
      const __m256 d = load8(gy + o * g.len + j, n, k);
      t = 0;
      for (int64_t r = 0; r < g.rows; ++r)
        for (int64_t c = c0; c < c1; ++c, ++t) {
          const __m256i hit = _mm256_and_si256(k, _mm256_cmpeq_epi32(at, _mm256_set1_epi32(t)));
          if (_mm256_testz_si256(hit, hit)) continue;
          float* p = gx + r * g.ld + c * g.len + j;
          const __m256 before = load8(p, n, k);
          store8(p, n, k, _mm256_blendv_ps(before, _mm256_add_ps(before, d), _mm256_castsi256_ps(hit)));
        }
    }
  }
}

// Σ_i x[i·len + j0 + ·] over NV vectors of 8 lanes (the last one n lanes), then / count.
template <int NV, class T>
void mean_step(const T* x, int64_t count, int64_t len, int64_t j0, int64_t n, T* y) {
  const __m256i k = lanes(n);
  __m256 s[NV];
  for (int u = 0; u < NV; ++u) s[u] = _mm256_setzero_ps();
  for (int64_t i = 0; i < count; ++i)
    for (int u = 0; u < NV; ++u) s[u] = _mm256_add_ps(s[u], load8(x + i * len + j0 + 8 * u, u + 1 < NV ? 8 : n, k));
  const __m256 d = _mm256_set1_ps((float)count);
  for (int u = 0; u < NV; ++u) {
    const __m256 v = _mm256_div_ps(s[u], d);
    const int64_t nu = u + 1 < NV ? 8 : n;
    if constexpr (sizeof(T) == 2) store8_bits(y + j0 + 8 * u, nu, bf16_rne(v));
    else store8(y + j0 + 8 * u, nu, k, v);
  }
}

template <class T>
void vector_mean(const T* x, int64_t count, int64_t len, int64_t out_len, T* y) {
  for (int64_t j0 = 0; j0 < out_len; j0 += 32) {  // up to four vectors of sums at once
    const int64_t n = out_len - j0 < 32 ? out_len - j0 : 32;
    const int64_t last = n - (n - 1) / 8 * 8;
    switch ((n + 7) / 8) {
      case 1: mean_step<1>(x, count, len, j0, last, y); break;
      case 2: mean_step<2>(x, count, len, j0, last, y); break;
      case 3: mean_step<3>(x, count, len, j0, last, y); break;
      default: mean_step<4>(x, count, len, j0, last, y); break;
    }
  }
}

}  // namespace

void window_max_f32__avx2(const window_rows& g, const float* x, float* y) { window_max(g, x, y); }
void window_max_bf16__avx2(const window_rows& g, const uint16_t* x, uint16_t* y) { window_max(g, x, y); }
void window_max_backward_f32__avx2(const window_rows& g, const float* x, const float* gy, float* gx) {
  window_max_backward(g, x, gy, gx);
}
void window_max_backward_bf16__avx2(const window_rows& g, const uint16_t* x, const float* gy, float* gx) {
  window_max_backward(g, x, gy, gx);
}
void vector_mean_f32__avx2(const float* x, int64_t count, int64_t len, int64_t out_len, float* y) {
  vector_mean(x, count, len, out_len, y);
}
void vector_mean_bf16__avx2(const uint16_t* x, int64_t count, int64_t len, int64_t out_len, uint16_t* y) {
  vector_mean(x, count, len, out_len, y);
}

void vector_mean_backward_f32__avx2(const float* g, int64_t in_len, int64_t count, int64_t len, float* y) {
  const __m256 d = _mm256_set1_ps((float)count);
  for (int64_t j0 = 0; j0 < len; j0 += 32) {  // up to four vectors of values, stored row by row
    __m256 v[4];
    int64_t n[4];
    for (int u = 0; u < 4; ++u) {
      const int64_t j = j0 + 8 * u;
      n[u] = j < len ? len - j : 0;
      const int64_t m = j < in_len ? in_len - j : 0;
      v[u] = _mm256_div_ps(m ? load8(g + j, m, lanes(m)) : _mm256_setzero_ps(), d);  // 0 past in_len
    }
    for (int64_t i = 0; i < count; ++i)
      for (int u = 0; u < 4 && n[u] > 0; ++u) store8(y + i * len + j0 + 8 * u, n[u], lanes(n[u]), v[u]);
  }
}

}  // namespace brgemm::kernels
