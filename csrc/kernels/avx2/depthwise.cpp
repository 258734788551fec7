// The depthwise stencils of brgemm/depthwise.h with AVX2: 8 channels a register (the last one
// partial when bc is not a multiple of 8: masked loads and stores for f32, a copy through a
// small buffer for bf16), eight results at a time as on AVX-512.
#include <cstring>
#include "../depthwise.h"
#include "activation.h"

namespace brgemm::kernels {

namespace {

// The first n (1..8) lanes of a register.
inline __m256i lanes(int64_t n) {
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n < 8 ? n : 8)), idx);
}

struct part {
  int64_t n;     // lanes in use (8: a whole register)
  __m256i mask;  // the first n lanes
};

inline __m256 load8(const float* p, const part& k) {
  return k.n == 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, k.mask);
}
inline __m256 load8(const uint16_t* p, const part& k) {
  __m128i h;
  if (k.n == 8) {
    h = _mm_loadu_si128((const __m128i*)p);
  } else {
    uint16_t buf[8] = {};
    std::memcpy(buf, p, (size_t)k.n * 2);
    h = _mm_loadu_si128((const __m128i*)buf);
  }
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
inline void store8(float* p, const part& k, __m256 v) {
  if (k.n == 8)
    _mm256_storeu_ps(p, v);
  else
    _mm256_maskstore_ps(p, k.mask, v);
}
inline void store8(uint16_t* p, const part& k, __m256 v) {
  const __m128i h = narrow16(bf16_rne(v));
  if (k.n == 8) {
    _mm_storeu_si128((__m128i*)p, h);
  } else {
    uint16_t buf[8];
    _mm_storeu_si128((__m128i*)buf, h);
    std::memcpy(p, buf, (size_t)k.n * 2);
  }
}

template <class XT, class YT>
void forward(const depthwise_row& r) {
  const ktanh_table8 tab;
  const int64_t xs = r.x_step, ys = r.y_step;
  for (int64_t v = 0; v < r.bc; v += 8) {
    const part k{r.bc - v < 8 ? r.bc - v : 8, lanes(r.bc - v)};
    const __m256 b = r.bias ? load8(r.bias + v, k) : _mm256_setzero_ps();
    auto finish = [&](__m256 acc, int64_t j) {
      if (r.add) acc = _mm256_add_ps(acc, load8((const YT*)r.add + j * ys + v, k));
      store8((YT*)r.y + j * ys + v, k, activation8(r.act, acc, tab));
    };
    int64_t j = 0;
    for (; j + 8 <= r.m; j += 8) {
      __m256 acc[8];
#pragma GCC unroll 8
      for (int u = 0; u < 8; ++u) acc[u] = b;
      for (int64_t t = 0; t < r.taps; ++t) {
        const __m256 w = load8(r.w[t] + v, k);
        const XT* x = (const XT*)r.x[t] + j * xs + v;
#pragma GCC unroll 8
        for (int u = 0; u < 8; ++u) acc[u] = _mm256_fmadd_ps(w, load8(x + u * xs, k), acc[u]);
      }
#pragma GCC unroll 8
      for (int u = 0; u < 8; ++u) finish(acc[u], j + u);
    }
    for (; j < r.m; ++j) {
      __m256 a0 = b;
      for (int64_t t = 0; t < r.taps; ++t)
        a0 = _mm256_fmadd_ps(load8(r.w[t] + v, k), load8((const XT*)r.x[t] + j * xs + v, k), a0);
      finish(a0, j);
    }
  }
}

template <class XT>
void weight_grad(const depthwise_grad_row& r) {
  const int64_t gs = r.g_step, xs = r.x_step;
  for (int64_t v = 0; v < r.bc; v += 8) {
    const part k{r.bc - v < 8 ? r.bc - v : 8, lanes(r.bc - v)};
    for (int64_t t = -1; t < r.taps; ++t) {  // t = −1: the bias
      if (t < 0 && !r.db) continue;
      const float* g = r.g + v;
      const XT* x = t < 0 ? nullptr : (const XT*)r.x[t] + v;
      __m256 p[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
      int64_t j = 0;
      if (t < 0) {
        for (; j + 4 <= r.m; j += 4)
#pragma GCC unroll 4
          for (int u = 0; u < 4; ++u) p[u] = _mm256_add_ps(p[u], load8(g + (j + u) * gs, k));
        for (; j < r.m; ++j) p[j % 4] = _mm256_add_ps(p[j % 4], load8(g + j * gs, k));
      } else {
        for (; j + 4 <= r.m; j += 4)
#pragma GCC unroll 4
          for (int u = 0; u < 4; ++u) p[u] = _mm256_fmadd_ps(load8(g + (j + u) * gs, k), load8(x + (j + u) * xs, k), p[u]);
        for (; j < r.m; ++j) p[j % 4] = _mm256_fmadd_ps(load8(g + j * gs, k), load8(x + j * xs, k), p[j % 4]);
      }
      float* out = (t < 0 ? r.db : r.dw[t]) + v;
      const __m256 sum = _mm256_add_ps(_mm256_add_ps(p[0], p[1]), _mm256_add_ps(p[2], p[3]));
      store8(out, k, _mm256_add_ps(load8(out, k), sum));
    }
  }
}

}  // namespace

void depthwise_forward__avx2(const depthwise_row& r) {
  const bool xb = r.xt == element::bf16, yb = r.yt == element::bf16;
  if (!xb && !yb) return forward<float, float>(r);
  if (!xb) return forward<float, uint16_t>(r);
  if (!yb) return forward<uint16_t, float>(r);
  forward<uint16_t, uint16_t>(r);
}

void depthwise_weight_grad__avx2(const depthwise_grad_row& r) {
  if (r.xt == element::bf16) return weight_grad<uint16_t>(r);
  weight_grad<float>(r);
}

}  // namespace brgemm::kernels
