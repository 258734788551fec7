// The element-wise functions of brgemm.h: each call goes to the active ISA's array kernel
// (the VNNI and BF16 levels use AVX-512's); the backward pass too (relu and relu6 vectorised,
// the others the scalar twin's on every ISA).
#include <algorithm>
#include <cmath>
#include <cstring>
#include "brgemm/brgemm.h"
#include "../kernels/ukernels.h"
#include "../kernels/epilogue_twin.h"

namespace brgemm {

void activation_f32(activation a, const float* x, float* y, int64_t n) {
  const isa level = active_isa();
#ifdef BRGEMM_BUILT_AVX512
  if ((int)level >= (int)isa::avx512) return kernels::activation_f32__avx512(a, x, y, n);
#endif
#ifdef BRGEMM_BUILT_AVX2
  if ((int)level >= (int)isa::avx2) return kernels::activation_f32__avx2(a, x, y, n);
#endif
  (void)level;
  kernels::activation_f32__scalar(a, x, y, n);
}

void activation_bf16(activation a, const uint16_t* x, uint16_t* y, int64_t n) {
  const isa level = active_isa();
#ifdef BRGEMM_BUILT_AVX512
  if ((int)level >= (int)isa::avx512) return kernels::activation_bf16__avx512(a, x, y, n);
#endif
#ifdef BRGEMM_BUILT_AVX2
  if ((int)level >= (int)isa::avx2) return kernels::activation_bf16__avx2(a, x, y, n);
#endif
  (void)level;
  kernels::activation_bf16__scalar(a, x, y, n);
}

void activation_backward_f32(activation a, const float* grad_y, const float* x, const float* y, float* grad_x,
                             int64_t n) {
  const isa level = active_isa();
#ifdef BRGEMM_BUILT_AVX512
  if ((int)level >= (int)isa::avx512) return kernels::activation_backward_f32__avx512(a, grad_y, x, y, grad_x, n);
#endif
#ifdef BRGEMM_BUILT_AVX2
  if ((int)level >= (int)isa::avx2) return kernels::activation_backward_f32__avx2(a, grad_y, x, y, grad_x, n);
#endif
  (void)level;
  kernels::activation_backward_f32__scalar(a, grad_y, x, y, grad_x, n);
}

void bf16_to_f32(const uint16_t* x, float* y, int64_t n) {
  const isa level = active_isa();
#ifdef BRGEMM_BUILT_AVX512
  if ((int)level >= (int)isa::avx512) return kernels::bf16_to_f32__avx512(x, y, n);
#endif
#ifdef BRGEMM_BUILT_AVX2
  if ((int)level >= (int)isa::avx2) return kernels::bf16_to_f32__avx2(x, y, n);
#endif
  (void)level;
  kernels::bf16_to_f32__scalar(x, y, n);
}

void f32_to_bf16(const float* x, uint16_t* y, int64_t n) {
  const isa level = active_isa();
#ifdef BRGEMM_BUILT_AVX512
  if ((int)level >= (int)isa::avx512) return kernels::f32_to_bf16__avx512(x, y, n);
#endif
#ifdef BRGEMM_BUILT_AVX2
  if ((int)level >= (int)isa::avx2) return kernels::f32_to_bf16__avx2(x, y, n);
#endif
  (void)level;
  kernels::f32_to_bf16__scalar(x, y, n);
}

void lstm_gates(const lstm_gate_rows& g) {
  const isa level = active_isa();
#ifdef BRGEMM_BUILT_AVX512
  if ((int)level >= (int)isa::avx512) return kernels::lstm_gates__avx512(g);
#endif
#ifdef BRGEMM_BUILT_AVX2
  if ((int)level >= (int)isa::avx2) return kernels::lstm_gates__avx2(g);
#endif
  (void)level;
  kernels::lstm_gates__scalar(g);
}

void gru_gates(const lstm_gate_rows& g, const float* bhn) {
  const isa level = active_isa();
#ifdef BRGEMM_BUILT_AVX512
  if ((int)level >= (int)isa::avx512) return kernels::gru_gates__avx512(g, bhn);
#endif
#ifdef BRGEMM_BUILT_AVX2
  if ((int)level >= (int)isa::avx2) return kernels::gru_gates__avx2(g, bhn);
#endif
  (void)level;
  kernels::gru_gates__scalar(g, bhn);
}

void lstm_gates_backward(const gate_grad_rows& g) {
  const isa level = active_isa();
#ifdef BRGEMM_BUILT_AVX512
  if ((int)level >= (int)isa::avx512) return kernels::lstm_gates_backward__avx512(g);
#endif
#ifdef BRGEMM_BUILT_AVX2
  if ((int)level >= (int)isa::avx2) return kernels::lstm_gates_backward__avx2(g);
#endif
  (void)level;
  kernels::lstm_gates_backward__scalar(g);
}

void gru_gates_backward(const gate_grad_rows& g) {
  const isa level = active_isa();
#ifdef BRGEMM_BUILT_AVX512
  if ((int)level >= (int)isa::avx512) return kernels::gru_gates_backward__avx512(g);
#endif
#ifdef BRGEMM_BUILT_AVX2
  if ((int)level >= (int)isa::avx2) return kernels::gru_gates_backward__avx2(g);
#endif
  (void)level;
  kernels::gru_gates_backward__scalar(g);
}

void column_sums(const float* a, int64_t rows, int64_t ld, int64_t w, double* s) {
  const isa level = active_isa();
#ifdef BRGEMM_BUILT_AVX512
  if ((int)level >= (int)isa::avx512) return kernels::column_sums__avx512(a, rows, ld, w, s);
#endif
#ifdef BRGEMM_BUILT_AVX2
  if ((int)level >= (int)isa::avx2) return kernels::column_sums__avx2(a, rows, ld, w, s);
#endif
  (void)level;
  kernels::column_sums__scalar(a, rows, ld, w, s);
}

// Unbiased rounding: a uniform 16-bit number added below the kept bits, then truncation, rounds
// up with probability (the dropped bits)/2¹⁶. The number is a hash of (seed, position), so the
// result does not depend on how the array is split between threads.
void f32_to_bf16_stochastic(const float* x, uint16_t* y, int64_t n, uint64_t seed, uint64_t first) {
  for (int64_t i = 0; i < n; ++i) {
    uint32_t bits;
    std::memcpy(&bits, &x[i], 4);
    if ((bits & 0x7fffffffu) > 0x7f800000u) {  // NaN: kept, made quiet
      y[i] = (uint16_t)((bits >> 16) | 0x40);
      continue;
    }
    uint64_t h = seed + (first + (uint64_t)i) * 0x9e3779b97f4a7c15ull;  // splitmix64
    h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ull;
    h = (h ^ (h >> 27)) * 0x94d049bb133111ebull;
    h ^= h >> 31;
    const uint32_t r = bits + (uint32_t)(h & 0xffff);
    // Past the largest finite bf16 the sum can reach infinity's bits, as rounding up does.
    y[i] = (uint16_t)(r >> 16);
  }
}

void dropout(const float* x, float* y, int64_t n, double p, uint64_t seed, uint64_t first) {
  const isa level = active_isa();
  dropout_key k;
  const double t = std::nearbyint(p * 4294967296.0);
  k.threshold = t <= 0.0 ? 0u : t >= 4294967295.0 ? 0xFFFFFFFFu : (uint32_t)t;
  k.scale = p >= 1.0 ? 0.0f : 1.0f / (float)(1.0 - p);  // PyTorch's factor; p = 1: x·0
  for (int64_t i = 0; i < n;) {
    // A run of positions that share their high 32 bits: one key, counters that do not wrap.
    const uint64_t at = first + (uint64_t)i;
    const int64_t len = (int64_t)std::min<uint64_t>((uint64_t)(n - i), (uint64_t(1) << 32) - (at & 0xFFFFFFFFu));
    uint64_t h = seed + (at >> 32) * 0x9e3779b97f4a7c15ull;  // splitmix64 of (seed, high bits)
    h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ull;
    h = (h ^ (h >> 27)) * 0x94d049bb133111ebull;
    h ^= h >> 31;
    k.lo = (uint32_t)at, k.k0 = (uint32_t)h, k.k1 = (uint32_t)(h >> 32);
#ifdef BRGEMM_BUILT_AVX512
    if ((int)level >= (int)isa::avx512) kernels::dropout__avx512(k, x + i, y + i, len);
    else
#endif
#ifdef BRGEMM_BUILT_AVX2
    if ((int)level >= (int)isa::avx2) kernels::dropout__avx2(k, x + i, y + i, len);
    else
#endif
      kernels::dropout__scalar(k, x + i, y + i, len);
    i += len;
  }
  (void)level;
}

bool activation_backward_needs_x(activation a) {
  return a == activation::gelu || a == activation::swish || a == activation::kgelu || a == activation::kswish;
}

}  // namespace brgemm
