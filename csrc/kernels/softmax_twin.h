// The softmax family of brgemm.h (one row at a time) as scalar code: the twin that every ISA's
// vector version matches bit for bit, and the scalar ISA's kernel (ref/softmax.cpp).
//
// Bit-identity holds because every step is an IEEE operation the vector code does in the same
// order on the same lane: products are added by fused multiply-adds written out (std::fma here,
// the FMA instructions there; nothing else is contracted: -ffp-contract=off), and each row sum
// is the fixed-order sum below. On Zen 4 the FMAs matter: e^z as separate mul + add kept the
// add pipes busy for ~19 cycles per 16 values, FMAs move that work to the multiply pipes.
// (Below AVX2 std::fma is a libm call: the scalar ISA is the slow fallback.)
// Static, so each ISA translation unit keeps its own copy.
#pragma once
#include <cmath>
#include <cstdint>
#include <type_traits>
#include "epilogue_twin.h"  // brgemm_bf16_rne, brgemm_from_bits

namespace brgemm_softmax {

// --- e^z for z ≤ 0 -----------------------------------------------------------------------
// z = n·ln2 + r with n = round(z·log2 e) (|r| ≤ ln2/2), ln2 split in two (Cody–Waite), e^r as
// 1 + r + r²·Q(r) by Horner (6 fused multiply-adds), Q of degree 4 fitted by us for the
// relative error of e^r on [−ln2/2, ln2/2] (float coefficients: ≤ 0.07·2^-24), then 2^n added
// into the exponent field. Accuracy: see brgemm.h (measured over every float in [−87, 0]).
// Below −87 the result is +0 (e^-87 ≈ 1.6e-38: from there up p·2^n is a normal float, so the
// exponent add is exact); z = −inf gives +0. z must not be NaN (the rows check for NaN first).
constexpr float exp_log2e = 1.44269504088896341f;
constexpr float exp_ln2_hi = 0.693359375f;     // 355/512: n·ln2_hi is exact for |n| < 2^15
constexpr float exp_ln2_lo = -2.12194440e-4f;  // ln2 − ln2_hi
constexpr float exp_round = 12582912.0f;       // 1.5·2^23: adding it rounds to an integer (ties to even)
constexpr float exp_cut = -87.0f;
constexpr int exp_degree = 6;
constexpr float exp_c[exp_degree + 1] = {0.0013814608f, 0.008368711f, 0.04166839f, 0.16666521f,
                                         0.49999994f,   1.0f,         1.0f};

static inline float exp_le0(float z) {
  const float zc = exp_cut > z ? exp_cut : z;
  const float t = std::fma(zc, exp_log2e, exp_round);
  const float n = t - exp_round;
  float r = std::fma(-n, exp_ln2_hi, zc);
  r = std::fma(-n, exp_ln2_lo, r);
  float p = exp_c[0];
  for (int i = 1; i <= exp_degree; ++i) p = std::fma(p, r, exp_c[i]);
  // t's low bits hold n ∈ [−126, 0]: bits(t) << 23 is n << 23 (1.5·2^23's own bits shift out).
  const float v = brgemm_from_bits(brgemm_bits(p) + (brgemm_bits(t) << 23));
  return z < exp_cut ? 0.0f : v;
}

// --- P_n(z) = Σ_{i≤n} z^i/i! by Horner ---------------------------------------------------
constexpr int max_order = 16;
struct taylor_coefficients {
  float c[max_order + 1];
};
static constexpr taylor_coefficients taylor = [] {
  taylor_coefficients t{};
  double f = 1.0;
  for (int i = 0; i <= max_order; ++i) {
    if (i > 0) f *= i;
    t.c[i] = (float)(1.0 / f);
  }
  return t;
}();

template <int N>
static inline float taylor_poly(float z) {
  float p = taylor.c[N];
  for (int i = N - 1; i >= 0; --i) p = std::fma(p, z, taylor.c[i]);
  return p;
}

// --- The row sum ------------------------------------------------------------------------
// 16 float lanes (value j of the row goes to lane j mod 16, added in order) over blocks of
// sum_block values; at the end of each block the lanes are widened and added into 16 double
// lanes, and the row's sum is d[0] + d[1] + … + d[15] in double. Error: ≤ (sum_block/16 + 1)·eps32
// relative on a sum of non-negative terms, whatever the row length.
constexpr int64_t lanes = 16;
constexpr int64_t sum_block = 1024;

struct row_sum {
  float f[lanes] = {};
  double d[lanes] = {};
  void flush() {
    for (int l = 0; l < lanes; ++l) {
      d[l] += (double)f[l];
      f[l] = 0.0f;
    }
  }
  double total() const {
    double s = 0.0;
    for (int l = 0; l < lanes; ++l) s += d[l];
    return s;
  }
};

// Adds v (value j of the row); flushes at block ends.
static inline void add(row_sum& s, int64_t j, float v) {
  s.f[j % lanes] += v;
  if ((j + 1) % sum_block == 0) s.flush();
}

// Adds a·b (value j), one rounding: lane = fma(a, b, lane).
static inline void add_product(row_sum& s, int64_t j, float a, float b) {
  s.f[j % lanes] = std::fma(a, b, s.f[j % lanes]);
  if ((j + 1) % sum_block == 0) s.flush();
}

// --- Values in and out ---------------------------------------------------------------------
static inline float load(const float* p, int64_t j) { return p[j]; }
static inline float load(const uint16_t* p, int64_t j) { return brgemm_from_bits((uint32_t)p[j] << 16); }
static inline void store(float* p, int64_t j, float v) { p[j] = v; }
static inline void store(uint16_t* p, int64_t j, float v) { p[j] = brgemm_bf16_rne(v); }

// The max that every version computes: x replaces m when x > m (NaN skipped); *nan tells
// whether the row holds a NaN.
template <class T>
static inline float row_max(const T* x, int64_t n, bool* nan) {
  float m = -INFINITY;
  bool any = false;
  for (int64_t j = 0; j < n; ++j) {
    const float v = load(x, j);
    m = v > m ? v : m;
    any = any || v != v;
  }
  *nan = any;
  return m;
}

// A row with a NaN, or without a finite maximum (+inf somewhere, or only −inf), is NaN: the
// quiet NaN's bits (0x7FC00000; bf16 0x7FC0), the same on every ISA.
static inline bool nan_row(bool nan, float m) { return nan || m == INFINITY || m == -INFINITY; }
template <class T>
static inline void fill_nan(T* y, int64_t n) {
  for (int64_t j = 0; j < n; ++j) store(y, j, brgemm_from_bits(0x7FC00000u));
}

// Forward. Exact: e_j = e^(x_j − max) into e (y itself for f32, a float workspace for bf16),
// then y_j = e_j·(1/Σe) with the reciprocal rounded to float once. Taylor: P_N(x_j) computed
// again in the second pass (the vector kernels store it for orders above 4: the same bits).
template <int N, class T>
static void forward(const T* x, T* y, float* e, int64_t n) {
  float m = 0.0f;
  if (N == 0) {
    bool nan;
    m = row_max(x, n, &nan);
    if (nan_row(nan, m)) return fill_nan(y, n);
  }
  row_sum s;
  for (int64_t j = 0; j < n; ++j) {
    const float v = N == 0 ? exp_le0(load(x, j) - m) : taylor_poly<N>(load(x, j));
    if (N == 0) e[j] = v;
    add(s, j, v);
  }
  s.flush();
  const float inv = (float)(1.0 / s.total());
  for (int64_t j = 0; j < n; ++j) store(y, j, (N == 0 ? e[j] : taylor_poly<N>(load(x, j))) * inv);
}

// Backward, exact, from y: gx_j = y_j·(g_j − d), d = Σ g·y (the row sum's lanes take each
// product by a fused multiply-add).
template <class T>
static void backward_exact(const T* y, const T* g, T* gx, int64_t n) {
  row_sum s;
  for (int64_t j = 0; j < n; ++j) add_product(s, j, load(g, j), load(y, j));
  s.flush();
  const float d = (float)s.total();
  for (int64_t j = 0; j < n; ++j) store(gx, j, load(y, j) * (load(g, j) - d));
}

// Backward, Taylor, from x alone: with S = Σ P_N(x) and d = Σ g·P_N(x) / S (= ⟨g, y⟩),
// gx_j = (P_{N−1}(x_j)·(1/S))·(g_j − d).
template <int N, class T>
static void backward_taylor(const T* x, const T* g, T* gx, int64_t n) {
  row_sum s, t;
  for (int64_t j = 0; j < n; ++j) {
    const float p = taylor_poly<N>(load(x, j));
    add(s, j, p);
    add_product(t, j, load(g, j), p);
  }
  s.flush();
  t.flush();
  const double sum = s.total();
  const float inv = (float)(1.0 / sum), d = (float)(t.total() / sum);
  for (int64_t j = 0; j < n; ++j) store(gx, j, (taylor_poly<N - 1>(load(x, j)) * inv) * (load(g, j) - d));
}

// order (0 = exact, even 2..16) → the template instance.
template <class F>
static inline void by_order(int order, F&& f) {
  switch (order) {
    case 0: return f(std::integral_constant<int, 0>{});
    case 2: return f(std::integral_constant<int, 2>{});
    case 4: return f(std::integral_constant<int, 4>{});
    case 6: return f(std::integral_constant<int, 6>{});
    case 8: return f(std::integral_constant<int, 8>{});
    case 10: return f(std::integral_constant<int, 10>{});
    case 12: return f(std::integral_constant<int, 12>{});
    case 14: return f(std::integral_constant<int, 14>{});
    default: return f(std::integral_constant<int, 16>{});
  }
}

}  // namespace brgemm_softmax

