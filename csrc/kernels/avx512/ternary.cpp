// The ternary products of brgemm/ternary.h with AVX-512: per k-quad, each 16-byte group of a panel
// row is broadcast to the four 128-bit lanes, shifted by 2L in lane L, masked to 2 bits and looked
// up (vpshufb: 0 → 0, 1 → 1, 3 → −1), giving 64 s8 weights in the u8s8 order; vpmaddubsw against
// the quad of u8 activations (broadcast) adds pairs into s16 lanes, summed over the block in s16
// (at most 255·block/2 ≤ 32767 for block ≤ 256), then vpmaddwd by ones gives the block's int32
// sums: exact, as the scalar twin's. α·float(S) is fused into float accumulators in level and
// block order, as the twin does; a block whose 64 α are all 0 (no such residual) is not read.
#include <immintrin.h>
#include <algorithm>
#include <cstring>
#include "../ukernels.h"

namespace brgemm::kernels {

namespace {

inline __mmask16 lanes(int64_t n) { return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? 0 : (__mmask16)((1u << n) - 1u); }

void rows(const ternary_product& p, int64_t pn, int64_t i) {
  const int64_t nb = p.k / p.block, lb = ternary_level_bytes(p.k, p.n), la = ternary_level_alphas(p.k, p.n, p.block);
  const __m512i shift = _mm512_setr_epi32(0, 0, 0, 0, 2, 2, 2, 2, 4, 4, 4, 4, 6, 6, 6, 6);
  const __m512i three = _mm512_set1_epi8(3), ones = _mm512_set1_epi16(1);
  const __m512i lut = _mm512_broadcast_i32x4(_mm_setr_epi8(0, 1, 0, -1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0));
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
      if (!nz) continue;
      __m512i s[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512()};
      const uint8_t* row = panel + b * (p.block / 4) * 64;
      for (int64_t q = b * p.block / 4; q < (b + 1) * p.block / 4; ++q, row += 64) {
        int32_t quad;
        std::memcpy(&quad, a + 4 * q, 4);
        const __m512i x = _mm512_set1_epi32(quad);
        for (int g = 0; g < 4; ++g) {
          const __m512i bytes = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i*)(row + 16 * g)));
          const __m512i w = _mm512_shuffle_epi8(lut, _mm512_and_si512(_mm512_srlv_epi32(bytes, shift), three));
          s[g] = _mm512_add_epi16(s[g], _mm512_maddubs_epi16(x, w));
        }
      }
      for (int g = 0; g < 4; ++g)
        acc[g] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_madd_epi16(s[g], ones)), al[g], acc[g]);
    }
  }
  const int64_t j0 = pn * ternary_panel, cols = std::min(ternary_panel, p.n - j0);
  const __m512 zp = _mm512_set1_ps(p.zero_point), sc = _mm512_set1_ps(p.scale);
  for (int g = 0; g < 4; ++g) {
    const __mmask16 k = lanes(cols - 16 * g);
    if (!k) break;
    const int64_t j = j0 + 16 * g;
    const __m512 t = _mm512_fnmadd_ps(zp, _mm512_maskz_loadu_ps(k, p.corr + j), acc[g]);
    __m512 y = p.bias ? _mm512_fmadd_ps(sc, t, _mm512_maskz_loadu_ps(k, p.bias + j)) : _mm512_mul_ps(sc, t);
    if (p.relu) y = _mm512_max_ps(y, _mm512_setzero_ps());
    _mm512_mask_storeu_ps(p.c + i * p.ldc + j, k, y);
  }
}

}  // namespace

void ternary_gemm__avx512(const ternary_product& p, int64_t p0, int64_t p1) {
  for (int64_t pn = p0; pn < p1; ++pn)
    for (int64_t i = 0; i < p.m; ++i) rows(p, pn, i);
}

}  // namespace brgemm::kernels
