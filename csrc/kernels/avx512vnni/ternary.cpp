// The ternary products of brgemm/ternary.h with AVX-512 VNNI: as AVX-512's (see there), but a
// 16-byte group broadcast to the four 128-bit lanes is shifted left by 6 − 2L in lane L and masked
// to each byte's top two bits, so the signed 2-bit code becomes the s8 weight 64·Ŵ (0, 64, −64)
// without a lookup, and vpdpbusd adds the quad's four u8 × s8 products into s32 lanes (three
// instructions per 64 weights). The block's sums, 64·S, are shifted back exactly (|S| ≤ 255·256),
// then α·float(S) is fused in level and block order as the scalar twin does.
#include <immintrin.h>
#include <algorithm>
#include <cstring>
#include "../ukernels.h"

namespace brgemm::kernels {

namespace {

inline __mmask16 lanes(int64_t n) { return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? 0 : (__mmask16)((1u << n) - 1u); }

void rows(const ternary_product& p, int64_t pn, int64_t i) {
  const int64_t nb = p.k / p.block, lb = ternary_level_bytes(p.k, p.n), la = ternary_level_alphas(p.k, p.n, p.block);
  const __m512i shift = _mm512_setr_epi32(6, 6, 6, 6, 4, 4, 4, 4, 2, 2, 2, 2, 0, 0, 0, 0);
  const __m512i top = _mm512_set1_epi8((char)0xC0);
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
          s[g] = _mm512_dpbusd_epi32(s[g], x, _mm512_and_si512(_mm512_sllv_epi32(bytes, shift), top));
        }
      }
      for (int g = 0; g < 4; ++g)
        acc[g] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_srai_epi32(s[g], 6)), al[g], acc[g]);
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

void ternary_gemm__avx512vnni(const ternary_product& p, int64_t p0, int64_t p1) {
  for (int64_t pn = p0; pn < p1; ++pn)
    for (int64_t i = 0; i < p.m; ++i) rows(p, pn, i);
}

}  // namespace brgemm::kernels
