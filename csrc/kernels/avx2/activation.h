// The element-wise functions of brgemm.h on 8 floats in a ymm register, shared by the AVX2
// epilogue and array kernels: the scalar twin's operations in the same order (eltwise_twin.h).
// The 32-entry K-TanH table spans four registers: a vpermd into each, then two blends chosen
// by index bits 3 and 4.
#pragma once
#include <immintrin.h>
#include "../eltwise_twin.h"

namespace brgemm::kernels {
namespace {

struct ktanh_table8 {
  __m256i q[4] = {_mm256_loadu_si256((const __m256i*)brgemm_ktanh_packed.v),
                  _mm256_loadu_si256((const __m256i*)(brgemm_ktanh_packed.v + 8)),
                  _mm256_loadu_si256((const __m256i*)(brgemm_ktanh_packed.v + 16)),
                  _mm256_loadu_si256((const __m256i*)(brgemm_ktanh_packed.v + 24))};
};

inline __m256i blend_by_bit(__m256i a, __m256i b, __m256i bit_at_31) {
  return _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(a), _mm256_castsi256_ps(b),
                                              _mm256_castsi256_ps(bit_at_31)));
}

inline __m256 ktanh8(__m256 x, const ktanh_table8& t) {
  const __m256i h = _mm256_srli_epi32(_mm256_castps_si256(x), 16);  // bf16 bits (truncated)
  const __m256i a = _mm256_and_si256(h, _mm256_set1_epi32(0x7FFF));
  const __m256i sign = _mm256_and_si256(h, _mm256_set1_epi32(0x8000));
  const __m256i idx = _mm256_srli_epi32(a, 4);  // vpermd reads bits 0..2; bits 3, 4 pick the register
  const __m256i lo = blend_by_bit(_mm256_permutevar8x32_epi32(t.q[0], idx), _mm256_permutevar8x32_epi32(t.q[1], idx),
                                  _mm256_slli_epi32(idx, 28));
  const __m256i hi = blend_by_bit(_mm256_permutevar8x32_epi32(t.q[2], idx), _mm256_permutevar8x32_epi32(t.q[3], idx),
                                  _mm256_slli_epi32(idx, 28));
  const __m256i entry = blend_by_bit(lo, hi, _mm256_slli_epi32(idx, 27));
  const __m256i mant = _mm256_srlv_epi32(_mm256_and_si256(a, _mm256_set1_epi32(0x7F)), _mm256_srli_epi32(entry, 16));
  __m256i r = _mm256_or_si256(sign, _mm256_add_epi32(_mm256_and_si256(entry, _mm256_set1_epi32(0xFFFF)), mant));
  const __m256i small = _mm256_cmpgt_epi32(_mm256_set1_epi32(ktanh::low_exp << 7), a);
  const __m256i large = _mm256_cmpgt_epi32(a, _mm256_set1_epi32((ktanh::high_exp << 7) - 1));
  r = _mm256_blendv_epi8(r, h, small);
  r = _mm256_blendv_epi8(r, _mm256_or_si256(sign, _mm256_set1_epi32(0x3F80)), large);
  const __m256 y = _mm256_castsi256_ps(_mm256_slli_epi32(r, 16));
  return _mm256_blendv_ps(y, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));  // NaN stays NaN
}

inline __m256 ksigmoid8(__m256 x, const ktanh_table8& t) {
  const __m256 half = _mm256_set1_ps(0.5f);
  return _mm256_mul_ps(_mm256_add_ps(_mm256_set1_ps(1.0f), ktanh8(_mm256_mul_ps(x, half), t)), half);
}

inline __m256 activation8_of_number(activation a, __m256 v, const ktanh_table8& t) {
  switch (a) {
    case activation::none: return v;
    case activation::relu: return _mm256_max_ps(_mm256_setzero_ps(), v);
    case activation::relu6: return _mm256_min_ps(_mm256_set1_ps(6.0f), _mm256_max_ps(_mm256_setzero_ps(), v));
    case activation::ktanh: return ktanh8(v, t);
    case activation::ksigmoid: return ksigmoid8(v, t);
    case activation::kswish: return _mm256_mul_ps(v, ksigmoid8(v, t));
    case activation::kgelu: {
      const __m256 cube = _mm256_mul_ps(_mm256_mul_ps(v, v), v);
      const __m256 inner = _mm256_mul_ps(_mm256_set1_ps(brgemm_gelu_c),
                                         _mm256_add_ps(v, _mm256_mul_ps(_mm256_set1_ps(brgemm_gelu_a), cube)));
      return _mm256_mul_ps(_mm256_mul_ps(v, _mm256_set1_ps(0.5f)),
                           _mm256_add_ps(_mm256_set1_ps(1.0f), ktanh8(inner, t)));
    }
    default: {  // the libm functions
      alignas(32) float lane[8];
      _mm256_store_ps(lane, v);
      for (float& x : lane) x = brgemm_activation(a, x);
      return _mm256_load_ps(lane);
    }
  }
}

// A NaN lane comes back as it went in, as in the twin.
inline __m256 activation8(activation a, __m256 v, const ktanh_table8& t) {
  return _mm256_blendv_ps(activation8_of_number(a, v, t), v, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
}

// f32 → bf16 bits in the low half of each 32-bit lane: round to nearest even, NaN quieted.
inline __m256i bf16_rne(__m256 v) {
  const __m256i u = _mm256_castps_si256(v);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  const __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7FFF))), 16);
  const __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
  return _mm256_blendv_epi8(rounded, quiet, _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)));
}

// bf16_rne as an epilogue stores it (types.h: bf16_out_bits): zeros and subnormals give a zero of
// their sign.
inline __m256i bf16_out(__m256 v) {
  const __m256i u = _mm256_castps_si256(v);
  const __m256i zero_exp = _mm256_cmpeq_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7F800000)), _mm256_setzero_si256());
  const __m256i sign = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x8000));
  return _mm256_blendv_epi8(bf16_rne(v), sign, zero_exp);
}

// The 8 low 16-bit halves of 32-bit lanes holding values that fit them.
inline __m128i narrow16(__m256i x) {
  return _mm_packus_epi32(_mm256_castsi256_si128(x), _mm256_extracti128_si256(x, 1));
}

}  // namespace
}  // namespace brgemm::kernels
