// Dynamic fixed point, 16 bits (DFP-16; Das et al., "Mixed Precision Training of CNNs using
// Integer Operations", ICLR 2018): a tensor is int16 mantissas m with one shared exponent e,
// value = m·2^e. From float, with P = 16 bits: e = E(max|f|) − (P − 2), E(x) = ⌊log2 x⌋, so
// that max|f|·2^−e < 2^15; m = f·2^−e rounded to nearest even and clamped to ±32767 (a value
// that rounds up to 2^15 becomes 32767; −32768 is never produced, so −m always exists). An
// all-zero tensor has e = 0. Products multiply mantissas (the s16s16 BRGEMM) and add exponents.
// Each conversion runs the active ISA's kernels (csrc/kernels/<isa>/dfp.cpp), which give the
// scalar twin's bits (csrc/kernels/dfp_twin.h).
#pragma once
#include <cstdint>

namespace brgemm {

// The largest |x| as float bits (≥ 0x7F800000: x holds an inf or a NaN).
uint32_t dfp16_absmax_bits(const float* x, int64_t n);
// e for a tensor whose largest |x| has these bits (finite); 0 for an all-zero tensor.
int32_t dfp16_exponent_of(uint32_t absmax_bits);
// m = clamp(round(x·2^−e), ±32767) for finite x, and back: y = m·2^e (exact unless it underflows).
void f32_to_dfp16(const float* x, int16_t* m, int64_t n, int32_t e);
void dfp16_to_f32(const int16_t* m, float* y, int64_t n, int32_t e);
// y ← y·2^e in place, one thread (the product driver scales each block of C while it is in cache).
void dfp16_scale_f32(float* y, int64_t n, int32_t e);

// Of `cols` pixels of `lanes` (1..64) float32 values (a row of a blocked tensor): the largest
// squared norm of a pixel's lanes and of a lane along the row, raised into *pixel2 and *row2, in
// double and in one summation order on every ISA (the DFP-16 convolution's overflow bounds).
void dfp16_slice_norms(const float* x, int64_t cols, int64_t lanes, double* pixel2, double* row2);

}  // namespace brgemm
