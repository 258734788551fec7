// The softmax family (brgemm.h) on one row with AVX-512: 64 values a step (4 vectors whose
// dependency chains interleave), then 16, the last step masked. Lane l of every vector is the
// twin's sum lane l (softmax_twin.h), added in the row's order, so the results are the twin's
// bits.
#include <algorithm>
#include "../ukernels.h"
#include "../softmax_twin.h"
#include "activation.h"  // bf16_rne

namespace brgemm::kernels {

namespace {

namespace sm = brgemm_softmax;

inline __mmask16 tail_mask(int64_t left) { return (__mmask16)((1u << left) - 1u); }

inline __m512 ld(const float* p) { return _mm512_loadu_ps(p); }
// 16 bf16 → 16 floats by one vpermw (word l to the high half of lane l, the low halves zeroed by
// the mask): in place of vpmovzxwd + vpslld, 10 % off the bf16 backward pass.
inline __m512 widen(__m256i h) {
  const __m512i idx = _mm512_set_epi16(15, 0, 14, 0, 13, 0, 12, 0, 11, 0, 10, 0, 9, 0, 8, 0, 7, 0, 6, 0, 5, 0, 4, 0, 3, 0,
                                       2, 0, 1, 0, 0, 0);
  return _mm512_castsi512_ps(_mm512_maskz_permutexvar_epi16(0xAAAAAAAA, idx, _mm512_castsi256_si512(h)));
}
inline __m512 ld(const uint16_t* p) { return widen(_mm256_loadu_si256((const __m256i*)p)); }
inline __m512 ld(const float* p, __mmask16 k) { return _mm512_maskz_loadu_ps(k, p); }
inline __m512 ld(const uint16_t* p, __mmask16 k) { return widen(_mm256_maskz_loadu_epi16(k, p)); }
inline void st(float* p, __m512 v) { _mm512_storeu_ps(p, v); }
inline void st(uint16_t* p, __m512 v) { _mm256_storeu_si256((__m256i*)p, _mm512_cvtepi32_epi16(bf16_rne(v))); }
inline void st(float* p, __mmask16 k, __m512 v) { _mm512_mask_storeu_ps(p, k, v); }
inline void st(uint16_t* p, __mmask16 k, __m512 v) { _mm256_mask_storeu_epi16(p, k, _mm512_cvtepi32_epi16(bf16_rne(v))); }

inline __m512 set(float v) { return _mm512_set1_ps(v); }

// sm::exp_le0 on U vectors, operation for operation; each step runs across the U vectors so
// that their dependency chains (some 25 operations deep) overlap.
template <int U>
inline void exp_le0(__m512 (&z)[U]) {
  __m512 zc[U], t[U], n[U], r[U], p[U];
  for (int u = 0; u < U; ++u) zc[u] = _mm512_max_ps(set(sm::exp_cut), z[u]);  // exp_cut > z ? exp_cut : z
  for (int u = 0; u < U; ++u) t[u] = _mm512_fmadd_ps(zc[u], set(sm::exp_log2e), set(sm::exp_round));
  for (int u = 0; u < U; ++u) n[u] = _mm512_sub_ps(t[u], set(sm::exp_round));
  for (int u = 0; u < U; ++u) r[u] = _mm512_fnmadd_ps(n[u], set(sm::exp_ln2_hi), zc[u]);
  for (int u = 0; u < U; ++u) r[u] = _mm512_fnmadd_ps(n[u], set(sm::exp_ln2_lo), r[u]);
  for (int u = 0; u < U; ++u) p[u] = set(sm::exp_c[0]);
  for (int i = 1; i <= sm::exp_degree; ++i)
    for (int u = 0; u < U; ++u) p[u] = _mm512_fmadd_ps(p[u], r[u], set(sm::exp_c[i]));
  for (int u = 0; u < U; ++u) {
    const __m512i v = _mm512_add_epi32(_mm512_castps_si512(p[u]), _mm512_slli_epi32(_mm512_castps_si512(t[u]), 23));
    z[u] = _mm512_mask_mov_ps(_mm512_castsi512_ps(v), _mm512_cmp_ps_mask(z[u], set(sm::exp_cut), _CMP_LT_OQ),
                              _mm512_setzero_ps());
  }
}

// P_N on U vectors, in place, interleaved as exp_le0.
template <int N, int U>
inline void poly(__m512 (&z)[U]) {
  __m512 p[U];
  for (int u = 0; u < U; ++u) p[u] = set(sm::taylor.c[N]);
  for (int i = N - 1; i >= 0; --i)
    for (int u = 0; u < U; ++u) p[u] = _mm512_fmadd_ps(p[u], z[u], set(sm::taylor.c[i]));
  for (int u = 0; u < U; ++u) z[u] = p[u];
}
template <int N>
inline __m512 poly(__m512 z) {
  __m512 v[1] = {z};
  poly<N>(v);
  return v[0];
}

// The twin's row_sum: lane l of f is f[l]; d0 holds d[0..7], d1 d[8..15].
struct vsum {
  __m512 f = _mm512_setzero_ps();
  __m512d d0 = _mm512_setzero_pd(), d1 = _mm512_setzero_pd();
  void flush() {
    d0 = _mm512_add_pd(d0, _mm512_cvtps_pd(_mm512_castps512_ps256(f)));
    d1 = _mm512_add_pd(d1, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(f), 1))));
    f = _mm512_setzero_ps();
  }
  double total() const {
    double d[16];
    _mm512_storeu_pd(d, d0);
    _mm512_storeu_pd(d + 8, d1);
    double s = 0.0;
    for (double v : d) s += v;
    return s;
  }
};

