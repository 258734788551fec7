// The DFP-16 direct convolution (dfp_conv.h).
#include "dfp_conv.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <omp.h>
#include "blocks.h"
#include "brgemm/dfp.h"

namespace brgemm::layers {

// The weight gradient's plan (as conv_backward_plan's weight part): per kernel column tap s the
// output columns it reads inside the input, [lo, lo + len), its kernels (beta 0 and 1), and per
// kernel row r the batch offsets of the output rows that read an input row through r.
struct dfp_wgrad_plan {
  std::vector<int64_t> lo, len;
  std::vector<const kernel*> kw, kw_add;
  std::vector<std::vector<int64_t>> row_a, row_b, row_at;
};

namespace {

constexpr int64_t s32_max = (int64_t(1) << 31) - 1;

// Whether two slices of squared norms a2 and b2 can only give sums that fit in int32
// (Cauchy–Schwarz: |Σ a·b| ≤ √(a2·b2)).
bool fits(int64_t a2, int64_t b2) {
  return (unsigned __int128)a2 * (unsigned __int128)b2 <= (unsigned __int128)s32_max * (unsigned __int128)s32_max;
}

// The whole-tensor conversion, split over threads (the per-ISA kernel of brgemm/dfp.h).
void to_dfp16(const float* x, int16_t* m, int64_t n, int32_t e, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t t = 0; t < threads; ++t) {
    const int64_t lo = n * t / threads, hi = n * (t + 1) / threads;
    if (hi > lo) f32_to_dfp16(x + lo, m + lo, hi - lo, e);
  }
}

// Of one row of `cols` pixels of `lanes` blocked float32 values: the largest squared norm of a
// pixel's lanes (a channel block: forward and backward data's slices) and of a lane along the
// row (a channel's image row: the weight gradient's slices), summed in double (squares exact,
// the sums' rounding far below the margin convert_fitting adds).
void row_norms(const float* p, int64_t cols, int64_t lanes, double& pixel2, double& row2) {
  dfp16_slice_norms(p, cols, lanes, &pixel2, &row2);  // the active ISA's kernel, one order on all
}

// One blocked row (cols pixels × lanes) folded into the running maxima of scan().
inline void scan_row(const float* p, int64_t cols, int64_t lanes, uint32_t& bits, double& pmax, double& rmax) {
  bits = std::max(bits, dfp16_absmax_bits(p, cols * lanes));
  row_norms(p, cols, lanes, pmax, rmax);
}

// One pass over `rows` such rows: the largest |x| as float bits (brgemm/dfp.h) and row_norms'
// maxima.
uint32_t scan(const float* x, int64_t rows, int64_t cols, int64_t lanes, int threads, double& pixel2, double& row2) {
  uint32_t bits = 0;
  double pmax = 0.0, rmax = 0.0;
#pragma omp parallel for num_threads(threads) reduction(max : bits, pmax, rmax) schedule(static)
  for (int64_t row = 0; row < rows; ++row) scan_row(x + row * cols * lanes, cols, lanes, bits, pmax, rmax);
  pixel2 = pmax, row2 = rmax;
  return bits;
}

// Channels [j·bc, j·bc + ch) of one plain image (c × pix, NCHW) as its blocked plane j (pix × bc,
// lanes past ch zero), as conv_to_blocked.
void block_plane(const float* x, int64_t c, int64_t pix, int64_t bc, int64_t j, float* plane) {
  const int64_t ch = std::min(bc, c - j * bc);
  const uint32_t* src = (const uint32_t*)x + j * bc * pix;
  transpose(src, ch, pix, pix, (uint32_t*)plane, bc);
  if (ch < bc)
    for (int64_t p = 0; p < pix; ++p) std::fill(plane + p * bc + ch, plane + (p + 1) * bc, 0.0f);
}

// scan() of blocked x (n images of cb planes of `rows` rows) that first writes each plane from
// the plain (NCHW) x when x_plain is given: the plane is scanned while it is in cache.
uint32_t block_and_scan(const float* x_plain, float* x, int64_t n, int64_t c, int64_t cb, int64_t rows, int64_t cols,
                        int64_t lanes, int threads, double& pixel2, double& row2) {
  if (!x_plain) return scan(x, n * cb * rows, cols, lanes, threads, pixel2, row2);
  const int64_t pix = rows * cols;
  uint32_t bits = 0;
  double pmax = 0.0, rmax = 0.0;
#pragma omp parallel for num_threads(threads) reduction(max : bits, pmax, rmax) schedule(static)
  for (int64_t pl = 0; pl < n * cb; ++pl) {
    float* plane = x + pl * pix * lanes;
    block_plane(x_plain + pl / cb * c * pix, c, pix, lanes, pl % cb, plane);
    for (int64_t row = 0; row < rows; ++row) scan_row(plane + row * cols * lanes, cols, lanes, bits, pmax, rmax);
  }
  pixel2 = pmax, row2 = rmax;
  return bits;
}

// Mantissas of x (n values) in m with the smallest exponent from e0 up whose slices fit against
// the other operand's (b2 for the pixel slices, r2 for the row slices; 0: no constraint), found
// from x's largest squared slice norms p2 and q2 (scan) before converting once: a mantissa lies within 1/2 of x·2^−e (clamping only
// shrinks it), so a slice of len values has a norm within √len/2 of its values' times 2^−e.
// pixel2 and row2: those bounds (squared) at the exponent taken. Returns the bits added to e0.
// m null: only finds the exponent (the caller converts).
int32_t convert_fitting(const float* x, int16_t* m, int64_t n, int32_t e0, double p2, double q2, int64_t cols,
                        int64_t lanes, int64_t b2, int64_t r2, int threads, int64_t& pixel2, int64_t& row2) {
  const double margin = 1.0 + 1e-9;
  for (int32_t s = 0;; ++s) {
    const double scale = std::ldexp(1.0, -(e0 + s));
    const double bp = std::sqrt(p2 * margin) * scale + std::sqrt((double)lanes) / 2;
    const double br = std::sqrt(q2 * margin) * scale + std::sqrt((double)cols) / 2;
    pixel2 = (int64_t)std::ceil(bp * bp);
    row2 = (int64_t)std::ceil(br * br);
    if (fits(pixel2, b2) && (r2 == 0 || fits(row2, r2))) {
      if (m) to_dfp16(x, m, n, e0 + s, threads);
      return s;
    }
  }
}

// Row l < lanes of dst (at dst + l·ld, `width` values): pad_l zeros, then lane l of the `cols`
// pixels of src (cols × lanes, a blocked image row), then zeros: xt's padded rows. The values
// are the core's per-ISA transpose; only the pads are written here.
void transpose_padded(const int16_t* src, int64_t cols, int64_t lanes, int16_t* dst, int64_t ld, int64_t pad_l,
                      int64_t width) {
  transpose(src, cols, lanes, lanes, dst + pad_l, ld);
  for (int64_t l = 0; l < lanes; ++l) {
    std::fill(dst + l * ld, dst + l * ld + pad_l, (int16_t)0);
    std::fill(dst + l * ld + pad_l + cols, dst + l * ld + width, (int16_t)0);
  }
}


}  // namespace

