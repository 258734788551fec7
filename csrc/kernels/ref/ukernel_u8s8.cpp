// The scalar reference int8 microkernel: u8 × s8 products summed exactly in s32. Every ISA's
// int8 kernel must give bit-identical results (integer sums do not depend on the order).
#include "../ukernels.h"
#include "../batch_block.h"

namespace brgemm::kernels {

void ukernel_u8s8_s32_4x16c4__scalar(const ukernel_args& p) {
  constexpr int MR = 4, NR = 16;
  int32_t acc[MR][NR] = {};
  for (int64_t i = 0; i < p.batch->count; ++i) {
    const uint8_t* a = (const uint8_t*)brgemm_block_a(p, i, 1);
    const int8_t* b = (const int8_t*)brgemm_block_b(p, i, 1);
    for (int64_t k = 0; k < p.k; ++k) {
      const int8_t* brow = b + (k / 4) * p.ldb * 4 + k % 4;
      for (int m = 0; m < p.m; ++m) {
        const int32_t am = a[m * p.lda + k];
        for (int n = 0; n < p.n; ++n) acc[m][n] += am * (int32_t)brow[4 * n];
      }
    }
  }
  int32_t* c = (int32_t*)p.c;
  for (int m = 0; m < p.m; ++m)
    for (int n = 0; n < p.n; ++n) {
      int32_t& cm = c[m * p.ldc + n];
      cm = p.beta == 0.0f ? acc[m][n] : cm + acc[m][n];  // u8s8 beta is 0 or 1
    }
}

}  // namespace brgemm::kernels
