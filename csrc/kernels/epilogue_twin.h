// The epilogue stages one element at a time (see the stage list in brgemm.h): the scalar twin
// every ISA's vector epilogue must match bit for bit, and the tail of those that have no masks.
// Static, so each ISA translation unit keeps its own copy (see batch_block.h).
#pragma once
#include <cmath>
#include <cstring>
#include "brgemm/brgemm.h"
#include "eltwise_twin.h"

// max and min as the x86 instructions define them (the second operand when either is NaN),
// so that the vector epilogues, which use those instructions, agree with this twin on NaN.
static inline float brgemm_maxps(float a, float b) { return a > b ? a : b; }
static inline float brgemm_minps(float a, float b) { return a < b ? a : b; }

// f32 → bf16 bits: every conversion (bf16_rne), and what an epilogue stores (bf16_out; types.h).
static inline uint16_t brgemm_bf16_rne(float v) { return brgemm::bf16_rne_bits(v); }
static inline uint16_t brgemm_bf16_out(float v) { return brgemm::bf16_out_bits(v); }

// Columns [j0, n) of every row of the tile.
static inline void brgemm_epilogue_twin(const brgemm::epilogue_desc& d, brgemm::dtype t,
                                        const brgemm::epilogue_tile& tl, int64_t j0) {
  using namespace brgemm;
  const epilogue_args& ep = *tl.ep;
  const bool s32_acc = dtype_is_integer(t);
  const float lo = d.out == out_type::u8 ? 0.0f : -128.0f, hi = d.out == out_type::u8 ? 255.0f : 127.0f;
  for (int64_t i = 0; i < tl.m; ++i)
    for (int64_t j = j0; j < tl.n; ++j) {
      float v;
      if (s32_acc) {
        // Integer stages wrap modulo 2^32, as the vector adds do (unsigned: no overflow UB).
        uint32_t s = (uint32_t)((const int32_t*)tl.acc)[i * tl.ld_acc + j];
        if (tl.prev) s += (uint32_t)((const int32_t*)tl.prev)[i * tl.ld_prev + j];
        if (d.row_offset) s += (uint32_t)ep.row_offset[i];
        if (d.col_offset) s += (uint32_t)ep.col_offset[j];
        if (d.out == out_type::acc) {
          ((int32_t*)tl.out)[i * tl.ldc + j] = (int32_t)s;
          continue;
        }
        v = (float)(int32_t)s;
        if (d.scale != scale_kind::none) v = v * ep.scale[d.scale == scale_kind::column ? j : 0];
      } else {
        v = ((const float*)tl.acc)[i * tl.ld_acc + j];
        if (tl.prev) v = v + tl.beta * ((const float*)tl.prev)[i * tl.ld_prev + j];
      }
      if (d.bias) v = v + ep.bias[j];
      if (d.add) {
        if (d.out == out_type::u8)
          v = v + ep.add_scale * (float)((int32_t)((const uint8_t*)ep.add)[i * ep.ld_add + j] - ep.add_zero);
        else
          v = v + (d.out == out_type::bf16
                       ? brgemm_from_bits((uint32_t)((const uint16_t*)ep.add)[i * ep.ld_add + j] << 16)
                       : ((const float*)ep.add)[i * ep.ld_add + j]);
      }
      if (d.act != activation::none) v = brgemm_activation(d.act, v);
      switch (d.out) {
        case out_type::bf16: ((uint16_t*)tl.out)[i * tl.ldc + j] = brgemm_bf16_out(v); break;
        case out_type::u8:
        case out_type::s8: {
          float q = std::nearbyint(v / ep.out_scale) + (float)ep.out_zero_point;
          q = brgemm_minps(brgemm_maxps(q, lo), hi);
          if (d.out == out_type::u8) ((uint8_t*)tl.out)[i * tl.ldc + j] = (uint8_t)(int32_t)q;
          else ((int8_t*)tl.out)[i * tl.ldc + j] = (int8_t)(int32_t)q;
          break;
        }
        default: ((float*)tl.out)[i * tl.ldc + j] = v; break;
      }
    }
}
