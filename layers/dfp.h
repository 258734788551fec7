// The DFP-16 product driver (layers/dfp.cpp): float32 C from int16 mantissas, with int32 sums
// over chunks of K short enough never to overflow, each chunk's sums converted to float and added
// (Das et al., ICLR 2018). Every contraction is the s16s16 BRGEMM.
#pragma once
#include <cstdint>
#include <vector>
#include "brgemm/brgemm.h"

namespace brgemm::layers {

// The chunks' K boundaries 0 = k_0 < k_1 < … < k_c = k, all even but the last: each chunk as long
// as Σ_{k∈chunk} |a_ik| · b_absmax ≤ 2^31 − 1 for every row i, which bounds every partial sum of
// any order (a pair alone always fits: 2·32767·32767 < 2^31). A: m × k int16 mantissas (lda).
std::vector<int64_t> dfp16_chunks(const int16_t* a, int64_t m, int64_t k, int64_t lda, int32_t b_absmax);

// C[m×n] (f32, ldc) = scale · Σ_chunks A[:, chunk]·B[chunk, :], on num_threads() threads over
// blocks of C: per chunk an s16s16 BRGEMM whose epilogue scales its int32 sums and adds the
// float C of the chunks before. B: k × n int16 packed s16s16 by pack_b (ldb columns).
status dfp16_gemm(int64_t m, int64_t n, int64_t k, const int16_t* a, int64_t lda, const int16_t* b, int64_t ldb,
                  const std::vector<int64_t>& chunks, float scale, float* c, int64_t ldc);

}  // namespace brgemm::layers
