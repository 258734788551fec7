// The ternary products of brgemm/ternary.h with AVX-512 VNNI (the loop: ../avx512/ternary_rows.h).
// The step: each lane's code bytes shifted left by 6 − 2L in lane L and masked to each byte's top
// two bits turn the signed 2-bit code into the s8 weight 64·Ŵ (0, 64, −64) without a lookup, and
// vpdpbusd adds the quad's four u8 × s8 products into s32 lanes (three instructions per 64
// weights). The block's sums, 64·S, are shifted back exactly (|S| ≤ 255·256).
#include "../avx512/ternary_rows.h"

namespace brgemm::kernels {

namespace {

struct dpbusd_step {
  const __m512i shift = _mm512_setr_epi32(6, 6, 6, 6, 4, 4, 4, 4, 2, 2, 2, 2, 0, 0, 0, 0);
  const __m512i top = _mm512_set1_epi8((char)0xC0);
  __m512i weights(__m512i bytes) const { return _mm512_and_si512(_mm512_sllv_epi32(bytes, shift), top); }
  BRGEMM_KLOOP void add(__m512i& s, __m512i x, __m512i w) const { s = _mm512_dpbusd_epi32(s, x, w); }
  __m512i sums(__m512i s) const { return _mm512_srai_epi32(s, 6); }
};

}  // namespace

void ternary_gemm__avx512vnni(const ternary_product& p, int64_t p0, int64_t p1) {
  ternary_gemm_rows<dpbusd_step>(p, p0, p1);
}

}  // namespace brgemm::kernels