// Runs the row in the twin's sum blocks, flushing the sums in `sums` at each block's end:
// step4(j) on values [j, j + 64), then step1(j, k) on 16 (k: the lanes in the row, all but in
// the last step).
template <class Step4, class Step1, class... Sums>
inline void blocks(int64_t n, Step4&& step4, Step1&& step1, Sums&... sums) {
  for (int64_t b = 0; b < n; b += sm::sum_block) {
    const int64_t end = std::min(n, b + sm::sum_block);
    int64_t j = b;
    for (; j + 64 <= end; j += 64) step4(j);
    for (; j + 16 <= end; j += 16) step1(j, (__mmask16)0xFFFF);
    if (j < end) step1(j, tail_mask(end - j));
    (sums.flush(), ...);
  }
}

// 4 accumulators: max is exact in any order (±0 give the same e^(x − m)), and with one chain
// of vmaxps this pass was some 15 % of the exact softmax's time.
template <class T>
float row_max(const T* x, int64_t n, bool* nan) {
  __m512 m[4] = {set(-INFINITY), set(-INFINITY), set(-INFINITY), set(-INFINITY)};
  __mmask16 un = 0;
  int64_t j = 0;
  for (; j + 64 <= n; j += 64)
    for (int u = 0; u < 4; ++u) {
      const __m512 v = ld(x + j + 16 * u);
      m[u] = _mm512_max_ps(v, m[u]);  // x > m ? x : m: NaN skipped
      un |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    }
  for (; j + 16 <= n; j += 16) {
    const __m512 v = ld(x + j);
    m[0] = _mm512_max_ps(v, m[0]);
    un |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  }
  if (j < n) {
    const __mmask16 k = tail_mask(n - j);
    const __m512 v = ld(x + j, k);
    m[0] = _mm512_mask_max_ps(m[0], k, v, m[0]);
    un |= _mm512_mask_cmp_ps_mask(k, v, v, _CMP_UNORD_Q);
  }
  *nan = un != 0;
  return _mm512_reduce_max_ps(_mm512_max_ps(_mm512_max_ps(m[0], m[1]), _mm512_max_ps(m[2], m[3])));
}

// y = e·inv, e read back from e (y itself, or the bf16 path's workspace).
template <class T>
void scale(const float* e, T* y, int64_t n, float inv) {
  const __m512 s = set(inv);
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) st(y + j, _mm512_mul_ps(ld(e + j), s));
  if (j < n) {
    const __mmask16 k = tail_mask(n - j);
    st(y + j, k, _mm512_mul_ps(ld(e + j, k), s));
  }
}

