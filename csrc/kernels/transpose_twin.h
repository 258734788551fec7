// The transpose's scalar twin: dst (cols × rows, row stride ld_dst) = srcᵀ (src: rows × cols,
// row stride ld_src). A copy, so the vector kernels give the same bytes; they call this for
// the edges their tiles leave.
#pragma once
#include <algorithm>
#include <cstdint>

// The VNNI-2 form of rows × cols 16-bit elements (rows even): rows 2p and 2p + 1 interleaved
// element by element into row p of dst (2·cols elements).
static inline void brgemm_interleave_pairs_twin(const uint16_t* src, int64_t rows, int64_t cols, int64_t c0,
                                                uint16_t* dst) {
  for (int64_t p = 0; p < rows / 2; ++p)
    for (int64_t c = c0; c < cols; ++c) {
      dst[(p * cols + c) * 2] = src[2 * p * cols + c];
      dst[(p * cols + c) * 2 + 1] = src[(2 * p + 1) * cols + c];
    }
}

template <class T>
static inline void brgemm_transpose_twin(const T* src, int64_t rows, int64_t cols, int64_t ld_src, T* dst,
                                         int64_t ld_dst) {
  // 8 source rows at a time: each destination row gets 8 consecutive elements per pass.
  for (int64_t r0 = 0; r0 < rows; r0 += 8) {
    const int64_t r1 = std::min(rows, r0 + 8);
    for (int64_t c = 0; c < cols; ++c)
      for (int64_t r = r0; r < r1; ++r) dst[c * ld_dst + r] = src[r * ld_src + c];
  }
}
