// The DFP-16 product driver (layers/dfp.h).
#include "dfp.h"

#include <algorithm>
#include <cstdlib>
#include <omp.h>

namespace brgemm::layers {

std::vector<int64_t> dfp16_chunks(const int16_t* a, int64_t m, int64_t k, int64_t lda, int32_t b_absmax) {
  std::vector<int64_t> bounds{0};
  if (b_absmax <= 0) {  // B is zero: one chunk, nothing can overflow
    bounds.push_back(k);
    return bounds;
  }
  const int64_t limit = ((int64_t(1) << 31) - 1) / b_absmax;
  std::vector<int64_t> sum((size_t)m, 0);
  // Greedy, a pair of columns at a time (a chunk never splits a packed pair of B).
  for (int64_t j = 0; j < k; j += 2) {
    int64_t worst = 0;
    for (int64_t i = 0; i < m; ++i) {
      const int16_t* row = a + i * lda + j;
      const int64_t pair = std::abs((int32_t)row[0]) + (j + 1 < k ? std::abs((int32_t)row[1]) : 0);
      worst = std::max(worst, sum[(size_t)i] + pair);
    }
    if (worst > limit) {  // this pair starts a new chunk
      bounds.push_back(j);
      std::fill(sum.begin(), sum.end(), 0);
    }
    for (int64_t i = 0; i < m; ++i) {
      const int16_t* row = a + i * lda + j;
      sum[(size_t)i] += std::abs((int32_t)row[0]) + (j + 1 < k ? std::abs((int32_t)row[1]) : 0);
    }
  }
  bounds.push_back(k);
  return bounds;
}

status dfp16_gemm(int64_t m, int64_t n, int64_t k, const int16_t* a, int64_t lda, const int16_t* b, int64_t ldb,
                  const std::vector<int64_t>& chunks, float scale, float* c, int64_t ldc) {
  // Blocks of C: 96 rows (whole 6- and 12-row tiles) × 64 columns, one per work item.
  constexpr int64_t bm = 96, bn = 64;
  const int64_t row_blocks = (m + bm - 1) / bm, col_blocks = (n + bn - 1) / bn, items = row_blocks * col_blocks;
  const int threads = (int)std::min<int64_t>(num_threads(), items);
  status result = status::ok;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t item = 0; item < items; ++item) {
    const int64_t i0 = item / col_blocks * bm, j0 = item % col_blocks * bn;
    const int64_t rows = std::min(bm, m - i0), cols = std::min(bn, n - j0);
    float* cb = c + i0 * ldc + j0;
    epilogue_args args;
    args.scale = &scale;
    args.add = cb;  // the float sum of the chunks before: read, then overwritten, element by element
    args.ld_add = ldc;
    for (size_t h = 0; h + 1 < chunks.size(); ++h) {
      const int64_t k0 = chunks[h], kc = chunks[h + 1] - k0;
      desc d;
      d.type = dtype::s16s16;
      d.m = rows;
      d.n = cols;
      d.k = kc;
      d.lda = lda;
      d.ldb = ldb;
      d.ldc = ldc;
      d.ep.out = out_type::f32;
      d.ep.scale = scale_kind::tensor;
      d.ep.add = h > 0;
      const kernel* kr;
      const status s = dispatch(d, &kr);
      if (s != status::ok) {
#pragma omp critical
        result = s;
        break;
      }
      batch_ref one;
      one.count = 1;
      one.a = a + i0 * lda + k0;
      one.b = b + (k0 / 2) * ldb * 2 + j0 * 2;  // k0 is even: the chunk starts at a packed row
      execute(*kr, one, cb, &args);
    }
  }
  return result;
}

}  // namespace brgemm::layers
