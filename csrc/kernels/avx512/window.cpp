// The reductions of brgemm/window.h with AVX-512: 16 lanes of a vector a step (64 for uint8; the
// last step masked), the same compare-and-select and the same order of sums as the scalar twin.
#include <immintrin.h>
#include <algorithm>
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

// The maxima of NV vectors of 16 lanes (the last masked by k) of the window columns [c0, c1), the
// rule (brgemm_max_takes) being vmaxps(v, m) — m on ties — as long as no NaN comes: a lane that
// meets one is scanned again with the rule itself.
template <int NV, class T>
void max_group(const window_rows& g, const T* x, int64_t c0, int64_t c1, __mmask16 k, T* y) {
  const __m512 ninf = _mm512_set1_ps(-INFINITY);
  __m512 m[NV];
  __mmask16 nan = 0;
  for (int u = 0; u < NV; ++u) m[u] = ninf;
  for (int64_t r = 0; r < g.rows; ++r)
    for (int64_t c = c0; c < c1; ++c) {
      const T* p = x + r * g.ld + c * g.len;
      __m512 v[NV];
      for (int u = 0; u < NV; ++u) {
        v[u] = load16(p + 16 * u, u + 1 < NV ? (__mmask16)0xFFFF : k);
        m[u] = _mm512_max_ps(v[u], m[u]);
      }
      for (int u = 0; u < NV; u += 2)  // unordered: a NaN in either
        nan = _kor_mask16(nan, _mm512_cmp_ps_mask(v[u], v[u + 1 < NV ? u + 1 : u], _CMP_UNORD_Q));
    }
  if (nan) {
    for (int u = 0; u < NV; ++u) m[u] = ninf;
    for (int64_t r = 0; r < g.rows; ++r)
      for (int64_t c = c0; c < c1; ++c) {
        const T* p = x + r * g.ld + c * g.len;
        for (int u = 0; u < NV; ++u) {
          const __m512 v = load16(p + 16 * u, u + 1 < NV ? (__mmask16)0xFFFF : k);
          m[u] = _mm512_mask_mov_ps(_mm512_max_ps(v, m[u]), _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), v);
        }
      }
  }
  for (int u = 0; u < NV; ++u) store16(y + 16 * u, u + 1 < NV ? (__mmask16)0xFFFF : k, m[u]);
}

// bf16: 32 values a load, split into two f32 vectors without moving them across lanes — the
// even elements (shifted up) and the odd ones (low halves cleared) — and joined back on the store.
// Half the conversions of widening 16 at a time; each element is still compared as itself.
template <int NV>
void max_group_bf16(const window_rows& g, const uint16_t* x, int64_t c0, int64_t c1, __mmask32 k, uint16_t* y) {
  const __m512 ninf = _mm512_set1_ps(-INFINITY);
  const __m512i high = _mm512_set1_epi32((int)0xFFFF0000u);
  __m512 even[NV], odd[NV];
  __mmask16 nan = 0;
  for (int u = 0; u < NV; ++u) even[u] = odd[u] = ninf;
  auto split = [&](const uint16_t* p, int u, __m512* e, __m512* o) {
    const __m512i h = _mm512_maskz_loadu_epi16(u + 1 < NV ? ~(__mmask32)0 : k, p + 32 * u);
    *e = _mm512_castsi512_ps(_mm512_slli_epi32(h, 16));
    *o = _mm512_castsi512_ps(_mm512_and_si512(h, high));
  };
  for (int64_t r = 0; r < g.rows; ++r)
    for (int64_t c = c0; c < c1; ++c) {
      const uint16_t* p = x + r * g.ld + c * g.len;
      for (int u = 0; u < NV; ++u) {
        __m512 e, o;
        split(p, u, &e, &o);
        even[u] = _mm512_max_ps(e, even[u]);
        odd[u] = _mm512_max_ps(o, odd[u]);
        nan = _kor_mask16(nan, _mm512_cmp_ps_mask(e, o, _CMP_UNORD_Q));
      }
    }
  if (nan) {  // the rule itself (see max_group)
    for (int u = 0; u < NV; ++u) even[u] = odd[u] = ninf;
    for (int64_t r = 0; r < g.rows; ++r)
      for (int64_t c = c0; c < c1; ++c) {
        const uint16_t* p = x + r * g.ld + c * g.len;
        for (int u = 0; u < NV; ++u) {
          __m512 e, o;
          split(p, u, &e, &o);
          even[u] = _mm512_mask_mov_ps(_mm512_max_ps(e, even[u]), _mm512_cmp_ps_mask(e, e, _CMP_UNORD_Q), e);
          odd[u] = _mm512_mask_mov_ps(_mm512_max_ps(o, odd[u]), _mm512_cmp_ps_mask(o, o, _CMP_UNORD_Q), o);
        }
      }
  }
  for (int u = 0; u < NV; ++u) {
    const __m512i bits = _mm512_or_si512(_mm512_srli_epi32(_mm512_castps_si512(even[u]), 16),
                                         _mm512_and_si512(_mm512_castps_si512(odd[u]), high));
    _mm512_mask_storeu_epi16(y + 32 * u, u + 1 < NV ? ~(__mmask32)0 : k, bits);
  }
}

