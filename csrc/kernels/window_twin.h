// The rules of brgemm/window.h one value at a time, shared by the scalar twin and the vector
// kernels (which must pick what the twin picks).
#pragma once
#include <cstdint>
#include "brgemm/window.h"

// Columns [*c0, *c1) of the row that output o's window covers (clipped to the row).
static inline void brgemm_window_columns(const brgemm::window_rows& g, int64_t o, int64_t* c0, int64_t* c1) {
  const int64_t c = o * g.stride - g.pad;
  *c0 = c < 0 ? 0 : c;
  *c1 = c + g.kw < g.width ? c + g.kw : g.width;
}

// Whether v replaces the running maximum m: greater, or NaN (PyTorch's rule, so that the
// backward pass routes each gradient where PyTorch's would go).
static inline bool brgemm_max_takes(float v, float m) { return v > m || v != v; }
