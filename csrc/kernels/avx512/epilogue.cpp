// The AVX-512 epilogue: the stages of brgemm.h on 16 columns at a time, the last vector of a
// row masked. The same IEEE operations in the same order as the scalar twin
// (epilogue_twin.h), so results are bit-identical to it; also used by the VNNI and BF16 levels.
// One instance per (accumulator, output type), with everything the loop reads in locals: the
// byte and half-word stores may alias any field, which made the compiler reload them per vector
// (measured: the epilogue was 45 % of a K = 64 bf16 product before, see below for the stores).
#include "../ukernels.h"
#include "activation.h"

namespace brgemm::kernels {
namespace {

template <bool INT8, out_type OUT>
void tile_epilogue(const epilogue_desc& d, const epilogue_tile& tl) {
  const epilogue_args& ep = *tl.ep;
  const int64_t m = tl.m, n = tl.n, ld_acc = tl.ld_acc, ld_prev = tl.ld_prev, ldc = tl.ldc;
  const void* const acc = tl.acc;
  const void* const prev = tl.prev;
  void* const out = tl.out;
  const float* const bias = d.bias ? ep.bias : nullptr;
  const float* const scale_col = d.scale == scale_kind::column ? ep.scale : nullptr;
  const bool scale_tensor = d.scale == scale_kind::tensor;
  const int32_t* const row_offset = d.row_offset ? ep.row_offset : nullptr;
  const int32_t* const col_offset = d.col_offset ? ep.col_offset : nullptr;
  const activation act = d.act;
  const void* const add = d.add ? ep.add : nullptr;
  const int64_t ld_add = ep.ld_add;
  const __m512 add_scale = _mm512_set1_ps(ep.add_scale);
  const __m512i add_zero = _mm512_set1_epi32(ep.add_zero);
  const __m512 beta = _mm512_set1_ps(tl.beta);
  const ktanh_table32 table;
  const __m512 lo = _mm512_set1_ps(OUT == out_type::u8 ? 0.0f : -128.0f);
  const __m512 hi = _mm512_set1_ps(OUT == out_type::u8 ? 255.0f : 127.0f);
  const __m512 out_scale = _mm512_set1_ps(ep.out_scale), out_zp = _mm512_set1_ps((float)ep.out_zero_point);
  const bool unit_scale = ep.out_scale == 1.0f;  // v / 1 is v: skip the division (slow on Zen 4)
  const __m512 scale1 = _mm512_set1_ps(scale_tensor ? ep.scale[0] : 1.0f);
  for (int64_t i = 0; i < m; ++i) {
    const __m512i row_off = _mm512_set1_epi32(row_offset ? row_offset[i] : 0);
    for (int64_t j = 0; j < n; j += 16) {
      const __mmask16 k = n - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - j)) - 1u);
      const bool whole = k == 0xFFFF;
      __m512 v;
      if constexpr (INT8) {
        __m512i s = _mm512_maskz_loadu_epi32(k, (const int32_t*)acc + i * ld_acc + j);
        if (prev) s = _mm512_add_epi32(s, _mm512_maskz_loadu_epi32(k, (const int32_t*)prev + i * ld_prev + j));
        if (row_offset) s = _mm512_add_epi32(s, row_off);
        if (col_offset) s = _mm512_add_epi32(s, _mm512_maskz_loadu_epi32(k, col_offset + j));
        if constexpr (OUT == out_type::acc) {
          _mm512_mask_storeu_epi32((int32_t*)out + i * ldc + j, k, s);
          continue;
        }
        v = _mm512_cvtepi32_ps(s);
        if (scale_col) v = _mm512_mul_ps(v, _mm512_maskz_loadu_ps(k, scale_col + j));
        else if (scale_tensor) v = _mm512_mul_ps(v, scale1);
      } else {
        v = _mm512_maskz_loadu_ps(k, (const float*)acc + i * ld_acc + j);
        if (prev) v = _mm512_add_ps(v, _mm512_mul_ps(beta, _mm512_maskz_loadu_ps(k, (const float*)prev + i * ld_prev + j)));
      }
      if (bias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(k, bias + j));
      if (add) {
        if constexpr (OUT == out_type::u8) {
          const __m128i b = _mm_maskz_loadu_epi8(k, (const uint8_t*)add + i * ld_add + j);
          const __m512i a = _mm512_sub_epi32(_mm512_cvtepu8_epi32(b), add_zero);
          v = _mm512_add_ps(v, _mm512_mul_ps(add_scale, _mm512_cvtepi32_ps(a)));
        } else if constexpr (OUT == out_type::bf16) {
          const __m256i h = _mm256_maskz_loadu_epi16(k, (const uint16_t*)add + i * ld_add + j);
          v = _mm512_add_ps(v, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)));
        } else {
          v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(k, (const float*)add + i * ld_add + j));
        }
      }
      if (act != activation::none) v = activation16(act, v, table);
      if constexpr (OUT == out_type::bf16) {
        // Narrowed in a register, then stored (unmasked when whole): the compiler's fused
        // masked vpmov-to-memory measured several times slower on Zen 4.
        __m256i h = _mm512_cvtepi32_epi16(bf16_rne(v));
        __asm__("" : "+v"(h));
        uint16_t* o = (uint16_t*)out + i * ldc + j;
        if (whole) _mm256_storeu_si256((__m256i*)o, h);
        else _mm256_mask_storeu_epi16(o, k, h);
      } else if constexpr (OUT == out_type::u8 || OUT == out_type::s8) {
        if (!unit_scale) v = _mm512_div_ps(v, out_scale);
        __m512 q = _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        q = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(q, out_zp), lo), hi);
        __m128i b = _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(q));
        __asm__("" : "+v"(b));
        char* o = (char*)out + i * ldc + j;
        if (whole) _mm_storeu_si128((__m128i*)o, b);
        else _mm_mask_storeu_epi8(o, k, b);
      } else {
        float* o = (float*)out + i * ldc + j;
        if (whole) _mm512_storeu_ps(o, v);
        else _mm512_mask_storeu_ps(o, k, v);
      }
    }
  }
}

template <bool INT8>
void by_output(const epilogue_desc& d, const epilogue_tile& tl) {
  switch (d.out) {
    case out_type::acc: return tile_epilogue<INT8, out_type::acc>(d, tl);
    case out_type::bf16: return tile_epilogue<INT8, out_type::bf16>(d, tl);
    case out_type::u8: return tile_epilogue<INT8, out_type::u8>(d, tl);
    case out_type::s8: return tile_epilogue<INT8, out_type::s8>(d, tl);
    default: return tile_epilogue<INT8, out_type::f32>(d, tl);
  }
}

}  // namespace

void epilogue__avx512(const epilogue_desc& d, dtype t, const epilogue_tile& tl) {
  if (dtype_is_int8(t)) by_output<true>(d, tl);
  else by_output<false>(d, tl);
}

}  // namespace brgemm::kernels