dfp_conv_layer::dfp_conv_layer(const conv_geometry& g, bool relu)
    : g_(g), bc_(conv_block(g.c)), bk_(conv_block(g.k)), relu_(relu) {
  fs_ = split_channels(g.c, g.k, 1, bc_, bk_, 2);
  bs_ = split_channels(g.k, g.c, 1, bk_, bc_, 2);
}

bool dfp_conv_layer::refresh(const float* w, const float* b) {
  const int64_t taps = g_.r * g_.s, count = g_.k * g_.c * taps;
  return seen_.refresh({{w, count * 4}, {b, g_.k * 4}}, [&] {
    const uint32_t bits = dfp16_absmax_bits(w, count);
    w_finite_ = bits < 0x7F800000u;
    has_bias_ = b != nullptr;
    bias_.assign((size_t)round_up(g_.k, bk_), 0.0f);
    if (b) std::copy(b, b + g_.k, bias_.begin());
    bias_e_.assign(bias_.size(), 0.0f);
    if (!w_finite_) return;
    ew_ = dfp16_exponent_of(bits);
    if ((int64_t)wm_.size() < count) wm_.resize((size_t)count);  // grown, never shrunk
    int16_t* const wm = wm_.data();
    f32_to_dfp16(w, wm, count, ew_);
    // Forward blocks (bc × bk: W of output block j, input block q, one tap) and backward ones
    // (bk × bc: Wᵀ), each column's squared norm (a batch element's weight slice) on the way.
    auto pack = [&](const channel_split& sp, int64_t src, int64_t res, bool fwd, std::vector<char>& dst) {
      const int64_t ki = sp.ki, ko = sp.ko, nj = (int64_t)sp.q0.size();
      const int64_t pblk = packed_b_elements(dtype::s16s16f32, ki, ko);
      int16_t* out = (int16_t*)aligned(dst, nj * sp.per * taps * pblk * 2);
      int64_t norm2 = 0;
#pragma omp parallel for collapse(2) num_threads(threads_for(8.0 * nj * sp.per * ki * ko * taps)) \
    reduction(max : norm2) schedule(static)
      for (int64_t j = 0; j < nj; ++j)
        for (int64_t q = 0; q < sp.per; ++q) {
          int16_t* const blk = (int16_t*)scratch(0, ceil_div(ki * ko, 2));  // this thread's block
          for (int64_t tap = 0; tap < taps; ++tap) {
            std::fill(blk, blk + ki * ko, (int16_t)0);
            for (int64_t r = 0; r < std::min(ki, src - q * ki); ++r)
              for (int64_t o = 0; o < std::min(ko, res - j * ko); ++o) {
                const int64_t s_ch = q * ki + r, r_ch = j * ko + o;  // source and result channels
                const int64_t k = fwd ? r_ch : s_ch, c = fwd ? s_ch : r_ch;
                blk[r * ko + o] = wm[(k * g_.c + c) * taps + tap];
              }
            for (int64_t o = 0; o < ko; ++o) {
              int64_t s = 0;
              for (int64_t r = 0; r < ki; ++r) s += (int32_t)blk[r * ko + o] * blk[r * ko + o];
              norm2 = std::max(norm2, s);
            }
            pack_b(dtype::s16s16f32, blk, ki, ko, ko, out + ((j * sp.per + q) * taps + tap) * pblk, ko,
                   nullptr);
          }
        }
      return norm2;
    };
    wf_norm2_ = pack(fs_, g_.c, g_.k, true, fwd_);
    wb_norm2_ = pack(bs_, g_.k, g_.c, false, bwd_);
  });
}

