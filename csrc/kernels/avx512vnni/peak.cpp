// Register-only vpdpbusd loop (u8 × s8 → s32, 4 products per lane) for `python -m brgemm peak`.
#include <immintrin.h>
#include "../ukernels.h"

namespace brgemm::kernels {

double peak_dot_u8s8__avx512vnni(int64_t iters) {
  __m512i acc[12];
  const __m512i x = _mm512_set1_epi8(3), y = _mm512_set1_epi8(-5);
  for (int j = 0; j < 12; ++j) acc[j] = _mm512_set1_epi32(j);
  for (int64_t i = 0; i < iters; ++i)
#pragma GCC unroll 12
    for (int j = 0; j < 12; ++j) acc[j] = _mm512_dpbusd_epi32(acc[j], x, y);
  __m512i s = acc[0];
  for (int j = 1; j < 12; ++j) s = _mm512_add_epi32(s, acc[j]);
  volatile int sink = _mm512_reduce_add_epi32(s);
  (void)sink;
  return (double)iters * 12 * 64 * 2;
}

}  // namespace brgemm::kernels

namespace brgemm::kernels {

// Register-only vpdpwssd loop (s16 × s16 → s32, 2 products per lane): the int16 peak.
double peak_dot_s16s16__avx512vnni(int64_t iters) {
  __m512i acc[12];
  const __m512i x = _mm512_set1_epi16(3), y = _mm512_set1_epi16(-5);
  for (int j = 0; j < 12; ++j) acc[j] = _mm512_set1_epi32(j);
  for (int64_t i = 0; i < iters; ++i)
#pragma GCC unroll 12
    for (int j = 0; j < 12; ++j) acc[j] = _mm512_dpwssd_epi32(acc[j], x, y);
  __m512i s = acc[0];
  for (int j = 1; j < 12; ++j) s = _mm512_add_epi32(s, acc[j]);
  volatile int sink = _mm512_reduce_add_epi32(s);
  (void)sink;
  return (double)iters * 12 * 32 * 2;
}

}  // namespace brgemm::kernels
