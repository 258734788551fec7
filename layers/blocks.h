// Helpers the layer drivers share: block arithmetic, thread counts, per-thread scratch, and
// the copies that move blocks between layouts (conversions, transposes, VNNI-2 pairs).
#pragma once
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <utility>
#include <vector>
#include "brgemm/brgemm.h"

namespace brgemm::layers {

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// Threads for a product of `flops`: small ones are not worth waking the team.
inline int threads_for(double flops) { return flops < 4e6 ? 1 : num_threads(); }

// A per-thread f32 scratch block that only grows.
inline float* scratch(int slot, int64_t elems) {
  static thread_local std::vector<float> buf[3];
  if ((int64_t)buf[slot].size() < elems) buf[slot].resize((size_t)elems);
  return buf[slot].data();
}

// Grows scratch slot `slot` to `elems` on each of `threads` OpenMP threads: plans call it when
// they are built, so that the first pass of a loop does not allocate either.
inline void reserve_scratch(int threads, std::initializer_list<std::pair<int, int64_t>> sizes) {
#pragma omp parallel num_threads(threads)
  for (const auto& [slot, elems] : sizes) scratch(slot, elems);
}

// Copies `w` values from src (f32 or bf16) to dst (f32 or bf16).
inline void convert(const void* src, bool src_bf16, void* dst, bool dst_bf16, int64_t w) {
  if (src_bf16 == dst_bf16)
    std::memcpy(dst, src, (size_t)(w * (src_bf16 ? 2 : 4)));
  else if (src_bf16)
    bf16_to_f32((const uint16_t*)src, (float*)dst, w);
  else
    f32_to_bf16((const float*)src, (uint16_t*)dst, w);
}

// dst (cols × rows, row stride ld_dst) = srcᵀ (src: rows × cols, row stride ld_src): the core's
// per-ISA transpose (register tiles; the same bytes on every ISA).
template <class T>
inline void transpose(const T* src, int64_t rows, int64_t cols, int64_t ld_src, T* dst, int64_t ld_dst) {
  static_assert(sizeof(T) == 4 || sizeof(T) == 2 || sizeof(T) == 1, "4-, 2- or 1-byte elements");
  transpose_elements(src, rows, cols, ld_src, dst, ld_dst, (int)sizeof(T));
}

// The VNNI-2 form of a row-major block (rows even): rows 2p and 2p+1 interleaved element by
// element into row p (the core's per-ISA copy).
inline void interleave_pairs(const uint16_t* src, int64_t rows, int64_t cols, uint16_t* dst) {
  interleave_pairs_b16(src, rows, cols, dst);
}

inline char* aligned(std::vector<char>& v, int64_t bytes) {
  if ((int64_t)v.size() < bytes + 64) v.resize((size_t)(bytes + 64));
  return (char*)(((uintptr_t)v.data() + 63) & ~(uintptr_t)63);
}

// True when [a, a + n) and [b, b + n) hold the same bytes; compared in parallel chunks.
inline bool same_bytes(const void* a, const void* b, int64_t n) {
  const int threads = n < (int64_t(1) << 20) ? 1 : num_threads();
  std::atomic<bool> same{true};
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t part = 0; part < threads; ++part) {
    const int64_t lo = n * part / threads, hi = n * (part + 1) / threads;
    if (std::memcmp((const char*)a + lo, (const char*)b + lo, (size_t)(hi - lo))) same = false;
  }
  return same;
}

// memcpy in parallel chunks (a training step copies every layer's weights once).
inline void copy_bytes(void* dst, const void* src, int64_t n) {
  const int threads = n < (int64_t(1) << 20) ? 1 : num_threads();
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t part = 0; part < threads; ++part) {
    const int64_t lo = n * part / threads, hi = n * (part + 1) / threads;
    std::memcpy((char*)dst + lo, (const char*)src + lo, (size_t)(hi - lo));
  }
}

// dZ = dY ⊙ act'(·) for the `len` values at offset `at` of blocked dY (f32) and of what forward
// kept: z (the pre-activation, f32) when the derivative needs it, else y (f32, or bf16 widened
// into scratch `slot`). Writes `out` and returns it; with no activation returns dY itself.
inline const float* activation_grad(brgemm::activation act, const float* gy, const void* y, bool y_bf16,
                                    const float* z, int64_t at, int64_t len, float* out, int slot) {
  if (act == brgemm::activation::none) return gy + at;
  const bool from_x = activation_backward_needs_x(act);
  const float* yv = nullptr;
  if (!from_x && y_bf16) {
    float* y32 = scratch(slot, len);
    bf16_to_f32((const uint16_t*)y + at, y32, len);
    yv = y32;
  } else if (!from_x) {
    yv = (const float*)y + at;
  }
  activation_backward_f32(act, gy + at, from_x ? z + at : nullptr, yv, out, len);
  return out;
}

}  // namespace brgemm::layers
