// The reductions of brgemm/window.h one value at a time: the twin every ISA's kernels match, and
// the path for CPUs below AVX2.
#include <algorithm>
#include <cmath>
#include "../ukernels.h"
#include "../eltwise_twin.h"
#include "../epilogue_twin.h"
#include "../window_twin.h"

namespace brgemm::kernels {

namespace {

inline float value(const float* p) { return *p; }
inline float value(const uint16_t* p) { return brgemm_from_bits((uint32_t)*p << 16); }

constexpr int64_t chunk = 64;  // lanes at a time: the inner loops run along a vector, not across rows

template <class T>
void window_max(const window_rows& g, const T* x, T* y) {
  float m[chunk];
  for (int64_t o = 0; o < g.out_width; ++o) {
    int64_t c0, c1;
    brgemm_window_columns(g, o, &c0, &c1);
    for (int64_t j0 = 0; j0 < g.len; j0 += chunk) {
      const int64_t n = std::min(chunk, g.len - j0);
      T* yo = y + o * g.len + j0;
      for (int64_t j = 0; j < n; ++j) {
        m[j] = -INFINITY;
        if constexpr (sizeof(T) == 2) yo[j] = 0xFF80;  // −inf: what an empty window gives
        else yo[j] = -INFINITY;
      }
      for (int64_t r = 0; r < g.rows; ++r)
        for (int64_t c = c0; c < c1; ++c) {
          const T* p = x + r * g.ld + c * g.len + j0;
          for (int64_t j = 0; j < n; ++j)
            if (brgemm_max_takes(value(p + j), m[j])) m[j] = value(p + j), yo[j] = p[j];
        }
    }
  }
}

template <class T>
void window_max_backward(const window_rows& g, const T* x, const float* gy, float* gx) {
  float m[chunk];
  int64_t at[chunk];
  for (int64_t o = 0; o < g.out_width; ++o) {
    int64_t c0, c1;
    brgemm_window_columns(g, o, &c0, &c1);
    if (c0 >= c1 || g.rows <= 0) continue;
    for (int64_t j0 = 0; j0 < g.len; j0 += chunk) {
      const int64_t n = std::min(chunk, g.len - j0);
      for (int64_t j = 0; j < n; ++j) m[j] = -INFINITY, at[j] = c0 * g.len;  // nothing above −inf: the first
      for (int64_t r = 0; r < g.rows; ++r)
        for (int64_t c = c0; c < c1; ++c) {
          const int64_t i = r * g.ld + c * g.len;
          for (int64_t j = 0; j < n; ++j)
            if (brgemm_max_takes(value(x + i + j0 + j), m[j])) m[j] = value(x + i + j0 + j), at[j] = i;
        }
      for (int64_t j = 0; j < n; ++j) gx[at[j] + j0 + j] += gy[o * g.len + j0 + j];
    }
  }
}

// Σ_i x[i·len + j0 + j] for j < n, from i = 0 up.
template <class T>
void sums(const T* x, int64_t count, int64_t len, int64_t j0, int64_t n, float* s) {
  for (int64_t j = 0; j < n; ++j) s[j] = 0.0f;
  for (int64_t i = 0; i < count; ++i)
    for (int64_t j = 0; j < n; ++j) s[j] += value(x + i * len + j0 + j);
}

}  // namespace

void window_max_u8__scalar(const window_rows& g, const uint8_t* x, uint8_t* y) {
  for (int64_t o = 0; o < g.out_width; ++o) {
    int64_t c0, c1;
    brgemm_window_columns(g, o, &c0, &c1);
    uint8_t* yo = y + o * g.len;
    for (int64_t j = 0; j < g.len; ++j) yo[j] = 0;  // the least uint8: what an empty window gives
    for (int64_t r = 0; r < g.rows; ++r)
      for (int64_t c = c0; c < c1; ++c) {
        const uint8_t* p = x + r * g.ld + c * g.len;
        for (int64_t j = 0; j < g.len; ++j) yo[j] = std::max(yo[j], p[j]);
      }
  }
}

void window_max_f32__scalar(const window_rows& g, const float* x, float* y) { window_max(g, x, y); }
void window_max_bf16__scalar(const window_rows& g, const uint16_t* x, uint16_t* y) { window_max(g, x, y); }
void window_max_backward_f32__scalar(const window_rows& g, const float* x, const float* gy, float* gx) {
  window_max_backward(g, x, gy, gx);
}
void window_max_backward_bf16__scalar(const window_rows& g, const uint16_t* x, const float* gy, float* gx) {
  window_max_backward(g, x, gy, gx);
}

void vector_mean_f32__scalar(const float* x, int64_t count, int64_t len, int64_t out_len, float* y) {
  float s[chunk];
  for (int64_t j0 = 0; j0 < out_len; j0 += chunk) {
    const int64_t n = std::min(chunk, out_len - j0);
    sums(x, count, len, j0, n, s);
    for (int64_t j = 0; j < n; ++j) y[j0 + j] = s[j] / (float)count;
  }
}

void vector_mean_bf16__scalar(const uint16_t* x, int64_t count, int64_t len, int64_t out_len, uint16_t* y) {
  float s[chunk];
  for (int64_t j0 = 0; j0 < out_len; j0 += chunk) {
    const int64_t n = std::min(chunk, out_len - j0);
    sums(x, count, len, j0, n, s);
    for (int64_t j = 0; j < n; ++j) y[j0 + j] = brgemm_bf16_rne(s[j] / (float)count);
  }
}

void vector_mean_u8__scalar(const uint8_t* x, int64_t count, int64_t len, int64_t out_len, float scale,
                            int32_t zero_point, float* y) {
  int32_t s[chunk];
  const int32_t z = (int32_t)count * zero_point;  // ≤ 65793·255: the caller bounds count
  for (int64_t j0 = 0; j0 < out_len; j0 += chunk) {
    const int64_t n = std::min(chunk, out_len - j0);
    for (int64_t j = 0; j < n; ++j) s[j] = 0;
    for (int64_t i = 0; i < count; ++i)
      for (int64_t j = 0; j < n; ++j) s[j] += x[i * len + j0 + j];
    for (int64_t j = 0; j < n; ++j) y[j0 + j] = scale * ((float)(s[j] - z) / (float)count);
  }
}

void vector_mean_backward_f32__scalar(const float* g, int64_t in_len, int64_t count, int64_t len, float* y) {
  for (int64_t i = 0; i < count; ++i)
    for (int64_t j = 0; j < len; ++j) y[i * len + j] = j < in_len ? g[j] / (float)count : 0.0f;
}

}  // namespace brgemm::kernels
