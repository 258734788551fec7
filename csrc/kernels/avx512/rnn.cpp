// The recurrent gates and their backward (brgemm.h) with AVX-512: a row's 16 units are one
// vector per gate, every value stays in registers from the tile to the stores. The twin's
// operations (rnn_twin.h).
#include <algorithm>
#include "../ukernels.h"
#include "../rnn_twin.h"
#include "activation.h"

namespace brgemm::kernels {

namespace {

using brgemm_rnn::gate_constants;

inline __m512 one_plus_exp16(__m512 x) {
  using k = gate_constants;
  x = _mm512_min_ps(_mm512_set1_ps(k::clamp), _mm512_max_ps(_mm512_set1_ps(-k::clamp), x));  // NaN: x
  const __m512 shifter = _mm512_set1_ps(k::shifter);
  const __m512 n = _mm512_sub_ps(_mm512_fmadd_ps(x, _mm512_set1_ps(k::log2e), shifter), shifter);
  const __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(k::ln2_lo), _mm512_fnmadd_ps(n, _mm512_set1_ps(k::ln2_hi), x));
  __m512 p = _mm512_fmadd_ps(r, _mm512_set1_ps(k::c[7]), _mm512_set1_ps(k::c[6]));
  for (int i = 5; i >= 0; --i) p = _mm512_fmadd_ps(r, p, _mm512_set1_ps(k::c[i]));
  const __m512i s = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvttps_epi32(n), _mm512_set1_epi32(127)), 23);
  return _mm512_fmadd_ps(p, _mm512_castsi512_ps(s), _mm512_set1_ps(1.0f));
}

inline __m512 sigmoid16(__m512 x) {
  const __m512 neg = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(x), _mm512_set1_epi32(INT32_MIN)));
  return _mm512_div_ps(_mm512_set1_ps(1.0f), one_plus_exp16(neg));
}

inline __m512 tanh16(__m512 x) {
  const __m512 d = one_plus_exp16(_mm512_mul_ps(x, _mm512_set1_ps(-2.0f)));
  return _mm512_sub_ps(_mm512_div_ps(_mm512_set1_ps(2.0f), d), _mm512_set1_ps(1.0f));
}

// R rows at once: their loads first, then their math, then their stores, so that the rows'
// independent chains overlap (the stores could alias the next row's loads, which kept the
// compiler from interleaving rows one at a time).
template <bool K, int R>
inline void lstm_block(const lstm_gate_rows& g, int64_t r0, const ktanh_table32& t, __mmask16 ymask) {
  __m512 a[R][4], cp[R];
  for (int i = 0; i < R; ++i) {
    const float* pre = g.pre + (r0 + i) * g.ld_pre;
    const float* add = g.add + (r0 + i) * g.ld_add;
    for (int q = 0; q < 4; ++q) a[i][q] = _mm512_add_ps(_mm512_loadu_ps(pre + 16 * q), _mm512_loadu_ps(add + 16 * q));
    cp[i] = _mm512_loadu_ps(g.c_prev + (r0 + i) * g.ld_c_prev);
  }
  __m512 c[R], h[R];
  for (int i = 0; i < R; ++i) {
    if (K) {
      a[i][0] = k_family16<activation::ksigmoid>(a[i][0], t);
      a[i][1] = k_family16<activation::ksigmoid>(a[i][1], t);
      a[i][2] = k_family16<activation::ktanh>(a[i][2], t);
      a[i][3] = k_family16<activation::ksigmoid>(a[i][3], t);
    } else {
      a[i][0] = sigmoid16(a[i][0]);
      a[i][1] = sigmoid16(a[i][1]);
      a[i][2] = tanh16(a[i][2]);
      a[i][3] = sigmoid16(a[i][3]);
    }
    c[i] = _mm512_fmadd_ps(a[i][1], cp[i], _mm512_mul_ps(a[i][0], a[i][2]));
    h[i] = _mm512_mul_ps(a[i][3], K ? k_family16<activation::ktanh>(c[i], t) : tanh16(c[i]));
  }
  for (int i = 0; i < R; ++i) {
    const int64_t r = r0 + i;
    _mm512_storeu_ps(g.c + r * g.ld_c, c[i]);
    if (g.h) _mm512_storeu_ps(g.h + r * g.ld_h, h[i]);
    if (g.h16 || g.y16) {
      const __m256i b = _mm512_cvtepi32_epi16(bf16_rne(h[i]));
      if (g.h16) _mm256_storeu_si256((__m256i*)(g.h16 + r * g.ld_h16), b);
      if (g.y16) _mm256_mask_storeu_epi16(g.y16 + r * g.ld_y, ymask, b);
    }
    if (g.y) {
      if (g.y_units == 16)
        _mm512_storeu_ps(g.y + r * g.ld_y, h[i]);
      else
        _mm512_mask_storeu_ps(g.y + r * g.ld_y, ymask, h[i]);
    }
    if (g.act)
      for (int q = 0; q < 4; ++q) _mm512_storeu_ps(g.act + r * g.ld_act + 16 * q, a[i][q]);
  }
}

