// Dropout's mask and scale with AVX-512: 16 counters hashed per step (vpmulld), an unsigned
// compare to the threshold, one multiply by scale or 0; the last step masked. The twin's bits.
#include <immintrin.h>
#include "../ukernels.h"
#include "../dropout_twin.h"

namespace brgemm::kernels {

namespace {

inline __m512i lowbias32(__m512i x) {
  x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
  x = _mm512_mullo_epi32(x, _mm512_set1_epi32(0x7feb352d));
  x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 15));
  x = _mm512_mullo_epi32(x, _mm512_set1_epi32((int)0x846ca68bu));
  return _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
}

}  // namespace

void dropout__avx512(const dropout_key& k, const float* x, float* y, int64_t n) {
  const __m512i k0 = _mm512_set1_epi32((int)k.k0), k1 = _mm512_set1_epi32((int)k.k1);
  const __m512i threshold = _mm512_set1_epi32((int)k.threshold), step = _mm512_set1_epi32(16);
  const __m512 scale = _mm512_set1_ps(k.scale);
  __m512i c = _mm512_add_epi32(_mm512_set1_epi32((int)k.lo),
                               _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 in = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1u);
    const __m512i h = lowbias32(_mm512_xor_si512(lowbias32(_mm512_xor_si512(c, k0)), k1));
    const __m512 f = _mm512_maskz_mov_ps(_mm512_cmpge_epu32_mask(h, threshold), scale);
    _mm512_mask_storeu_ps(y + i, in, _mm512_mul_ps(_mm512_maskz_loadu_ps(in, x + i), f));
    c = _mm512_add_epi32(c, step);
  }
}

}  // namespace brgemm::kernels
