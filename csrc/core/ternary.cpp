// Ternary products (brgemm/ternary.h): the packing, and each call sent to the active ISA's
// kernel (the BF16 level uses AVX-512 VNNI's).
#include "brgemm/ternary.h"
#include <cstring>
#include "../kernels/ukernels.h"

namespace brgemm {

void ternary_pack(const int8_t* codes, const float* alpha, int levels, int64_t k, int64_t n, int64_t block,
                  uint8_t* dst, float* alpha_dst) {
  const int64_t panels = ternary_panels(n), nb = k / block;
  std::memset(dst, 0, (size_t)(levels * ternary_level_bytes(k, n)));
  std::memset(alpha_dst, 0, sizeof(float) * (size_t)(levels * ternary_level_alphas(k, n, block)));
  for (int l = 0; l < levels; ++l)
    for (int64_t p = 0; p < panels; ++p) {
      uint8_t* panel = dst + l * ternary_level_bytes(k, n) + p * (k / 4) * 64;
      float* ap = alpha_dst + l * ternary_level_alphas(k, n, block) + p * nb * ternary_panel;
      for (int64_t c = 0; c < ternary_panel && p * ternary_panel + c < n; ++c) {
        const int64_t j = p * ternary_panel + c;
        const int8_t* col = codes + (l * n + j) * k;
        const int g = (int)(c / 16), L = (int)((c % 16) / 4), cb = (int)(c % 4);
        for (int64_t r = 0; r < k; ++r) {
          const uint8_t code = col[r] > 0 ? 1 : col[r] < 0 ? 3 : 0;
          panel[(r / 4) * 64 + 16 * g + 4 * cb + r % 4] |= (uint8_t)(code << (2 * L));
        }
        for (int64_t b = 0; b < nb; ++b) ap[b * ternary_panel + c] = alpha[(l * n + j) * nb + b];
      }
    }
}

void ternary_gemm_panels(const ternary_product& p, int64_t p0, int64_t p1) {
  const isa level = active_isa();
#ifdef BRGEMM_BUILT_AVX512_VNNI
  if ((int)level >= (int)isa::avx512_vnni) return kernels::ternary_gemm__avx512vnni(p, p0, p1);
#endif
#ifdef BRGEMM_BUILT_AVX512
  if ((int)level >= (int)isa::avx512) return kernels::ternary_gemm__avx512(p, p0, p1);
#endif
#ifdef BRGEMM_BUILT_AVX2
  if ((int)level >= (int)isa::avx2) return kernels::ternary_gemm__avx2(p, p0, p1);
#endif
  (void)level;
  kernels::ternary_gemm__scalar(p, p0, p1);
}

}  // namespace brgemm
