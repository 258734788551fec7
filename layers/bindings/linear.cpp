// layers/bindings/linear.cpp: the fully-connected layers (brgemm.nn.Linear and MLP drive
// _core._Linear), the plain ↔ blocked copies of their activations, and the layers' exact
// change check on weights.
#include "arrays.h"

#include "../blocks.h"
#include "../linear.h"

namespace brgemm::bindings {

namespace {

// Plain (n, c) rows, f32 or bf16 (leading_dim checks the rows are contiguous).
py::array plain_rows(py::handle h, const char* name, bool* bf16) {
  py::array arr = float_array(h, name, bf16);
  if (arr.ndim() != 2) value_error(std::string(name) + " must be 2-D (rows, features), got " + std::to_string(arr.ndim()) + "-D");
  require_nonempty(arr, name);
  return arr;
}

int64_t blocked_elems(int64_t n, int64_t c, int64_t bn, int64_t bc) {
  return checked_madd((n + bn - 1) / bn * bn, (c + bc - 1) / bc * bc, 0, "blocked array");
}

// The element type of a float array the binding helpers checked (bf16 flag from them).
element float_element(bool bf16) { return bf16 ? element::bf16 : element::f32; }

void check_blocks(int64_t bn, int64_t bc) {
  if (bn < 1 || bc < 1) value_error("block sizes must be at least 1");
}

// x (n, c) → xb, blocked [n/bn][c/bc][bn][bc] in xb's dtype.
void fc_to_blocked_py(py::handle X, py::handle XB, int64_t bn, int64_t bc) {
  check_blocks(bn, bc);
  bool xbf, bbf;
  py::array x = plain_rows(X, "x", &xbf);
  const int64_t n = x.shape(0), c = x.shape(1), ld = leading_dim(x, 0, c, "x");
  py::array xb = eltwise_array(XB, "xb", &bbf);
  exact_array(XB, "xb", float_element(bbf), blocked_elems(n, c, bn, bc), true);
  require_disjoint(xb, x, "xb", "x");
  const void* xp = x.data();
  void* bp = xb.mutable_data();
  py::gil_scoped_release nogil;
  layers::fc_to_blocked(xp, float_element(xbf), n, c, ld, bp, float_element(bbf), bn, bc);
}

void fc_from_blocked_py(py::handle XB, int64_t bn, int64_t bc, py::handle X) {
  check_blocks(bn, bc);
  bool xbf, bbf;
  py::array x = plain_rows(X, "out", &xbf);
  require_writeable(x, "out");
  const int64_t n = x.shape(0), c = x.shape(1), ld = leading_dim(x, 0, c, "out");
  py::array xb = eltwise_array(XB, "xb", &bbf);
  exact_array(XB, "xb", float_element(bbf), blocked_elems(n, c, bn, bc), false);
  require_disjoint(x, xb, "out", "xb");
  const void* bp = xb.data();
  void* xp = x.mutable_data();
  py::gil_scoped_release nogil;
  layers::fc_from_blocked(bp, float_element(bbf), n, c, bn, bc, xp, float_element(xbf), ld);
}

// The C++ layer, with every array argument checked against its geometry.
struct py_linear {
  layers::fc_layer fc;
  py_linear(const std::string& dt, int64_t in, int64_t out, const std::string& act)
      : fc(layer_dtype_arg(dt), positive(in, "in_features"), positive(out, "out_features"),
           act == "none" ? activation::none : activation_arg(act)) {}

  static int64_t positive(int64_t v, const char* name) {
    if (v < 1) value_error(std::string(name) + " must be at least 1, got " + std::to_string(v));
    return v;
  }
  element act_elem() const { return float_element(fc.bf16()); }
  const float* weight(py::handle w, bool write) {
    return (const float*)exact_array(w, "weight", element::f32, fc.out() * fc.in(), write).data();
  }
  const float* bias(py::handle b, bool write) {
    return b.is_none() ? nullptr : (const float*)exact_array(b, "bias", element::f32, fc.out(), write).data();
  }
  void rows(int64_t n, int64_t bn) {
    if (n < 1) value_error("n must be at least 1");
    if (bn < 2 || bn % 2) value_error("bn must be even and at least 2");
  }

