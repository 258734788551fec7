// The scalar reference int16 microkernel: s16 × s16 products summed in s32. Every product and
// sum is taken modulo 2^32 (in uint32: no signed overflow), which is what vpdpwssd and
// vpmaddwd + vpaddd do, so every ISA's kernel gives these bits even past the s32 range.
#include "../ukernels.h"
#include "../batch_block.h"
#include "tile.h"

namespace brgemm::kernels {

void ukernel_s16s16_s32_4x16c2__scalar(const ukernel_args& p) {
  constexpr int MR = 4, NR = 16;
  uint32_t acc[MR][NR] = {};
  for (int64_t i = 0; i < p.batch->count; ++i) {
    const int16_t* a = (const int16_t*)brgemm_block_a(p, i, 2);
    const int16_t* b = (const int16_t*)brgemm_block_b(p, i, 2);
    for (int64_t k = 0; k < p.k; ++k) {
      const int16_t* brow = b + (k / 2) * p.ldb * 2 + k % 2;
      for (int m = 0; m < p.m; ++m) {
        const int32_t am = a[m * p.lda + k];
        for (int n = 0; n < p.n; ++n) acc[m][n] += (uint32_t)(am * (int32_t)brow[2 * n]);  // |product| ≤ 2^30
      }
    }
  }
  int32_t out[MR][NR];
  for (int m = 0; m < MR; ++m)
    for (int n = 0; n < NR; ++n) out[m][n] = (int32_t)acc[m][n];
  ref::store(p, out);
}

// s16s16f32: each batch element's sum in uint32 (modulo 2^32) as above, converted to f32 and added
// to the f32 accumulator in batch order (ukernel_s16s16_f32_*: the same bits on every ISA).
void ukernel_s16s16_f32_4x16c2__scalar(const ukernel_args& p) {
  constexpr int MR = 4, NR = 16;
  float acc[MR][NR] = {};
  for (int64_t i = 0; i < p.batch->count; ++i) {
    const int16_t* a = (const int16_t*)brgemm_block_a(p, i, 2);
    const int16_t* b = (const int16_t*)brgemm_block_b(p, i, 2);
    uint32_t t[MR][NR] = {};
    for (int64_t k = 0; k < p.k; ++k) {
      const int16_t* brow = b + (k / 2) * p.ldb * 2 + k % 2;
      for (int m = 0; m < p.m; ++m) {
        const int32_t am = a[m * p.lda + k];
        for (int n = 0; n < p.n; ++n) t[m][n] += (uint32_t)(am * (int32_t)brow[2 * n]);
      }
    }
    for (int m = 0; m < MR; ++m)
      for (int n = 0; n < NR; ++n) acc[m][n] += (float)(int32_t)t[m][n];
  }
  ref::store(p, acc);
}

}  // namespace brgemm::kernels
