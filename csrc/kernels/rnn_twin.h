// The recurrent gates of brgemm.h (lstm_gates and the backward) one value at a time: the scalar twin that the
// AVX2 and AVX-512 kernels match bit for bit (the same IEEE operations in the same order, the
// fused multiply-adds written out; the kernels are compiled with -ffp-contract=off).
// Static, so each ISA translation unit keeps its own copy (see batch_block.h).
#pragma once
#include <cmath>
#include <cstdint>
#include "eltwise_twin.h"

namespace brgemm_rnn {

// 1 + e^x: x = n·ln2 + r with |r| ≤ ln2/2 (ln2 in two parts), e^r by its degree-7 Taylor
// polynomial (truncation below 2⁻²⁴ relative there), 2^n from the exponent bits, and the 1
// added in the last fused multiply-add. x is clamped to ±87 (e^87 is finite); NaN stays NaN.
struct gate_constants {
  static constexpr float clamp = 87.0f, log2e = 1.44269504f, shifter = 12582912.0f;  // 1.5·2²³: rounds n
  static constexpr float ln2_hi = 0.693145751953125f, ln2_lo = 1.42860677e-6f;
  static constexpr float c[8] = {1.0f, 1.0f, 0.5f, 1.66666672e-1f, 4.16666679e-2f, 8.33333377e-3f,
                                 1.38888892e-3f, 1.98412701e-4f};  // 1/k!
};

static inline float one_plus_exp(float x) {
  using k = gate_constants;
  x = x < -k::clamp ? -k::clamp : x > k::clamp ? k::clamp : x;
  const float n = std::fma(x, k::log2e, k::shifter) - k::shifter;
  const float r = std::fma(-n, k::ln2_lo, std::fma(-n, k::ln2_hi, x));
  float p = std::fma(r, k::c[7], k::c[6]);
  for (int i = 5; i >= 0; --i) p = std::fma(r, p, k::c[i]);
  const float s = brgemm_from_bits((uint32_t)((n == n ? (int32_t)n : 0) + 127) << 23);
  return std::fma(p, s, 1.0f);
}

static inline float gate_sigmoid(float x) { return 1.0f / one_plus_exp(-x); }
static inline float gate_tanh(float x) { return 2.0f / one_plus_exp(-2.0f * x) - 1.0f; }

// lstm_gates on one row of 16 units (brgemm.h).
static inline void lstm_row(const brgemm::lstm_gate_rows& g, int64_t r) {
  const float* pre = g.pre + r * g.ld_pre;
  const float* add = g.add + r * g.ld_add;
  const float* cp = g.c_prev + r * g.ld_c_prev;
  constexpr brgemm::activation ktanh = brgemm::activation::ktanh, ksigmoid = brgemm::activation::ksigmoid;
  for (int64_t j = 0; j < 16; ++j) {
    float a[4];
    for (int q = 0; q < 4; ++q) {
      const float x = pre[q * 16 + j] + add[q * 16 + j];
      a[q] = g.ktanh ? brgemm_activation(q == 2 ? ktanh : ksigmoid, x) : q == 2 ? gate_tanh(x) : gate_sigmoid(x);
    }
    const float c = std::fma(a[1], cp[j], a[0] * a[2]);
    const float h = a[3] * (g.ktanh ? brgemm_activation(ktanh, c) : gate_tanh(c));
    g.c[r * g.ld_c + j] = c;
    if (g.h) g.h[r * g.ld_h + j] = h;
    if (g.h16) g.h16[r * g.ld_h16 + j] = brgemm::bf16_rne_bits(h);
    if (g.y && j < g.y_units) g.y[r * g.ld_y + j] = h;
    if (g.y16 && j < g.y_units) g.y16[r * g.ld_y + j] = brgemm::bf16_rne_bits(h);
    if (g.act)
      for (int q = 0; q < 4; ++q) g.act[r * g.ld_act + q * 16 + j] = a[q];
  }
}

// gru_gates on one row of 16 units (brgemm.h).
static inline void gru_row(const brgemm::lstm_gate_rows& g, const float* bhn, int64_t r) {
  const float* pre = g.pre + r * g.ld_pre;
  const float* add = g.add + r * g.ld_add;
  const float* hp = g.c_prev + r * g.ld_c_prev;
  constexpr brgemm::activation ktanh = brgemm::activation::ktanh, ksigmoid = brgemm::activation::ksigmoid;
  for (int64_t j = 0; j < 16; ++j) {
    const float xr = add[j] + pre[j], xz = add[16 + j] + pre[16 + j];
    const float rg = g.ktanh ? brgemm_activation(ksigmoid, xr) : gate_sigmoid(xr);
    const float zg = g.ktanh ? brgemm_activation(ksigmoid, xz) : gate_sigmoid(xz);
    const float hn = pre[32 + j] + bhn[j];
    const float xn = std::fma(rg, hn, add[32 + j]);
    const float ng = g.ktanh ? brgemm_activation(ktanh, xn) : gate_tanh(xn);
    const float h = std::fma(1.0f - zg, ng, zg * hp[j]);
    if (g.h) g.h[r * g.ld_h + j] = h;
    if (g.h16) g.h16[r * g.ld_h16 + j] = brgemm::bf16_rne_bits(h);
    if (g.y && j < g.y_units) g.y[r * g.ld_y + j] = h;
    if (g.y16 && j < g.y_units) g.y16[r * g.ld_y + j] = brgemm::bf16_rne_bits(h);
    if (g.act) {
      float* a = g.act + r * g.ld_act;
      a[j] = rg, a[16 + j] = zg, a[32 + j] = ng, a[48 + j] = hn;
    }
  }
}

// lstm_gates_backward on one row of 16 units (brgemm.h).
static inline void lstm_backward_row(const brgemm::gate_grad_rows& g, int64_t r) {
  const float* a = g.act + r * g.ld_act;
  const float* c = g.c + r * g.ld_c;
  const float* cp = g.c_prev + r * g.ld_c_prev;
  const float* dy = g.dy ? g.dy + r * g.ld_dy : nullptr;
  float* dh = g.dh + r * g.ld_dh;
  float* dc = g.dc + r * g.ld_dc;
  float* gx = g.dgx + r * g.ld_dgx;
  float* gh = g.dgh ? g.dgh + r * g.ld_dgh : nullptr;
  for (int64_t j = 0; j < 16; ++j) {
    const float d = dy && j < g.y_units ? dh[j] + dy[j] : dh[j];
    const float ig = a[j], fg = a[16 + j], gg = a[32 + j], og = a[48 + j];
    const float t = g.ktanh ? brgemm_activation(brgemm::activation::ktanh, c[j]) : gate_tanh(c[j]);
    const float dct = dc[j] + d * og * (1.0f - t * t);
    const float q[4] = {dct * gg * ig * (1.0f - ig), dct * cp[j] * fg * (1.0f - fg), dct * ig * (1.0f - gg * gg),
                        d * t * og * (1.0f - og)};
    for (int k = 0; k < 4; ++k) {
      gx[16 * k + j] = q[k];
      if (gh) gh[16 * k + j] = q[k];
    }
    dc[j] = dct * fg;
    dh[j] = 0.0f;
  }
}

// gru_gates_backward on one row of 16 units (brgemm.h).
static inline void gru_backward_row(const brgemm::gate_grad_rows& g, int64_t r) {
  const float* a = g.act + r * g.ld_act;
  const float* hp = g.c_prev + r * g.ld_c_prev;
  const float* dy = g.dy ? g.dy + r * g.ld_dy : nullptr;
  float* dh = g.dh + r * g.ld_dh;
  float* gx = g.dgx + r * g.ld_dgx;
  float* gh = g.dgh + r * g.ld_dgh;
  for (int64_t j = 0; j < 16; ++j) {
    const float d = dy && j < g.y_units ? dh[j] + dy[j] : dh[j];
    const float rg = a[j], zg = a[16 + j], ng = a[32 + j], hn = a[48 + j];
    const float dn = d * (1.0f - zg) * (1.0f - ng * ng);
    gx[j] = dn * hn * rg * (1.0f - rg);
    gx[16 + j] = d * (hp[j] - ng) * zg * (1.0f - zg);
    gx[32 + j] = dn;
    gh[j] = gx[j];
    gh[16 + j] = gx[16 + j];
    gh[32 + j] = dn * rg;
    dh[j] = d * zg;
  }
}

// column_sums (brgemm.h) from column c on: each column in double, in row order.
static inline void column_sums_from(const float* a, int64_t rows, int64_t ld, int64_t c, int64_t w, double* s) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = c; j < w; ++j) s[j] += a[r * ld + j];
}

}  // namespace brgemm_rnn