// Exact and high orders: e^(x − max) or P_N stored in e and scaled from there; Taylor up to
// order 4: P_N summed, then computed again and scaled (two reads of x instead of a store and a
// read of e: the same bits, less traffic; measured 10 % faster at order 2, slower from 8 on).
template <int N, class T>
void forward(const T* x, T* y, float* e, int64_t n) {
  constexpr bool keep = N == 0 || N > 4;
  float mx = 0.0f;
  if (N == 0) {
    bool nan;
    mx = row_max(x, n, &nan);
    if (sm::nan_row(nan, mx)) return sm::fill_nan(y, n);
  }
  const __m512 m = set(mx);
  auto f = [&](auto& v) {
    if constexpr (N == 0) {
      for (auto& w : v) w = _mm512_sub_ps(w, m);
      exp_le0(v);
    } else {
      poly<N>(v);
    }
  };
  vsum s;
  blocks(n, [&](int64_t j) {
    __m512 v[4];
    for (int u = 0; u < 4; ++u) v[u] = ld(x + j + 16 * u);
    f(v);
    for (int u = 0; u < 4; ++u) {
      if (keep) st(e + j + 16 * u, v[u]);
      s.f = _mm512_add_ps(s.f, v[u]);
    }
  }, [&](int64_t j, __mmask16 k) {
    __m512 v[1] = {ld(x + j, k)};
    f(v);
    if (keep) {
      if (k == 0xFFFF)
        st(e + j, v[0]);  // unmasked: Zen 4's masked stores are slow
      else
        st(e + j, k, v[0]);
    }
    s.f = _mm512_mask_add_ps(s.f, k, s.f, v[0]);
  }, s);
  const float inv = (float)(1.0 / s.total());
  if constexpr (keep) {
    scale(e, y, n, inv);
  } else {
    const __m512 vi = set(inv);
    int64_t j = 0;
    for (; j + 64 <= n; j += 64) {
      __m512 v[4];
      for (int u = 0; u < 4; ++u) v[u] = ld(x + j + 16 * u);
      poly<N>(v);
      for (int u = 0; u < 4; ++u) st(y + j + 16 * u, _mm512_mul_ps(v[u], vi));
    }
    for (; j + 16 <= n; j += 16) st(y + j, _mm512_mul_ps(poly<N>(ld(x + j)), vi));
    if (j < n) {
      const __mmask16 k = tail_mask(n - j);
      st(y + j, k, _mm512_mul_ps(poly<N>(ld(x + j, k)), vi));
    }
  }
}

template <class T>
void backward_exact(const T* y, const T* g, T* gx, int64_t n) {
  vsum s;
  auto step = [&](int64_t j, __mmask16 k) {
    s.f = _mm512_mask3_fmadd_ps(ld(g + j, k), ld(y + j, k), s.f, k);
  };
  blocks(n, [&](int64_t j) {
    for (int u = 0; u < 4; ++u) s.f = _mm512_fmadd_ps(ld(g + j + 16 * u), ld(y + j + 16 * u), s.f);
  }, step, s);
  const __m512 d = set((float)s.total());
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) st(gx + j, _mm512_mul_ps(ld(y + j), _mm512_sub_ps(ld(g + j), d)));
  if (j < n) {
    const __mmask16 k = tail_mask(n - j);
    st(gx + j, k, _mm512_mul_ps(ld(y + j, k), _mm512_sub_ps(ld(g + j, k), d)));
  }
}

template <int N, class T>
void backward_taylor(const T* x, const T* g, T* gx, int64_t n) {
  vsum s, t;
  blocks(n, [&](int64_t j) {
    __m512 p[4];
    for (int u = 0; u < 4; ++u) p[u] = ld(x + j + 16 * u);
    poly<N>(p);
    for (int u = 0; u < 4; ++u) {
      s.f = _mm512_add_ps(s.f, p[u]);
      t.f = _mm512_fmadd_ps(ld(g + j + 16 * u), p[u], t.f);
    }
  }, [&](int64_t j, __mmask16 k) {
    const __m512 p = poly<N>(ld(x + j, k));
    s.f = _mm512_mask_add_ps(s.f, k, s.f, p);
    t.f = _mm512_mask3_fmadd_ps(ld(g + j, k), p, t.f, k);
  }, s, t);
  const double sum = s.total();
  const __m512 inv = set((float)(1.0 / sum)), d = set((float)(t.total() / sum));
  auto out = [&](int64_t j, __mmask16 k) {
    return _mm512_mul_ps(_mm512_mul_ps(poly<N - 1>(ld(x + j, k)), inv), _mm512_sub_ps(ld(g + j, k), d));
  };
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) st(gx + j, out(j, 0xFFFF));
  if (j < n) st(gx + j, tail_mask(n - j), out(j, tail_mask(n - j)));
}

