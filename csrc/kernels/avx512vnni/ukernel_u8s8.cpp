// AVX-512 VNNI int8 microkernels (A u8 × B s8 packed VNNI-4 → s32, exact): an MR × NR tile of
// C lives in MR·NR/16 zmm accumulators for the whole batch. Per k-quad, NR/16 zmm of B are
// loaded (16 columns × 4 k each) and each row's 4 A bytes are broadcast as one 32-bit lane;
// vpdpbusd adds the four u8·s8 products of a lane into its s32 accumulator without any
// intermediate saturation (unlike vpmaddubsw), so the sums are exact.
// s8 A (SIGNED): each broadcast quad is XORed with 0x80 bytes, i.e. a + 128 as u8; the sum is
// Σ (a+128)·b and execute() removes 128·colsum(B) in the epilogue (see brgemm.h).
// Edge tiles: M by smaller-MR instances, N by a mask on the last vector; K not a multiple of 4
// by a last quad built from the remaining A bytes (never reading A past its k columns).
#include <immintrin.h>
#include "../ukernels.h"
#include "../batch_block.h"

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

template <int MR, int NV, bool SIGNED>
static void tile(const ukernel_args& p) {
  const int64_t quads = p.k / 4, rem = p.k % 4, lda = p.lda, ldb4 = p.ldb * 4;
  const __mmask16 last = (__mmask16)((1u << (p.n - 16 * (NV - 1))) - 1u);
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
        for (int v = 0; v < NV; ++v) acc[m][v] = _mm512_dpbusd_epi32(acc[m][v], am, bv[v]);
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
        for (int v = 0; v < NV; ++v) acc[m][v] = _mm512_dpbusd_epi32(acc[m][v], am, bv[v]);
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

}  // namespace avx512vnni_u8s8

void ukernel_u8s8_s32_6x64c4__avx512vnni(const ukernel_args& p) { avx512vnni_u8s8::pick<6, 4>(p); }
void ukernel_u8s8_s32_8x48c4__avx512vnni(const ukernel_args& p) { avx512vnni_u8s8::pick<8, 3>(p); }
void ukernel_u8s8_s32_14x32c4__avx512vnni(const ukernel_args& p) { avx512vnni_u8s8::pick<14, 2>(p); }
void ukernel_s8s8_s32_6x64c4__avx512vnni(const ukernel_args& p) { avx512vnni_u8s8::pick<6, 4, true>(p); }
void ukernel_s8s8_s32_8x48c4__avx512vnni(const ukernel_args& p) { avx512vnni_u8s8::pick<8, 3, true>(p); }
void ukernel_s8s8_s32_14x32c4__avx512vnni(const ukernel_args& p) { avx512vnni_u8s8::pick<14, 2, true>(p); }

}  // namespace brgemm::kernels