template <bool K>
void lstm_rows(const lstm_gate_rows& args) {
  const lstm_gate_rows g = args;  // a local copy: the stores cannot change it
  const ktanh_table32 t;
  const __mmask16 ymask = (__mmask16)((1u << g.y_units) - 1u);
  int64_t r = 0;
  for (; r + 2 <= g.m; r += 2) lstm_block<K, 2>(g, r, t, ymask);
  if (r < g.m) lstm_block<K, 1>(g, r, t, ymask);
}

template <bool K>
void gru_rows(const lstm_gate_rows& args, const float* bhn) {
  const lstm_gate_rows g = args;
  const ktanh_table32 t;
  const __mmask16 ymask = (__mmask16)((1u << g.y_units) - 1u);
  const __m512 bn = _mm512_loadu_ps(bhn), one = _mm512_set1_ps(1.0f);
  for (int64_t r = 0; r < g.m; ++r) {
    const float* pre = g.pre + r * g.ld_pre;
    const float* add = g.add + r * g.ld_add;
    const __m512 xr = _mm512_add_ps(_mm512_loadu_ps(add), _mm512_loadu_ps(pre));
    const __m512 xz = _mm512_add_ps(_mm512_loadu_ps(add + 16), _mm512_loadu_ps(pre + 16));
    const __m512 rg = K ? k_family16<activation::ksigmoid>(xr, t) : sigmoid16(xr);
    const __m512 zg = K ? k_family16<activation::ksigmoid>(xz, t) : sigmoid16(xz);
    const __m512 hn = _mm512_add_ps(_mm512_loadu_ps(pre + 32), bn);
    const __m512 xn = _mm512_fmadd_ps(rg, hn, _mm512_loadu_ps(add + 32));
    const __m512 ng = K ? k_family16<activation::ktanh>(xn, t) : tanh16(xn);
    const __m512 h = _mm512_fmadd_ps(_mm512_sub_ps(one, zg), ng,
                                     _mm512_mul_ps(zg, _mm512_loadu_ps(g.c_prev + r * g.ld_c_prev)));
    if (g.h) _mm512_storeu_ps(g.h + r * g.ld_h, h);
    if (g.h16 || g.y16) {
      const __m256i b = _mm512_cvtepi32_epi16(bf16_rne(h));
      if (g.h16) _mm256_storeu_si256((__m256i*)(g.h16 + r * g.ld_h16), b);
      if (g.y16) _mm256_mask_storeu_epi16(g.y16 + r * g.ld_y, ymask, b);
    }
    if (g.y) {
      if (g.y_units == 16)
        _mm512_storeu_ps(g.y + r * g.ld_y, h);
      else
        _mm512_mask_storeu_ps(g.y + r * g.ld_y, ymask, h);
    }
    if (g.act) {
      float* a = g.act + r * g.ld_act;
      _mm512_storeu_ps(a, rg);
      _mm512_storeu_ps(a + 16, zg);
      _mm512_storeu_ps(a + 32, ng);
      _mm512_storeu_ps(a + 48, hn);
    }
  }
}

// d = dh + dy on the first y_units lanes (the others keep dh: no +0 added to a −0).
inline __m512 grad_in(const gate_grad_rows& g, int64_t r, __mmask16 ymask) {
  const __m512 dh = _mm512_loadu_ps(g.dh + r * g.ld_dh);
  if (!g.dy) return dh;
  return _mm512_mask_add_ps(dh, ymask, dh, _mm512_maskz_loadu_ps(ymask, g.dy + r * g.ld_dy));
}

