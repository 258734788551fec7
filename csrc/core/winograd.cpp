// The Winograd transforms of brgemm/winograd.h: the kernels of an ISA level (the VNNI and BF16
// levels use AVX-512's), handed to a plan once so that its loops call them without dispatch.
#include "brgemm/brgemm.h"
#include "brgemm/winograd.h"
#include "../kernels/ukernels.h"

namespace brgemm {

winograd_transforms winograd_transforms_for(isa level) {
#if defined(BRGEMM_BUILT_AVX512)
  if ((int)level >= (int)isa::avx512)
    return {kernels::winograd_input_f32__avx512, kernels::winograd_output_f32__avx512, "avx512"};
#endif
#if defined(BRGEMM_BUILT_AVX2)
  if ((int)level >= (int)isa::avx2) return {kernels::winograd_input_f32__avx2, kernels::winograd_output_f32__avx2, "avx2"};
#endif
  (void)level;
  return {kernels::winograd_input_f32__scalar, kernels::winograd_output_f32__scalar, "scalar"};
}

}  // namespace brgemm
