// Finding the i-th A and B block of a batch, and prefetching the next A block; shared by every
// ISA's ukernels.
// The functions are static so that each ISA translation unit keeps its own copy: an inline
// function with external linkage compiled under -mavx512f could be merged into baseline code.
#pragma once
#include "brgemm/brgemm.h"

static inline const void* brgemm_block_a(const brgemm::ukernel_args& p, int64_t i, int64_t elem) {
  const brgemm::batch_ref& b = *p.batch;
  const char* base;
  switch (p.kind) {
    case brgemm::batch_kind::stride:  base = (const char*)b.a + i * b.stride_a * elem; break;
    case brgemm::batch_kind::offset:  base = (const char*)b.a + b.offs_a[i] * elem; break;
    default:                          base = (const char*)b.addr_a[i]; break;
  }
  return base + p.a_off * elem;
}

static inline const void* brgemm_block_b(const brgemm::ukernel_args& p, int64_t i, int64_t elem) {
  const brgemm::batch_ref& b = *p.batch;
  const char* base;
  switch (p.kind) {
    case brgemm::batch_kind::stride:  base = (const char*)b.b + i * b.stride_b * elem; break;
    case brgemm::batch_kind::offset:  base = (const char*)b.b + b.offs_b[i] * elem; break;
    default:                          base = (const char*)b.addr_b[i]; break;
  }
  return base + p.b_off * elem;
}

// The first `lines` cache lines of each of the MR rows of a block, in straight-line code.
template <int MR, int LINES>
static inline __attribute__((always_inline)) void brgemm_prefetch_rows(const char* a, int64_t row) {
#pragma GCC unroll 32
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 4
    for (int line = 0; line < LINES; ++line) __builtin_prefetch(a + m * row + 64 * line, 0, 3);
}

// Before block i runs, the first lines (up to 256 bytes, none past k) of the MR rows of block
// i + 1 of A: the rows are lda apart, too far for the hardware prefetcher. Always inlined: gcc
// counts a prefetch as no side effect, so it would find a function doing nothing else pure and
// delete its call. __builtin_prefetch(…, 0, 3) is _mm_prefetch(…, _MM_HINT_T0).
template <int MR>
static inline __attribute__((always_inline)) void brgemm_prefetch_next_a(const brgemm::ukernel_args& p, int64_t i,
                                                                          int64_t elem) {
  if (i + 1 >= p.batch->count) return;
  const char* next = (const char*)brgemm_block_a(p, i + 1, elem);
  const int64_t row = p.lda * elem, bytes = p.k * elem;
  if (bytes > 192) brgemm_prefetch_rows<MR, 4>(next, row);
  else if (bytes > 128) brgemm_prefetch_rows<MR, 3>(next, row);
  else if (bytes > 64) brgemm_prefetch_rows<MR, 2>(next, row);
  else if (bytes > 0) brgemm_prefetch_rows<MR, 1>(next, row);
}
