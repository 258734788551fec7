// The element-wise functions over arrays with AVX-512: 16 values a step, the last step masked.
#include "../ukernels.h"
#include "activation.h"

namespace brgemm::kernels {

void activation_f32__avx512(activation a, const float* x, float* y, int64_t n) {
  const ktanh_table16 t;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, activation16(a, _mm512_loadu_ps(x + i), t));
  if (i < n) {
    const __mmask16 k = (__mmask16)((1u << (n - i)) - 1u);
    _mm512_mask_storeu_ps(y + i, k, activation16(a, _mm512_maskz_loadu_ps(k, x + i), t));
  }
}

void activation_bf16__avx512(activation a, const uint16_t* x, uint16_t* y, int64_t n) {
  const ktanh_table16 t;
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 k = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1u);
    const __m512i h = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(k, x + i));
    const __m512 v = activation16(a, _mm512_castsi512_ps(_mm512_slli_epi32(h, 16)), t);
    _mm256_mask_storeu_epi16(y + i, k, _mm512_cvtepi32_epi16(bf16_rne(v)));
  }
}

}  // namespace brgemm::kernels
