// layers/bindings/conv.cpp: the convolutions (brgemm.nn.Conv2d drives _core._Conv2d, and
// QuantizedConv2d the int8 _core._QuantizedConv2d) and the NCHW ↔ blocked copies of their
// activations, quantizing ones included.
#include "arrays.h"

#include "../conv.h"
#include "brgemm/winograd.h"

namespace brgemm::bindings {

namespace {

// True when the 4-D a has the strides of NHWC memory seen as (N, C, H, W); a dimension of size 1
// may have any stride, as in numpy's own contiguity flags.
bool nhwc_view(const py::array& a) {
  const int64_t item = a.itemsize(), c = a.shape(1), h = a.shape(2), w = a.shape(3);
  const int64_t want[4] = {h * w * c * item, item, w * c * item, c * item};
  for (int d = 0; d < 4; ++d)
    if (a.shape(d) > 1 && a.strides(d) != want[d]) return false;
  return true;
}

// A float32, bfloat16 or uint8 array of exactly `ndim` dimensions, non-empty; C-contiguous
// unless `nhwc` is given: then also an (N, C, H, W) view of NHWC memory (numpy's strides of
// np.transpose(nhwc, (0, 3, 1, 2)), a channels_last tensor's), reported through *nhwc. An array
// that is both (C = 1 or H = W = 1) counts as C-contiguous.
py::array dense_array(py::handle h, const char* name, int ndim, element* e, bool* nhwc = nullptr) {
  if (!py::isinstance<py::array>(h))
    type_error(std::string(name) + " must be a numpy array, got " + str(py::type::of(h).attr("__name__")));
  const py::dtype dt = py::reinterpret_borrow<py::array>(h).dtype();
  const element k = numpy_matches(dt, element::u8)     ? element::u8
                    : numpy_matches(dt, element::bf16) ? element::bf16
                                                       : element::f32;
  if (!numpy_matches(dt, k))
    type_error(std::string(name) + " must have dtype float32, bfloat16 or uint8, got " + str(dt));
  py::array a = typed_array(h, name, k);
  if (a.ndim() != ndim)
    value_error(std::string(name) + " must be " + std::to_string(ndim) + "-D, got " + std::to_string(a.ndim()) + "-D");
  require_nonempty(a, name);
  const bool dense = a.flags() & py::array::c_style;
  if (nhwc) *nhwc = !dense && ndim == 4 && nhwc_view(a);
  if (!dense && !(nhwc && *nhwc))
    value_error(std::string(name) + (nhwc ? " must be C-contiguous (N, C, H, W) or an (N, C, H, W) view of NHWC memory"
                                          : " must be C-contiguous") +
                ", got strides " + str(a.attr("strides")));
  *e = k;
  return a;
}

// The block bc of xb, checked to be (N, ceil(C/bc), H, W, bc) for x (N, C, H, W).
int64_t blocks_of(const py::array& x, const py::array& xb, const char* xname) {
  const int64_t bc = xb.shape(4);
  if (xb.shape(0) != x.shape(0) || xb.shape(1) != (x.shape(1) + bc - 1) / bc || xb.shape(2) != x.shape(2) ||
      xb.shape(3) != x.shape(3))
    value_error("xb must have shape (N, ceil(C/bc), H, W, bc) for " + std::string(xname) + " of shape " +
                str(x.attr("shape")) + ", got " + str(xb.attr("shape")));
  return bc;
}

// A quantization scale: positive and finite.
float scale_arg(double v, const char* name) {
  if (!(v > 0.0 && v <= 3.4e38)) value_error(std::string(name) + " must be positive and finite, got " + std::to_string(v));
  return (float)v;
}
int32_t u8_zero_arg(int64_t v, const char* name) {
  if (v < 0 || v > 255) value_error(std::string(name) + " must be in [0, 255] for uint8, got " + std::to_string(v));
  return (int32_t)v;
}

// x (N, C, H, W), NCHW or NHWC in memory → xb (N, C/bc, H, W, bc): float32/bfloat16 to either,
// uint8 to uint8, or float32 to uint8 quantized with scale and zero_point. out of from_blocked
// likewise.
void conv_to_blocked_py(py::handle X, py::handle XB, py::object scale, int64_t zero_point) {
  element xt, bt;
  bool nhwc;
  py::array x = dense_array(X, "x", 4, &xt, &nhwc);
  py::array xb = dense_array(XB, "xb", 5, &bt);
  const bool quantize = bt == element::u8 && xt != element::u8;
  if ((xt == element::u8) != (bt == element::u8) && !(quantize && xt == element::f32))
    type_error("x (" + str(x.dtype()) + ") cannot be blocked as " + str(xb.dtype()) +
               ": uint8 goes to uint8, float32 to uint8 quantizes, and float32/bfloat16 go to either of them");
  if (quantize && scale.is_none()) value_error("quantizing float32 x into uint8 xb needs a scale");
  const float sc = quantize ? scale_arg(scale.cast<double>(), "scale") : 1.0f;
  const int32_t zp = u8_zero_arg(zero_point, "zero_point");
  const int64_t n = x.shape(0), c = x.shape(1), hw = checked_madd(x.shape(2), x.shape(3), 0, "x");
  const int64_t bc = blocks_of(x, xb, "x");
  require_writeable(xb, "xb");
  require_disjoint(xb, x, "xb", "x");
  const void* xp = x.data();
  void* bp = xb.mutable_data();
  py::gil_scoped_release nogil;
  (nhwc ? layers::conv_to_blocked_nhwc : layers::conv_to_blocked)(xp, xt, n, c, hw, bp, bt, bc, sc, zp);
}

void conv_from_blocked_py(py::handle XB, py::handle X) {
  element xt, bt;
  py::array xb = dense_array(XB, "xb", 5, &bt);
  bool nhwc;
  py::array x = dense_array(X, "out", 4, &xt, &nhwc);
  if ((xt == element::u8) != (bt == element::u8))
    type_error("xb (" + str(xb.dtype()) + ") cannot be unblocked into " + str(x.dtype()) +
               ": uint8 goes to uint8, float32/bfloat16 to either of them");
  const int64_t n = x.shape(0), c = x.shape(1), hw = checked_madd(x.shape(2), x.shape(3), 0, "out");
  const int64_t bc = blocks_of(x, xb, "out");
  require_writeable(x, "out");
  require_disjoint(x, xb, "out", "xb");
  const void* bp = xb.data();
  void* xp = x.mutable_data();
  py::gil_scoped_release nogil;
  (nhwc ? layers::conv_from_blocked_nhwc : layers::conv_from_blocked)(bp, bt, n, c, hw, bc, xp, xt);
}

layers::conv_geometry geometry(int64_t c, int64_t k, int64_t r, int64_t s, int64_t sh, int64_t sw, int64_t pt,
                               int64_t pb, int64_t pl, int64_t pr, int64_t dh, int64_t dw, int64_t groups = 1) {
  layers::conv_geometry g;
  g.c = c, g.k = k, g.r = r, g.s = s, g.stride_h = sh, g.stride_w = sw, g.pad_t = pt, g.pad_b = pb;
  g.pad_l = pl, g.pad_r = pr, g.dil_h = dh, g.dil_w = dw, g.groups = groups;
  return g;
}

// The output size of an h × w input, or a ValueError when the dilated kernel does not fit the
// padded input: the one output-size computation brgemm.nn and brgemm.torch use.
std::pair<int64_t, int64_t> out_size(const layers::conv_geometry& g, int64_t h, int64_t w) {
  if (h < 1 || w < 1) value_error("h and w must be at least 1");
  if (!g.fits(h, w))
    value_error("the kernel (" + std::to_string(g.r) + ", " + std::to_string(g.s) + ") (dilation (" +
                std::to_string(g.dil_h) + ", " + std::to_string(g.dil_w) + ")) is larger than the padded input (" +
                std::to_string(h) + " x " + std::to_string(w) + " with padding (" + std::to_string(g.pad_t) + ", " +
                std::to_string(g.pad_b) + ", " + std::to_string(g.pad_l) + ", " + std::to_string(g.pad_r) + "))");
  return {g.out_h(h), g.out_w(w)};
}

// The C++ layer, with every array argument checked against its geometry.
struct py_conv {
  layers::conv_layer cv;
  py_conv(const std::string& dt, const layers::conv_geometry& g, const std::string& act)
      : cv(layer_dtype_arg(dt), checked(g), act == "none" ? activation::none : activation_arg(act)) {}

