// The scalar reference f32 microkernel: production code (the fallback on any x86-64) and the
// twin every ISA is compared with. Compiled with baseline flags only.
#include "../ukernels.h"
#include "../batch_block.h"

namespace brgemm::kernels {

void ukernel_f32_4x16__scalar(const ukernel_args& p) {
  constexpr int MR = 4, NR = 16;
  float acc[MR][NR] = {};
  for (int64_t i = 0; i < p.batch->count; ++i) {
    const float* a = (const float*)brgemm_block_a(p, i, 4);
    const float* b = (const float*)brgemm_block_b(p, i, 4);
    for (int64_t k = 0; k < p.k; ++k)
      for (int m = 0; m < p.m; ++m) {
        const float am = a[m * p.lda + k];
        for (int n = 0; n < p.n; ++n) acc[m][n] += am * b[k * p.ldb + n];
      }
  }
  float* c = (float*)p.c;
  for (int m = 0; m < p.m; ++m)
    for (int n = 0; n < p.n; ++n) {
      float& cm = c[m * p.ldc + n];
      cm = p.beta == 0.0f ? acc[m][n] : p.beta * cm + acc[m][n];
    }
}

}  // namespace brgemm::kernels