// --- Several rows of at most sum_block values: software-pipelined ---------------------------
// A row's second pass (the update, element-wise) runs in one loop with the next row's first
// pass (its sums: a chain of dependent adds, 4 cycles per 16 values), so each hides the
// other's latency; the values of both rows are in L1. Both passes read the same two arrays:
// a (y for the exact softmax, x for Taylor) and g. For bf16, which is bound by its conversions
// (1000 x 1000, one thread, with ld32/st32 and widen: exact 242 → 138 µs, Taylor 2 284 → 192
// µs; the pipelining alone is some 60 µs of it).

// bf16 in the update pass 32 at a time: each 128-bit lane's words 0-3 go to lo, 4-7 to hi (in
// place of a cross-lane widening per 16), and the rounded results are packed back in that
// order by vpackusdw. The update is per value, so the order inside the registers is free.
inline void ld32(const uint16_t* p, __m512& lo, __m512& hi) {
  const __m512i v = _mm512_loadu_si512(p), z = _mm512_setzero_si512();
  lo = _mm512_castsi512_ps(_mm512_unpacklo_epi16(z, v));
  hi = _mm512_castsi512_ps(_mm512_unpackhi_epi16(z, v));
}
// bf16_rne's bits in the high half of each lane, for the backward passes' results only: without
// bf16_rne's NaN case, because every NaN there comes out of an arithmetic instruction (so it is
// quiet) with the default NaN's payload or one carried from a bf16 input through float and
// double (the payload's top bits): its low 16 bits are 0, the rounding increment (≤ 0x8000)
// does not carry, and the high half is bf16_rne's (u >> 16) | 0x40.
inline __m512i rne_high(__m512 v) {
  const __m512i u = _mm512_castps_si512(v);
  const __mmask16 odd = _mm512_test_epi32_mask(u, _mm512_set1_epi32(0x10000));  // ties to even
  const __m512i r = _mm512_add_epi32(u, _mm512_set1_epi32(0x7FFF));
  return _mm512_mask_add_epi32(r, odd, r, _mm512_set1_epi32(1));
}
// The high halves of lo's and hi's lanes back in ld32's order, by one vpermt2w: value w of the 32
// is in 128-bit lane w / 8, in lo for w % 8 < 4 (index w / 8·4 + w % 8), else in hi.
inline void st32(uint16_t* p, __m512 lo, __m512 hi) {
  alignas(64) static constexpr int16_t idx[32] = {
      1,  3,  5,  7,  33, 35, 37, 39, 9,  11, 13, 15, 41, 43, 45, 47,
      17, 19, 21, 23, 49, 51, 53, 55, 25, 27, 29, 31, 57, 59, 61, 63};
  _mm512_storeu_si512(p, _mm512_permutex2var_epi16(rne_high(lo), _mm512_load_si512(idx), rne_high(hi)));
}

// The exact softmax's passes: d = Σ g·y, then y·(g − d).
template <class T>
struct exact_passes {
  vsum s;
  void first(const T* y, const T* g, int64_t j) { s.f = _mm512_fmadd_ps(ld(g + j), ld(y + j), s.f); }
  void first(const T* y, const T* g, int64_t j, __mmask16 k) {
    s.f = _mm512_mask3_fmadd_ps(ld(g + j, k), ld(y + j, k), s.f, k);
  }
  struct coef {
    __m512 d;
  };
  coef finish() {
    s.flush();
    const coef c{set((float)s.total())};
    s = vsum{};
    return c;
  }
  static __m512 out(const coef& c, __m512 y, __m512 g) { return _mm512_mul_ps(y, _mm512_sub_ps(g, c.d)); }
};

