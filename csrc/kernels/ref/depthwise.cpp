// The depthwise stencils of brgemm/depthwise.h one value at a time: the scalar twin of the
// vector kernels (the product and the sum rounded apart, where they fuse them), and the kernels
// of CPUs below AVX2.
#include "../depthwise.h"
#include "../epilogue_twin.h"

namespace brgemm::kernels {

namespace {

inline float load(const void* p, element e, int64_t i) {
  return e == element::bf16 ? brgemm_from_bits((uint32_t)((const uint16_t*)p)[i] << 16) : ((const float*)p)[i];
}

}  // namespace

void depthwise_forward__scalar(const depthwise_row& r) {
  for (int64_t j = 0; j < r.m; ++j)
    for (int64_t c = 0; c < r.bc; ++c) {
      float acc = r.bias ? r.bias[c] : 0.0f;
      for (int64_t t = 0; t < r.taps; ++t) acc += r.w[t][c] * load(r.x[t], r.xt, j * r.x_step + c);
      const int64_t at = j * r.y_step + c;
      if (r.add) acc += load(r.add, r.yt, at);
      acc = brgemm_activation(r.act, acc);
      if (r.yt == element::bf16)
        ((uint16_t*)r.y)[at] = brgemm_bf16_rne(acc);
      else
        ((float*)r.y)[at] = acc;
    }
}

void depthwise_weight_grad__scalar(const depthwise_grad_row& r) {
  for (int64_t t = -1; t < r.taps; ++t) {  // t = −1: the bias
    if (t < 0 && !r.db) continue;
    for (int64_t c = 0; c < r.bc; ++c) {
      float part[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      for (int64_t j = 0; j < r.m; ++j)
        part[j % 4] += r.g[j * r.g_step + c] * (t < 0 ? 1.0f : load(r.x[t], r.xt, j * r.x_step + c));
      (t < 0 ? r.db : r.dw[t])[c] += (part[0] + part[1]) + (part[2] + part[3]);
    }
  }
}

}  // namespace brgemm::kernels
