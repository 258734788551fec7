// Batch normalisation in training mode on the blocked activation layout [n][c/bc][hw][bc]: the
// statistics of each channel over the batch, then the normalisation with the residual add and
// the ReLU fused, and the backward pass. A loop nest over (image, channel block, row chunk)
// tasks on OpenMP threads; the arithmetic is the core's per-lane kernels (brgemm/norm.h).
//
// Deterministic: the rows of a channel are cut into chunks whose size depends only on bc, each
// chunk's sums go to their own slot, and the slots are added in a fixed order, so the results
// do not depend on the thread count (nor on the ISA: the core's kernels agree bit for bit).
#pragma once
#include <cstdint>
#include "brgemm/brgemm.h"

namespace brgemm::layers {

// A blocked activation: n images of cb = ceil(c/bc) blocks of hw rows of bc channels; f32, or
// bf16 bits. Channels past c are padding (zero in a well-formed tensor; written 0 here).
struct bn_shape {
  int64_t n = 0, c = 0, hw = 0, bc = 0;
  bool bf16 = false;
  int64_t blocks() const { return (c + bc - 1) / bc; }
  int64_t count() const { return n * hw; }  // values per channel
};

// How the variance is computed (both accumulate in double, see batch_norm.cpp):
//   shifted:  one pass over x: Σ(x − K) and Σ(x − K)² with K a per-channel estimate of the mean
//             from at most 32 rows of the first image;
//   two_pass: Σx first, then Σ(x − mean) and Σ(x − mean)²: one more read of x.
enum class bn_statistics : int { shifted = 0, two_pass };

// Mean and biased variance of each of the c real channels over n·hw values, in double.
void batch_norm_statistics(const bn_shape& s, const void* x, bn_statistics how, double* mean, double* var);

// The same from per-row statistics a producer gathered while it wrote x (conv_layer::forward's
// moments): for each image, block and row of `rows` (hw = rows·cols), each lane's mean and
// Σ (x − mean)² ([n][cb][rows][2][bc] doubles), merged row by row in that order (Chan, Golub and
// LeVeque's pairwise update), so the result does not depend on how the producer split its work.
void batch_norm_statistics_of_rows(const bn_shape& s, const double* moments, int64_t rows, double* mean, double* var);

// y = relu?((x − mean)·γ/√(var + eps) + β + residual) with the batch's mean and biased variance,
// returned in mean and var (c floats each). gamma, beta: c floats, or null for 1 and 0;
// residual: null or like x; y like x (padding channels 0). Needs n·hw ≥ 1. With moments (and
// rows, as batch_norm_statistics_of_rows takes them) the statistics come from there, not from x.
void batch_norm_forward(const bn_shape& s, const void* x, const float* gamma, const float* beta, double eps,
                        const void* residual, bool relu, void* y, float* mean, float* var,
                        bn_statistics how = bn_statistics::shifted, const double* moments = nullptr,
                        int64_t rows = 0);

// The gradients of batch_norm_forward given grad_y (like x), x, y (read for the ReLU mask when
// relu), gamma (null: 1), and the mean and var it returned:
//   g = grad_y·[y > 0] (relu) or grad_y;  dβ = Σ g;  dγ = Σ g·x̂ with x̂ = (x − mean)·invstd;
//   dx = γ·invstd/M·(M·g − dβ − x̂·dγ),  M = n·hw,  invstd = 1/√(var + eps).
// grad_x: like x, f32 or bf16 (grad_x_bf16); grad_gamma, grad_beta: c floats or null;
// grad_residual: null, or like x: g (the gradient of the residual and of the sum before the ReLU).
void batch_norm_backward(const bn_shape& s, const void* grad_y, const void* x, const void* y, bool relu,
                         const float* gamma, const float* mean, const float* var, double eps, void* grad_x,
                         bool grad_x_bf16, float* grad_gamma, float* grad_beta, void* grad_residual);

}  // namespace brgemm::layers
