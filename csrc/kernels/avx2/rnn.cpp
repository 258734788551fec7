// The recurrent gates and their backward (brgemm.h) with AVX2: a row's 16 units are two vectors
// per gate. The twin's operations (rnn_twin.h).
#include <algorithm>
#include "../ukernels.h"
#include "../rnn_twin.h"
#include "activation.h"

namespace brgemm::kernels {

namespace {

using brgemm_rnn::gate_constants;

inline __m256 one_plus_exp8(__m256 x) {
  using k = gate_constants;
  x = _mm256_min_ps(_mm256_set1_ps(k::clamp), _mm256_max_ps(_mm256_set1_ps(-k::clamp), x));  // NaN: x
  const __m256 shifter = _mm256_set1_ps(k::shifter);
  const __m256 n = _mm256_sub_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(k::log2e), shifter), shifter);
  const __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(k::ln2_lo), _mm256_fnmadd_ps(n, _mm256_set1_ps(k::ln2_hi), x));
  __m256 p = _mm256_fmadd_ps(r, _mm256_set1_ps(k::c[7]), _mm256_set1_ps(k::c[6]));
  for (int i = 5; i >= 0; --i) p = _mm256_fmadd_ps(r, p, _mm256_set1_ps(k::c[i]));
  const __m256i s = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_fmadd_ps(p, _mm256_castsi256_ps(s), _mm256_set1_ps(1.0f));
}

inline __m256 sigmoid8(__m256 x) {
  const __m256 neg = _mm256_xor_ps(x, _mm256_set1_ps(-0.0f));
  return _mm256_div_ps(_mm256_set1_ps(1.0f), one_plus_exp8(neg));
}

inline __m256 tanh8(__m256 x) {
  const __m256 d = one_plus_exp8(_mm256_mul_ps(x, _mm256_set1_ps(-2.0f)));
  return _mm256_sub_ps(_mm256_div_ps(_mm256_set1_ps(2.0f), d), _mm256_set1_ps(1.0f));
}

// y's 8 values from o8 (f32 or bf16), the units past y_units left alone.
inline void store_y(const lstm_gate_rows& g, int64_t r, int64_t o8, __m256 h) {
  if (!g.y && !g.y16) return;
  if (g.y && o8 + 8 <= g.y_units) return _mm256_storeu_ps(g.y + r * g.ld_y + o8, h);
  alignas(32) float lane[8];
  _mm256_store_ps(lane, h);
  for (int64_t j = o8; j < std::min<int64_t>(o8 + 8, g.y_units); ++j) {
    if (g.y) g.y[r * g.ld_y + j] = lane[j - o8];
    if (g.y16) g.y16[r * g.ld_y + j] = brgemm::bf16_rne_bits(lane[j - o8]);
  }
}

template <bool K>
void lstm_rows(const lstm_gate_rows& g) {
  const ktanh_table8 t;
  for (int64_t r = 0; r < g.m; ++r) {
    const float* pre = g.pre + r * g.ld_pre;
    const float* add = g.add + r * g.ld_add;
    for (int half = 0; half < 2; ++half) {
      const int64_t o8 = 8 * half;
      __m256 x[4], a[4];
      for (int q = 0; q < 4; ++q)
        x[q] = _mm256_add_ps(_mm256_loadu_ps(pre + 16 * q + o8), _mm256_loadu_ps(add + 16 * q + o8));
      if (K) {
        a[0] = activation8(activation::ksigmoid, x[0], t);
        a[1] = activation8(activation::ksigmoid, x[1], t);
        a[2] = activation8(activation::ktanh, x[2], t);
        a[3] = activation8(activation::ksigmoid, x[3], t);
      } else {
        a[0] = sigmoid8(x[0]);
        a[1] = sigmoid8(x[1]);
        a[2] = tanh8(x[2]);
        a[3] = sigmoid8(x[3]);
      }
      const __m256 c =
          _mm256_fmadd_ps(a[1], _mm256_loadu_ps(g.c_prev + r * g.ld_c_prev + o8), _mm256_mul_ps(a[0], a[2]));
      const __m256 h = _mm256_mul_ps(a[3], K ? activation8(activation::ktanh, c, t) : tanh8(c));
      _mm256_storeu_ps(g.c + r * g.ld_c + o8, c);
      if (g.h) _mm256_storeu_ps(g.h + r * g.ld_h + o8, h);
      if (g.h16) _mm_storeu_si128((__m128i*)(g.h16 + r * g.ld_h16 + o8), narrow16(bf16_rne(h)));
      store_y(g, r, o8, h);
      if (g.act)
        for (int q = 0; q < 4; ++q) _mm256_storeu_ps(g.act + r * g.ld_act + 16 * q + o8, a[q]);
    }
  }
}

