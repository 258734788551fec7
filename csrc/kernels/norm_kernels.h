// Declarations of the per-lane kernels of brgemm/norm.h per ISA (the VNNI and BF16 levels use
// avx512's). Included by the ISA translation units (to define them) and by csrc/core/norm.cpp.
#pragma once
#include "brgemm/norm.h"

namespace brgemm::kernels {

#define BRGEMM_NORM_KERNELS(ISA)                                                                           \
  void lane_moments__##ISA(const lane_rows& g, const void* x, const double* shift, double* sum, double* sumsq); \
  void lane_affine__##ISA(const lane_rows& g, const lane_affine_args& a);                                  \
  void lane_grad_moments__##ISA(const lane_rows& g, const lane_grad_args& a);                              \
  void lane_grad_affine__##ISA(const lane_rows& g, const lane_grad_args& a);
BRGEMM_NORM_KERNELS(scalar)
BRGEMM_NORM_KERNELS(avx2)
BRGEMM_NORM_KERNELS(avx512)
#undef BRGEMM_NORM_KERNELS

}  // namespace brgemm::kernels
