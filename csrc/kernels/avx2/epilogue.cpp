// The AVX2 epilogue: the stages of brgemm.h on 8 columns at a time; the columns past the
// last whole vector go through the scalar twin (epilogue_twin.h), which computes the same
// IEEE operations in the same order, so every column is bit-identical to it.
#include "../ukernels.h"
#include "../epilogue_twin.h"
#include "activation.h"

namespace brgemm::kernels {

void epilogue__avx2(const epilogue_desc& d, dtype t, const epilogue_tile& tl) {
  const epilogue_args& ep = *tl.ep;
  const bool s32_acc = dtype_is_integer(t);
  const __m256 beta = _mm256_set1_ps(tl.beta);
  const ktanh_table8 table;
  const __m256 lo = _mm256_set1_ps(d.out == out_type::u8 ? 0.0f : -128.0f);
  const __m256 hi = _mm256_set1_ps(d.out == out_type::u8 ? 255.0f : 127.0f);
  const __m256 out_scale = _mm256_set1_ps(ep.out_scale), out_zp = _mm256_set1_ps((float)ep.out_zero_point);
  const __m256 scale1 = _mm256_set1_ps(d.scale == scale_kind::tensor ? ep.scale[0] : 1.0f);
  const __m256 add_scale = _mm256_set1_ps(ep.add_scale);
  const __m256i add_zero = _mm256_set1_epi32(ep.add_zero);
  const int64_t whole = tl.n / 8 * 8;
  for (int64_t i = 0; i < tl.m; ++i) {
    const __m256i row_off = _mm256_set1_epi32(d.row_offset ? ep.row_offset[i] : 0);
    for (int64_t j = 0; j < whole; j += 8) {
      __m256 v;
      if (s32_acc) {
        __m256i s = _mm256_loadu_si256((const __m256i*)((const int32_t*)tl.acc + i * tl.ld_acc + j));
        if (tl.prev)
          s = _mm256_add_epi32(s, _mm256_loadu_si256((const __m256i*)((const int32_t*)tl.prev + i * tl.ld_prev + j)));
        if (d.row_offset) s = _mm256_add_epi32(s, row_off);
        if (d.col_offset) s = _mm256_add_epi32(s, _mm256_loadu_si256((const __m256i*)(ep.col_offset + j)));
        if (d.out == out_type::acc) {
          _mm256_storeu_si256((__m256i*)((int32_t*)tl.out + i * tl.ldc + j), s);
          continue;
        }
        v = _mm256_cvtepi32_ps(s);
        if (d.scale == scale_kind::column) v = _mm256_mul_ps(v, _mm256_loadu_ps(ep.scale + j));
        else if (d.scale == scale_kind::tensor) v = _mm256_mul_ps(v, scale1);
      } else {
        v = _mm256_loadu_ps((const float*)tl.acc + i * tl.ld_acc + j);
        if (tl.prev) v = _mm256_add_ps(v, _mm256_mul_ps(beta, _mm256_loadu_ps((const float*)tl.prev + i * tl.ld_prev + j)));
      }
      if (d.bias) v = _mm256_add_ps(v, _mm256_loadu_ps(ep.bias + j));
      if (d.add) {
        if (d.out == out_type::u8) {
          const __m128i b = _mm_loadl_epi64((const __m128i*)((const uint8_t*)ep.add + i * ep.ld_add + j));
          const __m256i a = _mm256_sub_epi32(_mm256_cvtepu8_epi32(b), add_zero);
          v = _mm256_add_ps(v, _mm256_mul_ps(add_scale, _mm256_cvtepi32_ps(a)));
        } else if (d.out == out_type::bf16) {
          const __m128i h = _mm_loadu_si128((const __m128i*)((const uint16_t*)ep.add + i * ep.ld_add + j));
          v = _mm256_add_ps(v, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)));
        } else {
          v = _mm256_add_ps(v, _mm256_loadu_ps((const float*)ep.add + i * ep.ld_add + j));
        }
      }
      if (d.act != activation::none) v = activation8(d.act, v, table);
      switch (d.out) {
        case out_type::bf16:
          _mm_storeu_si128((__m128i*)((uint16_t*)tl.out + i * tl.ldc + j), narrow16(bf16_out(v)));
          break;
        case out_type::u8:
        case out_type::s8: {
          __m256 q = _mm256_round_ps(_mm256_div_ps(v, out_scale), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
          q = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(q, out_zp), lo), hi);
          // Saturated values fit a byte: narrow 32 → 16 (signed packs keep them) → 8 bits.
          const __m256i q32 = _mm256_cvtps_epi32(q);
          const __m128i q16 = _mm_packs_epi32(_mm256_castsi256_si128(q32), _mm256_extracti128_si256(q32, 1));
          const __m128i q8 = d.out == out_type::u8 ? _mm_packus_epi16(q16, q16) : _mm_packs_epi16(q16, q16);
          _mm_storel_epi64((__m128i*)((char*)tl.out + i * tl.ldc + j), q8);
          break;
        }
        default: _mm256_storeu_ps((float*)tl.out + i * tl.ldc + j, v); break;
      }
    }
  }
  if (whole < tl.n) brgemm_epilogue_twin(d, t, tl, whole);
}

}  // namespace brgemm::kernels
