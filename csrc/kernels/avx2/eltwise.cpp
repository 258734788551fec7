// The element-wise functions over arrays with AVX2: 8 values a step, the tail through the
// scalar twin (which gives the same bits).
#include "../ukernels.h"
#include "../epilogue_twin.h"
#include "activation.h"

namespace brgemm::kernels {

void activation_f32__avx2(activation a, const float* x, float* y, int64_t n) {
  const ktanh_table8 t;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, activation8(a, _mm256_loadu_ps(x + i), t));
  for (; i < n; ++i) y[i] = brgemm_activation(a, x[i]);
}

void activation_bf16__avx2(activation a, const uint16_t* x, uint16_t* y, int64_t n) {
  const ktanh_table8 t;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)(x + i)));
    const __m256 v = activation8(a, _mm256_castsi256_ps(_mm256_slli_epi32(h, 16)), t);
    _mm_storeu_si128((__m128i*)(y + i), narrow16(bf16_rne(v)));
  }
  for (; i < n; ++i) y[i] = brgemm_bf16_rne(brgemm_activation(a, brgemm_from_bits((uint32_t)x[i] << 16)));
}

}  // namespace brgemm::kernels
