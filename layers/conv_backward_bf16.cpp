// The bf16 convolution's backward pass (conv.h; conv_layer::backward hands a bf16 layer here):
// backward data and the weight gradient as bf16 products (pairs of bf16 products summed in
// f32, the kernel's VNNI-2 path), from dZ rounded to bf16 once, as the data pass reads it.
//
// The weight gradient reduces over output pixels, so the B operand is packed in pairs of
// pixels. A tap (r, s) reads a window of columns that starts at an even or an odd column of its
// row (the taps shift it by one): each row is packed twice, pairs from column 0 and pairs from
// column 1 (only the parities some tap starts on), and a tap picks the copy that starts a pair
// where its window starts. Two forms, as the f32 pass (conv.cpp):
//   wide    dWᵀ (ko × ki) = dZᵀ · X: A = dZᵀ per plane (bf16), B = X in pairs of stride groups
//           (a row of w pixels seen as rows of sw·bc elements, one pixel of each stride phase:
//           pairs of those are every phase's pairs at once, phase q at column q·bc)
//   narrow  dW (ki × ko) = Xᵀ · dZ: A = X transposed by stride phase (bf16), B = dZ's rows in pairs
// An odd window ends on half a pair: the kernel reads only the first element of A's last pair,
// so the half pair's other element (zero, or the next pixel of the row) is multiplied by zero.
#include <cstring>
#include <omp.h>
#include "blocks.h"
#include "conv.h"
#include "conv_plan.h"
#include "depthwise.h"

