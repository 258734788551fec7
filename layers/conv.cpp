// Direct convolution driver (conv.h). Each output row of a block of output channels is a few
// BRGEMM calls, one per run of output columns that see the same kernel taps:
//   forward          Y[n][kb][oh][ow…] = act(Σ_{cb,r,s} X[n][cb][ih][iw…] · Wf[kb][cb][r][s] + b)
//   backward data    dX[n][cb][ih][iw…] = Σ_{kb,r,s} dZ[n][kb][oh][ow…] · Wb[cb][kb][r][s]
//   weight gradient  dWᵀ[kb][cb][r][s] = Σ_{n,oh} dZᵀ[n][kb][·][oh, ow…] · X[n][cb][ih][iw…]
// with ih = oh·stride − pad + r·dilation (iw likewise). Padding is never materialised: a border
// row or column has fewer taps in its batch (an empty batch writes zeros, then the epilogue).
// For stride > 1, backward data walks its results in stride classes (iw ≡ q mod stride), each
// run writing every stride-th column. The plans (runs, kernels, offset tables) and the loop
// that runs them are conv_plan.cpp's, the blocked layout's conversions conv_layout.cpp's; here are
// the weights and the passes.
#include "conv.h"
#include "conv_plan.h"
#include "depthwise.h"
#include "winograd.h"
#include "blocks.h"
#include <omp.h>

