// Declarations of every microkernel and peak loop, generated from the .inc lists. Included by
// the ISA translation units (to define them) and by csrc/core (to put them in the table).
#pragma once
#include "brgemm/brgemm.h"
#include "brgemm/codebook.h"
#include "brgemm/ternary.h"
#include "brgemm/window.h"
#include "brgemm/winograd.h"

namespace brgemm::kernels {

#define BRGEMM_UKERNEL_F32(MR, NR, ISA) void ukernel_f32_##MR##x##NR##__##ISA(const ukernel_args& p);
#include "ukernels_f32.inc"
#undef BRGEMM_UKERNEL_F32
#define BRGEMM_UKERNEL_BF16(MR, NR, SUFFIX, LEVEL) \
  void ukernel_bf16_f32_##MR##x##NR##c2__##SUFFIX(const ukernel_args& p);
#include "ukernels_bf16.inc"
#undef BRGEMM_UKERNEL_BF16
#define BRGEMM_UKERNEL_U8S8(MR, NR, SUFFIX, LEVEL)                          \
  void ukernel_u8s8_s32_##MR##x##NR##c4__##SUFFIX(const ukernel_args& p); \
  void ukernel_s8s8_s32_##MR##x##NR##c4__##SUFFIX(const ukernel_args& p);
#include "ukernels_u8s8.inc"
#undef BRGEMM_UKERNEL_U8S8
#define BRGEMM_UKERNEL_F32F16(MR, NR, ISA) void ukernel_f32f16_##MR##x##NR##__##ISA(const ukernel_args& p);
#include "ukernels_f32f16.inc"
#undef BRGEMM_UKERNEL_F32F16
#define BRGEMM_UKERNEL_S16S16(MR, NR, SUFFIX, LEVEL) \
  void ukernel_s16s16_s32_##MR##x##NR##c2__##SUFFIX(const ukernel_args& p);
#include "ukernels_s16s16.inc"
#undef BRGEMM_UKERNEL_S16S16
#define BRGEMM_UKERNEL_S16S16F32(MR, NR, SUFFIX, LEVEL) \
  void ukernel_s16s16_f32_##MR##x##NR##c2__##SUFFIX(const ukernel_args& p);
#include "ukernels_s16s16f32.inc"
#undef BRGEMM_UKERNEL_S16S16F32

// The epilogue (brgemm.h) per ISA: scalar is the twin; the VNNI and BF16 levels use avx512's.
void epilogue__scalar(const epilogue_desc& d, dtype t, const epilogue_tile& tile);
void epilogue__avx2(const epilogue_desc& d, dtype t, const epilogue_tile& tile);
void epilogue__avx512(const epilogue_desc& d, dtype t, const epilogue_tile& tile);

// The element-wise functions (brgemm.h) over arrays, per ISA; the VNNI and BF16 levels use
// avx512's. The backward pass: relu and relu6 (masks, bandwidth-bound) per ISA, the rest scalar.
void activation_f32__scalar(activation a, const float* x, float* y, int64_t n);
void activation_f32__avx2(activation a, const float* x, float* y, int64_t n);
void activation_f32__avx512(activation a, const float* x, float* y, int64_t n);
void activation_bf16__scalar(activation a, const uint16_t* x, uint16_t* y, int64_t n);
void activation_bf16__avx2(activation a, const uint16_t* x, uint16_t* y, int64_t n);
void activation_bf16__avx512(activation a, const uint16_t* x, uint16_t* y, int64_t n);
// f32 → bf16 (round to nearest even, NaN quieted) and back: the same bits on every ISA.
void f32_to_bf16__scalar(const float* x, uint16_t* y, int64_t n);
void f32_to_bf16__avx2(const float* x, uint16_t* y, int64_t n);
void f32_to_bf16__avx512(const float* x, uint16_t* y, int64_t n);
void bf16_to_f32__scalar(const uint16_t* x, float* y, int64_t n);
void bf16_to_f32__avx2(const uint16_t* x, float* y, int64_t n);
void bf16_to_f32__avx512(const uint16_t* x, float* y, int64_t n);
void activation_backward_f32__avx2(activation a, const float* g, const float* x, const float* y, float* out, int64_t n);
void activation_backward_f32__avx512(activation a, const float* g, const float* x, const float* y, float* out,
                                     int64_t n);
void activation_backward_f32__scalar(activation a, const float* g, const float* x, const float* y, float* out,
                                     int64_t n);

// The recurrent gates (brgemm.h) per ISA; the VNNI and BF16 levels use avx512's.
void lstm_gates__scalar(const lstm_gate_rows& g);
void lstm_gates__avx2(const lstm_gate_rows& g);
void lstm_gates__avx512(const lstm_gate_rows& g);
void gru_gates__scalar(const lstm_gate_rows& g, const float* bhn);
void gru_gates__avx2(const lstm_gate_rows& g, const float* bhn);
void gru_gates__avx512(const lstm_gate_rows& g, const float* bhn);
void lstm_gates_backward__scalar(const gate_grad_rows& g);
void lstm_gates_backward__avx2(const gate_grad_rows& g);
void lstm_gates_backward__avx512(const gate_grad_rows& g);
void gru_gates_backward__scalar(const gate_grad_rows& g);
void gru_gates_backward__avx2(const gate_grad_rows& g);
void gru_gates_backward__avx512(const gate_grad_rows& g);
void column_sums__scalar(const float* a, int64_t rows, int64_t ld, int64_t w, double* s);
void column_sums__avx2(const float* a, int64_t rows, int64_t ld, int64_t w, double* s);
void column_sums__avx512(const float* a, int64_t rows, int64_t ld, int64_t w, double* s);

// Dropout's mask and scale (brgemm.h) per ISA; the VNNI and BF16 levels use avx512's.
void dropout__scalar(const dropout_key& k, const float* x, float* y, int64_t n);
void dropout__avx2(const dropout_key& k, const float* x, float* y, int64_t n);
void dropout__avx512(const dropout_key& k, const float* x, float* y, int64_t n);

// The softmax family (brgemm.h) on one row, per ISA; the VNNI and BF16 levels use avx512's.
#define BRGEMM_SOFTMAX_KERNELS(ISA)                                                                       \
  void softmax_f32__##ISA(int order, const float* x, float* y, int64_t n);                                \
  void softmax_bf16__##ISA(int order, const uint16_t* x, uint16_t* y, int64_t n, float* work);            \
  void softmax_backward_f32__##ISA(int order, const float* x, const float* y, const float* g, float* gx,  \
                                   int64_t rows, int64_t n);                                              \
  void softmax_backward_bf16__##ISA(int order, const uint16_t* x, const uint16_t* y, const uint16_t* g,  \
                                    uint16_t* gx, int64_t rows, int64_t n);
