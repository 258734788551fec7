// AVX-512 DFP-16 conversions (brgemm/dfp.h), 16 floats a step, the tail by the scalar twin
// (../dfp_twin.h), whose bits they give: the largest |x| as integer bits (vpandd, vpmaxud), the
// two exact scalings, a clamp to ±32767, vcvtps2dq (nearest-even under the default MXCSR, as
// nearbyint) and vpmovdw; back by vpmovsxwd, vcvtdq2ps and the scalings.
#include <immintrin.h>
#include "../ukernels.h"
#include "../dfp_twin.h"

namespace brgemm::kernels {

uint32_t dfp_absmax_bits__avx512(const float* x, int64_t n) {
  const __m512i abs = _mm512_set1_epi32(0x7FFFFFFF);
  __m512i best0 = _mm512_setzero_si512(), best1 = best0;
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {  // two chains: vpmaxud's latency
    best0 = _mm512_max_epu32(best0, _mm512_and_si512(_mm512_loadu_si512(x + i), abs));
    best1 = _mm512_max_epu32(best1, _mm512_and_si512(_mm512_loadu_si512(x + i + 16), abs));
  }
  if (i + 16 <= n) {
    best0 = _mm512_max_epu32(best0, _mm512_and_si512(_mm512_loadu_si512(x + i), abs));
    i += 16;
  }
  const uint32_t best = _mm512_reduce_max_epu32(_mm512_max_epu32(best0, best1));
  return brgemm_dfp_absmax_twin(x + i, n - i, best);
}

void dfp_quantize__avx512(const float* x, int16_t* m, int64_t n, float s1, float s2) {
  const __m512 v1 = _mm512_set1_ps(s1), v2 = _mm512_set1_ps(s2);
  const __m512 hi = _mm512_set1_ps(32767.0f), lo = _mm512_set1_ps(-32767.0f);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    // Clamped before the conversion (the same as after it: the bounds are integers), so that no
    // value is out of vcvtps2dq's range.
    const __m512 v = _mm512_mul_ps(_mm512_mul_ps(_mm512_loadu_ps(x + i), v1), v2);
    const __m512i q = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_max_ps(v, lo), hi));
    _mm256_storeu_si256((__m256i*)(m + i), _mm512_cvtepi32_epi16(q));
  }
  brgemm_dfp_quantize_twin(x + i, m + i, n - i, s1, s2);
}

void dfp_dequantize__avx512(const int16_t* m, float* y, int64_t n, float s1, float s2) {
  const __m512 v1 = _mm512_set1_ps(s1), v2 = _mm512_set1_ps(s2);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_cvtepi32_ps(_mm512_cvtepi16_epi32(_mm256_loadu_si256((const __m256i*)(m + i))));
    _mm512_storeu_ps(y + i, _mm512_mul_ps(_mm512_mul_ps(v, v1), v2));
  }
  brgemm_dfp_dequantize_twin(m + i, y + i, n - i, s1, s2);
}

void dfp_scale__avx512(float* y, int64_t n, float s) {
  const __m512 v = _mm512_set1_ps(s);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, _mm512_mul_ps(_mm512_loadu_ps(y + i), v));
  brgemm_dfp_scale_twin(y + i, n - i, s);
}

// The twin's order (../dfp_twin.h): per 8 lanes, one vector of double squares added to that
// chunk's lane sums and to the pixel's partial sums p (lane l's square in p's element l mod 8;
// lanes past `lanes` load as 0 and add +0, which changes nothing).
void dfp_slice_norms__avx512(const float* x, int64_t cols, int64_t lanes, double* pixel2, double* row2) {
  const int64_t chunks = (lanes + 7) / 8;
  __m512d lane[8];
  for (int q = 0; q < 8; ++q) lane[q] = _mm512_setzero_pd();
  double best = *pixel2;
  for (int64_t c = 0; c < cols; ++c) {
    __m512d p = _mm512_setzero_pd();
    for (int64_t q = 0; q < chunks; ++q) {
      const int64_t left = lanes - 8 * q;
      const __mmask8 k = left >= 8 ? (__mmask8)0xFF : (__mmask8)((1u << left) - 1u);
      const __m512d v = _mm512_cvtps_pd(_mm256_maskz_loadu_ps(k, x + c * lanes + 8 * q));
      const __m512d sq = _mm512_mul_pd(v, v);
      p = _mm512_add_pd(p, sq);
      lane[q] = _mm512_add_pd(lane[q], sq);
    }
    alignas(64) double part[8];
    _mm512_store_pd(part, p);
    const double s = brgemm_dfp_tree8(part);
    best = s > best ? s : best;
  }
  *pixel2 = best;
  __m512d m = _mm512_set1_pd(*row2);
  for (int64_t q = 0; q < chunks; ++q) m = _mm512_max_pd(m, lane[q]);  // the unused lanes hold 0
  *row2 = _mm512_reduce_max_pd(m);
}

}  // namespace brgemm::kernels
