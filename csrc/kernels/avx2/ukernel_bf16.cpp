// AVX2+FMA bf16 microkernel: the fallback for CPUs without AVX-512. bf16 is widened to f32
// (exact: a bf16 is the top half of an f32) and multiplied with f32 FMAs, as in
// ../avx512/ukernel_bf16.cpp but with ymm.
//
// A: per batch element, MR rows × up to KC columns of A are widened once into a small f32
// buffer on the stack, so that the inner loop broadcasts A straight from memory. B: a 32-bit
// lane of packed B holds the pair (k, k+1) of one column; k is x << 16, k+1 is x with its low
// 16 bits zeroed (vpblendw with zero: no mask constant to keep in a register). Per pair, k for
// every row and then k+1 for every row, so that 16 ymm hold MR·NR/8 accumulators, NR/8 B
// vectors and an A broadcast: 5×16 is the largest tile gcc allocates without spilling.
// Odd K: the last pair reads one A element and skips the (zero) second half of B.
// Zeroing, prefetch, the beta / masked store of C and the edge-tile instances (M by smaller
// MR, N by vpmaskmovd on the last vector, plain loads when it is full) are the ymm skeleton's
// (tile.h).
#include "tile.h"

namespace brgemm::kernels {
namespace avx2_bf16w {

constexpr int KC = 128;  // columns of A widened per chunk: even, a multiple of 8

// buf[m][j] = A[m][j] as f32 for m < MR, j < kc (kc ≤ KC); reads exactly those elements.
template <int MR>
static void widen_a(const uint16_t* a, int64_t lda, int kc, float (*buf)[KC]) {
#pragma GCC unroll 32
  for (int m = 0; m < MR; ++m) {
    const uint16_t* row = a + m * lda;
    int j = 0;
    for (; j + 8 <= kc; j += 8)
      _mm256_store_si256((__m256i*)(buf[m] + j),
                         _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)(row + j))), 16));
    for (; j < kc; ++j) {
      const uint32_t u = (uint32_t)row[j] << 16;
      __builtin_memcpy(&buf[m][j], &u, sizeof u);
    }
  }
}

struct kloop {
  using ta = uint16_t;
  using tb = uint16_t;
  using acc = __m256;
  const int64_t K, lda, ldb2;  // per tile: loop-invariant registers of the k-loop
  const __m256i zero;
  explicit kloop(const ukernel_args& p) : K(p.k), lda(p.lda), ldb2(2 * p.ldb), zero(_mm256_setzero_si256()) {}

  template <int MR, int NV, bool FULL>
  BRGEMM_KLOOP void run(const uint16_t* a, const uint16_t* b, __m256i last, __m256 (&c)[MR][NV]) const {
    alignas(32) float buf[MR][KC];
    auto load_b = [&](const uint16_t* b, int v) {
      const __m256i* src = (const __m256i*)(b + 16 * v);
      return (v < NV - 1 || FULL) ? _mm256_loadu_si256(src) : _mm256_maskload_epi32((const int*)src, last);
    };
    for (int64_t k0 = 0; k0 < K; k0 += KC) {
      const int kc = (int)(K - k0 < KC ? K - k0 : KC);
      widen_a<MR>(a + k0, lda, kc, buf);
      for (int j = 0; j + 1 < kc; j += 2) {
        // k for every row, then k+1 for every row: NR/8 widened B vectors live at a time.
        __m256 bv[NV];
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) bv[v] = _mm256_castsi256_ps(_mm256_slli_epi32(load_b(b, v), 16));
#pragma GCC unroll 32
        for (int m = 0; m < MR; ++m) {
          const __m256 am = _mm256_broadcast_ss(&buf[m][j]);
#pragma GCC unroll 8
          for (int v = 0; v < NV; ++v) c[m][v] = _mm256_fmadd_ps(am, bv[v], c[m][v]);
        }
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) bv[v] = _mm256_castsi256_ps(_mm256_blend_epi16(zero, load_b(b, v), 0xAA));
#pragma GCC unroll 32
        for (int m = 0; m < MR; ++m) {
          const __m256 am = _mm256_broadcast_ss(&buf[m][j + 1]);
#pragma GCC unroll 8
          for (int v = 0; v < NV; ++v) c[m][v] = _mm256_fmadd_ps(am, bv[v], c[m][v]);
        }
        b += ldb2;
      }
      if (kc & 1) {  // the last packed row (K odd): only its first element is real
        __m256 lo[NV];
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) lo[v] = _mm256_castsi256_ps(_mm256_slli_epi32(load_b(b, v), 16));
#pragma GCC unroll 32
        for (int m = 0; m < MR; ++m) {
          const __m256 am = _mm256_broadcast_ss(&buf[m][kc - 1]);
#pragma GCC unroll 8
          for (int v = 0; v < NV; ++v) c[m][v] = _mm256_fmadd_ps(am, lo[v], c[m][v]);
        }
      }
    }
  }
};

}  // namespace avx2_bf16w

void ukernel_bf16_f32_5x16c2__avx2(const ukernel_args& p) { ymm::pick<avx2_bf16w::kloop, 5, 2>(p); }

}  // namespace brgemm::kernels