namespace brgemm::layers {

// The weights of a pass as its kernels read them: for result block j (of sp.ko channels), each
// of its sp.per source blocks (of sp.ki) and each tap, the (ki × ko) block of
// W(result channel, source channel, tap) in t's B layout; zero outside the counts and between
// channels of different groups (src/groups and res/groups channels per group). w: the plain
// (K, C/groups, R, S) weight; res_inner: W's input channels are the pass's results (backward
// data). A training step repacks every layer on every step, so the blocks are moved by the
// core's transpose: ungrouped, a block pair is one transpose of the W rows it covers (forward)
// or one per source channel (backward), the element-by-element scatter it replaces ran at
// ~1 ns a value (512 → 512 3×3, f32: 5.6 ms of a 7×7 N = 1 forward's 8.8).
void pack_pass(dtype t, const channel_split& sp, int64_t src, int64_t res, int64_t groups, int64_t gc, int64_t taps,
               const float* w, char* dst, bool res_inner) {
  const int64_t ki = sp.ki, ko = sp.ko, blk = ki * ko, nj = (int64_t)sp.q0.size();
  const int64_t bytes = packed_b_elements(t, ki, ko) * dtype_b_bytes(t);  // an odd ki: pairs, quads padded
  const int64_t gs = src / groups, gr = res / groups;
  const bool grouped = groups > 1;
  // W's values of result channel r and source channel s (their `taps` values are consecutive).
  auto taps_of = [&](int64_t r, int64_t s) {
    const int64_t k = res_inner ? s : r, c = res_inner ? r : s;
    return w + (k * gc + (grouped ? c % gc : c)) * taps;
  };
#pragma omp parallel for collapse(2) num_threads(threads_for(8.0 * nj * sp.per * blk * taps)) schedule(static)
  for (int64_t j = 0; j < nj; ++j)
    for (int64_t q = 0; q < sp.per; ++q) {
      const int64_t s0 = (sp.q0[j] + q) * ki, r0 = j * ko;
      const int64_t rn = std::min(ko, res - r0), sn = std::min(ki, src - s0);
      char* out = dst + (j * sp.per + q) * taps * bytes;
      // The taps as plain (ki × ko) f32 blocks, `step` apart: f32 ones are the packed blocks
      // themselves; otherwise a block of 16 KB would put every tap's value of one (r, s) pair in
      // the same L1 set (4 KB aliasing), so they are spaced.
      const bool direct = t == dtype::f32;
      const int64_t step = direct ? blk : blk + 16;
      float* f = direct ? (float*)out : scratch(0, taps * step);
      if (grouped || rn < ko || sn < ki) std::fill(f, f + taps * step, 0.0f);
      if (grouped) {  // value by value, W in its own order (the inner loop along its input channels)
        auto put = [&](int64_t kk, int64_t cc) {
          if ((r0 + kk) / gr != (s0 + cc) / gs) return;
          const float* v = taps_of(r0 + kk, s0 + cc);
          for (int64_t tap = 0; tap < taps; ++tap) f[tap * step + cc * ko + kk] = v[tap];
        };
        if (res_inner) {
          for (int64_t cc = 0; cc < sn; ++cc)
            for (int64_t kk = 0; kk < rn; ++kk) put(kk, cc);
        } else {
          for (int64_t kk = 0; kk < rn; ++kk)
            for (int64_t cc = 0; cc < sn; ++cc) put(kk, cc);
        }
      } else if (res_inner) {  // source channel cc: rn results × taps, contiguous → taps rows of f
        for (int64_t cc = 0; cc < sn; ++cc) transpose(taps_of(r0, s0 + cc), rn, taps, taps, f + cc * ko, step);
      } else if (taps == 1) {  // rn W rows of sn values → the block
        transpose(taps_of(r0, s0), rn, sn, gc, f, ko);
      } else {  // rn W rows of sn·taps values → rows (cc, tap), each then moved to its tap's block
        float* tr = scratch(2, sn * taps * ko);
        transpose(taps_of(r0, s0), rn, sn * taps, gc * taps, tr, ko);
        for (int64_t cc = 0; cc < sn; ++cc)
          for (int64_t tap = 0; tap < taps; ++tap)
            std::memcpy(f + tap * step + cc * ko, tr + (cc * taps + tap) * ko, (size_t)rn * 4);
      }
      if (direct) continue;
      uint16_t* b16 = (uint16_t*)scratch(1, blk);  // one block in bf16 when that is the weights' type
      for (int64_t tap = 0; tap < taps; ++tap) {
        const void* s = f + tap * step;
        char* o = out + tap * bytes;
        if (t == dtype::bf16) {
          f32_to_bf16(f + tap * step, b16, blk);
          if (ki % 2 == 0) {
            interleave_pairs(b16, ki, ko, (uint16_t*)o);
            continue;
          }
          s = b16;
        }
        pack_b(t, s, ki, ko, ko, o, ko, nullptr);
      }
    }
}

// The forward weights of an ungrouped layer by kernel row, where merged runs need them
// (conv_plan.h's packs_rows): per result block j and kernel row r, the (S·ki) × ko matrix
// whose row s·ki + c is tap (r, s)'s channel c, packed as one B (its pairs or quads run across
// the taps), at (j·R + r)·packed_b_elements(t, S·ki, ko). T: float (f32, bf16) or int8 (u8s8).
template <class T>
void pack_rows(dtype t, const conv_geometry& g, int64_t ki, int64_t ko, const T* w, char* dst) {
  const int64_t nj = ceil_div(g.k, ko), kr = g.s * ki, rows = packed_b_elements(t, kr, ko) * dtype_b_bytes(t);
  std::vector<T> m((size_t)(kr * ko));
  std::vector<uint16_t> b16(t == dtype::bf16 ? m.size() : 0);
  for (int64_t j = 0; j < nj; ++j)
    for (int64_t r = 0; r < g.r; ++r) {
      std::fill(m.begin(), m.end(), T(0));
      for (int64_t kk = 0; kk < std::min(ko, g.k - j * ko); ++kk)
        for (int64_t s = 0; s < g.s; ++s)
          for (int64_t c = 0; c < g.c; ++c) m[(s * ki + c) * ko + kk] = w[(((j * ko + kk) * g.c + c) * g.r + r) * g.s + s];
      const void* src = m.data();
      if constexpr (std::is_same_v<T, float>)
        if (t == dtype::bf16) f32_to_bf16(m.data(), b16.data(), (int64_t)m.size()), src = b16.data();
      pack_b(t, src, kr, ko, ko, dst + (j * g.r + r) * rows, ko, nullptr);
    }
}
template void pack_rows<float>(dtype, const conv_geometry&, int64_t, int64_t, const float*, char*);
template void pack_rows<int8_t>(dtype, const conv_geometry&, int64_t, int64_t, const int8_t*, char*);

conv_layer::conv_layer(dtype t, const conv_geometry& g, brgemm::activation act)
    : t_(t), g_(g), bc_(conv_block(g.c)), bk_(conv_block(g.k)), act_(act) {
  if (g.depthwise()) {
    dw_ = std::make_shared<depthwise_conv>(t, g, bc_, act);
    return;
  }
  const int64_t align = t == dtype::bf16 ? 2 : 1;
  fs_ = split_channels(g.c, g.k, g.groups, bc_, bk_, align);
  bs_ = split_channels(g.k, g.c, g.groups, bk_, bc_, align);
}

// Forward blocks hold W, backward ones Wᵀ (results are input channels there): both from the
// plain (K, C/groups, R, S) weight.
void conv_layer::pack(const float* w) {
  if (dw_) return dw_->pack(w);
  const int64_t taps = g_.r * g_.s, gc = g_.group_c(), wb = dtype_b_bytes(t_);
  auto blocks = [&](const channel_split& sp) {
    return (int64_t)sp.q0.size() * sp.per * taps * packed_b_elements(t_, sp.ki, sp.ko) * wb;
  };
  pack_pass(t_, fs_, g_.c, g_.k, g_.groups, gc, taps, w, aligned(fwd_, blocks(fs_)), false);
  pack_pass(t_, bs_, g_.k, g_.c, g_.groups, gc, taps, w, aligned(bwd_, blocks(bs_)), true);
  if (g_.groups == 1 && packs_rows(t_, fs_.ki, bc_))
    pack_rows(t_, g_, fs_.ki, fs_.ko, w,
              aligned(fwd_rows_, ceil_div(g_.k, fs_.ko) * g_.r * packed_b_elements(t_, g_.s * fs_.ki, fs_.ko) * wb));
  if (stacks_rows())
    stacked_weights(g_, bc_, bk_, w, (float*)aligned(bwd_t_, ceil_div(g_.k, bk_) * g_.s * g_.r * bc_ * bk_ * 4));
}

// Whether each packed block of `bytes` holds a nonzero bit (−0.0 counts: kept, never wrong).
static std::vector<uint8_t> nonzero_blocks(const char* p, int64_t count, int64_t bytes, int64_t& nonzero) {
  std::vector<uint8_t> keep((size_t)count, 0);
  nonzero = 0;
  for (int64_t b = 0; b < count; ++b) {
    const char* x = p + b * bytes;
    for (int64_t i = 0; i < bytes && !keep[b]; ++i) keep[b] = x[i] != 0;
    nonzero += keep[b];
  }
  return keep;
}

void conv_layer::index_blocks() {
  if (dw_) return;
  const int64_t taps = g_.r * g_.s, wb = dtype_b_bytes(t_);
  int64_t nz_f = 0, nz_b = 0;
  const int64_t nf = (int64_t)fs_.q0.size() * fs_.per * taps, nb = (int64_t)bs_.q0.size() * bs_.per * taps;
  std::vector<uint8_t> f = nonzero_blocks(aligned(fwd_, 0), nf, packed_b_elements(t_, fs_.ki, fs_.ko) * wb, nz_f);
  std::vector<uint8_t> b = nonzero_blocks(aligned(bwd_, 0), nb, packed_b_elements(t_, bs_.ki, bs_.ko) * wb, nz_b);
  density_ = nf ? (double)nz_f / (double)nf : 1.0;
  const bool on = policy_ == sparse_policy::sparse ||
                  (policy_ == sparse_policy::automatic && density_ <= conv_sparse_crossover);
  if (!on) {
    sparse_gen_ = 0;
    return;
  }
  if (sparse_gen_ == 0 || f != fwd_kept_ || b != bwd_kept_) sparse_gen_ = ++gen_;  // plans key on it
  fwd_kept_ = std::move(f);
  bwd_kept_ = std::move(b);
}

void conv_layer::set_mask(const uint8_t* mask) {
  masked_.clear();
  if (!mask || dw_) return;
  const int64_t taps = g_.r * g_.s, gc = g_.group_c(), gk = g_.group_k(), per = fs_.per;
  masked_.assign(fs_.q0.size() * per * taps, 1);
  for (size_t j = 0; j < fs_.q0.size(); ++j)
    for (int64_t q = 0; q < per; ++q)
      for (int64_t tap = 0; tap < taps; ++tap) {
        const int64_t k0 = (int64_t)j * fs_.ko, c0 = (fs_.q0[j] + q) * fs_.ki;
        uint8_t& m = masked_[(j * per + q) * taps + tap];
        for (int64_t k = k0; k < std::min(g_.k, k0 + fs_.ko) && m; ++k)
          for (int64_t c = c0; c < std::min(g_.c, c0 + fs_.ki) && m; ++c)
            if (k / gk == c / gc && mask[(k * gc + c % gc) * taps + tap]) m = 0;  // a kept weight of its group
      }
}

void conv_layer::set_sparse_policy(sparse_policy p) {
  policy_ = p;
  if (!fwd_.empty()) index_blocks();
}

bool conv_layer::refresh(const float* w, const float* b) {
  const bool w_new = w_seen_.refresh({{w, g_.k * g_.group_c() * g_.r * g_.s * 4}}, [&] {
    pack(w);
    index_blocks();
    ++version_;
  });
  const bool b_new = b_seen_.refresh({{b, g_.k * 4}}, [&] {
    has_bias_ = b != nullptr;
    bias_.assign((size_t)round_up(g_.k, bk_), 0.0f);
    if (b) std::copy(b, b + g_.k, bias_.begin());
  });
  return w_new || b_new;
}

const char* conv_layer::set_algorithm(int algorithm) {
  if (algorithm > 0 && !dw_)
    if (const char* why = winograd_unsupported(g_, t_, act_)) return why;
  if (algorithm > 0 && dw_) return "the convolution is depthwise";
  algo_ = algorithm;
  return nullptr;
}

int conv_layer::tile_for(int64_t n, int64_t h, int64_t w) const {
  if (algo_ == 0 || dw_ || winograd_unsupported(g_, t_, act_)) return 0;
  if (algo_ <= 1 && sparse_gen_) return 0;  // automatic: the sparse direct pass skips what Winograd cannot
  return algo_ > 1 ? algo_ : winograd_auto_tile(g_, n, h, w, algo_ == 1);
}

winograd_conv* conv_layer::winograd(int m) {
  std::lock_guard<std::mutex> lock(wg_.mutex);
  const int i = m / 2 - 1;
  if (!wg_.layer[i]) wg_.layer[i] = std::make_shared<winograd_conv>(g_, act_, m);
  if (wg_.version[i] != version_) {  // the weights as refresh took them last
    wg_.layer[i]->pack((const float*)w_seen_.data());
    wg_.version[i] = version_;
  }
  return wg_.layer[i].get();
}

status conv_layer::forward(int64_t n, int64_t h, int64_t w, const void* xb, void* yb, float* zb, const void* add,
                           double* moments) {
  if (add && zb && t_ == dtype::bf16) return status::bad_epilogue;  // z is f32: the residual would have to be
  // Passes that gather no statistics (the depthwise stencil, Winograd's output transform): a
  // pass over their output rows instead.
  auto moments_after = [&](status s) {
    if (s == status::ok && moments) {
      const int64_t oh = g_.out_h(h), ow = g_.out_w(w), kb = ceil_div(g_.k, bk_), eb = bf16() ? 2 : 4;
#pragma omp parallel for num_threads(threads_for(4.0 * n * kb * oh * ow * bk_)) schedule(static)
      for (int64_t row = 0; row < n * kb * oh; ++row)
        row_moments((const char*)yb + row * ow * bk_ * eb, bf16(), ow, bk_, moments + row * 2 * bk_);
    }
    return s;
  };
  if (dw_) return moments_after(dw_->forward(n, h, w, xb, yb, zb, add, has_bias_ ? bias_.data() : nullptr));
  if (const int m = tile_for(n, h, w)) {
    used_ = m;
    return moments_after(winograd(m)->forward(n, h, w, (const float*)xb, (float*)yb, zb, (const float*)add,
                                              has_bias_ ? bias_.data() : nullptr));
  }
  used_ = 0;
  const int64_t w0 = w;
  merge_rows(g_, h, w);
  const int64_t oh = g_.out_h(h), ow = g_.out_w(w), cb = ceil_div(g_.c, bc_), kb = ceil_div(g_.k, bk_);
  const bool bf16 = t_ == dtype::bf16;
  const int threads = threads_for(2.0 * n * oh * ow * g_.k * g_.group_c() * g_.r * g_.s);
  conv_plan_key key = zeroed<conv_plan_key>();
  key.n = n, key.h = h, key.w = w, key.level = (int32_t)active_isa(), key.threads = threads;
  key.bias = has_bias_, key.z = zb != nullptr, key.add = add != nullptr, key.sparse = sparse_gen_;
  std::shared_ptr<const conv_pass_plan> plan;
  if (status s = fwd_plans_.get(key, &plan, [&](conv_pass_plan& pl) {
        pass_shape p{t_, n, cb, kb, g_.r, g_.s, bc_, bk_, h, w, g_.stride_w, oh, ow, 1, g_.stride_h};
        // With zb the epilogue stops at the bias (into zb) and the activation follows on the
        // rows while they are in cache; without, it is all one epilogue.
        p.e.bias = has_bias_;
        p.e.add = add != nullptr;
        p.e.act = zb ? activation::none : act_;
        p.e.out = zb || !bf16 ? out_type::f32 : out_type::bf16;
        p.z = zb != nullptr;
        p.threads = threads;
        p.merge = true;
        return build_pass(pl, p, forward_rows(g_, h, oh), forward_runs(g_, w, ow), fs_,
                          sparse_gen_ ? &fwd_kept_ : nullptr);
      });
      s != status::ok)
    return s;
  pass_data x{xb, aligned(fwd_, 0)};
  x.wts_rows = fwd_rows_.empty() ? nullptr : aligned(fwd_rows_, 0);
  x.ea.bias = has_bias_ ? bias_.data() : nullptr;
  x.out = yb;
  x.z = zb;
  x.add = add;
  x.act = act_;
  x.moments = moments;
  x.moment_cols = g_.out_w(w0);  // the caller's output rows, merged or not
  run_pass(*plan, x);
  return status::ok;
}

// Backward data's pass on merged rows h × w: results are input rows and stride classes of input
// columns (the f32 and the bf16 backward share it).
status conv_layer::plan_backward_data(conv_pass_plan& data, int64_t n, int64_t h, int64_t w, int threads) {
  const int64_t oh = g_.out_h(h), ow = g_.out_w(w), cb = ceil_div(g_.c, bc_), kb = ceil_div(g_.k, bk_);
  std::vector<std::vector<tap>> rows(h);
  const backward_axis along_h{oh, g_.stride_h, g_.pad_t, g_.dil_h};
  for (int64_t i = 0; i < h; ++i) rows[i] = taps_at(i, g_.r, along_h);
  pass_shape p{t_, n, kb, cb, g_.r, g_.s, bk_, bc_, oh, ow, 1, h, w, g_.stride_w, g_.stride_h == 1};
  p.threads = threads;
  return build_pass(data, p, std::move(rows),
                    make_runs(w, g_.stride_w, 1, g_.s, backward_axis{ow, g_.stride_w, g_.pad_l, g_.dil_w}), bs_,
                    sparse_gen_ ? &bwd_kept_ : nullptr);
}

status conv_layer::backward(int64_t n, int64_t h, int64_t w, const float* gyb, const void* yb, const float* zb,
                            const void* xb, float* gxb, float* wg, float* bg, bool accumulate) {
  if (dw_) return dw_->backward(n, h, w, gyb, yb, zb, xb, gxb, wg, bg, accumulate);
  if (t_ == dtype::bf16) return backward_bf16(n, h, w, gyb, false, yb, zb, xb, gxb, wg, bg, accumulate);
  // Backward data as Winograd (on dZ, after the weight gradient's pass set it up) where forward
  // would be: the direct pass then skips it.
  const int wm = gxb ? tile_for(n, h, w) : 0;
  float* const gx_wino = wm ? gxb : nullptr;
  if (wm) gxb = nullptr;
  merge_rows(g_, h, w);
  const int64_t oh = g_.out_h(h), ow = g_.out_w(w), cb = ceil_div(g_.c, bc_), kb = ceil_div(g_.k, bk_);
  const int64_t taps = g_.r * g_.s, pix = oh * ow, plane_x = h * w * bc_, plane_y = pix * bk_;
  // The weight gradient's blocks are the forward's: (ko × ki) for result block j and its
  // source blocks q0[j] + t (the channel split of conv.h; without groups bk × bc, every pair).
  const int64_t ki = fs_.ki, ko = fs_.ko, blk = ki * ko, per = fs_.per, ri = bc_ / ki, ro = bk_ / ko;
  const int threads = threads_for(2.0 * n * pix * g_.k * g_.group_c() * taps);
  const int64_t sw = g_.stride_w, wq = ceil_div(w, sw);

  // The weight gradient's block product is dWᵀ (bk × bc) = dZᵀ·X, or dW (bc × bk) = Xᵀ·dZ with X
  // transposed by stride phase as the A and dZ itself the B. One of them is transposed: the
  // smaller, so Xᵀ·dZ when C < K (64 → 256 1×1: 4.6 → 3.5 ms), and when the input channels are
  // few (bc < 16 would fill a fraction of the kernel's 16-lane columns).
  const bool narrow = ki < 16 || g_.c < g_.k;
  const bool grouped = ki != bc_ || ko != bk_ || per != cb;
  // Backward data transposed (conv_plan.h) for a few input channels and rows of ≥ 16 columns per
  // stride class: the stem's ∂x (3 → 64 7×7/2 224², 1 thread) took 12.3 ms at 3 of 16 lanes, 2.9
  // transposed.
  const bool data_t = gxb && stacks_rows() && !grouped && !sparse_gen_ && wq >= 16;

  // The weight gradient's blocks and its order (below).
  const int64_t blocks = (int64_t)fs_.q0.size() * per * taps, rows_total = n * oh;
  const bool rows_outer = blocks * blk * 4 <= (256 << 10);
  const int64_t pair_scratch = (narrow ? 2 * taps * blk : taps * blk) + ki * taps;

  // The plan: backward data's pass, and per kernel column tap s the output columns it reads
  // inside the input [lo, lo + len) and the weight gradient's kernels (beta 0 and 1).
  conv_plan_key key = zeroed<conv_plan_key>();
  key.n = n, key.h = h, key.w = w, key.level = (int32_t)active_isa(), key.threads = threads, key.data = gxb != nullptr;
  key.sparse = gxb ? sparse_gen_ : 0;
  std::shared_ptr<const conv_backward_plan> plan;
  if (status st = bwd_plans_.get(key, &plan, [&](conv_backward_plan& pl) {
        if (data_t) {
          if (status s = build_transposed_data(pl.data_t, g_, h, w, bc_, bk_, kb, threads); s != status::ok) return s;
        } else if (gxb) {
          if (status s = plan_backward_data(pl.data, n, h, w, threads); s != status::ok) return s;
        }
        // A grouped layer's narrow blocks take the tall tile, as its passes do (narrow_ukernel).
        if (status st = weight_gradient_taps(
                pl, g_.s, ow, forward_axis{w, g_.stride_w, g_.pad_l, g_.dil_w},
                [&](int64_t len) {
                  return narrow ? desc{dtype::f32, ki, ko, len, wq, bk_, ko, batch_kind::offset, 0.0f}
                                : desc{dtype::f32, ko, ki, len, pix, sw * bc_, ki, batch_kind::offset, 0.0f};
                },
                grouped);
            st != status::ok)
          return st;
        // The weight gradient's batch offsets, per kernel row r: over the output rows (n·oh of
        // them, image by image) that read an input row through r, the rows' part of the A and B
        // offsets (the block's part is added to the base addresses).
        const forward_axis along_h{h, g_.stride_h, g_.pad_t, g_.dil_h};
        const int64_t row_t = sw * bc_ * wq;
        weight_gradient_rows(pl, g_.r, n, oh, along_h, [&](int64_t i, int64_t o, int64_t ih) {
          return narrow ? std::pair<int64_t, int64_t>{(i * cb * h + ih) * row_t, i * kb * plane_y + o * ow * bk_}
                        : std::pair<int64_t, int64_t>{i * kb * plane_y + o * ow, i * cb * plane_x + ih * w * bc_};
        });
        // Per-thread scratch: a (result, source) pair's taps' blocks.
        reserve_scratch(threads, {{2, rows_outer ? 0 : pair_scratch}});
        return status::ok;
      });
      st != status::ok)
    return st;

  // dZ = dY ⊙ act'(·) plane by plane: the A of backward data, the weight gradient's (transposed,
  // or as it is when narrow) and its per-plane column sums (the bias). A bf16 layer's backward is
  // conv_backward_bf16.cpp's.
  const bool dz_is_dy = act_ == activation::none;
  const int64_t dz_bytes = n * kb * plane_y * 4, sums = n * kb * bk_;
  char* dz = dz_is_dy ? (char*)gyb : aligned(dz_, round_up(dz_bytes, 64) + sums * 4);
  float* colsum = dz_is_dy ? (float*)aligned(dz_, sums * 4) : (float*)(dz + round_up(dz_bytes, 64));
  float* dzt = narrow ? (float*)dz : (float*)aligned(dzt_, n * kb * plane_y * 4);
  float* dz_t = data_t ? (float*)aligned(dzt_, n * kb * bk_ * oh * plan->data_t.row * 4) : nullptr;  // narrow, f32: free
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t pl = 0; pl < n * kb; ++pl) {
    const int64_t at = pl * plane_y;
    const float* d = activation_grad(act_, gyb, yb, false, zb, at, plane_y, (float*)dz + at, 1);
    if (bg) {  // a pass over the plane: only for a bias (ResNets' convolutions have none)
      float* sum = colsum + pl * bk_;
      std::fill(sum, sum + bk_, 0.0f);
      for (int64_t p = 0; p < pix; ++p)
        for (int64_t q = 0; q < bk_; ++q) sum[q] += d[p * bk_ + q];
    }
    if (!narrow) transpose(d, pix, bk_, bk_, dzt + at, pix);
  }
  if (bg) bias_from_sums(colsum, n, kb, bk_, g_.k, accumulate, bg);

