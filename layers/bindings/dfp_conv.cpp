// layers/bindings/dfp_conv.cpp: the DFP-16 convolution (brgemm.nn.Conv2d(dtype="dfp16") drives
// _core._DFPConv2d) on blocked float32 activations.
#include "arrays.h"

#include "../dfp_conv.h"

namespace brgemm::bindings {

namespace {

struct py_dfp_conv {
  layers::dfp_conv_layer cv;
  py_dfp_conv(const layers::conv_geometry& g, bool relu) : cv(g, relu) {}

  int64_t blocked(int64_t n, int64_t channels, int64_t b, int64_t h, int64_t w) const {
    if (n < 1 || h < 1 || w < 1) value_error("n, h and w must be at least 1");
    return checked_madd(checked_madd(n, (channels + b - 1) / b * b, 0, "activation"), checked_madd(h, w, 0, "activation"),
                        0, "activation");
  }
  int64_t weights() const { return cv.geometry().k * cv.geometry().c * cv.geometry().r * cv.geometry().s; }
  std::pair<int64_t, int64_t> out(int64_t h, int64_t w) const {
    const auto& g = cv.geometry();
    if (h < 1 || w < 1 || !g.fits(h, w)) value_error("the kernel does not fit the padded input");
    return {g.out_h(h), g.out_w(w)};
  }

  bool refresh(py::handle weight, py::handle bias) {
    const float* wp = (const float*)exact_array(weight, "weight", element::f32, weights(), false).data();
    const float* bp = bias.is_none() ? nullptr
                                     : (const float*)exact_array(bias, "bias", element::f32, cv.geometry().k, false).data();
    bool packed;
    {
      py::gil_scoped_release nogil;
      packed = cv.refresh(wp, bp);
    }
    if (!cv.weights_finite()) value_error("weight holds an inf or a NaN: DFP-16 has no exponent for it");
    return packed;
  }

  // A plain (NCHW) float32 array of n·c·h·w values, or null for None.
  static const float* plain(py::handle a, const char* name, int64_t n, int64_t c, int64_t h, int64_t w) {
    if (a.is_none()) return nullptr;
    return (const float*)exact_array(a, name, element::f32, checked_madd(n * c, h * w, 0, name), false).data();
  }

  // A writable plain (NCHW) float32 output of n·c·h·w values disjoint from `others`, or null for None.
  static float* plain_out(py::handle a, const char* name, int64_t n, int64_t c, int64_t h, int64_t w,
                          std::initializer_list<py::handle> others) {
    if (a.is_none()) return nullptr;
    float* p = (float*)exact_array(a, name, element::f32, checked_madd(n * c, h * w, 0, name), true).mutable_data();
    for (py::handle o : others)
      if (!o.is_none())
        require_disjoint(py::reinterpret_borrow<py::array>(a), py::reinterpret_borrow<py::array>(o), name, "an input");
    return p;
  }

  void forward(int64_t n, int64_t h, int64_t w, py::handle xb, py::handle yb, py::handle x, py::handle y) {
    const auto [oh, ow] = out(h, w);
    const auto& g = cv.geometry();
    const float* xplain = plain(x, "x", n, g.c, h, w);
    float* xp = (float*)exact_array(xb, "xb", element::f32, blocked(n, g.c, cv.bc(), h, w), xplain != nullptr).data();
    float* yp = (float*)exact_array(yb, "yb", element::f32, blocked(n, g.k, cv.bk(), oh, ow), true).mutable_data();
    require_disjoint(py::reinterpret_borrow<py::array>(yb), py::reinterpret_borrow<py::array>(xb), "yb", "xb");
    if (xplain) {
      require_disjoint(py::reinterpret_borrow<py::array>(xb), py::reinterpret_borrow<py::array>(x), "xb", "x");
      require_disjoint(py::reinterpret_borrow<py::array>(yb), py::reinterpret_borrow<py::array>(x), "yb", "x");
    }
    float* yplain = plain_out(y, "y", n, g.k, oh, ow, {xb, yb, x});
    if (!cv.weights_finite()) value_error("weight holds an inf or a NaN: DFP-16 has no exponent for it");
    status s;
    {
      py::gil_scoped_release nogil;
      s = cv.forward(n, h, w, xplain, xp, yp, yplain);
    }
    check_status(s);
    if (cv.nonfinite()) value_error("x holds an inf or a NaN: DFP-16 has no exponent for it");
  }

