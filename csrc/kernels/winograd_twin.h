// The Winograd transforms of brgemm/winograd.h written once over a vector type: the scalar
// twin (scalar_ops, ref/winograd.cpp) and every ISA's vector version (avx2/, avx512/) are this
// code instantiated with that ISA's operations, so each lane goes through the same IEEE
// operations in the same order and the results are the twin's bits (-ffp-contract=off keeps
// the products and sums apart; the lanes past the last whole vector go through scalar_ops).
//
// A row of a table is applied as a sum over its nonzero entries in column order, starting from
// the first positive one (no negation), ±1 as an add or a subtract, any other c as the product
// by |c| then an add or a subtract; F(4×4)'s rows share their common terms instead (bt4, at4).
// In an unnamed namespace, so each ISA translation unit keeps its own copy.
#pragma once
#include <cstdint>
#include "brgemm/winograd.h"

namespace brgemm_winograd {
namespace {  // each ISA's translation unit its own copy: no linker merging across flags

using brgemm::activation;

struct scalar_ops {
  using V = float;
  static constexpr int width = 1;
  static V load(const float* p) { return *p; }
  static void store(float* p, V v) { *p = v; }
  static V zero() { return 0.0f; }
  static V set(float c) { return c; }
  static V add(V a, V b) { return a + b; }
  static V sub(V a, V b) { return a - b; }
  static V mul(V a, V b) { return a * b; }
  static V max(V a, V b) { return a > b ? a : b; }  // as maxps: the second operand when unordered
  static V min(V a, V b) { return a < b ? a : b; }
};

template <int M>
struct tables;
template <>
struct tables<2> {
  static constexpr const float (&bt)[4][4] = brgemm::winograd_bt2;
  static constexpr const float (&at)[2][4] = brgemm::winograd_at2;
};
template <>
struct tables<4> {
  static constexpr const float (&bt)[6][6] = brgemm::winograd_bt4;
  static constexpr const float (&at)[4][6] = brgemm::winograd_at4;
};

template <>
struct tables<6> {
  static constexpr const float (&bt)[8][8] = brgemm::winograd_bt6;
  static constexpr const float (&at)[6][8] = brgemm::winograd_at6;
};

// y[i·ys] = Σ_j t[i][j]·x[j·xs] for i < R (see above for the order).
template <class O, int R, int C>
static inline __attribute__((always_inline)) void apply(const float (&t)[R][C], const typename O::V* x, int xs,
                                                        typename O::V* y, int ys) {
  using V = typename O::V;
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i) {
    int first = -1;
#pragma GCC unroll 8
    for (int j = 0; j < C; ++j)
      if (first < 0 && t[i][j] > 0.0f) first = j;
    V acc = O::zero();
    if (first >= 0) acc = t[i][first] == 1.0f ? x[first * xs] : O::mul(x[first * xs], O::set(t[i][first]));
#pragma GCC unroll 8
    for (int j = 0; j < C; ++j) {
      const float c = t[i][j];
      if (j == first || c == 0.0f) continue;
      const float ac = c < 0.0f ? -c : c;
      const V term = ac == 1.0f ? x[j * xs] : O::mul(x[j * xs], O::set(ac));
      acc = c < 0.0f ? O::sub(acc, term) : O::add(acc, term);
    }
    y[i * ys] = acc;
  }
}

// Bᵀ and Aᵀ of F(4×4) with their common terms shared (the rows of Bᵀ pair up as b ∓ 4a,
// e ± 4c, f ± 2g; those of Aᵀ as sums and differences of (m1, m2) and (m3, m4)): about 30 % fewer
// operations than the rows one by one. Each output is still a sum of the same terms with the
// same coefficient magnitudes, in a fixed order (the error bound is the one above).
template <class O>
static inline __attribute__((always_inline)) void bt4(const typename O::V* x, int xs, typename O::V* y, int ys) {
  using V = typename O::V;
  const V x0 = x[0], x1 = x[xs], x2 = x[2 * xs], x3 = x[3 * xs], x4 = x[4 * xs], x5 = x[5 * xs];
  const V four = O::set(4.0f), five = O::set(5.0f), two = O::set(2.0f);
  const V a = O::add(x1, x2), b = O::add(x3, x4), c = O::sub(x1, x2), e = O::sub(x4, x3);
  const V f = O::sub(x4, x2), g = O::mul(O::sub(x3, x1), two);
  y[0] = O::add(O::sub(O::mul(x0, four), O::mul(x2, five)), x4);
  y[ys] = O::sub(b, O::mul(a, four));
  y[2 * ys] = O::add(e, O::mul(c, four));
  y[3 * ys] = O::add(f, g);
  y[4 * ys] = O::sub(f, g);
  y[5 * ys] = O::add(O::sub(O::mul(x1, four), O::mul(x3, five)), x5);
}
template <class O>
static inline __attribute__((always_inline)) void at4(const typename O::V* x, int xs, typename O::V* y, int ys) {
  using V = typename O::V;
  const V s12 = O::add(x[xs], x[2 * xs]), d12 = O::sub(x[xs], x[2 * xs]);
  const V s34 = O::add(x[3 * xs], x[4 * xs]), d34 = O::sub(x[3 * xs], x[4 * xs]);
  y[0] = O::add(O::add(x[0], s12), s34);
  y[ys] = O::add(d12, O::mul(d34, O::set(2.0f)));
  y[2 * ys] = O::add(s12, O::mul(s34, O::set(4.0f)));
  y[3 * ys] = O::add(O::add(d12, O::mul(d34, O::set(8.0f))), x[5 * xs]);
}
template <int M, class O>
static inline __attribute__((always_inline)) void bt(const typename O::V* x, int xs, typename O::V* y, int ys) {
  if constexpr (M == 4) bt4<O>(x, xs, y, ys);
  else apply<O>(tables<M>::bt, x, xs, y, ys);
}
template <int M, class O>
static inline __attribute__((always_inline)) void at(const typename O::V* x, int xs, typename O::V* y, int ys) {
  if constexpr (M == 4) at4<O>(x, xs, y, ys);
  else apply<O>(tables<M>::at, x, xs, y, ys);
}

// One tile, lanes [l, l + O::width) of every block.
template <int M, class O>
static inline void input_lanes(const brgemm::winograd_input_args& g, int64_t l) {
  using V = typename O::V;
  constexpr int A = M + 2;
  const bool inside = g.y0 >= 0 && g.x0 >= 0 && g.y0 + A <= g.h && g.x0 + A <= g.w;
  for (int64_t b = 0; b < g.blocks; ++b) {
    const float* src = g.src + b * g.src_block + l;
    V d[A][A], t[A][A];
    if (inside) {
      for (int i = 0; i < A; ++i)
        for (int j = 0; j < A; ++j) d[i][j] = O::load(src + ((g.y0 + i) * g.w + g.x0 + j) * g.lanes);
      // The next tile along the row reads M new columns: ask for them now (the loads above wait
      // on memory otherwise; the image streams through once).
      if (l == 0 && g.x0 + A + M <= g.w)
        for (int i = 0; i < A; ++i) {
          const char* p = (const char*)(src + ((g.y0 + i) * g.w + g.x0 + A) * g.lanes);
          for (int64_t at = 0; at < M * g.lanes * 4; at += 64) __builtin_prefetch(p + at);
        }
    } else {
      for (int i = 0; i < A; ++i)
        for (int j = 0; j < A; ++j) {
          const int64_t y = g.y0 + i, x = g.x0 + j;
          d[i][j] = y >= 0 && y < g.h && x >= 0 && x < g.w ? O::load(src + (y * g.w + x) * g.lanes) : O::zero();
        }
    }
    for (int j = 0; j < A; ++j) bt<M, O>(&d[0][j], A, &t[0][j], A);  // Bᵀ d, column by column
    float* dst = g.dst + b * g.dst_block + l;
    for (int i = 0; i < A; ++i) {  // (Bᵀ d) B, row by row
      V v[A];
      bt<M, O>(&t[i][0], 1, v, 1);
      for (int j = 0; j < A; ++j) O::store(dst + (i * A + j) * g.dst_point, v[j]);
    }
  }
}

template <int M, class O>
static inline void output_lanes(const brgemm::winograd_output_args& g, int64_t l) {
  using V = typename O::V;
  constexpr int A = M + 2;
  for (int64_t b = 0; b < g.blocks; ++b) {
    const float* src = g.src + b * g.src_block + l;
    V t[A][M], y[M][M];
    for (int i = 0; i < A; ++i) {  // M A, row by row
      V row[A];
      for (int j = 0; j < A; ++j) row[j] = O::load(src + (i * A + j) * g.src_point);
      at<M, O>(row, 1, &t[i][0], 1);
    }
    for (int j = 0; j < M; ++j) at<M, O>(&t[0][j], M, &y[0][j], M);  // Aᵀ (M A), column by column
    const int64_t at0 = b * g.out_block + l;
    const V bias = g.bias ? O::load(g.bias + b * g.lanes + l) : O::zero();
    for (int64_t i = 0; i < g.rows; ++i)
      for (int64_t j = 0; j < g.cols; ++j) {
        const int64_t at = at0 + i * g.out_row + j * g.lanes;
        V v = y[i][j];
        if (g.bias) v = O::add(v, bias);
        if (g.add) v = O::add(v, O::load(g.add + at));
        if (g.z) O::store(g.z + at, v);
        if (g.act == activation::relu) v = O::max(O::zero(), v);
        else if (g.act == activation::relu6) v = O::min(O::set(6.0f), O::max(O::zero(), v));
        O::store(g.out + at, v);
      }
  }
}

// The whole vectors of O, then the remaining lanes one by one.
template <int M, class O>
static inline void input_tile(const brgemm::winograd_input_args& g) {
  int64_t l = 0;
  for (; l + O::width <= g.lanes; l += O::width) input_lanes<M, O>(g, l);
  for (; l < g.lanes; ++l) input_lanes<M, scalar_ops>(g, l);
}
template <int M, class O>
static inline void output_tile(const brgemm::winograd_output_args& g) {
  int64_t l = 0;
  for (; l + O::width <= g.lanes; l += O::width) output_lanes<M, O>(g, l);
  for (; l < g.lanes; ++l) output_lanes<M, scalar_ops>(g, l);
}

}  // namespace
}  // namespace brgemm_winograd

// The two entry points of an ISA's winograd.cpp over its vector operations O.
#define BRGEMM_WINOGRAD_ENTRY_POINTS(ISA, O)                                            \
  void winograd_input_f32__##ISA(int m, const winograd_input_args& a) {                 \
    if (m == 2) return brgemm_winograd::input_tile<2, O>(a);                            \
    if (m == 6) return brgemm_winograd::input_tile<6, O>(a);                            \
    return brgemm_winograd::input_tile<4, O>(a);                                        \
  }                                                                                     \
  void winograd_output_f32__##ISA(int m, const winograd_output_args& a) {               \
    if (m == 2) return brgemm_winograd::output_tile<2, O>(a);                           \
    if (m == 6) return brgemm_winograd::output_tile<6, O>(a);                           \
    return brgemm_winograd::output_tile<4, O>(a);                                       \
  }
