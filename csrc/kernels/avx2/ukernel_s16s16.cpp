// AVX2 int16 microkernels, the fallback for CPUs without AVX-512 (A s16 × B s16 packed VNNI-2 →
// s32): vpmaddwd multiplies the two s16 pairs of a lane into 32 bits (exact except for
// (-2^15)·(-2^15)·2, which wraps to -2^31, i.e. modulo 2^32) and vpaddd accumulates modulo 2^32:
// the scalar twin's and vpdpwssd's bits. Per pair of k: NR/8 ymm loads of B, per row one 32-bit
// broadcast of A's pair. Odd K: the last pair's A is one int16 zero-extended (A is never read
// past its k columns; B's padding row is zero). Zeroing, prefetch, the store of C and the
// edge-tile instances (M by smaller MR, N by vpmaskmovd on the last vector, plain loads when it
// is full) are the ymm skeleton's (tile.h).
#include "tile.h"

namespace brgemm::kernels {
namespace avx2_s16s16 {

struct kloop {
  using ta = int16_t;
  using tb = int16_t;
  using acc = __m256i;
  const int64_t K, pairs, lda, ldb2;  // per tile: loop-invariant registers of the k-loop
  explicit kloop(const ukernel_args& p) : K(p.k), pairs(p.k / 2), lda(p.lda), ldb2(2 * p.ldb) {}

  template <int MR, int NV, bool FULL, bool TAIL>
  static BRGEMM_KLOOP void step(const int16_t* a, int64_t lda, const int16_t* b, __m256i last, __m256i (&c)[MR][NV]) {
    __m256i bv[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      const __m256i* src = (const __m256i*)(b + 16 * v);
      bv[v] = (v < NV - 1 || FULL) ? _mm256_loadu_si256(src) : _mm256_maskload_epi32((const int*)src, last);
    }
#pragma GCC unroll 32
    for (int m = 0; m < MR; ++m) {
      int32_t x;
      if (TAIL) x = (int32_t)(uint16_t)a[m * lda];
      else __builtin_memcpy(&x, a + m * lda, sizeof x);
      const __m256i am = _mm256_set1_epi32(x);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) c[m][v] = _mm256_add_epi32(c[m][v], _mm256_madd_epi16(am, bv[v]));
    }
  }

  template <int MR, int NV, bool FULL>
  BRGEMM_KLOOP void run(const int16_t* a, const int16_t* b, __m256i last, __m256i (&c)[MR][NV]) const {
#pragma GCC unroll 2
    for (int64_t kk = 0; kk < pairs; ++kk) {
      step<MR, NV, FULL, false>(a, lda, b, last, c);
      a += 2;
      b += ldb2;
    }
    if (K & 1) step<MR, NV, FULL, true>(a, lda, b, last, c);  // the last packed row: B's second element is zero
  }
};

// s16s16f32: the k-loop above into s32 accumulators of its own per batch element, converted to f32
// and added. 3×16: 6 f32 + 6 s32 accumulators + 2 B + the A broadcast + a product.
struct kloop_f32 {
  using ta = int16_t;
  using tb = int16_t;
  using acc = __m256;
  const kloop inner;
  explicit kloop_f32(const ukernel_args& p) : inner(p) {}

  template <int MR, int NV, bool FULL>
  BRGEMM_KLOOP void run(const int16_t* a, const int16_t* b, __m256i last, __m256 (&c)[MR][NV]) const {
    __m256i t[MR][NV];
#pragma GCC unroll 32
    for (int m = 0; m < MR; ++m)
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) t[m][v] = _mm256_setzero_si256();
    inner.template run<MR, NV, FULL>(a, b, last, t);
#pragma GCC unroll 32
    for (int m = 0; m < MR; ++m)
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) c[m][v] = _mm256_add_ps(c[m][v], _mm256_cvtepi32_ps(t[m][v]));
  }
};

}  // namespace avx2_s16s16

void ukernel_s16s16_s32_4x16c2__avx2(const ukernel_args& p) { ymm::pick<avx2_s16s16::kloop, 4, 2>(p); }
void ukernel_s16s16_s32_6x16c2__avx2(const ukernel_args& p) { ymm::pick<avx2_s16s16::kloop, 6, 2>(p); }
void ukernel_s16s16_f32_3x16c2__avx2(const ukernel_args& p) { ymm::pick<avx2_s16s16::kloop_f32, 3, 2>(p); }

}  // namespace brgemm::kernels
