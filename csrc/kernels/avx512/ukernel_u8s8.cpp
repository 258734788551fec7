// AVX-512 (F/BW) int8 microkernels for CPUs without VNNI (A u8 × B s8 packed VNNI-4 → s32,
// exact). vpmaddubsw is not used: it saturates its 16-bit pair sums (255·127·2 > 32767), so
// results would depend on the ISA. Instead each 16-bit lane is split into its even and odd
// byte, widened to 16 bits (B sign-extended, A zero-extended), and vpmaddwd multiplies and
// adds pairs into 32 bits exactly (|255·(-128)·2| < 2^31):
//   lane of one column = bytes k0 k1 | k2 k3
//   even: (k0, k2) as 16-bit pairs, odd: (k1, k3);  madd(even A, even B) + madd(odd A, odd B)
// An MR × NR tile of C lives in MR·NR/16 zmm accumulators. A is split once per tile into two
// small stack buffers (split_a), so the k loop only broadcasts from them; per k-quad the NR/16
// B vectors are split once (2·NR/16 zmm). 10×32: 20 accumulators + 4 B + 2 A + 2 products,
// no spills (12×32 spills one accumulator). Splitting A in-register per quad instead measured
// 5 % slower on Zen 4 (and costs two more ALU ops per row and quad on any CPU).
// s8 A (SIGNED): split_a XORs A's bytes with 0x80 (a + 128 as u8): the sum is Σ (a+128)·b, and
// execute() removes 128·colsum(B) in the epilogue, as for the VNNI kernels.
// K not a multiple of 4: masked byte loads of A in split_a (A is never read past its k columns;
// B is zero-padded). Zeroing, prefetch, the store of C and the edge-tile instances (M by smaller
// MR, N by a mask on the last vector) are the zmm skeleton's (tile.h).
#include "tile.h"

namespace brgemm::kernels {
namespace avx512_u8s8 {

// A is split once per tile into its even and odd bytes (see split_a), in chunks of QC quads.
constexpr int QC = 64;

// Rows of the A block, k bytes [k0, k0 + kc), as 16-bit lanes ready for vpmaddwd:
// e[m][q] = (a[4q], a[4q+2]), o[m][q] = (a[4q+1], a[4q+3]) zero-extended to 16 bits each.
// Bytes past kc read as zero (masked loads): A is never read past its k columns.
template <int MR, bool SIGNED>
static inline void split_a(const uint8_t* a, int64_t lda, int64_t kc, int32_t (*e)[QC], int32_t (*o)[QC]) {
  const __m512i low = _mm512_set1_epi16(0x00FF);
#pragma GCC unroll 32
  for (int m = 0; m < MR; ++m)
    for (int64_t j = 0; j < kc; j += 64) {
      const int64_t left = kc - j;
      const __mmask64 mask = left >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << left) - 1);
      __m512i x = _mm512_maskz_loadu_epi8(mask, a + m * lda + j);
      if constexpr (SIGNED) x = _mm512_xor_si512(x, _mm512_set1_epi8((char)0x80));
      _mm512_store_si512(&e[m][j / 4], _mm512_and_si512(x, low));
      _mm512_store_si512(&o[m][j / 4], _mm512_srli_epi16(x, 8));
    }
}

template <bool SIGNED>
struct kloop {
  using ta = uint8_t;
  using tb = int8_t;
  using acc = __m512i;
  const int64_t k, lda, ldb4;  // per tile: loop-invariant registers of the k-loop
  explicit kloop(const ukernel_args& p) : k(p.k), lda(p.lda), ldb4(p.ldb * 4) {}

  template <int MR, int NV>
  BRGEMM_KLOOP void run(const uint8_t* a, const int8_t* b, __mmask16 last, __m512i (&c)[MR][NV]) const {
    alignas(64) int32_t ae[MR][QC], ao[MR][QC];
    for (int64_t k0 = 0; k0 < k; k0 += 4 * QC) {
      const int64_t kc = k - k0 < 4 * QC ? k - k0 : 4 * QC;
      split_a<MR, SIGNED>(a + k0, lda, kc, ae, ao);
      const int64_t quads = (kc + 3) / 4;  // B is zero-padded to whole quads
      for (int64_t q = 0; q < quads; ++q) {
        __m512i be[NV], bo[NV];
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) {
          const __m512i x = v == NV - 1 ? _mm512_maskz_loadu_epi32(last, b + 64 * v) : _mm512_loadu_si512(b + 64 * v);
          be[v] = _mm512_srai_epi16(_mm512_slli_epi16(x, 8), 8);  // k0, k2 sign-extended
          bo[v] = _mm512_srai_epi16(x, 8);                        // k1, k3 sign-extended
        }
#pragma GCC unroll 32
        for (int m = 0; m < MR; ++m) {
          const __m512i e = _mm512_set1_epi32(ae[m][q]), o = _mm512_set1_epi32(ao[m][q]);
#pragma GCC unroll 8
          for (int v = 0; v < NV; ++v)
            c[m][v] = _mm512_add_epi32(c[m][v], _mm512_add_epi32(_mm512_madd_epi16(e, be[v]),
                                                                 _mm512_madd_epi16(o, bo[v])));
        }
        b += ldb4;
      }
    }
  }
};

}  // namespace avx512_u8s8

void ukernel_u8s8_s32_10x32c4__avx512(const ukernel_args& p) { zmm::pick<avx512_u8s8::kloop<false>, 10, 2>(p); }
void ukernel_u8s8_s32_6x48c4__avx512(const ukernel_args& p) { zmm::pick<avx512_u8s8::kloop<false>, 6, 3>(p); }
void ukernel_s8s8_s32_10x32c4__avx512(const ukernel_args& p) { zmm::pick<avx512_u8s8::kloop<true>, 10, 2>(p); }
void ukernel_s8s8_s32_6x48c4__avx512(const ukernel_args& p) { zmm::pick<avx512_u8s8::kloop<true>, 6, 3>(p); }

}  // namespace brgemm::kernels