  // Backward data: results are input rows and stride classes of input columns.
  if (data_t) {
    transposed_data_dz(plan->data_t, n, (const float*)dz, dz_t);
    run_transposed_data(plan->data_t, n, (const float*)aligned(bwd_t_, 0), dz_t, gxb);
  } else if (gxb) {
    pass_data x{dz, aligned(bwd_, 0)};
    x.out = gxb;
    run_pass(plan->data, x);
  }
  if (gx_wino)
    if (status s = winograd(wm)->backward_data(n, h, w, (const float*)dz, gx_wino); s != status::ok) return s;

  // Weight gradient. Each
  // tap (r, s) is one block product reducing over output rows; the rows are cut into `splits`
  // parts summed afterwards, so that small layers still give every thread work.
  // Narrow: Xᵀ by stride phase, xt[n][cb][ih][q][bc][wq] = X[n][cb][ih][j·stride + q][bc], so that
  // the columns a tap reads (every stride-th) are consecutive in one row of each channel.
  const int64_t row_t = sw * bc_ * wq;
  const float* x = (const float*)xb;
  if (narrow) {
    float* xt = (float*)aligned(x32_, n * cb * h * row_t * 4);
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t row = 0; row < n * cb * h; ++row)
      for (int64_t q = 0; q < std::min(sw, w); ++q)
        transpose(x + row * w * bc_ + q * bc_, ceil_div(w - q, sw), bc_, sw * bc_, xt + row * row_t + q * bc_ * wq, wq);
    x = xt;
  }
  const std::vector<int64_t>& lo = plan->lo;
  const std::vector<const kernel*>&kw = plan->kw, &kw_add = plan->kw_add;
  const forward_axis along_w{w, g_.stride_w, g_.pad_l, g_.dil_w};
  // Three orders. Few blocks (all of dW fits in L2 per thread): each thread takes chunks of output
  // rows and runs every block over them while their dZ and X rows are in cache, summing into its
  // own dW (beta 1 after its first chunk); otherwise each (block, part of the rows) is an item,
  // so that dW blocks stay in cache, and the parts are summed at the end; or, one part, pairs.
  const int64_t row_bytes = (kb * ow * bk_ + cb * g_.stride_h * w * bc_) * 4;
  // Chunks of equal rows, as many per thread (56 rows by 18 gave one thread 36 and the other 20).
  const int64_t fit = std::clamp<int64_t>((512 << 10) / row_bytes, 1, ceil_div(rows_total, threads));
  const int64_t chunk = ceil_div(rows_total, round_up(ceil_div(rows_total, fit), threads));
  const int64_t splits = rows_outer ? threads
                                    : std::max<int64_t>(1, std::min<int64_t>(rows_total, ceil_div(8 * (int64_t)threads, blocks)));
  // Many blocks and one split (short images at N = 1: 7 × 7, 14 × 14): each item is a (result
  // block, source block) pair whose taps' blocks go to the thread's scratch, then straight into
  // the gradient while they are in L2. Through the part buffer, 512 → 512 3×3 7×7 wrote 9.4 MB,
  // read it back and scattered it tap by tap into the gradient: 6.2 of its 8.5 ms (1 thread).
  const bool pairs = !rows_outer && splits == 1;
  float* part = pairs ? nullptr : (float*)aligned(part_, splits * blocks * blk * 4);
  auto part_at = [&](int64_t b, int64_t sp) { return part + (rows_outer ? sp * blocks + b : b * splits + sp) * blk; };
  // One block's product over output rows [first, last) into out (adding when `add`).
  auto block_product = [&](int64_t b, int64_t first, int64_t last, float* out, bool add) {
    // result block j (layout block k, part sk), source block q (layout block c, part sc)
    const int64_t j = b / (per * taps), q = fs_.q0[j] + b / taps % per, r = b % taps / g_.s, s = b % g_.s;
    const int64_t k = j / ro, sk = j % ro, c = q / ri, sc = q % ri;
    if (!kw[s] || (!masked_.empty() && masked_[b])) {  // reads nothing, or pruned whole: zero
      if (!add) std::fill(out, out + blk, 0.0f);
      return;
    }
    // The rows' part of the offsets is the plan's table for kernel row r; the block's part
    // (its k, c and column tap) goes into the base addresses.
    const int64_t iw = along_w(lo[s], s);
    const std::vector<int64_t>& at = plan->row_at[r];
    batch_ref batch;
    batch.count = at[last] - at[first];
    if (narrow) {  // A: the tap's phase row of Xᵀ; B: dZ's row from its first valid column
      batch.a = x + c * h * row_t + iw % sw * bc_ * wq + sc * ki * wq + iw / sw;
      batch.b = dzt + k * plane_y + lo[s] * bk_ + sk * ko;
    } else {
      batch.a = dzt + k * plane_y + sk * ko * pix + lo[s];
      batch.b = x + c * plane_x + iw * bc_ + sc * ki;
    }
    batch.offs_a = plan->row_a[r].data() + at[first];
    batch.offs_b = plan->row_b[r].data() + at[first];
    execute(add ? *kw_add[s] : *kw[s], batch, out);
  };
  if (pairs) {
    const int64_t gc = g_.group_c(), gk = g_.group_k();
#pragma omp parallel num_threads(threads)
    {
      // The pair's taps' blocks, (narrow) the same as dWᵀ blocks, and one gradient row.
      float* mine = scratch(2, pair_scratch);
      float* flip = mine + taps * blk;
      float* row = narrow ? flip + taps * blk : flip;
#pragma omp for schedule(static)
      for (int64_t pr = 0; pr < blocks / taps; ++pr) {
        for (int64_t tap = 0; tap < taps; ++tap) block_product(pr * taps + tap, 0, rows_total, mine + tap * blk, false);
        if (narrow)
          for (int64_t tap = 0; tap < taps; ++tap) transpose(mine + tap * blk, ki, ko, ko, flip + tap * blk, ki);
        const float* t = narrow ? flip : mine;
        // As the sum of parts below (one part), a gradient row at a time: its taps side by side.
        const int64_t j = pr / per, k0 = j * ko, c0 = (fs_.q0[j] + pr % per) * ki;
        const int64_t ks = std::min(ko, g_.k - k0), cs = std::min(ki, g_.c - c0);
        for (int64_t kk = 0; kk < ks; ++kk) {
          const int64_t grp = (k0 + kk) / gk, c_lo = std::max<int64_t>(0, grp * gc - c0);
          const int64_t c_hi = std::min(cs, (grp + 1) * gc - c0);
          transpose(t + kk * ki, taps, ki, blk, row, taps);
          float* g = wg + ((k0 + kk) * gc + c0 - grp * gc) * taps;
          for (int64_t e = c_lo * taps; e < c_hi * taps; ++e) g[e] = (accumulate ? g[e] : 0.0f) + (0.0f + row[e]);
        }
      }
    }
    return status::ok;
  }
