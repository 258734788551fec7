// The ternary product's zmm skeleton (brgemm/ternary.h), written once for avx512/ and avx512vnni/
// (both include it, each compiling its own copy with its own flags): for row i of A and column
// panel pn, per level and block whose 64 α are not all 0, the block's integer sums of the four
// 16-column groups, then α·float(S) fused into float accumulators in level and block order (the
// scalar twin's order); the output stage (zero point's column term, scale, bias, ReLU, N mask)
// at the end. Per k-quad the four u8 activations are broadcast and each group's 16 code bytes
// broadcast to the four 128-bit lanes; what turns them into products is the ISA's step:
//
//   struct my_step {
//     using sum = __m512i;                              // the block's running sums, one per group
//     // s += the quad's products of x (4 u8, broadcast) and the group's codes (16 bytes, in
//     // every 128-bit lane, as packed)
//     BRGEMM_KLOOP void add(__m512i& s, __m512i x, __m512i bytes) const;
//     __m512i sums(__m512i s) const;                    // the block's exact int32 sums
//   };
//
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

inline __mmask16 ternary_lanes(int64_t n) {
  return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? 0 : (__mmask16)((1u << n) - 1u);
}

template <class Step>
void ternary_row(const Step& step, const ternary_product& p, int64_t pn, int64_t i) {
  const int64_t nb = p.k / p.block, lb = ternary_level_bytes(p.k, p.n), la = ternary_level_alphas(p.k, p.n, p.block);
  const uint8_t* a = p.a + i * p.lda;
  __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
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
          step.add(s[g], x, _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i*)(row + 16 * g))));
      }
      for (int g = 0; g < 4; ++g) acc[g] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(step.sums(s[g])), al[g], acc[g]);
    }
  }
  const int64_t j0 = pn * ternary_panel, cols = std::min(ternary_panel, p.n - j0);
  const __m512 zp = _mm512_set1_ps(p.zero_point), sc = _mm512_set1_ps(p.scale);
  for (int g = 0; g < 4; ++g) {
    const __mmask16 k = ternary_lanes(cols - 16 * g);
    if (!k) break;
    const int64_t j = j0 + 16 * g;
    const __m512 t = _mm512_fnmadd_ps(zp, _mm512_maskz_loadu_ps(k, p.corr + j), acc[g]);
    __m512 y = p.bias ? _mm512_fmadd_ps(sc, t, _mm512_maskz_loadu_ps(k, p.bias + j)) : _mm512_mul_ps(sc, t);
    if (p.relu) y = _mm512_max_ps(y, _mm512_setzero_ps());
    _mm512_mask_storeu_ps(p.c + i * p.ldc + j, k, y);
  }
}

// Panels [p0, p1), every row.
template <class Step>
void ternary_gemm_rows(const ternary_product& p, int64_t p0, int64_t p1) {
  const Step step;
  for (int64_t pn = p0; pn < p1; ++pn)
    for (int64_t i = 0; i < p.m; ++i) ternary_row(step, p, pn, i);
}

}  // namespace
}  // namespace brgemm::kernels
