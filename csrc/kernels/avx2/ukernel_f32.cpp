// AVX2+FMA microkernels with f32 activations: the fallback for CPUs without AVX-512. Same
// scheme as the AVX-512 ones with ymm registers (16 of them: 12 accumulators, 2 B vectors,
// 1 broadcast); f16 weights are widened with F16C. Edge tiles: M by smaller-MR instances, N
// by vmaskmov on the last vector (plain loads when it is full).
#include <immintrin.h>
#include "../ukernels.h"
#include "../batch_block.h"

namespace brgemm::kernels {
namespace avx2_f32 {

// 8 columns of B as f32: all of them, or (partial) the first n, the rest zero.
static inline __m256 load_b(const float* b, __m256i mask, bool partial) {
  return partial ? _mm256_maskload_ps(b, mask) : _mm256_loadu_ps(b);
}
static inline __m256 load_b(const uint16_t* b, __m256i mask, bool partial) {
  if (!partial) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)b));
  alignas(16) uint16_t part[8];  // no masked 16-bit load in AVX2: gather the columns that exist
  int lanes[8];
  _mm256_storeu_si256((__m256i*)lanes, mask);
  for (int j = 0; j < 8; ++j) part[j] = lanes[j] ? b[j] : 0;
  return _mm256_cvtph_ps(_mm_load_si128((const __m128i*)part));
}

template <int MR, int NV, bool FULL, typename TB>
static void tile(const ukernel_args& p) {
  const int64_t K = p.k, lda = p.lda, ldb = p.ldb;
  const __m256i last = _mm256_cmpgt_epi32(_mm256_set1_epi32(p.n - 8 * (NV - 1)),
                                          _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  __m256 acc[MR][NV];
#pragma GCC unroll 32
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[m][v] = _mm256_setzero_ps();

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
        for (int v = 0; v < NV; v += 64 / (8 * (int)sizeof(TB)))
          _mm_prefetch((const char*)(b + 8 * ldb + 8 * v), _MM_HINT_T0);
      }
      __m256 bv[NV];
#pragma GCC unroll 8
      for (int v = 0; v < NV - 1; ++v) bv[v] = load_b(b + 8 * v, last, false);
      bv[NV - 1] = load_b(b + 8 * (NV - 1), last, !FULL);
#pragma GCC unroll 32
      for (int m = 0; m < MR; ++m) {
        const __m256 am = _mm256_broadcast_ss(a + m * lda);
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) acc[m][v] = _mm256_fmadd_ps(am, bv[v], acc[m][v]);
      }
      a += 1;
      b += ldb;
    }
  }

  const __m256 beta = _mm256_set1_ps(p.beta);
  const __m256i all = _mm256_set1_epi32(-1);
#pragma GCC unroll 32
  for (int m = 0; m < MR; ++m) {
    float* c = (float*)p.c + m * p.ldc;
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      const __m256i mask = (v == NV - 1 && !FULL) ? last : all;
      __m256 r = acc[m][v];
      if (p.beta == 1.0f) r = _mm256_add_ps(r, _mm256_maskload_ps(c + 8 * v, mask));
      else if (p.beta != 0.0f) r = _mm256_fmadd_ps(beta, _mm256_maskload_ps(c + 8 * v, mask), r);
      _mm256_maskstore_ps(c + 8 * v, mask, r);
    }
  }
}

template <int M, int NV, typename TB>
static void pick_n(const ukernel_args& p) {
  if constexpr (NV > 1)
    if ((p.n + 7) / 8 < NV) return pick_n<M, NV - 1, TB>(p);
  if (p.n == 8 * NV) tile<M, NV, true, TB>(p);
  else tile<M, NV, false, TB>(p);
}
template <int M, int NV, typename TB = float>
static void pick(const ukernel_args& p) {
  if constexpr (M > 1)
    if (p.m < M) return pick<M - 1, NV, TB>(p);
  pick_n<M, NV, TB>(p);
}

}  // namespace avx2_f32

void ukernel_f32_6x16__avx2(const ukernel_args& p) { avx2_f32::pick<6, 2>(p); }
void ukernel_f32f16_6x16__avx2(const ukernel_args& p) { avx2_f32::pick<6, 2, uint16_t>(p); }

}  // namespace brgemm::kernels
