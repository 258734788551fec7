// The element-wise functions of brgemm.h with AVX-512, shared by the epilogue (one vector at a
// time) and the array kernels (two). The same IEEE operations in the same order as the scalar
// twin (eltwise_twin.h). K-TanH is integer work on bf16 fields in 16-bit lanes: the bf16 halves
// of two f32 vectors share one register and each table is one vpermw. The libm functions go
// through the twin lane by lane.
#pragma once
#include <immintrin.h>
#include "../eltwise_twin.h"

namespace brgemm::kernels {
namespace {

struct ktanh_table32 {
  __m512i add = _mm512_loadu_si512(brgemm_ktanh_add16.v), shift = _mm512_loadu_si512(ktanh::shift);
};

// K-TanH on 32 bf16 values; NaN lanes are left to the caller.
inline __m512i ktanh_bits32(__m512i h, const ktanh_table32& t) {
  const __m512i a = _mm512_and_si512(h, _mm512_set1_epi16(0x7FFF));
  const __m512i sign = _mm512_xor_si512(h, a);
  const __m512i idx = _mm512_srli_epi16(a, 4);  // vpermw reads bits 0..4
  const __m512i mant = _mm512_srlv_epi16(_mm512_and_si512(a, _mm512_set1_epi16(0x7F)),
                                         _mm512_permutexvar_epi16(idx, t.shift));
  __m512i r = _mm512_or_si512(sign, _mm512_add_epi16(_mm512_permutexvar_epi16(idx, t.add), mant));
  r = _mm512_mask_mov_epi16(r, _mm512_cmplt_epu16_mask(a, _mm512_set1_epi16(ktanh::low_exp << 7)), h);
  return _mm512_mask_mov_epi16(r, _mm512_cmpge_epu16_mask(a, _mm512_set1_epi16(ktanh::high_exp << 7)),
                               _mm512_or_si512(sign, _mm512_set1_epi16(0x3F80)));
}

// ktanh of two f32 vectors at once: their bf16 halves packed into one register and back
// (vpackusdw and vpunpck{l,h}wd pair lanes the same way, so the order survives).
inline void ktanh2x16(__m512 x0, __m512 x1, const ktanh_table32& t, __m512* y0, __m512* y1) {
  const __m512i h = _mm512_packus_epi32(_mm512_srli_epi32(_mm512_castps_si512(x0), 16),
                                        _mm512_srli_epi32(_mm512_castps_si512(x1), 16));
  const __m512i r = ktanh_bits32(h, t);
  *y0 = _mm512_castsi512_ps(_mm512_unpacklo_epi16(_mm512_setzero_si512(), r));
  *y1 = _mm512_castsi512_ps(_mm512_unpackhi_epi16(_mm512_setzero_si512(), r));
}

// The K-TanH family on two f32 vectors, NaN lanes returned as they came.
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
  *y0 = _mm512_mask_mov_ps(*y0, _mm512_cmp_ps_mask(x0, x0, _CMP_UNORD_Q), x0);
  *y1 = _mm512_mask_mov_ps(*y1, _mm512_cmp_ps_mask(x1, x1, _CMP_UNORD_Q), x1);
}

// One vector (the epilogue's): the K-TanH family through k_family32 with the vector twice
// (the compiler folds the identical second half).
template <activation A>
inline __m512 k_family16(__m512 v, const ktanh_table32& t) {
  __m512 y, unused;
  k_family32<A>(v, v, t, &y, &unused);
  return y;
}

// none, relu and relu6 only (what the zmm skeleton's register epilogue takes).
inline __m512 activation16_simple(activation a, __m512 v) {
  if (a == activation::relu) return _mm512_max_ps(_mm512_setzero_ps(), v);  // NaN stays: the 2nd operand
  if (a == activation::relu6) return _mm512_min_ps(_mm512_set1_ps(6.0f), _mm512_max_ps(_mm512_setzero_ps(), v));
  return v;
}

inline __m512 activation16(activation a, __m512 v, const ktanh_table32& t) {
  switch (a) {
    case activation::none:
    case activation::relu:
    case activation::relu6: return activation16_simple(a, v);
    case activation::ktanh: return k_family16<activation::ktanh>(v, t);
    case activation::ksigmoid: return k_family16<activation::ksigmoid>(v, t);
    case activation::kswish: return k_family16<activation::kswish>(v, t);
    case activation::kgelu: return k_family16<activation::kgelu>(v, t);
    default: {  // the libm functions (the twin returns a NaN as it came)
      alignas(64) float lane[16];
      _mm512_store_ps(lane, v);
      for (float& x : lane) x = brgemm_activation(a, x);
      return _mm512_load_ps(lane);
    }
  }
}

// f32 → bf16 bits in the low half of each 32-bit lane: round to nearest even, NaN quieted.
inline __m512i bf16_rne(__m512 v) {
  const __m512i u = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  const __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF))), 16);
  const __m512i quiet = _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
  return _mm512_mask_blend_epi32(_mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), rounded, quiet);
}

// 16 f32 → 16 bf16 as an epilogue stores them (types.h: bf16_out_bits): one instruction where
// AVX512_BF16 exists (this header is compiled at that level too), the integer rounding with
// the flush of zeros and subnormals to a signed zero elsewhere.
inline __m256i bf16_out(__m512 v) {
#ifdef __AVX512BF16__
  return (__m256i)_mm512_cvtneps_pbh(v);
#else
  const __m512i u = _mm512_castps_si512(v);
  const __mmask16 normal = _mm512_test_epi32_mask(u, _mm512_set1_epi32(0x7F800000));
  const __m512i sign = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x8000));
  return _mm512_cvtepi32_epi16(_mm512_mask_blend_epi32(normal, sign, bf16_rne(v)));
#endif
}

}  // namespace
}  // namespace brgemm::kernels
