// The epilogue's stages (brgemm.h) on one vector of 16 columns with AVX-512, written once for
// both places that run them: the tile epilogue (epilogue.cpp: accumulators read back from a
// scratch tile) and the zmm skeleton (tile.h: accumulators still in registers, so a short
// reduction does not pay a store and a load of the whole tile). Both therefore give the scalar
// twin's bits (epilogue_twin.h): the same IEEE operations in the same order.
// Everything the stages read is copied into members first: the byte and half-word stores may
// alias any field, which made the compiler reload them per vector (the epilogue was 45 % of a
// K = 64 bf16 product before).
// SIMPLE: the activation is none, relu or relu6 (what the skeleton takes; the other functions
// are long enough that a scratch tile costs nothing beside them).
#pragma once
#include "../ukernels.h"
#include <type_traits>
#include "activation.h"

// Inlined where they are used: a call would pass the accumulators through memory and reload
// every constant per vector (seen: put was 15 % of an int8 K = 64 product as a function).
#define BRGEMM_EPILOGUE_INLINE inline __attribute__((always_inline))

namespace brgemm::kernels {
namespace {

// 64 zero columns: the int8 tile's absent column offsets (s32) and bias (f32 +0.0).
alignas(64) const int32_t zeros64[64] = {};

template <bool INT8, out_type OUT, bool SIMPLE>
struct epilogue16 {
  const int64_t ld_prev, ldc, ld_add;
  const void* const prev;
  void* const out;
  const float* const bias;
  const float* const scale_col;
  const bool scale_tensor;
  const int32_t* const row_offset;
  const int32_t* const col_offset;
  const activation act;
  const void* const add;
  const __m512 add_scale;
  const __m512i add_zero;
  const __m512 beta;
  const __m512 lo_z, hi_z, out_scale, scale1;  // the int8 output's bounds less its zero point
  const __m512i zp_i;
  const bool unit_scale;  // v / 1 is v: skip the division (slow on Zen 4)
  const bool zero_zp;     // v + 0 is v: skip the add

  epilogue16(const epilogue_desc& d, const epilogue_tile& tl)
      : ld_prev(tl.ld_prev), ldc(tl.ldc), ld_add(tl.ep->ld_add), prev(tl.prev), out(tl.out),
        bias(d.bias ? tl.ep->bias : nullptr), scale_col(d.scale == scale_kind::column ? tl.ep->scale : nullptr),
        scale_tensor(d.scale == scale_kind::tensor), row_offset(d.row_offset ? tl.ep->row_offset : nullptr),
        col_offset(d.col_offset ? tl.ep->col_offset : nullptr), act(d.act), add(d.add ? tl.ep->add : nullptr),
        add_scale(_mm512_set1_ps(tl.ep->add_scale)), add_zero(_mm512_set1_epi32(tl.ep->add_zero)),
        beta(_mm512_set1_ps(tl.beta)), lo_z(_mm512_set1_ps((float)((OUT == out_type::u8 ? 0 : -128) - tl.ep->out_zero_point))),
        hi_z(_mm512_set1_ps((float)((OUT == out_type::u8 ? 255 : 127) - tl.ep->out_zero_point))),
        out_scale(_mm512_set1_ps(tl.ep->out_scale)),
        scale1(_mm512_set1_ps(d.scale == scale_kind::tensor ? tl.ep->scale[0] : 1.0f)),
        zp_i(_mm512_set1_epi32(tl.ep->out_zero_point)),
        unit_scale(tl.ep->out_scale == 1.0f), zero_zp(tl.ep->out_zero_point == 0) {}

  // Row i's integer offset, broadcast (int8: stage 2's row term).
  __m512i row_term(int64_t i) const { return _mm512_set1_epi32(row_offset ? row_offset[i] : 0); }

  // Stages 1–2 for the s32 sums of row i, columns j .. j+15 under k: the sums corrected.
  BRGEMM_EPILOGUE_INLINE __m512i sums(__m512i s, __m512i row_off, int64_t i, int64_t j, __mmask16 k) const {
    if (prev) s = _mm512_add_epi32(s, _mm512_maskz_loadu_epi32(k, (const int32_t*)prev + i * ld_prev + j));
    if (row_offset) s = _mm512_add_epi32(s, row_off);
    if (col_offset) s = _mm512_add_epi32(s, _mm512_maskz_loadu_epi32(k, col_offset + j));
    return s;
  }
  // ... dequantized.
  BRGEMM_EPILOGUE_INLINE __m512 value(__m512i s, __m512i row_off, int64_t i, int64_t j, __mmask16 k) const {
    __m512 v = _mm512_cvtepi32_ps(sums(s, row_off, i, j, k));
    if (scale_col) v = _mm512_mul_ps(v, _mm512_maskz_loadu_ps(k, scale_col + j));
    else if (scale_tensor) v = _mm512_mul_ps(v, scale1);
    return v;
  }
  // Stage 1 for the f32 sums.
  BRGEMM_EPILOGUE_INLINE __m512 value(__m512 v, __m512i, int64_t i, int64_t j, __mmask16 k) const {
    if (prev) v = _mm512_add_ps(v, _mm512_mul_ps(beta, _mm512_maskz_loadu_ps(k, (const float*)prev + i * ld_prev + j)));
    return v;
  }

  // Stages 1–5 for the sums of row i, columns j .. j+15 under k.
  template <typename Acc>
  BRGEMM_EPILOGUE_INLINE void put(Acc s, __m512i row_off, int64_t i, int64_t j, __mmask16 k, const ktanh_table32* table) const {
    if constexpr (OUT == out_type::acc && std::is_same_v<Acc, __m512i>) {  // s32 stored as s32
      _mm512_mask_storeu_epi32((int32_t*)out + i * ldc + j, k, sums(s, row_off, i, j, k));
    } else {
      finish(value(s, row_off, i, j, k), i, j, k, table);
    }
  }