  // "auto", "dense" or "sparse" (conv_layer::set_sparse_policy).
  void set_policy(const std::string& p) {
    if (p == "auto") cv.set_sparse_policy(layers::sparse_policy::automatic);
    else if (p == "dense") cv.set_sparse_policy(layers::sparse_policy::dense);
    else if (p == "sparse") cv.set_sparse_policy(layers::sparse_policy::sparse);
    else value_error("packing must be 'auto', 'dense' or 'sparse', got '" + p + "'");
  }
  std::string policy() const {
    const auto p = cv.policy();
    return p == layers::sparse_policy::automatic ? "auto" : p == layers::sparse_policy::dense ? "dense" : "sparse";
  }

  void set_mask(py::handle mask) {
    const auto& g = cv.geometry();
    const uint8_t* mp = mask.is_none() ? nullptr
                                       : (const uint8_t*)exact_array(mask, "mask", element::u8,
                                                                     g.k * g.group_c() * g.r * g.s, false).data();
    py::gil_scoped_release nogil;
    cv.set_mask(mp);
  }

  static const layers::conv_geometry& checked(const layers::conv_geometry& g) {
    for (auto [v, name] : {std::pair{g.c, "in_channels"}, {g.k, "out_channels"}, {g.r, "kernel rows"},
                           {g.s, "kernel columns"}, {g.stride_h, "stride"}, {g.stride_w, "stride"},
                           {g.dil_h, "dilation"}, {g.dil_w, "dilation"}, {g.groups, "groups"}})
      if (v < 1) value_error(std::string(name) + " must be at least 1, got " + std::to_string(v));
    for (auto [v, name] : {std::pair{g.c, "in_channels"}, {g.k, "out_channels"}})
      if (v % g.groups)
        value_error(std::string(name) + " (" + std::to_string(v) + ") must be divisible by groups (" +
                    std::to_string(g.groups) + ")");
    for (int64_t p : {g.pad_t, g.pad_b, g.pad_l, g.pad_r})
      if (p < 0) value_error("padding must not be negative, got " + std::to_string(p));
    return g;
  }
  element act_elem() const { return cv.bf16() ? element::bf16 : element::f32; }
  int64_t weights() const { return cv.geometry().k * cv.geometry().group_c() * cv.geometry().r * cv.geometry().s; }
  // Elements of a blocked activation of `channels` in blocks of b for n images of h × w.
  static int64_t blocked(int64_t n, int64_t channels, int64_t b, int64_t h, int64_t w) {
    return checked_madd(checked_madd(n, (channels + b - 1) / b * b, 0, "activation"), checked_madd(h, w, 0, "activation"),
                        0, "activation");
  }
  void sizes(int64_t n, int64_t h, int64_t w) const {
    if (n < 1) value_error("n must be at least 1");
    out_size(cv.geometry(), h, w);
  }