namespace brgemm::layers {

namespace {

// dst ← VNNI-2 pairs of the rows first, first + 1, … of src (rows of `width` elements, `elems`
// elements in all): pair row p interleaves rows first + 2p and first + 2p + 1 (2·width
// elements); a last partial row, and the partner of a last single row, read as zero: ⌈(rows −
// first)/2⌉ pair rows for rows = ⌈elems/width⌉. tmp: 2·width elements of the caller's.
void pair_rows(const uint16_t* src, int64_t elems, int64_t width, int64_t first, uint16_t* dst, uint16_t* tmp) {
  if (ceil_div(elems, width) <= first) return;
  const int64_t full = std::max<int64_t>(0, (elems / width - first) / 2);
  interleave_pairs(src + first * width, 2 * full, width, dst);
  const int64_t done = (first + 2 * full) * width;
  if (done < elems) {  // one or two rows left, the last maybe partial: through a zeroed copy
    std::memset(tmp, 0, (size_t)(4 * width));
    std::memcpy(tmp, src + done, (size_t)(2 * (elems - done)));
    interleave_pairs(tmp, 2, width, dst + full * 2 * width);
  }
}

}  // namespace

status conv_layer::backward(int64_t n, int64_t h, int64_t w, const uint16_t* gyb, const void* yb, const float* zb,
                            const void* xb, float* gxb, float* wg, float* bg, bool accumulate) {
  if (!dw_) return backward_bf16(n, h, w, gyb, true, yb, zb, xb, gxb, wg, bg, accumulate);
  // The depthwise stencil reads an f32 dY: widened into backward scratch.
  const int64_t ye = n * ceil_div(g_.k, bk_) * g_.out_h(h) * g_.out_w(w) * bk_;
  float* gy = (float*)aligned(dzt_, ye * 4);
  const int64_t step = 1 << 16;
#pragma omp parallel for num_threads(threads_for(ye)) schedule(static)
  for (int64_t i = 0; i < ye; i += step) bf16_to_f32(gyb + i, gy + i, std::min(step, ye - i));
  return dw_->backward(n, h, w, gy, yb, zb, xb, gxb, wg, bg, accumulate);
}

status conv_layer::backward_bf16(int64_t n, int64_t h, int64_t w, const void* gyb, bool gy16, const void* yb,
                                 const float* zb, const void* xb, float* gxb, float* wg, float* bg, bool accumulate) {
  merge_rows(g_, h, w);
  const int64_t oh = g_.out_h(h), ow = g_.out_w(w), cb = ceil_div(g_.c, bc_), kb = ceil_div(g_.k, bk_);
  const int64_t taps = g_.r * g_.s, pix = oh * ow, plane_y = pix * bk_;
  const int64_t ki = fs_.ki, ko = fs_.ko, blk = ki * ko, per = fs_.per, ri = bc_ / ki, ro = bk_ / ko;
  const int threads = threads_for(2.0 * n * pix * g_.k * g_.group_c() * taps);
  const int64_t sw = g_.stride_w, wq = ceil_div(w, sw);
  const bool narrow = ki < 16 || g_.c < g_.k;  // as the f32 pass chooses (conv.cpp)
  // Pair-row layouts. Wide: per input row, per parity, the pairs of stride groups (2·sw·bc
  // elements each). Narrow: per output row, per parity, the pairs of dZ pixels (2·bk each).
  const int64_t xslot = narrow ? 0 : ceil_div(wq, 2) * 2 * sw * bc_, xrow = 2 * xslot;
  const int64_t zslot = narrow ? ceil_div(ow, 2) * 2 * bk_ : 0, zrow = 2 * zslot;
  const int64_t row_t = sw * bc_ * wq;  // narrow: a row of Xᵀ by phase

  conv_plan_key key = zeroed<conv_plan_key>();
  key.n = n, key.h = h, key.w = w, key.level = (int32_t)active_isa(), key.threads = threads, key.data = gxb != nullptr;
  key.sparse = gxb ? sparse_gen_ : 0;
  std::shared_ptr<const conv_backward_plan> plan;
  if (status st = bwd_plans_.get(key, &plan, [&](conv_backward_plan& pl) {
        if (gxb)
          if (status s = plan_backward_data(pl.data, n, h, w, threads); s != status::ok) return s;
        if (status st = weight_gradient_taps(
                pl, g_.s, ow, forward_axis{w, g_.stride_w, g_.pad_l, g_.dil_w}, [&](int64_t len) {
                  return narrow ? desc{dtype::bf16, ki, ko, len, wq, bk_, ko, batch_kind::offset, 0.0f}
                                : desc{dtype::bf16, ko, ki, len, pix, sw * bc_, ki, batch_kind::offset, 0.0f};
                });
            st != status::ok)
          return st;
        // The weight gradient's batch offsets per kernel row r (the rows' part; the block's
        // part goes into the base addresses): narrow A = Xᵀ's row, B = dZ's pair row; wide
        // A = dZᵀ's row, B = X's pair row.
        const forward_axis along_h{h, g_.stride_h, g_.pad_t, g_.dil_h};
        weight_gradient_rows(pl, g_.r, n, oh, along_h, [&](int64_t i, int64_t o, int64_t ih) {
          return narrow ? std::pair<int64_t, int64_t>{(i * cb * h + ih) * row_t, (i * kb * oh + o) * zrow}
                        : std::pair<int64_t, int64_t>{i * kb * plane_y + o * ow, (i * cb * h + ih) * xrow};
        });
        reserve_scratch(threads, {{0, std::max(plane_y, taps * blk)}, {1, plane_y}, {2, std::max(bc_ * sw, plane_y)}});
        return status::ok;
      });
      st != status::ok)
    return st;
  const std::vector<int64_t>& lo = plan->lo;
  const std::vector<const kernel*>&kw = plan->kw, &kw_add = plan->kw_add;
  const forward_axis along_w{w, g_.stride_w, g_.pad_l, g_.dil_w};
  // The parities the taps' windows start on: along output columns (narrow: dZ's pairs) or
  // along a phase's input columns (wide: X's pairs).
  bool parity[2] = {false, false};
  for (int64_t s = 0; s < g_.s; ++s)
    if (kw[s]) parity[narrow ? lo[s] % 2 : along_w(lo[s], s) / sw % 2] = true;

  // dZ = dY ⊙ act'(·) plane by plane, rounded to bf16 (backward data's A), its per-plane column
  // sums in f32 (the bias), and the weight gradient's form of it: transposed (wide) or pairs.
  const int64_t dz_elems = round_up(n * kb * plane_y, 32), sums = n * kb * bk_;
  uint16_t* dz = (uint16_t*)aligned(dz_, dz_elems * 2 + sums * 4);
  float* colsum = (float*)(dz + dz_elems);
  const bool dz_is_dy = gy16 && act_ == activation::none && !bg;  // dZ = dY, already bf16: read in place
  const uint16_t* dzr = dz_is_dy ? (const uint16_t*)gyb : dz;
  uint16_t* dzw = (uint16_t*)aligned(dzt_, (narrow ? n * kb * oh * zrow : n * kb * plane_y) * 2);
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t pl = 0; pl < n * kb; ++pl) {
    const int64_t at = pl * plane_y;
    if (!dz_is_dy) {
      const float* d = (const float*)gyb + at;
      if (gy16) {  // widened exactly: what the f32 dY of the same values gives
        float* g32 = scratch(2, plane_y);
        bf16_to_f32((const uint16_t*)gyb + at, g32, plane_y);
        d = g32;
      }
      if (act_ != activation::none) {
        const bool from_z = activation_backward_needs_x(act_);
        const float* y32 = nullptr;
        if (!from_z) {
          float* t = scratch(1, plane_y);
          bf16_to_f32((const uint16_t*)yb + at, t, plane_y);
          y32 = t;
        }
        float* out = scratch(0, plane_y);
        activation_backward_f32(act_, d, from_z ? zb + at : nullptr, y32, out, plane_y);
        d = out;
      }
      f32_to_bf16(d, dz + at, plane_y);
      if (bg) {  // a pass over the plane: only for a bias (ResNets' convolutions have none)
        float* sum = colsum + pl * bk_;
        std::fill(sum, sum + bk_, 0.0f);
        for (int64_t p = 0; p < pix; ++p)
          for (int64_t q = 0; q < bk_; ++q) sum[q] += d[p * bk_ + q];
      }
    }
    if (!narrow) {
      transpose(dzr + at, pix, bk_, bk_, dzw + at, pix);
    } else {
      uint16_t* tmp = (uint16_t*)scratch(2, plane_y);  // dY's slot: no longer read
      for (int64_t o = 0; o < oh; ++o)
        for (int64_t par = 0; par < 2; ++par)
          if (parity[par])
            pair_rows(dzr + at + o * ow * bk_, ow * bk_, bk_, par, dzw + (pl * oh + o) * zrow + par * zslot, tmp);
    }
  }
  if (bg) bias_from_sums(colsum, n, kb, bk_, g_.k, accumulate, bg);