status dfp_conv_layer::forward(int64_t n, int64_t h, int64_t w, const float* x_plain, float* xb, float* yb,
                               float* y_plain) {
  const int64_t oh = g_.out_h(h), ow = g_.out_w(w), cb = ceil_div(g_.c, bc_), kb = ceil_div(g_.k, bk_);
  const int threads = threads_for(2.0 * n * oh * ow * g_.k * g_.c * g_.r * g_.s);
  const int64_t total = n * cb * h * w * bc_;
  double p2, q2;
  const uint32_t bits = block_and_scan(x_plain, xb, n, g_.c, cb, h, w, bc_, threads, p2, q2);
  nonfinite_ = bits >= 0x7F800000u;  // the binding names it: x holds an inf or a NaN
  if (nonfinite_) return status::ok;
  int16_t* xm = (int16_t*)aligned(xm_, total * 2);
  int64_t pixel2, row2;
  const int32_t e0 = dfp16_exponent_of(bits);
  x_shift_ = convert_fitting(xb, xm, total, e0, p2, q2, w, bc_, wf_norm2_, 0, threads, pixel2, row2);
  ex_ = e0 + x_shift_;
  x_row2_ = row2;
  const int32_t e = ex_ + ew_;
  // act(2^e·Σ + b) = 2^e·act(Σ + 2^−e·b) for ReLU and none: the epilogue adds the scaled bias.
  for (size_t k = 0; k < bias_.size(); ++k) bias_e_[k] = std::ldexp(bias_[k], -e);
  conv_plan_key key = zeroed<conv_plan_key>();
  key.n = n, key.h = h, key.w = w, key.level = (int32_t)active_isa(), key.threads = threads, key.bias = has_bias_;
  std::shared_ptr<const conv_pass_plan> plan;
  if (status s = fwd_plans_.get(key, &plan, [&](conv_pass_plan& pl) {
        pass_shape p{dtype::s16s16f32, n, cb, kb, g_.r, g_.s, bc_, bk_, h, w, g_.stride_w, oh, ow, 1, g_.stride_h};
        p.e.bias = has_bias_;
        p.e.act = relu_ ? activation::relu : activation::none;
        p.e.out = out_type::f32;
        p.threads = threads;
        return build_pass(pl, p, forward_rows(g_, h, oh),
                          make_runs(ow, 1, g_.stride_w, g_.s, forward_axis{w, g_.stride_w, g_.pad_l, g_.dil_w}), fs_);
      });
      s != status::ok)
    return s;
  pass_data x{xm, aligned(fwd_, 0)};
  x.ea.bias = has_bias_ ? bias_e_.data() : nullptr;
  x.out = yb;
  x.scale = true;
  x.scale_e = e;
  x.plain = y_plain, x.plain_c = g_.k;
  run_pass(*plan, x);
  saved_n_ = n, saved_h_ = h, saved_w_ = w;
  return status::ok;
}

