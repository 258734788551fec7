// Per-lane statistics and transforms over rows of lanes (csrc/core/norm.cpp dispatches to the
// per-ISA kernels csrc/kernels/<isa>/norm.cpp; the scalar twin is csrc/kernels/norm_twin.h): the
// element-wise work of a normalisation, on the active ISA. Nothing here knows what a layer or a
// channel is: an array is `rows` rows of `width` lanes, and every function works lane by lane.
//
// Lane l of row r is x[r·width + l] (f32, or bf16 bits). Lanes [lanes, width) are padding: the
// element-wise functions write exactly 0 there whatever the inputs hold; the sums computed for
// them are not meant to be used.
//
// Results are bit-identical on every ISA: each lane's sums are accumulated in double over the
// rows in order (each operation rounded once, a product added with one fused multiply-add
// (std::fma in the twin), lanes never mixed), and the element-wise formulas are f32 operations
// in the order written, no fused multiply-add (the kernels are compiled with -ffp-contract=off).
// A caller that splits rows between threads and adds the parts in a fixed order therefore gets
// results that do not depend on the thread count.
#pragma once
#include <cstdint>

namespace brgemm {

constexpr int64_t lane_width_max = 64;

struct lane_rows {
  int64_t rows = 0;   // ≥ 0
  int64_t width = 0;  // 1 ≤ width ≤ lane_width_max
  int64_t lanes = 0;  // real lanes, 0 ≤ lanes ≤ width
  bool bf16 = false;  // the arrays of values (x, r, y, dy, g) are bf16 bits, else f32
};

// sum[l] += Σ_r (x[r][l] − shift[l]), and sumsq[l] += Σ_r (x[r][l] − shift[l])² unless sumsq
// is null: x widened to double, d = x − shift rounded once, then s = s + d and q = fma(d, d, q)
// (double), the rows in order. shift, sum, sumsq: `width` values.
void lane_moments(const lane_rows& g, const void* x, const double* shift, double* sum, double* sumsq);

// y = act(((x − mean)·scale + shift) + r) per lane in f32, in this order; r optional (null: no
// term), act = ReLU (max(0, v); NaN stays NaN) when relu, else none. y has the values' type
// (bf16: rounded to nearest even). mean, scale, shift: `width` floats.
struct lane_affine_args {
  const void* x = nullptr;
  const void* r = nullptr;
  void* y = nullptr;
  const float *mean = nullptr, *scale = nullptr, *shift = nullptr;
  bool relu = false;
};
void lane_affine(const lane_rows& g, const lane_affine_args& a);

// The backward pass of lane_affine, in two functions over the same arguments. Both read
//   g = dy·[y > 0]  (y not null: the ReLU mask, g = 0 where y ≤ 0 or NaN, whatever dy holds)
//   g = dy          (y null)
// lane_grad_moments: sum[l] += Σ_r g, dot[l] += Σ_r g·(x − mean_d[l]) in double as
//   lane_moments does (dot = fma(g, x − mean_d, dot)); when g_out is not null it also writes
//   g there, in the values' type: dy's bits or +0.
// lane_grad_affine: dx = ((a·g) + (c·(x − mean))) + d per lane in f32, in this order; dx is
//   f32, or bf16 when dx_bf16 (rounded to nearest even).
struct lane_grad_args {
  const void* dy = nullptr;
  const void* y = nullptr;
  const void* x = nullptr;
  const double* mean_d = nullptr;  // lane_grad_moments
  double *sum = nullptr, *dot = nullptr;
  void* g_out = nullptr;
  const float *mean = nullptr, *a = nullptr, *c = nullptr, *d = nullptr;  // lane_grad_affine
  void* dx = nullptr;
  bool dx_bf16 = false;
};
void lane_grad_moments(const lane_rows& g, const lane_grad_args& a);
void lane_grad_affine(const lane_rows& g, const lane_grad_args& a);

}  // namespace brgemm