BRGEMM_SOFTMAX_KERNELS(scalar)
BRGEMM_SOFTMAX_KERNELS(avx2)
BRGEMM_SOFTMAX_KERNELS(avx512)
#undef BRGEMM_SOFTMAX_KERNELS

// The reductions of brgemm/window.h per ISA; the VNNI and BF16 levels use avx512's.
#define BRGEMM_WINDOW_KERNELS(ISA)                                                                          \
  void window_max_f32__##ISA(const window_rows& g, const float* x, float* y);                               \
  void window_max_bf16__##ISA(const window_rows& g, const uint16_t* x, uint16_t* y);                        \
  void window_max_u8__##ISA(const window_rows& g, const uint8_t* x, uint8_t* y);                            \
  void window_max_backward_f32__##ISA(const window_rows& g, const float* x, const float* gy, float* gx);    \
  void window_max_backward_bf16__##ISA(const window_rows& g, const uint16_t* x, const float* gy, float* gx); \
  void vector_mean_f32__##ISA(const float* x, int64_t count, int64_t len, int64_t out_len, float* y);       \
  void vector_mean_bf16__##ISA(const uint16_t* x, int64_t count, int64_t len, int64_t out_len, uint16_t* y); \
  void vector_mean_u8__##ISA(const uint8_t* x, int64_t count, int64_t len, int64_t out_len, float scale,      \
                             int32_t zero_point, float* y);                                                  \
  void vector_mean_backward_f32__##ISA(const float* g, int64_t in_len, int64_t count, int64_t len, float* y);
BRGEMM_WINDOW_KERNELS(scalar)
BRGEMM_WINDOW_KERNELS(avx2)
BRGEMM_WINDOW_KERNELS(avx512)
#undef BRGEMM_WINDOW_KERNELS

