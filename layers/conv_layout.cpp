// The blocked activation layout of the convolutions (conv.h): the block width of a channel
// count, and the conversions between plain NCHW / NHWC arrays and [N][C/bc][H][W][bc] blocks,
// with an element conversion (f32, bf16, u8 with scale and zero point) on the way.
#include "conv.h"
#include "blocks.h"
#include <cmath>
#include <omp.h>

namespace brgemm::layers {

namespace {

void transpose_elems(const void* src, int64_t rows, int64_t cols, int64_t ld_src, void* dst, int64_t ld_dst,
                     element e) {
  transpose_elements(src, rows, cols, ld_src, dst, ld_dst, (int)element_bytes(e));
}

// w values from src to dst, src and dst f32 or bf16, or f32 → u8 quantized (as the epilogue's
// u8 output: the quotient rounded to nearest even, then the zero point, saturated; NaN → 0).
void convert_elems(const void* src, element st, void* dst, element dt, int64_t w, float scale, int32_t zero) {
  if (dt != element::u8) return convert(src, st == element::bf16, dst, dt == element::bf16, w);
  const float* x = (const float*)src;
  uint8_t* q = (uint8_t*)dst;
  for (int64_t i = 0; i < w; ++i) {
    const float v = std::nearbyint(x[i] / scale) + (float)zero;
    q[i] = v >= 255.0f ? 255 : v > 0.0f ? (uint8_t)v : 0;
  }
}

// `rows` rows of `ch` elements from src (row stride ls) to dst (row stride ld), each dst row
// zero-filled from ch to `width`: the per-pixel copies between NHWC and blocked. Plain loops
// that gcc vectorises (restrict: the rows never overlap).
template <class T>
void copy_rows(const T* __restrict src, int64_t ls, T* __restrict dst, int64_t ld, int64_t rows, int64_t ch,
               int64_t width) {
  if (ch == width && ls == ch && ld == ch) {  // the rows are one run (c == bc, no padding)
    std::memcpy(dst, src, (size_t)(rows * ch) * sizeof(T));
    return;
  }
  for (int64_t p = 0; p < rows; ++p) {
    const T* s = src + p * ls;
    T* d = dst + p * ld;
    for (int64_t k = 0; k < ch; ++k) d[k] = s[k];
    for (int64_t k = ch; k < width; ++k) d[k] = T(0);
  }
}

// The same into rows of a width W known at compile time (ld = W): each row reads W elements
// and masks those past ch, one vector move where the loop above is a short run-time loop per
// pixel (an RGB input, ch = 3 of W = 4: 5× faster). The rows whose W elements would reach past
// the `avail` elements of src go through the loop above.
template <int W, class T>
void copy_rows_w(const T* __restrict src, int64_t ls, T* __restrict dst, int64_t rows, int64_t ch, int64_t avail) {
  T keep[W];
  for (int k = 0; k < W; ++k) keep[k] = k < ch ? T(~T(0)) : T(0);
  int64_t p = 0;
  for (; p < rows && p * ls + W <= avail; ++p) {
    T v[W];
    std::memcpy(v, src + p * ls, sizeof v);
    for (int k = 0; k < W; ++k) dst[p * W + k] = v[k] & keep[k];
  }
  copy_rows(src + p * ls, ls, dst + p * W, W, rows - p, ch, W);
}

// Element-typed dispatch; `avail` (elements readable from src) enables the fixed-width rows.
void copy_rows_elems(const void* src, int64_t ls, void* dst, int64_t ld, int64_t rows, int64_t ch, int64_t width,
                     element e, int64_t avail = 0) {
  auto run = [&](auto* s, auto* d) {
    if (avail > 0 && ld == width && ch < width) switch (width) {
        case 4: return copy_rows_w<4>(s, ls, d, rows, ch, avail);
        case 8: return copy_rows_w<8>(s, ls, d, rows, ch, avail);
        case 12: return copy_rows_w<12>(s, ls, d, rows, ch, avail);
        case 16: return copy_rows_w<16>(s, ls, d, rows, ch, avail);
        case 32: return copy_rows_w<32>(s, ls, d, rows, ch, avail);
        case 64: return copy_rows_w<64>(s, ls, d, rows, ch, avail);
      }
    copy_rows(s, ls, d, ld, rows, ch, width);
  };
  if (e == element::f32)
    run((const uint32_t*)src, (uint32_t*)dst);
  else if (e == element::bf16)
    run((const uint16_t*)src, (uint16_t*)dst);
  else
    run((const uint8_t*)src, (uint8_t*)dst);
}

// Pixels per task of the NHWC copies: a task's C-wide rows (about 16 KB) stay in L1 while each
// channel block takes its strip of them.
int64_t nhwc_pixels(int64_t c, int64_t hw, int64_t bytes) {
  return std::max<int64_t>(1, std::min<int64_t>(hw, (16 << 10) / (c * bytes)));
}

}  // namespace

int64_t conv_block(int64_t channels) {
  if (channels < 16) return channels;
  int64_t best = 64;
  for (int64_t b : {32, 16})
    if (round_up(channels, b) < round_up(channels, best)) best = b;
  return best;
}

void conv_to_blocked(const void* x, element xt, int64_t n, int64_t c, int64_t hw, void* xb, element bt, int64_t bc,
                     float scale, int32_t zero_point) {
  const int64_t cb = ceil_div(c, bc), xs = element_bytes(xt), bs = element_bytes(bt);
#pragma omp parallel for collapse(2) num_threads(threads_for(16.0 * n * c * hw)) schedule(static)
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < cb; ++j) {
      const int64_t ch = std::min(bc, c - j * bc);
      const void* src = (const char*)x + (i * c + j * bc) * hw * xs;
      char* dst = (char*)xb + (i * cb + j) * hw * bc * bs;
      if (xt != bt) {  // convert the channels' planes first, then transpose
        void* t = scratch(0, ch * hw);
        convert_elems(src, xt, t, bt, ch * hw, scale, zero_point);
        src = t;
      }
      transpose_elems(src, ch, hw, hw, dst, bc, bt);
      if (ch < bc)
        for (int64_t p = 0; p < hw; ++p) std::memset(dst + (p * bc + ch) * bs, 0, (size_t)((bc - ch) * bs));
    }
}

