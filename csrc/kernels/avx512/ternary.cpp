// The ternary products of brgemm/ternary.h with AVX-512 (the loop: ternary_rows.h). The step: each
// lane's code bytes shifted right by 2L in lane L, masked to 2 bits and looked up (vpshufb: 0 → 0,
// 1 → 1, 3 → −1) give 64 s8 weights in the u8s8 order; vpmaddubsw against the quad of u8
// activations adds pairs into s16 lanes, summed over the block in s16 (at most 255·block/2 ≤ 32767
// for block ≤ 256, so never saturating), then vpmaddwd by ones gives the block's int32 sums:
// exact, as the scalar twin's.
#include "ternary_rows.h"

namespace brgemm::kernels {

namespace {

struct maddubs_step {
  const __m512i shift = _mm512_setr_epi32(0, 0, 0, 0, 2, 2, 2, 2, 4, 4, 4, 4, 6, 6, 6, 6);
  const __m512i three = _mm512_set1_epi8(3), ones = _mm512_set1_epi16(1);
  const __m512i lut = _mm512_broadcast_i32x4(_mm_setr_epi8(0, 1, 0, -1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0));
  __m512i weights(__m512i bytes) const {
    return _mm512_shuffle_epi8(lut, _mm512_and_si512(_mm512_srlv_epi32(bytes, shift), three));
  }
  BRGEMM_KLOOP void add(__m512i& s, __m512i x, __m512i w) const { s = _mm512_add_epi16(s, _mm512_maddubs_epi16(x, w)); }
  __m512i sums(__m512i s) const { return _mm512_madd_epi16(s, ones); }
};

}  // namespace

void ternary_gemm__avx512(const ternary_product& p, int64_t p0, int64_t p1) {
  ternary_gemm_rows<maddubs_step>(p, p0, p1);
}

}  // namespace brgemm::kernels
