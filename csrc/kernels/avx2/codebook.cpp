// The shared-weight products of brgemm/codebook.h with AVX2: a panel is done in two halves of 32
// columns (four vectors of 8 accumulators per row of A); indices are widened in registers (b ≤ 4:
// two vpermps on the codebook's halves, the index's bit 3 choosing; b ≥ 5: a gather), then one
// fused multiply-add per row and vector, in k order as the scalar twin.
#include <immintrin.h>
#include <algorithm>
#include "../ukernels.h"

namespace brgemm::kernels {

namespace {

inline __m256i mask8(int64_t n) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)std::max<int64_t>(0, std::min<int64_t>(n, 8))), lane);
}

// Weights of columns [32h + 8t, 32h + 8t + 8) of one panel row.
template <bool Nibbles>
inline __m256 decode(const uint8_t* row, int h, int t, __m256 lo, __m256 hi, const float* table) {
  if constexpr (Nibbles) {  // columns 8t'..8t'+7 are nibble t' = 4h + t of the row's eight words
    const __m256i words = _mm256_loadu_si256((const __m256i*)row);
    const __m256i idx = _mm256_and_si256(_mm256_srli_epi32(words, 4 * (4 * h + t)), _mm256_set1_epi32(15));
    const __m256 a = _mm256_permutevar8x32_ps(lo, idx), b = _mm256_permutevar8x32_ps(hi, idx);
    return _mm256_blendv_ps(a, b, _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));  // bit 3 picks the half
  } else {
    const __m256i idx = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)(row + 32 * h + 8 * t)));
    return _mm256_i32gather_ps(table, idx, 4);
  }
}

template <bool Nibbles>
void panels(const codebook_product& p, int64_t p0, int64_t p1) {
  const int64_t rb = codebook_row_bytes(p.bits), entries = int64_t(1) << p.bits;
  const __m256 lo = _mm256_maskload_ps(p.codebook, mask8(entries));
  const __m256 hi = entries > 8 ? _mm256_maskload_ps(p.codebook + 8, mask8(entries - 8)) : _mm256_setzero_ps();
  for (int64_t pn = p0; pn < p1; ++pn) {
    const uint8_t* panel = p.b + pn * p.k * rb;
    const int64_t j0 = pn * codebook_panel, cols = std::min(codebook_panel, p.n - j0);
    for (int h = 0; h < 2 && 32 * h < cols; ++h)
      for (int64_t i = 0; i < p.m; ++i) {
        const float* a = p.a + i * p.lda;
        __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
        for (int64_t r = 0; r < p.k; ++r) {
          const __m256 x = _mm256_set1_ps(a[r]);
          const uint8_t* row = panel + r * rb;
          for (int t = 0; t < 4; ++t) acc[t] = _mm256_fmadd_ps(x, decode<Nibbles>(row, h, t, lo, hi, p.codebook), acc[t]);
        }
        for (int t = 0; t < 4; ++t) {
          const int64_t j = j0 + 32 * h + 8 * t;
          const __m256i m = mask8(cols - 32 * h - 8 * t);
          __m256 y = acc[t];
          if (p.bias) y = _mm256_add_ps(y, _mm256_maskload_ps(p.bias + j, m));
          _mm256_maskstore_ps(p.c + i * p.ldc + j, m, y);
        }
      }
  }
}

}  // namespace

void codebook_gemm__avx2(const codebook_product& p, int64_t p0, int64_t p1) {
  if (p.bits <= 4)
    panels<true>(p, p0, p1);
  else
    panels<false>(p, p0, p1);
}

}  // namespace brgemm::kernels
