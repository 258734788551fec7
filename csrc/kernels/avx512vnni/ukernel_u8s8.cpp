// AVX-512 VNNI int8 microkernels (A u8 × B s8 packed VNNI-4 → s32, exact): an MR × NR tile of
// C lives in MR·NR/16 zmm accumulators for the whole batch. Per k-quad, NR/16 zmm of B are
// loaded (16 columns × 4 k each) and each row's 4 A bytes are broadcast as one 32-bit lane;
// vpdpbusd adds the four u8·s8 products of a lane into its s32 accumulator without any
// intermediate saturation (unlike vpmaddubsw), so the sums are exact.
// s8 A (SIGNED): each broadcast quad is XORed with 0x80 bytes, i.e. a + 128 as u8; the sum is
// Σ (a+128)·b and execute() removes 128·colsum(B) in the epilogue (see brgemm.h).
// K not a multiple of 4: a last quad built from the remaining A bytes (never reading A past its
// k columns). Zeroing, prefetch, the store of C and the edge-tile instances (M by smaller MR, N
// by a mask on the last vector) are the zmm skeleton's (../avx512/tile.h).
#include "../avx512/tile.h"  // the zmm skeleton, compiled here with this level's flags

namespace brgemm::kernels {
namespace avx512vnni_u8s8 {

// The 4 bytes of A at `a` as one 32-bit lane (unaligned).
static inline int32_t quad(const uint8_t* a) {
  int32_t v;
  __builtin_memcpy(&v, a, 4);
  return v;
}

// The last r (1..3) bytes of a row as a quad, zero-filled: bytes past k are never read.
static inline int32_t tail_quad(const uint8_t* a, int64_t r) {
  uint32_t v = a[0];
  if (r > 1) v |= (uint32_t)a[1] << 8;
  if (r > 2) v |= (uint32_t)a[2] << 16;
  return (int32_t)v;
}

// A's quad broadcast to every lane, shifted to u8 when A is signed.
template <bool SIGNED>
static inline __m512i bcast(int32_t q) {
  if constexpr (SIGNED) return _mm512_xor_si512(_mm512_set1_epi32(q), _mm512_set1_epi32((int)0x80808080u));
  return _mm512_set1_epi32(q);
}

template <bool SIGNED>
struct kloop {
  using ta = uint8_t;
  using tb = int8_t;
  using acc = __m512i;
  const int64_t quads, rem, lda, ldb4;  // per tile: loop-invariant registers of the k-loop
  explicit kloop(const ukernel_args& p) : quads(p.k / 4), rem(p.k % 4), lda(p.lda), ldb4(p.ldb * 4) {}

  template <int MR, int NV>
  BRGEMM_KLOOP void run(const uint8_t* a, const int8_t* b, __mmask16 last, __m512i (&c)[MR][NV]) const {
#pragma GCC unroll 2
    for (int64_t q = 0; q < quads; ++q) {
      __m512i bv[NV];
#pragma GCC unroll 8
      for (int v = 0; v < NV - 1; ++v) bv[v] = _mm512_loadu_si512(b + 64 * v);
      bv[NV - 1] = _mm512_maskz_loadu_epi32(last, b + 64 * (NV - 1));
#pragma GCC unroll 32
      for (int m = 0; m < MR; ++m) {
        const __m512i am = bcast<SIGNED>(quad(a + m * lda));
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) c[m][v] = _mm512_dpbusd_epi32(c[m][v], am, bv[v]);
      }
      a += 4;
      b += ldb4;
    }
    if (rem) {  // B is zero-padded to the quad; A is not
      __m512i bv[NV];
#pragma GCC unroll 8
      for (int v = 0; v < NV - 1; ++v) bv[v] = _mm512_loadu_si512(b + 64 * v);
      bv[NV - 1] = _mm512_maskz_loadu_epi32(last, b + 64 * (NV - 1));
#pragma GCC unroll 32
      for (int m = 0; m < MR; ++m) {
        const __m512i am = bcast<SIGNED>(tail_quad(a + m * lda, rem));
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) c[m][v] = _mm512_dpbusd_epi32(c[m][v], am, bv[v]);
      }
    }
  }
};

}  // namespace avx512vnni_u8s8

void ukernel_u8s8_s32_6x64c4__avx512vnni(const ukernel_args& p) { zmm::pick<avx512vnni_u8s8::kloop<false>, 6, 4>(p); }
void ukernel_u8s8_s32_8x48c4__avx512vnni(const ukernel_args& p) { zmm::pick<avx512vnni_u8s8::kloop<false>, 8, 3>(p); }
void ukernel_u8s8_s32_14x32c4__avx512vnni(const ukernel_args& p) { zmm::pick<avx512vnni_u8s8::kloop<false>, 14, 2>(p); }
void ukernel_s8s8_s32_6x64c4__avx512vnni(const ukernel_args& p) { zmm::pick<avx512vnni_u8s8::kloop<true>, 6, 4>(p); }
void ukernel_s8s8_s32_8x48c4__avx512vnni(const ukernel_args& p) { zmm::pick<avx512vnni_u8s8::kloop<true>, 8, 3>(p); }
void ukernel_s8s8_s32_14x32c4__avx512vnni(const ukernel_args& p) { zmm::pick<avx512vnni_u8s8::kloop<true>, 14, 2>(p); }

}  // namespace brgemm::kernels