// The Winograd transforms (brgemm/winograd.h) per ISA; the VNNI and BF16 levels use avx512's.
#define BRGEMM_WINOGRAD_KERNELS(ISA)                                            \
  void winograd_input_f32__##ISA(int m, const winograd_input_args& a);          \
  void winograd_output_f32__##ISA(int m, const winograd_output_args& a);
BRGEMM_WINOGRAD_KERNELS(scalar)
BRGEMM_WINOGRAD_KERNELS(avx2)
BRGEMM_WINOGRAD_KERNELS(avx512)
#undef BRGEMM_WINOGRAD_KERNELS

// The DFP-16 conversions (brgemm/dfp.h) per ISA; the VNNI and BF16 levels use avx512's.
#define BRGEMM_DFP_KERNELS(ISA)                                                           \
  uint32_t dfp_absmax_bits__##ISA(const float* x, int64_t n);                             \
  void dfp_quantize__##ISA(const float* x, int16_t* m, int64_t n, float s1, float s2);     \
  void dfp_dequantize__##ISA(const int16_t* m, float* y, int64_t n, float s1, float s2); \
  void dfp_scale__##ISA(float* y, int64_t n, float s);                                    \
  void dfp_slice_norms__##ISA(const float* x, int64_t cols, int64_t lanes, double* pixel2, double* row2);
BRGEMM_DFP_KERNELS(scalar)
BRGEMM_DFP_KERNELS(avx2)
BRGEMM_DFP_KERNELS(avx512)
#undef BRGEMM_DFP_KERNELS

// The transposes (brgemm.h's transpose_elements) per element size and ISA, and the VNNI-2 pairs
// (interleave_pairs_b16); the VNNI and BF16
// levels use avx512's.
#define BRGEMM_TRANSPOSE_KERNELS(ISA)                                                                         \
  void transpose_b32__##ISA(const uint32_t* src, int64_t rows, int64_t cols, int64_t ld_src, uint32_t* dst,   \
                            int64_t ld_dst);                                                                  \
  void transpose_b16__##ISA(const uint16_t* src, int64_t rows, int64_t cols, int64_t ld_src, uint16_t* dst,   \
                            int64_t ld_dst);                                                                  \
  void transpose_b8__##ISA(const uint8_t* src, int64_t rows, int64_t cols, int64_t ld_src, uint8_t* dst,      \
                           int64_t ld_dst);                                                                  \
  void interleave_pairs_b16__##ISA(const uint16_t* src, int64_t rows, int64_t cols, uint16_t* dst);
BRGEMM_TRANSPOSE_KERNELS(scalar)
BRGEMM_TRANSPOSE_KERNELS(avx2)
BRGEMM_TRANSPOSE_KERNELS(avx512)
#undef BRGEMM_TRANSPOSE_KERNELS

// Register-only loops for `python -m brgemm peak`: run `iters` iterations, return the
// floating-point (or integer) operations performed.
double peak_fma_f32__avx2(int64_t iters);
double peak_fma_f32__avx512(int64_t iters);
double peak_dot_u8s8__avx512vnni(int64_t iters);
double peak_dot_bf16__avx512bf16(int64_t iters);
double peak_dot_s16s16__avx2(int64_t iters);
double peak_dot_s16s16__avx512(int64_t iters);
double peak_dot_s16s16__avx512vnni(int64_t iters);

// The shared-weight products of brgemm/codebook.h per ISA; the VNNI and BF16 levels use avx512's.
void codebook_gemm__scalar(const codebook_product& p, int64_t p0, int64_t p1);
void codebook_gemm__avx2(const codebook_product& p, int64_t p0, int64_t p1);
void codebook_gemm__avx512(const codebook_product& p, int64_t p0, int64_t p1);
// The ternary products of brgemm/ternary.h per ISA; the BF16 level uses avx512vnni's.
void ternary_gemm__scalar(const ternary_product& p, int64_t p0, int64_t p1);
void ternary_gemm__avx2(const ternary_product& p, int64_t p0, int64_t p1);
void ternary_gemm__avx512(const ternary_product& p, int64_t p0, int64_t p1);
void ternary_gemm__avx512vnni(const ternary_product& p, int64_t p0, int64_t p1);

}  // namespace brgemm::kernels
