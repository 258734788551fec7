// The softmax family of brgemm.h: each row goes to the active ISA's kernel (the VNNI and BF16
// levels use AVX-512's); csrc/kernels/<isa>/softmax.cpp, twin csrc/kernels/softmax_twin.h.
#include "brgemm/brgemm.h"
#include "../kernels/ukernels.h"

namespace brgemm {

#if defined(BRGEMM_BUILT_AVX512)
#define BRGEMM_SOFTMAX_CALL(NAME, ...)                                                        \
  do {                                                                                        \
    const isa level = active_isa();                                                           \
    if ((int)level >= (int)isa::avx512) return kernels::NAME##__avx512(__VA_ARGS__);          \
    if ((int)level >= (int)isa::avx2) return kernels::NAME##__avx2(__VA_ARGS__);              \
    return kernels::NAME##__scalar(__VA_ARGS__);                                              \
  } while (0)
#elif defined(BRGEMM_BUILT_AVX2)
#define BRGEMM_SOFTMAX_CALL(NAME, ...)                                                        \
  do {                                                                                        \
    if ((int)active_isa() >= (int)isa::avx2) return kernels::NAME##__avx2(__VA_ARGS__);       \
    return kernels::NAME##__scalar(__VA_ARGS__);                                              \
  } while (0)
#else
#define BRGEMM_SOFTMAX_CALL(NAME, ...) return kernels::NAME##__scalar(__VA_ARGS__)
#endif

void softmax_f32(int order, const float* x, float* y, int64_t n) { BRGEMM_SOFTMAX_CALL(softmax_f32, order, x, y, n); }

void softmax_bf16(int order, const uint16_t* x, uint16_t* y, int64_t n, float* work) {
  BRGEMM_SOFTMAX_CALL(softmax_bf16, order, x, y, n, work);
}

void softmax_backward_f32(int order, const float* x, const float* y, const float* grad_y, float* grad_x, int64_t rows,
                          int64_t n) {
  BRGEMM_SOFTMAX_CALL(softmax_backward_f32, order, x, y, grad_y, grad_x, rows, n);
}

void softmax_backward_bf16(int order, const uint16_t* x, const uint16_t* y, const uint16_t* grad_y, uint16_t* grad_x,
                           int64_t rows, int64_t n) {
  BRGEMM_SOFTMAX_CALL(softmax_backward_bf16, order, x, y, grad_y, grad_x, rows, n);
}

#undef BRGEMM_SOFTMAX_CALL

}  // namespace brgemm
