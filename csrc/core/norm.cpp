// The per-lane functions of brgemm/norm.h: each call goes to the active ISA's kernel (the VNNI
// and BF16 levels use AVX-512's). Widths past lane_width_max, which no vector kernel is written
// for, take the scalar twin (same results, slower).
#include "brgemm/brgemm.h"
#include "brgemm/norm.h"
#include "../kernels/norm_kernels.h"

namespace brgemm {

namespace {

enum class lane_isa { scalar, avx2, avx512 };

lane_isa pick(const lane_rows& g) {
  if (g.width < 1 || g.width > lane_width_max) return lane_isa::scalar;
  const isa level = active_isa();
#ifdef BRGEMM_BUILT_AVX512
  if ((int)level >= (int)isa::avx512) return lane_isa::avx512;
#endif
#ifdef BRGEMM_BUILT_AVX2
  if ((int)level >= (int)isa::avx2) return lane_isa::avx2;
#endif
  (void)level;
  return lane_isa::scalar;
}

}  // namespace

#define BRGEMM_LANE_DISPATCH(FN, ...)                           \
  switch (pick(g)) {                                            \
    case lane_isa::avx512: BRGEMM_IF_AVX512(FN, __VA_ARGS__)    \
    case lane_isa::avx2: BRGEMM_IF_AVX2(FN, __VA_ARGS__)        \
    default: return kernels::FN##__scalar(__VA_ARGS__);         \
  }
#ifdef BRGEMM_BUILT_AVX512
#define BRGEMM_IF_AVX512(FN, ...) return kernels::FN##__avx512(__VA_ARGS__);
#else
#define BRGEMM_IF_AVX512(FN, ...)
#endif
#ifdef BRGEMM_BUILT_AVX2
#define BRGEMM_IF_AVX2(FN, ...) return kernels::FN##__avx2(__VA_ARGS__);
#else
#define BRGEMM_IF_AVX2(FN, ...)
#endif

void lane_moments(const lane_rows& g, const void* x, const double* shift, double* sum, double* sumsq) {
  if (g.rows <= 0) return;
  BRGEMM_LANE_DISPATCH(lane_moments, g, x, shift, sum, sumsq)
}

void lane_affine(const lane_rows& g, const lane_affine_args& a) {
  if (g.rows <= 0) return;
  BRGEMM_LANE_DISPATCH(lane_affine, g, a)
}

void lane_grad_moments(const lane_rows& g, const lane_grad_args& a) {
  if (g.rows <= 0) return;
  BRGEMM_LANE_DISPATCH(lane_grad_moments, g, a)
}

void lane_grad_affine(const lane_rows& g, const lane_grad_args& a) {
  if (g.rows <= 0) return;
  BRGEMM_LANE_DISPATCH(lane_grad_affine, g, a)
}

}  // namespace brgemm
