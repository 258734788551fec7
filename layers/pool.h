// Pooling layer drivers on the blocked activation layout [N][C/bc][H][W][bc] (conv.h): loops over
// images, channel blocks and rows, spread over OpenMP threads; the arithmetic is the core's
// (brgemm/window.h, per-ISA kernels). bf16 tensors are their uint16 bits; uint8 ones are quantized
// activations (real = scale·(q − zero_point), one pair per tensor).
#pragma once
#include <cstdint>
#include "brgemm/types.h"

namespace brgemm::layers {

// A blocked tensor of n × blocks × h × w × bc pooled by a kh × kw window at stride (sh, sw) with
// (ph, pw) of padding on each side that no window picks (PyTorch's MaxPool2d with dilation 1,
// ceil_mode off). The caller checks that the window fits the padded input and that pad ≤ kernel/2,
// so that every window holds an input value.
struct pool2d_shape {
  int64_t n, blocks, h, w, bc;
  int64_t kh, kw, sh, sw, ph, pw;
  int64_t oh() const { return (h + 2 * ph - kh) / sh + 1; }
  int64_t ow() const { return (w + 2 * pw - kw) / sw + 1; }
};

// y (n × blocks × oh × ow × bc, x's type: f32, bf16 or u8) = the maximum of each window
// (window.h's rule: the first of equal values, NaN wins). uint8 keeps x's scale and zero point.
void max_pool2d(const pool2d_shape& s, element e, const void* x, void* y);
// gx (x's shape, f32; every element written) = gy (y's shape, f32) routed to each window's
// maximum, found again from x (no index tensor); overlapping windows add up in output order.
void max_pool2d_backward(const pool2d_shape& s, bool bf16, const void* x, const float* gy, float* gx);

// The mean over h·w of each of the first `channels` channels of n × blocks × hw × bc: y is a
// plain n × channels (x's type; the sums in f32). Backward: gx (n × blocks × hw × bc, f32) =
// gy[n][c] / hw, 0 in the padded channels.
void global_avg_pool(int64_t n, int64_t blocks, int64_t hw, int64_t bc, int64_t channels, bool bf16, const void* x,
                     void* y);
// The uint8 one, dequantized: y (n × channels, f32) = scale · (mean of q − zero_point), as
// window.h's vector_mean_u8 (hw ≤ vector_mean_u8_max_count, the caller's check).
void global_avg_pool_u8(int64_t n, int64_t blocks, int64_t hw, int64_t bc, int64_t channels, const uint8_t* x,
                        float scale, int32_t zero_point, float* y);
void global_avg_pool_backward(int64_t n, int64_t blocks, int64_t hw, int64_t bc, int64_t channels, const float* gy,
                              float* gx);

}  // namespace brgemm::layers
