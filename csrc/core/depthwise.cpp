// The depthwise stencils of brgemm/depthwise.h: each call goes to the active ISA's kernel (the
// VNNI and BF16 levels use AVX-512's).
#include "brgemm/depthwise.h"
#include "../kernels/depthwise.h"

namespace brgemm {

void depthwise_forward(const depthwise_row& r) {
  const isa level = active_isa();
#ifdef BRGEMM_BUILT_AVX512
  if ((int)level >= (int)isa::avx512) return kernels::depthwise_forward__avx512(r);
#endif
#ifdef BRGEMM_BUILT_AVX2
  if ((int)level >= (int)isa::avx2) return kernels::depthwise_forward__avx2(r);
#endif
  (void)level;
  kernels::depthwise_forward__scalar(r);
}

void depthwise_weight_grad(const depthwise_grad_row& r) {
  const isa level = active_isa();
#ifdef BRGEMM_BUILT_AVX512
  if ((int)level >= (int)isa::avx512) return kernels::depthwise_weight_grad__avx512(r);
#endif
#ifdef BRGEMM_BUILT_AVX2
  if ((int)level >= (int)isa::avx2) return kernels::depthwise_weight_grad__avx2(r);
#endif
  (void)level;
  kernels::depthwise_weight_grad__scalar(r);
}

}  // namespace brgemm
