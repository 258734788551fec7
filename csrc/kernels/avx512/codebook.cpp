// The shared-weight products of brgemm/codebook.h with AVX-512: a panel row of indices decoded to
// four vectors of 16 weights in registers (b ≤ 4: a shift per lane, then vpermps on the 16-entry
// codebook held in one
// register; b = 5: vpermi2ps on two; b ≥ 6: vpermi2ps on each pair of 2^(b−5), then a tree of
// blends on the index's high bits — measured 8x faster than a gather at b = 8), then one
// fused multiply-add per row of A and vector, in k order as the scalar twin.
#include <immintrin.h>
#include <algorithm>
#include "../ukernels.h"

namespace brgemm::kernels {

namespace {

inline __mmask16 lanes(int64_t n) { return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? 0 : (__mmask16)((1u << n) - 1u); }

// The 64 weights of one panel row, as w[0..3] (columns 16v .. 16v + 15).
template <int Kind>  // 0: nibbles, 1: bytes, two-register permute (Kind 2, b ≥ 6: rows_tree)
inline void decode(const uint8_t* row, __m512 cb0, __m512 cb1, const float*, __m512 w[4]) {
  if constexpr (Kind == 0) {
    // the row's eight words in both halves; vector v wants nibble 2v (low half), 2v + 1 (high)
    const __m512i words = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i*)row));
    const __m512i shift = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 4, 4, 4, 4, 4, 4, 4, 4);
    for (int v = 0; v < 4; ++v)  // vpermps reads the low 4 bits of each lane
      w[v] = _mm512_permutexvar_ps(_mm512_srlv_epi32(words, _mm512_add_epi32(shift, _mm512_set1_epi32(8 * v))), cb0);
  } else {
    for (int v = 0; v < 4; ++v) {
      const __m512i idx = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)(row + 16 * v)));
      w[v] = _mm512_permutex2var_ps(cb0, idx, cb1);
    }
  }
}

// C's rows i0.. of the panel's columns j0 .. j0 + cols: the sums (+ bias, one rounding).
template <int MR>
void store(const codebook_product& p, const __m512 (&acc)[MR][4], int64_t i0, int64_t j0, int64_t cols) {
  for (int v = 0; v < 4; ++v) {
    const __mmask16 k = lanes(cols - 16 * v);
    if (!k) break;
    const __m512 b = p.bias ? _mm512_maskz_loadu_ps(k, p.bias + j0 + 16 * v) : _mm512_setzero_ps();
    for (int i = 0; i < MR; ++i) {
      const __m512 y = p.bias ? _mm512_add_ps(acc[i][v], b) : acc[i][v];
      _mm512_mask_storeu_ps(p.c + (i0 + i) * p.ldc + j0 + 16 * v, k, y);
    }
  }
}

template <int Kind, int MR>
void rows(const codebook_product& p, const uint8_t* panel, int64_t i0, int64_t j0, int64_t cols, __m512 cb0,
          __m512 cb1) {
  const int64_t rb = codebook_row_bytes(p.bits);
  __m512 acc[MR][4];
  for (int i = 0; i < MR; ++i)
    for (int v = 0; v < 4; ++v) acc[i][v] = _mm512_setzero_ps();
  const float* a = p.a + i0 * p.lda;
  for (int64_t r = 0; r < p.k; ++r) {
    __m512 w[4];
    decode<Kind>(panel + r * rb, cb0, cb1, p.codebook, w);
    for (int i = 0; i < MR; ++i) {
      const __m512 x = _mm512_set1_ps(a[i * p.lda + r]);
      for (int v = 0; v < 4; ++v) acc[i][v] = _mm512_fmadd_ps(x, w[v], acc[i][v]);
    }
  }
  store<MR>(p, acc, i0, j0, cols);
}