// Taylor's: S = Σ P_N(x), d = Σ g·P_N(x) / S, then (P_{N−1}(x)·(1/S))·(g − d).
template <int N, class T>
struct taylor_passes {
  vsum s, t;
  void first(const T* x, const T* g, int64_t j) {
    const __m512 p = poly<N>(ld(x + j));
    s.f = _mm512_add_ps(s.f, p);
    t.f = _mm512_fmadd_ps(ld(g + j), p, t.f);
  }
  void first(const T* x, const T* g, int64_t j, __mmask16 k) {
    const __m512 p = poly<N>(ld(x + j, k));
    s.f = _mm512_mask_add_ps(s.f, k, s.f, p);
    t.f = _mm512_mask3_fmadd_ps(ld(g + j, k), p, t.f, k);
  }
  struct coef {
    __m512 inv, d;
  };
  coef finish() {
    s.flush();
    t.flush();
    const double sum = s.total();
    const coef c{set((float)(1.0 / sum)), set((float)(t.total() / sum))};
    s = vsum{};
    t = vsum{};
    return c;
  }
  static __m512 out(const coef& c, __m512 x, __m512 g) {
    return _mm512_mul_ps(_mm512_mul_ps(poly<N - 1>(x), c.inv), _mm512_sub_ps(g, c.d));
  }
};

template <class T, class P>
void rows_pipelined(P& p, const T* a, const T* g, T* gx, int64_t rows, int64_t n) {
  constexpr int64_t chunk = sizeof(T) == 2 ? 32 : 16;  // values per update step
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) p.first(a, g, j);
  if (j < n) p.first(a, g, j, tail_mask(n - j));
  auto c = p.finish();
  for (int64_t r = 0; r < rows; ++r, a += n, g += n, gx += n) {
    const bool next = r + 1 < rows;
    const T *an = a + n, *gn = g + n;
    for (j = 0; j + chunk <= n; j += chunk) {
      if (next)
        for (int64_t h = 0; h < chunk; h += 16) p.first(an, gn, j + h);
      if constexpr (sizeof(T) == 2) {
        __m512 a0, a1, g0, g1;
        ld32(a + j, a0, a1);
        ld32(g + j, g0, g1);
        st32(gx + j, P::out(c, a0, g0), P::out(c, a1, g1));
      } else {
        st(gx + j, P::out(c, ld(a + j), ld(g + j)));
      }
    }
    for (; j + 16 <= n; j += 16) {
      if (next) p.first(an, gn, j);
      st(gx + j, P::out(c, ld(a + j), ld(g + j)));
    }
    if (j < n) {
      const __mmask16 k = tail_mask(n - j);
      if (next) p.first(an, gn, j, k);
      st(gx + j, k, P::out(c, ld(a + j, k), ld(g + j, k)));
    }
    if (next) c = p.finish();
  }
}

// f32 rows go one by one: they are bound by memory traffic, and the pipelined loop measured
// slower (1000 x 1000, one thread: exact 179 → 190 µs, Taylor 2 185 → 215 µs).
template <class T>
void backward_exact_rows(const T* y, const T* g, T* gx, int64_t rows, int64_t n) {
  if (sizeof(T) == 2 && n <= sm::sum_block) {
    exact_passes<T> p;
    return rows_pipelined(p, y, g, gx, rows, n);
  }
  for (int64_t r = 0; r < rows; ++r) backward_exact(y + r * n, g + r * n, gx + r * n, n);
}

template <int N, class T>
void backward_taylor_rows(const T* x, const T* g, T* gx, int64_t rows, int64_t n) {
  if (sizeof(T) == 2 && n <= sm::sum_block) {
    taylor_passes<N, T> p;
    return rows_pipelined(p, x, g, gx, rows, n);
  }
  for (int64_t r = 0; r < rows; ++r) backward_taylor<N>(x + r * n, g + r * n, gx + r * n, n);
}

}  // namespace

BRGEMM_SOFTMAX_ENTRY_POINTS(avx512)

}  // namespace brgemm::kernels
