// Products on shared weights (Han et al. 2016, "Deep Compression"): B holds b-bit indices into a
// codebook of 2^b float32 centroids, and the kernel widens them in registers on the way into the
// multiply-adds, as the f32f16 ukernels widen half-precision weights. For memory-bound products
// (GEMV, a few rows of A) the traffic of B is what costs, and it shrinks with b (csrc/core/
// codebook.cpp dispatches, per-ISA codebook.cpp compute; the scalar twin is ref/codebook.cpp).
//
// The packing, "codebook panels": B (k × n) cut into column panels of codebook_panel = 64
// columns, each panel k rows of indices stored one after the other, columns past n index 0.
//   b ≤ 4: a row of a panel is 32 bytes, eight 32-bit words; nibble t of word d (bits 4t..4t+3,
//          little-endian) holds column 8t + d. So one shift of the row's words (the same shift
//          for all, or two: one per half of a 16-lane vector) puts eight or sixteen columns' indices
//          in the low bits of the lanes, where the permutes read them: no widening.
//   b ≥ 5: a row of a panel is 64 bytes, one index per byte
// Decoding (AVX-512): b ≤ 4 one in-register permute of a 16-entry table; b = 5 a two-register
// permute; b ≥ 6 such permutes and a tree of blends on the high bits (AVX2: gathers above b = 4).
#pragma once
#include <cstdint>
#include "brgemm/brgemm.h"

namespace brgemm {

constexpr int64_t codebook_panel = 64;
inline int64_t codebook_row_bytes(int bits) { return bits <= 4 ? 32 : 64; }  // per panel row
inline int64_t codebook_packed_bytes(int bits, int64_t k, int64_t n) {
  return (n + codebook_panel - 1) / codebook_panel * k * codebook_row_bytes(bits);
}

// Packs idx (k × n row-major, values < 2^bits; row stride ld) into codebook panels at dst.
void codebook_pack(int bits, const uint8_t* idx, int64_t k, int64_t n, int64_t ld, uint8_t* dst);

// C[m × n] = A[m × k] · codebook[B] (+ bias[j]) over the panels [p0, p1) of B. Each result is
// Σ_k fma(a, w) in k order from 0 (then + bias, one rounding): every ISA gives the twin's bits.
struct codebook_product {
  int64_t m = 0, n = 0, k = 0;
  const float* a = nullptr;
  int64_t lda = 0;
  const uint8_t* b = nullptr;  // codebook panels
  int bits = 4;                // 2..8
  const float* codebook = nullptr;  // 2^bits values
  const float* bias = nullptr;      // n values, or null
  float* c = nullptr;
  int64_t ldc = 0;
};
void codebook_gemm_panels(const codebook_product& p, int64_t p0, int64_t p1);

}  // namespace brgemm