void conv_from_blocked(const void* xb, element bt, int64_t n, int64_t c, int64_t hw, int64_t bc, void* x,
                       element xt) {
  const int64_t cb = ceil_div(c, bc), xs = element_bytes(xt), bs = element_bytes(bt);
#pragma omp parallel for collapse(2) num_threads(threads_for(16.0 * n * c * hw)) schedule(static)
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < cb; ++j) {
      const int64_t ch = std::min(bc, c - j * bc);
      const char* src = (const char*)xb + (i * cb + j) * hw * bc * bs;
      char* dst = (char*)x + (i * c + j * bc) * hw * xs;
      if (xt == bt) {
        transpose_elems(src, hw, ch, bc, dst, hw, xt);
      } else {
        void* t = scratch(0, ch * hw);
        transpose_elems(src, hw, ch, bc, t, hw, bt);
        convert_elems(t, bt, dst, xt, ch * hw, 1.0f, 0);
      }
    }
}

// NHWC: a task's pixels are one contiguous run of rows, so a conversion is one call on the whole
// run (into scratch, or out of it) and the layout change is then a same-type row copy.
void conv_to_blocked_nhwc(const void* x, element xt, int64_t n, int64_t c, int64_t hw, void* xb, element bt,
                          int64_t bc, float scale, int32_t zero_point) {
  const int64_t cb = ceil_div(c, bc), xs = element_bytes(xt), bs = element_bytes(bt);
  const int64_t len = nhwc_pixels(c, hw, std::max(xs, bs)), tasks = ceil_div(hw, len);
#pragma omp parallel for collapse(2) num_threads(threads_for(16.0 * n * c * hw)) schedule(static)
  for (int64_t i = 0; i < n; ++i)
    for (int64_t t = 0; t < tasks; ++t) {
      const int64_t p0 = t * len, rows = std::min(len, hw - p0);
      const void* src = (const char*)x + (i * hw + p0) * c * xs;
      if (xt != bt) {
        void* tmp = scratch(0, rows * c);
        convert_elems(src, xt, tmp, bt, rows * c, scale, zero_point);
        src = tmp;
      }
      for (int64_t j = 0; j < cb; ++j) {
        const int64_t ch = std::min(bc, c - j * bc);
        char* dst = (char*)xb + ((i * cb + j) * hw + p0) * bc * bs;
        copy_rows_elems((const char*)src + j * bc * bs, c, dst, bc, rows, ch, bc, bt, rows * c - j * bc);
      }
    }
}

void conv_from_blocked_nhwc(const void* xb, element bt, int64_t n, int64_t c, int64_t hw, int64_t bc, void* x,
                            element xt) {
  const int64_t cb = ceil_div(c, bc), xs = element_bytes(xt), bs = element_bytes(bt);
  const int64_t len = nhwc_pixels(c, hw, std::max(xs, bs)), tasks = ceil_div(hw, len);
#pragma omp parallel for collapse(2) num_threads(threads_for(16.0 * n * c * hw)) schedule(static)
  for (int64_t i = 0; i < n; ++i)
    for (int64_t t = 0; t < tasks; ++t) {
      const int64_t p0 = t * len, rows = std::min(len, hw - p0);
      char* dst = (char*)x + (i * hw + p0) * c * xs;
      void* rows_bt = xt == bt ? (void*)dst : (void*)scratch(0, rows * c);  // gather, then convert
      for (int64_t j = 0; j < cb; ++j) {
        const int64_t ch = std::min(bc, c - j * bc);
        const char* src = (const char*)xb + ((i * cb + j) * hw + p0) * bc * bs;
        copy_rows_elems(src, bc, (char*)rows_bt + j * bc * bs, c, rows, ch, ch, bt);
      }
      if (xt != bt) convert_elems(rows_bt, bt, dst, xt, rows * c, 1.0f, 0);
    }
}

}  // namespace brgemm::layers
