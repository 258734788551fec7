// The softmax family (brgemm.h) on one row, one value at a time: the twin itself
// (softmax_twin.h), the kernel for CPUs below AVX2.
#include "../ukernels.h"
#include "../softmax_twin.h"

namespace brgemm::kernels {

namespace sm = brgemm_softmax;

namespace {

template <class T>
void backward(int order, const T* x, const T* y, const T* g, T* gx, int64_t n) {
  if (order == 0) return sm::backward_exact(y, g, gx, n);
  sm::by_order(order, [&](auto o) {
    if constexpr (o.value > 0) sm::backward_taylor<o.value>(x, g, gx, n);
  });
}

}  // namespace

void softmax_f32__scalar(int order, const float* x, float* y, int64_t n) {
  sm::by_order(order, [&](auto o) { sm::forward<o.value>(x, y, y, n); });
}

void softmax_bf16__scalar(int order, const uint16_t* x, uint16_t* y, int64_t n, float* work) {
  sm::by_order(order, [&](auto o) { sm::forward<o.value>(x, y, work, n); });
}

void softmax_backward_f32__scalar(int order, const float* x, const float* y, const float* g, float* gx, int64_t n) {
  backward(order, x, y, g, gx, n);
}

void softmax_backward_bf16__scalar(int order, const uint16_t* x, const uint16_t* y, const uint16_t* g, uint16_t* gx,
                                   int64_t n) {
  backward(order, x, y, g, gx, n);
}

}  // namespace brgemm::kernels
