// The scalar reference bf16 microkernel: bf16 inputs widened exactly to f32, products and
// sums in f32. Production code on CPUs without AVX2, and the twin the ISA kernels match.
#include <cstring>
#include "../ukernels.h"
#include "../batch_block.h"
#include "tile.h"

namespace brgemm::kernels {

namespace {
float widen(uint16_t x) {  // bf16 is the top half of an f32: exact
  const uint32_t u = (uint32_t)x << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
}  // namespace

void ukernel_bf16_f32_4x16c2__scalar(const ukernel_args& p) {
  constexpr int MR = 4, NR = 16;
  float acc[MR][NR] = {};
  for (int64_t i = 0; i < p.batch->count; ++i) {
    const uint16_t* a = (const uint16_t*)brgemm_block_a(p, i, 2);
    const uint16_t* b = (const uint16_t*)brgemm_block_b(p, i, 2);
    for (int64_t k = 0; k < p.k; ++k) {
      const uint16_t* brow = b + (k / 2) * p.ldb * 2 + k % 2;
      for (int m = 0; m < p.m; ++m) {
        const float am = widen(a[m * p.lda + k]);
        for (int n = 0; n < p.n; ++n) acc[m][n] += am * widen(brow[2 * n]);
      }
    }
  }
  ref::store(p, acc);
}

}  // namespace brgemm::kernels
