// The k-loop of the zmm int16 microkernels (A s16 × B s16 packed VNNI-2 → s32), written once for
// avx512/ (vpmaddwd + vpaddd) and avx512vnni/ (vpdpwssd); each includes it with its own flags
// and supplies Dot, the step c += a[2i]·b[2i] + a[2i+1]·b[2i+1] in every 32-bit lane (modulo
// 2^32 on both paths). Per pair of k: NR/16 zmm loads of B (16 columns × 2 k) and per row one
// 32-bit broadcast of A's pair. Odd K: the last pair's A is one int16 zero-extended (A is never
// read past its k columns; B's padding row is zero).
#pragma once
#include "tile.h"

namespace brgemm::kernels {
namespace {

template <class Dot>
struct kloop_s16s16 {
  using ta = int16_t;
  using tb = int16_t;
  using acc = __m512i;
  const int64_t K, pairs, lda, ldb2;  // per tile: loop-invariant registers of the k-loop
  explicit kloop_s16s16(const ukernel_args& p) : K(p.k), pairs(p.k / 2), lda(p.lda), ldb2(2 * p.ldb) {}

  static inline __m512i pair(const int16_t* a) {  // (a[0], a[1]) in every lane
    int32_t x;
    __builtin_memcpy(&x, a, sizeof x);
    return _mm512_set1_epi32(x);
  }
  static inline __m512i single(const int16_t* a) { return _mm512_set1_epi32((int32_t)(uint16_t)*a); }

  template <int MR, int NV, bool TAIL>
  static BRGEMM_KLOOP void step(const int16_t* a, int64_t lda, const int16_t* b, __mmask16 last, __m512i (&c)[MR][NV]) {
    __m512i bv[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV - 1; ++v) bv[v] = _mm512_loadu_si512(b + 32 * v);
    bv[NV - 1] = _mm512_maskz_loadu_epi32(last, b + 32 * (NV - 1));
#pragma GCC unroll 32
    for (int m = 0; m < MR; ++m) {
      const __m512i am = TAIL ? single(a + m * lda) : pair(a + m * lda);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) c[m][v] = Dot::apply(c[m][v], am, bv[v]);
    }
  }

  template <int MR, int NV>
  BRGEMM_KLOOP void run(const int16_t* a, const int16_t* b, __mmask16 last, __m512i (&c)[MR][NV]) const {
#pragma GCC unroll 2
    for (int64_t kk = 0; kk < pairs; ++kk) {
      step<MR, NV, false>(a, lda, b, last, c);
      a += 2;
      b += ldb2;
    }
    if (K & 1) step<MR, NV, true>(a, lda, b, last, c);  // the last packed row: B's second element is zero
  }
};

// s16s16f32: the same k-loop into s32 accumulators of its own for one batch element, then
// converted to f32 (vcvtdq2ps, nearest even) and added to the tile's f32 accumulators. 6×32: 12
// f32 + 12 s32 accumulators + 2 B + the A broadcast (+ a product without VNNI), no spills.
template <class Dot>
struct kloop_s16s16_f32 {
  using ta = int16_t;
  using tb = int16_t;
  using acc = __m512;
  const kloop_s16s16<Dot> inner;
  explicit kloop_s16s16_f32(const ukernel_args& p) : inner(p) {}

  template <int MR, int NV>
  BRGEMM_KLOOP void run(const int16_t* a, const int16_t* b, __mmask16 last, __m512 (&c)[MR][NV]) const {
    __m512i t[MR][NV];
#pragma GCC unroll 32
    for (int m = 0; m < MR; ++m)
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) t[m][v] = _mm512_setzero_si512();
    inner.template run<MR, NV>(a, b, last, t);
#pragma GCC unroll 32
    for (int m = 0; m < MR; ++m)
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) c[m][v] = _mm512_add_ps(c[m][v], _mm512_cvtepi32_ps(t[m][v]));
  }
};

}  // namespace
}  // namespace brgemm::kernels