// b ≥ 6, one row of A at a time: the codebook in G pairs of registers (32 entries each); an index's
// low 5 bits pick within every pair (vpermi2ps), its higher bits pick the pair (a tree of blends).
// The weights of entries [32·g0, 32·(g0 + G)) that idx picks, depth first (few live registers).
template <int G, int g0>
inline __m512 pick(const __m512* cb, __m512i idx, const __mmask16* hi) {
  if constexpr (G == 1) {
    return _mm512_permutex2var_ps(cb[2 * g0], idx, cb[2 * g0 + 1]);
  } else {
    const __m512 a = pick<G / 2, g0>(cb, idx, hi), b = pick<G / 2, g0 + G / 2>(cb, idx, hi);
    return _mm512_mask_blend_ps(hi[G == 2 ? 0 : G == 4 ? 1 : 2], a, b);
  }
}

template <int G>
void rows_tree(const codebook_product& p, const uint8_t* panel, int64_t i, int64_t j0, int64_t cols) {
  const int64_t entries = int64_t(1) << p.bits;
  __m512 cb[2 * G];
  for (int g = 0; g < 2 * G; ++g) cb[g] = _mm512_maskz_loadu_ps(lanes(entries - 16 * g), p.codebook + 16 * g);
  __m512 acc[1][4];
  for (int v = 0; v < 4; ++v) acc[0][v] = _mm512_setzero_ps();
  const float* a = p.a + i * p.lda;
  for (int64_t r = 0; r < p.k; ++r) {
    const __m512 x = _mm512_set1_ps(a[r]);
    for (int v = 0; v < 4; ++v) {
      const __m512i idx = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)(panel + r * 64 + 16 * v)));
      __mmask16 hi[3];  // bits 5, 6, 7 of each index
      for (int l = 0; l < 3; ++l) hi[l] = _mm512_test_epi32_mask(idx, _mm512_set1_epi32(32 << l));
      const __m512 w = pick<G, 0>(cb, idx, hi);
      acc[0][v] = _mm512_fmadd_ps(x, w, acc[0][v]);
    }
  }
  store<1>(p, acc, i, j0, cols);
}

template <int Kind>
void panels(const codebook_product& p, int64_t p0, int64_t p1) {
  const int64_t entries = int64_t(1) << p.bits;
  const __m512 cb0 = _mm512_maskz_loadu_ps(lanes(entries), p.codebook);
  const __m512 cb1 = entries > 16 ? _mm512_maskz_loadu_ps(lanes(entries - 16), p.codebook + 16) : _mm512_setzero_ps();
  const int64_t rb = codebook_row_bytes(p.bits);
  for (int64_t pn = p0; pn < p1; ++pn) {
    const uint8_t* panel = p.b + pn * p.k * rb;
    const int64_t j0 = pn * codebook_panel, cols = std::min(codebook_panel, p.n - j0);
    if constexpr (Kind == 2) {
      for (int64_t i = 0; i < p.m; ++i) {
        if (p.bits == 6)
          rows_tree<2>(p, panel, i, j0, cols);
        else if (p.bits == 7)
          rows_tree<4>(p, panel, i, j0, cols);
        else
          rows_tree<8>(p, panel, i, j0, cols);
      }
      continue;
    }
    int64_t i = 0;
    for (; i + 4 <= p.m; i += 4) rows<Kind, 4>(p, panel, i, j0, cols, cb0, cb1);
    switch (p.m - i) {
      case 3: rows<Kind, 3>(p, panel, i, j0, cols, cb0, cb1); break;
      case 2: rows<Kind, 2>(p, panel, i, j0, cols, cb0, cb1); break;
      case 1: rows<Kind, 1>(p, panel, i, j0, cols, cb0, cb1); break;
      default: break;
    }
  }
}

}  // namespace

void codebook_gemm__avx512(const codebook_product& p, int64_t p0, int64_t p1) {
  if (p.bits <= 4)
    panels<0>(p, p0, p1);
  else if (p.bits == 5)
    panels<1>(p, p0, p1);
  else
    panels<2>(p, p0, p1);
}

}  // namespace brgemm::kernels
