// Element-wise drivers: chunks of an array or blocks of rows per OpenMP thread; the arithmetic
// is the core's (per-ISA kernels: the activations over chunks, the softmax family per row).
#include "eltwise.h"
#include <algorithm>
#include <vector>
#include <omp.h>

namespace brgemm::layers {

namespace {

// Threads for n elements: one per 64 Ki elements at least, so small arrays stay on one.
int threads_for(int64_t n) { return (int)std::max<int64_t>(1, std::min<int64_t>(num_threads(), n >> 16)); }

// A float row for softmax_bf16's e values, per thread: grown when a longer row comes, never
// shrunk, so repeated calls allocate nothing.
float* bf16_work(int64_t cols) {
  thread_local std::vector<float> work;
  if ((int64_t)work.size() < cols) work.resize((size_t)cols);
  return work.data();
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
    float* work = bf16 ? bf16_work(cols) : nullptr;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      if (bf16)
        softmax_bf16(order, (const uint16_t*)x + r * cols, (uint16_t*)y + r * cols, cols, work);
      else
        softmax_f32(order, (const float*)x + r * cols, (float*)y + r * cols, cols);
    }
  }
}

void softmax_backward(int order, bool bf16, const void* x, const void* y, const void* grad_y, void* grad_x,
                      int64_t rows, int64_t cols) {
  const int threads = (int)std::min<int64_t>(threads_for(rows * cols), rows);
  const size_t size = bf16 ? 2 : 4;
  auto at = [&](const void* p, int64_t r) { return p ? (const char*)p + (size_t)(r * cols) * size : nullptr; };
  // one call per thread on its block of rows: the kernel pipelines consecutive rows
  auto run = [&](int64_t r0, int64_t r1) {
    if (r1 <= r0) return;
    char* out = (char*)grad_x + (size_t)(r0 * cols) * size;
    if (bf16)
      softmax_backward_bf16(order, (const uint16_t*)at(x, r0), (const uint16_t*)at(y, r0),
                            (const uint16_t*)at(grad_y, r0), (uint16_t*)out, r1 - r0, cols);
    else
      softmax_backward_f32(order, (const float*)at(x, r0), (const float*)at(y, r0), (const float*)at(grad_y, r0),
                           (float*)out, r1 - r0, cols);
  };
  if (threads == 1) return run(0, rows);
#pragma omp parallel num_threads(threads)
  {
    const int64_t id = omp_get_thread_num(), nt = omp_get_num_threads();
    run(rows * id / nt, rows * (id + 1) / nt);
  }
}

void dropout(const float* x, float* y, int64_t n, double p, uint64_t seed) {
  const int threads = threads_for(n);
  if (threads == 1) return brgemm::dropout(x, y, n, p, seed, 0);
#pragma omp parallel num_threads(threads)
  {
    const int64_t id = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t i0 = n * id / nt / 64 * 64, i1 = id + 1 == nt ? n : n * (id + 1) / nt / 64 * 64;
    brgemm::dropout(x + i0, y + i0, i1 - i0, p, seed, (uint64_t)i0);
  }
}

}  // namespace brgemm::layers