  void backward(int64_t n, int64_t h, int64_t w, py::handle gyb, py::handle yb, py::handle gxb, py::handle wg,
                py::handle bg, bool accumulate, py::handle gy, py::handle gx) {
    if (!cv.ready(n, h, w)) value_error("backward needs a forward of the same size (n, h, w) first");
    const auto [oh, ow] = out(h, w);
    const auto& g = cv.geometry();
    const int64_t ny = blocked(n, g.k, cv.bk(), oh, ow);
    const float* gyplain = plain(gy, "grad_out_plain", n, g.k, oh, ow);
    float* gyp = (float*)exact_array(gyb, "grad_out", element::f32, ny, gyplain != nullptr).data();
    if (gyplain)
      for (py::handle other : {yb, gxb, gyb})
        if (!other.is_none())
          require_disjoint(py::reinterpret_borrow<py::array>(other), py::reinterpret_borrow<py::array>(gy), "an array",
                           "grad_out_plain");
    const float* yp = (const float*)exact_array(yb, "yb", element::f32, ny, false).data();
    float* gxp = gxb.is_none() ? nullptr
                               : (float*)exact_array(gxb, "grad_in", element::f32, blocked(n, g.c, cv.bc(), h, w), true)
                                     .mutable_data();
    float* wgp = (float*)exact_array(wg, "weight_grad", element::f32, weights(), true).mutable_data();
    float* bgp = bg.is_none() ? nullptr : (float*)exact_array(bg, "bias_grad", element::f32, g.k, true).mutable_data();
    float* gxplain = gxp ? plain_out(gx, "grad_in_plain", n, g.c, h, w, {gyb, yb, gxb, wg, bg, gy}) : nullptr;
    status s;
    {
      py::gil_scoped_release nogil;
      s = cv.backward(n, h, w, gyplain, gyp, yp, gxp, wgp, bgp, accumulate, gxplain);
    }
    check_status(s);
    if (cv.nonfinite()) value_error("grad_out holds an inf or a NaN: DFP-16 has no exponent for it");
  }
};

}  // namespace

void register_dfp_conv(py::module_& m) {
  py::class_<py_dfp_conv>(m, "_DFPConv2d")
      .def(py::init([](int64_t c, int64_t k, int64_t r, int64_t s, int64_t sh, int64_t sw, int64_t pt, int64_t pb,
                       int64_t pl, int64_t pr, int64_t dh, int64_t dw, const std::string& act) {
             for (auto [v, name] : {std::pair{c, "in_channels"}, {k, "out_channels"}, {r, "kernel rows"},
                                    {s, "kernel columns"}, {sh, "stride"}, {sw, "stride"}, {dh, "dilation"},
                                    {dw, "dilation"}})
               if (v < 1) value_error(std::string(name) + " must be at least 1, got " + std::to_string(v));
             for (int64_t p : {pt, pb, pl, pr})
               if (p < 0) value_error("padding must not be negative, got " + std::to_string(p));
             if (act != "none" && act != "relu")
               value_error("activation must be None or 'relu' for dtype='dfp16', got '" + act + "'");
             layers::conv_geometry g;
             g.c = c, g.k = k, g.r = r, g.s = s, g.stride_h = sh, g.stride_w = sw, g.pad_t = pt, g.pad_b = pb;
             g.pad_l = pl, g.pad_r = pr, g.dil_h = dh, g.dil_w = dw;
             return new py_dfp_conv(g, act == "relu");
           }),
           py::arg("in_channels"), py::arg("out_channels"), py::arg("r"), py::arg("s"), py::arg("stride_h"),
           py::arg("stride_w"), py::arg("pad_t"), py::arg("pad_b"), py::arg("pad_l"), py::arg("pad_r"),
           py::arg("dil_h"), py::arg("dil_w"), py::arg("activation"))
      .def_property_readonly("bc", [](const py_dfp_conv& l) { return l.cv.bc(); })
      .def_property_readonly("bk", [](const py_dfp_conv& l) { return l.cv.bk(); })
      .def_property_readonly("exponents", [](const py_dfp_conv& l) {
        return py::dict(py::arg("x") = l.cv.ex(), py::arg("weight") = l.cv.ew(), py::arg("grad") = l.cv.ez(),
                        py::arg("x_shift") = l.cv.x_shift(), py::arg("grad_shift") = l.cv.z_shift());
      })
      .def("refresh", &py_dfp_conv::refresh, py::arg("weight"), py::arg("bias"))
      .def("forward", &py_dfp_conv::forward, py::arg("n"), py::arg("h"), py::arg("w"), py::arg("xb"), py::arg("yb"),
           py::arg("x") = py::none(), py::arg("y") = py::none())
      .def("backward", &py_dfp_conv::backward, py::arg("n"), py::arg("h"), py::arg("w"), py::arg("grad_out"),
           py::arg("yb"), py::arg("grad_in"), py::arg("weight_grad"), py::arg("bias_grad"), py::arg("accumulate"),
           py::arg("grad_out_plain") = py::none(), py::arg("grad_in_plain") = py::none());
}

}  // namespace brgemm::bindings
