// Declarations of the per-ISA depthwise kernels of brgemm/depthwise.h (kept beside ukernels.h,
// whose lists they do not join: they are not BRGEMM microkernels). Included by the ISA
// translation units (to define them) and by csrc/core/depthwise.cpp (to pick one).
#pragma once
#include "brgemm/depthwise.h"

namespace brgemm::kernels {

#define BRGEMM_DEPTHWISE_KERNELS(ISA)                              \
  void depthwise_forward__##ISA(const depthwise_row& r);           \
  void depthwise_weight_grad__##ISA(const depthwise_grad_row& r);
BRGEMM_DEPTHWISE_KERNELS(scalar)
BRGEMM_DEPTHWISE_KERNELS(avx2)
BRGEMM_DEPTHWISE_KERNELS(avx512)
#undef BRGEMM_DEPTHWISE_KERNELS

}  // namespace brgemm::kernels