  // algorithm: "direct", "auto", "winograd" (the tile by call shape), "winograd2" or
  // "winograd4" (F(2×2, 3×3), F(4×4, 3×3)); a Winograd one the layer cannot run is a ValueError
  // that says why.
  void set_algorithm(const std::string& a) {
    int code;
    if (a == "direct") code = 0;
    else if (a == "auto") code = -1;
    else if (a == "winograd") code = 1;
    else if (a == "winograd2") code = 2;
    else if (a == "winograd4") code = 4;
    else if (a == "winograd6") code = 6;
    else {
      value_error("algorithm must be 'auto', 'direct' or 'winograd' ('winograd2', 'winograd4', 'winograd6' force the tile), got '" +
                  a + "'");
      return;
    }
    if (const char* why = cv.set_algorithm(code))
      value_error("algorithm='" + a + "' is not available for this layer: " + why);
  }
  // What the last forward ran: None before any, "direct", or "winograd F(4x4,3x3)".
  py::object algorithm_used() const {
    const int m = cv.algorithm_used();
    if (m < 0) return py::none();
    if (m == 0) return py::str("direct");
    return py::str("winograd F(" + std::to_string(m) + "x" + std::to_string(m) + ",3x3)");
  }

  bool refresh(py::handle w, py::handle b) {
    const float* wp = (const float*)exact_array(w, "weight", element::f32, weights(), false).data();
    const float* bp = b.is_none() ? nullptr : (const float*)exact_array(b, "bias", element::f32, cv.geometry().k, false).data();
    py::gil_scoped_release nogil;
    return cv.refresh(wp, bp);
  }

