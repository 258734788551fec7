// layers/bindings/eltwise.cpp: the element-wise functions over whole arrays (activations and
// their backward passes, exact and Taylor softmax, dropout) and the K-TanH table they use, for
// brgemm.activation / brgemm.softmax and the layers written in Python.
#include "arrays.h"

#include "../eltwise.h"
#include "brgemm/ktanh_table.h"

namespace brgemm::bindings {

namespace {

// out: None (a new array) or an array of x's dtype and shape, x itself or disjoint from the inputs.
py::array eltwise_out(py::object out, const py::array& x, const std::vector<py::array>& inputs) {
  if (out.is_none()) return py::array(x.dtype(), std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim()));
  bool bf16;
  py::array o = eltwise_array(out, "out", &bf16);
  if (!o.dtype().is(x.dtype())) type_error("out must have dtype " + str(x.dtype()) + ", got " + str(o.dtype()));
  if (!o.attr("shape").equal(x.attr("shape")))
    value_error("out must have shape " + str(x.attr("shape")) + ", got " + str(o.attr("shape")));
  require_writeable(o, "out");
  for (const py::array& in : inputs)
    if (o.data() != in.data() && overlaps(extent(o), extent(in)))
      value_error("out partly overlaps an input; it may be the input itself, or disjoint from it");
  return o;
}

py::array activation_py(py::handle X, const std::string& name, py::object out) {
  const activation a = activation_arg(name);
  bool bf16;
  py::array x = eltwise_array(X, "x", &bf16);
  py::array y = eltwise_out(out, x, {x});
  const void* xp = x.data();
  void* yp = y.mutable_data();
  const int64_t n = x.size();
  {
    py::gil_scoped_release nogil;
    layers::activation(a, bf16, xp, yp, n);
  }
  return y;
}

// grad_x = grad_y·f'(·) in float32; x (the input) or y (the output) as activation_backward_needs_x says.
py::array activation_backward_py(const std::string& name, py::handle G, py::object X, py::object Y, py::object out) {
  const activation a = activation_arg(name);
  py::array g = typed_array(G, "grad_y", element::f32);
  if (!(g.flags() & py::array::c_style)) value_error("grad_y must be C-contiguous");
  const bool need_x = activation_backward_needs_x(a);
  py::object src = need_x ? X : Y;
  const char* src_name = need_x ? "x" : "y";
  if (src.is_none()) value_error(std::string("the backward pass of ") + name + " needs " + src_name);
  py::array v = typed_array(src, src_name, element::f32);
  if (!(v.flags() & py::array::c_style)) value_error(std::string(src_name) + " must be C-contiguous");
  if (!v.attr("shape").equal(g.attr("shape")))
    value_error(std::string(src_name) + " must have grad_y's shape " + str(g.attr("shape")) + ", got " +
                str(v.attr("shape")));
  py::array o = eltwise_out(out, g, {g, v});
  const float* gp = (const float*)g.data();
  const float* vp = (const float*)v.data();
  float* op = (float*)o.mutable_data();
  const int64_t n = g.size();
  {
    py::gil_scoped_release nogil;
    layers::activation_backward(a, gp, need_x ? vp : nullptr, need_x ? nullptr : vp, op, n);
  }
  return o;
}

// Softmax over the last axis of a C-contiguous array; order 0 = exact, else Taylor of that order.
py::array softmax_py(py::handle X, int order, py::object out) {
  if (order < 0 || order > 16 || order % 2) value_error("order must be 0 (exact) or even, 2 to 16");
  bool bf16;
  py::array x = eltwise_array(X, "x", &bf16);
  if (x.ndim() < 1 || x.size() == 0) value_error("x must have at least one element along the softmax axis");
  py::array y = eltwise_out(out, x, {x});
  const int64_t cols = x.shape(x.ndim() - 1), rows = x.size() / cols;
  const void* xp = x.data();
  void* yp = y.mutable_data();
  {
    py::gil_scoped_release nogil;
    layers::softmax(order, bf16, xp, yp, rows, cols);
  }
  return y;
}

// grad_x of the softmax over the last axis: exact (order 0) from y, Taylor from x; grad_y and
// that array of one dtype (float32 or bfloat16), the result in it too.
py::array softmax_backward_py(int order, py::object X, py::object Y, py::handle G, py::object out) {
  if (order < 0 || order > 16 || order % 2) value_error("order must be 0 (exact) or even, 2 to 16");
  bool bf16, src_bf16;
  py::array g = eltwise_array(G, "grad_y", &bf16);
  if (g.ndim() < 1 || g.size() == 0) value_error("grad_y must have at least one element along the softmax axis");
  const char* name = order > 0 ? "x" : "y";
  py::object src = order > 0 ? X : Y;
  if (src.is_none())
    value_error(std::string("the backward pass of ") + (order > 0 ? "the Taylor softmax needs x" : "softmax needs y"));
  py::array v = eltwise_array(src, name, &src_bf16);
  if (!v.dtype().is(g.dtype()))
    type_error(std::string(name) + " must have grad_y's dtype " + str(g.dtype()) + ", got " + str(v.dtype()));
  if (!v.attr("shape").equal(g.attr("shape")))
    value_error(std::string(name) + " must have grad_y's shape " + str(g.attr("shape")) + ", got " +
                str(v.attr("shape")));
  py::array o = eltwise_out(out, g, {g, v});
  const int64_t cols = g.shape(g.ndim() - 1), rows = g.size() / cols;
  const void *vp = v.data(), *gp = g.data();
  void* op = o.mutable_data();
  {
    py::gil_scoped_release nogil;
    layers::softmax_backward(order, bf16, order > 0 ? vp : nullptr, order > 0 ? nullptr : vp, gp, op, rows, cols);
  }
  return o;
}

// out (cols × rows) = xᵀ (rows × cols) through brgemm.h's transpose_elements (for the tests): 1-,
// 2- or 4-byte elements; either array may have a row stride (a slice of a wider array) but
// must have consecutive elements within a row.
void transpose_py(const py::array& x, py::array out) {
  const int64_t bytes = x.itemsize();
  if (bytes != 1 && bytes != 2 && bytes != 4) type_error("x must have 1-, 2- or 4-byte elements, got " + str(x.dtype()));
  if (x.ndim() != 2) value_error("x must be 2-D, got " + std::to_string(x.ndim()) + " dimensions");
  if (out.ndim() != 2 || out.shape(0) != x.shape(1) || out.shape(1) != x.shape(0))
    value_error("out must have x's shape reversed, (" + std::to_string(x.shape(1)) + ", " + std::to_string(x.shape(0)) +
                "), got " + str(out.attr("shape")));
  if (out.itemsize() != bytes) type_error("out must have x's element size, " + std::to_string(bytes) + " bytes");
  require_writeable(out, "out");
  require_disjoint(out, x, "out", "x");
  auto row_stride = [&](const py::array& a, const char* name) {
    if (a.shape(1) > 1 && a.strides(1) != bytes) value_error(std::string(name) + " must have consecutive elements in a row");
    if (a.shape(0) > 1 && (a.strides(0) <= 0 || a.strides(0) % bytes || a.strides(0) / bytes < a.shape(1)))
      value_error(std::string(name) + " must have a positive row stride of at least a row's elements");
    return a.shape(0) > 1 ? a.strides(0) / bytes : a.shape(1);
  };
  const int64_t ld_x = row_stride(x, "x"), ld_out = row_stride(out, "out");
  const void* xp = x.data();
  void* op = out.mutable_data();
  py::gil_scoped_release nogil;
  transpose_elements(xp, x.shape(0), x.shape(1), ld_x, op, ld_out, (int)bytes);
}

// out (rows / 2, 2·cols) = x's (rows × cols, 2-byte elements, C-contiguous) rows 2p and 2p + 1
// interleaved into row p, through brgemm.h's interleave_pairs_b16 (for the tests).
void interleave_pairs_py(const py::array& x, py::array out) {
  if (x.itemsize() != 2) type_error("x must have 2-byte elements, got " + str(x.dtype()));
  if (x.ndim() != 2) value_error("x must be 2-D, got " + std::to_string(x.ndim()) + " dimensions");
  if (!(x.flags() & py::array::c_style)) value_error("x must be C-contiguous");
  const int64_t rows = x.shape(0), cols = x.shape(1);
  if (out.ndim() != 2 || out.shape(0) != rows / 2 || out.shape(1) != 2 * cols)
    value_error("out must have shape (" + std::to_string(rows / 2) + ", " + std::to_string(2 * cols) + "), got " +
                str(out.attr("shape")));
  if (out.itemsize() != 2) type_error("out must have 2-byte elements, got " + str(out.dtype()));
  if (!(out.flags() & py::array::c_style)) value_error("out must be C-contiguous");
  require_writeable(out, "out");
  require_disjoint(out, x, "out", "x");
  const uint16_t* xp = (const uint16_t*)x.data();
  uint16_t* op = (uint16_t*)out.mutable_data();
  py::gil_scoped_release nogil;
  interleave_pairs_b16(xp, rows, cols, op);
}

// Dropout of a C-contiguous float32 array (brgemm.h's dropout): positions are x's flat indices.
py::array dropout_py(py::handle X, double p, uint64_t seed, py::object out) {
  if (!(p >= 0.0 && p <= 1.0)) value_error("p must be in [0, 1], got " + std::to_string(p));
  py::array x = f32_array(X, "x");
  if (!(x.flags() & py::array::c_style)) value_error("x must be C-contiguous");
  py::array y = eltwise_out(out, x, {x});
  const float* xp = (const float*)x.data();
  float* yp = (float*)y.mutable_data();
  const int64_t n = x.size();
  {
    py::gil_scoped_release nogil;
    layers::dropout(xp, yp, n, p, seed);
  }
  return y;
}

}  // namespace

