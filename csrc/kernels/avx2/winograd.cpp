// The Winograd transforms (brgemm/winograd.h) with AVX2: 8 channels of a block per vector, the
// twin's code (winograd_twin.h) on ymm registers; lanes past the last 8 go through the twin.
#include <immintrin.h>
#include "../ukernels.h"
#include "../winograd_twin.h"

namespace brgemm::kernels {

namespace {

struct ymm_ops {
  using V = __m256;
  static constexpr int width = 8;
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static V zero() { return _mm256_setzero_ps(); }
  static V set(float c) { return _mm256_set1_ps(c); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static V sub(V a, V b) { return _mm256_sub_ps(a, b); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static V max(V a, V b) { return _mm256_max_ps(a, b); }
  static V min(V a, V b) { return _mm256_min_ps(a, b); }
};

}  // namespace

BRGEMM_WINOGRAD_ENTRY_POINTS(avx2, ymm_ops)

}  // namespace brgemm::kernels
