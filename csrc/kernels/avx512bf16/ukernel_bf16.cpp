// AVX-512 BF16 bf16 microkernels (A bf16 × B bf16 packed VNNI-2 → f32): an MR × NR tile of C
// lives in MR·NR/16 zmm accumulators for the whole batch. Per pair of k: NR/16 zmm loads of B
// (16 columns × 2 k = 32 bf16 each), and per row one 32-bit broadcast of A's pair, then
// vdpbf16ps (acc += a[k]·b[k] + a[k+1]·b[k+1], the bf16 products exact in f32).
// Odd K: the last pair's A is one bf16 zero-extended (A is never read past its k columns; B's
// padding row is zero). Zeroing, prefetch, the beta / masked store of C and the edge-tile
// instances (M by smaller MR, N by a mask on the last vector) are the zmm skeleton's
// (../avx512/tile.h).
#include "../avx512/tile.h"  // the zmm skeleton, compiled here with this level's flags

namespace brgemm::kernels {
namespace avx512bf16_bf16 {

// A's pair (a[0], a[1]) in every 32-bit lane. A copy through memcpy: A holds uint16s.
static inline __m512bh broadcast_pair(const uint16_t* a) {
  int32_t x;
  __builtin_memcpy(&x, a, sizeof x);
  return (__m512bh)_mm512_set1_epi32(x);
}
// (a[0], 0): the odd-K tail, one element read.
static inline __m512bh broadcast_single(const uint16_t* a) { return (__m512bh)_mm512_set1_epi32((int32_t)*a); }

struct kloop {
  using ta = uint16_t;
  using tb = uint16_t;
  using acc = __m512;
  const int64_t K, pairs, lda, ldb2;  // per tile: loop-invariant registers of the k-loop
  explicit kloop(const ukernel_args& p) : K(p.k), pairs(p.k / 2), lda(p.lda), ldb2(2 * p.ldb) {}

  template <int MR, int NV>
  BRGEMM_KLOOP void run(const uint16_t* a, const uint16_t* b, __mmask16 last, __m512 (&c)[MR][NV]) const {
#pragma GCC unroll 2
    for (int64_t kk = 0; kk < pairs; ++kk) {
      __m512bh bv[NV];
#pragma GCC unroll 8
      for (int v = 0; v < NV - 1; ++v) bv[v] = (__m512bh)_mm512_loadu_si512(b + 32 * v);
      bv[NV - 1] = (__m512bh)_mm512_maskz_loadu_epi32(last, b + 32 * (NV - 1));
#pragma GCC unroll 32
      for (int m = 0; m < MR; ++m) {
        const __m512bh am = broadcast_pair(a + m * lda);
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) c[m][v] = _mm512_dpbf16_ps(c[m][v], am, bv[v]);
      }
      a += 2;
      b += ldb2;
    }
    if (K & 1) {  // the last packed row: B's second element is the packer's zero
      __m512bh bv[NV];
#pragma GCC unroll 8
      for (int v = 0; v < NV - 1; ++v) bv[v] = (__m512bh)_mm512_loadu_si512(b + 32 * v);
      bv[NV - 1] = (__m512bh)_mm512_maskz_loadu_epi32(last, b + 32 * (NV - 1));
#pragma GCC unroll 32
      for (int m = 0; m < MR; ++m) {
        const __m512bh am = broadcast_single(a + m * lda);
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) c[m][v] = _mm512_dpbf16_ps(c[m][v], am, bv[v]);
      }
    }
  }
};

}  // namespace avx512bf16_bf16

void ukernel_bf16_f32_6x64c2__avx512bf16(const ukernel_args& p) { zmm::pick<avx512bf16_bf16::kloop, 6, 4>(p); }
void ukernel_bf16_f32_12x32c2__avx512bf16(const ukernel_args& p) { zmm::pick<avx512bf16_bf16::kloop, 12, 2>(p); }

}  // namespace brgemm::kernels