#pragma omp parallel num_threads(threads)
  {
    weight_gradient_parts(rows_outer, rows_total, chunk, blocks, splits, blk, block_product, part_at);
    // Sum the parts into the plain (K, C/groups, R, S) gradient (the pairs of one group).
    const int64_t gc = g_.group_c(), gk = g_.group_k();
#pragma omp for schedule(static)
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t j = b / (per * taps), k0 = j * ko, c0 = (fs_.q0[j] + b / taps % per) * ki, tap = b % taps;
      const int64_t ks = std::min(ko, g_.k - k0), cs = std::min(ki, g_.c - c0);
      for (int64_t kk = 0; kk < ks; ++kk) {
        // The input channels of output channel k0 + kk's group, as cc in [c_lo, c_hi): no
        // division per element (two per element were a few % of a ResNet-50 training step).
        const int64_t grp = (k0 + kk) / gk, c_lo = std::max<int64_t>(0, grp * gc - c0);
        const int64_t c_hi = std::min(cs, (grp + 1) * gc - c0);
        const int64_t row = ((k0 + kk) * gc + c0 - grp * gc) * taps + tap;
        for (int64_t cc = c_lo; cc < c_hi; ++cc) {
          float v = 0.0f;
          const int64_t at = narrow ? cc * ko + kk : kk * ki + cc;
          for (int64_t sp = 0; sp < splits; ++sp) v += part_at(b, sp)[at];
          float& g = wg[row + cc * taps];
          g = (accumulate ? g : 0.0f) + v;
        }
      }
    }
  }
  return status::ok;
}

}  // namespace brgemm::layers
