// Shared-weight products (brgemm/codebook.h): the packing, and each call sent to the active
// ISA's kernel (the VNNI and BF16 levels use AVX-512's).
#include "brgemm/codebook.h"
#include <cstring>
#include "../kernels/ukernels.h"

namespace brgemm {

void codebook_pack(int bits, const uint8_t* idx, int64_t k, int64_t n, int64_t ld, uint8_t* dst) {
  const int64_t row = codebook_row_bytes(bits), panels = (n + codebook_panel - 1) / codebook_panel;
  for (int64_t p = 0; p < panels; ++p)
    for (int64_t r = 0; r < k; ++r) {
      uint8_t* out = dst + (p * k + r) * row;
      std::memset(out, 0, (size_t)row);
      for (int64_t q = 0; q < codebook_panel && p * codebook_panel + q < n; ++q) {
        const uint8_t v = idx[r * ld + p * codebook_panel + q];
        if (bits > 4)
          out[q] = v;
        else
          out[4 * (q % 8) + q / 16] |= (uint8_t)((v & 15) << (4 * ((q / 8) % 2)));  // word q%8, nibble q/8
      }
    }
}

void codebook_gemm_panels(const codebook_product& p, int64_t p0, int64_t p1) {
  const isa level = active_isa();
#ifdef BRGEMM_BUILT_AVX512
  if ((int)level >= (int)isa::avx512) return kernels::codebook_gemm__avx512(p, p0, p1);
#endif
#ifdef BRGEMM_BUILT_AVX2
  if ((int)level >= (int)isa::avx2) return kernels::codebook_gemm__avx2(p, p0, p1);
#endif
  (void)level;
  kernels::codebook_gemm__scalar(p, p0, p1);
}

}  // namespace brgemm
