// Dropout's mask (brgemm.h's dropout) one value at a time: the scalar twin that the AVX2 and
// AVX-512 kernels match bit for bit. Value i is kept when a counter-based hash of its position
// is at least the threshold, so the mask depends only on (seed, position): any split of the
// array between threads, and the backward pass, see the same one.
// Static, so each ISA translation unit keeps its own copy (see batch_block.h).
#pragma once
#include <cstdint>
#include "brgemm/brgemm.h"

// The hash: two rounds of Wellons' "lowbias32" 32-bit integer mix (from his hash-prospector
// search: two xor-shift-multiply steps and a final xor-shift), keyed before each round.
static inline uint32_t brgemm_lowbias32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}
static inline uint32_t brgemm_dropout_bits(const brgemm::dropout_key& k, uint32_t counter) {
  return brgemm_lowbias32(brgemm_lowbias32(counter ^ k.k0) ^ k.k1);
}

// y[i] = x[i] · (kept ? scale : 0), counters k.lo + i (they do not wrap: dropout() splits there).
static inline void brgemm_dropout_twin(const brgemm::dropout_key& k, const float* x, float* y, int64_t i0, int64_t n) {
  for (int64_t i = i0; i < n; ++i)
    y[i] = x[i] * (brgemm_dropout_bits(k, k.lo + (uint32_t)i) >= k.threshold ? k.scale : 0.0f);
}