void window_max(const window_rows& g, const float* x, float* y) {
  for (int64_t o = 0; o < g.out_width; ++o) {
    int64_t c0, c1;
    brgemm_window_columns(g, o, &c0, &c1);
    for (int64_t j0 = 0; j0 < g.len; j0 += 64) {
      const int64_t n = g.len - j0 < 64 ? g.len - j0 : 64;
      const __mmask16 k = lanes(n - (n - 1) / 16 * 16);
      float* yo = y + o * g.len + j0;
      switch ((n + 15) / 16) {
        case 1: max_group<1>(g, x + j0, c0, c1, k, yo); break;
        case 2: max_group<2>(g, x + j0, c0, c1, k, yo); break;
        case 3: max_group<3>(g, x + j0, c0, c1, k, yo); break;
        default: max_group<4>(g, x + j0, c0, c1, k, yo); break;
      }
    }
  }
}

void window_max(const window_rows& g, const uint16_t* x, uint16_t* y) {
  for (int64_t o = 0; o < g.out_width; ++o) {
    int64_t c0, c1;
    brgemm_window_columns(g, o, &c0, &c1);
    for (int64_t j0 = 0; j0 < g.len; j0 += 64) {
      const int64_t n = g.len - j0 < 64 ? g.len - j0 : 64, last = n - (n - 1) / 32 * 32;
      const __mmask32 k = last >= 32 ? ~(__mmask32)0 : (__mmask32)((1u << last) - 1u);
      uint16_t* yo = y + o * g.len + j0;
      if (n > 32) max_group_bf16<2>(g, x + j0, c0, c1, k, yo);
      else max_group_bf16<1>(g, x + j0, c0, c1, k, yo);
    }
  }
}

// The backward pass in two steps per tile of outputs and group of up to 64 lanes: (A) each
// output's maximum position, as its tap number in the window (row by row); (B) each input vector
// the tile covers, loaded once, given the gradients of the outputs that picked it in output order,
// stored once: no store is read back by the next output's window (a stall where windows overlap).
constexpr int64_t tile = 32;

struct tile_columns {
  int64_t c0[tile], width[tile];  // each output's first column and columns per row
};

