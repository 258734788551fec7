// The DFP-16 product driver (layers/dfp.cpp): float32 C from int16 mantissas, with int32 sums
// over chunks of K short enough never to overflow, each chunk's sums converted to float and added
// (Das et al., ICLR 2018). The chunks are the batch of one s16s16f32 BRGEMM call per block of C,
// whose kernels do exactly that in registers.
#pragma once
#include <cstdint>
#include "brgemm/brgemm.h"

namespace brgemm::layers {

// The chunk length: the largest kc (k itself, or even) for which every chunk [c·kc, (c+1)·kc) of
// every row i has Σ_{k∈chunk} |a_ik| · b_absmax ≤ 2^31 − 1, which bounds every partial sum of any
// order (a pair alone always fits: 2·32767·32767 < 2^31). A: m × k int16 mantissas (lda); the
// rows' sums of |a| on up to `threads` threads.
int64_t dfp16_chunk(const int16_t* a, int64_t m, int64_t k, int64_t lda, int32_t b_absmax, int threads = 1);

// B (k × n int16, ldb) packed by pack_b (s16s16, n columns) into packed, and max|b|, on up to
// `threads` threads over whole pairs of rows.
int32_t dfp16_pack_b(const int16_t* b, int64_t k, int64_t n, int64_t ldb, int16_t* packed, int threads);

// C[m×n] (f32, ldc) = 2^e · Σ_chunks A[:, chunk]·B[chunk, :] on num_threads() threads over blocks
// of C: per block one s16s16f32 call over the whole chunks (the batch), one for the shorter last
// chunk, then the scaling by 2^e while the block is in cache. B: k × n int16 packed by pack_b
// (s16s16, ldb columns).
status dfp16_gemm(int64_t m, int64_t n, int64_t k, const int16_t* a, int64_t lda, const int16_t* b, int64_t ldb,
                  int64_t kc, int32_t e, float* c, int64_t ldc);

// dst (c × r, row stride ld_dst) = srcᵀ (r × c, ld_src), int16, in 32 × 32 blocks (each the
// core's per-ISA transpose_elements, threaded over blocks for large ones) so that both
// sides stay in cache lines: the DFP-16 layers' transposed operands (Wᵀ, ∂yᵀ).
void transpose_s16(const int16_t* src, int64_t r, int64_t c, int64_t ld_src, int16_t* dst, int64_t ld_dst);

}  // namespace brgemm::layers