void register_eltwise(py::module_& m) {
  m.def("activation", &activation_py, py::arg("x"), py::arg("name"), py::arg("out") = py::none());
  m.def("activation_backward", &activation_backward_py, py::arg("name"), py::arg("grad_y"), py::arg("x") = py::none(),
        py::arg("y") = py::none(), py::arg("out") = py::none());
  m.def("softmax", &softmax_py, py::arg("x"), py::arg("order"), py::arg("out") = py::none());
  m.def("softmax_backward", &softmax_backward_py, py::arg("order"), py::arg("x"), py::arg("y"), py::arg("grad_y"),
        py::arg("out") = py::none());
  m.def("dropout", &dropout_py, py::arg("x"), py::arg("p"), py::arg("seed"), py::arg("out") = py::none());
  m.def("transpose", &transpose_py, py::arg("x"), py::arg("out"));
  m.def("interleave_pairs", &interleave_pairs_py, py::arg("x"), py::arg("out"));
  m.def("ktanh_table", [] {
    py::list e, sh, b;
    for (int i = 0; i < 32; ++i) {
      e.append(ktanh::exponent[i]);
      sh.append(ktanh::shift[i]);
      b.append(ktanh::bias[i]);
    }
    return py::make_tuple(e, sh, b, ktanh::low_exp, ktanh::high_exp);
  }, "The K-TanH tables compiled in: (exponent, shift, bias, low_exp, high_exp).");
}

}  // namespace brgemm::bindings