  if (gxb) {
    pass_data x{dzr, aligned(bwd_, 0)};
    x.out = gxb;
    run_pass(plan->data, x);
  }

  // X's form: transposed by stride phase (narrow), xt[n][cb][ih][q][bc][wq] = X[n][cb][ih][j·sw + q][bc],
  // or in pairs of stride groups per parity (wide); only the rows and phases some tap reads
  // (a 1×1 stride-2 layer reads a quarter of X).
  const uint16_t* x16 = (const uint16_t*)xb;
  uint16_t* xw = (uint16_t*)aligned(x32_, (narrow ? n * cb * h * row_t : n * cb * h * xrow) * 2);
  uint64_t phases = sw > 64 ? ~uint64_t(0) : 0;
  for (int64_t s = 0; s < g_.s && sw <= 64; ++s)
    if (kw[s]) phases |= uint64_t(1) << (along_w(lo[s], s) % sw);
  auto row_read = [&](int64_t ih) {
    for (int64_t r = 0; r < g_.r; ++r)
      if (const int64_t t = ih + g_.pad_t - r * g_.dil_h; t >= 0 && t % g_.stride_h == 0 && t / g_.stride_h < oh)
        return true;
    return false;
  };
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t row = 0; row < n * cb * h; ++row) {
    const uint16_t* src = x16 + row * w * bc_;
    if (!row_read(row % h)) continue;
    if (narrow) {
      for (int64_t q = 0; q < std::min(sw, w); ++q)
        if (phases >> std::min<int64_t>(q, 63) & 1)
          transpose(src + q * bc_, ceil_div(w - q, sw), bc_, sw * bc_, xw + row * row_t + q * bc_ * wq, wq);
    } else {
      uint16_t* tmp = (uint16_t*)scratch(2, sw * bc_);
      for (int64_t par = 0; par < 2; ++par)
        if (parity[par]) pair_rows(src, w * bc_, sw * bc_, par, xw + row * xrow + par * xslot, tmp);
    }
  }

  // The products, in the f32 pass's two orders (conv.cpp): few blocks, each thread takes chunks
  // of output rows over every block; otherwise (block, part of the rows) items.
  const int64_t blocks = (int64_t)fs_.q0.size() * per * taps, rows_total = n * oh;
  const bool rows_outer = blocks * blk * 4 <= (256 << 10);
  const int64_t row_bytes = (kb * ow * bk_ + cb * g_.stride_h * w * bc_) * 2;
  const int64_t chunk = std::clamp<int64_t>((512 << 10) / row_bytes, 1, ceil_div(rows_total, threads));
  const int64_t splits = rows_outer ? threads
                                    : std::max<int64_t>(1, std::min<int64_t>(rows_total, ceil_div(8 * (int64_t)threads, blocks)));
  float* part = (float*)aligned(part_, splits * blocks * blk * 4);
  auto part_at = [&](int64_t b, int64_t sp) { return part + (rows_outer ? sp * blocks + b : b * splits + sp) * blk; };
  auto block_product = [&](int64_t b, int64_t first, int64_t last, float* out, bool add) {
    // result block j (layout block k, part sk), source block q (layout block c, part sc)
    const int64_t j = b / (per * taps), q = fs_.q0[j] + b / taps % per, r = b % taps / g_.s, s = b % g_.s;
    const int64_t k = j / ro, sk = j % ro, c = q / ri, sc = q % ri;
    if (!kw[s] || (!masked_.empty() && masked_[b])) {  // reads nothing, or pruned whole: zero
      if (!add) std::fill(out, out + blk, 0.0f);
      return;
    }
    const int64_t iw = along_w(lo[s], s), ph = iw % sw, jw = iw / sw;  // the window's first input column
    const std::vector<int64_t>& at = plan->row_at[r];
    batch_ref batch;
    batch.count = at[last] - at[first];
    if (narrow) {  // A: the tap's phase row of Xᵀ from its first column; B: dZ's pairs from lo
      const int64_t par = lo[s] % 2;
      batch.a = xw + c * h * row_t + ph * bc_ * wq + sc * ki * wq + jw;
      batch.b = dzw + k * oh * zrow + par * zslot + (lo[s] - par) * bk_ + sk * ko * 2;
    } else {  // A: dZᵀ from lo; B: X's pairs of stride groups from the window's group, phase ph
      const int64_t par = jw % 2;
      batch.a = dzw + k * plane_y + sk * ko * pix + lo[s];
      batch.b = xw + c * h * xrow + par * xslot + (jw - par) * sw * bc_ + (ph * bc_ + sc * ki) * 2;
    }
    batch.offs_a = plan->row_a[r].data() + at[first];
    batch.offs_b = plan->row_b[r].data() + at[first];
    execute(add ? *kw_add[s] : *kw[s], batch, out);
  };
