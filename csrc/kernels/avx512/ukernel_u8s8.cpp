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
// Edge tiles: M by smaller-MR instances, N by a mask on the last vector; K not a multiple of 4
// by masked byte loads of A in split_a (A is never read past its k columns; B is zero-padded).
#include <immintrin.h>
#include "../ukernels.h"
#include "../batch_block.h"

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

template <int MR, int NV, bool SIGNED>
static void tile(const ukernel_args& p) {
  const int64_t lda = p.lda, ldb4 = p.ldb * 4;
  const __mmask16 last = (__mmask16)((1u << (p.n - 16 * (NV - 1))) - 1u);
  alignas(64) int32_t ae[MR][QC], ao[MR][QC];
  __m512i acc[MR][NV];
#pragma GCC unroll 32
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[m][v] = _mm512_setzero_si512();

  for (int64_t i = 0; i < p.batch->count; ++i) {
    const uint8_t* a = (const uint8_t*)brgemm_block_a(p, i, 1);
    const int8_t* b = (const int8_t*)brgemm_block_b(p, i, 1);
    if (i + 1 < p.batch->count) {
      // The next A block's rows are far apart: fetch their first lines while this one runs.
      const char* next = (const char*)brgemm_block_a(p, i + 1, 1);
#pragma GCC unroll 32
      for (int m = 0; m < MR; ++m)
        for (int64_t byte = 0; byte < p.k && byte < 256; byte += 64) _mm_prefetch(next + m * lda + byte, _MM_HINT_T0);
    }
    for (int64_t k0 = 0; k0 < p.k; k0 += 4 * QC) {
      const int64_t kc = p.k - k0 < 4 * QC ? p.k - k0 : 4 * QC;
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
            acc[m][v] = _mm512_add_epi32(acc[m][v], _mm512_add_epi32(_mm512_madd_epi16(e, be[v]),
                                                                     _mm512_madd_epi16(o, bo[v])));
        }
        b += ldb4;
      }
    }
  }

  // u8s8 beta is 0 (write, never read C) or 1 (add to C).
  const bool accumulate = p.beta != 0.0f;
#pragma GCC unroll 32
  for (int m = 0; m < MR; ++m) {
    int32_t* c = (int32_t*)p.c + m * p.ldc;
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      const __mmask16 mask = v == NV - 1 ? last : (__mmask16)0xFFFF;
      __m512i r = acc[m][v];
      if (accumulate) r = _mm512_add_epi32(r, _mm512_maskz_loadu_epi32(mask, c + 16 * v));
      _mm512_mask_storeu_epi32(c + 16 * v, mask, r);
    }
  }
}

// Picks the instance for this tile's m (1..MR) and vector count (1..NV).
template <int M, int NV, bool SIGNED>
static void pick_n(const ukernel_args& p) {
  if constexpr (NV > 1)
    if ((p.n + 15) / 16 < NV) return pick_n<M, NV - 1, SIGNED>(p);
  tile<M, NV, SIGNED>(p);
}
template <int M, int NV, bool SIGNED = false>
static void pick(const ukernel_args& p) {
  if constexpr (M > 1)
    if (p.m < M) return pick<M - 1, NV, SIGNED>(p);
  pick_n<M, NV, SIGNED>(p);
}

}  // namespace avx512_u8s8

void ukernel_u8s8_s32_10x32c4__avx512(const ukernel_args& p) { avx512_u8s8::pick<10, 2>(p); }
void ukernel_u8s8_s32_6x48c4__avx512(const ukernel_args& p) { avx512_u8s8::pick<6, 3>(p); }
void ukernel_s8s8_s32_10x32c4__avx512(const ukernel_args& p) { avx512_u8s8::pick<10, 2, true>(p); }
void ukernel_s8s8_s32_6x48c4__avx512(const ukernel_args& p) { avx512_u8s8::pick<6, 3, true>(p); }

}  // namespace brgemm::kernels
