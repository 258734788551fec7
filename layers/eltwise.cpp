// Element-wise drivers: chunks of an array or blocks of rows per OpenMP thread; the arithmetic
// of the activations is the core's (per-ISA kernels), the softmax family's is here (plain
// loops over contiguous rows, which the compiler vectorizes).
#include "eltwise.h"
#include <algorithm>
#include <cmath>
#include <vector>
#include <omp.h>

namespace brgemm::layers {

namespace {

// Threads for n elements: one per 64 Ki elements at least, so small arrays stay on one.
int threads_for(int64_t n) { return (int)std::max<int64_t>(1, std::min<int64_t>(num_threads(), n >> 16)); }

constexpr int max_order = 16;

// 1/i! for i ≤ max_order, in float (the Horner steps below are float).
struct taylor_coefficients {
  float c[max_order + 1];
  taylor_coefficients() {
    double f = 1.0;
    for (int i = 0; i <= max_order; ++i) {
      if (i > 0) f *= i;
      c[i] = (float)(1.0 / f);
    }
  }
};
const taylor_coefficients taylor;

// P_n(z) by Horner's rule.
inline float taylor_exp(float z, int order) {
  float p = taylor.c[order];
  for (int i = order - 1; i >= 0; --i) p = p * z + taylor.c[i];
  return p;
}

// Σ v in 16 float lanes (a loop the compiler vectorizes without reassociating anything), the
// lanes then added in double.
double lane_sum(const float* v, int64_t n) {
  float lane[16] = {};
  int64_t j = 0;
  for (; j + 16 <= n; j += 16)
    for (int l = 0; l < 16; ++l) lane[l] += v[j + l];
  double s = 0.0;
  for (; j < n; ++j) s += v[j];
  for (float x : lane) s += x;
  return s;
}

// One row: f32 values in, f32 out (the caller converts bf16 at the edges).
void softmax_row(int order, const float* z, float* y, int64_t cols) {
  if (order == 0) {
    float mx = -INFINITY;
    for (int64_t j = 0; j < cols; ++j) mx = std::max(mx, z[j]);
    for (int64_t j = 0; j < cols; ++j) y[j] = std::exp(z[j] - mx);
  } else {
    for (int64_t j = 0; j < cols; ++j) y[j] = taylor_exp(z[j], order);
  }
  const float inv = (float)(1.0 / lane_sum(y, cols));
  for (int64_t j = 0; j < cols; ++j) y[j] *= inv;
}

}  // namespace

void activation(brgemm::activation a, bool bf16, const void* x, void* y, int64_t n) {
  const int threads = threads_for(n);
  auto run = [&](int64_t i0, int64_t i1) {
    if (bf16)
      activation_bf16(a, (const uint16_t*)x + i0, (uint16_t*)y + i0, i1 - i0);
    else
      activation_f32(a, (const float*)x + i0, (float*)y + i0, i1 - i0);
  };
  if (threads == 1) return run(0, n);
#pragma omp parallel num_threads(threads)
  {
    const int64_t id = omp_get_thread_num(), nt = omp_get_num_threads();
    run(n * id / nt / 64 * 64, id + 1 == nt ? n : n * (id + 1) / nt / 64 * 64);  // cache-line aligned cuts
  }
}

void activation_backward(brgemm::activation a, const float* grad_y, const float* x, const float* y, float* grad_x,
                         int64_t n) {
  const int threads = threads_for(n);
#pragma omp parallel num_threads(threads)
  {
    const int64_t id = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t i0 = n * id / nt / 64 * 64, i1 = id + 1 == nt ? n : n * (id + 1) / nt / 64 * 64;
    activation_backward_f32(a, grad_y + i0, x ? x + i0 : nullptr, y ? y + i0 : nullptr, grad_x + i0, i1 - i0);
  }
}

void softmax(int order, bool bf16, const void* x, void* y, int64_t rows, int64_t cols) {
  const int threads = (int)std::min<int64_t>(threads_for(rows * cols), rows);
#pragma omp parallel num_threads(threads)
  {
    std::vector<float> zin, zout;  // bf16 rows widened (one allocation per thread and call)
    if (bf16) {
      zin.resize((size_t)cols);
      zout.resize((size_t)cols);
    }
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      if (!bf16) {
        softmax_row(order, (const float*)x + r * cols, (float*)y + r * cols, cols);
        continue;
      }
      bf16_to_f32((const uint16_t*)x + r * cols, zin.data(), cols);
      softmax_row(order, zin.data(), zout.data(), cols);
      f32_to_bf16(zout.data(), (uint16_t*)y + r * cols, cols);
    }
  }
}

void softmax_backward(int order, const float* z, const float* y, const float* grad_y, float* grad_z, int64_t rows,
                      int64_t cols) {
  const int threads = (int)std::min<int64_t>(threads_for(rows * cols), rows);
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t r = 0; r < rows; ++r) {
    const float *zr = z ? z + r * cols : nullptr, *yr = y + r * cols, *gr = grad_y + r * cols;
    float* out = grad_z + r * cols;
    double dot = 0.0;
    for (int64_t j = 0; j < cols; ++j) dot += (double)gr[j] * yr[j];
    const float d = (float)dot;  // (backward: kept simple, double all along)
    if (order == 0) {
      for (int64_t j = 0; j < cols; ++j) out[j] = yr[j] * (gr[j] - d);
    } else {
      // y_j = P_n(z_j)/S and P_n' = P_{n−1}, so ∂y_i/∂z_j = (δ_ij − y_i)·P_{n−1}(z_j)/S; S from the row.
      double sum = 0.0;
      for (int64_t j = 0; j < cols; ++j) sum += taylor_exp(zr[j], order);
      const float inv = (float)(1.0 / sum);
      for (int64_t j = 0; j < cols; ++j) out[j] = taylor_exp(zr[j], order - 1) * inv * (gr[j] - d);
    }
  }
}

}  // namespace brgemm::layers
