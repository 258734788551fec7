// The reductions of brgemm/window.h with AVX-512: 16 lanes of a vector a step (the last step
// masked), the same compare-and-select and the same order of sums as the scalar twin.
#include <immintrin.h>
#include <cmath>
#include "../ukernels.h"
#include "../window_twin.h"
#include "activation.h"

namespace brgemm::kernels {

namespace {

inline __mmask16 lanes(int64_t n) { return n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1u); }

// 16 values as f32 (bf16 widened exactly); lanes off the mask read nothing and are 0.
inline __m512 load16(const float* p, __mmask16 k) { return _mm512_maskz_loadu_ps(k, p); }
inline __m512 load16(const uint16_t* p, __mmask16 k) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(k, p)), 16));
}
// Stores values that are the inputs' own (bf16: the high halves, exact).
inline void store16(float* p, __mmask16 k, __m512 v) { _mm512_mask_storeu_ps(p, k, v); }
inline void store16(uint16_t* p, __mmask16 k, __m512 v) {
  _mm256_mask_storeu_epi16(p, k, _mm512_cvtepi32_epi16(_mm512_srli_epi32(_mm512_castps_si512(v), 16)));
}

// v if it is greater than m or NaN, else m (brgemm_max_takes): vmaxps(v, m) gives m when either
// is NaN and on ties, then a NaN v is put back.
inline __m512 max_step(__m512 v, __m512 m) {
  return _mm512_mask_mov_ps(_mm512_max_ps(v, m), _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), v);
}

template <class T>
void window_max(const window_rows& g, const T* x, T* y) {
  const __m512 ninf = _mm512_set1_ps(-INFINITY);
  for (int64_t o = 0; o < g.out_width; ++o) {
    int64_t c0, c1;
    brgemm_window_columns(g, o, &c0, &c1);
    for (int64_t j = 0; j < g.len; j += 16) {
      const __mmask16 k = lanes(g.len - j);
      __m512 m = ninf;
      for (int64_t r = 0; r < g.rows; ++r) {
        const T* row = x + r * g.ld + j;
        for (int64_t c = c0; c < c1; ++c) m = max_step(load16(row + c * g.len, k), m);
      }
      store16(y + o * g.len + j, k, m);
    }
  }
}

