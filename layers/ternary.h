// The ternary product's driver (brgemm/ternary.h): C = relu?(scale·(A·Σ α·Ŵ − zp·corr) + bias) on
// brgemm::num_threads() threads, each taking a run of B's column panels (a GEMV's work is all in
// B's columns), or, with fewer panels than threads, (panel, run of rows) pairs.
#pragma once
#include "brgemm/ternary.h"

namespace brgemm::layers {

void ternary_gemm(const ternary_product& p);

}  // namespace brgemm::layers
