// The ternary products of brgemm/ternary.h one value at a time: the twin every ISA's kernels
// match (exact int32 block sums, then α·S fused into the sum in level and block order, then the
// epilogue), and the path for CPUs below AVX2.
#include <algorithm>
#include <cmath>
#include "../ukernels.h"

namespace brgemm::kernels {

namespace {

// Column c's code at k = r in a panel (the layout of brgemm/ternary.h): −1, 0 or 1.
inline int code_at(const uint8_t* panel, int64_t c, int64_t r) {
  const int v = (panel[(r / 4) * 64 + 16 * (c / 16) + 4 * (c % 4) + r % 4] >> (2 * ((c % 16) / 4))) & 3;
  return v == 1 ? 1 : v == 3 ? -1 : 0;
}

}  // namespace

void ternary_gemm__scalar(const ternary_product& p, int64_t p0, int64_t p1) {
  const int64_t nb = p.k / p.block, lb = ternary_level_bytes(p.k, p.n), la = ternary_level_alphas(p.k, p.n, p.block);
  for (int64_t pn = p0; pn < p1; ++pn) {
    const int64_t cols = std::min(ternary_panel, p.n - pn * ternary_panel);
    for (int64_t i = 0; i < p.m; ++i)
      for (int64_t c = 0; c < cols; ++c) {
        float acc = 0.0f;
        for (int l = 0; l < p.levels; ++l) {
          const uint8_t* panel = p.b + l * lb + pn * (p.k / 4) * 64;
          const float* alpha = p.alpha + l * la + pn * nb * ternary_panel;
          for (int64_t b = 0; b < nb; ++b) {
            const float al = alpha[b * ternary_panel + c];
            if (al == 0.0f) continue;
            int32_t s = 0;
            for (int64_t r = b * p.block; r < (b + 1) * p.block; ++r) s += (int32_t)p.a[i * p.lda + r] * code_at(panel, c, r);
            acc = std::fma((float)s, al, acc);
          }
        }
        const int64_t j = pn * ternary_panel + c;
        const float t = std::fma(-p.zero_point, p.corr[j], acc);
        float y = p.bias ? std::fma(p.scale, t, p.bias[j]) : p.scale * t;
        if (p.relu) y = y > 0.0f ? y : 0.0f;
        p.c[i * p.ldc + j] = y;
      }
  }
}

}  // namespace brgemm::kernels
