// The element-wise functions over arrays with AVX-512: 16 values a step, the last step masked.
#include "../ukernels.h"
#include "activation.h"

namespace brgemm::kernels {

namespace {

// The K-TanH family on 32 values as two f32 vectors: the IEEE steps of activation16, with the
// K-TanH step done on both vectors' bf16 halves in one register (half the integer work).
template <activation A>
inline void k_family32(__m512 x0, __m512 x1, const ktanh_table32& t, __m512* y0, __m512* y1) {
  const __m512 half = _mm512_set1_ps(0.5f), one = _mm512_set1_ps(1.0f);
  __m512 u0 = x0, u1 = x1;
  if (A == activation::ksigmoid || A == activation::kswish) {
    u0 = _mm512_mul_ps(x0, half);
    u1 = _mm512_mul_ps(x1, half);
  } else if (A == activation::kgelu) {
    const __m512 c = _mm512_set1_ps(brgemm_gelu_c), k = _mm512_set1_ps(brgemm_gelu_a);
    u0 = _mm512_mul_ps(c, _mm512_add_ps(x0, _mm512_mul_ps(k, _mm512_mul_ps(_mm512_mul_ps(x0, x0), x0))));
    u1 = _mm512_mul_ps(c, _mm512_add_ps(x1, _mm512_mul_ps(k, _mm512_mul_ps(_mm512_mul_ps(x1, x1), x1))));
  }
  ktanh2x16(u0, u1, t, y0, y1);
  if (A == activation::ksigmoid || A == activation::kswish) {
    *y0 = _mm512_mul_ps(_mm512_add_ps(one, *y0), half);
    *y1 = _mm512_mul_ps(_mm512_add_ps(one, *y1), half);
    if (A == activation::kswish) {
      *y0 = _mm512_mul_ps(x0, *y0);
      *y1 = _mm512_mul_ps(x1, *y1);
    }
  } else if (A == activation::kgelu) {
    *y0 = _mm512_mul_ps(_mm512_mul_ps(x0, half), _mm512_add_ps(one, *y0));
    *y1 = _mm512_mul_ps(_mm512_mul_ps(x1, half), _mm512_add_ps(one, *y1));
  }
  *y0 = _mm512_mask_mov_ps(*y0, _mm512_cmp_ps_mask(x0, x0, _CMP_UNORD_Q), x0);  // NaN stays NaN
  *y1 = _mm512_mask_mov_ps(*y1, _mm512_cmp_ps_mask(x1, x1, _CMP_UNORD_Q), x1);
}

template <activation A>
void k_family_f32(const float* x, float* y, int64_t n) {
  const ktanh_table32 t;
  for (int64_t i = 0; i < n; i += 32) {
    const int64_t left = n - i;
    const __mmask16 k0 = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1u);
    const __mmask16 k1 = left >= 32 ? (__mmask16)0xFFFF : left <= 16 ? (__mmask16)0 : (__mmask16)((1u << (left - 16)) - 1u);
    __m512 y0, y1;
    k_family32<A>(_mm512_maskz_loadu_ps(k0, x + i), _mm512_maskz_loadu_ps(k1, x + i + 16), t, &y0, &y1);
    _mm512_mask_storeu_ps(y + i, k0, y0);
    _mm512_mask_storeu_ps(y + i + 16, k1, y1);
  }
}

}  // namespace

void activation_f32__avx512(activation a, const float* x, float* y, int64_t n) {
  switch (a) {
    case activation::ktanh: return k_family_f32<activation::ktanh>(x, y, n);
    case activation::ksigmoid: return k_family_f32<activation::ksigmoid>(x, y, n);
    case activation::kgelu: return k_family_f32<activation::kgelu>(x, y, n);
    case activation::kswish: return k_family_f32<activation::kswish>(x, y, n);
    default: break;
  }
  const ktanh_table16 t;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, activation16(a, _mm512_loadu_ps(x + i), t));
  if (i < n) {
    const __mmask16 k = (__mmask16)((1u << (n - i)) - 1u);
    _mm512_mask_storeu_ps(y + i, k, activation16(a, _mm512_maskz_loadu_ps(k, x + i), t));
  }
}

void activation_bf16__avx512(activation a, const uint16_t* x, uint16_t* y, int64_t n) {
  if (a == activation::ktanh) {  // bf16 in, bf16 out: the integer algorithm alone, 32 lanes
    const ktanh_table32 t;
    for (int64_t i = 0; i < n; i += 32) {
      const __mmask32 k = n - i >= 32 ? ~(__mmask32)0 : (__mmask32)((1u << (n - i)) - 1u);
      const __m512i h = _mm512_maskz_loadu_epi16(k, x + i);
      const __m512i a16 = _mm512_and_si512(h, _mm512_set1_epi16(0x7FFF));
      const __m512i r = _mm512_mask_mov_epi16(ktanh_bits32(h, t),  // NaN: quieted, as bf16 rounding does
                                              _mm512_cmpgt_epu16_mask(a16, _mm512_set1_epi16(0x7F80)),
                                              _mm512_or_si512(h, _mm512_set1_epi16(0x40)));
      _mm512_mask_storeu_epi16(y + i, k, r);
    }
    return;
  }
  const ktanh_table16 t;
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 k = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1u);
    const __m512i h = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(k, x + i));
    const __m512 v = activation16(a, _mm512_castsi512_ps(_mm512_slli_epi32(h, 16)), t);
    _mm256_mask_storeu_epi16(y + i, k, _mm512_cvtepi32_epi16(bf16_rne(v)));
  }
}

}  // namespace brgemm::kernels
