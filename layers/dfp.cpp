// The DFP-16 product driver (layers/dfp.h).
#include "dfp.h"

#include <algorithm>
#include <cstdlib>
#include <vector>
#include <omp.h>
#include "blocks.h"
#include "brgemm/dfp.h"

namespace brgemm::layers {

namespace {

// Whether every aligned chunk of kc columns fits, from the rows' prefix sums of |a| per pair of
// columns (pre[i][j] = Σ |a_i,0..2j−1|; kc even or k).
bool chunks_fit(const std::vector<int64_t>& pre, int64_t m, int64_t pairs, int64_t kc, int64_t limit) {
  const int64_t step = (kc + 1) / 2;
  for (int64_t i = 0; i < m; ++i) {
    const int64_t* row = pre.data() + i * (pairs + 1);
    for (int64_t j = 0; j < pairs; j += step)
      if (row[std::min(pairs, j + step)] - row[j] > limit) return false;
  }
  return true;
}

}  // namespace

int64_t dfp16_chunk(const int16_t* a, int64_t m, int64_t k, int64_t lda, int32_t b_absmax, int threads) {
  if (b_absmax <= 0) return k;  // B is zero: nothing can overflow
  const int64_t limit = ((int64_t(1) << 31) - 1) / b_absmax, pairs = (k + 1) / 2;
  static thread_local std::vector<int64_t> pre;  // grows once, reused
  pre.resize((size_t)(m * (pairs + 1)));
  int64_t* const base = pre.data();  // the caller's buffer: `pre` in the team's threads is their own
  threads = (int)std::max<int64_t>(1, std::min<int64_t>(threads, m));
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int64_t i = 0; i < m; ++i) {
    const int16_t* row = a + i * lda;
    int64_t* p = base + i * (pairs + 1);
    p[0] = 0;
    for (int64_t j = 0; j < pairs; ++j)
      p[j + 1] = p[j] + std::abs((int32_t)row[2 * j]) + (2 * j + 1 < k ? std::abs((int32_t)row[2 * j + 1]) : 0);
  }
  if (chunks_fit(pre, m, pairs, k, limit)) return k;
  // Multiples of 32 first (whole unrolled k-loops), then the short even lengths; 2 always fits.
  for (int64_t kc = (k - 1) / 32 * 32; kc >= 32; kc -= 32)
    if (chunks_fit(pre, m, pairs, kc, limit)) return kc;
  for (int64_t kc = std::min<int64_t>(30, k - 1) & ~int64_t(1); kc > 2; kc -= 2)
    if (chunks_fit(pre, m, pairs, kc, limit)) return kc;
  return 2;
}

int32_t dfp16_pack_b(const int16_t* b, int64_t k, int64_t n, int64_t ldb, int16_t* packed, int threads) {
  // Even row ranges (a packed row holds a pair of B's rows), one per thread: each packs its rows
  // and finds their max|b|.
  const int64_t pairs = (k + 1) / 2;
  threads = (int)std::max<int64_t>(1, std::min<int64_t>(threads, pairs));
  int32_t absmax = 0;
#pragma omp parallel num_threads(threads) reduction(max : absmax) if (threads > 1)
  {
    const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t r0 = 2 * (pairs * t / nt), r1 = std::min(k, 2 * (pairs * (t + 1) / nt));
    if (r1 > r0) {
      pack_b(dtype::s16s16, b + r0 * ldb, r1 - r0, n, ldb, packed + r0 * n, n, nullptr);
      for (int64_t r = r0; r < r1; ++r)
        for (int64_t j = 0; j < n; ++j) absmax = std::max(absmax, std::abs((int32_t)b[r * ldb + j]));
    }
  }
  return absmax;
}

status dfp16_gemm(int64_t m, int64_t n, int64_t k, const int16_t* a, int64_t lda, const int16_t* b, int64_t ldb,
                  int64_t kc, int32_t e, float* c, int64_t ldc) {
  // Blocks of C: 96 rows (whole 6-row tiles) × 64 columns, one per work item.
  constexpr int64_t bm = 96, bn = 64;
  const int64_t row_blocks = (m + bm - 1) / bm, col_blocks = (n + bn - 1) / bn, items = row_blocks * col_blocks;
  const int64_t whole = k / kc, rest = k - whole * kc;
  // A tiny product is not worth waking the team (layers/gemm.cpp's rule): on a busy machine the
  // parallel region alone can cost milliseconds.
  const bool tiny = 2.0 * (double)m * (double)n * (double)k < 4e6;
  const int threads = tiny ? 1 : (int)std::min<int64_t>(num_threads(), items);
  status result = status::ok;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int64_t item = 0; item < items; ++item) {
    const int64_t i0 = item / col_blocks * bm, j0 = item % col_blocks * bn;
    const int64_t rows = std::min(bm, m - i0), cols = std::min(bn, n - j0);
    float* cb = c + i0 * ldc + j0;
    for (int part = 0; part < 2; ++part) {  // the whole chunks as one batch, then the rest
      const int64_t count = part == 0 ? whole : (rest > 0);
      if (count == 0) continue;
      desc d;
      d.type = dtype::s16s16f32;
      d.m = rows;
      d.n = cols;
      d.k = part == 0 ? kc : rest;
      d.lda = lda;
      d.ldb = ldb;
      d.ldc = ldc;
      d.beta = part == 0 ? 0.0f : 1.0f;
      const kernel* kr;
      const status s = dispatch(d, &kr);
      if (s != status::ok) {
#pragma omp critical
        result = s;
        break;
      }
      const int64_t k0 = part == 0 ? 0 : whole * kc;  // even: a chunk starts at a packed row
      batch_ref batch;
      batch.count = count;
      batch.a = a + i0 * lda + k0;
      batch.b = b + k0 * ldb + j0 * 2;
      batch.stride_a = kc;
      batch.stride_b = kc * ldb;  // kc/2 packed rows of ldb pairs
      execute(*kr, batch, cb, nullptr);
    }
    for (int64_t i = 0; i < rows; ++i) dfp16_scale_f32(cb + i * ldc, cols, e);
  }
  return result;
}

void transpose_s16(const int16_t* src, int64_t r, int64_t c, int64_t ld_src, int16_t* dst, int64_t ld_dst) {
  constexpr int64_t b = 32;
  const int64_t row_blocks = (r + b - 1) / b, col_blocks = (c + b - 1) / b, items = row_blocks * col_blocks;
  const int threads = (int)std::min<int64_t>(num_threads(), std::max<int64_t>(1, r * c >> 18));
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int64_t item = 0; item < items; ++item) {
    const int64_t i0 = item / col_blocks * b, j0 = item % col_blocks * b;
    const int64_t i1 = std::min(r, i0 + b), j1 = std::min(c, j0 + b);
    transpose_elements(src + i0 * ld_src + j0, i1 - i0, j1 - j0, ld_src, dst + j0 * ld_dst + i0, ld_dst, 2);
  }
}

}  // namespace brgemm::layers