template <bool K>
void lstm_backward_rows(const gate_grad_rows& args) {
  const gate_grad_rows g = args;
  const ktanh_table32 t;
  const __mmask16 ymask = (__mmask16)((1u << g.y_units) - 1u);
  const __m512 one = _mm512_set1_ps(1.0f);
  for (int64_t r = 0; r < g.m; ++r) {
    const float* a = g.act + r * g.ld_act;
    const __m512 d = grad_in(g, r, ymask);
    const __m512 ig = _mm512_loadu_ps(a), fg = _mm512_loadu_ps(a + 16), gg = _mm512_loadu_ps(a + 32),
                 og = _mm512_loadu_ps(a + 48);
    const __m512 c = _mm512_loadu_ps(g.c + r * g.ld_c);
    const __m512 tc = K ? k_family16<activation::ktanh>(c, t) : tanh16(c);
    const __m512 dct = _mm512_add_ps(_mm512_loadu_ps(g.dc + r * g.ld_dc),
                                     _mm512_mul_ps(_mm512_mul_ps(d, og), _mm512_sub_ps(one, _mm512_mul_ps(tc, tc))));
    __m512 q[4];
    q[0] = _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(dct, gg), ig), _mm512_sub_ps(one, ig));
    q[1] = _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(dct, _mm512_loadu_ps(g.c_prev + r * g.ld_c_prev)), fg),
                         _mm512_sub_ps(one, fg));
    q[2] = _mm512_mul_ps(_mm512_mul_ps(dct, ig), _mm512_sub_ps(one, _mm512_mul_ps(gg, gg)));
    q[3] = _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(d, tc), og), _mm512_sub_ps(one, og));
    for (int k = 0; k < 4; ++k) {
      _mm512_storeu_ps(g.dgx + r * g.ld_dgx + 16 * k, q[k]);
      if (g.dgh) _mm512_storeu_ps(g.dgh + r * g.ld_dgh + 16 * k, q[k]);
    }
    _mm512_storeu_ps(g.dc + r * g.ld_dc, _mm512_mul_ps(dct, fg));
    _mm512_storeu_ps(g.dh + r * g.ld_dh, _mm512_setzero_ps());
  }
}

void gru_backward_rows(const gate_grad_rows& args) {
  const gate_grad_rows g = args;
  const __mmask16 ymask = (__mmask16)((1u << g.y_units) - 1u);
  const __m512 one = _mm512_set1_ps(1.0f);
  for (int64_t r = 0; r < g.m; ++r) {
    const float* a = g.act + r * g.ld_act;
    const __m512 d = grad_in(g, r, ymask);
    const __m512 rg = _mm512_loadu_ps(a), zg = _mm512_loadu_ps(a + 16), ng = _mm512_loadu_ps(a + 32),
                 hn = _mm512_loadu_ps(a + 48);
    const __m512 hp = _mm512_loadu_ps(g.c_prev + r * g.ld_c_prev);
    const __m512 dn = _mm512_mul_ps(_mm512_mul_ps(d, _mm512_sub_ps(one, zg)), _mm512_sub_ps(one, _mm512_mul_ps(ng, ng)));
    const __m512 dr = _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(dn, hn), rg), _mm512_sub_ps(one, rg));
    const __m512 dz = _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(d, _mm512_sub_ps(hp, ng)), zg), _mm512_sub_ps(one, zg));
    float* gx = g.dgx + r * g.ld_dgx;
    float* gh = g.dgh + r * g.ld_dgh;
    _mm512_storeu_ps(gx, dr);
    _mm512_storeu_ps(gx + 16, dz);
    _mm512_storeu_ps(gx + 32, dn);
    _mm512_storeu_ps(gh, dr);
    _mm512_storeu_ps(gh + 16, dz);
    _mm512_storeu_ps(gh + 32, _mm512_mul_ps(dn, rg));
    _mm512_storeu_ps(g.dh + r * g.ld_dh, _mm512_mul_ps(d, zg));
  }
}

}  // namespace

void lstm_gates_backward__avx512(const gate_grad_rows& g) {
  g.ktanh ? lstm_backward_rows<true>(g) : lstm_backward_rows<false>(g);
}

void gru_gates_backward__avx512(const gate_grad_rows& g) { gru_backward_rows(g); }

// 64 columns at a time in 8 accumulators of 8 doubles, every row added in order; the last
// columns under a mask.
void column_sums__avx512(const float* a, int64_t rows, int64_t ld, int64_t w, double* s) {
  for (int64_t c0 = 0; c0 < w; c0 += 64) {
    const int64_t cw = std::min<int64_t>(64, w - c0);
    __m512d acc[8];
    __mmask8 mask[8];
    for (int k = 0; k < 8; ++k) {
      const int64_t lanes = std::max<int64_t>(0, std::min<int64_t>(8, cw - 8 * k));
      mask[k] = (__mmask8)((1u << lanes) - 1u);
      acc[k] = _mm512_maskz_loadu_pd(mask[k], s + c0 + 8 * k);
    }
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = a + r * ld + c0;
      for (int k = 0; k < 8; ++k)
        acc[k] = _mm512_add_pd(acc[k], _mm512_cvtps_pd(_mm256_maskz_loadu_ps(mask[k], row + 8 * k)));
    }
    for (int k = 0; k < 8; ++k) _mm512_mask_storeu_pd(s + c0 + 8 * k, mask[k], acc[k]);
  }
}

void gru_gates__avx512(const lstm_gate_rows& g, const float* bhn) {
  g.ktanh ? gru_rows<true>(g, bhn) : gru_rows<false>(g, bhn);
}

void lstm_gates__avx512(const lstm_gate_rows& g) { g.ktanh ? lstm_rows<true>(g) : lstm_rows<false>(g); }

}  // namespace brgemm::kernels
