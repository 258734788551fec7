// AVX-512 microkernels with f32 activations: an MR × NR tile of C lives in MR·NR/16 zmm
// accumulators for the whole batch; per k, NR/16 vectors of B are loaded (f32, or IEEE half
// widened with vcvtph2ps for f16 weights) and each A element is broadcast.
// Edge tiles: M by smaller-MR instances, N by a mask on the last vector.
#include <immintrin.h>
#include "../ukernels.h"
#include "../batch_block.h"

namespace brgemm::kernels {
namespace avx512_f32 {

// 16 columns of B as f32, lanes outside `mask` zero.
static inline __m512 load_b(const float* b, __mmask16 mask) { return _mm512_maskz_loadu_ps(mask, b); }
static inline __m512 load_b(const uint16_t* b, __mmask16 mask) {
  return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, b));
}

template <int MR, int NV, typename TB>
static void tile(const ukernel_args& p) {
  const int64_t K = p.k, lda = p.lda, ldb = p.ldb;
  const __mmask16 last = (__mmask16)((1u << (p.n - 16 * (NV - 1))) - 1u);
  __m512 acc[MR][NV];
#pragma GCC unroll 32
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[m][v] = _mm512_setzero_ps();

  for (int64_t i = 0; i < p.batch->count; ++i) {
    const float* a = (const float*)brgemm_block_a(p, i, 4);
    const TB* b = (const TB*)brgemm_block_b(p, i, sizeof(TB));
    if (i + 1 < p.batch->count) {
      // The next A block's rows are far apart: fetch their first lines while this one runs.
      const char* next = (const char*)brgemm_block_a(p, i + 1, 4);
#pragma GCC unroll 32
      for (int m = 0; m < MR; ++m)
        for (int64_t byte = 0; byte < K * 4 && byte < 256; byte += 64) _mm_prefetch(next + m * lda * 4 + byte, _MM_HINT_T0);
    }
#pragma GCC unroll 2
    for (int64_t k = 0; k < K; ++k) {
      if constexpr (MR <= 2) {
        // Few rows: B streams once and the loop is bound by its latency; fetch ahead.
#pragma GCC unroll 8
        for (int v = 0; v < NV; v += 64 / (16 * (int)sizeof(TB)))
          _mm_prefetch((const char*)(b + 8 * ldb + 16 * v), _MM_HINT_T0);
      }
      __m512 bv[NV];
#pragma GCC unroll 8
      for (int v = 0; v < NV - 1; ++v) bv[v] = load_b(b + 16 * v, (__mmask16)0xFFFF);
      bv[NV - 1] = load_b(b + 16 * (NV - 1), last);
#pragma GCC unroll 32
      for (int m = 0; m < MR; ++m) {
        const __m512 am = _mm512_set1_ps(a[m * lda]);
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) acc[m][v] = _mm512_fmadd_ps(am, bv[v], acc[m][v]);
      }
      a += 1;
      b += ldb;
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
template <int M, int NV, typename TB>
static void pick_n(const ukernel_args& p) {
  if constexpr (NV > 1)
    if ((p.n + 15) / 16 < NV) return pick_n<M, NV - 1, TB>(p);
  tile<M, NV, TB>(p);
}
template <int M, int NV, typename TB = float>
static void pick(const ukernel_args& p) {
  if constexpr (M > 1)
    if (p.m < M) return pick<M - 1, NV, TB>(p);
  pick_n<M, NV, TB>(p);
}

}  // namespace avx512_f32

void ukernel_f32_6x64__avx512(const ukernel_args& p) { avx512_f32::pick<6, 4>(p); }
void ukernel_f32_8x48__avx512(const ukernel_args& p) { avx512_f32::pick<8, 3>(p); }
void ukernel_f32_14x32__avx512(const ukernel_args& p) { avx512_f32::pick<14, 2>(p); }
void ukernel_f32f16_6x64__avx512(const ukernel_args& p) { avx512_f32::pick<6, 4, uint16_t>(p); }

}  // namespace brgemm::kernels
