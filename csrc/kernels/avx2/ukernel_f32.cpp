// AVX2+FMA microkernels with f32 activations: the fallback for CPUs without AVX-512. Same
// scheme as the AVX-512 ones with ymm registers (16 of them: 12 accumulators, 2 B vectors,
// 1 broadcast); f16 weights are widened with F16C. Only the k-loop is here; zeroing, prefetch,
// the beta / masked store of C and the edge-tile instances are the ymm skeleton's (tile.h).
#include "tile.h"

namespace brgemm::kernels {
namespace avx2_f32 {

// 8 columns of B as f32: all of them, or (partial) the first n, the rest zero.
static inline __m256 load_b(const float* b, __m256i mask, bool partial) {
  return partial ? _mm256_maskload_ps(b, mask) : _mm256_loadu_ps(b);
}
static inline __m256 load_b(const uint16_t* b, __m256i mask, bool partial) {
  if (!partial) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)b));
  alignas(16) uint16_t part[8];  // no masked 16-bit load in AVX2: gather the columns that exist
  int lanes[8];
  _mm256_storeu_si256((__m256i*)lanes, mask);
  for (int j = 0; j < 8; ++j) part[j] = lanes[j] ? b[j] : 0;
  return _mm256_cvtph_ps(_mm_load_si128((const __m128i*)part));
}

// B as f32 (TB = float) or IEEE half (TB = uint16_t).
template <typename TB>
struct kloop {
  using ta = float;
  using tb = TB;
  using acc = __m256;
  const int64_t K, lda, ldb;  // per tile: loop-invariant registers of the k-loop
  explicit kloop(const ukernel_args& p) : K(p.k), lda(p.lda), ldb(p.ldb) {}

  template <int MR, int NV, bool FULL>
  BRGEMM_KLOOP void run(const float* a, const TB* b, __m256i last, __m256 (&c)[MR][NV]) const {
#pragma GCC unroll 2
    for (int64_t k = 0; k < K; ++k) {
      if constexpr (MR <= 2) {
        // Few rows: B streams once and the loop is bound by its latency; fetch ahead.
#pragma GCC unroll 8
        for (int v = 0; v < NV; v += 64 / (8 * (int)sizeof(TB)))
          _mm_prefetch((const char*)(b + 8 * ldb + 8 * v), _MM_HINT_T0);
      }
      __m256 bv[NV];
#pragma GCC unroll 8
      for (int v = 0; v < NV - 1; ++v) bv[v] = load_b(b + 8 * v, last, false);
      bv[NV - 1] = load_b(b + 8 * (NV - 1), last, !FULL);
#pragma GCC unroll 32
      for (int m = 0; m < MR; ++m) {
        const __m256 am = _mm256_broadcast_ss(a + m * lda);
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) c[m][v] = _mm256_fmadd_ps(am, bv[v], c[m][v]);
      }
      a += 1;
      b += ldb;
    }
  }
};

}  // namespace avx2_f32

void ukernel_f32_6x16__avx2(const ukernel_args& p) { ymm::pick<avx2_f32::kloop<float>, 6, 2>(p); }
void ukernel_f32f16_6x16__avx2(const ukernel_args& p) { ymm::pick<avx2_f32::kloop<uint16_t>, 6, 2>(p); }

}  // namespace brgemm::kernels
