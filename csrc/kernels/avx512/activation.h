// The element-wise functions of brgemm.h on 16 floats in a zmm register, shared by the AVX-512
// epilogue and array kernels. The same IEEE operations in the same order as the scalar twin
// (eltwise_twin.h); K-TanH is integer work on the bf16 fields, its table one lookup into two
// registers (vpermi2d), and the libm functions go through the twin lane by lane.
#pragma once
#include <immintrin.h>
#include "../eltwise_twin.h"

namespace brgemm::kernels {
namespace {

struct ktanh_table16 {
  __m512i lo = _mm512_loadu_si512(brgemm_ktanh_packed.v), hi = _mm512_loadu_si512(brgemm_ktanh_packed.v + 16);
};

inline __m512 ktanh16(__m512 x, const ktanh_table16& t) {
  const __m512i h = _mm512_srli_epi32(_mm512_castps_si512(x), 16);  // bf16 bits (truncated)
  const __m512i a = _mm512_and_si512(h, _mm512_set1_epi32(0x7FFF));
  const __m512i sign = _mm512_and_si512(h, _mm512_set1_epi32(0x8000));
  const __m512i entry = _mm512_permutex2var_epi32(t.lo, _mm512_srli_epi32(a, 4), t.hi);  // index: bits 0..4
  const __m512i mant = _mm512_srlv_epi32(_mm512_and_si512(a, _mm512_set1_epi32(0x7F)), _mm512_srli_epi32(entry, 16));
  __m512i r = _mm512_or_si512(sign, _mm512_add_epi32(_mm512_and_si512(entry, _mm512_set1_epi32(0xFFFF)), mant));
  r = _mm512_mask_mov_epi32(r, _mm512_cmplt_epi32_mask(a, _mm512_set1_epi32(ktanh::low_exp << 7)), h);
  r = _mm512_mask_mov_epi32(r, _mm512_cmpge_epi32_mask(a, _mm512_set1_epi32(ktanh::high_exp << 7)),
                            _mm512_or_si512(sign, _mm512_set1_epi32(0x3F80)));
  const __m512 y = _mm512_castsi512_ps(_mm512_slli_epi32(r, 16));
  return _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), x);  // NaN stays NaN
}

inline __m512 ksigmoid16(__m512 x, const ktanh_table16& t) {
  const __m512 half = _mm512_set1_ps(0.5f);
  return _mm512_mul_ps(_mm512_add_ps(_mm512_set1_ps(1.0f), ktanh16(_mm512_mul_ps(x, half), t)), half);
}

inline __m512 activation16_of_number(activation a, __m512 v, const ktanh_table16& t) {
  switch (a) {
    case activation::none: return v;
    case activation::relu: return _mm512_max_ps(_mm512_setzero_ps(), v);
    case activation::ktanh: return ktanh16(v, t);
    case activation::ksigmoid: return ksigmoid16(v, t);
    case activation::kswish: return _mm512_mul_ps(v, ksigmoid16(v, t));
    case activation::kgelu: {
      const __m512 cube = _mm512_mul_ps(_mm512_mul_ps(v, v), v);
      const __m512 inner = _mm512_mul_ps(_mm512_set1_ps(brgemm_gelu_c),
                                         _mm512_add_ps(v, _mm512_mul_ps(_mm512_set1_ps(brgemm_gelu_a), cube)));
      return _mm512_mul_ps(_mm512_mul_ps(v, _mm512_set1_ps(0.5f)),
                           _mm512_add_ps(_mm512_set1_ps(1.0f), ktanh16(inner, t)));
    }
    default: {  // the libm functions
      alignas(64) float lane[16];
      _mm512_store_ps(lane, v);
      for (float& x : lane) x = brgemm_activation(a, x);
      return _mm512_load_ps(lane);
    }
  }
}

// K-TanH on 32 bf16 values in 16-bit lanes, each table one register (vpermw); NaN lanes
// are left to the caller.
struct ktanh_table32 {
  __m512i add = _mm512_loadu_si512(brgemm_ktanh_add16.v), shift = _mm512_loadu_si512(ktanh::shift);
};

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

// A NaN lane comes back as it went in, as in the twin.
inline __m512 activation16(activation a, __m512 v, const ktanh_table16& t) {
  return _mm512_mask_mov_ps(activation16_of_number(a, v, t), _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), v);
}

// f32 → bf16 bits in the low half of each 32-bit lane: round to nearest even, NaN quieted.
inline __m512i bf16_rne(__m512 v) {
  const __m512i u = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  const __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF))), 16);
  const __m512i quiet = _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
  return _mm512_mask_blend_epi32(_mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), rounded, quiet);
}

}  // namespace
}  // namespace brgemm::kernels