  // Stage 5 for an int8 output: v requantized, as int32 in the type's range. Clamped before it
  // is rounded: the bounds are integers, so this equals rounding then clamping (the twin's
  // order), and NaN takes the lower bound as maxps gives it. One instruction fewer than
  // rounding first, and the zero point is an integer add.
  BRGEMM_EPILOGUE_INLINE __m512i requantized(__m512 v) const {
    if (!unit_scale) v = _mm512_div_ps(v, out_scale);
    v = _mm512_min_ps(_mm512_max_ps(v, lo_z), hi_z);
    return _mm512_add_epi32(_mm512_cvtps_epi32(v), zp_i);
  }

  // Row i's 64 int8 results (4 vectors of requantized int32) as one store: two saturating packs
  // interleave the vectors by 128-bit lane, one permute puts them back in column order (four
  // vpmovdb cost twice the instructions and four stores).
  BRGEMM_EPILOGUE_INLINE void store64(int64_t i, const __m512i (&q)[4]) const {
    const __m512i w01 = _mm512_packs_epi32(q[0], q[1]), w23 = _mm512_packs_epi32(q[2], q[3]);
    const __m512i b = OUT == out_type::u8 ? _mm512_packus_epi16(w01, w23) : _mm512_packs_epi16(w01, w23);
    // dword 4·L + v of b holds vector v's lane L; column order wants it at 4·v + L.
    const __m512i order = _mm512_set_epi32(15, 11, 7, 3, 14, 10, 6, 2, 13, 9, 5, 1, 12, 8, 4, 0);
    _mm512_storeu_si512((char*)out + i * ldc, _mm512_permutexvar_epi32(order, b));
  }

  // The int8 output's usual tile (plain_int8: no prev, row offsets or residual; a column scale;
  // no activation or ReLU), its stages picked once per tile instead of tested per vector.
  // Stages 1–5 of requantized(staged(value(s))) in the same operations and order, except that
  // the column offsets are where the sums started (tile.h: s32 adds in another order, the same
  // bits), an absent bias is a zero added (zeros64: v + 0.0f is v but for −0.0 → +0.0, which
  // rounds to the same integer), and a zero point of 0 is not added (ZP false).
  bool plain_int8() const {
    return !prev && !row_offset && !add && scale_col && (act == activation::none || act == activation::relu);
  }
  template <bool RELU, bool UNIT, bool ZP>
  BRGEMM_EPILOGUE_INLINE __m512i requantized_plain(__m512i s, const float* bi, int64_t j) const {
    __m512 v = _mm512_cvtepi32_ps(s);
    v = _mm512_add_ps(_mm512_mul_ps(v, _mm512_loadu_ps(scale_col + j)), _mm512_loadu_ps(bi + j));
    if constexpr (RELU) v = _mm512_max_ps(_mm512_setzero_ps(), v);  // NaN stays, as activation16_simple
    if constexpr (!UNIT) v = _mm512_div_ps(v, out_scale);
    v = _mm512_min_ps(_mm512_max_ps(v, lo_z), hi_z);
    return ZP ? _mm512_add_epi32(_mm512_cvtps_epi32(v), zp_i) : _mm512_cvtps_epi32(v);
  }

  // Stages 3–4: bias, the residual, the activation.
  BRGEMM_EPILOGUE_INLINE __m512 staged(__m512 v, int64_t i, int64_t j, __mmask16 k, const ktanh_table32* table) const {
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
    if constexpr (SIMPLE) v = activation16_simple(act, v);
    else if (act != activation::none) v = activation16(act, v, *table);
    return v;
  }

  // Stages 3–5: bias, the residual, the activation, the store.
  BRGEMM_EPILOGUE_INLINE void finish(__m512 v, int64_t i, int64_t j, __mmask16 k, const ktanh_table32* table) const {
    store(staged(v, i, j, k, table), i, j, k);
  }

  // A float accumulator's usual whole-width tile (plain_float: no prev or residual; no
  // activation or ReLU), its stages picked once per tile: staged() and store() without the tests.
  bool plain_float() const { return !prev && !add && (act == activation::none || act == activation::relu); }
  template <bool BIAS, bool RELU>
  BRGEMM_EPILOGUE_INLINE void put_plain(__m512 v, int64_t i, int64_t j) const {
    if constexpr (BIAS) v = _mm512_add_ps(v, _mm512_loadu_ps(bias + j));
    if constexpr (RELU) v = _mm512_max_ps(_mm512_setzero_ps(), v);  // as activation16_simple
    store(v, i, j, (__mmask16)0xFFFF);
  }

  // Stage 5: the store of row i, columns j .. j+15 under k.
  BRGEMM_EPILOGUE_INLINE void store(__m512 v, int64_t i, int64_t j, __mmask16 k) const {
    const bool whole = k == 0xFFFF;
    if constexpr (OUT == out_type::bf16) {
      // Narrowed in a register, then stored (unmasked when whole): the compiler's fused
      // masked vpmov-to-memory measured several times slower on Zen 4.
      __m256i h = bf16_out(v);
      __asm__("" : "+v"(h));
      uint16_t* o = (uint16_t*)out + i * ldc + j;
      if (whole) _mm256_storeu_si256((__m256i*)o, h);
      else _mm256_mask_storeu_epi16(o, k, h);
    } else if constexpr (OUT == out_type::u8 || OUT == out_type::s8) {
      __m128i b = _mm512_cvtepi32_epi8(requantized(v));
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
};

}  // namespace
}  // namespace brgemm::kernels
