// The DFP-16 conversions of brgemm/dfp.h: the active ISA's kernels (the VNNI and BF16 levels use
// AVX-512's), threaded over slices of the array for large tensors.
#include <algorithm>
#include <cmath>
#include "brgemm/brgemm.h"
#include "brgemm/dfp.h"
#include "../kernels/ukernels.h"

namespace brgemm {

namespace {

using absmax_fn = uint32_t (*)(const float*, int64_t);
using quantize_fn = void (*)(const float*, int16_t*, int64_t, float, float);
using dequantize_fn = void (*)(const int16_t*, float*, int64_t, float, float);
using scale_fn = void (*)(float*, int64_t, float);
using norms_fn = void (*)(const float*, int64_t, int64_t, double*, double*);

struct dfp_kernels {
  absmax_fn absmax = kernels::dfp_absmax_bits__scalar;
  quantize_fn quantize = kernels::dfp_quantize__scalar;
  dequantize_fn dequantize = kernels::dfp_dequantize__scalar;
  scale_fn scale = kernels::dfp_scale__scalar;
  norms_fn norms = kernels::dfp_slice_norms__scalar;
};

dfp_kernels active_kernels() {
  dfp_kernels k;
  const isa level = active_isa();
#ifdef BRGEMM_BUILT_AVX512
  if ((int)level >= (int)isa::avx512)
    return {kernels::dfp_absmax_bits__avx512, kernels::dfp_quantize__avx512, kernels::dfp_dequantize__avx512,
            kernels::dfp_scale__avx512, kernels::dfp_slice_norms__avx512};
#endif
#ifdef BRGEMM_BUILT_AVX2
  if ((int)level >= (int)isa::avx2)
    return {kernels::dfp_absmax_bits__avx2, kernels::dfp_quantize__avx2, kernels::dfp_dequantize__avx2,
            kernels::dfp_scale__avx2, kernels::dfp_slice_norms__avx2};
#endif
  (void)level;
  return k;
}

// 2^e as two factors, each a normal float for any e of a finite float's tensor (|e| ≤ 164), so
// that x·s1·s2 is exactly x·2^e unless the result itself leaves the float range.
void split_power(int32_t e, float* s1, float* s2) {
  const int32_t h = e / 2;
  *s1 = std::ldexp(1.0f, h);
  *s2 = std::ldexp(1.0f, e - h);
}

constexpr int64_t slice = 1 << 16;  // elements per thread's slice: below it, one thread

template <typename Body>
void over_slices(int64_t n, Body body) {
  const int64_t slices = (n + slice - 1) / slice;
  if (slices <= 1) return body(0, n);
#pragma omp parallel for num_threads(std::min<int64_t>(num_threads(), slices)) schedule(static) if (num_threads() > 1)
  for (int64_t s = 0; s < slices; ++s) body(s * slice, std::min(n, (s + 1) * slice) - s * slice);
}

}  // namespace

uint32_t dfp16_absmax_bits(const float* x, int64_t n) {
  const absmax_fn f = active_kernels().absmax;
  const int64_t slices = (n + slice - 1) / slice;
  if (slices <= 1) return f(x, n);
  uint32_t best = 0;
#pragma omp parallel for num_threads(std::min<int64_t>(num_threads(), slices)) schedule(static) reduction(max : best)
  for (int64_t s = 0; s < slices; ++s) best = std::max(best, f(x + s * slice, std::min(n, (s + 1) * slice) - s * slice));
  return best;
}

int32_t dfp16_exponent_of(uint32_t bits) {
  if (bits == 0) return 0;
  const int32_t field = (int32_t)(bits >> 23);
  // ⌊log2 max|f|⌋: the exponent field of a normal float, the top set bit of a subnormal's mantissa
  const int32_t e_max = field > 0 ? field - 127 : (31 - __builtin_clz(bits)) - 149;
  return e_max - 14;  // P − 2, P = 16
}

void f32_to_dfp16(const float* x, int16_t* m, int64_t n, int32_t e) {
  float s1, s2;
  split_power(-e, &s1, &s2);
  const quantize_fn f = active_kernels().quantize;
  over_slices(n, [&](int64_t i, int64_t len) { f(x + i, m + i, len, s1, s2); });
}

void dfp16_to_f32(const int16_t* m, float* y, int64_t n, int32_t e) {
  float s1, s2;
  split_power(e, &s1, &s2);
  const dequantize_fn f = active_kernels().dequantize;
  over_slices(n, [&](int64_t i, int64_t len) { f(m + i, y + i, len, s1, s2); });
}

void dfp16_scale_f32(float* y, int64_t n, int32_t e) {
  const scale_fn f = active_kernels().scale;
  if (e >= -126 && e <= 127) return f(y, n, std::ldexp(1.0f, e));
  float s1, s2;  // 2^e itself is not a normal float: two exact steps
  split_power(e, &s1, &s2);
  f(y, n, s1);
  f(y, n, s2);
}

void dfp16_slice_norms(const float* x, int64_t cols, int64_t lanes, double* pixel2, double* row2) {
  active_kernels().norms(x, cols, lanes, pixel2, row2);
}

}  // namespace brgemm
