// The reductions of brgemm/window.h: each call goes to the active ISA's kernel (the VNNI and
// BF16 levels use AVX-512's).
#include "brgemm/brgemm.h"
#include "brgemm/window.h"
#include "../kernels/ukernels.h"

namespace brgemm {

namespace {

#if defined(BRGEMM_BUILT_AVX512)
#define BRGEMM_WINDOW_DISPATCH(NAME, ...)                                                  \
  const isa level = active_isa();                                                          \
  if ((int)level >= (int)isa::avx512) return kernels::NAME##__avx512(__VA_ARGS__);         \
  if ((int)level >= (int)isa::avx2) return kernels::NAME##__avx2(__VA_ARGS__);             \
  return kernels::NAME##__scalar(__VA_ARGS__);
#elif defined(BRGEMM_BUILT_AVX2)
#define BRGEMM_WINDOW_DISPATCH(NAME, ...)                                                  \
  if ((int)active_isa() >= (int)isa::avx2) return kernels::NAME##__avx2(__VA_ARGS__);      \
  return kernels::NAME##__scalar(__VA_ARGS__);
#else
#define BRGEMM_WINDOW_DISPATCH(NAME, ...) return kernels::NAME##__scalar(__VA_ARGS__);
#endif

}  // namespace

void window_max_f32(const window_rows& g, const float* x, float* y) { BRGEMM_WINDOW_DISPATCH(window_max_f32, g, x, y) }
void window_max_bf16(const window_rows& g, const uint16_t* x, uint16_t* y) {
  BRGEMM_WINDOW_DISPATCH(window_max_bf16, g, x, y)
}
void window_max_u8(const window_rows& g, const uint8_t* x, uint8_t* y) {
  BRGEMM_WINDOW_DISPATCH(window_max_u8, g, x, y)
}
void window_max_backward_f32(const window_rows& g, const float* x, const float* gy, float* gx) {
  BRGEMM_WINDOW_DISPATCH(window_max_backward_f32, g, x, gy, gx)
}
void window_max_backward_bf16(const window_rows& g, const uint16_t* x, const float* gy, float* gx) {
  BRGEMM_WINDOW_DISPATCH(window_max_backward_bf16, g, x, gy, gx)
}
void vector_mean_f32(const float* x, int64_t count, int64_t len, int64_t out_len, float* y) {
  BRGEMM_WINDOW_DISPATCH(vector_mean_f32, x, count, len, out_len, y)
}
void vector_mean_bf16(const uint16_t* x, int64_t count, int64_t len, int64_t out_len, uint16_t* y) {
  BRGEMM_WINDOW_DISPATCH(vector_mean_bf16, x, count, len, out_len, y)
}
void vector_mean_u8(const uint8_t* x, int64_t count, int64_t len, int64_t out_len, float scale, int32_t zero_point,
                    float* y) {
  BRGEMM_WINDOW_DISPATCH(vector_mean_u8, x, count, len, out_len, scale, zero_point, y)
}
void vector_mean_backward_f32(const float* g, int64_t in_len, int64_t count, int64_t len, float* y) {
  BRGEMM_WINDOW_DISPATCH(vector_mean_backward_f32, g, in_len, count, len, y)
}

}  // namespace brgemm
