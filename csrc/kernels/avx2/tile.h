// The ymm microkernel skeleton of the AVX2 level: an MR × NR tile of C held in MR·NV ymm
// accumulators (NV = NR/8) for the whole batch. The skeleton zeroes them, walks the batch
// (block addresses, prefetch of the next A block), stores C with beta and the N mask, and
// picks the instance for an edge tile. A ukernel file supplies only its k-loop, as a struct:
//
//   struct my_kloop {                   // in the ukernel file's own namespace
//     using ta = ...;                   // element type of A
//     using tb = ...;                   // element type of (packed) B
//     using acc = __m256;               // f32 accumulators (any beta), or __m256i: s32 (beta 0 or 1)
//     const int64_t lda, ...;           // per-tile constants: set once, invariant in the k-loop
//     explicit my_kloop(const ukernel_args& p);
//     // c[m][v] += A_i[m, :]·B_i[:, 8v .. 8v+7] for one batch element; unless FULL, the last
//     // vector's columns past n are never read (load it with vpmaskmov under `last`).
//     template <int MR, int NV, bool FULL>
//     BRGEMM_KLOOP void run(const ta* a, const tb* b, __m256i last, acc (&c)[MR][NV]) const;
//   };
//   void ukernel_<name>(const ukernel_args& p) { ymm::pick<my_kloop, MR, NV>(p); }
//
// AVX2 has no mask registers and vpmaskmov costs more than a plain load or store, so each
// tile comes in two instances: FULL (n = 8·NV, plain loads and stores) and masked.
// Everything here is in an unnamed namespace: each translation unit that includes it gets its
// own copy compiled with its own flags (see ../avx512/tile.h).
// Edge tiles: M by smaller-MR instances, N by vpmaskmov on the last vector. beta = 0 never reads C.
#pragma once
#include <immintrin.h>
#include "../ukernels.h"
#include "../batch_block.h"

// The k-loop is inlined into its tile so that the accumulators stay in registers.
#define BRGEMM_KLOOP inline __attribute__((always_inline))

namespace brgemm::kernels::ymm {
namespace {

inline void set_zero(__m256& x) { x = _mm256_setzero_ps(); }
inline void set_zero(__m256i& x) { x = _mm256_setzero_si256(); }

// f32: C = acc (beta 0, C not read), acc + C (beta 1), or acc + beta·C.
template <int MR, int NV, bool FULL>
inline void store(const ukernel_args& p, const __m256 (&acc)[MR][NV], __m256i last) {
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

// s32: beta is 0 (write, never read C) or 1 (add to C).
template <int MR, int NV, bool FULL>
inline void store(const ukernel_args& p, const __m256i (&acc)[MR][NV], __m256i last) {
  const bool accumulate = p.beta != 0.0f;
  const __m256i all = _mm256_set1_epi32(-1);
#pragma GCC unroll 32
  for (int m = 0; m < MR; ++m) {
    int* c = (int*)p.c + m * p.ldc;
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      const __m256i mask = (v == NV - 1 && !FULL) ? last : all;
      __m256i r = acc[m][v];
      if (accumulate) r = _mm256_add_epi32(r, _mm256_maskload_epi32(c + 8 * v, mask));
      _mm256_maskstore_epi32(c + 8 * v, mask, r);
    }
  }
}

// One MR × 8·NV instance (p.m == MR, 8·(NV-1) < p.n ≤ 8·NV; FULL: p.n == 8·NV).
template <class Loop, int MR, int NV, bool FULL>
void tile(const ukernel_args& p) {
  using ta = typename Loop::ta;
  using tb = typename Loop::tb;
  const Loop loop(p);  // its per-tile constants, computed once as the k-loop's invariants
  const int64_t lda = p.lda;
  const __m256i last = _mm256_cmpgt_epi32(_mm256_set1_epi32(p.n - 8 * (NV - 1)),
                                          _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  typename Loop::acc acc[MR][NV];
#pragma GCC unroll 32
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) set_zero(acc[m][v]);

  for (int64_t i = 0; i < p.batch->count; ++i) {
    const ta* a = (const ta*)brgemm_block_a(p, i, sizeof(ta));
    const tb* b = (const tb*)brgemm_block_b(p, i, sizeof(tb));
    if (i + 1 < p.batch->count) {
      // The next A block's rows are far apart: fetch their first lines while this one runs.
      // Inline and in this form on purpose: in a function of its own gcc finds the prefetches
      // side-effect free and deletes the call; this loop is what gcc turns into the straight-line
      // prefetches the kernels were measured with.
      const char* next = (const char*)brgemm_block_a(p, i + 1, sizeof(ta));
#pragma GCC unroll 32
      for (int m = 0; m < MR; ++m)
        for (int64_t byte = 0; byte < p.k * (int64_t)sizeof(ta) && byte < 256; byte += 64)
          _mm_prefetch(next + m * lda * (int64_t)sizeof(ta) + byte, _MM_HINT_T0);
    }
    loop.template run<MR, NV, FULL>(a, b, last, acc);
  }
  store<MR, NV, FULL>(p, acc, last);
}

// Picks the instance for this tile's m (1..MR), vector count (1..NV) and full or masked last vector.
template <class Loop, int M, int NV>
void pick_n(const ukernel_args& p) {
  if constexpr (NV > 1)
    if ((p.n + 7) / 8 < NV) return pick_n<Loop, M, NV - 1>(p);
  if (p.n == 8 * NV) tile<Loop, M, NV, true>(p);
  else tile<Loop, M, NV, false>(p);
}
template <class Loop, int M, int NV>
void pick(const ukernel_args& p) {
  if constexpr (M > 1)
    if (p.m < M) return pick<Loop, M - 1, NV>(p);
  pick_n<Loop, M, NV>(p);
}

}  // namespace
}  // namespace brgemm::kernels::ymm
