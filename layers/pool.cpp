// Pooling drivers: which rows and planes each OpenMP thread takes, and where each window's rows
// start; the core's window kernels do the rest. The forward pass splits output rows between
// threads; the max-pool backward pass whole planes (image × channel block), since neighbouring
// output rows add into the same input rows.
#include "pool.h"
#include <algorithm>
#include <cstring>
#include "brgemm/brgemm.h"
#include "brgemm/window.h"

namespace brgemm::layers {

namespace {

// Threads for `elements` of input: one per 32 Ki at least, so small tensors stay on one, and
// no more than the pieces of work.
int threads_for(int64_t elements, int64_t pieces) {
  return (int)std::max<int64_t>(1, std::min<int64_t>({(int64_t)num_threads(), elements >> 15, pieces}));
}

// The rows of output row oy's window that lie in the input, as the core's patch.
window_rows window_of(const pool2d_shape& s, int64_t oy, int64_t* r0) {
  const int64_t top = oy * s.sh - s.ph;
  *r0 = std::max<int64_t>(top, 0);
  window_rows g;
  g.rows = std::min(top + s.kh, s.h) - *r0;
  g.ld = s.w * s.bc;
  g.width = s.w;
  g.len = s.bc;
  g.out_width = s.ow();
  g.kw = s.kw;
  g.stride = s.sw;
  g.pad = s.pw;
  return g;
}

}  // namespace

void max_pool2d(const pool2d_shape& s, element e, const void* x, void* y) {
  const int64_t oh = s.oh(), ow = s.ow(), plane = s.h * s.w * s.bc, rows = s.n * s.blocks * oh;
  if (rows <= 0 || ow <= 0) return;
  const int threads = threads_for(s.n * s.blocks * plane, rows);
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t p = i / oh, oy = i % oh;
    int64_t r0;
    const window_rows g = window_of(s, oy, &r0);
    const int64_t in = p * plane + r0 * g.ld, out = i * ow * s.bc;
    if (e == element::bf16)
      window_max_bf16(g, (const uint16_t*)x + in, (uint16_t*)y + out);
    else if (e == element::u8)
      window_max_u8(g, (const uint8_t*)x + in, (uint8_t*)y + out);
    else
      window_max_f32(g, (const float*)x + in, (float*)y + out);
  }
}

void max_pool2d_backward(const pool2d_shape& s, bool bf16, const void* x, const float* gy, float* gx) {
  const int64_t oh = s.oh(), ow = s.ow(), plane = s.h * s.w * s.bc, planes = s.n * s.blocks, ld = s.w * s.bc;
  if (planes <= 0 || plane <= 0) return;
  const int threads = threads_for(planes * plane, planes);
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t p = 0; p < planes; ++p) {
    float* gp = gx + p * plane;
    // Rows are zeroed just before the first window reaches them, while they are about to be in cache.
    int64_t zeroed = 0;
    for (int64_t oy = 0; oy < oh && ow > 0; ++oy) {
      int64_t r0;
      const window_rows g = window_of(s, oy, &r0);
      const int64_t r1 = r0 + g.rows;
      if (r1 > zeroed) {
        std::memset(gp + zeroed * ld, 0, (size_t)((r1 - zeroed) * ld) * sizeof(float));
        zeroed = r1;
      }
      const int64_t in = p * plane + r0 * ld, out = (p * oh + oy) * ow * s.bc;
      if (bf16)
        window_max_backward_bf16(g, (const uint16_t*)x + in, gy + out, gx + in);
      else
        window_max_backward_f32(g, (const float*)x + in, gy + out, gx + in);
    }
    if (zeroed < s.h) std::memset(gp + zeroed * ld, 0, (size_t)((s.h - zeroed) * ld) * sizeof(float));
  }
}

void global_avg_pool(int64_t n, int64_t blocks, int64_t hw, int64_t bc, int64_t channels, bool bf16, const void* x,
                     void* y) {
  const int64_t planes = n * blocks;
  if (planes <= 0) return;
  const int threads = threads_for(planes * hw * bc, planes);
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t p = 0; p < planes; ++p) {
    const int64_t b = p % blocks, in = p * hw * bc, out = (p / blocks) * channels + b * bc;
    const int64_t len = std::min(bc, channels - b * bc);
    if (bf16)
      vector_mean_bf16((const uint16_t*)x + in, hw, bc, len, (uint16_t*)y + out);
    else
      vector_mean_f32((const float*)x + in, hw, bc, len, (float*)y + out);
  }
}

void global_avg_pool_u8(int64_t n, int64_t blocks, int64_t hw, int64_t bc, int64_t channels, const uint8_t* x,
                        float scale, int32_t zero_point, float* y) {
  const int64_t planes = n * blocks;
  if (planes <= 0) return;
  const int threads = threads_for(planes * hw * bc, planes);
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t p = 0; p < planes; ++p) {
    const int64_t b = p % blocks;
    vector_mean_u8(x + p * hw * bc, hw, bc, std::min(bc, channels - b * bc), scale, zero_point,
                   y + (p / blocks) * channels + b * bc);
  }
}

void global_avg_pool_backward(int64_t n, int64_t blocks, int64_t hw, int64_t bc, int64_t channels, const float* gy,
                              float* gx) {
  const int64_t planes = n * blocks;
  if (planes <= 0) return;
  const int threads = threads_for(planes * hw * bc, planes);
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t p = 0; p < planes; ++p) {
    const int64_t b = p % blocks;
    vector_mean_backward_f32(gy + (p / blocks) * channels + b * bc, std::min(bc, channels - b * bc), hw, bc,
                             gx + p * hw * bc);
  }
}

}  // namespace brgemm::layers