template <bool K>
void gru_rows(const lstm_gate_rows& g, const float* bhn) {
  const ktanh_table8 t;
  const __m256 one = _mm256_set1_ps(1.0f);
  for (int64_t r = 0; r < g.m; ++r) {
    const float* pre = g.pre + r * g.ld_pre;
    const float* add = g.add + r * g.ld_add;
    for (int half = 0; half < 2; ++half) {
      const int64_t o8 = 8 * half;
      const __m256 xr = _mm256_add_ps(_mm256_loadu_ps(add + o8), _mm256_loadu_ps(pre + o8));
      const __m256 xz = _mm256_add_ps(_mm256_loadu_ps(add + 16 + o8), _mm256_loadu_ps(pre + 16 + o8));
      const __m256 rg = K ? activation8(activation::ksigmoid, xr, t) : sigmoid8(xr);
      const __m256 zg = K ? activation8(activation::ksigmoid, xz, t) : sigmoid8(xz);
      const __m256 hn = _mm256_add_ps(_mm256_loadu_ps(pre + 32 + o8), _mm256_loadu_ps(bhn + o8));
      const __m256 xn = _mm256_fmadd_ps(rg, hn, _mm256_loadu_ps(add + 32 + o8));
      const __m256 ng = K ? activation8(activation::ktanh, xn, t) : tanh8(xn);
      const __m256 h = _mm256_fmadd_ps(_mm256_sub_ps(one, zg), ng,
                                       _mm256_mul_ps(zg, _mm256_loadu_ps(g.c_prev + r * g.ld_c_prev + o8)));
      if (g.h) _mm256_storeu_ps(g.h + r * g.ld_h + o8, h);
      if (g.h16) _mm_storeu_si128((__m128i*)(g.h16 + r * g.ld_h16 + o8), narrow16(bf16_rne(h)));
      store_y(g, r, o8, h);
      if (g.act) {
        float* a = g.act + r * g.ld_act + o8;
        _mm256_storeu_ps(a, rg);
        _mm256_storeu_ps(a + 16, zg);
        _mm256_storeu_ps(a + 32, ng);
        _mm256_storeu_ps(a + 48, hn);
      }
    }
  }
}

// Lanes [0, n) of 8 set (n clamped to 0..8), as maskload and blendv want them.
inline __m256i first_lanes(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)std::max<int64_t>(0, std::min<int64_t>(8, n))),
                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// d = dh + dy on the lanes below y_units (the others keep dh: no +0 added to a −0).
inline __m256 grad_in(const gate_grad_rows& g, int64_t r, int64_t o8) {
  const __m256 dh = _mm256_loadu_ps(g.dh + r * g.ld_dh + o8);
  if (!g.dy) return dh;
  const __m256i m = first_lanes(g.y_units - o8);
  const __m256 sum = _mm256_add_ps(dh, _mm256_maskload_ps(g.dy + r * g.ld_dy + o8, m));
  return _mm256_blendv_ps(dh, sum, _mm256_castsi256_ps(m));
}

template <bool K>
void lstm_backward_rows(const gate_grad_rows& g) {
  const ktanh_table8 t;
  const __m256 one = _mm256_set1_ps(1.0f);
  for (int64_t r = 0; r < g.m; ++r) {
    for (int64_t o8 = 0; o8 < 16; o8 += 8) {
      const float* a = g.act + r * g.ld_act + o8;
      const __m256 d = grad_in(g, r, o8);
      const __m256 ig = _mm256_loadu_ps(a), fg = _mm256_loadu_ps(a + 16), gg = _mm256_loadu_ps(a + 32),
                   og = _mm256_loadu_ps(a + 48);
      const __m256 c = _mm256_loadu_ps(g.c + r * g.ld_c + o8);
      const __m256 tc = K ? activation8(activation::ktanh, c, t) : tanh8(c);
      const __m256 dct = _mm256_add_ps(_mm256_loadu_ps(g.dc + r * g.ld_dc + o8),
                                       _mm256_mul_ps(_mm256_mul_ps(d, og), _mm256_sub_ps(one, _mm256_mul_ps(tc, tc))));
      __m256 q[4];
      q[0] = _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(dct, gg), ig), _mm256_sub_ps(one, ig));
      q[1] = _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(dct, _mm256_loadu_ps(g.c_prev + r * g.ld_c_prev + o8)), fg),
                           _mm256_sub_ps(one, fg));
      q[2] = _mm256_mul_ps(_mm256_mul_ps(dct, ig), _mm256_sub_ps(one, _mm256_mul_ps(gg, gg)));
      q[3] = _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(d, tc), og), _mm256_sub_ps(one, og));
      for (int k = 0; k < 4; ++k) {
        _mm256_storeu_ps(g.dgx + r * g.ld_dgx + 16 * k + o8, q[k]);
        if (g.dgh) _mm256_storeu_ps(g.dgh + r * g.ld_dgh + 16 * k + o8, q[k]);
      }
      _mm256_storeu_ps(g.dc + r * g.ld_dc + o8, _mm256_mul_ps(dct, fg));
      _mm256_storeu_ps(g.dh + r * g.ld_dh + o8, _mm256_setzero_ps());
    }
  }
}