#pragma omp parallel num_threads(threads)
  {
    weight_gradient_parts(rows_outer, rows_total, chunk, blocks, splits, blk, block_product, part_at);
    // Sum the parts into the plain (K, C/groups, R, S) gradient (the pairs of one group), all
    // taps of a (result block, source block) pair at once: the gradient is written in its own
    // order (tap by tap, a 3×3 layer's rows would be rewritten 9 times, 9 taps apart).
    const int64_t gc = g_.group_c(), gk = g_.group_k();
    // One part, written once, ungrouped: copies (the core's transposes) instead of sums.
    const bool copy = splits == 1 && !accumulate && g_.groups == 1;
#pragma omp for schedule(static)
    for (int64_t bp = 0; bp < blocks / taps; ++bp) {
      const int64_t j = bp / per, k0 = j * ko, c0 = (fs_.q0[j] + bp % per) * ki;
      const int64_t ks = std::min(ko, g_.k - k0), cs = std::min(ki, g_.c - c0);
      if (copy) {
        // The taps' (ko × ki) blocks, `step` apart (narrow: each (ki × ko) part transposed first);
        // then per output channel its (taps × cs) values transposed into its (cs × taps) row.
        const float* src = part_at(bp * taps, 0);
        float* dst = wg + (k0 * gc + c0) * taps;
        if (taps == 1) {  // a 1×1 layer: the block is the gradient's (ks × cs) window, transposed when narrow
          if (narrow)
            transpose(src, cs, ks, ko, dst, gc);
          else
            for (int64_t kk = 0; kk < ks; ++kk) std::memcpy(dst + kk * gc, src + kk * ki, (size_t)(cs * 4));
          continue;
        }
        int64_t step = blk;
        if (narrow) {
          float* t = scratch(0, taps * blk);
          for (int64_t tap = 0; tap < taps; ++tap) transpose(part_at(bp * taps + tap, 0), cs, ks, ko, t + tap * blk, ki);
          src = t;
        } else {
          if (taps > 1) step = part_at(bp * taps + 1, 0) - src;
        }
        for (int64_t kk = 0; kk < ks; ++kk) transpose(src + kk * ki, taps, cs, step, wg + ((k0 + kk) * gc + c0) * taps, taps);
        continue;
      }
      for (int64_t kk = 0; kk < ks; ++kk) {
        // The input channels of output channel k0 + kk's group, as cc in [c_lo, c_hi).
        const int64_t grp = (k0 + kk) / gk, c_lo = std::max<int64_t>(0, grp * gc - c0);
        const int64_t c_hi = std::min(cs, (grp + 1) * gc - c0);
        float* row = wg + ((k0 + kk) * gc + c0 - grp * gc) * taps;
        for (int64_t cc = c_lo; cc < c_hi; ++cc) {
          const int64_t at = narrow ? cc * ko + kk : kk * ki + cc;
          for (int64_t tap = 0; tap < taps; ++tap) {
            float v = 0.0f;
            for (int64_t sp = 0; sp < splits; ++sp) v += part_at(bp * taps + tap, sp)[at];
            float& g = row[cc * taps + tap];
            g = (accumulate ? g : 0.0f) + v;
          }
        }
      }
    }
  }
  return status::ok;
}

}  // namespace brgemm::layers
