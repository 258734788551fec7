// The reductions of brgemm/window.h with AVX2: 8 lanes of a vector a step (32 for uint8; a
// shorter last step through masked loads and stores, or a small copy for bf16 and the last bytes
// of uint8), the same compare-and-select and the same order of sums as the scalar twin.
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

// The maxima of NV vectors of 8 lanes (the last one n lanes) of the window columns [c0, c1), the
// rule (brgemm_max_takes) being vmaxps(v, m) — m on ties — as long as no NaN comes: a window that
// holds one is scanned again with the rule itself.
template <int NV, class T>
void max_group(const window_rows& g, const T* x, int64_t c0, int64_t c1, int64_t n, T* y) {
  const __m256 ninf = _mm256_set1_ps(-INFINITY);
  const __m256i k = lanes(n);
  __m256 m[NV], nan = _mm256_setzero_ps();
  for (int u = 0; u < NV; ++u) m[u] = ninf;
  for (int64_t r = 0; r < g.rows; ++r)
    for (int64_t c = c0; c < c1; ++c) {
      const T* p = x + r * g.ld + c * g.len;
      __m256 v[NV];
      for (int u = 0; u < NV; ++u) {
        v[u] = load8(p + 8 * u, u + 1 < NV ? 8 : n, k);
        m[u] = _mm256_max_ps(v[u], m[u]);
      }
      for (int u = 0; u < NV; u += 2)  // unordered: a NaN in either
        nan = _mm256_or_ps(nan, _mm256_cmp_ps(v[u], v[u + 1 < NV ? u + 1 : u], _CMP_UNORD_Q));
    }
  if (!_mm256_testz_ps(nan, nan)) {
    for (int u = 0; u < NV; ++u) m[u] = ninf;
    for (int64_t r = 0; r < g.rows; ++r)
      for (int64_t c = c0; c < c1; ++c) {
        const T* p = x + r * g.ld + c * g.len;
        for (int u = 0; u < NV; ++u) {
          const __m256 v = load8(p + 8 * u, u + 1 < NV ? 8 : n, k);
          m[u] = _mm256_blendv_ps(_mm256_max_ps(v, m[u]), v, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
        }
      }
  }
  for (int u = 0; u < NV; ++u) store8(y + 8 * u, u + 1 < NV ? 8 : n, k, m[u]);
}

template <class T>
void window_max(const window_rows& g, const T* x, T* y) {
  for (int64_t o = 0; o < g.out_width; ++o) {
    int64_t c0, c1;
    brgemm_window_columns(g, o, &c0, &c1);
    for (int64_t j0 = 0; j0 < g.len; j0 += 32) {
      const int64_t n = g.len - j0 < 32 ? g.len - j0 : 32, last = n - (n - 1) / 8 * 8;
      T* yo = y + o * g.len + j0;
      switch ((n + 7) / 8) {
        case 1: max_group<1>(g, x + j0, c0, c1, last, yo); break;
        case 2: max_group<2>(g, x + j0, c0, c1, last, yo); break;
        case 3: max_group<3>(g, x + j0, c0, c1, last, yo); break;
        default: max_group<4>(g, x + j0, c0, c1, last, yo); break;
      }
    }
  }
}

// The backward pass in two steps per tile of outputs and group of up to 32 lanes: (A) each
// output's maximum position, as its tap number in the window (row by row); (B) each input vector
// the tile covers, loaded once, given the gradients of the outputs that picked it in output order,
// stored once (not read back by the next output's window where windows overlap).
constexpr int64_t tile = 32;

struct tile_columns {
  int64_t c0[tile], width[tile];  // each output's first column and columns per row
};

inline __m256 select(__m256 a, __m256 b, __m256 take) { return _mm256_blendv_ps(a, b, take); }
inline __m256i select(__m256i a, __m256i b, __m256 take) {
  return _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(a), _mm256_castsi256_ps(b), take));
}

