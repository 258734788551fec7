// The scalar reference f32 microkernel: production code (the fallback on any x86-64) and the
// twin every ISA is compared with. Compiled with baseline flags only.
#include <cstring>
#include "../ukernels.h"
#include "../batch_block.h"
#include "tile.h"

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
  ref::store(p, acc);
}

namespace {
// IEEE half → f32, exactly (normals, subnormals, ±0, ±inf, NaN).
float widen_half(uint16_t h) {
  const uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1F, man = h & 0x3FF;
  uint32_t bits;
  if (exp == 0x1F) {
    bits = sign | 0x7F800000u | (man << 13);
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (man << 13);
  } else if (man == 0) {
    bits = sign;
  } else {  // subnormal: normalise
    int e = -1;
    uint32_t m = man;
    do {
      ++e;
      m <<= 1;
    } while (!(m & 0x400));
    bits = sign | ((uint32_t)(112 - e) << 23) | ((m & 0x3FF) << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}
}  // namespace

void ukernel_f32f16_4x16__scalar(const ukernel_args& p) {
  constexpr int MR = 4, NR = 16;
  float acc[MR][NR] = {};
  for (int64_t i = 0; i < p.batch->count; ++i) {
    const float* a = (const float*)brgemm_block_a(p, i, 4);
    const uint16_t* b = (const uint16_t*)brgemm_block_b(p, i, 2);
    for (int64_t k = 0; k < p.k; ++k)
      for (int m = 0; m < p.m; ++m) {
        const float am = a[m * p.lda + k];
        for (int n = 0; n < p.n; ++n) acc[m][n] += am * widen_half(b[k * p.ldb + n]);
      }
  }
  ref::store(p, acc);
}

}  // namespace brgemm::kernels
