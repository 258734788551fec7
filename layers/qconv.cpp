// The int8 convolution for inference (conv.h's qconv_layer): u8 activations, s8 weights packed
// in VNNI-4 with each tap's column sums (for a nonzero input zero point), the requantizing
// epilogue's per-channel scale and bias; its pass is conv_plan's, as the float layer's.
#include "conv.h"
#include "conv_plan.h"
#include "blocks.h"
#include <omp.h>

namespace brgemm::layers {

qconv_layer::qconv_layer(const conv_geometry& g, brgemm::activation act, out_type out)
    : g_(g), bc_(conv_block(g.c)), bk_(conv_block(g.k)), act_(act), out_(out) {
  fs_ = split_channels(g.c, g.k, g.groups, bc_, bk_, 4);
}

bool qconv_layer::refresh(const int8_t* w, const float* w_scale, const float* b, const conv_quant& q) {
  const bool w_new = w_seen_.refresh({{w, g_.k * g_.group_c() * g_.r * g_.s}}, [&] {
    // The forward blocks as conv_layer's (pack_pass), in VNNI-4, and each tap's column sums.
    const int64_t taps = g_.r * g_.s, ki = fs_.ki, ko = fs_.ko, blk = ki * ko, nj = (int64_t)fs_.q0.size();
    const int64_t gc = g_.group_c(), gk = g_.group_k(), pblk = packed_b_elements(dtype::u8s8, ki, ko);
    char* fwd = aligned(fwd_, nj * fs_.per * taps * pblk);
    tapsum_.assign((size_t)(nj * taps * ko), 0);
#pragma omp parallel for num_threads(threads_for(8.0 * nj * fs_.per * blk * taps)) schedule(static)
    for (int64_t j = 0; j < nj; ++j) {
      int8_t* f = (int8_t*)scratch(0, blk / 4);  // one tap as plain (ki × ko) s8
      std::vector<int32_t> colsum((size_t)ko);
      const int64_t k0 = j * ko, ks = std::min(ko, g_.k - k0);
      for (int64_t t = 0; t < fs_.per; ++t) {
        const int64_t c0 = (fs_.q0[j] + t) * ki, cs = std::min(ki, g_.c - c0);
        for (int64_t tap = 0; tap < taps; ++tap) {
          std::fill(f, f + blk, (int8_t)0);
          for (int64_t kk = 0; kk < ks; ++kk)
            for (int64_t cc = 0; cc < cs; ++cc)
              if ((k0 + kk) / gk == (c0 + cc) / gc) f[cc * ko + kk] = w[((k0 + kk) * gc + (c0 + cc) % gc) * taps + tap];
          pack_b(dtype::u8s8, f, ki, ko, ko, fwd + ((j * fs_.per + t) * taps + tap) * pblk, ko, colsum.data());
          int32_t* sum = tapsum_.data() + (j * taps + tap) * ko;
          for (int64_t x = 0; x < ko; ++x) sum[x] += colsum[x];
        }
      }
    }
    if (g_.groups == 1 && packs_rows(dtype::u8s8, ki, bc_))
      pack_rows(dtype::u8s8, g_, ki, ko, w,
                aligned(fwd_rows_, nj * g_.r * packed_b_elements(dtype::u8s8, g_.s * ki, ko)));
  });
  // The epilogue's scale and bias follow from the rest (q compared bytewise: no padding in it).
  const bool rest_new = rest_seen_.refresh({{w_scale, g_.k * 4}, {b, g_.k * 4}, {&q, sizeof q}}, [&] {
    has_bias_ = b != nullptr;
    q_ = q;
    // A u8 output through no activation or ReLU (which commutes with a positive factor) folds
    // 1/y_scale into the scale and the bias: the epilogue then skips its division.
    fold_ = out_ == out_type::u8 && (act_ == activation::none || act_ == activation::relu);
    const float div = fold_ ? q.y_scale : 1.0f;
    const int64_t kp = round_up(g_.k, bk_);
    bias_.assign((size_t)kp, 0.0f);
    scale_.assign((size_t)kp, 0.0f);
    for (int64_t k = 0; k < g_.k; ++k) {
      scale_[k] = fold_ ? q.x_scale * w_scale[k] / div : q.x_scale * w_scale[k];
      if (b) bias_[k] = fold_ ? b[k] / div : b[k];
    }
  });
  return w_new || rest_new;
}

status qconv_layer::forward(int64_t n, int64_t h, int64_t w, const uint8_t* xb, void* yb, const uint8_t* add,
                            float add_scale, int32_t add_zero) {
  if (add && out_ != out_type::u8) return status::bad_epilogue;
  merge_rows(g_, h, w);
  const int64_t oh = g_.out_h(h), ow = g_.out_w(w), cb = ceil_div(g_.c, bc_), kb = ceil_div(g_.k, bk_);
  const int threads = threads_for(2.0 * n * oh * ow * g_.k * g_.group_c() * g_.r * g_.s);
  conv_plan_key key = zeroed<conv_plan_key>();
  key.n = n, key.h = h, key.w = w, key.level = (int32_t)active_isa(), key.threads = threads;
  key.bias = has_bias_, key.zero = q_.x_zero != 0, key.add = add != nullptr;
  std::shared_ptr<const conv_pass_plan> plan;
  if (status s = fwd_plans_.get(key, &plan, [&](conv_pass_plan& pl) {
        pass_shape p{dtype::u8s8, n, cb, kb, g_.r, g_.s, bc_, bk_, h, w, g_.stride_w, oh, ow, 1, g_.stride_h};
        p.e.out = out_;
        p.e.act = act_;
        p.e.bias = has_bias_;
        p.e.add = add != nullptr;
        p.e.scale = scale_kind::column;
        p.e.col_offset = q_.x_zero != 0;
        p.threads = threads;
        p.merge = true;
        return build_pass(pl, p, forward_rows(g_, h, oh), forward_runs(g_, w, ow), fs_);
      });
      s != status::ok)
    return s;
  pass_data x{xb, aligned(fwd_, 0)};
  x.wts_rows = fwd_rows_.empty() ? nullptr : aligned(fwd_rows_, 0);
  x.ea.bias = has_bias_ ? bias_.data() : nullptr;
  x.ea.scale = scale_.data();
  x.ea.out_scale = fold_ ? 1.0f : q_.y_scale;
  x.ea.out_zero_point = q_.y_zero;
  // The residual in the epilogue's units: those of y_scale when 1/y_scale is folded in.
  x.ea.add_scale = fold_ ? add_scale / q_.y_scale : add_scale;
  x.ea.add_zero = add_zero;
  x.add = add;
  if (q_.x_zero) {
    x.tapsum = tapsum_.data();
    x.zero = q_.x_zero;
  }
  x.out = yb;
  run_pass(*plan, x);
  return status::ok;
}

}  // namespace brgemm::layers
