// The depthwise stencils of brgemm/depthwise.h with AVX-512: 16 channels a register (the last
// one masked when bc is not a multiple of 16), eight results at a time so that eight
// independent sums hide the multiply-add latency, each tap's weights loaded once for the eight.
#include <algorithm>
#include "../depthwise.h"
#include "activation.h"

namespace brgemm::kernels {

namespace {

#define BRGEMM_KLOOP_INLINE inline __attribute__((always_inline))

inline __mmask16 lanes(int64_t left) { return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1u); }

// Loads and stores of a register's lanes under k; a whole register (k all ones) goes unmasked:
// Zen 4 runs masked stores far slower than plain ones.
inline __m512 load16(const float* p, __mmask16 k) {
  return k == (__mmask16)0xFFFF ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(k, p);
}
inline __m512 load16(const uint16_t* p, __mmask16 k) {
  const __m256i h = k == (__mmask16)0xFFFF ? _mm256_loadu_si256((const __m256i*)p) : _mm256_maskz_loadu_epi16(k, p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
inline void store16(float* p, __mmask16 k, __m512 v) {
  if (k == (__mmask16)0xFFFF)
    _mm512_storeu_ps(p, v);
  else
    _mm512_mask_storeu_ps(p, k, v);
}
inline void store16(uint16_t* p, __mmask16 k, __m512 v) {
  const __m256i h = _mm512_cvtepi32_epi16(bf16_rne(v));
  if (k == (__mmask16)0xFFFF)
    _mm256_storeu_si256((__m256i*)p, h);
  else
    _mm256_mask_storeu_epi16(p, k, h);
}

// Taps in runs: tap t + 1 reads, for result j, what tap t reads for result j + 1 (a stride-1,
// dilation-1 row of the kernel), so a run of L taps over U results reads U + L − 1 source
// vectors, each loaded once. chain[t]: the length of the run starting at t (runs of up to 3).
constexpr int max_chained = 64;  // taps beyond: one at a time
inline void find_chains(const depthwise_row& r, int64_t eb, int8_t* chain) {
  for (int64_t t = 0; t < r.taps;) {
    int L = 1;
    while (L < 3 && t + L < r.taps && (const char*)r.x[t + L] == (const char*)r.x[t] + L * r.x_step * eb) ++L;
    chain[t] = (int8_t)L;
    t += L;
  }
}

// U results × one channel vector (lanes k) from result j and channel v, all in registers.
template <class XT, class YT, int U>
BRGEMM_KLOOP_INLINE void block(const depthwise_row& r, const int8_t* chain, int64_t j, int64_t v, __mmask16 k,
                               const ktanh_table32& tab) {
  const int64_t xs = r.x_step, ys = r.y_step;
  __m512 acc[U];
  acc[0] = r.bias ? load16(r.bias + v, k) : _mm512_setzero_ps();
#pragma GCC unroll 8
  for (int u = 1; u < U; ++u) acc[u] = acc[0];
  for (int64_t t = 0; t < r.taps;) {
    const XT* x = (const XT*)r.x[t] + j * xs + v;
    const int L = chain ? chain[t] : 1;
    if (L == 3) {
      __m512 win[U + 2];
#pragma GCC unroll 10
      for (int i = 0; i < U + 2; ++i) win[i] = load16(x + i * xs, k);
#pragma GCC unroll 3
      for (int i = 0; i < 3; ++i) {
        const __m512 w = load16(r.w[t + i] + v, k);
#pragma GCC unroll 8
        for (int u = 0; u < U; ++u) acc[u] = _mm512_fmadd_ps(w, win[u + i], acc[u]);
      }
    } else {
#pragma GCC unroll 2
      for (int i = 0; i < L; ++i) {
        const __m512 w = load16(r.w[t + i] + v, k);
#pragma GCC unroll 8
        for (int u = 0; u < U; ++u) acc[u] = _mm512_fmadd_ps(w, load16(x + (u + i) * xs, k), acc[u]);
      }
    }
    t += L;
  }
  // y, add and act read once: the intrinsics' stores may alias anything, so reading them
  // through r after each store would load them again.
  YT* const y = (YT*)r.y + j * ys + v;
  const YT* const add = (const YT*)r.add;
  const activation act = r.act;
#pragma GCC unroll 8
  for (int u = 0; u < U; ++u) {
    __m512 v_ = acc[u];
    if (add) v_ = _mm512_add_ps(v_, load16(add + (j + u) * ys + v, k));
    store16(y + u * ys, k, activation16(act, v_, tab));
  }
}

// Results in blocks of eight, and in each block the channel vectors one after another: the
// sources of a block (a few pixels of every tap's row, all their channels) are read in address
// order and stay in L1 from one vector to the next. The last m mod 8 results as one block of
// that many (independent sums enough to hide the multiply-add latency from three results on).
template <class XT, class YT>
void forward(const depthwise_row& r) {
  const ktanh_table32 tab;
  const int64_t nv = (r.bc + 15) / 16;
  int8_t chain_buf[max_chained];
  const int8_t* chain = nullptr;
  if (r.taps <= max_chained) {
    find_chains(r, sizeof(XT), chain_buf);
    chain = chain_buf;
  }
  int64_t j = 0;
  for (; j + 8 <= r.m; j += 8)
    for (int64_t v = 0; v < nv * 16; v += 16) block<XT, YT, 8>(r, chain, j, v, lanes(r.bc - v), tab);
  const int64_t rest = r.m - j;
  for (int64_t v = 0; rest && v < nv * 16; v += 16) {
    const __mmask16 k = lanes(r.bc - v);
    switch (rest) {
      case 1: block<XT, YT, 1>(r, chain, j, v, k, tab); break;
      case 2: block<XT, YT, 2>(r, chain, j, v, k, tab); break;
      case 3: block<XT, YT, 3>(r, chain, j, v, k, tab); break;
      case 4: block<XT, YT, 4>(r, chain, j, v, k, tab); break;
      case 5: block<XT, YT, 5>(r, chain, j, v, k, tab); break;
      case 6: block<XT, YT, 6>(r, chain, j, v, k, tab); break;
      default: block<XT, YT, 7>(r, chain, j, v, k, tab); break;
    }
  }
}

// Per tap, the results in blocks of four (four interleaved partial sums), each block's channel
// vectors one after another, up to 64 channels (four vectors) per sweep of the row.
// The weight gradient of a 3-wide stride-1 row (NR runs of 3 taps): vector by vector, the 3·NR
// taps' sums (and the bias's) stay in registers over the whole row, each g_j is loaded once for
// all of them, and each kernel row's sources slide through a window of three registers: one
// new source vector per kernel row and result.
template <class XT, int NR>
void weight_grad3(const depthwise_grad_row& r, bool db) {
  const int64_t gs = r.g_step, xs = r.x_step;
  for (int64_t v = 0; v < r.bc; v += 16) {
    const __mmask16 k = lanes(r.bc - v);
    __m512 acc[3 * NR], bias = _mm512_setzero_ps(), win[NR][2];
    const XT* x[NR];
#pragma GCC unroll 9
    for (int t = 0; t < 3 * NR; ++t) acc[t] = _mm512_setzero_ps();
#pragma GCC unroll 3
    for (int c = 0; c < NR; ++c) {
      x[c] = (const XT*)r.x[3 * c] + v;
      win[c][0] = load16(x[c], k);
      win[c][1] = load16(x[c] + xs, k);
    }
    const float* g = r.g + v;
    for (int64_t j = 0; j < r.m; ++j) {
      const __m512 gv = load16(g + j * gs, k);
      if (db) bias = _mm512_add_ps(bias, gv);
#pragma GCC unroll 3
      for (int c = 0; c < NR; ++c) {
        const __m512 next = load16(x[c] + (j + 2) * xs, k);
        acc[3 * c] = _mm512_fmadd_ps(gv, win[c][0], acc[3 * c]);
        acc[3 * c + 1] = _mm512_fmadd_ps(gv, win[c][1], acc[3 * c + 1]);
        acc[3 * c + 2] = _mm512_fmadd_ps(gv, next, acc[3 * c + 2]);
        win[c][0] = win[c][1];
        win[c][1] = next;
      }
    }
#pragma GCC unroll 9
    for (int t = 0; t < 3 * NR; ++t) store16(r.dw[t] + v, k, _mm512_add_ps(load16(r.dw[t] + v, k), acc[t]));
    if (db) store16(r.db + v, k, _mm512_add_ps(load16(r.db + v, k), bias));
  }
}

template <class XT>
void weight_grad(const depthwise_grad_row& r) {
  if (r.m >= 4 && r.taps <= max_chained && r.taps % 3 == 0 && r.taps <= 9) {
    // The same runs of taps as the forward's (find_chains reads only the sources).
    depthwise_row f;
    f.taps = r.taps, f.x = r.x, f.x_step = r.x_step;
    int8_t chain[max_chained];
    find_chains(f, sizeof(XT), chain);
    bool threes = true;
    for (int64_t t = 0; t < r.taps; t += 3) threes = threes && chain[t] == 3;
    if (threes) {
      switch (r.taps / 3) {
        case 1: return weight_grad3<XT, 1>(r, r.db != nullptr);
        case 2: return weight_grad3<XT, 2>(r, r.db != nullptr);
        default: return weight_grad3<XT, 3>(r, r.db != nullptr);
      }
    }
  }
  const int64_t gs = r.g_step, xs = r.x_step;
  for (int64_t v0 = 0; v0 < r.bc; v0 += 64) {
    const int64_t nw = (std::min<int64_t>(r.bc - v0, 64) + 15) / 16;
    __mmask16 k[4];
    for (int u = 0; u < 4; ++u) k[u] = u < nw ? lanes(r.bc - v0 - u * 16) : (__mmask16)0;
    for (int64_t t = -1; t < r.taps; ++t) {  // t = −1: the bias
      if (t < 0 && !r.db) continue;
      const float* g = r.g + v0;
      const XT* x = t < 0 ? nullptr : (const XT*)r.x[t] + v0;
      __m512 p[4][4];
#pragma GCC unroll 4
      for (int a = 0; a < 4; ++a)
#pragma GCC unroll 4
        for (int u = 0; u < 4; ++u) p[a][u] = _mm512_setzero_ps();
      int64_t j = 0;
      // a: the vector, u: the partial sum (j mod 4)
      auto step = [&](int64_t jj, int u) {
#pragma GCC unroll 4
        for (int a = 0; a < 4; ++a)
          if (a < nw) {
            const __m512 gv = load16(g + jj * gs + a * 16, k[a]);
            p[a][u] = x ? _mm512_fmadd_ps(gv, load16(x + jj * xs + a * 16, k[a]), p[a][u]) : _mm512_add_ps(p[a][u], gv);
          }
      };
      for (; j + 4 <= r.m; j += 4)
#pragma GCC unroll 4
        for (int u = 0; u < 4; ++u) step(j + u, u);
      for (; j < r.m; ++j) step(j, (int)(j % 4));
      float* out = (t < 0 ? r.db : r.dw[t]) + v0;
      for (int a = 0; a < nw; ++a) {
        const __m512 sum = _mm512_add_ps(_mm512_add_ps(p[a][0], p[a][1]), _mm512_add_ps(p[a][2], p[a][3]));
        store16(out + a * 16, k[a], _mm512_add_ps(load16(out + a * 16, k[a]), sum));
      }
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
