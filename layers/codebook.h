// The shared-weight product's driver (brgemm/codebook.h): C = A · codebook[B] (+ bias) on
// brgemm::num_threads() threads, each taking a run of B's column panels (a GEMV's work is all
// in B's columns).
#pragma once
#include "brgemm/codebook.h"

namespace brgemm::layers {

void codebook_gemm(const codebook_product& p);

}  // namespace brgemm::layers