  void forward(int64_t n, int64_t h, int64_t w, py::handle xb, py::handle yb, py::handle zb, py::handle add,
               py::handle moments) {
    sizes(n, h, w);
    const auto& g = cv.geometry();
    const int64_t oh = g.out_h(h), ow = g.out_w(w);
    const void* xp = exact_array(xb, "xb", act_elem(), blocked(n, g.c, cv.bc(), h, w), false).data();
    py::array y = exact_array(yb, "yb", act_elem(), blocked(n, g.k, cv.bk(), oh, ow), true);
    void* yp = y.mutable_data();
    float* zp = nullptr;
    if (!zb.is_none()) {
      py::array z = exact_array(zb, "zb", element::f32, blocked(n, g.k, cv.bk(), oh, ow), true);
      require_disjoint(z, y, "zb", "yb");
      zp = (float*)z.mutable_data();
    }
    require_disjoint(y, py::reinterpret_borrow<py::array>(xb), "yb", "xb");
    const void* ap = nullptr;
    if (!add.is_none()) {  // the residual: f32 with zb (it joins z), else yb's type
      if (zp && cv.bf16()) value_error("add needs zb=None in a bfloat16 layer (the pre-activation is float32)");
      py::array a = exact_array(add, "add", act_elem(), blocked(n, g.k, cv.bk(), oh, ow), false);
      require_disjoint(y, a, "yb", "add");
      if (zp) require_disjoint(py::reinterpret_borrow<py::array>(zb), a, "zb", "add");
      ap = a.data();
    }
    double* mp = nullptr;
    if (!moments.is_none()) {  // [n][K/bk][OH][2][bk] float64
      py::array m = exact_f64_array(moments, "moments", n * ((g.k + cv.bk() - 1) / cv.bk()) * oh * 2 * cv.bk(), true);
      require_disjoint(m, y, "moments", "yb");
      mp = (double*)m.mutable_data();
    }
    status s;
    {
      py::gil_scoped_release nogil;
      s = cv.forward(n, h, w, xp, yp, zp, ap, mp);
    }
    check_status(s);
  }

  // x (N, C, H, W) → y (N, K, OH, OW), both plain: blocked into the scratch xb, the product into
  // the scratch yb (and the pre-activation into zb when given), then unblocked, all under one
  // GIL release, after packing weight and bias if they changed (refresh) when weight is given.
  // A plain-layout layer call crosses into C++ here once.
  void forward_plain(py::handle X, py::handle xb, py::handle yb, py::handle Y, py::handle zb, py::handle w,
                     py::handle b) {
    element xt, yt;
    py::array x = dense_array(X, "x", 4, &xt);
    py::array y = dense_array(Y, "y", 4, &yt);
    if (xt == element::u8 || yt == element::u8)
      type_error("x and y must be float32 or bfloat16, got " + str(x.dtype()) + " and " + str(y.dtype()));
    const auto& g = cv.geometry();
    const int64_t n = x.shape(0), h = x.shape(2), wd = x.shape(3);
    if (x.shape(1) != g.c)
      value_error("x has " + std::to_string(x.shape(1)) + " channels, this layer expects " + std::to_string(g.c));
    const auto [oh, ow] = out_size(g, h, wd);
    if (y.shape(0) != n || y.shape(1) != g.k || y.shape(2) != oh || y.shape(3) != ow)
      value_error("y must have shape (" + std::to_string(n) + ", " + std::to_string(g.k) + ", " +
                  std::to_string(oh) + ", " + std::to_string(ow) + "), got " + str(y.attr("shape")));
    require_writeable(y, "y");
    plain_scratch sc = plain_scratch_arrays(x, y, xb, yb, zb, act_elem(), blocked(n, g.c, cv.bc(), h, wd),
                                                  blocked(n, g.k, cv.bk(), oh, ow));
    const float *wp = nullptr, *bp = nullptr;
    if (!w.is_none()) {
      wp = (const float*)exact_array(w, "weight", element::f32, weights(), false).data();
      bp = b.is_none() ? nullptr : (const float*)exact_array(b, "bias", element::f32, g.k, false).data();
    }
    const element at = act_elem();
    const void* xp = x.data();
    void *xbp = sc.xb.mutable_data(), *ybp = sc.yb.mutable_data(), *yp = y.mutable_data();
    float* zp = sc.z;
    status s;
    {
      py::gil_scoped_release nogil;
      if (wp) cv.refresh(wp, bp);
      layers::conv_to_blocked(xp, xt, n, g.c, h * wd, xbp, at, cv.bc(), 1.0f, 0);
      s = cv.forward(n, h, wd, xbp, ybp, zp);
      if (s == status::ok) layers::conv_from_blocked(ybp, at, n, g.k, oh * ow, cv.bk(), yp, yt);
    }
    check_status(s);
  }