  bool refresh(py::handle w, py::handle b) {
    const float* wp = weight(w, false);
    const float* bp = bias(b, false);
    py::gil_scoped_release nogil;
    return fc.refresh(wp, bp);
  }

  void sgd(py::handle w, py::handle b, py::handle wg, py::handle bg, double lr, bool stochastic, uint64_t seed) {
    float* wp = (float*)weight(w, true);
    float* bp = (float*)bias(b, true);
    const float* wgp = (const float*)exact_array(wg, "weight_grad", element::f32, fc.out() * fc.in(), false).data();
    const float* bgp = bp ? (const float*)exact_array(bg, "bias_grad", element::f32, fc.out(), false).data() : nullptr;
    py::gil_scoped_release nogil;
    fc.sgd(wp, bp, wgp, bgp, (float)lr, stochastic, seed);
  }

  void set_mask(py::handle mask) {
    const uint8_t* mp = mask.is_none()
                            ? nullptr
                            : (const uint8_t*)exact_array(mask, "mask", element::u8, fc.out() * fc.in(), false).data();
    py::gil_scoped_release nogil;
    fc.set_mask(mp);
  }

  // "auto", "dense" or "sparse" (fc_layer::set_sparse_policy).
  void set_policy(const std::string& p) {
    if (p == "auto") fc.set_sparse_policy(layers::sparse_policy::automatic);
    else if (p == "dense") fc.set_sparse_policy(layers::sparse_policy::dense);
    else if (p == "sparse") fc.set_sparse_policy(layers::sparse_policy::sparse);
    else value_error("packing must be 'auto', 'dense' or 'sparse', got '" + p + "'");
  }
  std::string policy() const {
    const auto p = fc.policy();
    return p == layers::sparse_policy::automatic ? "auto" : p == layers::sparse_policy::dense ? "dense" : "sparse";
  }

  void forward(int64_t n, int64_t bn, py::handle xb, py::handle yb, py::handle zb) {
    rows(n, bn);
    const void* xp = exact_array(xb, "xb", act_elem(), blocked_elems(n, fc.in(), bn, fc.bc()), false).data();
    py::array y = exact_array(yb, "yb", act_elem(), blocked_elems(n, fc.out(), bn, fc.bk()), true);
    void* yp = y.mutable_data();
    float* zp = nullptr;
    if (!zb.is_none()) {
      py::array z = exact_array(zb, "zb", element::f32, blocked_elems(n, fc.out(), bn, fc.bk()), true);
      require_disjoint(z, y, "zb", "yb");
      zp = (float*)z.mutable_data();
    }
    require_disjoint(y, py::reinterpret_borrow<py::array>(xb), "yb", "xb");
    status s;
    {
      py::gil_scoped_release nogil;
      s = fc.forward(n, bn, xp, yp, zp);
    }
    check_status(s);
  }

