// Register-only vdpbf16ps loop (bf16 pairs → f32) for `python -m brgemm peak`.
#include <immintrin.h>
#include "../ukernels.h"

namespace brgemm::kernels {

double peak_dot_bf16__avx512bf16(int64_t iters) {
  __m512 acc[12];
  const __m512bh x = (__m512bh)_mm512_set1_epi16(0x3f80), y = (__m512bh)_mm512_set1_epi16(0x3400);
  for (int j = 0; j < 12; ++j) acc[j] = _mm512_set1_ps((float)j);
  for (int64_t i = 0; i < iters; ++i)
#pragma GCC unroll 12
    for (int j = 0; j < 12; ++j) acc[j] = _mm512_dpbf16_ps(acc[j], x, y);
  __m512 s = acc[0];
  for (int j = 1; j < 12; ++j) s = _mm512_add_ps(s, acc[j]);
  volatile float sink = _mm512_reduce_add_ps(s);
  (void)sink;
  return (double)iters * 12 * 32 * 2;
}

}  // namespace brgemm::kernels