  void backward(int64_t n, int64_t h, int64_t w, py::handle gyb, py::handle yb, py::handle zb, py::handle xb,
                py::handle gxb, py::handle wg, py::handle bg, bool accumulate) {
    sizes(n, h, w);
    const auto& g = cv.geometry();
    const int64_t ye = blocked(n, g.k, cv.bk(), g.out_h(h), g.out_w(w)), xe = blocked(n, g.c, cv.bc(), h, w);
    // A bf16 layer takes a bf16 grad_out as it is (no widened copy), an f32 layer only f32.
    const bool gy16 = cv.bf16() && py::isinstance<py::array>(gyb) &&
                      numpy_matches(py::reinterpret_borrow<py::array>(gyb).dtype(), element::bf16);
    const void* gy = exact_array(gyb, "grad_out", gy16 ? element::bf16 : element::f32, ye, false).data();
    const void* y = cv.needs_z() ? nullptr : exact_array(yb, "yb", act_elem(), ye, false).data();
    const float* z = cv.needs_z() ? (const float*)exact_array(zb, "zb", element::f32, ye, false).data() : nullptr;
    const void* x = exact_array(xb, "xb", act_elem(), xe, false).data();
    float* gx = nullptr;
    if (!gxb.is_none()) {
      py::array gxa = exact_array(gxb, "grad_in", element::f32, xe, true);
      require_disjoint(gxa, py::reinterpret_borrow<py::array>(gyb), "grad_in", "grad_out");
      gx = (float*)gxa.mutable_data();
    }
    float* wgp = (float*)exact_array(wg, "weight_grad", element::f32, weights(), true).mutable_data();
    float* bgp = bg.is_none() ? nullptr : (float*)exact_array(bg, "bias_grad", element::f32, g.k, true).mutable_data();
    status s;
    {
      py::gil_scoped_release nogil;
      s = gy16 ? cv.backward(n, h, w, (const uint16_t*)gy, y, z, x, gx, wgp, bgp, accumulate)
               : cv.backward(n, h, w, (const float*)gy, y, z, x, gx, wgp, bgp, accumulate);
    }
    check_status(s);
  }
};

// int8 inference (brgemm.nn.QuantizedConv2d drives this).
struct py_qconv {
  layers::qconv_layer cv;
  py_qconv(const layers::conv_geometry& g, const std::string& act, const std::string& out)
      : cv(checked(g), act == "none" ? activation::none : activation_arg(act), out_arg(out)) {}

