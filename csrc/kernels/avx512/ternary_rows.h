// The ternary product's zmm skeleton (brgemm/ternary.h), written once for avx512/ and avx512vnni/
// (both include it, each compiling its own copy with its own flags). MR rows of A at a time
// against column panel pn: per level and block, per 16-column group whose α are not
// all 0, the block's integer sums of the MR rows, then α·float(S) fused into float accumulators
// in level and block order (the scalar twin's order per value, so its bits); the output stage
// (zero point's column term, scale, bias, ReLU, N mask) at the end. Per k-quad the group's 16
// code bytes are broadcast to the four 128-bit lanes and widened once for the MR rows; a single
// row (GEMV) walks the quads with all four groups instead (the activations broadcast once per
// quad: the memory-bound order). What widens the codes and what multiplies is the ISA's step:
//
//   struct my_step {
//     __m512i weights(__m512i bytes) const;            // the 64 s8 weights of a group's quad
//     BRGEMM_KLOOP void add(__m512i& s, __m512i x, __m512i w) const;   // s += x (4 u8, broadcast) · w
//     __m512i sums(__m512i s) const;                   // the block's exact int32 sums
//   };
//
// Registers (MR = 4): 16 float accumulators, 4 integer sums, the weights, a broadcast, the step's constants.
// Unnamed namespace: no avx512vnni copy can be merged into the avx512 library or back.
#pragma once
#include <immintrin.h>
#include <algorithm>
#include <cstring>
#include "../ukernels.h"

#ifndef BRGEMM_KLOOP
#define BRGEMM_KLOOP inline __attribute__((always_inline))  // as tile.h: the step inlined into the loop
#endif

namespace brgemm::kernels {
namespace {

constexpr int ternary_mr = 4;

inline __mmask16 ternary_lanes(int64_t n) {
  return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? 0 : (__mmask16)((1u << n) - 1u);
}

// The output stage of rows i0 .. i0 + MR − 1 of panel pn: acc[r][g] holds columns 16g .. 16g + 15.
template <int MR>
BRGEMM_KLOOP void ternary_store(const ternary_product& p, int64_t pn, int64_t i0, const __m512 (&acc)[MR][4]) {
  const int64_t j0 = pn * ternary_panel, cols = std::min(ternary_panel, p.n - j0);
  const __m512 zp = _mm512_set1_ps(p.zero_point), sc = _mm512_set1_ps(p.scale);
  for (int g = 0; g < 4; ++g) {
    const __mmask16 k = ternary_lanes(cols - 16 * g);
    if (!k) break;
    const int64_t j = j0 + 16 * g;
    const __m512 corr = _mm512_maskz_loadu_ps(k, p.corr + j);
    const __m512 bias = p.bias ? _mm512_maskz_loadu_ps(k, p.bias + j) : _mm512_setzero_ps();
    for (int r = 0; r < MR; ++r) {
      const __m512 t = _mm512_fnmadd_ps(zp, corr, acc[r][g]);
      __m512 y = p.bias ? _mm512_fmadd_ps(sc, t, bias) : _mm512_mul_ps(sc, t);
      if (p.relu) y = _mm512_max_ps(y, _mm512_setzero_ps());
      _mm512_mask_storeu_ps(p.c + (i0 + r) * p.ldc + j, k, y);
    }
  }
}

// One row (a GEMV, or the rows past the last whole MR block): per k-quad the four groups of
// the 64-byte code row, the quad of activations broadcast once (the memory-bound order).
template <class Step>
void ternary_row(const Step& step, const ternary_product& p, int64_t pn, int64_t i) {
  const int64_t nb = p.k / p.block, lb = ternary_level_bytes(p.k, p.n), la = ternary_level_alphas(p.k, p.n, p.block);
  const uint8_t* a = p.a + i * p.lda;
  __m512 acc[1][4] = {{_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()}};
  for (int l = 0; l < p.levels; ++l) {
    const uint8_t* panel = p.b + l * lb + pn * (p.k / 4) * 64;
    const float* alpha = p.alpha + l * la + pn * nb * ternary_panel;
    for (int64_t b = 0; b < nb; ++b) {
      __m512 al[4];
      __mmask16 nz = 0;
      for (int g = 0; g < 4; ++g) {
        al[g] = _mm512_loadu_ps(alpha + b * ternary_panel + 16 * g);
        nz |= _mm512_cmpneq_ps_mask(al[g], _mm512_setzero_ps());
      }
      if (!nz) continue;  // no such residual block in this panel: its codes are not read
      __m512i s[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512()};
      const uint8_t* row = panel + b * (p.block / 4) * 64;
      for (int64_t q = b * p.block / 4; q < (b + 1) * p.block / 4; ++q, row += 64) {
        int32_t quad;
        std::memcpy(&quad, a + 4 * q, 4);
        const __m512i x = _mm512_set1_epi32(quad);
        for (int g = 0; g < 4; ++g)
          step.add(s[g], x, step.weights(_mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i*)(row + 16 * g)))));
      }
      for (int g = 0; g < 4; ++g) acc[0][g] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(step.sums(s[g])), al[g], acc[0][g]);
    }
  }
  ternary_store<1>(p, pn, i, acc);
}

