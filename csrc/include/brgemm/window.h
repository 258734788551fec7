// Reductions over rows of vectors (csrc/core/window.cpp, per-ISA window.cpp; the scalar twin is
// csrc/kernels/ref/window.cpp): the arithmetic of the pooling layers, which the core sees only as
// vectors of `len` elements laid one after another. Every ISA gives the twin's bits: the maxima
// compare and select in the same order, the sums add in the same order.
#pragma once
#include <cstdint>

namespace brgemm {

// A patch of rows: row r (r < rows) starts at x + r·ld and holds `width` vectors of `len`
// elements (vector w at + w·len). Output vector o (o < out_width) is the window of columns
// o·stride − pad + s, s < kw, that lie in 0..width (at least one: 0 ≤ pad < kw and
// (out_width − 1)·stride − pad < width); every row of the patch is in every window.
struct window_rows {
  int64_t rows, ld, width, len;
  int64_t out_width, kw, stride, pad;
};

// y[o][j] = max over the window, scanned row by row, left to right: a value replaces the running
// maximum (from −inf) when it is greater or NaN, so the first of equal values and the last NaN win.
// bf16 are uint16 bits, compared as the floats they are; y is out_width·len contiguous.
void window_max_f32(const window_rows& g, const float* x, float* y);
void window_max_bf16(const window_rows& g, const uint16_t* x, uint16_t* y);
// uint8 (quantized activations): unsigned compare, no NaN; the maximum of the q is the q of the
// maximum as long as the quantization is monotone (positive scale), so the qparams carry over.
void window_max_u8(const window_rows& g, const uint8_t* x, uint8_t* y);
// The backward pass: the maximum's position is found again as above, and gy[o][j] added to
// gx there (gx has x's layout; windows that overlap accumulate, output by output). A window's
// positions are counted in 32 bits: rows·kw < 2^31.
void window_max_backward_f32(const window_rows& g, const float* x, const float* gy, float* gx);
void window_max_backward_bf16(const window_rows& g, const uint16_t* x, const float* gy, float* gx);

// The mean of `count` vectors of `len` elements at x + i·len: y[j] = (Σ_i x[i·len + j]) / count
// for j < out_len ≤ len, the sum in f32 from i = 0 up (bf16: rounded to nearest even at the end).
void vector_mean_f32(const float* x, int64_t count, int64_t len, int64_t out_len, float* y);
void vector_mean_bf16(const uint16_t* x, int64_t count, int64_t len, int64_t out_len, uint16_t* y);
// The dequantized mean of uint8 vectors (real = scale·(q − zero_point)), in f32:
// y[j] = scale · ((float)(Σ_i x[i·len + j] − count·zero_point) / (float)count). The sum is exact in
// int32 and, while count·255 < 2^24 (count ≤ 65793, the caller's check), so is its conversion:
// the order of the sum does not matter, and the two rounded operations are the division and the
// product. 0 ≤ zero_point ≤ 255, count ≤ vector_mean_u8_max_count.
constexpr int64_t vector_mean_u8_max_count = ((int64_t)1 << 24) / 255;  // 65793: 65793·255 = 2^24 − 1
void vector_mean_u8(const uint8_t* x, int64_t count, int64_t len, int64_t out_len, float scale, int32_t zero_point,
                    float* y);
// Its backward pass: count vectors of len at y, each y[i·len + j] = j < in_len ? g[j] / count : 0.
void vector_mean_backward_f32(const float* g, int64_t in_len, int64_t count, int64_t len, float* y);

}  // namespace brgemm
