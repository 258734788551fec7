// The shared-weight products of brgemm/codebook.h one value at a time: the twin every ISA's kernels
// match (fused multiply-adds in k order, then the bias), and the path for CPUs below AVX2.
#include <algorithm>
#include <cmath>
#include "../ukernels.h"

namespace brgemm::kernels {

namespace {

// Column q's index in one row of a panel (the layout of brgemm/codebook.h).
inline int index_at(const uint8_t* row, int bits, int64_t q) {
  return bits > 4 ? row[q] : (row[4 * (q % 8) + q / 16] >> (4 * ((q / 8) % 2))) & 15;  // word q%8, nibble q/8
}

}  // namespace

void codebook_gemm__scalar(const codebook_product& p, int64_t p0, int64_t p1) {
  const int64_t rb = codebook_row_bytes(p.bits);
  for (int64_t pn = p0; pn < p1; ++pn) {
    const uint8_t* panel = p.b + pn * p.k * rb;
    const int64_t cols = std::min(codebook_panel, p.n - pn * codebook_panel);
    for (int64_t i = 0; i < p.m; ++i)
      for (int64_t q = 0; q < cols; ++q) {
        float acc = 0.0f;
        for (int64_t r = 0; r < p.k; ++r)
          acc = std::fma(p.a[i * p.lda + r], p.codebook[index_at(panel + r * rb, p.bits, q)], acc);
        const int64_t j = pn * codebook_panel + q;
        p.c[i * p.ldc + j] = p.bias ? acc + p.bias[j] : acc;
      }
  }
}

}  // namespace brgemm::kernels
