// Depthwise convolution driver (depthwise.h): the rows, runs and work split of a call shape
// (a plan), and the loops that hand rows of channel vectors to the core's stencils.
#include "depthwise.h"
#include "blocks.h"
#include "conv_plan.h"
#include "brgemm/depthwise.h"
#include <omp.h>
#include <cstdlib>

namespace brgemm::layers {

// Per call shape: the forward's output rows (their row taps) and column runs, backward data's
// input rows and column runs (by stride class), and the rows per work item.
struct depthwise_plan {
  std::vector<std::vector<tap>> rows, data_rows;
  std::vector<run> runs, data_runs;
  int64_t group = 1;  // output rows per forward work item
};

depthwise_conv::depthwise_conv(dtype t, const conv_geometry& g, int64_t bc, brgemm::activation act)
    : t_(t), g_(g), bc_(bc), act_(act) {}

depthwise_conv::~depthwise_conv() = default;

void depthwise_conv::pack(const float* w) {
  const int64_t taps = g_.r * g_.s, cb = ceil_div(g_.c, bc_);
  w_.assign((size_t)(cb * taps * bc_), 0.0f);
  for (int64_t c = 0; c < g_.c; ++c)
    for (int64_t tap = 0; tap < taps; ++tap) {
      float v = w[c * taps + tap];
      if (t_ == dtype::bf16) {  // the value the products use
        uint16_t b;
        f32_to_bf16(&v, &b, 1);
        bf16_to_f32(&b, &v, 1);
      }
      w_[((c / bc_) * taps + tap) * bc_ + c % bc_] = v;
    }
}

namespace {

// The taps of one result row and run as the core's pointer lists: sources from `src` (the
// plane's first vector; rows of `cols` vectors of bc elements of `eb` bytes), weights from `w`
// (the block's [R][S][bc]), and with dw the weight gradient's vectors likewise.
struct tap_lists {
  std::vector<const void*> x;
  std::vector<const float*> w;
  std::vector<float*> d;
  int64_t fill(const std::vector<tap>& row_taps, const run& u, const char* src, int64_t cols, int64_t bc, int64_t eb,
               const float* wb, int64_t s_taps, float* dw = nullptr) {
    int64_t k = 0;
    for (const tap& tr : row_taps)
      for (const tap& ts : u.taps) {
        x[k] = src + (tr.src * cols + ts.src) * bc * eb;
        w[k] = wb + (tr.t * s_taps + ts.t) * bc;
        if (dw) d[k] = dw + (tr.t * s_taps + ts.t) * bc;
        ++k;
      }
    return k;
  }
};
tap_lists& lists(int64_t taps) {
  static thread_local tap_lists l;
  if ((int64_t)l.x.size() < taps) l.x.resize(taps), l.w.resize(taps), l.d.resize(taps);
  return l;
}

}  // namespace

status depthwise_conv::build(depthwise_plan& pl, int64_t n, int64_t h, int64_t w, int threads) const {
  const int64_t oh = g_.out_h(h), ow = g_.out_w(w), cb = ceil_div(g_.c, bc_);
  pl.rows.resize(oh);
  const forward_axis along_h{h, g_.stride_h, g_.pad_t, g_.dil_h};
  for (int64_t o = 0; o < oh; ++o) pl.rows[o] = taps_at(o, g_.r, along_h);
  pl.runs = make_runs(ow, 1, g_.stride_w, g_.s, forward_axis{w, g_.stride_w, g_.pad_l, g_.dil_w});
  pl.data_rows.resize(h);
  const backward_axis back_h{oh, g_.stride_h, g_.pad_t, g_.dil_h};
  for (int64_t i = 0; i < h; ++i) pl.data_rows[i] = taps_at(i, g_.r, back_h);
  pl.data_runs = make_runs(w, g_.stride_w, 1, g_.s, backward_axis{ow, g_.stride_w, g_.pad_l, g_.dil_w});
  int64_t group = oh;  // rows per forward item: enough items for every thread to get several
  while (group > 1 && n * cb * ceil_div(oh, group) < 8 * (int64_t)threads) group = ceil_div(group, 2);
  pl.group = group;
  reserve_scratch(threads, {{0, oh * ow * bc_}, {1, t_ == dtype::bf16 ? oh * ow * bc_ : 0}});
  return status::ok;
}

status depthwise_conv::forward(int64_t n, int64_t h, int64_t w, const void* xb, void* yb, float* zb, const void* add,
                               const float* bias) {
  const int64_t oh = g_.out_h(h), ow = g_.out_w(w), cb = ceil_div(g_.c, bc_), taps = g_.r * g_.s;
  const int threads = threads_for(2.0 * n * oh * ow * g_.c * taps);
  conv_plan_key key = zeroed<conv_plan_key>();
  key.n = n, key.h = h, key.w = w, key.threads = threads;
  std::shared_ptr<const depthwise_plan> plan;
  if (status s = plans_.get(key, &plan, [&](depthwise_plan& pl) { return build(pl, n, h, w, threads); });
      s != status::ok)
    return s;
  const bool bf16 = t_ == dtype::bf16;
  const int64_t xe = bf16 ? 2 : 4, ye = zb ? 4 : xe, plane_x = h * w * bc_, plane_y = oh * ow * bc_;
  const int64_t groups = ceil_div(oh, plan->group);
  const element et = bf16 ? element::bf16 : element::f32;
  char* out = zb ? (char*)zb : (char*)yb;
  static const bool prefetch = !getenv("NOPF");
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t item = 0; item < n * cb * groups; ++item) {
    const int64_t plane = item / groups, c = plane % cb, o0 = item % groups * plan->group;
    const int64_t o1 = std::min(oh, o0 + plan->group);
    const char* src = (const char*)xb + plane * plane_x * xe;
    tap_lists& l = lists(taps);
    depthwise_row r;
    r.bc = bc_, r.x = l.x.data(), r.x_step = g_.stride_w * bc_, r.xt = et, r.w = l.w.data();
    r.bias = bias ? bias + c * bc_ : nullptr, r.y_step = bc_, r.yt = zb ? element::f32 : et;
    r.act = zb ? activation::none : act_;
    for (int64_t o = o0; o < o1; ++o) {
      // The input rows the next output row adds, fetched while this one computes: the kernel's
      // loads (a few pixels of every tap's row, tap after tap) are too scattered for the
      // hardware prefetchers.
      if (prefetch) {
        const int64_t last = o * g_.stride_h - g_.pad_t + (g_.r - 1) * g_.dil_h;
        for (int64_t ih = std::max<int64_t>(last + 1, 0); ih < std::min(h, last + 1 + g_.stride_h); ++ih)
          for (int64_t b = 0; b < w * bc_ * xe; b += 64) __builtin_prefetch(src + ih * w * bc_ * xe + b);
      }
      for (const run& u : plan->runs) {
        const int64_t at = plane * plane_y + (o * ow + u.p0) * bc_;
        r.m = u.m;
        r.taps = l.fill(plan->rows[o], u, src, w, bc_, xe, w_.data() + c * taps * bc_, g_.s);
        r.add = add ? (const char*)add + at * ye : nullptr;
        r.y = out + at * ye;
        depthwise_forward(r);
      }
      if (zb) {  // the activation of the row while it is in cache
        const int64_t at = plane * plane_y + o * ow * bc_, len = ow * bc_;
        if (!bf16) {
          activation_f32(act_, zb + at, (float*)yb + at, len);
        } else {
          float* y = scratch(0, len);
          activation_f32(act_, zb + at, y, len);
          f32_to_bf16(y, (uint16_t*)yb + at, len);
        }
      }
    }
  }
  return status::ok;
}

