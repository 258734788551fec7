// Element-wise layer drivers: the core's activation kernels spread over OpenMP threads, and
// the softmax family over rows. Arrays are contiguous; bf16 arrays are their uint16 bits.
#pragma once
#include <cstdint>
#include "brgemm/brgemm.h"

namespace brgemm::layers {

// y = f(x) / grad_x = grad_y·f'(·) over n elements (see brgemm.h), on num_threads() threads.
void activation(activation a, bool bf16, const void* x, void* y, int64_t n);
void activation_backward(brgemm::activation a, const float* grad_y, const float* x, const float* y, float* grad_x,
                         int64_t n);

// Softmax over each of `rows` rows of `cols` values (f32 or bf16 in, the same type out), the
// core's softmax_f32/bf16 per row, threads over rows: order 0 is the exact softmax
// e^(z − max z) / Σ; an even order n is the Taylor softmax P_n(z) / Σ P_n (see brgemm.h).
void softmax(int order, bool bf16, const void* x, void* y, int64_t rows, int64_t cols);
// grad_z from grad_y (all arrays of one type, f32 or bf16): exact: y·(g − ⟨g, y⟩) from y
// (x unused, may be null); Taylor: P_{n−1}(z)/Σ P_n · (g − ⟨g, y⟩) from x (y unused, may be null).
void softmax_backward(int order, bool bf16, const void* x, const void* y, const void* grad_y, void* grad_x,
                      int64_t rows, int64_t cols);

// Dropout over n f32 values (brgemm.h's dropout: the positions 0 … n − 1 of one array), on
// num_threads() threads; grad_x of it is the same call on grad_y with the same seed.
void dropout(const float* x, float* y, int64_t n, double p, uint64_t seed);

}  // namespace brgemm::layers
