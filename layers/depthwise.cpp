// Depthwise convolution driver (depthwise.h): the rows and work split of a call shape (a plan),
// and the loops that hand rows of channel vectors to the core's stencils.
//
// Padding is materialised per row, not per image: a source row that the taps read beyond its
// ends is copied (it is in cache anyway) into a row widened with zero vectors, so that every
// result of a row reads every column tap and a row is one call of the core (a stride class of
// one, for backward data) instead of one per run of columns that see the same taps. At 7 × 7
// the border runs were two calls of one result in every three, each too short to hide the
// multiply-add latency.
#include "depthwise.h"
#include "blocks.h"
#include "conv_plan.h"
#include "brgemm/depthwise.h"
#include <omp.h>

namespace brgemm::layers {

// How the sources of one pass sit in their widened rows: source column c at `lead` + c, rows of
// `width` vectors (copy: whether the rows must be widened at all; else they are read in place,
// lead 0).
struct widened {
  int64_t lead = 0, width = 0, cols = 0;  // cols: the source's own columns that are read
  bool copy = false;
};

// Per call shape: the output rows (their row taps: input rows) and the forward's widened input
// rows; backward data's input rows (row taps: dZ rows), its stride classes (first result q,
// results m, taps as (column tap, widened dZ column of the class's first result)) and widened
// dZ rows; the output rows per forward work item.
struct depthwise_plan {
  std::vector<std::vector<tap>> rows, data_rows;
  widened fx, bx;
  struct stride_class {
    int64_t q, m;
    std::vector<tap> taps;
  };
  std::vector<stride_class> classes;
  int64_t group = 1;
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

status depthwise_conv::build(depthwise_plan& pl, int64_t n, int64_t h, int64_t w, int threads) const {
  const int64_t oh = g_.out_h(h), ow = g_.out_w(w), cb = ceil_div(g_.c, bc_), sw = g_.stride_w, dw = g_.dil_w;
  pl.rows.resize(oh);
  const forward_axis along_h{h, g_.stride_h, g_.pad_t, g_.dil_h};
  for (int64_t o = 0; o < oh; ++o) pl.rows[o] = taps_at(o, g_.r, along_h);
  pl.data_rows.resize(h);
  const backward_axis back_h{oh, g_.stride_h, g_.pad_t, g_.dil_h};
  for (int64_t i = 0; i < h; ++i) pl.data_rows[i] = taps_at(i, g_.r, back_h);
  // Forward: output column j reads widened column j·sw + s·dw through tap s, input column
  // c at pad_l + c; the columns past the last one read are never copied.
  const int64_t reach = (ow - 1) * sw + (g_.s - 1) * dw + 1;
  pl.fx.copy = g_.pad_l > 0 || reach > g_.pad_l + w;
  pl.fx.lead = pl.fx.copy ? g_.pad_l : 0;
  pl.fx.width = pl.fx.copy ? reach : w;
  pl.fx.cols = std::max<int64_t>(0, std::min(w, reach - pl.fx.lead));
  // Backward data: input column q + k·sw reads dZ column k + (q + pad_l − s·dw)/sw through the
  // taps s that divide exactly.
  pl.classes.clear();
  int64_t lo = 0, hi = ow - 1;
  for (int64_t q = 0; q < std::min(sw, w); ++q) {
    depthwise_plan::stride_class k{q, ceil_div(w - q, sw), {}};
    for (int64_t s = 0; s < g_.s; ++s) {
      const int64_t d = q + g_.pad_l - s * dw;
      if (((d % sw) + sw) % sw) continue;
      const int64_t c0 = (d - ((d % sw) + sw) % sw) / sw;  // floor: d is a multiple of sw here
      k.taps.push_back({s, c0});
      lo = std::min(lo, c0);
      hi = std::max(hi, c0 + k.m - 1);
    }
    pl.classes.push_back(std::move(k));
  }
  pl.bx.copy = lo < 0 || hi >= ow;
  pl.bx.lead = -lo;
  pl.bx.width = hi - lo + 1;
  pl.bx.cols = ow;
  for (auto& k : pl.classes)
    for (tap& t : k.taps) t.src += pl.bx.lead;
  int64_t group = oh;  // rows per forward item: enough items for every thread to get several
  while (group > 1 && n * cb * ceil_div(oh, group) < 8 * (int64_t)threads) group = ceil_div(group, 2);
  pl.group = group;
  reserve_scratch(threads, {{0, oh * ow * bc_}, {1, t_ == dtype::bf16 ? oh * ow * bc_ : 0}});
  return status::ok;
}

namespace {

// The widened rows of one plane, a ring of `span` of them (row r in slot r mod span: the rows
// one result row reads are fewer than span apart), zero outside the copied columns.
class row_ring {
 public:
  row_ring(const widened& wd, int64_t span, int64_t bc, int64_t eb, const char* plane, int64_t plane_cols)
      : wd_(wd), span_(span), bc_(bc), eb_(eb), plane_(plane), plane_cols_(plane_cols) {
    if (!wd.copy) return;
    static thread_local std::vector<char> buf;
    const int64_t vec = bc * eb, row = wd.width * vec;
    if ((int64_t)buf.size() < span * row) buf.resize((size_t)(span * row));
    rows_ = buf.data();
    for (int64_t r = 0; r < span; ++r) {  // the zeros around the columns a copy writes
      std::memset(rows_ + r * row, 0, (size_t)(wd.lead * vec));
      std::memset(rows_ + r * row + (wd.lead + wd.cols) * vec, 0, (size_t)((wd.width - wd.lead - wd.cols) * vec));
    }
    holds_.assign((size_t)span, -1);
  }
  // Row r's widened column 0.
  const char* row(int64_t r) {
    const char* src = plane_ + r * plane_cols_ * bc_ * eb_;
    if (!wd_.copy) return src;
    const int64_t slot = r % span_;
    char* dst = rows_ + slot * wd_.width * bc_ * eb_;
    if (holds_[slot] != r) {
      std::memcpy(dst + wd_.lead * bc_ * eb_, src, (size_t)(wd_.cols * bc_ * eb_));
      holds_[slot] = r;
    }
    return dst;
  }

