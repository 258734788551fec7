// The depthwise stencils of brgemm/depthwise.h with AVX-512: 16 channels a register (the last
// one masked when bc is not a multiple of 16), eight results at a time so that eight
// independent sums hide the multiply-add latency, each tap's weights loaded once for the eight.
#include "../depthwise.h"
#include "activation.h"

namespace brgemm::kernels {

namespace {

inline __mmask16 lanes(int64_t left) { return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1u); }

inline __m512 load16(const float* p, __mmask16 k) { return _mm512_maskz_loadu_ps(k, p); }
inline __m512 load16(const uint16_t* p, __mmask16 k) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(k, p)), 16));
}
inline void store16(float* p, __mmask16 k, __m512 v) { _mm512_mask_storeu_ps(p, k, v); }
inline void store16(uint16_t* p, __mmask16 k, __m512 v) { _mm256_mask_storeu_epi16(p, k, _mm512_cvtepi32_epi16(bf16_rne(v))); }

template <class XT, class YT>
void forward(const depthwise_row& r) {
  const ktanh_table32 tab;
  const int64_t xs = r.x_step, ys = r.y_step;
  for (int64_t v = 0; v < r.bc; v += 16) {
    const __mmask16 k = lanes(r.bc - v);
    const __m512 b = r.bias ? _mm512_maskz_loadu_ps(k, r.bias + v) : _mm512_setzero_ps();
    auto finish = [&](__m512 acc, int64_t j) {
      if (r.add) acc = _mm512_add_ps(acc, load16((const YT*)r.add + j * ys + v, k));
      store16((YT*)r.y + j * ys + v, k, activation16(r.act, acc, tab));
    };
    int64_t j = 0;
    for (; j + 8 <= r.m; j += 8) {
      __m512 acc[8];
#pragma GCC unroll 8
      for (int u = 0; u < 8; ++u) acc[u] = b;
      for (int64_t t = 0; t < r.taps; ++t) {
        const __m512 w = _mm512_maskz_loadu_ps(k, r.w[t] + v);
        const XT* x = (const XT*)r.x[t] + j * xs + v;
#pragma GCC unroll 8
        for (int u = 0; u < 8; ++u) acc[u] = _mm512_fmadd_ps(w, load16(x + u * xs, k), acc[u]);
      }
#pragma GCC unroll 8
      for (int u = 0; u < 8; ++u) finish(acc[u], j + u);
    }
    for (; j + 2 <= r.m; j += 2) {
      __m512 a0 = b, a1 = b;
      for (int64_t t = 0; t < r.taps; ++t) {
        const __m512 w = _mm512_maskz_loadu_ps(k, r.w[t] + v);
        const XT* x = (const XT*)r.x[t] + j * xs + v;
        a0 = _mm512_fmadd_ps(w, load16(x, k), a0);
        a1 = _mm512_fmadd_ps(w, load16(x + xs, k), a1);
      }
      finish(a0, j);
      finish(a1, j + 1);
    }
    if (j < r.m) {
      __m512 a0 = b;
      for (int64_t t = 0; t < r.taps; ++t)
        a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(k, r.w[t] + v), load16((const XT*)r.x[t] + j * xs + v, k), a0);
      finish(a0, j);
    }
  }
}

template <class XT>
void weight_grad(const depthwise_grad_row& r) {
  const int64_t gs = r.g_step, xs = r.x_step;
  for (int64_t v = 0; v < r.bc; v += 16) {
    const __mmask16 k = lanes(r.bc - v);
    for (int64_t t = -1; t < r.taps; ++t) {  // t = −1: the bias
      if (t < 0 && !r.db) continue;
      const float* g = r.g + v;
      const XT* x = t < 0 ? nullptr : (const XT*)r.x[t] + v;
      __m512 p[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
      int64_t j = 0;
      if (t < 0) {
        for (; j + 4 <= r.m; j += 4)
#pragma GCC unroll 4
          for (int u = 0; u < 4; ++u) p[u] = _mm512_add_ps(p[u], load16(g + (j + u) * gs, k));
        for (; j < r.m; ++j) p[j % 4] = _mm512_add_ps(p[j % 4], load16(g + j * gs, k));
      } else {
        for (; j + 4 <= r.m; j += 4)
#pragma GCC unroll 4
          for (int u = 0; u < 4; ++u) p[u] = _mm512_fmadd_ps(load16(g + (j + u) * gs, k), load16(x + (j + u) * xs, k), p[u]);
        for (; j < r.m; ++j) p[j % 4] = _mm512_fmadd_ps(load16(g + j * gs, k), load16(x + j * xs, k), p[j % 4]);
      }
      float* out = (t < 0 ? r.db : r.dw[t]) + v;
      const __m512 sum = _mm512_add_ps(_mm512_add_ps(p[0], p[1]), _mm512_add_ps(p[2], p[3]));
      _mm512_mask_storeu_ps(out, k, _mm512_add_ps(_mm512_maskz_loadu_ps(k, out), sum));
    }
  }
}

}  // namespace

void depthwise_forward__avx512(const depthwise_row& r) {
  const bool xb = r.xt == element::bf16, yb = r.yt == element::bf16;
  if (!xb && !yb) return forward<float, float>(r);
  if (!xb) return forward<float, uint16_t>(r);
  if (!yb) return forward<uint16_t, float>(r);
  forward<uint16_t, uint16_t>(r);
}

void depthwise_weight_grad__avx512(const depthwise_grad_row& r) {
  if (r.xt == element::bf16) return weight_grad<uint16_t>(r);
  weight_grad<float>(r);
}

}  // namespace brgemm::kernels
