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

// Before block i runs, the first lines (up to 256 bytes) of each of the MR rows of block i + 1
// of A: the rows are lda apart, too far for the hardware prefetcher. __builtin_prefetch(…, 0, 3)
// is _mm_prefetch(…, _MM_HINT_T0) without needing <immintrin.h> here.
template <int MR>
static inline void brgemm_prefetch_next_a(const brgemm::ukernel_args& p, int64_t i, int64_t elem) {
  if (i + 1 >= p.batch->count) return;
  const char* next = (const char*)brgemm_block_a(p, i + 1, elem);
  const int64_t row = p.lda * elem, bytes = p.k * elem;
#pragma GCC unroll 32
  for (int m = 0; m < MR; ++m)
    for (int64_t byte = 0; byte < bytes && byte < 256; byte += 64) __builtin_prefetch(next + m * row + byte, 0, 3);
}
