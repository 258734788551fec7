// The scalar reference int8 microkernels: u8 × s8 products summed exactly in s32. Every ISA's
// int8 kernel must give bit-identical results (integer sums do not depend on the order).
// The s8s8 twin multiplies a + 128 (A's byte XOR 0x80, read as u8), as every s8s8 kernel does;
// execute() removes 128·colsum(B) in the epilogue.
#include "../ukernels.h"
#include "../batch_block.h"
#include "tile.h"

namespace brgemm::kernels {

namespace {
template <uint8_t X>
void tile(const ukernel_args& p) {
  constexpr int MR = 4, NR = 16;
  int32_t acc[MR][NR] = {};
  for (int64_t i = 0; i < p.batch->count; ++i) {
    const uint8_t* a = (const uint8_t*)brgemm_block_a(p, i, 1);
    const int8_t* b = (const int8_t*)brgemm_block_b(p, i, 1);
    for (int64_t k = 0; k < p.k; ++k) {
      const int8_t* brow = b + (k / 4) * p.ldb * 4 + k % 4;
      for (int m = 0; m < p.m; ++m) {
        const int32_t am = (uint8_t)(a[m * p.lda + k] ^ X);
        for (int n = 0; n < p.n; ++n) acc[m][n] += am * (int32_t)brow[4 * n];
      }
    }
  }
  ref::store(p, acc);
}
}  // namespace

void ukernel_u8s8_s32_4x16c4__scalar(const ukernel_args& p) { tile<0>(p); }
void ukernel_s8s8_s32_4x16c4__scalar(const ukernel_args& p) { tile<0x80>(p); }

}  // namespace brgemm::kernels
