// layers/bindings/pool.cpp: pooling on the blocked layout (N, C/bc, H, W, bc): max pooling 2-D
// and global average pooling, forward and backward, for brgemm.torch's operators; the forward
// passes of uint8 (quantized) activations too, for int8 inference.
#include "arrays.h"

#include <cmath>

#include "brgemm/window.h"
#include "../pool.h"

namespace brgemm::bindings {

namespace {

// An int, or a sequence of one or two ints (PyTorch's int[2]), as (rows, columns).
std::array<int64_t, 2> pair_arg(py::handle h, const char* name) {
  if (PyIndex_Check(h.ptr())) {
    const int64_t v = index_arg(h, name);
    return {v, v};
  }
  if (!py::isinstance<py::sequence>(h) || py::isinstance<py::str>(h))
    type_error(std::string(name) + " must be an integer or a sequence of two integers, got " +
               str(py::type::of(h).attr("__name__")));
  auto seq = py::reinterpret_borrow<py::sequence>(h);
  if (seq.size() != 1 && seq.size() != 2)
    value_error(std::string(name) + " must have one or two values, got " + std::to_string(seq.size()));
  const int64_t a = index_arg(seq[0], name);
  return {a, seq.size() == 2 ? index_arg(seq[1], name) : a};
}

std::string pair_str(const std::array<int64_t, 2>& v) {
  return "(" + std::to_string(v[0]) + ", " + std::to_string(v[1]) + ")";
}

std::vector<py::ssize_t> shape_of(const py::array& a) { return {a.shape(), a.shape() + a.ndim()}; }

// A blocked (N, C/bc, H, W, bc) float32 or bfloat16 array, C-contiguous.
py::array blocked_arg(py::handle h, const char* name, bool* bf16) {
  py::array x = eltwise_array(h, name, bf16);
  if (x.ndim() != 5)
    value_error(std::string(name) + " must be blocked (N, C/bc, H, W, bc), 5-D; got shape " + str(x.attr("shape")));
  return x;
}

// The same for the forward passes, uint8 allowed too (which one: *e).
py::array blocked_arg(py::handle h, const char* name, element* e) {
  if (py::isinstance<py::array>(h) && numpy_matches(py::reinterpret_borrow<py::array>(h).dtype(), element::u8)) {
    py::array x = typed_array(h, name, element::u8);
    if (!(x.flags() & py::array::c_style)) value_error(std::string(name) + " must be C-contiguous");
    if (x.ndim() != 5)
      value_error(std::string(name) + " must be blocked (N, C/bc, H, W, bc), 5-D; got shape " + str(x.attr("shape")));
    *e = element::u8;
    return x;
  }
  bool bf16;
  py::array x = blocked_arg(h, name, &bf16);
  *e = bf16 ? element::bf16 : element::f32;
  return x;
}

// out: None (a new array of this dtype and shape) or exactly that, writeable, disjoint from the inputs.
py::array out_arg(py::object out, const py::dtype& dt, const std::vector<py::ssize_t>& shape,
                  const std::vector<std::pair<const py::array*, const char*>>& inputs) {
  if (out.is_none()) return py::array(dt, shape);
  if (!py::isinstance<py::array>(out))
    type_error("out must be a numpy array or None, got " + str(py::type::of(out).attr("__name__")));
  auto o = py::reinterpret_borrow<py::array>(out);
  if (!o.dtype().is(dt)) type_error("out must have dtype " + str(dt) + ", got " + str(o.dtype()));
  if (shape_of(o) != shape) value_error("out must have shape " + str(py::tuple(py::cast(shape))) + ", got " +
                                        str(o.attr("shape")));
  if (!(o.flags() & py::array::c_style)) value_error("out must be C-contiguous");
  require_writeable(o, "out");
  if (o.size())
    for (const auto& [in, name] : inputs)
      if (in->size()) require_disjoint(o, *in, "out", name);
  return o;
}

// The pooling geometry of a blocked input, checked as PyTorch's max_pool2d checks it.
layers::pool2d_shape pool_shape(const py::array& x, py::handle kernel_size, py::handle stride, py::handle padding) {
  const auto k = pair_arg(kernel_size, "kernel_size"), s = pair_arg(stride, "stride"), p = pair_arg(padding, "padding");
  if (k[0] < 1 || k[1] < 1) value_error("kernel_size must be positive, got " + pair_str(k));
  if (s[0] < 1 || s[1] < 1) value_error("stride must be positive, got " + pair_str(s));
  if (p[0] < 0 || p[1] < 0) value_error("padding must not be negative, got " + pair_str(p));
  if (p[0] > k[0] / 2 || p[1] > k[1] / 2)
    value_error("padding must be at most half of kernel_size, got padding " + pair_str(p) + " for kernel_size " +
                pair_str(k));
  if (k[0] > (INT32_MAX >> 1) / k[1])  // the backward pass numbers a window's positions in 32 bits
    value_error("kernel_size " + pair_str(k) + " is too large: its area must be below 2^30");
  layers::pool2d_shape g{x.shape(0), x.shape(1), x.shape(2), x.shape(3), x.shape(4), k[0], k[1], s[0], s[1], p[0], p[1]};
  if (g.h < 1 || g.w < 1)
    value_error("input must have H and W of at least 1, got shape " + str(x.attr("shape")));
  // k − 2p ≤ H, written so that nothing overflows (p ≤ k/2).
  if (k[0] - 2 * p[0] > g.h || k[1] - 2 * p[1] > g.w)
    value_error("kernel_size " + pair_str(k) + " is larger than the padded input (" +
                std::to_string(g.h) + " + 2·" + std::to_string(p[0]) + ", " + std::to_string(g.w) + " + 2·" +
                std::to_string(p[1]) + ")");
  return g;
}

std::vector<py::ssize_t> pooled_shape(const layers::pool2d_shape& g) {
  return {(py::ssize_t)g.n, (py::ssize_t)g.blocks, (py::ssize_t)g.oh(), (py::ssize_t)g.ow(), (py::ssize_t)g.bc};
}

py::array max_pool2d_py(py::handle X, py::handle kernel_size, py::handle stride, py::handle padding, py::object out) {
  element e;
  py::array x = blocked_arg(X, "input", &e);
  const layers::pool2d_shape g = pool_shape(x, kernel_size, stride, padding);
  py::array y = out_arg(out, x.dtype(), pooled_shape(g), {{&x, "input"}});
  const void* xp = x.data();
  void* yp = y.mutable_data();
  {
    py::gil_scoped_release nogil;
    layers::max_pool2d(g, e, xp, yp);
  }
  return y;
}

py::array max_pool2d_backward_py(py::handle G, py::handle X, py::handle kernel_size, py::handle stride,
                                 py::handle padding, py::object out) {
  bool bf16;
  py::array x = blocked_arg(X, "input", &bf16);
  const layers::pool2d_shape g = pool_shape(x, kernel_size, stride, padding);
  py::array gy = typed_array(G, "grad_output", element::f32);
  if (!(gy.flags() & py::array::c_style)) value_error("grad_output must be C-contiguous");
  if (shape_of(gy) != pooled_shape(g))
    value_error("grad_output must have the output's shape " + str(py::tuple(py::cast(pooled_shape(g)))) + ", got " +
                str(gy.attr("shape")));
  py::array gx = out_arg(out, numpy_dtype(element::f32), shape_of(x), {{&x, "input"}, {&gy, "grad_output"}});
  const void* xp = x.data();
  const float* gp = (const float*)gy.data();
  float* op = (float*)gx.mutable_data();
  {
    py::gil_scoped_release nogil;
    layers::max_pool2d_backward(g, bf16, xp, gp, op);
  }
  return gx;
}

// channels C of blocks of bc: the blocks hold C with less than one block of padding.
int64_t channels_arg(py::handle h, int64_t blocks, int64_t bc) {
  const int64_t c = index_arg(h, "channels");
  checked_madd(blocks, bc, 0, "channels");  // the blocks' capacity, from sizes a caller may give
  if (c < 0 || c > blocks * bc || (blocks > 0 && c <= (blocks - 1) * bc))
    value_error("channels = " + std::to_string(c) + " does not fit " + std::to_string(blocks) + " blocks of " +
                std::to_string(bc) + (blocks > 0 ? " (it must be " + std::to_string((blocks - 1) * bc + 1) + " to " +
                                                       std::to_string(blocks * bc) + ")" : ""));
  return c;
}

// A quantization scale: a real number, positive and finite as a float32.
float scale_arg(py::handle h, const char* name) {
  auto refuse = [&] {
    type_error(std::string(name) + " must be a real number, got " + str(py::type::of(h).attr("__name__")));
  };
  if (!PyNumber_Check(h.ptr())) refuse();
  const double v = PyFloat_AsDouble(h.ptr());  // complex, or an array of several: refused here
  if (v == -1.0 && PyErr_Occurred()) {
    PyErr_Clear();
    refuse();
  }
  const float f = (float)v;
  if (!(f > 0.0f && std::isfinite(f)))
    value_error(std::string(name) + " must be positive and finite as a float32, got " + str(py::repr(py::float_(v))));
  return f;
}

py::array global_avg_pool_py(py::handle X, py::handle channels, py::handle scale, py::handle zero_point,
                             py::object out) {
  element e;
  py::array x = blocked_arg(X, "input", &e);
  const int64_t n = x.shape(0), blocks = x.shape(1), hw = x.shape(2) * x.shape(3), bc = x.shape(4);
  const int64_t c = channels_arg(channels, blocks, bc);
  if (hw < 1) value_error("input must have H and W of at least 1, got shape " + str(x.attr("shape")));
  const float sc = scale_arg(scale, "scale");
  const int64_t zp = index_arg(zero_point, "zero_point");
  if (e != element::u8 && (sc != 1.0f || zp != 0))
    value_error("scale and zero_point dequantize uint8 input: for " + str(x.dtype()) +
                " input they must be 1.0 and 0, got " + str(py::repr(py::float_(sc))) + " and " + std::to_string(zp));
  if (zp < 0 || zp > 255) value_error("zero_point must be in [0, 255] for uint8, got " + std::to_string(zp));
  // The sums of hw values up to 255 must be exact as float32 (window.h).
  if (e == element::u8 && hw > vector_mean_u8_max_count)
    value_error("input has H·W = " + std::to_string(hw) + " positions, too many for the uint8 mean: at most " +
                std::to_string(vector_mean_u8_max_count) + " (H·W·255 < 2^24 keeps the sums exact in float32)");
  const py::dtype dt = e == element::u8 ? numpy_dtype(element::f32) : x.dtype();
  py::array y = out_arg(out, dt, {(py::ssize_t)n, (py::ssize_t)c}, {{&x, "input"}});
  const void* xp = x.data();
  void* yp = y.mutable_data();
  {
    py::gil_scoped_release nogil;
    if (e == element::u8)
      layers::global_avg_pool_u8(n, blocks, hw, bc, c, (const uint8_t*)xp, sc, (int32_t)zp, (float*)yp);
    else
      layers::global_avg_pool(n, blocks, hw, bc, c, e == element::bf16, xp, yp);
  }
  return y;
}

py::array global_avg_pool_backward_py(py::handle G, py::handle input_shape, py::object out) {
  py::array gy = typed_array(G, "grad_output", element::f32);
  if (!(gy.flags() & py::array::c_style)) value_error("grad_output must be C-contiguous");
  if (gy.ndim() != 2) value_error("grad_output must be (N, C), 2-D; got shape " + str(gy.attr("shape")));
  if (!py::isinstance<py::sequence>(input_shape) || py::isinstance<py::str>(input_shape))
    type_error("input_shape must be a sequence of five integers, got " +
               str(py::type::of(input_shape).attr("__name__")));
  auto seq = py::reinterpret_borrow<py::sequence>(input_shape);
  if (seq.size() != 5) value_error("input_shape must be (N, C/bc, H, W, bc), got " + std::to_string(seq.size()) +
                                   " values");
  std::vector<py::ssize_t> shape;
  int64_t elems = 1;
  for (size_t i = 0; i < 5; ++i) {
    const int64_t v = index_arg(seq[i], "input_shape");
    if (v < 0) value_error("input_shape must not hold negative sizes, got " + str(input_shape));
    elems = checked_madd(elems, v, 0, "input_shape");
    shape.push_back((py::ssize_t)v);
  }
  checked_madd(elems, sizeof(float), 0, "input_shape");  // the bytes of the gradient
  const int64_t n = shape[0], blocks = shape[1], hw = checked_madd(shape[2], shape[3], 0, "input_shape"),
                bc = shape[4];
  if (gy.shape(0) != n)
    value_error("grad_output has " + std::to_string(gy.shape(0)) + " rows, input_shape " + std::to_string(n) +
                " images");
  const int64_t c = channels_arg(py::int_(gy.shape(1)), blocks, bc);
  py::array gx = out_arg(out, numpy_dtype(element::f32), shape, {{&gy, "grad_output"}});
  const float* gp = (const float*)gy.data();
  float* op = (float*)gx.mutable_data();
  {
    py::gil_scoped_release nogil;
    layers::global_avg_pool_backward(n, blocks, hw, bc, c, gp, op);
  }
  return gx;
}

}  // namespace

void register_pool(py::module_& m) {
  m.def("max_pool2d_blocked", &max_pool2d_py, py::arg("input"), py::arg("kernel_size"), py::arg("stride"),
        py::arg("padding") = 0, py::arg("out") = py::none(),
        "Max pooling of a blocked (N, C/bc, H, W, bc) float32/bfloat16/uint8 array; padding is never picked "
        "(uint8: quantized values, whose scale and zero point the output keeps).");
  m.def("max_pool2d_blocked_backward", &max_pool2d_backward_py, py::arg("grad_output"), py::arg("input"),
        py::arg("kernel_size"), py::arg("stride"), py::arg("padding") = 0, py::arg("out") = py::none(),
        "∂input (float32, blocked) of max_pool2d_blocked from grad_output (float32), routed as PyTorch does.");
  m.def("global_avg_pool_blocked", &global_avg_pool_py, py::arg("input"), py::arg("channels"),
        py::arg("scale") = 1.0, py::arg("zero_point") = 0, py::arg("out") = py::none(),
        "Means over H, W of a blocked array's first `channels` channels: (N, C) in the input's dtype, or for "
        "uint8 input float32 dequantized, scale·(mean − zero_point) (H·W ≤ 65793).");
  m.def("global_avg_pool_blocked_backward", &global_avg_pool_backward_py, py::arg("grad_output"),
        py::arg("input_shape"), py::arg("out") = py::none(),
        "∂input (float32, blocked to input_shape) of global_avg_pool_blocked from grad_output (N, C) float32.");
}

}  // namespace brgemm::bindings
