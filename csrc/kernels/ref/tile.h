// The scalar reference kernels' store of C, written once: the twin of the zmm / ymm
// skeletons' store (../avx512/tile.h, ../avx2/tile.h). Baseline flags only; an unnamed
// namespace, like every kernel helper, so no other library's copy can replace it.
#pragma once
#include "../ukernels.h"

namespace brgemm::kernels::ref {
namespace {

// f32: C = acc (beta 0: C is not read, it may hold NaN) or beta·C + acc.
template <int MR, int NR>
void store(const ukernel_args& p, const float (&acc)[MR][NR]) {
  float* c = (float*)p.c;
  for (int m = 0; m < p.m; ++m)
    for (int n = 0; n < p.n; ++n) {
      float& cm = c[m * p.ldc + n];
      cm = p.beta == 0.0f ? acc[m][n] : p.beta * cm + acc[m][n];
    }
}

// s32: beta is 0 (write, never read C) or 1 (add to C, modulo 2^32 as vpaddd does).
template <int MR, int NR>
void store(const ukernel_args& p, const int32_t (&acc)[MR][NR]) {
  int32_t* c = (int32_t*)p.c;
  for (int m = 0; m < p.m; ++m)
    for (int n = 0; n < p.n; ++n) {
      int32_t& cm = c[m * p.ldc + n];
      cm = p.beta == 0.0f ? acc[m][n] : (int32_t)((uint32_t)cm + (uint32_t)acc[m][n]);
    }
}

}  // namespace
}  // namespace brgemm::kernels::ref
