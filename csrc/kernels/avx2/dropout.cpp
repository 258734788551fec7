// Dropout's mask and scale with AVX2: 8 counters hashed per step (vpmulld), the unsigned compare
// to the threshold as a signed one on sign-flipped values, one multiply by scale or 0; the tail
// by the twin. The twin's bits.
#include <immintrin.h>
#include "../ukernels.h"
#include "../dropout_twin.h"

namespace brgemm::kernels {

namespace {

inline __m256i lowbias32(__m256i x) {
  x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
  x = _mm256_mullo_epi32(x, _mm256_set1_epi32(0x7feb352d));
  x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 15));
  x = _mm256_mullo_epi32(x, _mm256_set1_epi32((int)0x846ca68bu));
  return _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
}

}  // namespace

void dropout__avx2(const dropout_key& k, const float* x, float* y, int64_t n) {
  const __m256i sign = _mm256_set1_epi32((int)0x80000000u);
  const __m256i k0 = _mm256_set1_epi32((int)k.k0), k1 = _mm256_set1_epi32((int)k.k1);
  const __m256i threshold = _mm256_xor_si256(_mm256_set1_epi32((int)k.threshold), sign), step = _mm256_set1_epi32(8);
  const __m256 scale = _mm256_set1_ps(k.scale);
  __m256i c = _mm256_add_epi32(_mm256_set1_epi32((int)k.lo), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i h = lowbias32(_mm256_xor_si256(lowbias32(_mm256_xor_si256(c, k0)), k1));
    // h < threshold (unsigned) ⟺ threshold > h after flipping both signs: those are dropped.
    const __m256 dropped = _mm256_castsi256_ps(_mm256_cmpgt_epi32(threshold, _mm256_xor_si256(h, sign)));
    _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), _mm256_andnot_ps(dropped, scale)));
    c = _mm256_add_epi32(c, step);
  }
  brgemm_dropout_twin(k, x, y, i, n);
}

}  // namespace brgemm::kernels
