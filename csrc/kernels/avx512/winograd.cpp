// The Winograd transforms (brgemm/winograd.h) with AVX-512: 16 channels of a block per vector,
// the twin's code (winograd_twin.h) on zmm registers; a block of fewer than 16 lanes goes
// through the twin itself.
#include <immintrin.h>
#include "../ukernels.h"
#include "../winograd_twin.h"

namespace brgemm::kernels {

namespace {

struct zmm_ops {
  using V = __m512;
  static constexpr int width = 16;
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static V zero() { return _mm512_setzero_ps(); }
  static V set(float c) { return _mm512_set1_ps(c); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static V sub(V a, V b) { return _mm512_sub_ps(a, b); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static V max(V a, V b) { return _mm512_max_ps(a, b); }
  static V min(V a, V b) { return _mm512_min_ps(a, b); }
};

}  // namespace

BRGEMM_WINOGRAD_ENTRY_POINTS(avx512, zmm_ops)

}  // namespace brgemm::kernels
