// Layer drivers on top of the BRGEMM core: loop nests, OpenMP threading and packing.
// They never compute an inner product themselves; every contraction is brgemm::execute().
#pragma once
#include <cstdint>
#include "brgemm/brgemm.h"

namespace brgemm::layers {

// C[m×n] = beta·C + A[m×k]·B[k×n], row-major, on brgemm::num_threads() threads, for any kernel
// dtype: B is in that dtype's layout (plain rows for f32, packed VNNI-2 / VNNI-4 with ldb
// columns for bf16 / u8s8). The caller has validated the shapes; the status comes from dispatch().
status gemm(dtype t, int64_t m, int64_t n, int64_t k, const void* a, int64_t lda, const void* b, int64_t ldb,
            void* c, int64_t ldc, float beta);

// Blocking of gemm_f32, exposed for tuning and benchmarks: bn columns of C per work item,
// kc rows of B per packed panel. 0 restores the default.
void set_gemm_blocking(int64_t bn, int64_t kc);

}  // namespace brgemm::layers
