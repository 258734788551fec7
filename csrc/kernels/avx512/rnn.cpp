// The recurrent gates (brgemm.h) with AVX-512: a row's 16 units are one vector per gate, every
// value stays in registers from the tile to the stores. The twin's operations (rnn_twin.h).
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

}  // namespace

void gru_gates__avx512(const lstm_gate_rows& g, const float* bhn) {
  g.ktanh ? gru_rows<true>(g, bhn) : gru_rows<false>(g, bhn);
}

void lstm_gates__avx512(const lstm_gate_rows& g) { g.ktanh ? lstm_rows<true>(g) : lstm_rows<false>(g); }

}  // namespace brgemm::kernels
