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

// 8 values a step, the tail the twin's.
void f32_to_bf16__avx2(const float* x, uint16_t* y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm_storeu_si128((__m128i*)(y + i), narrow16(bf16_rne(_mm256_loadu_ps(x + i))));
  f32_to_bf16__scalar(x + i, y + i, n - i);
}

void bf16_to_f32__avx2(const uint16_t* x, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)(x + i)));
    _mm256_storeu_ps(y + i, _mm256_castsi256_ps(_mm256_slli_epi32(h, 16)));
  }
  bf16_to_f32__scalar(x + i, y + i, n - i);
}

// relu and relu6: g where 0 < y (< 6), else +0, as the twin; the others (and the tail) the twin's.
void activation_backward_f32__avx2(activation a, const float* g, const float* x, const float* y, float* out,
                                   int64_t n) {
  if (a != activation::relu && a != activation::relu6) return activation_backward_f32__scalar(a, g, x, y, out, n);
  const __m256 zero = _mm256_setzero_ps(), six = _mm256_set1_ps(6.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 yv = _mm256_loadu_ps(y + i);
    __m256 pass = _mm256_cmp_ps(yv, zero, _CMP_GT_OQ);
    if (a == activation::relu6) pass = _mm256_and_ps(pass, _mm256_cmp_ps(yv, six, _CMP_LT_OQ));
    _mm256_storeu_ps(out + i, _mm256_and_ps(pass, _mm256_loadu_ps(g + i)));
  }
  if (i < n) activation_backward_f32__scalar(a, g + i, x ? x + i : nullptr, y + i, out + i, n - i);
}

}  // namespace brgemm::kernels
