// AVX-512 BF16 bf16 microkernels (A bf16 × B bf16 packed VNNI-2 → f32): an MR × NR tile of C
// lives in MR·NR/16 zmm accumulators for the whole batch. Per pair of k: NR/16 zmm loads of B
// (16 columns × 2 k = 32 bf16 each), and per row one 32-bit broadcast of A's pair, then
// vdpbf16ps (acc += a[k]·b[k] + a[k+1]·b[k+1], the bf16 products exact in f32).
// Odd K: the last pair's A is one bf16 zero-extended (A is never read past its k columns; B's
// padding row is zero). Edge tiles: M by smaller-MR instances, N by a mask on the last vector.
#include <immintrin.h>
#include "../ukernels.h"
#include "../batch_block.h"

namespace brgemm::kernels {
namespace avx512bf16_bf16 {

// A's pair (a[0], a[1]) in every 32-bit lane. A copy through memcpy: A holds uint16s.
static inline __m512bh broadcast_pair(const uint16_t* a) {
  int32_t x;
  __builtin_memcpy(&x, a, sizeof x);
  return (__m512bh)_mm512_set1_epi32(x);
}
// (a[0], 0): the odd-K tail, one element read.
static inline __m512bh broadcast_single(const uint16_t* a) { return (__m512bh)_mm512_set1_epi32((int32_t)*a); }

template <int MR, int NV>
static void tile(const ukernel_args& p) {
  const int64_t K = p.k, pairs = p.k / 2, lda = p.lda, ldb2 = 2 * p.ldb;
  const __mmask16 last = (__mmask16)((1u << (p.n - 16 * (NV - 1))) - 1u);
  __m512 acc[MR][NV];
#pragma GCC unroll 32
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[m][v] = _mm512_setzero_ps();

  for (int64_t i = 0; i < p.batch->count; ++i) {
    const uint16_t* a = (const uint16_t*)brgemm_block_a(p, i, 2);
    const uint16_t* b = (const uint16_t*)brgemm_block_b(p, i, 2);
    if (i + 1 < p.batch->count) {
      // The next A block's rows are far apart: fetch their first lines while this one runs.
      const char* next = (const char*)brgemm_block_a(p, i + 1, 2);
#pragma GCC unroll 32
      for (int m = 0; m < MR; ++m)
        for (int64_t byte = 0; byte < K * 2 && byte < 256; byte += 64) _mm_prefetch(next + m * lda * 2 + byte, _MM_HINT_T0);
    }
#pragma GCC unroll 2
    for (int64_t kk = 0; kk < pairs; ++kk) {
      __m512bh bv[NV];
#pragma GCC unroll 8
      for (int v = 0; v < NV - 1; ++v) bv[v] = (__m512bh)_mm512_loadu_si512(b + 32 * v);
      bv[NV - 1] = (__m512bh)_mm512_maskz_loadu_epi32(last, b + 32 * (NV - 1));
#pragma GCC unroll 32
      for (int m = 0; m < MR; ++m) {
        const __m512bh am = broadcast_pair(a + m * lda);
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) acc[m][v] = _mm512_dpbf16_ps(acc[m][v], am, bv[v]);
      }
      a += 2;
      b += ldb2;
    }
    if (K & 1) {  // the last packed row: B's second element is the packer's zero
      __m512bh bv[NV];
#pragma GCC unroll 8
      for (int v = 0; v < NV - 1; ++v) bv[v] = (__m512bh)_mm512_loadu_si512(b + 32 * v);
      bv[NV - 1] = (__m512bh)_mm512_maskz_loadu_epi32(last, b + 32 * (NV - 1));
#pragma GCC unroll 32
      for (int m = 0; m < MR; ++m) {
        const __m512bh am = broadcast_single(a + m * lda);
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) acc[m][v] = _mm512_dpbf16_ps(acc[m][v], am, bv[v]);
      }
    }
  }

  const __m512 beta = _mm512_set1_ps(p.beta);
#pragma GCC unroll 32
  for (int m = 0; m < MR; ++m) {
    float* c = (float*)p.c + m * p.ldc;
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      const __mmask16 mask = v == NV - 1 ? last : (__mmask16)0xFFFF;
      __m512 r = acc[m][v];
      if (p.beta == 1.0f) r = _mm512_add_ps(r, _mm512_maskz_loadu_ps(mask, c + 16 * v));
      else if (p.beta != 0.0f) r = _mm512_fmadd_ps(beta, _mm512_maskz_loadu_ps(mask, c + 16 * v), r);
      _mm512_mask_storeu_ps(c + 16 * v, mask, r);
    }
  }
}

// Picks the instance for this tile's m (1..MR) and vector count (1..NV).
template <int M, int NV>
static void pick_n(const ukernel_args& p) {
  if constexpr (NV > 1)
    if ((p.n + 15) / 16 < NV) return pick_n<M, NV - 1>(p);
  tile<M, NV>(p);
}
template <int M, int NV>
static void pick(const ukernel_args& p) {
  if constexpr (M > 1)
    if (p.m < M) return pick<M - 1, NV>(p);
  pick_n<M, NV>(p);
}

}  // namespace avx512bf16_bf16

void ukernel_bf16_f32_6x64c2__avx512bf16(const ukernel_args& p) { avx512bf16_bf16::pick<6, 4>(p); }
void ukernel_bf16_f32_12x32c2__avx512bf16(const ukernel_args& p) { avx512bf16_bf16::pick<12, 2>(p); }

}  // namespace brgemm::kernels