 private:
  const widened& wd_;
  int64_t span_, bc_, eb_;
  const char* plane_;
  int64_t plane_cols_;
  char* rows_ = nullptr;
  std::vector<int64_t> holds_;
};

// The core's pointer lists for one call, grown per thread.
struct tap_lists {
  std::vector<const void*> x;
  std::vector<const float*> w;
  std::vector<float*> d;
};
tap_lists& lists(int64_t taps) {
  static thread_local tap_lists l;
  if ((int64_t)l.x.size() < taps) l.x.resize(taps), l.w.resize(taps), l.d.resize(taps);
  return l;
}

}  // namespace

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
  const int64_t groups = ceil_div(oh, plan->group), span = (g_.r - 1) * g_.dil_h + 1;
  const element et = bf16 ? element::bf16 : element::f32;
  char* out = zb ? (char*)zb : (char*)yb;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t item = 0; item < n * cb * groups; ++item) {
    const int64_t plane = item / groups, c = plane % cb, o0 = item % groups * plan->group;
    const int64_t o1 = std::min(oh, o0 + plan->group);
    row_ring ring(plan->fx, span, bc_, xe, (const char*)xb + plane * plane_x * xe, w);
    const float* wc = w_.data() + c * taps * bc_;
    tap_lists& l = lists(taps);
    depthwise_row r;
    r.m = ow, r.bc = bc_, r.x = l.x.data(), r.x_step = g_.stride_w * bc_, r.xt = et, r.w = l.w.data();
    r.bias = bias ? bias + c * bc_ : nullptr, r.y_step = bc_, r.yt = zb ? element::f32 : et;
    r.act = zb ? activation::none : act_;
    for (int64_t o = o0; o < o1; ++o) {
      int64_t k = 0;
      for (const tap& tr : plan->rows[o]) {
        const char* row = ring.row(tr.src);
        for (int64_t s = 0; s < g_.s; ++s, ++k) {
          l.x[k] = row + s * g_.dil_w * bc_ * xe;
          l.w[k] = wc + (tr.t * g_.s + s) * bc_;
        }
      }
      r.taps = k;
      const int64_t at = plane * plane_y + o * ow * bc_;
      r.add = add ? (const char*)add + at * ye : nullptr;
      r.y = out + at * ye;
      depthwise_forward(r);
      if (zb) {  // the activation of the row while it is in cache
        const int64_t len = ow * bc_;
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
  const int64_t span = (g_.r - 1) * g_.dil_h + 1;
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
      const float* wc = w_.data() + c * taps * bc_;
      float* dwc = mine + c * taps * bc_;
      tap_lists& l = lists(taps);
      // Weight gradient: the forward's rows, dZ in place of the output.
      {
        row_ring ring(plan->fx, span, bc_, xe, (const char*)xb + plane * plane_x * xe, w);
        depthwise_grad_row gr;
        gr.m = ow, gr.bc = bc_, gr.g_step = bc_, gr.x = l.x.data(), gr.x_step = g_.stride_w * bc_, gr.xt = et;
        gr.dw = l.d.data(), gr.db = bg ? mine + cb * taps * bc_ + c * bc_ : nullptr;
        for (int64_t o = 0; o < oh; ++o) {
          int64_t k = 0;
          for (const tap& tr : plan->rows[o]) {
            const char* row = ring.row(tr.src);
            for (int64_t s = 0; s < g_.s; ++s, ++k) {
              l.x[k] = row + s * g_.dil_w * bc_ * xe;
              l.d[k] = dwc + (tr.t * g_.s + s) * bc_;
            }
          }
          gr.taps = k;
          gr.g = dz + o * ow * bc_;
          depthwise_weight_grad(gr);
        }
      }
      // Backward data: the stencil from dZ into input rows, by stride class of input columns.
      if (gxb) {
        row_ring ring(plan->bx, span, bc_, 4, (const char*)dz, ow);
        depthwise_row r;
        r.bc = bc_, r.x = l.x.data(), r.x_step = bc_, r.xt = element::f32, r.w = l.w.data();
        r.y_step = g_.stride_w * bc_, r.yt = element::f32;
        for (int64_t i = 0; i < h; ++i)
          for (const auto& cls : plan->classes) {
            int64_t k = 0;
            for (const tap& tr : plan->data_rows[i]) {
              const char* row = ring.row(tr.src);
              for (const tap& ts : cls.taps) {
                l.x[k] = row + ts.src * bc_ * 4;
                l.w[k++] = wc + (tr.t * g_.s + ts.t) * bc_;
              }
            }
            r.m = cls.m;
            r.taps = k;
            r.y = gxb + plane * plane_x + (i * w + cls.q) * bc_;
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
