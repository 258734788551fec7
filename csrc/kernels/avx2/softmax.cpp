// The softmax family (brgemm.h) on one row with AVX2: 16 values a step as two vectors (the
// twin's 16 sum lanes, softmax_twin.h); the last < 16 values of a row go through the twin
// itself, its sum lanes taken over from the vectors, so the results are the twin's bits.
#include <algorithm>
#include "../ukernels.h"
#include "../softmax_twin.h"
#include "activation.h"  // bf16_rne, narrow16

namespace brgemm::kernels {

namespace {

namespace sm = brgemm_softmax;

inline __m256 ld(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 ld(const uint16_t* p) {
  const __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(h, 16));
}
inline void st(float* p, __m256 v) { _mm256_storeu_ps(p, v); }
inline void st(uint16_t* p, __m256 v) { _mm_storeu_si128((__m128i*)p, narrow16(bf16_rne(v))); }

inline __m256 set(float v) { return _mm256_set1_ps(v); }

// sm::exp_le0 on U vectors, operation for operation; each step runs across the U vectors so
// that their dependency chains overlap.
template <int U>
inline void exp_le0(__m256 (&z)[U]) {
  __m256 zc[U], t[U], n[U], r[U], p[U];
  for (int u = 0; u < U; ++u) zc[u] = _mm256_max_ps(set(sm::exp_cut), z[u]);  // exp_cut > z ? exp_cut : z
  for (int u = 0; u < U; ++u) t[u] = _mm256_fmadd_ps(zc[u], set(sm::exp_log2e), set(sm::exp_round));
  for (int u = 0; u < U; ++u) n[u] = _mm256_sub_ps(t[u], set(sm::exp_round));
  for (int u = 0; u < U; ++u) r[u] = _mm256_fnmadd_ps(n[u], set(sm::exp_ln2_hi), zc[u]);
  for (int u = 0; u < U; ++u) r[u] = _mm256_fnmadd_ps(n[u], set(sm::exp_ln2_lo), r[u]);
  for (int u = 0; u < U; ++u) p[u] = set(sm::exp_c[0]);
  for (int i = 1; i <= sm::exp_degree; ++i)
    for (int u = 0; u < U; ++u) p[u] = _mm256_fmadd_ps(p[u], r[u], set(sm::exp_c[i]));
  for (int u = 0; u < U; ++u) {
    const __m256i v = _mm256_add_epi32(_mm256_castps_si256(p[u]), _mm256_slli_epi32(_mm256_castps_si256(t[u]), 23));
    z[u] = _mm256_andnot_ps(_mm256_cmp_ps(z[u], set(sm::exp_cut), _CMP_LT_OQ), _mm256_castsi256_ps(v));
  }
}

// P_N on U vectors, in place, interleaved as exp_le0.
template <int N, int U>
inline void poly(__m256 (&z)[U]) {
  __m256 p[U];
  for (int u = 0; u < U; ++u) p[u] = set(sm::taylor.c[N]);
  for (int i = N - 1; i >= 0; --i)
    for (int u = 0; u < U; ++u) p[u] = _mm256_fmadd_ps(p[u], z[u], set(sm::taylor.c[i]));
  for (int u = 0; u < U; ++u) z[u] = p[u];
}
template <int N>
inline __m256 poly(__m256 z) {
  __m256 v[1] = {z};
  poly<N>(v);
  return v[0];
}

// The twin's row_sum in registers: f0, f1 = f[0..7], f[8..15]; d0..d3 = d[0..3] … d[12..15].
struct vsum {
  __m256 f0 = _mm256_setzero_ps(), f1 = _mm256_setzero_ps();
  __m256d d0 = _mm256_setzero_pd(), d1 = _mm256_setzero_pd(), d2 = _mm256_setzero_pd(), d3 = _mm256_setzero_pd();
  void add(__m256 a, __m256 b) {
    f0 = _mm256_add_ps(f0, a);
    f1 = _mm256_add_ps(f1, b);
  }
  void flush() {
    d0 = _mm256_add_pd(d0, _mm256_cvtps_pd(_mm256_castps256_ps128(f0)));
    d1 = _mm256_add_pd(d1, _mm256_cvtps_pd(_mm256_extractf128_ps(f0, 1)));
    d2 = _mm256_add_pd(d2, _mm256_cvtps_pd(_mm256_castps256_ps128(f1)));
    d3 = _mm256_add_pd(d3, _mm256_cvtps_pd(_mm256_extractf128_ps(f1, 1)));
    f0 = f1 = _mm256_setzero_ps();
  }
  sm::row_sum spill() const {
    sm::row_sum s;
    _mm256_storeu_ps(s.f, f0);
    _mm256_storeu_ps(s.f + 8, f1);
    _mm256_storeu_pd(s.d, d0);
    _mm256_storeu_pd(s.d + 4, d1);
    _mm256_storeu_pd(s.d + 8, d2);
    _mm256_storeu_pd(s.d + 12, d3);
    return s;
  }
};

// step(j) over the row's whole 16-value steps, flushing `sums` at each sum block's end; returns
// where the twin takes over (a block cut short is left unflushed: the twin adds the rest of it).
template <class Step, class... Sums>
inline int64_t blocks(int64_t n, Step&& step, Sums&... sums) {
  int64_t j = 0;
  while (j + 16 <= n) {
    const int64_t end = std::min(n, j + sm::sum_block) / 16 * 16;
    for (; j < end; j += 16) step(j);
    if (j % sm::sum_block != 0) break;
    (sums.flush(), ...);
  }
  return j;
}

// 4 accumulators (max is exact in any order: ±0 give the same e^(x − m)).
template <class T>
float row_max(const T* x, int64_t n, bool* nan) {
  __m256 m[4] = {set(-INFINITY), set(-INFINITY), set(-INFINITY), set(-INFINITY)};
  __m256 un = _mm256_setzero_ps();
  int64_t j = 0;
  for (; j + 32 <= n; j += 32)
    for (int u = 0; u < 4; ++u) {
      const __m256 v = ld(x + j + 8 * u);
      m[u] = _mm256_max_ps(v, m[u]);  // x > m ? x : m: NaN skipped
      un = _mm256_or_ps(un, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    }
  float l[8];
  _mm256_storeu_ps(l, _mm256_max_ps(_mm256_max_ps(m[0], m[1]), _mm256_max_ps(m[2], m[3])));
  float mx = -INFINITY;
  for (int i = 0; i < 8; ++i) mx = l[i] > mx ? l[i] : mx;
  bool any = _mm256_movemask_ps(un) != 0;
  for (; j < n; ++j) {
    const float v = sm::load(x, j);
    mx = v > mx ? v : mx;
    any = any || v != v;
  }
  *nan = any;
  return mx;
}

// As AVX-512's: e stored and scaled for the exact softmax and orders above 4, else P_N
// computed again in the second pass.
template <int N, class T>
void forward(const T* x, T* y, float* e, int64_t n) {
  constexpr bool keep = N == 0 || N > 4;
  float mx = 0.0f;
  if (N == 0) {
    bool nan;
    mx = row_max(x, n, &nan);
    if (sm::nan_row(nan, mx)) return sm::fill_nan(y, n);
  }
  const __m256 m = set(mx);
  vsum v;
  int64_t j = blocks(n, [&](int64_t j) {
    __m256 p[2] = {ld(x + j), ld(x + j + 8)};
    if constexpr (N == 0) {
      for (auto& w : p) w = _mm256_sub_ps(w, m);
      exp_le0(p);
    } else {
      poly<N>(p);
    }
    if (keep) {
      st(e + j, p[0]);
      st(e + j + 8, p[1]);
    }
    v.add(p[0], p[1]);
  }, v);
  sm::row_sum s = v.spill();
  for (; j < n; ++j) {
    const float p = N == 0 ? sm::exp_le0(sm::load(x, j) - mx) : sm::taylor_poly<N>(sm::load(x, j));
    if (keep) e[j] = p;
    sm::add(s, j, p);
  }
  s.flush();
  const float inv = (float)(1.0 / s.total());
  const __m256 vi = set(inv);
  if constexpr (keep) {
    for (j = 0; j + 8 <= n; j += 8) st(y + j, _mm256_mul_ps(ld(e + j), vi));
    for (; j < n; ++j) sm::store(y, j, e[j] * inv);
  } else {  // P_N again rather than stored and read back: the same bits, less traffic
    for (j = 0; j + 16 <= n; j += 16) {
      __m256 p[2] = {ld(x + j), ld(x + j + 8)};
      poly<N>(p);
      st(y + j, _mm256_mul_ps(p[0], vi));
      st(y + j + 8, _mm256_mul_ps(p[1], vi));
    }
    for (; j < n; ++j) sm::store(y, j, sm::taylor_poly<N>(sm::load(x, j)) * inv);
  }
}

template <class T>
void backward_exact(const T* y, const T* g, T* gx, int64_t n) {
  vsum v;
  int64_t j = blocks(n, [&](int64_t j) {
    v.f0 = _mm256_fmadd_ps(ld(g + j), ld(y + j), v.f0);
    v.f1 = _mm256_fmadd_ps(ld(g + j + 8), ld(y + j + 8), v.f1);
  }, v);
  sm::row_sum s = v.spill();
  for (; j < n; ++j) sm::add_product(s, j, sm::load(g, j), sm::load(y, j));
  s.flush();
  const float d = (float)s.total();
  const __m256 vd = set(d);
  for (j = 0; j + 8 <= n; j += 8) st(gx + j, _mm256_mul_ps(ld(y + j), _mm256_sub_ps(ld(g + j), vd)));
  for (; j < n; ++j) sm::store(gx, j, sm::load(y, j) * (sm::load(g, j) - d));
}

template <int N, class T>
void backward_taylor(const T* x, const T* g, T* gx, int64_t n) {
  vsum vs, vt;
  int64_t j = blocks(n, [&](int64_t j) {
    __m256 p[2] = {ld(x + j), ld(x + j + 8)};
    poly<N>(p);
    vs.add(p[0], p[1]);
    vt.f0 = _mm256_fmadd_ps(ld(g + j), p[0], vt.f0);
    vt.f1 = _mm256_fmadd_ps(ld(g + j + 8), p[1], vt.f1);
  }, vs, vt);
  sm::row_sum s = vs.spill(), t = vt.spill();
  for (; j < n; ++j) {
    const float p = sm::taylor_poly<N>(sm::load(x, j));
    sm::add(s, j, p);
    sm::add_product(t, j, sm::load(g, j), p);
  }
  s.flush();
  t.flush();
  const double sum = s.total();
  const float inv = (float)(1.0 / sum), d = (float)(t.total() / sum);
  const __m256 vi = set(inv), vd = set(d);
  for (j = 0; j + 8 <= n; j += 8)
    st(gx + j, _mm256_mul_ps(_mm256_mul_ps(poly<N - 1>(ld(x + j)), vi), _mm256_sub_ps(ld(g + j), vd)));
  for (; j < n; ++j) sm::store(gx, j, (sm::taylor_poly<N - 1>(sm::load(x, j)) * inv) * (sm::load(g, j) - d));
}

BRGEMM_SOFTMAX_ROW_BY_ROW

}  // namespace

BRGEMM_SOFTMAX_ENTRY_POINTS(avx2)

}  // namespace brgemm::kernels