// Maximum positions of NV vectors of 8 lanes (the last one n lanes) of the window columns [c0, c1).
template <int NV, class T>
void positions(const window_rows& g, const T* x, int64_t c0, int64_t c1, int64_t n, __m256i* at) {
  const __m256 ninf = _mm256_set1_ps(-INFINITY);
  const __m256i k = lanes(n);
  __m256 m[NV], nan = _mm256_setzero_ps();
  __m256i a[NV];
  for (int u = 0; u < NV; ++u) m[u] = ninf, a[u] = _mm256_setzero_si256();
  // Without NaN, "greater" against the running vmaxps is the rule, and keeps the chain short.
  int32_t t = 0;
  for (int64_t r = 0; r < g.rows; ++r)
    for (int64_t c = c0; c < c1; ++c, ++t) {
      const T* p = x + r * g.ld + c * g.len;
      __m256 v[NV];
      for (int u = 0; u < NV; ++u) {
        v[u] = load8(p + 8 * u, u + 1 < NV ? 8 : n, k);
        a[u] = select(a[u], _mm256_set1_epi32(t), _mm256_cmp_ps(v[u], m[u], _CMP_GT_OQ));
        m[u] = _mm256_max_ps(v[u], m[u]);
      }
      for (int u = 0; u < NV; u += 2)
        nan = _mm256_or_ps(nan, _mm256_cmp_ps(v[u], v[u + 1 < NV ? u + 1 : u], _CMP_UNORD_Q));
    }
  if (!_mm256_testz_ps(nan, nan)) {  // a window with a NaN: the rule itself, scanned again
    for (int u = 0; u < NV; ++u) m[u] = ninf, a[u] = _mm256_setzero_si256();
    t = 0;
    for (int64_t r = 0; r < g.rows; ++r)
      for (int64_t c = c0; c < c1; ++c, ++t) {
        const T* p = x + r * g.ld + c * g.len;
        for (int u = 0; u < NV; ++u) {
          const __m256 v = load8(p + 8 * u, u + 1 < NV ? 8 : n, k);
          const __m256 take = _mm256_or_ps(_mm256_cmp_ps(v, m[u], _CMP_GT_OQ), _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
          m[u] = select(m[u], v, take);
          a[u] = select(a[u], _mm256_set1_epi32(t), take);
        }
      }
  }
  for (int u = 0; u < NV; ++u) at[u] = a[u];
}

// (A) and (B) for outputs [o0, o1) and lanes j0 + [0, 8·NV) (the last vector n lanes).
template <int NV, class T>
void backward_group(const window_rows& g, const T* x, const float* gy, float* gx, int64_t o0, int64_t o1,
                    const tile_columns& tc, int64_t j0, int64_t n) {
  __m256i at[tile][NV];
  for (int64_t i = 0; i < o1 - o0; ++i) positions<NV>(g, x + j0, tc.c0[i], tc.c0[i] + tc.width[i], n, at[i]);
  const __m256i k = lanes(n);
  const int64_t first = tc.c0[0], last = tc.c0[o1 - 1 - o0] + tc.width[o1 - 1 - o0];
  for (int64_t r = 0; r < g.rows; ++r) {
    int64_t lo = 0, hi = -1;  // the tile's outputs [lo, hi] whose window holds column c
    for (int64_t c = first; c < last; ++c) {
      while (hi + 1 < o1 - o0 && tc.c0[hi + 1] <= c) ++hi;
      while (tc.c0[lo] + tc.width[lo] <= c) ++lo;
      float* p = gx + r * g.ld + c * g.len + j0;
      __m256 acc[NV];
      for (int u = 0; u < NV; ++u) acc[u] = load8(p + 8 * u, u + 1 < NV ? 8 : n, k);
      for (int64_t i = lo; i <= hi; ++i) {
        const __m256i t = _mm256_set1_epi32((int32_t)(r * tc.width[i] + (c - tc.c0[i])));
        const float* d = gy + (o0 + i) * g.len + j0;
        for (int u = 0; u < NV; ++u) {
          const __m256 hit = _mm256_castsi256_ps(_mm256_cmpeq_epi32(at[i][u], t));
          acc[u] = select(acc[u], _mm256_add_ps(acc[u], load8(d + 8 * u, u + 1 < NV ? 8 : n, k)), hit);
        }
      }
      for (int u = 0; u < NV; ++u) store8(p + 8 * u, u + 1 < NV ? 8 : n, k, acc[u]);
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
    for (int64_t j0 = 0; j0 < g.len; j0 += 32) {
      const int64_t n = g.len - j0 < 32 ? g.len - j0 : 32, last = n - (n - 1) / 8 * 8;
      switch ((n + 7) / 8) {
        case 1: backward_group<1>(g, x, gy, gx, o0, o1, tc, j0, last); break;
        case 2: backward_group<2>(g, x, gy, gx, o0, o1, tc, j0, last); break;
        case 3: backward_group<3>(g, x, gy, gx, o0, o1, tc, j0, last); break;
        default: backward_group<4>(g, x, gy, gx, o0, o1, tc, j0, last); break;
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

// uint8: 32 lanes a vector. A step of n < 32 lanes moves its whole 4-byte words with
// maskload/maskstore and the 1–3 bytes after them through a copy, so no lane past n touches memory.
struct byte_step {
  int64_t n, words;  // lanes, whole words among them
  __m256i k, part;   // words 0..words−1; word `words` (the partial one, when n % 4 ≠ 0)
};

inline byte_step byte_step_of(int64_t n) {
  byte_step t;
  t.n = n;
  t.words = n >= 32 ? 8 : n >> 2;
  t.k = lanes(t.words);
  t.part = _mm256_cmpeq_epi32(_mm256_set1_epi32((int)t.words), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  return t;
}

inline __m256i load32(const uint8_t* p, const byte_step& t) {
  if (t.n >= 32) return _mm256_loadu_si256((const __m256i*)p);
  __m256i v = _mm256_maskload_epi32((const int*)p, t.k);
  if (t.n & 3) {
    uint32_t w = 0;
    std::memcpy(&w, p + 4 * t.words, (size_t)(t.n & 3));
    v = _mm256_blendv_epi8(v, _mm256_set1_epi32((int)w), t.part);
  }
  return v;
}

inline void store32(uint8_t* p, const byte_step& t, __m256i v) {
  if (t.n >= 32) {
    _mm256_storeu_si256((__m256i*)p, v);
    return;
  }
  _mm256_maskstore_epi32((int*)p, t.k, v);
  if (t.n & 3) {
    alignas(32) uint32_t b[8];
    _mm256_store_si256((__m256i*)b, v);
    std::memcpy(p + 4 * t.words, &b[t.words], (size_t)(t.n & 3));
  }
}

// The maxima of NV vectors of 32 lanes (the last one t.n lanes) of the window columns [c0, c1):
// unsigned, so any order gives the twin's bytes.
template <int NV>
void max_group_u8(const window_rows& g, const uint8_t* x, int64_t c0, int64_t c1, const byte_step& t, uint8_t* y) {
  const byte_step full = byte_step_of(32);
  __m256i m[NV];
  for (int u = 0; u < NV; ++u) m[u] = _mm256_setzero_si256();  // the least uint8, as in the twin
  for (int64_t r = 0; r < g.rows; ++r)
    for (int64_t c = c0; c < c1; ++c) {
      const uint8_t* p = x + r * g.ld + c * g.len;
      for (int u = 0; u < NV; ++u) m[u] = _mm256_max_epu8(m[u], load32(p + 32 * u, u + 1 < NV ? full : t));
    }
  for (int u = 0; u < NV; ++u) store32(y + 32 * u, u + 1 < NV ? full : t, m[u]);
}

void window_max(const window_rows& g, const uint8_t* x, uint8_t* y) {
  for (int64_t o = 0; o < g.out_width; ++o) {
    int64_t c0, c1;
    brgemm_window_columns(g, o, &c0, &c1);
    for (int64_t j0 = 0; j0 < g.len; j0 += 128) {
      const int64_t n = g.len - j0 < 128 ? g.len - j0 : 128;
      const byte_step t = byte_step_of(n - (n - 1) / 32 * 32);
      uint8_t* yo = y + o * g.len + j0;
      switch ((n + 31) / 32) {
        case 1: max_group_u8<1>(g, x + j0, c0, c1, t, yo); break;
        case 2: max_group_u8<2>(g, x + j0, c0, c1, t, yo); break;
        case 3: max_group_u8<3>(g, x + j0, c0, c1, t, yo); break;
        default: max_group_u8<4>(g, x + j0, c0, c1, t, yo); break;
      }
    }
  }
}

// The dequantized mean of up to 32 uint8 lanes j0 + [0, n): one load of the bytes per vector of
// x, widened to four int32 sums of 8 lanes (exact, so in any order), then the twin's two rounded
// operations.
void mean_step_u8(const uint8_t* x, int64_t count, int64_t len, int64_t j0, int64_t n, float scale,
                  int32_t zero_point, float* y) {
  const byte_step t = byte_step_of(n);
  __m256i s[4];
  for (int u = 0; u < 4; ++u) s[u] = _mm256_setzero_si256();
  for (int64_t i = 0; i < count; ++i) {
    const __m256i v = load32(x + i * len + j0, t);
    const __m128i lo = _mm256_castsi256_si128(v), hi = _mm256_extracti128_si256(v, 1);
    s[0] = _mm256_add_epi32(s[0], _mm256_cvtepu8_epi32(lo));
    s[1] = _mm256_add_epi32(s[1], _mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8)));
    s[2] = _mm256_add_epi32(s[2], _mm256_cvtepu8_epi32(hi));
    s[3] = _mm256_add_epi32(s[3], _mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8)));
  }
  const __m256i z = _mm256_set1_epi32((int32_t)count * zero_point);
  const __m256 d = _mm256_set1_ps((float)count), sc = _mm256_set1_ps(scale);
  for (int u = 0; u < 4 && 8 * u < n; ++u) {
    const int64_t nu = n - 8 * u < 8 ? n - 8 * u : 8;
    const __m256 v = _mm256_mul_ps(sc, _mm256_div_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(s[u], z)), d));
    store8(y + j0 + 8 * u, nu, lanes(nu), v);
  }
}

}  // namespace

void window_max_u8__avx2(const window_rows& g, const uint8_t* x, uint8_t* y) { window_max(g, x, y); }
void vector_mean_u8__avx2(const uint8_t* x, int64_t count, int64_t len, int64_t out_len, float scale,
                          int32_t zero_point, float* y) {
  for (int64_t j0 = 0; j0 < out_len; j0 += 32)
    mean_step_u8(x, count, len, j0, out_len - j0 < 32 ? out_len - j0 : 32, scale, zero_point, y);
}

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
