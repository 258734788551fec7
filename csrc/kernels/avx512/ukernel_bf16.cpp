// AVX-512 bf16 microkernels for CPUs without AVX512_BF16: bf16 widened to f32 (exact: a bf16
// is the top half of an f32) and multiplied with f32 FMAs.
//
// A: per batch element, MR rows × up to KC columns of A are widened once into a small f32
// buffer on the stack, so that the inner loop broadcasts A straight from memory (no ALU work
// per A element). B: a 32-bit lane of packed B holds the pair (k, k+1) of one column; k is
// x << 16, k+1 is x & 0xFFFF0000. Per pair of k: NR/16 loads of B, 2·NR/16 conversions and
// 2·MR·NR/16 FMAs, in MR·NR/16 + 2·NR/16 + 2 zmm (accumulators, both halves of B, an A
// broadcast and the mask: 30 for both tiles below, no spills in the inner loop).
// Odd K: the last pair reads one A element and skips the (zero) second half of B.
// Zeroing, prefetch, the beta / masked store of C and the edge-tile instances (M by smaller
// MR, N by a mask on the last vector) are the zmm skeleton's (tile.h).
//
// Tiles: 5×64 first: on Zen 4 the conversions run beside the FMAs and it reaches the f32 FMA
// peak (half the vdpbf16ps peak: the most a widening kernel can do). 12×32 spends fewer
// conversions per FMA (1/12 against 1/5), for CPUs where they compete with the FMAs.
#include "tile.h"

namespace brgemm::kernels {
namespace avx512_bf16w {

constexpr int KC = 128;  // columns of A widened per chunk: even, a multiple of 16

// buf[m][j] = A[m][j] as f32 for m < MR, j < kc (kc ≤ KC); reads exactly those elements.
template <int MR>
static void widen_a(const uint16_t* a, int64_t lda, int kc, float (*buf)[KC]) {
  const __mmask16 tail = (__mmask16)((1u << (kc % 16)) - 1u);
#pragma GCC unroll 32
  for (int m = 0; m < MR; ++m) {
    const uint16_t* row = a + m * lda;
    int j = 0;
    for (; j + 16 <= kc; j += 16)
      _mm512_store_si512(buf[m] + j, _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)(row + j))), 16));
    if (j < kc)
      _mm512_store_si512(buf[m] + j, _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(tail, row + j)), 16));
  }
}

struct kloop {
  using ta = uint16_t;
  using tb = uint16_t;
  using acc = __m512;
  const int64_t K, lda, ldb2;  // per tile: loop-invariant registers of the k-loop
  const __m512i hi;
  explicit kloop(const ukernel_args& p)
      : K(p.k), lda(p.lda), ldb2(2 * p.ldb), hi(_mm512_set1_epi32((int32_t)0xFFFF0000u)) {}

  template <int MR, int NV>
  BRGEMM_KLOOP void run(const uint16_t* a, const uint16_t* b, __mmask16 last, __m512 (&c)[MR][NV]) const {
    alignas(64) float buf[MR][KC];
    for (int64_t k0 = 0; k0 < K; k0 += KC) {
      const int kc = (int)(K - k0 < KC ? K - k0 : KC);
      widen_a<MR>(a + k0, lda, kc, buf);
      for (int j = 0; j + 1 < kc; j += 2) {
        __m512 lo[NV], up[NV];
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) {
          const __m512i x = v < NV - 1 ? _mm512_loadu_si512(b + 32 * v) : _mm512_maskz_loadu_epi32(last, b + 32 * v);
          lo[v] = _mm512_castsi512_ps(_mm512_slli_epi32(x, 16));
          up[v] = _mm512_castsi512_ps(_mm512_and_si512(x, hi));
        }
#pragma GCC unroll 32
        for (int m = 0; m < MR; ++m) {
          const __m512 a0 = _mm512_set1_ps(buf[m][j]), a1 = _mm512_set1_ps(buf[m][j + 1]);
#pragma GCC unroll 8
          for (int v = 0; v < NV; ++v) c[m][v] = _mm512_fmadd_ps(a0, lo[v], c[m][v]);
#pragma GCC unroll 8
          for (int v = 0; v < NV; ++v) c[m][v] = _mm512_fmadd_ps(a1, up[v], c[m][v]);
        }
        b += ldb2;
      }
      if (kc & 1) {  // the last packed row (K odd): only its first element is real
        __m512 lo[NV];
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) {
          const __m512i x = v < NV - 1 ? _mm512_loadu_si512(b + 32 * v) : _mm512_maskz_loadu_epi32(last, b + 32 * v);
          lo[v] = _mm512_castsi512_ps(_mm512_slli_epi32(x, 16));
        }
#pragma GCC unroll 32
        for (int m = 0; m < MR; ++m) {
          const __m512 am = _mm512_set1_ps(buf[m][kc - 1]);
#pragma GCC unroll 8
          for (int v = 0; v < NV; ++v) c[m][v] = _mm512_fmadd_ps(am, lo[v], c[m][v]);
        }
      }
    }
  }
};

}  // namespace avx512_bf16w

void ukernel_bf16_f32_5x64c2__avx512(const ukernel_args& p) { zmm::pick<avx512_bf16w::kloop, 5, 4>(p); }
void ukernel_bf16_f32_12x32c2__avx512(const ukernel_args& p) { zmm::pick<avx512_bf16w::kloop, 12, 2>(p); }

}  // namespace brgemm::kernels
