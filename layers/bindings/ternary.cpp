// layers/bindings/ternary.cpp: products on ternary weights with residual levels (brgemm/ternary.h):
// the packing into ternary panels and the 8a-2w product; brgemm.nn.TernaryLinear drives them.
#include "arrays.h"

#include "../ternary.h"

namespace brgemm::bindings {

namespace {

void check_shape(int64_t k, int64_t block) {
  if (block < 4 || block > 256 || block % 4) value_error("block must be a multiple of 4 in 4..256, got " + std::to_string(block));
  if (k % block) value_error("k must be a multiple of block");
}

py::tuple pack_py(py::handle Codes, py::handle Alpha, int64_t block) {
  py::array codes = typed_array(Codes, "codes", element::s8);
  if (codes.ndim() != 3) value_error("codes must be 3-D (levels, n, k), got " + std::to_string(codes.ndim()) + "-D");
  require_nonempty(codes, "codes");
  const int64_t levels = codes.shape(0), n = codes.shape(1), k = codes.shape(2);
  check_shape(k, block);
  codes = exact_array(codes, "codes", element::s8, levels * n * k, false);
  const int8_t* cp = (const int8_t*)codes.data();
  for (int64_t e = 0; e < levels * n * k; ++e)
    if (cp[e] < -1 || cp[e] > 1) value_error("codes must be -1, 0 or 1, found " + std::to_string(cp[e]));
  py::array alpha = exact_array(Alpha, "alpha", element::f32, levels * n * (k / block), false);
  const float* ap = (const float*)alpha.data();
  for (int64_t e = 0; e < levels * n * (k / block); ++e)
    if (!(ap[e] >= 0.0f && ap[e] < 3.0e38f)) value_error("alpha must be finite and non-negative");
  py::array_t<uint8_t> out(levels * ternary_level_bytes(k, n));
  py::array_t<float> aout(levels * ternary_level_alphas(k, n, block));
  uint8_t* op = out.mutable_data();
  float* aop = aout.mutable_data();
  {
    py::gil_scoped_release nogil;
    ternary_pack(cp, ap, (int)levels, k, n, block, op, aop);
  }
  return py::make_tuple(out, aout);
}

void gemm_py(py::handle A, py::handle B, py::handle Alpha, int stored_levels, int levels, int64_t n, int64_t block,
             double scale, int zero_point, py::handle Corr, py::handle Bias, bool relu, py::handle C) {
  py::array a = typed_array(A, "A", element::u8);
  if (a.ndim() != 2) value_error("A must be 2-D (m, k)");
  require_nonempty(a, "A");
  const int64_t m = a.shape(0), k = a.shape(1), lda = leading_dim(a, 0, k, "A");
  if (a.strides(1) != 1) value_error("A's rows must be contiguous");
  check_shape(k, block);
  if (n < 1) value_error("n must be at least 1");
  if (stored_levels < 1) value_error("stored_levels must be at least 1");
  if (levels < 1 || levels > stored_levels)
    value_error("levels must be in 1.." + std::to_string(stored_levels) + ", got " + std::to_string(levels));
  if (zero_point < 0 || zero_point > 255) value_error("zero_point must be in 0..255");
  const uint8_t* bp = (const uint8_t*)exact_array(B, "packed", element::u8, stored_levels * ternary_level_bytes(k, n), false).data();
  const float* alp = (const float*)exact_array(Alpha, "alpha", element::f32, stored_levels * ternary_level_alphas(k, n, block), false).data();
  const float* corrp = (const float*)exact_array(Corr, "corr", element::f32, n, false).data();
  const float* biasp = Bias.is_none() ? nullptr : (const float*)exact_array(Bias, "bias", element::f32, n, false).data();
  py::array c = f32_array(C, "out");
  require_writeable(c, "out");
  if (c.ndim() != 2 || c.shape(0) != m || c.shape(1) != n)
    value_error("out must have shape (" + std::to_string(m) + ", " + std::to_string(n) + ")");
  ternary_product p;
  p.m = m, p.n = n, p.k = k, p.block = block, p.a = (const uint8_t*)a.data(), p.lda = lda, p.b = bp, p.alpha = alp;
  p.levels = levels, p.scale = (float)scale, p.zero_point = (float)zero_point, p.corr = corrp, p.bias = biasp;
  p.relu = relu, p.c = (float*)c.mutable_data(), p.ldc = leading_dim(c, 0, n, "out");
  py::gil_scoped_release nogil;
  layers::ternary_gemm(p);
}

}  // namespace

void register_ternary(py::module_& m) {
  m.def("ternary_pack", &pack_py, py::arg("codes"), py::arg("alpha"), py::arg("block"));
  m.def("ternary_gemm", &gemm_py, py::arg("A"), py::arg("packed"), py::arg("alpha"), py::arg("stored_levels"),
        py::arg("levels"), py::arg("n"), py::arg("block"), py::arg("scale"), py::arg("zero_point"), py::arg("corr"),
        py::arg("bias"), py::arg("relu"), py::arg("out"));
  m.attr("ternary_panel") = ternary_panel;
}

}  // namespace brgemm::bindings
