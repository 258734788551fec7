// AVX2 DFP-16 conversions (brgemm/dfp.h), 8 floats a step, the tail by the scalar twin
// (../dfp_twin.h), whose bits they give; as avx512/dfp.cpp with ymm (narrowed by vpackssdw after
// the clamp, so its saturation never acts).
#include <immintrin.h>
#include "../ukernels.h"
#include "../dfp_twin.h"

namespace brgemm::kernels {

uint32_t dfp_absmax_bits__avx2(const float* x, int64_t n) {
  const __m256i abs = _mm256_set1_epi32(0x7FFFFFFF);
  __m256i best0 = _mm256_setzero_si256(), best1 = best0;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    best0 = _mm256_max_epu32(best0, _mm256_and_si256(_mm256_loadu_si256((const __m256i*)(x + i)), abs));
    best1 = _mm256_max_epu32(best1, _mm256_and_si256(_mm256_loadu_si256((const __m256i*)(x + i + 8)), abs));
  }
  uint32_t lanes[8];
  _mm256_storeu_si256((__m256i*)lanes, _mm256_max_epu32(best0, best1));
  uint32_t best = 0;
  for (uint32_t u : lanes) best = u > best ? u : best;
  return brgemm_dfp_absmax_twin(x + i, n - i, best);
}

void dfp_quantize__avx2(const float* x, int16_t* m, int64_t n, float s1, float s2) {
  const __m256 v1 = _mm256_set1_ps(s1), v2 = _mm256_set1_ps(s2);
  const __m256 hi = _mm256_set1_ps(32767.0f), lo = _mm256_set1_ps(-32767.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), v1), v2);
    const __m256i q = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(v, lo), hi));
    const __m128i packed = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
    _mm_storeu_si128((__m128i*)(m + i), packed);
  }
  brgemm_dfp_quantize_twin(x + i, m + i, n - i, s1, s2);
}

void dfp_dequantize__avx2(const int16_t* m, float* y, int64_t n, float s1, float s2) {
  const __m256 v1 = _mm256_set1_ps(s1), v2 = _mm256_set1_ps(s2);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_cvtepi32_ps(_mm256_cvtepi16_epi32(_mm_loadu_si128((const __m128i*)(m + i))));
    _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_mul_ps(v, v1), v2));
  }
  brgemm_dfp_dequantize_twin(m + i, y + i, n - i, s1, s2);
}

void dfp_scale__avx2(float* y, int64_t n, float s) {
  const __m256 v = _mm256_set1_ps(s);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_loadu_ps(y + i), v));
  brgemm_dfp_scale_twin(y + i, n - i, s);
}

}  // namespace brgemm::kernels
