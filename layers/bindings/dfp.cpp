// layers/bindings/dfp.cpp: DFP-16 (brgemm/dfp.h) for brgemm/dfp.py: float32 ↔ int16 mantissas
// with one shared exponent, and the chunked product of two mantissa matrices (layers/dfp.h).
#include "arrays.h"

#include <cmath>
#include <vector>
#include "brgemm/dfp.h"
#include "../blocks.h"
#include "../dfp.h"

namespace brgemm::bindings {

namespace {

constexpr int32_t max_exponent = 250;  // |e| beyond any finite float's tensor: 2^e is then 0 or inf anyway

int32_t exponent_arg(int64_t e) {
  if (e < -max_exponent || e > max_exponent)
    value_error("exponent must be in -" + std::to_string(max_exponent) + ".." + std::to_string(max_exponent) +
                ", got " + std::to_string(e));
  return (int32_t)e;
}

// x (float32, C-contiguous, finite) → m (int16, its size), returning the shared exponent; or with
// `exponent` given, that one (values beyond ±32767·2^e are clamped).
int32_t to_dfp16(py::handle X, py::handle M, py::object exponent) {
  py::array x = typed_array(X, "x", element::f32);
  if (!(x.flags() & py::array::c_style)) value_error("x must be C-contiguous");
  py::array m = exact_array(M, "mantissa", element::s16, x.size(), true);
  const float* xp = (const float*)x.data();
  int16_t* mp = (int16_t*)m.mutable_data();
  const int64_t n = x.size();
  const bool given = !exponent.is_none();
  const int32_t fixed = given ? exponent_arg(index_arg(exponent, "exponent")) : 0;
  uint32_t bits;
  int32_t e;
  {
    py::gil_scoped_release nogil;
    bits = dfp16_absmax_bits(xp, n);
    e = given ? fixed : dfp16_exponent_of(bits);
    if (bits < 0x7F800000u) f32_to_dfp16(xp, mp, n, e);
  }
  if (bits >= 0x7F800000u) value_error("x holds NaN or infinity: DFP-16 represents finite values only");
  return e;
}

py::array from_dfp16(py::handle M, int64_t exponent, py::handle Y) {
  py::array m = typed_array(M, "mantissa", element::s16);
  if (!(m.flags() & py::array::c_style)) value_error("mantissa must be C-contiguous");
  py::array y = exact_array(Y, "out", element::f32, m.size(), true);
  const int32_t e = exponent_arg(exponent);
  const int16_t* mp = (const int16_t*)m.data();
  float* yp = (float*)y.mutable_data();
  {
    py::gil_scoped_release nogil;
    dfp16_to_f32(mp, yp, m.size(), e);
  }
  return y;
}

// A 2-D int16 matrix with contiguous rows.
py::array matrix_s16(py::handle h, const char* name) {
  py::array a = typed_array(h, name, element::s16);
  if (a.ndim() != 2) value_error(std::string(name) + " must be 2-D, got ndim " + std::to_string(a.ndim()));
  require_nonempty(a, name);
  return a;
}

// C (float32 M×N) = 2^exponent · A (int16 M×K) · B (int16 K×N), in int32 chunks that cannot
// overflow; returns the chunks' K boundaries.
std::vector<int64_t> dfp16_gemm(py::handle A, py::handle B, int64_t exponent, py::handle C) {
  py::array a = matrix_s16(A, "A"), b = matrix_s16(B, "B");
  const int64_t m = a.shape(0), k = a.shape(1), n = b.shape(1);
  if (b.shape(0) != k)
    value_error("A and B disagree on K: A is " + str(a.attr("shape")) + ", B is " + str(b.attr("shape")));
  py::array c = typed_array(C, "C", element::f32);
  if (c.ndim() != 2 || c.shape(0) != m || c.shape(1) != n)
    value_error("C must be a float32 array of shape (" + std::to_string(m) + ", " + std::to_string(n) + "), got " +
                str(c.attr("shape")));
  require_writeable(c, "C");
  require_disjoint(c, a, "C", "A");
  require_disjoint(c, b, "C", "B");
  const int64_t lda = leading_dim(a, 0, k, "A"), ldb = leading_dim(b, 0, n, "B"), ldc = leading_dim(c, 0, n, "C");
  const int32_t e = exponent_arg(exponent);
  const int16_t* ap = (const int16_t*)a.data();
  const int16_t* bp = (const int16_t*)b.data();
  float* cp = (float*)c.mutable_data();
  static thread_local std::vector<int16_t> packed;  // grows once, reused by every call
  int64_t kc;
  status s;
  {
    py::gil_scoped_release nogil;
    packed.resize((size_t)packed_b_elements(dtype::s16s16, k, n));
    // packing, max|b| and the rows' |a| sums threaded too (layers/gemm.cpp's 4 MFLOP rule)
    const int threads = layers::threads_for(2.0 * (double)m * (double)n * (double)k);
    const int32_t b_absmax = layers::dfp16_pack_b(bp, k, n, ldb, packed.data(), threads);
    kc = layers::dfp16_chunk(ap, m, k, lda, b_absmax, threads);
    s = layers::dfp16_gemm(m, n, k, ap, lda, packed.data(), n, kc, e, cp, ldc);
  }
  std::vector<int64_t> chunks;
  for (int64_t k0 = 0; k0 < k; k0 += kc) chunks.push_back(k0);
  chunks.push_back(k);
  check_status(s);
  return chunks;
}

// out (c × r) = mᵀ for a 2-D int16 m (r × c) with contiguous rows.
py::array transpose_s16(py::handle M, py::handle Out) {
  py::array m = matrix_s16(M, "mantissa");
  const int64_t r = m.shape(0), c = m.shape(1);
  py::array out = typed_array(Out, "out", element::s16);
  if (out.ndim() != 2 || out.shape(0) != c || out.shape(1) != r)
    value_error("out must be an int16 array of shape (" + std::to_string(c) + ", " + std::to_string(r) + "), got " +
                str(out.attr("shape")));
  require_writeable(out, "out");
  require_disjoint(out, m, "out", "mantissa");
  const int64_t ld_src = leading_dim(m, 0, c, "mantissa"), ld_dst = leading_dim(out, 0, r, "out");
  const int16_t* src = (const int16_t*)m.data();
  int16_t* dst = (int16_t*)out.mutable_data();
  {
    py::gil_scoped_release nogil;
    layers::transpose_s16(src, r, c, ld_src, dst, ld_dst);
  }
  return out;
}

// x (cols, lanes) float32, lanes 1..64: (largest squared pixel norm, largest squared lane norm)
// (brgemm/dfp.h's dfp16_slice_norms, the DFP-16 convolution's bounds; for the tests).
py::tuple slice_norms(py::handle X) {
  py::array x = typed_array(X, "x", element::f32);
  if (x.ndim() != 2 || !(x.flags() & py::array::c_style)) value_error("x must be a C-contiguous (cols, lanes) array");
  const int64_t cols = x.shape(0), lanes = x.shape(1);
  if (lanes < 1 || lanes > 64) value_error("x must have 1..64 lanes, got " + std::to_string(lanes));
  double pixel2 = 0.0, row2 = 0.0;
  {
    py::gil_scoped_release nogil;
    dfp16_slice_norms((const float*)x.data(), cols, lanes, &pixel2, &row2);
  }
  return py::make_tuple(pixel2, row2);
}

}  // namespace

void register_dfp(py::module_& m) {
  m.def("to_dfp16", &to_dfp16, py::arg("x"), py::arg("mantissa"), py::arg("exponent") = py::none());
  m.def("from_dfp16", &from_dfp16, py::arg("mantissa"), py::arg("exponent"), py::arg("out"));
  m.def("dfp16_gemm", &dfp16_gemm, py::arg("A"), py::arg("B"), py::arg("exponent"), py::arg("C"));
  m.def("dfp16_transpose", &transpose_s16, py::arg("mantissa"), py::arg("out"));
  m.def("dfp16_slice_norms", &slice_norms, py::arg("x"));
}

}  // namespace brgemm::bindings