  // x (n, in) → y (n, out), both plain: blocked into the scratch xb (row block bn), the product
  // into the scratch yb (the pre-activation into zb when given), then unblocked, under one GIL
  // release, after packing weight and bias if they changed (refresh) when weight is given.
  // A plain-layout layer call crosses into C++ here once.
  void forward_plain(py::handle X, int64_t bn, py::handle xb, py::handle yb, py::handle Y, py::handle zb,
                     py::handle w, py::handle b) {
    bool xbf, ybf;
    py::array x = plain_rows(X, "x", &xbf);
    py::array y = plain_rows(Y, "y", &ybf);
    require_writeable(y, "y");
    const int64_t n = x.shape(0);
    rows(n, bn);
    if (x.shape(1) != fc.in()) value_error("x must have " + std::to_string(fc.in()) + " features");
    if (y.shape(0) != n || y.shape(1) != fc.out())
      value_error("y must have shape (" + std::to_string(n) + ", " + std::to_string(fc.out()) + ")");
    const int64_t ldx = leading_dim(x, 0, fc.in(), "x"), ldy = leading_dim(y, 0, fc.out(), "y");
    plain_scratch sc = plain_scratch_arrays(x, y, xb, yb, zb, act_elem(), blocked_elems(n, fc.in(), bn, fc.bc()),
                                                  blocked_elems(n, fc.out(), bn, fc.bk()));
    const float* wp = w.is_none() ? nullptr : weight(w, false);
    const float* bp = w.is_none() ? nullptr : bias(b, false);
    const element bt = act_elem();
    const void* xp = x.data();
    void *xbp = sc.xb.mutable_data(), *ybp = sc.yb.mutable_data(), *yp = y.mutable_data();
    float* zp = sc.z;
    status s;
    {
      py::gil_scoped_release nogil;
      if (wp) fc.refresh(wp, bp);
      layers::fc_to_blocked(xp, float_element(xbf), n, fc.in(), ldx, xbp, bt, bn, fc.bc());
      s = fc.forward(n, bn, xbp, ybp, zp);
      if (s == status::ok) layers::fc_from_blocked(ybp, bt, n, fc.out(), bn, fc.bk(), yp, float_element(ybf), ldy);
    }
    check_status(s);
  }

  // x (n, in) → y (n, out), both plain float32, by fc_layer::forward_rows (no blocked copies),
  // after packing weight and bias if they changed (when weight is given); only where
  // has_rows_forward.
  void forward_rows(py::handle X, py::handle Y, py::handle w, py::handle b) {
    if (!fc.has_rows_forward())
      value_error("forward_rows needs a float32 layer of at least 64 output features and a fused activation");
    bool xbf, ybf;
    py::array x = plain_rows(X, "x", &xbf);
    py::array y = plain_rows(Y, "y", &ybf);
    if (xbf || ybf) type_error("forward_rows takes float32 x and y");
    require_writeable(y, "y");
    const int64_t n = x.shape(0);
    if (n < 1) value_error("x must have at least one row");
    if (x.shape(1) != fc.in()) value_error("x must have " + std::to_string(fc.in()) + " features");
    if (y.shape(0) != n || y.shape(1) != fc.out())
      value_error("y must have shape (" + std::to_string(n) + ", " + std::to_string(fc.out()) + ")");
    require_disjoint(y, x, "y", "x");
    const int64_t ldx = leading_dim(x, 0, fc.in(), "x"), ldy = leading_dim(y, 0, fc.out(), "y");
    const float* wp = w.is_none() ? nullptr : weight(w, false);
    const float* bp = w.is_none() ? nullptr : bias(b, false);
    const float* xp = (const float*)x.data();
    float* yp = (float*)y.mutable_data();
    status s;
    {
      py::gil_scoped_release nogil;
      if (wp) fc.refresh(wp, bp);
      s = fc.forward_rows(n, xp, ldx, yp, ldy);
    }
    check_status(s);
  }