  static const layers::conv_geometry& checked(const layers::conv_geometry& g) {
    py_conv::checked(g);
    // 255·128·C·R·S must fit the s32 sums (and their zero-point correction); C: the channels of
    // a group (the weights between groups are zero).
    if (g.group_c() * g.r * g.s > (int64_t(1) << 31) / (255 * 128))
      value_error("in_channels/groups·R·S = " + std::to_string(g.group_c() * g.r * g.s) +
                  " is too long a reduction for exact int32 sums (at most 65793)");
    return g;
  }
  static out_type out_arg(const std::string& out) {
    if (out == "uint8") return out_type::u8;
    if (out == "float32") return out_type::f32;
    value_error("out_dtype must be 'uint8' or 'float32', got '" + out + "'");
    return out_type::f32;
  }
  int64_t weights() const { return cv.geometry().k * cv.geometry().group_c() * cv.geometry().r * cv.geometry().s; }

  bool refresh(py::handle w, py::handle ws, py::handle b, double xs, int64_t xz, double ys, int64_t yz) {
    const int64_t k = cv.geometry().k;
    const int8_t* wp = (const int8_t*)exact_array(w, "weight", element::s8, weights(), false).data();
    const float* wsp = (const float*)exact_array(ws, "weight_scale", element::f32, k, false).data();
    for (int64_t i = 0; i < k; ++i) scale_arg(wsp[i], "weight_scale");
    const float* bp = b.is_none() ? nullptr : (const float*)exact_array(b, "bias", element::f32, k, false).data();
    layers::conv_quant q;
    q.x_scale = scale_arg(xs, "input_scale");
    q.x_zero = u8_zero_arg(xz, "input_zero_point");
    q.y_scale = scale_arg(ys, "output_scale");
    q.y_zero = u8_zero_arg(yz, "output_zero_point");
    py::gil_scoped_release nogil;
    return cv.refresh(wp, wsp, bp, q);
  }

