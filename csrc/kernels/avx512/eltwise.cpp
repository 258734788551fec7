// The element-wise functions over arrays with AVX-512: the K-TanH family 32 values a step, the
// others 16; the last step masked.
#include "../ukernels.h"
#include "activation.h"

namespace brgemm::kernels {

namespace {

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
  const ktanh_table32 t;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, activation16(a, _mm512_loadu_ps(x + i), t));
  if (i < n) {
    const __mmask16 k = (__mmask16)((1u << (n - i)) - 1u);
    _mm512_mask_storeu_ps(y + i, k, activation16(a, _mm512_maskz_loadu_ps(k, x + i), t));
  }
}

// 16 values a step, the last step masked: the conversions a bf16 layer runs between its f32
// results and its next product (rounded as the scalar twin: bf16_rne).
void f32_to_bf16__avx512(const float* x, uint16_t* y, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 k = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1u);
    _mm256_mask_storeu_epi16(y + i, k, _mm512_cvtepi32_epi16(bf16_rne(_mm512_maskz_loadu_ps(k, x + i))));
  }
}

void bf16_to_f32__avx512(const uint16_t* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 k = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1u);
    const __m512i h = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(k, x + i));
    _mm512_mask_storeu_ps(y + i, k, _mm512_castsi512_ps(_mm512_slli_epi32(h, 16)));
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
  const ktanh_table32 t;
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 k = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1u);
    const __m512i h = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(k, x + i));
    const __m512 v = activation16(a, _mm512_castsi512_ps(_mm512_slli_epi32(h, 16)), t);
    _mm256_mask_storeu_epi16(y + i, k, _mm512_cvtepi32_epi16(bf16_rne(v)));
  }
}

// relu and relu6: g where 0 < y (< 6), else +0, as the twin; the others the twin's loop.
void activation_backward_f32__avx512(activation a, const float* g, const float* x, const float* y, float* out,
                                     int64_t n) {
  if (a != activation::relu && a != activation::relu6) return activation_backward_f32__scalar(a, g, x, y, out, n);
  const __m512 zero = _mm512_setzero_ps(), six = _mm512_set1_ps(6.0f);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 k = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1u);
    const __m512 yv = _mm512_maskz_loadu_ps(k, y + i);
    __mmask16 pass = _mm512_cmp_ps_mask(yv, zero, _CMP_GT_OQ);
    if (a == activation::relu6) pass &= _mm512_cmp_ps_mask(yv, six, _CMP_LT_OQ);
    const __m512 r = _mm512_maskz_mov_ps(pass, _mm512_maskz_loadu_ps(k, g + i));
    if (k == (__mmask16)0xFFFF)
      _mm512_storeu_ps(out + i, r);  // unmasked: Zen 4's masked stores are slow
    else
      _mm512_mask_storeu_ps(out + i, k, r);
  }
}

}  // namespace brgemm::kernels
