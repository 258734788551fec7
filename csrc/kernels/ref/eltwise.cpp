// The element-wise functions over arrays, one value at a time: the twin itself
// (eltwise_twin.h), for CPUs below AVX2, and the backward pass on every ISA (it is
// bandwidth-bound next to the GEMMs around it).
#include <cstdint>
#include <cstring>
#include "../ukernels.h"
#include "../epilogue_twin.h"

namespace brgemm::kernels {

void activation_f32__scalar(activation a, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = brgemm_activation(a, x[i]);
}

void activation_bf16__scalar(activation a, const uint16_t* x, uint16_t* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = brgemm_bf16_rne(brgemm_activation(a, brgemm_from_bits((uint32_t)x[i] << 16)));
}

void f32_to_bf16__scalar(const float* x, uint16_t* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = brgemm_bf16_rne(x[i]);
}

void bf16_to_f32__scalar(const uint16_t* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = brgemm_from_bits((uint32_t)x[i] << 16);
}

void activation_backward_f32__scalar(activation a, const float* g, const float* x, const float* y, float* out,
                                     int64_t n) {
  switch (a) {  // the common cases as plain loops the compiler vectorizes
    case activation::relu:
      // g's bits under a mask, not a branch: the signs of y are as good as random, and a
      // mispredicted branch per element made this pass 3–4× slower than memory.
      for (int64_t i = 0; i < n; ++i) {
        uint32_t bits;
        std::memcpy(&bits, g + i, 4);
        bits &= y[i] > 0.0f ? ~0u : 0u;
        std::memcpy(out + i, &bits, 4);
      }
      return;
    case activation::tanh:
    case activation::ktanh:
      for (int64_t i = 0; i < n; ++i) out[i] = g[i] * (1.0f - y[i] * y[i]);
      return;
    default:
      for (int64_t i = 0; i < n; ++i) out[i] = brgemm_activation_backward(a, g[i], x ? x[i] : 0.0f, y ? y[i] : 0.0f);
  }
}

}  // namespace brgemm::kernels