// Maximum positions of NV vectors of 16 lanes (the last masked by k) of output o's window.
template <int NV, class T>
void positions(const window_rows& g, const T* x, int64_t c0, int64_t c1, __mmask16 k, __m512i* at) {
  const __m512 ninf = _mm512_set1_ps(-INFINITY);
  __m512 m[NV];
  __m512i a[NV];
  __mmask16 nan = 0;
  for (int u = 0; u < NV; ++u) m[u] = ninf, a[u] = _mm512_setzero_si512();
  // Without NaN, "greater" against the running vmaxps is the rule, and keeps the chain short.
  int32_t t = 0;
  for (int64_t r = 0; r < g.rows; ++r)
    for (int64_t c = c0; c < c1; ++c, ++t) {
      const T* p = x + r * g.ld + c * g.len;
      for (int u = 0; u < NV; ++u) {
        const __m512 v = load16(p + 16 * u, u + 1 < NV ? (__mmask16)0xFFFF : k);
        a[u] = _mm512_mask_mov_epi32(a[u], _mm512_cmp_ps_mask(v, m[u], _CMP_GT_OQ), _mm512_set1_epi32(t));
        m[u] = _mm512_max_ps(v, m[u]);
        nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
      }
    }
  if (nan) {  // a window with a NaN: the rule itself, scanned again
    for (int u = 0; u < NV; ++u) m[u] = ninf, a[u] = _mm512_setzero_si512();
    t = 0;
    for (int64_t r = 0; r < g.rows; ++r)
      for (int64_t c = c0; c < c1; ++c, ++t) {
        const T* p = x + r * g.ld + c * g.len;
        for (int u = 0; u < NV; ++u) {
          const __m512 v = load16(p + 16 * u, u + 1 < NV ? (__mmask16)0xFFFF : k);
          const __mmask16 take = _mm512_cmp_ps_mask(v, m[u], _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
          m[u] = _mm512_mask_mov_ps(m[u], take, v);
          a[u] = _mm512_mask_mov_epi32(a[u], take, _mm512_set1_epi32(t));
        }
      }
  }
  for (int u = 0; u < NV; ++u) at[u] = a[u];
}

// (A) and (B) for outputs [o0, o1) and lanes j0 + [0, 16·NV) (the last 16 masked by k).
template <int NV, class T>
void backward_group(const window_rows& g, const T* x, const float* gy, float* gx, int64_t o0, int64_t o1,
                    const tile_columns& tc, int64_t j0, __mmask16 k) {
  __m512i at[tile][NV];
  for (int64_t i = 0; i < o1 - o0; ++i) positions<NV>(g, x + j0, tc.c0[i], tc.c0[i] + tc.width[i], k, at[i]);
  const int64_t first = tc.c0[0], last = tc.c0[o1 - 1 - o0] + tc.width[o1 - 1 - o0];
  for (int64_t r = 0; r < g.rows; ++r) {
    int64_t lo = 0, hi = -1;  // the tile's outputs [lo, hi] whose window holds column c
    for (int64_t c = first; c < last; ++c) {
      while (hi + 1 < o1 - o0 && tc.c0[hi + 1] <= c) ++hi;
      while (tc.c0[lo] + tc.width[lo] <= c) ++lo;
      float* p = gx + r * g.ld + c * g.len + j0;
      __m512 acc[NV];
      for (int u = 0; u < NV; ++u) acc[u] = _mm512_maskz_loadu_ps(u + 1 < NV ? (__mmask16)0xFFFF : k, p + 16 * u);
      for (int64_t i = lo; i <= hi; ++i) {
        const __m512i t = _mm512_set1_epi32((int32_t)(r * tc.width[i] + (c - tc.c0[i])));
        const float* d = gy + (o0 + i) * g.len + j0;
        for (int u = 0; u < NV; ++u) {
          const __mmask16 ku = u + 1 < NV ? (__mmask16)0xFFFF : k;
          acc[u] = _mm512_mask_add_ps(acc[u], _mm512_mask_cmpeq_epi32_mask(ku, at[i][u], t), acc[u],
                                      _mm512_maskz_loadu_ps(ku, d + 16 * u));
        }
      }
      for (int u = 0; u < NV; ++u) _mm512_mask_storeu_ps(p + 16 * u, u + 1 < NV ? (__mmask16)0xFFFF : k, acc[u]);
    }
  }
}

template <class T>
void window_max_backward(const window_rows& g, const T* x, const float* gy, float* gx) {
  tile_columns tc;
  for (int64_t o0 = 0; o0 < g.out_width; o0 += tile) {
    const int64_t o1 = o0 + tile < g.out_width ? o0 + tile : g.out_width;
    for (int64_t o = o0; o < o1; ++o) {
      int64_t c0, c1;
      brgemm_window_columns(g, o, &c0, &c1);
      tc.c0[o - o0] = c0, tc.width[o - o0] = c1 - c0;
    }
    for (int64_t j0 = 0; j0 < g.len; j0 += 64) {
      const int64_t n = g.len - j0 < 64 ? g.len - j0 : 64;
      const __mmask16 k = lanes(n - (n - 1) / 16 * 16);
      switch ((n + 15) / 16) {
        case 1: backward_group<1>(g, x, gy, gx, o0, o1, tc, j0, k); break;
        case 2: backward_group<2>(g, x, gy, gx, o0, o1, tc, j0, k); break;
        case 3: backward_group<3>(g, x, gy, gx, o0, o1, tc, j0, k); break;
        default: backward_group<4>(g, x, gy, gx, o0, o1, tc, j0, k); break;
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

// uint8: 64 lanes a vector, the last masked by k; unsigned maxima, so any order gives the twin's bytes.
template <int NV>
void max_group_u8(const window_rows& g, const uint8_t* x, int64_t c0, int64_t c1, __mmask64 k, uint8_t* y) {
  __m512i m[NV];
  for (int u = 0; u < NV; ++u) m[u] = _mm512_setzero_si512();  // the least uint8, as in the twin
  for (int64_t r = 0; r < g.rows; ++r)
    for (int64_t c = c0; c < c1; ++c) {
      const uint8_t* p = x + r * g.ld + c * g.len;
      for (int u = 0; u < NV; ++u)
        m[u] = _mm512_max_epu8(m[u], _mm512_maskz_loadu_epi8(u + 1 < NV ? ~(__mmask64)0 : k, p + 64 * u));
    }
  for (int u = 0; u < NV; ++u) _mm512_mask_storeu_epi8(y + 64 * u, u + 1 < NV ? ~(__mmask64)0 : k, m[u]);
}

void window_max(const window_rows& g, const uint8_t* x, uint8_t* y) {
  for (int64_t o = 0; o < g.out_width; ++o) {
    int64_t c0, c1;
    brgemm_window_columns(g, o, &c0, &c1);
    for (int64_t j0 = 0; j0 < g.len; j0 += 256) {
      const int64_t n = g.len - j0 < 256 ? g.len - j0 : 256, last = n - (n - 1) / 64 * 64;
      const __mmask64 k = last >= 64 ? ~(__mmask64)0 : ((__mmask64)1 << last) - 1;
      uint8_t* yo = y + o * g.len + j0;
      switch ((n + 63) / 64) {
        case 1: max_group_u8<1>(g, x + j0, c0, c1, k, yo); break;
        case 2: max_group_u8<2>(g, x + j0, c0, c1, k, yo); break;
        case 3: max_group_u8<3>(g, x + j0, c0, c1, k, yo); break;
        default: max_group_u8<4>(g, x + j0, c0, c1, k, yo); break;
      }
    }
  }
}

// The dequantized mean of up to 64 uint8 lanes j0 + [0, n): one masked load of the bytes per
// vector of x, widened to four int32 sums of 16 lanes (exact, so in any order), then the twin's
// two rounded operations.
void mean_step_u8(const uint8_t* x, int64_t count, int64_t len, int64_t j0, int64_t n, float scale,
                  int32_t zero_point, float* y) {
  const __mmask64 k = n >= 64 ? ~(__mmask64)0 : ((__mmask64)1 << n) - 1;
  __m512i s[4];
  for (int u = 0; u < 4; ++u) s[u] = _mm512_setzero_si512();
  for (int64_t i = 0; i < count; ++i) {
    const __m512i v = _mm512_maskz_loadu_epi8(k, x + i * len + j0);
    s[0] = _mm512_add_epi32(s[0], _mm512_cvtepu8_epi32(_mm512_extracti32x4_epi32(v, 0)));
    s[1] = _mm512_add_epi32(s[1], _mm512_cvtepu8_epi32(_mm512_extracti32x4_epi32(v, 1)));
    s[2] = _mm512_add_epi32(s[2], _mm512_cvtepu8_epi32(_mm512_extracti32x4_epi32(v, 2)));
    s[3] = _mm512_add_epi32(s[3], _mm512_cvtepu8_epi32(_mm512_extracti32x4_epi32(v, 3)));
  }
  const __m512i z = _mm512_set1_epi32((int32_t)count * zero_point);
  const __m512 d = _mm512_set1_ps((float)count), sc = _mm512_set1_ps(scale);
  for (int u = 0; u < 4 && 16 * u < n; ++u) {
    const __m512 v = _mm512_mul_ps(sc, _mm512_div_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(s[u], z)), d));
    _mm512_mask_storeu_ps(y + j0 + 16 * u, lanes(n - 16 * u), v);
  }
}

}  // namespace

void window_max_u8__avx512(const window_rows& g, const uint8_t* x, uint8_t* y) { window_max(g, x, y); }
void vector_mean_u8__avx512(const uint8_t* x, int64_t count, int64_t len, int64_t out_len, float scale,
                            int32_t zero_point, float* y) {
  for (int64_t j0 = 0; j0 < out_len; j0 += 64)
    mean_step_u8(x, count, len, j0, out_len - j0 < 64 ? out_len - j0 : 64, scale, zero_point, y);
}

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
