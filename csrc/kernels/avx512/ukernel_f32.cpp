// AVX-512 microkernels with f32 activations: an MR × NR tile of C lives in MR·NR/16 zmm
// accumulators for the whole batch; per k, NR/16 vectors of B are loaded (f32, or IEEE half
// widened with vcvtph2ps for f16 weights) and each A element is broadcast.
// Only the k-loop is here; zeroing, prefetch, the beta / masked store of C and the edge-tile
// instances are the zmm skeleton's (tile.h).
#include "tile.h"

namespace brgemm::kernels {
namespace avx512_f32 {

// 16 columns of B as f32, lanes outside `mask` zero.
static inline __m512 load_b(const float* b, __mmask16 mask) { return _mm512_maskz_loadu_ps(mask, b); }
static inline __m512 load_b(const uint16_t* b, __mmask16 mask) {
  return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, b));
}

// B as f32 (TB = float) or IEEE half (TB = uint16_t).
template <typename TB>
struct kloop {
  using ta = float;
  using tb = TB;
  using acc = __m512;
  const int64_t K, lda, ldb;  // per tile: loop-invariant registers of the k-loop
  explicit kloop(const ukernel_args& p) : K(p.k), lda(p.lda), ldb(p.ldb) {}

  template <int MR, int NV>
  BRGEMM_KLOOP void run(const float* a, const TB* b, __mmask16 last, __m512 (&c)[MR][NV]) const {
#pragma GCC unroll 2
    for (int64_t k = 0; k < K; ++k) {
      if constexpr (MR <= 2) {
        // Few rows: B streams once and the loop is bound by its latency; fetch ahead.
#pragma GCC unroll 8
        for (int v = 0; v < NV; v += 64 / (16 * (int)sizeof(TB)))
          _mm_prefetch((const char*)(b + 8 * ldb + 16 * v), _MM_HINT_T0);
      }
      __m512 bv[NV];
#pragma GCC unroll 8
      for (int v = 0; v < NV - 1; ++v) bv[v] = load_b(b + 16 * v, (__mmask16)0xFFFF);
      bv[NV - 1] = load_b(b + 16 * (NV - 1), last);
#pragma GCC unroll 32
      for (int m = 0; m < MR; ++m) {
        const __m512 am = _mm512_set1_ps(a[m * lda]);
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) c[m][v] = _mm512_fmadd_ps(am, bv[v], c[m][v]);
      }
      a += 1;
      b += ldb;
    }
  }
};

}  // namespace avx512_f32

void ukernel_f32_6x64__avx512(const ukernel_args& p) { zmm::pick<avx512_f32::kloop<float>, 6, 4>(p); }
void ukernel_f32_8x48__avx512(const ukernel_args& p) { zmm::pick<avx512_f32::kloop<float>, 8, 3>(p); }
void ukernel_f32_14x32__avx512(const ukernel_args& p) { zmm::pick<avx512_f32::kloop<float>, 14, 2>(p); }
void ukernel_f32f16_6x64__avx512(const ukernel_args& p) { zmm::pick<avx512_f32::kloop<uint16_t>, 6, 4>(p); }

}  // namespace brgemm::kernels