status dfp_conv_layer::backward(int64_t n, int64_t h, int64_t w, const float* gy_plain, float* gyb, const float* yb,
                                float* gxb, float* wg, float* bg, bool accumulate, float* gx_plain) {
  nonfinite_ = false;
  const int64_t oh = g_.out_h(h), ow = g_.out_w(w), cb = ceil_div(g_.c, bc_), kb = ceil_div(g_.k, bk_);
  const int64_t taps = g_.r * g_.s, pix = oh * ow, plane_y = pix * bk_, total_y = n * kb * plane_y;
  const int threads = threads_for(2.0 * n * pix * g_.k * g_.c * taps);

  // dZ = dY ⊙ (y > 0) after a ReLU, and its per-plane channel sums (the bias gradient).
  const int64_t sums = n * kb * bk_;
  float* dz = (float*)aligned(dz_, round_up(relu_ ? total_y : 0, 16) * 4 + sums * 4);
  float* colsum = dz + round_up(relu_ ? total_y : 0, 16);
  // With them, in the same pass, dZ's largest |value| and slice norms (scan's).
  uint32_t bits = 0;
  double p2 = 0.0, q2 = 0.0;
#pragma omp parallel for num_threads(threads) reduction(max : bits, p2, q2) schedule(static)
  for (int64_t pl = 0; pl < n * kb; ++pl) {
    const int64_t at = pl * plane_y;
    if (gy_plain) block_plane(gy_plain + pl / kb * g_.k * pix, g_.k, pix, bk_, pl % kb, gyb + at);  // in cache next
    const float* d = activation_grad(relu_ ? activation::relu : activation::none, gyb, yb, false, nullptr, at,
                                     plane_y, dz + at, 1);
    float* sum = colsum + pl * bk_;
    std::fill(sum, sum + bk_, 0.0f);
    for (int64_t p = 0; p < pix; ++p)
      for (int64_t q = 0; q < bk_; ++q) sum[q] += d[p * bk_ + q];
    bits = std::max(bits, dfp16_absmax_bits(d, plane_y));
    for (int64_t o = 0; o < oh; ++o) row_norms(d + o * ow * bk_, ow, bk_, p2, q2);
  }
  const float* dzf = relu_ ? dz : gyb;
  if (bg)
    for (int64_t k = 0; k < g_.k; ++k) {
      float s = 0.0f;
      for (int64_t i = 0; i < n; ++i) s += colsum[(i * kb + k / bk_) * bk_ + k % bk_];
      bg[k] = (accumulate ? bg[k] : 0.0f) + s;
    }

  // dZ's mantissas: slices that fit against Wᵀ's (backward data) and x's rows (weight gradient).
  nonfinite_ = bits >= 0x7F800000u;
  if (nonfinite_) return status::ok;
  int16_t* dzm = (int16_t*)aligned(dzm_, total_y * 2);
  int64_t pixel2, row2;
  const int32_t e0 = dfp16_exponent_of(bits);
  z_shift_ = convert_fitting(dzf, nullptr, total_y, e0, p2, q2, ow, bk_, wb_norm2_, std::max<int64_t>(x_row2_, 1),
                             threads, pixel2, row2);  // converted below, plane by plane
  ez_ = e0 + z_shift_;
  const int16_t* xm = (const int16_t*)aligned(xm_, 0);

  // Weight gradient: per block (output block, input block, tap) dW (bc × bk) = Xᵀ·dZ over the
  // output pixels. Two layouts of the operands, both with dZ in VNNI pairs of pixels as B:
  // - stride 1: a batch element is G output rows (G dividing OH, the largest ≤ 16 whose slices
  //   still fit: norms over G rows grow by √G on each side). X is copied transposed with its
  //   padding zero-filled (xp[n][cb][bc][Hp][Wpe], Wpe = Wp rounded up to even), dZ with rows of
  //   the same pitch (dzp[n][kb][OH·Wpe / 2][bk][2], zero past OW): the G rows of a tap are then
  //   one run of G·Wpe values on both sides (the products past OW meet zeros of dZ), a long K per
  //   int32 sum, and every element starts on a pair.
  // - otherwise: a batch element per output row: A is Xᵀ by stride phase (xt[n][cb][ih][phase]
  //   [bc][wq], the columns a tap reads consecutive), B is dZ's row in pairs from an even or an odd
  //   column (dzp[parity][n][kb][oh][P][bk][2]), so that any first column a tap reads starts one.
  int64_t G = 0;  // output rows per element (0: the per-row layout)
  if (g_.stride_h == 1 && g_.stride_w == 1)
    for (int64_t d = std::min<int64_t>(oh, 16); d >= 1 && G == 0; --d)
      if (oh % d == 0 && (d == 1 || fits(d * x_row2_, d * row2))) G = d;
  const int64_t sw = g_.stride_w, wq = ceil_div(w, sw), row_t = sw * bc_ * wq, P = ow / 2 + 1;
  const int64_t par_size = n * kb * oh * P * bk_ * 2;
  const int64_t hp = h + g_.pad_t + g_.pad_b, wp = w + g_.pad_l + g_.pad_r, wpe = round_up(wp, 2), plane = hp * wpe;
  const int64_t slack = g_.s * g_.dil_w + 64;  // a last element's A may run S·dil past the last plane
  int16_t *xt = nullptr, *dzp = nullptr;
  if (G) {
    xt = (int16_t*)aligned(xt_, (n * cb * bc_ * plane + slack) * 2);
    dzp = (int16_t*)aligned(dzp_, n * kb * oh * wpe * bk_ * 2);
    std::fill(xt + n * cb * bc_ * plane, xt + n * cb * bc_ * plane + slack, (int16_t)0);
#pragma omp parallel num_threads(threads)
    {
#pragma omp for schedule(static) nowait
      for (int64_t row = 0; row < n * cb * hp; ++row) {  // padded input row `row % hp` of every channel
        const int64_t nq = row / hp, ip = row % hp, ih = ip - g_.pad_t;
        int16_t* dst = xt + nq * bc_ * plane + ip * wpe;
        if (ih < 0 || ih >= h) {
          for (int64_t c = 0; c < bc_; ++c) std::fill(dst + c * plane, dst + c * plane + wpe, (int16_t)0);
          continue;
        }
        transpose_padded(xm + (nq * h + ih) * w * bc_, w, bc_, dst, plane, g_.pad_l, wpe);
      }
#pragma omp for schedule(static)
      for (int64_t pl = 0; pl < n * kb; ++pl) {  // dZ's mantissas, then its rows in pairs while in cache
        f32_to_dfp16(dzf + pl * plane_y, dzm + pl * plane_y, plane_y, ez_);
        for (int64_t row = pl * oh; row < (pl + 1) * oh; ++row) {
          const int16_t* src = dzm + row * ow * bk_;
          int16_t* dst = dzp + row * wpe * bk_;
          const int64_t full = ow / 2;
          interleave_pairs((const uint16_t*)src, 2 * full, bk_, (uint16_t*)dst);
          for (int64_t j = full; j < wpe / 2; ++j)
            for (int64_t l = 0; l < bk_; ++l) {
              dst[(j * bk_ + l) * 2] = 2 * j < ow ? src[2 * j * bk_ + l] : (int16_t)0;
              dst[(j * bk_ + l) * 2 + 1] = 0;
            }
        }
      }
    }
  } else {
    xt = (int16_t*)aligned(xt_, n * cb * h * row_t * 2);
    dzp = (int16_t*)aligned(dzp_, 2 * par_size * 2);
#pragma omp parallel num_threads(threads)
    {
#pragma omp for schedule(static) nowait
      for (int64_t row = 0; row < n * cb * h; ++row)
        for (int64_t q = 0; q < std::min(sw, w); ++q)
          transpose(xm + row * w * bc_ + q * bc_, ceil_div(w - q, sw), bc_, sw * bc_, xt + row * row_t + q * bc_ * wq,
                    wq);
#pragma omp for schedule(static)
      for (int64_t pl = 0; pl < n * kb; ++pl) {  // dZ's mantissas, then its rows in pairs while in cache
        f32_to_dfp16(dzf + pl * plane_y, dzm + pl * plane_y, plane_y, ez_);
        for (int64_t par = 0; par < 2; ++par)
          for (int64_t rr = pl * oh; rr < (pl + 1) * oh; ++rr) {
            const int16_t* src = dzm + rr * ow * bk_;
            int16_t* dst = dzp + par * par_size + rr * P * bk_ * 2;
            const int64_t full = (ow - par) / 2;  // pairs of two real columns, then the padded ones
            interleave_pairs((const uint16_t*)(src + par * bk_), 2 * full, bk_, (uint16_t*)dst);
            for (int64_t j = full; j < P; ++j) {
              const int64_t c0 = par + 2 * j;
              for (int64_t l = 0; l < bk_; ++l) {
                dst[(j * bk_ + l) * 2] = c0 < ow ? src[c0 * bk_ + l] : (int16_t)0;
                dst[(j * bk_ + l) * 2 + 1] = 0;
              }
            }
          }
      }
    }
  }

  // Backward data (dZ's mantissas are complete): the forward's passes with Wᵀ (conv.cpp's), then
  // the scale 2^(ez + ew).
  if (gxb) {
    conv_plan_key key = zeroed<conv_plan_key>();
    key.n = n, key.h = h, key.w = w, key.level = (int32_t)active_isa(), key.threads = threads;
    std::shared_ptr<const conv_pass_plan> plan;
    if (status s = bwd_plans_.get(key, &plan, [&](conv_pass_plan& pl) {
          std::vector<std::vector<tap>> rows(h);
          const backward_axis along_h{oh, g_.stride_h, g_.pad_t, g_.dil_h};
          for (int64_t i = 0; i < h; ++i) rows[i] = taps_at(i, g_.r, along_h);
          pass_shape p{dtype::s16s16f32, n, kb, cb, g_.r, g_.s, bk_, bc_, oh, ow, 1, h, w, g_.stride_w,
                       g_.stride_h == 1};
          p.e.out = out_type::f32;
          p.threads = threads;
          return build_pass(pl, p, std::move(rows),
                            make_runs(w, g_.stride_w, 1, g_.s, backward_axis{ow, g_.stride_w, g_.pad_l, g_.dil_w}), bs_);
        });
        s != status::ok)
      return s;
    pass_data x{dzm, aligned(bwd_, 0)};
    x.out = gxb;
    x.scale = true;
    x.scale_e = ez_ + ew_;
    x.plain = gx_plain, x.plain_c = g_.c;
    run_pass(*plan, x);
  }

  conv_plan_key key = zeroed<conv_plan_key>();
  key.n = n, key.h = h, key.w = w, key.level = (int32_t)active_isa(), key.threads = threads, key.z = (int32_t)G;
  std::shared_ptr<const dfp_wgrad_plan> plan;
  if (status st = wg_plans_.get(key, &plan, [&](dfp_wgrad_plan& pl) {
        if (G) {  // one kernel for every tap; elements (image, group of G rows)
          desc d{dtype::s16s16f32, bc_, bk_, G * wpe, plane, bk_, bk_, batch_kind::offset, 0.0f};
          pl.kw.assign(1, nullptr);
          pl.kw_add.assign(1, nullptr);
          if (status st = dispatch(d, &pl.kw[0]); st != status::ok) return st;
          d.beta = 1.0f;
          if (status st = dispatch(d, &pl.kw_add[0]); st != status::ok) return st;
          const int64_t elems = n * (oh / G);
          pl.row_a.assign(1, {});
          pl.row_b.assign(1, {});
          pl.row_at.assign(1, std::vector<int64_t>((size_t)(elems + 1), 0));
          for (int64_t el = 0; el < elems; ++el) {
            const int64_t i = el / (oh / G), o0 = el % (oh / G) * G;
            pl.row_a[0].push_back(i * cb * bc_ * plane + o0 * wpe);
            pl.row_b[0].push_back((i * kb * oh + o0) * wpe * bk_);
            pl.row_at[0][el + 1] = el + 1;
          }
          return status::ok;
        }
        if (status st = weight_gradient_taps(pl, g_.s, ow, forward_axis{w, g_.stride_w, g_.pad_l, g_.dil_w},
                                             [&](int64_t len) {
                                               return desc{dtype::s16s16f32, bc_, bk_, len, wq, bk_, bk_,
                                                           batch_kind::offset, 0.0f};
                                             });
            st != status::ok)
          return st;
        const forward_axis along_h{h, g_.stride_h, g_.pad_t, g_.dil_h};
        weight_gradient_rows(pl, g_.r, n, oh, along_h, [&](int64_t i, int64_t o, int64_t ih) {
          return std::pair<int64_t, int64_t>{(i * cb * h + ih) * row_t, (i * kb * oh + o) * P * bk_ * 2};
        });
        return status::ok;
      });
      st != status::ok)
    return st;

  // conv.cpp's two orders: few blocks (dW fits in L2 per thread): each thread takes chunks of
  // elements and runs every block over them into its own dW; otherwise each (block, part of the
  // elements) is an item. Either way the parts are summed at the end, scaled by 2^(ex + ez).
  const int64_t blk = bc_ * bk_, blocks = kb * cb * taps, rows_total = G ? n * (oh / G) : n * oh;
  const bool rows_outer = blocks * blk * 4 <= (256 << 10);
  const int64_t row_bytes = G ? (kb * bk_ + cb * bc_) * G * wpe * 2 : (kb * P * bk_ * 2 + cb * g_.stride_h * row_t) * 2;
  const int64_t chunk = std::clamp<int64_t>((512 << 10) / row_bytes, 1, ceil_div(rows_total, threads));
  const int64_t splits = rows_outer ? threads
                                    : std::max<int64_t>(1, std::min<int64_t>(rows_total, ceil_div(8 * (int64_t)threads, blocks)));
  float* part = (float*)aligned(part_, splits * blocks * blk * 4);
  auto part_at = [&](int64_t b, int64_t sp) { return part + (rows_outer ? sp * blocks + b : b * splits + sp) * blk; };
  const forward_axis along_w{w, g_.stride_w, g_.pad_l, g_.dil_w};
  auto block_product = [&](int64_t b, int64_t first, int64_t last, float* out, bool add) {
    const int64_t k = b / (cb * taps), c = b / taps % cb, r = b % taps / g_.s, s = b % g_.s;
    const int64_t rr = G ? 0 : r, ss = G ? 0 : s;
    const std::vector<int64_t>& at = plan->row_at[rr];
    if (!plan->kw[ss] || at[last] == at[first]) {
      if (!add) std::fill(out, out + blk, 0.0f);
      return;
    }
    batch_ref batch;
    batch.count = at[last] - at[first];
    if (G) {
      batch.a = xt + c * bc_ * plane + r * g_.dil_h * wpe + s * g_.dil_w;
      batch.b = dzp + k * oh * wpe * bk_;
    } else {
      const int64_t lo = plan->lo[s], iw = along_w(lo, s);
      batch.a = xt + c * h * row_t + iw % sw * bc_ * wq + iw / sw;
      batch.b = dzp + lo % 2 * par_size + k * oh * P * bk_ * 2 + lo / 2 * bk_ * 2;
    }
    batch.offs_a = plan->row_a[rr].data() + at[first];
    batch.offs_b = plan->row_b[rr].data() + at[first];
    execute(add ? *plan->kw_add[ss] : *plan->kw[ss], batch, out);
  };
  const int32_t e = ex_ + ez_;
  // v·2^e as one multiplication where 2^e is a normal float: the exact product rounded once, the
  // same value as ldexp (which rounds once too), without a libm call per element.
  const bool by_mul = e >= -126 && e <= 127;
  const float pow2e = by_mul ? std::ldexp(1.0f, e) : 0.0f;
  auto finish = [&](int64_t b) {  // the parts of block b summed, scaled, into dW
    const int64_t k0 = b / (cb * taps) * bk_, c0 = b / taps % cb * bc_, tap = b % taps;
    const int64_t ks = std::min(bk_, g_.k - k0), cs = std::min(bc_, g_.c - c0);
    for (int64_t kk = 0; kk < ks; ++kk)
      for (int64_t cc = 0; cc < cs; ++cc) {
        float v = 0.0f;
        for (int64_t sp = 0; sp < splits; ++sp) v += part_at(b, sp)[cc * bk_ + kk];
        float& gr = wg[((k0 + kk) * g_.c + c0 + cc) * taps + tap];
        gr = (accumulate ? gr : 0.0f) + (by_mul ? v * pow2e : std::ldexp(v, e));
      }
  };
#pragma omp parallel num_threads(threads)
  {
    if (!rows_outer && splits == 1) {
      // Each block's product is one sum over the whole batch: each thread takes its share of the
      // blocks (as a static omp for would) and walks the batch elements outside, one at a time,
      // over all of its blocks (beta 1 after the first). The same additions in the same order as
      // one call over the batch (a one-element call adds its element's converted sum to C, and
      // float addition commutes), but an element's operands (a few rows of one image) stay in L2
      // for all the blocks instead of the whole batch streaming through once per block. A thread
      // then finishes its own blocks: no barrier.
      const int nt = omp_get_num_threads(), tid = omp_get_thread_num();
      const int64_t lo = blocks * tid / nt, hi = blocks * (tid + 1) / nt;
      for (int64_t el = 0; el < rows_total; ++el)
        for (int64_t b = lo; b < hi; ++b) block_product(b, el, el + 1, part_at(b, 0), el > 0);
      for (int64_t b = lo; b < hi; ++b) finish(b);
    } else {
      weight_gradient_parts(rows_outer, rows_total, chunk, blocks, splits, blk, block_product, part_at);
#pragma omp for schedule(static)
      for (int64_t b = 0; b < blocks; ++b) finish(b);
    }
  }
  return status::ok;
}

}  // namespace brgemm::layers