  void forward(int64_t n, int64_t h, int64_t w, py::handle xb, py::handle yb, py::handle add, double add_scale,
               int64_t add_zero) {
    if (n < 1) value_error("n must be at least 1");
    const auto& g = cv.geometry();
    const auto [oh, ow] = out_size(g, h, w);
    const uint8_t* xp =
        (const uint8_t*)exact_array(xb, "xb", element::u8, py_conv::blocked(n, g.c, cv.bc(), h, w), false).data();
    const element ye = cv.out() == out_type::u8 ? element::u8 : element::f32;
    py::array y = exact_array(yb, "yb", ye, py_conv::blocked(n, g.k, cv.bk(), oh, ow), true);
    require_disjoint(y, py::reinterpret_borrow<py::array>(xb), "yb", "xb");
    void* yp = y.mutable_data();
    const uint8_t* ap = nullptr;
    float as = 1.0f;
    int32_t az = 0;
    if (!add.is_none()) {  // the residual, u8 with its own quantization, into a u8 output
      if (cv.out() != out_type::u8) value_error("add needs out_dtype='uint8' (the residual is uint8)");
      py::array a = exact_array(add, "add", element::u8, py_conv::blocked(n, g.k, cv.bk(), oh, ow), false);
      require_disjoint(y, a, "yb", "add");
      ap = (const uint8_t*)a.data();
      as = scale_arg(add_scale, "add_scale");
      az = u8_zero_arg(add_zero, "add_zero_point");
    }
    status s;
    {
      py::gil_scoped_release nogil;
      s = cv.forward(n, h, w, xp, yp, ap, as, az);
    }
    check_status(s);
  }
};

// For the tests: one ISA's Winograd transforms on one tile of `lanes` channels, V = Bᵀ d B of
// an (a, a, lanes) patch d, and act(Aᵀ M A + bias) of an (a, a, lanes) M.
py::tuple winograd_transforms_py(const std::string& level, int m, py::handle D, py::handle Mx, py::handle Bias,
                                 const std::string& act) {
  isa lv;
  if (!isa_from_name(level.c_str(), &lv) || !isa_available(lv)) value_error("isa '" + level + "' is not available here");
  if (m != 2 && m != 4 && m != 6) value_error("m must be 2, 4 or 6, got " + std::to_string(m));
  const int64_t a = m + 2;
  py::array_t<float, py::array::c_style | py::array::forcecast> d(py::reinterpret_borrow<py::object>(D));
  py::array_t<float, py::array::c_style | py::array::forcecast> mx(py::reinterpret_borrow<py::object>(Mx));
  py::array_t<float, py::array::c_style | py::array::forcecast> bias(py::reinterpret_borrow<py::object>(Bias));
  if (d.ndim() != 3 || d.shape(0) != a || d.shape(1) != a) value_error("d must be (m + 2, m + 2, lanes)");
  const int64_t lanes = d.shape(2);
  if (mx.ndim() != 3 || mx.shape(0) != a || mx.shape(1) != a || mx.shape(2) != lanes)
    value_error("mx must have d's shape");
  if (bias.ndim() != 1 || bias.shape(0) != lanes) value_error("bias must be (lanes,)");
  const activation ac = act == "none" ? activation::none : activation_arg(act);
  if (ac != activation::none && ac != activation::relu && ac != activation::relu6)
    value_error("activation must be 'none', 'relu' or 'relu6', got '" + act + "'");
  const winograd_transforms f = winograd_transforms_for(lv);
  py::array_t<float> v({a, a, lanes}), y({(int64_t)m, (int64_t)m, lanes});
  const winograd_input_args in{d.data(), 0, a, a, 0, 0, lanes, 1, v.mutable_data(), 0, lanes};
  f.input(m, in);
  const winograd_output_args out{mx.data(), 0, lanes, lanes, 1, m, m, bias.data(), nullptr, nullptr,
                                 y.mutable_data(), 0, m * lanes, ac};
  f.output(m, out);
  return py::make_tuple(v, y);
}

}  // namespace

void register_conv(py::module_& m) {
  m.def("_winograd_transforms", &winograd_transforms_py, py::arg("isa"), py::arg("m"), py::arg("d"), py::arg("mx"),
        py::arg("bias"), py::arg("activation"));
  m.def("conv_to_blocked", &conv_to_blocked_py, py::arg("x"), py::arg("xb"), py::arg("scale") = py::none(),
        py::arg("zero_point") = 0);
  m.def("conv_from_blocked", &conv_from_blocked_py, py::arg("xb"), py::arg("out"));
  m.def("conv_block", [](int64_t channels) {
    if (channels < 1) value_error("channels must be at least 1, got " + std::to_string(channels));
    return layers::conv_block(channels);
  }, py::arg("channels"));
  // The core's geometry (layers/conv.h), so that Python computes no output size or padding of
  // its own: (OH, OW) of an h × w input, and padding="same" as (top, bottom, left, right).
  m.def("conv_out_size", [](int64_t h, int64_t w, int64_t r, int64_t s, int64_t sh, int64_t sw, int64_t pt,
                            int64_t pb, int64_t pl, int64_t pr, int64_t dh, int64_t dw) {
    return out_size(py_conv::checked(geometry(1, 1, r, s, sh, sw, pt, pb, pl, pr, dh, dw)), h, w);
  }, py::arg("h"), py::arg("w"), py::arg("r"), py::arg("s"), py::arg("stride_h"), py::arg("stride_w"),
        py::arg("pad_t"), py::arg("pad_b"), py::arg("pad_l"), py::arg("pad_r"), py::arg("dil_h"), py::arg("dil_w"));
  m.def("conv_same_padding", [](int64_t r, int64_t s, int64_t dh, int64_t dw) {
    layers::conv_geometry g = py_conv::checked(geometry(1, 1, r, s, 1, 1, 0, 0, 0, 0, dh, dw));
    g.pad_same();
    return py::make_tuple(g.pad_t, g.pad_b, g.pad_l, g.pad_r);
  }, py::arg("r"), py::arg("s"), py::arg("dil_h"), py::arg("dil_w"));
  py::class_<py_conv>(m, "_Conv2d")
      .def(py::init([](const std::string& dt, int64_t c, int64_t k, int64_t r, int64_t s, int64_t sh, int64_t sw,
                       int64_t pt, int64_t pb, int64_t pl, int64_t pr, int64_t dh, int64_t dw, const std::string& act,
                       int64_t groups) {
             return new py_conv(dt, geometry(c, k, r, s, sh, sw, pt, pb, pl, pr, dh, dw, groups), act);
           }),
           py::arg("dtype"), py::arg("in_channels"), py::arg("out_channels"), py::arg("r"), py::arg("s"),
           py::arg("stride_h"), py::arg("stride_w"), py::arg("pad_t"), py::arg("pad_b"), py::arg("pad_l"),
           py::arg("pad_r"), py::arg("dil_h"), py::arg("dil_w"), py::arg("activation"), py::arg("groups") = 1)
      .def_property_readonly("bc", [](const py_conv& l) { return l.cv.bc(); })
      .def_property_readonly("bk", [](const py_conv& l) { return l.cv.bk(); })
      .def_property_readonly("needs_z", [](const py_conv& l) { return l.cv.needs_z(); })
      .def_property_readonly("groups", [](const py_conv& l) { return l.cv.geometry().groups; })
      .def("out_size", [](const py_conv& l, int64_t h, int64_t w) { return out_size(l.cv.geometry(), h, w); },
           py::arg("h"), py::arg("w"))
      .def("refresh", &py_conv::refresh, py::arg("weight"), py::arg("bias"))
      .def("set_algorithm", &py_conv::set_algorithm, py::arg("algorithm"))
      .def_property("packing", &py_conv::policy, &py_conv::set_policy)
      .def("set_mask", &py_conv::set_mask, py::arg("mask"))
      .def_property_readonly("block_sparse", [](const py_conv& l) { return l.cv.block_sparse(); })
      .def_property_readonly("block_density", [](const py_conv& l) { return l.cv.block_density(); })
      .def_readonly_static("sparse_crossover", &layers::conv_sparse_crossover)
      .def_property_readonly("algorithm_used", &py_conv::algorithm_used)
      .def("forward", &py_conv::forward, py::arg("n"), py::arg("h"), py::arg("w"), py::arg("xb"), py::arg("yb"),
           py::arg("zb"), py::arg("add") = py::none(), py::arg("moments") = py::none())
      .def("forward_plain", &py_conv::forward_plain, py::arg("x"), py::arg("xb"), py::arg("yb"), py::arg("y"),
           py::arg("zb"), py::arg("weight"), py::arg("bias"))
      .def("backward", &py_conv::backward, py::arg("n"), py::arg("h"), py::arg("w"), py::arg("grad_out"),
           py::arg("yb"), py::arg("zb"), py::arg("xb"), py::arg("grad_in"), py::arg("weight_grad"),
           py::arg("bias_grad"), py::arg("accumulate"));
  py::class_<py_qconv>(m, "_QuantizedConv2d")
      .def(py::init([](int64_t c, int64_t k, int64_t r, int64_t s, int64_t sh, int64_t sw, int64_t pt, int64_t pb,
                       int64_t pl, int64_t pr, int64_t dh, int64_t dw, const std::string& act, const std::string& out,
                       int64_t groups) {
             return new py_qconv(geometry(c, k, r, s, sh, sw, pt, pb, pl, pr, dh, dw, groups), act, out);
           }),
           py::arg("in_channels"), py::arg("out_channels"), py::arg("r"), py::arg("s"), py::arg("stride_h"),
           py::arg("stride_w"), py::arg("pad_t"), py::arg("pad_b"), py::arg("pad_l"), py::arg("pad_r"),
           py::arg("dil_h"), py::arg("dil_w"), py::arg("activation"), py::arg("out_dtype"), py::arg("groups") = 1)
      .def_property_readonly("bc", [](const py_qconv& l) { return l.cv.bc(); })
      .def_property_readonly("bk", [](const py_qconv& l) { return l.cv.bk(); })
      .def("refresh", &py_qconv::refresh, py::arg("weight"), py::arg("weight_scale"), py::arg("bias"),
           py::arg("input_scale"), py::arg("input_zero_point"), py::arg("output_scale"), py::arg("output_zero_point"))
      .def("forward", &py_qconv::forward, py::arg("n"), py::arg("h"), py::arg("w"), py::arg("xb"), py::arg("yb"),
           py::arg("add") = py::none(), py::arg("add_scale") = 1.0, py::arg("add_zero_point") = 0);
}

}  // namespace brgemm::bindings