// ternary_mr rows (a convolution's pixels, a batch): group by group, each quad's weights
// widened once for the MR rows (the compute-bound order).
template <class Step>
void ternary_rows(const Step& step, const ternary_product& p, int64_t pn, int64_t i0) {
  constexpr int MR = ternary_mr;
  const int64_t nb = p.k / p.block, lb = ternary_level_bytes(p.k, p.n), la = ternary_level_alphas(p.k, p.n, p.block);
  const uint8_t* a[MR];
  for (int r = 0; r < MR; ++r) a[r] = p.a + (i0 + r) * p.lda;
  __m512 acc[MR][4];
  for (int r = 0; r < MR; ++r)
    for (int g = 0; g < 4; ++g) acc[r][g] = _mm512_setzero_ps();
  for (int l = 0; l < p.levels; ++l) {
    const uint8_t* panel = p.b + l * lb + pn * (p.k / 4) * 64;
    const float* alpha = p.alpha + l * la + pn * nb * ternary_panel;
    for (int64_t b = 0; b < nb; ++b) {
      const int64_t q0 = b * p.block / 4, q1 = (b + 1) * p.block / 4;
#pragma GCC unroll 4
      for (int g = 0; g < 4; ++g) {
        const __m512 al = _mm512_loadu_ps(alpha + b * ternary_panel + 16 * g);
        if (!_mm512_cmpneq_ps_mask(al, _mm512_setzero_ps())) continue;  // no such residual here: not read
        __m512i s[MR];
        for (int r = 0; r < MR; ++r) s[r] = _mm512_setzero_si512();
        const uint8_t* row = panel + q0 * 64 + 16 * g;
        for (int64_t q = q0; q < q1; ++q, row += 64) {
          const __m512i w = step.weights(_mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i*)row)));
          for (int r = 0; r < MR; ++r) {
            int32_t quad;
            std::memcpy(&quad, a[r] + 4 * q, 4);
            step.add(s[r], _mm512_set1_epi32(quad), w);
          }
        }
        for (int r = 0; r < MR; ++r) acc[r][g] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(step.sums(s[r])), al, acc[r][g]);
      }
    }
  }
  ternary_store<MR>(p, pn, i0, acc);
}

// Panels [p0, p1), every row: ternary_mr rows at a time, then one by one.
template <class Step>
void ternary_gemm_rows(const ternary_product& p, int64_t p0, int64_t p1) {
  const Step step;
  for (int64_t pn = p0; pn < p1; ++pn) {
    int64_t i = 0;
    for (; i + ternary_mr <= p.m; i += ternary_mr) ternary_rows(step, p, pn, i);
    for (; i < p.m; ++i) ternary_row(step, p, pn, i);
  }
}

}  // namespace
}  // namespace brgemm::kernels
