// layers/bindings/batch_norm.cpp: batch normalisation in training mode on blocked activations
// (N, C/bc, H, W, bc) (layers/batch_norm.h), for brgemm.torch's batch_norm_blocked operator.
// The channel count C is the length of the per-channel arrays (mean, var); every array is
// checked (dtype, shape, C-contiguity, writeable outputs that overlap no input) before the GIL
// is released.
#include "arrays.h"

#include <cmath>

#include "../batch_norm.h"

namespace brgemm::bindings {

namespace {

// A 5-D C-contiguous float32 or bfloat16 blocked activation (N, CB, H, W, bc) with 1 ≤ bc ≤ 64.
py::array blocked_arg(py::handle h, const char* name, bool* bf16) {
  py::array a = eltwise_array(h, name, bf16);
  if (a.ndim() != 5)
    value_error(std::string(name) + " must be 5-D (N, C/bc, H, W, bc), got shape " + str(a.attr("shape")));
  if (a.shape(4) < 1 || a.shape(4) > 64)
    value_error(std::string(name) + " must have a channel block (last axis) of 1 to 64, got shape " +
                str(a.attr("shape")));
  return a;
}

// An array like `like` (same dtype, or the dtype named by `bf16`, and the same shape).
py::array like_arg(py::handle h, const char* name, const py::array& like, const char* like_name, bool bf16,
                   bool write) {
  bool b;
  py::array a = eltwise_array(h, name, &b);
  if (b != bf16)
    type_error(std::string(name) + " must have dtype " + (bf16 ? "bfloat16" : "float32") + ", got " + str(a.dtype()));
  if (!a.attr("shape").equal(like.attr("shape")))
    value_error(std::string(name) + " must have " + like_name + "'s shape " + str(like.attr("shape")) + ", got " +
                str(a.attr("shape")));
  if (write) require_writeable(a, name);
  return a;
}

// A C-contiguous float32 vector of c values, or None (→ an empty array, null data) when allowed.
struct channels_arg {
  py::array a;
  bool none = true;
  float* data() const { return none ? nullptr : (float*)a.data(); }
};
channels_arg channel_vector(py::handle h, const char* name, int64_t c, bool write) {
  channels_arg v;
  if (h.is_none()) return v;
  v.a = typed_array(h, name, element::f32);
  v.none = false;
  if (v.a.ndim() != 1 || v.a.shape(0) != c)
    value_error(std::string(name) + " must have shape (" + std::to_string(c) + ",), got " + str(v.a.attr("shape")));
  if (!(v.a.flags() & py::array::c_style)) value_error(std::string(name) + " must be C-contiguous");
  if (write) require_writeable(v.a, name);
  return v;
}

// Each output (not None) overlaps no input and no other output.
void outputs_disjoint(std::initializer_list<std::pair<const channels_arg*, const char*>> outs,
                      std::initializer_list<std::pair<const channels_arg*, const char*>> ins) {
  for (auto o = outs.begin(); o != outs.end(); ++o) {
    if (o->first->none) continue;
    for (const auto& i : ins)
      if (!i.first->none) require_disjoint(o->first->a, i.first->a, o->second, i.second);
    for (auto p = outs.begin(); p != o; ++p)
      if (!p->first->none) require_disjoint(o->first->a, p->first->a, o->second, p->second);
  }
}

// The shape of x with c real channels: checks that (N, CB, H, W, bc) holds c and has values.
layers::bn_shape shape_of(const py::array& x, const char* xname, int64_t c, bool bf16, const char* cname) {
  layers::bn_shape s;
  s.n = x.shape(0), s.hw = checked_madd(x.shape(2), x.shape(3), 0, xname), s.bc = x.shape(4), s.c = c, s.bf16 = bf16;
  if (c < 1 || s.blocks() != x.shape(1))
    value_error(std::string(cname) + " gives " + std::to_string(c) + " channels, which do not fit " + xname +
                " of shape " + str(x.attr("shape")) + " (C/bc = " + std::to_string(x.shape(1)) + " blocks of " +
                std::to_string(s.bc) + ")");
  if (s.count() < 1)
    value_error(std::string(xname) + " has no values per channel (shape " + str(x.attr("shape")) +
                "); N·H·W must be at least 1");
  return s;
}

double eps_arg(double eps) {
  if (!(eps >= 0.0) || !std::isfinite(eps))
    value_error("eps must be finite and non-negative, got " + std::to_string(eps));
  return eps;
}

void disjoint_from(const py::array& out, const char* name,
                   std::initializer_list<std::pair<const py::array*, const char*>> ins) {
  for (const auto& [a, n] : ins)
    if (a) require_disjoint(out, *a, name, n);
}

// Per-channel mean and biased variance (float64 arrays of `channels`), shifted or two-pass.
py::tuple statistics_py(py::handle X, int64_t channels, bool two_pass) {
  bool bf16;
  py::array x = blocked_arg(X, "x", &bf16);
  const layers::bn_shape s = shape_of(x, "x", channels, bf16, "channels");
  py::array_t<double> mean(channels), var(channels);
  const void* xp = x.data();
  double *mp = mean.mutable_data(), *vp = var.mutable_data();
  {
    py::gil_scoped_release nogil;
    layers::batch_norm_statistics(s, xp, two_pass ? layers::bn_statistics::two_pass : layers::bn_statistics::shifted,
                                  mp, vp);
  }
  return py::make_tuple(mean, var);
}

void forward_py(py::handle X, py::handle gamma, py::handle beta, double eps, py::handle R, bool relu, py::handle Y,
                py::handle mean, py::handle var, bool two_pass, py::handle moments, int64_t rows) {
  bool bf16;
  py::array x = blocked_arg(X, "x", &bf16);
  py::array m = typed_array(mean, "mean", element::f32);
  const int64_t c = m.ndim() == 1 ? m.shape(0) : -1;
  if (c < 1) value_error("mean must be a float32 vector of the C channels, got shape " + str(m.attr("shape")));
  const layers::bn_shape s = shape_of(x, "x", c, bf16, "mean");
  const channels_arg g = channel_vector(gamma, "gamma", c, false), b = channel_vector(beta, "beta", c, false);
  eps = eps_arg(eps);
  py::array r;
  if (!R.is_none()) r = like_arg(R, "residual", x, "x", bf16, false);
  py::array y = like_arg(Y, "y", x, "x", bf16, true);
  disjoint_from(y, "y", {{&x, "x"}, {R.is_none() ? nullptr : &r, "residual"}});
  if (var.is_none()) value_error("var must be a float32 vector of the C channels, got None");
  const channels_arg mo = channel_vector(mean, "mean", c, true), vo = channel_vector(var, "var", c, true);
  outputs_disjoint({{&mo, "mean"}, {&vo, "var"}}, {{&g, "gamma"}, {&b, "beta"}});
  for (const channels_arg* o : {&mo, &vo}) disjoint_from(o->a, o == &mo ? "mean" : "var", {{&x, "x"}, {&y, "y"}});
  const double* rowsp = nullptr;
  if (!moments.is_none()) {  // [n][C/bc][rows][2][bc] float64, rows dividing H·W
    if (rows < 1 || s.hw % rows)
      value_error("rows must divide the " + std::to_string(s.hw) + " pixels of an image, got " + std::to_string(rows));
    rowsp = (const double*)exact_f64_array(moments, "moments", s.n * s.blocks() * rows * 2 * s.bc, false).data();
  }
  const float *gp = g.data(), *bp = b.data();
  float *mp = mo.data(), *vp = vo.data();
  const void *xp = x.data(), *rp = R.is_none() ? nullptr : r.data();
  void* yp = y.mutable_data();
  py::gil_scoped_release nogil;
  layers::batch_norm_forward(s, xp, gp, bp, eps, rp, relu, yp, mp, vp,
                             two_pass ? layers::bn_statistics::two_pass : layers::bn_statistics::shifted, rowsp, rows);
}

void backward_py(py::handle GY, py::handle X, py::handle Y, bool relu, py::handle gamma, py::handle mean,
                 py::handle var, double eps, py::handle GX, py::handle GG, py::handle GB, py::handle GR) {
  bool bf16;
  py::array x = blocked_arg(X, "x", &bf16);
  py::array m = typed_array(mean, "mean", element::f32);
  const int64_t c = m.ndim() == 1 ? m.shape(0) : -1;
  if (c < 1) value_error("mean must be a float32 vector of the C channels, got shape " + str(m.attr("shape")));
  const layers::bn_shape s = shape_of(x, "x", c, bf16, "mean");
  py::array gy = like_arg(GY, "grad_y", x, "x", bf16, false);
  py::array y;
  if (relu) {
    if (Y.is_none()) value_error("y (the forward output) is needed for the ReLU mask when relu is true");
    y = like_arg(Y, "y", x, "x", bf16, false);
  }
  const channels_arg g = channel_vector(gamma, "gamma", c, false), mi = channel_vector(mean, "mean", c, false);
  if (var.is_none()) value_error("var must be a float32 vector of the C channels, got None");
  const channels_arg vi = channel_vector(var, "var", c, false);
  eps = eps_arg(eps);
  const std::initializer_list<std::pair<const py::array*, const char*>> ins = {
      {&x, "x"}, {&gy, "grad_y"}, {relu ? &y : nullptr, "y"}};
  py::array gx, gr;
  bool gx_bf16 = false;
  if (!GX.is_none()) {
    gx = eltwise_array(GX, "grad_x", &gx_bf16);
    if (!gx.attr("shape").equal(x.attr("shape")))
      value_error("grad_x must have x's shape " + str(x.attr("shape")) + ", got " + str(gx.attr("shape")));
    require_writeable(gx, "grad_x");
    disjoint_from(gx, "grad_x", ins);
  }
  if (!GR.is_none()) {
    gr = like_arg(GR, "grad_residual", x, "x", bf16, true);
    disjoint_from(gr, "grad_residual", ins);
    if (!GX.is_none()) require_disjoint(gr, gx, "grad_residual", "grad_x");
  }
  const channels_arg gg = channel_vector(GG, "grad_gamma", c, true), gb = channel_vector(GB, "grad_beta", c, true);
  outputs_disjoint({{&gg, "grad_gamma"}, {&gb, "grad_beta"}}, {{&g, "gamma"}, {&mi, "mean"}, {&vi, "var"}});
  const float *gp = g.data(), *mp = mi.data(), *vp = vi.data();
  float *ggp = gg.data(), *gbp = gb.data();
  const void *gyp = gy.data(), *xp = x.data(), *yp = relu ? y.data() : nullptr;
  void* gxp = GX.is_none() ? nullptr : gx.mutable_data();
  void* grp = GR.is_none() ? nullptr : gr.mutable_data();
  py::gil_scoped_release nogil;
  layers::batch_norm_backward(s, gyp, xp, yp, relu, gp, mp, vp, eps, gxp, gx_bf16, ggp, gbp, grp);
}

}  // namespace

void register_batch_norm(py::module_& m) {
  m.def("batch_norm_statistics", &statistics_py, py::arg("x"), py::arg("channels"), py::arg("two_pass") = false,
        "(mean, biased variance) per channel of a blocked activation, float64.");
  m.def("batch_norm_forward", &forward_py, py::arg("x"), py::arg("gamma"), py::arg("beta"), py::arg("eps"),
        py::arg("residual"), py::arg("relu"), py::arg("y"), py::arg("mean"), py::arg("var"),
        py::arg("two_pass") = false, py::arg("moments") = py::none(), py::arg("rows") = 0,
        "y = relu?((x − mean)·gamma/sqrt(var + eps) + beta + residual) on a blocked activation with the batch's "
        "statistics, written to mean and var (float32, C = len(mean)); with moments (a convolution's per-row "
        "statistics, rows per image) they come from there.");
  m.def("batch_norm_backward", &backward_py, py::arg("grad_y"), py::arg("x"), py::arg("y"), py::arg("relu"),
        py::arg("gamma"), py::arg("mean"), py::arg("var"), py::arg("eps"), py::arg("grad_x"), py::arg("grad_gamma"),
        py::arg("grad_beta"), py::arg("grad_residual"),
        "The gradients of batch_norm_forward: grad_x (float32 or bfloat16), grad_gamma, grad_beta, grad_residual "
        "(the gradient before the ReLU), each written when not None.");
}

}  // namespace brgemm::bindings