void gru_backward_rows(const gate_grad_rows& g) {
  const __m256 one = _mm256_set1_ps(1.0f);
  for (int64_t r = 0; r < g.m; ++r) {
    for (int64_t o8 = 0; o8 < 16; o8 += 8) {
      const float* a = g.act + r * g.ld_act + o8;
      const __m256 d = grad_in(g, r, o8);
      const __m256 rg = _mm256_loadu_ps(a), zg = _mm256_loadu_ps(a + 16), ng = _mm256_loadu_ps(a + 32),
                   hn = _mm256_loadu_ps(a + 48);
      const __m256 hp = _mm256_loadu_ps(g.c_prev + r * g.ld_c_prev + o8);
      const __m256 dn =
          _mm256_mul_ps(_mm256_mul_ps(d, _mm256_sub_ps(one, zg)), _mm256_sub_ps(one, _mm256_mul_ps(ng, ng)));
      const __m256 dr = _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(dn, hn), rg), _mm256_sub_ps(one, rg));
      const __m256 dz =
          _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(d, _mm256_sub_ps(hp, ng)), zg), _mm256_sub_ps(one, zg));
      float* gx = g.dgx + r * g.ld_dgx + o8;
      float* gh = g.dgh + r * g.ld_dgh + o8;
      _mm256_storeu_ps(gx, dr);
      _mm256_storeu_ps(gx + 16, dz);
      _mm256_storeu_ps(gx + 32, dn);
      _mm256_storeu_ps(gh, dr);
      _mm256_storeu_ps(gh + 16, dz);
      _mm256_storeu_ps(gh + 32, _mm256_mul_ps(dn, rg));
      _mm256_storeu_ps(g.dh + r * g.ld_dh + o8, _mm256_mul_ps(d, zg));
    }
  }
}

}  // namespace

void lstm_gates_backward__avx2(const gate_grad_rows& g) {
  g.ktanh ? lstm_backward_rows<true>(g) : lstm_backward_rows<false>(g);
}

void gru_gates_backward__avx2(const gate_grad_rows& g) { gru_backward_rows(g); }

// 32 columns at a time in 8 accumulators of 4 doubles, every row added in order; the last
// columns one at a time (the twin's loop).
void column_sums__avx2(const float* a, int64_t rows, int64_t ld, int64_t w, double* s) {
  int64_t c0 = 0;
  for (; c0 + 32 <= w; c0 += 32) {
    __m256d acc[8];
    for (int k = 0; k < 8; ++k) acc[k] = _mm256_loadu_pd(s + c0 + 4 * k);
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = a + r * ld + c0;
      for (int k = 0; k < 8; ++k) acc[k] = _mm256_add_pd(acc[k], _mm256_cvtps_pd(_mm_loadu_ps(row + 4 * k)));
    }
    for (int k = 0; k < 8; ++k) _mm256_storeu_pd(s + c0 + 4 * k, acc[k]);
  }
  brgemm_rnn::column_sums_from(a, rows, ld, c0, w, s);
}

void gru_gates__avx2(const lstm_gate_rows& g, const float* bhn) {
  g.ktanh ? gru_rows<true>(g, bhn) : gru_rows<false>(g, bhn);
}

void lstm_gates__avx2(const lstm_gate_rows& g) { g.ktanh ? lstm_rows<true>(g) : lstm_rows<false>(g); }

}  // namespace brgemm::kernels
