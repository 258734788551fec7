// Finding the i-th A and B block of a batch; shared by every ISA's ukernels.
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
