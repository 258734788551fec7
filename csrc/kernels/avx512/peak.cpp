// Register-only FMA loop for `python -m brgemm peak`: 12 independent zmm accumulators hide
// the FMA latency, no memory traffic.
#include <immintrin.h>
#include "../ukernels.h"

namespace brgemm::kernels {

double peak_fma_f32__avx512(int64_t iters) {
  __m512 acc[12];
  const __m512 x = _mm512_set1_ps(1.0f + 1e-7f), y = _mm512_set1_ps(1e-7f);
  for (int j = 0; j < 12; ++j) acc[j] = _mm512_set1_ps((float)j);
  for (int64_t i = 0; i < iters; ++i)
#pragma GCC unroll 12
    for (int j = 0; j < 12; ++j) acc[j] = _mm512_fmadd_ps(acc[j], x, y);
  __m512 s = acc[0];
  for (int j = 1; j < 12; ++j) s = _mm512_add_ps(s, acc[j]);
  volatile float sink = _mm512_reduce_add_ps(s);
  (void)sink;
  return (double)iters * 12 * 16 * 2;
}

}  // namespace brgemm::kernels

namespace brgemm::kernels {

// The int16 peak without VNNI: vpmaddwd + vpaddd (what the avx512 s16s16 kernels issue). The
// empty asm hides that x is loop-invariant, so that gcc cannot hoist or merge the products.
double peak_dot_s16s16__avx512(int64_t iters) {
  __m512i acc[12];
  __m512i x = _mm512_set1_epi16(3);
  const __m512i y = _mm512_set1_epi16(-5);
  for (int j = 0; j < 12; ++j) acc[j] = _mm512_set1_epi32(j);
  for (int64_t i = 0; i < iters; ++i)
#pragma GCC unroll 12
    for (int j = 0; j < 12; ++j) {
      __asm__ volatile("" : "+v"(x));
      acc[j] = _mm512_add_epi32(acc[j], _mm512_madd_epi16(x, y));
    }
  __m512i s = acc[0];
  for (int j = 1; j < 12; ++j) s = _mm512_add_epi32(s, acc[j]);
  volatile int sink = _mm512_reduce_add_epi32(s);
  (void)sink;
  return (double)iters * 12 * 32 * 2;
}

}  // namespace brgemm::kernels
