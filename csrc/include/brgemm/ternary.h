// Products on ternary weights with residual levels (Kundu et al., "Ternary Residual Networks",
// SysML 2018): W ≈ Σ_level α·Ŵ with Ŵ ∈ {−1, 0, 1} per block of `block` weights of a column and
// one α per (level, column, block). B's codes are stored 2 bits each and widened in registers on
// the way into u8 × s8 multiply-adds (the int8 pipeline's arithmetic, "8a-2w"): for a memory-bound
// product (GEMV, a few rows of A) the traffic of B is what costs, a quarter of int8 weights'. Like
// the shared-weight products (codebook.h) this is a member of the compressed-weight GEMV family:
// csrc/core/ternary.cpp packs and dispatches, per-ISA ternary.cpp compute; the scalar twin is
// ref/ternary.cpp, and every ISA gives its bits.
//
// The packing, "ternary panels": per level, B (k × n; k a multiple of the block, the block a
// multiple of 4 and at most 256) cut into column panels of ternary_panel = 64 columns, each panel
// k/4 rows of 64 bytes (one per k-quad q), in four groups g of 16 bytes (columns 16g .. 16g+15).
// Bits 2L, 2L+1 of byte b of group g hold the code of column 16g + 4L + b/4 at k = 4q + b%4
// (0 → 0, 1 → +1, 3 → −1: the code as a signed 2-bit number). So a 16-byte load broadcast to the
// four 128-bit lanes of a vector, shifted right by 2L in lane L, masked and looked up (vpshufb)
// gives the s8 weights in the u8s8 VNNI order (32-bit lane = column, its bytes = the quad's four
// k); or, shifted left by 6 − 2L and masked to the top two bits, 64× them (AVX-512 VNNI). α is packed per level and panel
// as nb = k/block rows of 64 floats (0 past n).
//
// C[i, j] = relu?( scale · (acc − zero_point · corr[j]) (+ bias[j]) ) with
// acc = Σ_level Σ_block α · float(S) in that order (fused multiply-adds from 0; a block whose α is
// 0 is skipped), S = Σ_{k in block} a[i, k] · code (exact int32; |S| ≤ 255·256).
#pragma once
#include <cstdint>
#include "brgemm/brgemm.h"

namespace brgemm {

constexpr int64_t ternary_panel = 64;
inline int64_t ternary_panels(int64_t n) { return (n + ternary_panel - 1) / ternary_panel; }
inline int64_t ternary_level_bytes(int64_t k, int64_t n) { return ternary_panels(n) * (k / 4) * 64; }
inline int64_t ternary_level_alphas(int64_t k, int64_t n, int64_t block) {
  return ternary_panels(n) * (k / block) * ternary_panel;
}

// Packs codes (levels × n × k int8 in {−1, 0, 1}, column j's k codes contiguous) and alpha
// (levels × n × k/block) into ternary panels at dst (levels · ternary_level_bytes) and
// alpha_dst (levels · ternary_level_alphas).
void ternary_pack(const int8_t* codes, const float* alpha, int levels, int64_t k, int64_t n, int64_t block,
                  uint8_t* dst, float* alpha_dst);

struct ternary_product {
  int64_t m = 0, n = 0, k = 0, block = 64;
  const uint8_t* a = nullptr;  // m × k u8 (past the weight's width any value: its codes are 0)
  int64_t lda = 0;
  const uint8_t* b = nullptr;  // ternary panels, level after level
  const float* alpha = nullptr;
  int levels = 1;              // levels used (the first ones)
  float scale = 1.0f, zero_point = 0.0f;
  const float* corr = nullptr;  // n values: Σ over the used levels of the dequantized column sum
  const float* bias = nullptr;  // n values, or null
  bool relu = false;
  float* c = nullptr;
  int64_t ldc = 0;
};
void ternary_gemm_panels(const ternary_product& p, int64_t p0, int64_t p1);

}  // namespace brgemm
