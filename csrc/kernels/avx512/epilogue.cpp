// The AVX-512 epilogue: the stages of brgemm.h on 16 columns at a time, the last vector of a
// row masked. The same IEEE operations in the same order as the scalar twin
// (epilogue_twin.h), so results are bit-identical to it; also used by the VNNI and BF16 levels.
#include "../ukernels.h"
#include "activation.h"

namespace brgemm::kernels {

void epilogue__avx512(const epilogue_desc& d, dtype t, const epilogue_tile& tl) {
  const epilogue_args& ep = *tl.ep;
  const bool int8 = dtype_is_int8(t);
  const __m512 beta = _mm512_set1_ps(tl.beta);
  const ktanh_table32 table;
  const __m512 lo = _mm512_set1_ps(d.out == out_type::u8 ? 0.0f : -128.0f);
  const __m512 hi = _mm512_set1_ps(d.out == out_type::u8 ? 255.0f : 127.0f);
  const __m512 out_scale = _mm512_set1_ps(ep.out_scale), out_zp = _mm512_set1_ps((float)ep.out_zero_point);
  const bool unit_scale = ep.out_scale == 1.0f;  // v / 1 is v: skip the division (slow on Zen 4)
  const __m512 scale1 = _mm512_set1_ps(d.scale == scale_kind::tensor ? ep.scale[0] : 1.0f);
  for (int64_t i = 0; i < tl.m; ++i) {
    const __m512i row_off = _mm512_set1_epi32(d.row_offset ? ep.row_offset[i] : 0);
    for (int64_t j = 0; j < tl.n; j += 16) {
      const __mmask16 k = tl.n - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (tl.n - j)) - 1u);
      __m512 v;
      if (int8) {
        __m512i s = _mm512_maskz_loadu_epi32(k, (const int32_t*)tl.acc + i * tl.ld_acc + j);
        if (tl.prev) s = _mm512_add_epi32(s, _mm512_maskz_loadu_epi32(k, (const int32_t*)tl.prev + i * tl.ld_prev + j));
        if (d.row_offset) s = _mm512_add_epi32(s, row_off);
        if (d.col_offset) s = _mm512_add_epi32(s, _mm512_maskz_loadu_epi32(k, ep.col_offset + j));
        if (d.out == out_type::acc) {
          _mm512_mask_storeu_epi32((int32_t*)tl.out + i * tl.ldc + j, k, s);
          continue;
        }
        v = _mm512_cvtepi32_ps(s);
        if (d.scale == scale_kind::column) v = _mm512_mul_ps(v, _mm512_maskz_loadu_ps(k, ep.scale + j));
        else if (d.scale == scale_kind::tensor) v = _mm512_mul_ps(v, scale1);
      } else {
        v = _mm512_maskz_loadu_ps(k, (const float*)tl.acc + i * tl.ld_acc + j);
        if (tl.prev)
          v = _mm512_add_ps(v, _mm512_mul_ps(beta, _mm512_maskz_loadu_ps(k, (const float*)tl.prev + i * tl.ld_prev + j)));
      }
      if (d.bias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(k, ep.bias + j));
      if (d.act != activation::none) v = activation16(d.act, v, table);
      switch (d.out) {
        case out_type::bf16:
          _mm256_mask_storeu_epi16((uint16_t*)tl.out + i * tl.ldc + j, k, _mm512_cvtepi32_epi16(bf16_rne(v)));
          break;
        case out_type::u8:
        case out_type::s8: {
          if (!unit_scale) v = _mm512_div_ps(v, out_scale);
          __m512 q = _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
          q = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(q, out_zp), lo), hi);
          // Narrowed in a register, then stored: the compiler's fused vpmovdb-to-memory form
          // measured several times slower on Zen 4 (the hottest instruction of a K = 64 product).
          __m128i b = _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(q));
          __asm__("" : "+v"(b));
          if (k == 0xFFFF)
            _mm_storeu_si128((__m128i*)((char*)tl.out + i * tl.ldc + j), b);
          else
            _mm_mask_storeu_epi8((char*)tl.out + i * tl.ldc + j, k, b);
          break;
        }
        default: _mm512_mask_storeu_ps((float*)tl.out + i * tl.ldc + j, k, v); break;
      }
    }
  }
}

}  // namespace brgemm::kernels