template <class T>
void window_max_backward(const window_rows& g, const T* x, const float* gy, float* gx) {
  const __m512 ninf = _mm512_set1_ps(-INFINITY);
  for (int64_t o = 0; o < g.out_width; ++o) {
    int64_t c0, c1;
    brgemm_window_columns(g, o, &c0, &c1);
    if (c0 >= c1 || g.rows <= 0) continue;
    for (int64_t j = 0; j < g.len; j += 16) {
      const __mmask16 k = lanes(g.len - j);
      __m512 m = ninf;
      __m512i at = _mm512_setzero_si512();  // the window position, counted row by row
      int32_t t = 0;
      for (int64_t r = 0; r < g.rows; ++r)
        for (int64_t c = c0; c < c1; ++c, ++t) {
          const __m512 v = load16(x + r * g.ld + c * g.len + j, k);
          const __mmask16 take = _mm512_cmp_ps_mask(v, m, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
          m = _mm512_mask_mov_ps(m, take, v);
          at = _mm512_mask_mov_epi32(at, take, _mm512_set1_epi32(t));
        }
      const __m512 d = _mm512_maskz_loadu_ps(k, gy + o * g.len + j);
      t = 0;
      for (int64_t r = 0; r < g.rows; ++r)
        for (int64_t c = c0; c < c1; ++c, ++t) {
          const __mmask16 hit = _mm512_mask_cmpeq_epi32_mask(k, at, _mm512_set1_epi32(t));
          if (!hit) continue;
          float* p = gx + r * g.ld + c * g.len + j;
          _mm512_mask_storeu_ps(p, hit, _mm512_add_ps(_mm512_maskz_loadu_ps(hit, p), d));
        }
    }
  }
}

// Σ_i x[i·len + j0 + ·] over NV vectors of 16 lanes (the last masked by k), then / count.
template <int NV, class T>
void mean_step(const T* x, int64_t count, int64_t len, int64_t j0, __mmask16 k, T* y) {
  __m512 s[NV];
  for (int u = 0; u < NV; ++u) s[u] = _mm512_setzero_ps();
  for (int64_t i = 0; i < count; ++i)
    for (int u = 0; u < NV; ++u) s[u] = _mm512_add_ps(s[u], load16(x + i * len + j0 + 16 * u, u + 1 < NV ? 0xFFFF : k));
  const __m512 d = _mm512_set1_ps((float)count);
  for (int u = 0; u < NV; ++u) {
    const __mmask16 ku = u + 1 < NV ? (__mmask16)0xFFFF : k;
    const __m512 v = _mm512_div_ps(s[u], d);
    if constexpr (sizeof(T) == 2) _mm256_mask_storeu_epi16(y + j0 + 16 * u, ku, _mm512_cvtepi32_epi16(bf16_rne(v)));
    else _mm512_mask_storeu_ps(y + j0 + 16 * u, ku, v);
  }
}

template <class T>
void vector_mean(const T* x, int64_t count, int64_t len, int64_t out_len, T* y) {
  for (int64_t j0 = 0; j0 < out_len; j0 += 64) {  // up to four vectors of sums at once
    const int64_t n = out_len - j0 < 64 ? out_len - j0 : 64;
    const __mmask16 k = lanes(n - (n - 1) / 16 * 16);
    switch ((n + 15) / 16) {
      case 1: mean_step<1>(x, count, len, j0, k, y); break;
      case 2: mean_step<2>(x, count, len, j0, k, y); break;
      case 3: mean_step<3>(x, count, len, j0, k, y); break;
      default: mean_step<4>(x, count, len, j0, k, y); break;
    }
  }
}

}  // namespace

void window_max_f32__avx512(const window_rows& g, const float* x, float* y) { window_max(g, x, y); }
void window_max_bf16__avx512(const window_rows& g, const uint16_t* x, uint16_t* y) { window_max(g, x, y); }
void window_max_backward_f32__avx512(const window_rows& g, const float* x, const float* gy, float* gx) {
  window_max_backward(g, x, gy, gx);
}
void window_max_backward_bf16__avx512(const window_rows& g, const uint16_t* x, const float* gy, float* gx) {
  window_max_backward(g, x, gy, gx);
}
void vector_mean_f32__avx512(const float* x, int64_t count, int64_t len, int64_t out_len, float* y) {
  vector_mean(x, count, len, out_len, y);
}
void vector_mean_bf16__avx512(const uint16_t* x, int64_t count, int64_t len, int64_t out_len, uint16_t* y) {
  vector_mean(x, count, len, out_len, y);
}

void vector_mean_backward_f32__avx512(const float* g, int64_t in_len, int64_t count, int64_t len, float* y) {
  const __m512 d = _mm512_set1_ps((float)count);
  for (int64_t j0 = 0; j0 < len; j0 += 64) {  // up to four vectors of values, stored row by row
    __m512 v[4];
    __mmask16 k[4];
    for (int u = 0; u < 4; ++u) {
      const int64_t j = j0 + 16 * u;
      k[u] = j < len ? lanes(len - j) : 0;
      v[u] = _mm512_div_ps(_mm512_maskz_loadu_ps(j < in_len ? lanes(in_len - j) : 0, g + j), d);  // 0 past in_len
    }
    for (int64_t i = 0; i < count; ++i)
      for (int u = 0; u < 4; ++u) _mm512_mask_storeu_ps(y + i * len + j0 + 16 * u, k[u], v[u]);
  }
}

}  // namespace brgemm::kernels