// The four entry points of ukernels.h for one ISA file (ISA: its suffix), from the kernels that
// file defines in its unnamed namespace (forward<N>, backward_exact, backward_taylor<N>): the
// order dispatch is written once, each file compiles it with its own flags.
#define BRGEMM_SOFTMAX_ENTRY_POINTS(ISA)                                                                          \
  void softmax_f32__##ISA(int order, const float* x, float* y, int64_t n) {                                      \
    brgemm_softmax::by_order(order, [&](auto o) { forward<o.value>(x, y, y, n); });                            \
  }                                                                                                               \
  void softmax_bf16__##ISA(int order, const uint16_t* x, uint16_t* y, int64_t n, float* work) {                  \
    brgemm_softmax::by_order(order, [&](auto o) { forward<o.value>(x, y, work, n); });                         \
  }                                                                                                               \
  void softmax_backward_f32__##ISA(int order, const float* x, const float* y, const float* g, float* gx,        \
                                   int64_t rows, int64_t n) {                                                    \
    if (order == 0) return backward_exact_rows(y, g, gx, rows, n);                                               \
    brgemm_softmax::by_order(order, [&](auto o) {                                                               \
      if constexpr (o.value > 0) backward_taylor_rows<o.value>(x, g, gx, rows, n);                              \
    });                                                                                                           \
  }                                                                                                               \
  void softmax_backward_bf16__##ISA(int order, const uint16_t* x, const uint16_t* y, const uint16_t* g,         \
                                    uint16_t* gx, int64_t rows, int64_t n) {                                     \
    if (order == 0) return backward_exact_rows(y, g, gx, rows, n);                                               \
    brgemm_softmax::by_order(order, [&](auto o) {                                                               \
      if constexpr (o.value > 0) backward_taylor_rows<o.value>(x, g, gx, rows, n);                              \
    });                                                                                                           \
  }

// For the files whose backward kernels go row by row (inside their unnamed namespace, after
// backward_exact and backward_taylor): the row loops the entry points above call.
#define BRGEMM_SOFTMAX_ROW_BY_ROW                                                                   \
  template <class T>                                                                                \
  void backward_exact_rows(const T* y, const T* g, T* gx, int64_t rows, int64_t n) {                \
    for (int64_t r = 0; r < rows; ++r) backward_exact(y + r * n, g + r * n, gx + r * n, n);          \
  }                                                                                                 \
  template <int N, class T>                                                                         \
  void backward_taylor_rows(const T* x, const T* g, T* gx, int64_t rows, int64_t n) {               \
    for (int64_t r = 0; r < rows; ++r) backward_taylor<N>(x + r * n, g + r * n, gx + r * n, n);      \
  }
