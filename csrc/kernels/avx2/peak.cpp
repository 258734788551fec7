// Register-only FMA loop (ymm) for `python -m brgemm peak`; see avx512/peak.cpp.
#include <immintrin.h>
#include "../ukernels.h"

namespace brgemm::kernels {

double peak_fma_f32__avx2(int64_t iters) {
  __m256 acc[12];
  const __m256 x = _mm256_set1_ps(1.0f + 1e-7f), y = _mm256_set1_ps(1e-7f);
  for (int j = 0; j < 12; ++j) acc[j] = _mm256_set1_ps((float)j);
  for (int64_t i = 0; i < iters; ++i)
#pragma GCC unroll 12
    for (int j = 0; j < 12; ++j) acc[j] = _mm256_fmadd_ps(acc[j], x, y);
  __m256 s = acc[0];
  for (int j = 1; j < 12; ++j) s = _mm256_add_ps(s, acc[j]);
  float out[8];
  _mm256_storeu_ps(out, s);
  volatile float sink = out[0];
  (void)sink;
  return (double)iters * 12 * 8 * 2;
}

}  // namespace brgemm::kernels

namespace brgemm::kernels {

// The int16 peak of AVX2: vpmaddwd + vpaddd on ymm; see avx512/peak.cpp.
double peak_dot_s16s16__avx2(int64_t iters) {
  __m256i acc[12];
  __m256i x = _mm256_set1_epi16(3);
  const __m256i y = _mm256_set1_epi16(-5);
  for (int j = 0; j < 12; ++j) acc[j] = _mm256_set1_epi32(j);
  for (int64_t i = 0; i < iters; ++i)
#pragma GCC unroll 12
    for (int j = 0; j < 12; ++j) {
      __asm__ volatile("" : "+x"(x));
      acc[j] = _mm256_add_epi32(acc[j], _mm256_madd_epi16(x, y));
    }
  __m256i s = acc[0];
  for (int j = 1; j < 12; ++j) s = _mm256_add_epi32(s, acc[j]);
  int out[8];
  _mm256_storeu_si256((__m256i*)out, s);
  volatile int sink = out[0];
  (void)sink;
  return (double)iters * 12 * 16 * 2;
}

}  // namespace brgemm::kernels
