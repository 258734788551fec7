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

template <bool K>
void lstm_rows(const lstm_gate_rows& g) {
  const ktanh_table32 t;
  const __mmask16 ymask = (__mmask16)((1u << g.y_units) - 1u);
  for (int64_t r = 0; r < g.m; ++r) {
    const float* pre = g.pre + r * g.ld_pre;
    const float* add = g.add + r * g.ld_add;
    __m512 x[4], a[4];
    for (int q = 0; q < 4; ++q) x[q] = _mm512_add_ps(_mm512_loadu_ps(pre + 16 * q), _mm512_loadu_ps(add + 16 * q));
    if (K) {
      a[0] = k_family16<activation::ksigmoid>(x[0], t);
      a[1] = k_family16<activation::ksigmoid>(x[1], t);
      a[2] = k_family16<activation::ktanh>(x[2], t);
      a[3] = k_family16<activation::ksigmoid>(x[3], t);
    } else {
      a[0] = sigmoid16(x[0]);
      a[1] = sigmoid16(x[1]);
      a[2] = tanh16(x[2]);
      a[3] = sigmoid16(x[3]);
    }
    const __m512 c = _mm512_fmadd_ps(a[1], _mm512_loadu_ps(g.c_prev + r * g.ld_c_prev), _mm512_mul_ps(a[0], a[2]));
    const __m512 h = _mm512_mul_ps(a[3], K ? k_family16<activation::ktanh>(c, t) : tanh16(c));
    _mm512_storeu_ps(g.c + r * g.ld_c, c);
    if (g.h) _mm512_storeu_ps(g.h + r * g.ld_h, h);
    if (g.h16) _mm256_storeu_si256((__m256i*)(g.h16 + r * g.ld_h16), _mm512_cvtepi32_epi16(bf16_rne(h)));
    if (g.y) {
      if (g.y_units == 16)
        _mm512_storeu_ps(g.y + r * g.ld_y, h);
      else
        _mm512_mask_storeu_ps(g.y + r * g.ld_y, ymask, h);
    }
    if (g.act)
      for (int q = 0; q < 4; ++q) _mm512_storeu_ps(g.act + r * g.ld_act + 16 * q, a[q]);
  }
}

}  // namespace

void lstm_gates__avx512(const lstm_gate_rows& g) { g.ktanh ? lstm_rows<true>(g) : lstm_rows<false>(g); }

}  // namespace brgemm::kernels
