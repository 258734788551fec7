// layers/bindings/codebook.cpp: products on shared weights (brgemm/codebook.h): the packing into
// codebook panels and the product; brgemm.quant's SharedWeights drives them.
#include "arrays.h"

#include "../codebook.h"

namespace brgemm::bindings {

namespace {

int bits_arg(int bits) {
  if (bits < 2 || bits > 8) value_error("bits must be in 2..8, got " + std::to_string(bits));
  return bits;
}

py::array_t<uint8_t> pack_py(py::handle I, int bits) {
  bits_arg(bits);
  py::array idx = typed_array(I, "indices", element::u8);
  if (idx.ndim() != 2) value_error("indices must be 2-D (k, n), got " + std::to_string(idx.ndim()) + "-D");
  require_nonempty(idx, "indices");
  const int64_t k = idx.shape(0), n = idx.shape(1), ld = leading_dim(idx, 0, n, "indices");
  const uint8_t* ip = (const uint8_t*)idx.data();
  for (int64_t r = 0; r < k; ++r)
    for (int64_t j = 0; j < n; ++j)
      if (ip[r * ld + j] >> bits)
        value_error("indices must be below 2^bits = " + std::to_string(1 << bits) + ", found " +
                    std::to_string(ip[r * ld + j]));
  py::array_t<uint8_t> out(codebook_packed_bytes(bits, k, n));
  uint8_t* op = out.mutable_data();
  py::gil_scoped_release nogil;
  codebook_pack(bits, ip, k, n, ld, op);
  return out;
}

void gemm_py(py::handle A, py::handle B, int bits, int64_t n, py::handle CB, py::handle Bias, py::handle C) {
  bits_arg(bits);
  py::array a = f32_array(A, "A");
  if (a.ndim() != 2) value_error("A must be 2-D (m, k)");
  require_nonempty(a, "A");
  const int64_t m = a.shape(0), k = a.shape(1), lda = leading_dim(a, 0, k, "A");
  if (n < 1) value_error("n must be at least 1");
  const uint8_t* bp = (const uint8_t*)exact_array(B, "packed", element::u8, codebook_packed_bytes(bits, k, n), false).data();
  const float* cbp = (const float*)exact_array(CB, "codebook", element::f32, int64_t(1) << bits, false).data();
  const float* biasp = Bias.is_none() ? nullptr : (const float*)exact_array(Bias, "bias", element::f32, n, false).data();
  py::array c = f32_array(C, "out");
  require_writeable(c, "out");
  if (c.ndim() != 2 || c.shape(0) != m || c.shape(1) != n)
    value_error("out must have shape (" + std::to_string(m) + ", " + std::to_string(n) + ")");
  require_disjoint(c, a, "out", "A");
  codebook_product p;
  p.m = m, p.n = n, p.k = k, p.a = (const float*)a.data(), p.lda = lda, p.b = bp, p.bits = bits;
  p.codebook = cbp, p.bias = biasp, p.c = (float*)c.mutable_data(), p.ldc = leading_dim(c, 0, n, "out");
  py::gil_scoped_release nogil;
  layers::codebook_gemm(p);
}

}  // namespace

void register_codebook(py::module_& m) {
  m.def("codebook_pack", &pack_py, py::arg("indices"), py::arg("bits"));
  m.def("codebook_gemm", &gemm_py, py::arg("A"), py::arg("packed"), py::arg("bits"), py::arg("n"),
        py::arg("codebook"), py::arg("bias"), py::arg("out"));
  m.attr("codebook_panel") = codebook_panel;
}

}  // namespace brgemm::bindings
