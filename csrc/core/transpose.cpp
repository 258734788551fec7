// brgemm.h's transpose_elements and interleave_pairs_b16: the active ISA's kernel (for the element size) (the VNNI and BF16
// levels use AVX-512's). One thread: the layers call it per block from their own parallel loops.
#include "brgemm/brgemm.h"
#include "../kernels/ukernels.h"

namespace brgemm {

void transpose_elements(const void* src, int64_t rows, int64_t cols, int64_t ld_src, void* dst, int64_t ld_dst,
                        int bytes) {
  using b32 = void (*)(const uint32_t*, int64_t, int64_t, int64_t, uint32_t*, int64_t);
  using b16 = void (*)(const uint16_t*, int64_t, int64_t, int64_t, uint16_t*, int64_t);
  using b8 = void (*)(const uint8_t*, int64_t, int64_t, int64_t, uint8_t*, int64_t);
  b32 f32 = kernels::transpose_b32__scalar;
  b16 f16 = kernels::transpose_b16__scalar;
  b8 f8 = kernels::transpose_b8__scalar;
  const isa level = active_isa();
#ifdef BRGEMM_BUILT_AVX512
  if ((int)level >= (int)isa::avx512) {
    f32 = kernels::transpose_b32__avx512, f16 = kernels::transpose_b16__avx512, f8 = kernels::transpose_b8__avx512;
  } else
#endif
#ifdef BRGEMM_BUILT_AVX2
  if ((int)level >= (int)isa::avx2) {
    f32 = kernels::transpose_b32__avx2, f16 = kernels::transpose_b16__avx2, f8 = kernels::transpose_b8__avx2;
  }
#endif
  (void)level;
  if (rows <= 0 || cols <= 0) return;
  if (bytes == 4)
    f32((const uint32_t*)src, rows, cols, ld_src, (uint32_t*)dst, ld_dst);
  else if (bytes == 2)
    f16((const uint16_t*)src, rows, cols, ld_src, (uint16_t*)dst, ld_dst);
  else
    f8((const uint8_t*)src, rows, cols, ld_src, (uint8_t*)dst, ld_dst);
}

void interleave_pairs_b16(const uint16_t* src, int64_t rows, int64_t cols, uint16_t* dst) {
  auto f = kernels::interleave_pairs_b16__scalar;
  const isa level = active_isa();
#ifdef BRGEMM_BUILT_AVX512
  if ((int)level >= (int)isa::avx512)
    f = kernels::interleave_pairs_b16__avx512;
  else
#endif
#ifdef BRGEMM_BUILT_AVX2
  if ((int)level >= (int)isa::avx2) f = kernels::interleave_pairs_b16__avx2;
#endif
  (void)level;
  if (rows >= 2 && cols > 0) f(src, rows, cols, dst);
}

}  // namespace brgemm