status depthwise_conv::backward(int64_t n, int64_t h, int64_t w, const float* gyb, const void* yb, const float* zb,
                                const void* xb, float* gxb, float* wg, float* bg, bool accumulate) {
  const int64_t oh = g_.out_h(h), ow = g_.out_w(w), cb = ceil_div(g_.c, bc_), taps = g_.r * g_.s;
  const int threads = threads_for(2.0 * n * oh * ow * g_.c * taps);
  conv_plan_key key = zeroed<conv_plan_key>();
  key.n = n, key.h = h, key.w = w, key.threads = threads;
  std::shared_ptr<const depthwise_plan> plan;
  if (status s = plans_.get(key, &plan, [&](depthwise_plan& pl) { return build(pl, n, h, w, threads); });
      s != status::ok)
    return s;
  const bool bf16 = t_ == dtype::bf16;
  const int64_t xe = bf16 ? 2 : 4, plane_x = h * w * bc_, plane_y = oh * ow * bc_, part = cb * (taps + 1) * bc_;
  const element et = bf16 ? element::bf16 : element::f32;
  // Per thread: dW [C/bc][R][S][bc] then db [C/bc][bc], summed into wg and bg at the end.
  parts_.assign((size_t)(threads * part), 0.0f);
  float* parts = parts_.data();
#pragma omp parallel num_threads(threads)
  {
    float* mine = parts + omp_get_thread_num() * part;
#pragma omp for schedule(static)
    for (int64_t plane = 0; plane < n * cb; ++plane) {
      const int64_t c = plane % cb;
      // dZ = dY ⊙ act'(·) for the plane (dY itself without an activation).
      const float* dz = activation_grad(act_, gyb, yb, bf16, zb, plane * plane_y, plane_y, scratch(0, plane_y), 1);
      const char* src = (const char*)xb + plane * plane_x * xe;
      const float* wc = w_.data() + c * taps * bc_;
      tap_lists& l = lists(taps);
      // Weight gradient: the forward's rows and runs, dZ in place of the output.
      depthwise_grad_row gr;
      gr.bc = bc_, gr.g_step = bc_, gr.x = l.x.data(), gr.x_step = g_.stride_w * bc_, gr.xt = et;
      gr.db = bg ? mine + cb * taps * bc_ + c * bc_ : nullptr;
      for (int64_t o = 0; o < oh; ++o)
        for (const run& u : plan->runs) {
          gr.m = u.m;
          gr.taps = l.fill(plan->rows[o], u, src, w, bc_, xe, wc, g_.s, mine + c * taps * bc_);
          gr.dw = l.d.data();
          gr.g = dz + (o * ow + u.p0) * bc_;
          depthwise_weight_grad(gr);
        }
      // Backward data: the stencil from dZ into input rows, by stride class of input columns.
      if (gxb) {
        depthwise_row r;
        r.bc = bc_, r.x = l.x.data(), r.x_step = bc_, r.xt = element::f32, r.w = l.w.data();
        r.y_step = g_.stride_w * bc_, r.yt = element::f32;
        for (int64_t i = 0; i < h; ++i)
          for (const run& u : plan->data_runs) {
            r.m = u.m;
            r.taps = l.fill(plan->data_rows[i], u, (const char*)dz, ow, bc_, 4, wc, g_.s);
            r.y = gxb + plane * plane_x + (i * w + u.p0) * bc_;
            depthwise_forward(r);
          }
      }
    }
    // The threads' parts summed into the plain (C, 1, R, S) gradient and the bias's.
#pragma omp for schedule(static)
    for (int64_t ch = 0; ch < g_.c; ++ch) {
      for (int64_t tap = 0; tap < taps; ++tap) {
        float v = 0.0f;
        for (int t = 0; t < threads; ++t) v += parts[t * part + ((ch / bc_) * taps + tap) * bc_ + ch % bc_];
        float& gw = wg[ch * taps + tap];
        gw = (accumulate ? gw : 0.0f) + v;
      }
      if (bg) {
        float v = 0.0f;
        for (int t = 0; t < threads; ++t) v += parts[t * part + cb * taps * bc_ + ch];
        bg[ch] = (accumulate ? bg[ch] : 0.0f) + v;
      }
    }
  }
  return status::ok;
}

}  // namespace brgemm::layers
