// Layer drivers on top of the BRGEMM core: loop nests, OpenMP threading and packing.
// They never compute an inner product themselves; every contraction is brgemm::execute().
#pragma once
#include <cstdint>
#include "brgemm/brgemm.h"

namespace brgemm::layers {

// C[m×n] = epilogue(beta·C + A[m×k]·B[k×n]), row-major, on brgemm::num_threads() threads, for
// any kernel dtype: B is in that dtype's layout (plain rows for f32, packed VNNI-2 / VNNI-4 with
// ldb columns for bf16 / int8), or cut into column panels by pack_b_panels (layout panels; ldb
// is then unused). The epilogue (brgemm.h) runs once per tile of C, on the last K
// chunk; ldc counts elements of its output type. When that type is not the accumulator's, the
// partial sums of earlier K chunks live in a per-thread buffer and beta must be 0. The caller
// has validated the shapes and ep (null when e has no stage); the status comes from dispatch().
// panel_rows: the K rows each panel holds, when the panels are taller than k (a layer's packed
// weights padded past its real K, read over their first k rows only); 0: k.
status gemm(dtype t, int64_t m, int64_t n, int64_t k, const void* a, int64_t lda, const void* b, int64_t ldb,
            void* c, int64_t ldc, float beta, const epilogue_desc& e = {}, const epilogue_args* ep = nullptr,
            b_layout layout = b_layout::rows, int64_t panel_rows = 0);

// The K chunk gemm() sums at a time for this shape (B in rows): each chunk's products are
// summed from zero in one kernel call, then added to C. A caller whose own product must equal
// gemm()'s bit for bit sums in the same chunks.
status gemm_k_chunk(dtype t, int64_t m, int64_t n, int64_t k, int64_t* kc);

// Blocking of gemm_f32, exposed for tuning and benchmarks: bn columns of C per work item,
// kc rows of B per packed panel. 0 restores the default.
void set_gemm_blocking(int64_t bn, int64_t kc);

}  // namespace brgemm::layers