  void backward(int64_t n, int64_t bn, py::handle gyb, py::handle yb, py::handle zb, py::handle xb, py::handle gxb,
                py::handle wg, py::handle bg, bool accumulate) {
    rows(n, bn);
    const int64_t ye = blocked_elems(n, fc.out(), bn, fc.bk()), xe = blocked_elems(n, fc.in(), bn, fc.bc());
    const float* gy = (const float*)exact_array(gyb, "grad_out", element::f32, ye, false).data();
    const void* y = fc.needs_z() ? nullptr : exact_array(yb, "yb", act_elem(), ye, false).data();
    const float* z = fc.needs_z() ? (const float*)exact_array(zb, "zb", element::f32, ye, false).data() : nullptr;
    const void* x = exact_array(xb, "xb", act_elem(), xe, false).data();
    float* gx = gxb.is_none() ? nullptr : (float*)exact_array(gxb, "grad_in", element::f32, xe, true).mutable_data();
    float* w = (float*)exact_array(wg, "weight_grad", element::f32, fc.out() * fc.in(), true).mutable_data();
    float* b = bg.is_none() ? nullptr : (float*)exact_array(bg, "bias_grad", element::f32, fc.out(), true).mutable_data();
    status s;
    {
      py::gil_scoped_release nogil;
      s = fc.backward(n, bn, gy, y, z, x, gx, w, b, accumulate);
    }
    check_status(s);
  }
};

}  // namespace

void register_linear(py::module_& m) {
  m.def("fc_to_blocked", &fc_to_blocked_py, py::arg("x"), py::arg("xb"), py::arg("bn"), py::arg("bc"));
  m.def("fc_from_blocked", &fc_from_blocked_py, py::arg("xb"), py::arg("bn"), py::arg("bc"), py::arg("out"));
  m.def("fc_block", &layers::fc_block, py::arg("size"));
  m.def("fc_row_block", [](int64_t n) {
    if (n < 1) value_error("n must be at least 1, got " + std::to_string(n));
    return layers::fc_row_block(n);
  }, py::arg("n"));
  py::class_<py_linear>(m, "_Linear")
      .def(py::init<const std::string&, int64_t, int64_t, const std::string&>(), py::arg("dtype"),
           py::arg("in_features"), py::arg("out_features"), py::arg("activation"))
      .def_property_readonly("bc", [](const py_linear& l) { return l.fc.bc(); })
      .def_property_readonly("bk", [](const py_linear& l) { return l.fc.bk(); })
      .def_property_readonly("needs_z", [](const py_linear& l) { return l.fc.needs_z(); })
      .def_property_readonly("has_rows_forward", [](const py_linear& l) { return l.fc.has_rows_forward(); })
      .def("refresh", &py_linear::refresh, py::arg("weight"), py::arg("bias"))
      .def("sgd", &py_linear::sgd, py::arg("weight"), py::arg("bias"), py::arg("weight_grad"), py::arg("bias_grad"),
           py::arg("lr"), py::arg("stochastic"), py::arg("seed"))
      .def("set_mask", &py_linear::set_mask, py::arg("mask"))
      .def_property("packing", &py_linear::policy, &py_linear::set_policy)
      .def_property_readonly("block_sparse", [](const py_linear& l) { return l.fc.block_sparse(); })
      .def_property_readonly("kept_blocks", [](const py_linear& l) { return l.fc.kept_blocks(); })
      .def_property_readonly("total_blocks", [](const py_linear& l) { return l.fc.total_blocks(); })
      .def_readonly_static("sparse_crossover", &layers::fc_sparse_crossover)
      .def("forward", &py_linear::forward, py::arg("n"), py::arg("bn"), py::arg("xb"), py::arg("yb"), py::arg("zb"))
      .def("forward_plain", &py_linear::forward_plain, py::arg("x"), py::arg("bn"), py::arg("xb"), py::arg("yb"),
           py::arg("y"), py::arg("zb"), py::arg("weight"), py::arg("bias"))
      .def("forward_rows", &py_linear::forward_rows, py::arg("x"), py::arg("y"), py::arg("weight"), py::arg("bias"))
      .def("backward", &py_linear::backward, py::arg("n"), py::arg("bn"), py::arg("grad_out"), py::arg("yb"),
           py::arg("zb"), py::arg("xb"), py::arg("grad_in"), py::arg("weight_grad"), py::arg("bias_grad"),
           py::arg("accumulate"));
  // The layers' exact change check (parallel memcmp), for the Python layers that keep a snapshot.
  m.def("same_bytes", [](py::handle a, py::handle b) {
    if (!py::isinstance<py::array>(a) || !py::isinstance<py::array>(b)) type_error("same_bytes compares numpy arrays");
    auto x = py::reinterpret_borrow<py::array>(a), y = py::reinterpret_borrow<py::array>(b);
    if (!(x.flags() & py::array::c_style) || !(y.flags() & py::array::c_style))
      value_error("same_bytes needs C-contiguous arrays");
    if (x.nbytes() != y.nbytes()) return false;
    const void *p = x.data(), *q = y.data();
    const int64_t n = (int64_t)x.nbytes();
    py::gil_scoped_release nogil;
    return layers::same_bytes(p, q, n);
  }, py::arg("a"), py::arg("b"));
}

}  // namespace brgemm::bindings
