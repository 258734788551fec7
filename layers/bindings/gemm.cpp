// layers/bindings/gemm.cpp: the whole-array calls of the kernel API — pack_b, batch_reduce (plain
// and on packed B) and gemm (plain and on packed B, through layers::gemm): shapes checked,
// the output allocated or checked, the kernel dispatched, then the work without the GIL.
#include "arrays.h"
#include "epilogue.h"

#include <sys/mman.h>

#include <cstdlib>
#include <new>

#include "../gemm.h"

namespace brgemm::bindings {

namespace {

// C given (checked: element type, shape (m, n), writeable, not overlapping A or B) or
// allocated here (then beta must be 0). Sets *ldc.
py::array result_matrix(py::object C, element e, int64_t m, int64_t n, double beta, const py::array& a,
                        const py::array& b, int64_t* ldc) {
  if (C.is_none()) {
    if (beta != 0.0) value_error("beta = " + str(py::repr(py::float_(beta))) + " needs C to be given");
    *ldc = n;
    return py::array(numpy_dtype(e), std::vector<py::ssize_t>{(py::ssize_t)m, (py::ssize_t)n});
  }
  py::array c = typed_array(C, "C", e);
  if (c.ndim() != 2 || c.shape(0) != m || c.shape(1) != n)
    value_error("C has shape " + str(c.attr("shape")) + ", expected (" + std::to_string(m) + ", " + std::to_string(n) + ")");
  require_writeable(c, "C");
  *ldc = leading_dim(c, 0, n, "C");
  require_disjoint(c, a, "C", "A");
  require_disjoint(c, b, "C", "B");
  return c;
}

// Dispatches d (with the epilogue's structure), binds the epilogue's data and runs the batch
// without the GIL.
void run_batch(desc d, const batch_ref& batch, void* cp, py::handle ep, const epilogue_spec& s, py::handle colsum) {
  d.ep = s.e;
  const kernel* kr;
  check_status(dispatch(d, &kr));
  epilogue_args args;
  epilogue_arrays ea;
  if (s.e.any()) {
    ea = epilogue_arrays_of(ep, s, d.n, colsum);
    args = epilogue_data(s, ea, d.type, d.m, d.n, d.k, batch, d.batch, d.lda);
  }
  py::gil_scoped_release nogil;
  execute(*kr, batch, cp, &args);
}

py::array batch_reduce(py::handle A, py::handle B, py::object C, double beta, py::object ep) {
  py::array a = f32_array(A, "A"), b = f32_array(B, "B");
  if (a.ndim() != 3) value_error("A must be 3-D (batch, M, K), got ndim " + std::to_string(a.ndim()));
  if (b.ndim() != 3) value_error("B must be 3-D (batch, K, N), got ndim " + std::to_string(b.ndim()));
  require_nonempty(a, "A");
  require_nonempty(b, "B");
  const int64_t count = a.shape(0), m = a.shape(1), k = a.shape(2), n = b.shape(2);
  if (b.shape(0) != count)
    value_error("A and B disagree on the batch: " + std::to_string(count) + " and " + std::to_string(b.shape(0)));
  if (b.shape(1) != k)
    value_error("A and B disagree on K: A is " + str(a.attr("shape")) + ", B is " + str(b.attr("shape")));
  check_beta(beta);
  const epilogue_spec s = epilogue_structure(ep, dtype::f32, beta, n);
  desc d;
  d.m = m;
  d.n = n;
  d.k = k;
  d.lda = leading_dim(a, 1, k, "A");
  d.ldb = leading_dim(b, 1, n, "B");
  py::array c = result_matrix(C, out_element(dtype::f32, s.e.out), m, n, beta, a, b, &d.ldc);
  d.beta = (float)beta;
  batch_ref batch;
  batch.count = count;
  batch.a = a.data();
  batch.b = b.data();
  batch.stride_a = count > 1 ? a.strides(0) / 4 : 0;
  batch.stride_b = count > 1 ? b.strides(0) / 4 : 0;
  run_batch(d, batch, c.mutable_data(), ep, s, py::none());
  return c;
}

// Storage for packed weights: 64-byte aligned, so that the kernels' vector loads of B never
// straddle two cache lines (numpy's own allocations are only 16-byte aligned; measured: up to
// 15 % slower). Large ones are 2 MiB aligned and asked to be backed by huge pages: gemm walks a
// packed B down its rows, a whole row apart (16 KiB for int8 with N = 4096), so with 4 KiB
// pages every row is a TLB miss. The returned capsule owns the memory.
py::object packed_storage(py::ssize_t bytes, void** data) {
  constexpr size_t huge = size_t(1) << 21;
  const bool large = bytes >= (py::ssize_t)(huge / 2);
  const size_t align = large ? huge : 64, size = ((size_t)bytes + align - 1) / align * align;
  void* p = std::aligned_alloc(align, size ? size : align);
  if (!p) throw std::bad_alloc();
#ifdef MADV_HUGEPAGE
  if (large) madvise(p, size, MADV_HUGEPAGE);  // advice only: no huge pages is still correct
#endif
  *data = p;
  return py::capsule(p, [](void* q) { std::free(q); });
}

// pack_b(B, dtype, ldb, panels): B (K, N) or (batch, K, N) → (packed, colsum). packed is
// (batch?, ceil(K/KP), ldb, KP) for bf16 and u8s8, (batch?, K, ldb) for f32 and f32f16; in
// column panels (2-D B only) it is (ceil(N/64), ceil(K/KP), 64, KP) or (ceil(N/64), K, 64).
// colsum (batch?, N) int32 for u8s8, else None.
py::tuple pack_b_py(py::handle B, const std::string& dt, int64_t ldb, bool panels) {
  const dtype t = dtype_from_name(dt);
  py::array b = typed_array(B, "B", dtype_b(t));
  if (b.ndim() != 2 && b.ndim() != 3)
    value_error("B must be 2-D (K, N) or 3-D (batch, K, N), got ndim " + std::to_string(b.ndim()));
  require_nonempty(b, "B");
  const bool batched = b.ndim() == 3;
  const int64_t count = batched ? b.shape(0) : 1, k = b.shape(b.ndim() - 2), n = b.shape(b.ndim() - 1);
  if (panels && batched)
    value_error("layout='panels' packs one (K, N) matrix for gemm; B is 3-D " + str(b.attr("shape")) +
                " (batch_reduce takes layout='rows')");
  if (panels && ldb >= 0) value_error("ldb does not apply to layout='panels' (panels are 64 columns wide)");
  if (ldb < 0) ldb = n;
  if (ldb < n) value_error("ldb must be at least N = " + std::to_string(n) + ", got " + std::to_string(ldb));
  const int64_t ld_src = leading_dim(b, (int)b.ndim() - 2, n, "B");
  const int64_t kp = dtype_kpack(t), rows = (k + kp - 1) / kp;
  const int64_t n_panels = (n + panel_width - 1) / panel_width;
  // rows·ldb·KP·item·count bytes, checked before anything is allocated (a large ldb wraps it)
  checked_madd(checked_madd(checked_madd(rows, ldb, 0, "ldb"), kp * b.itemsize(), 0, "ldb"), count, 0, "ldb");
  const int64_t per_block = panels ? n_panels * panel_elements(t, k) : packed_b_elements(t, k, ldb);
  const py::ssize_t item = b.itemsize();
  std::vector<py::ssize_t> shape;
  if (batched) shape.push_back(count);
  if (panels) shape.push_back(n_panels);
  shape.push_back(rows);
  shape.push_back(panels ? panel_width : ldb);
  if (kp > 1) shape.push_back(kp);
  py::ssize_t total = item * per_block * count;
  void* aligned;
  py::object raw = packed_storage(total, &aligned);
  std::vector<py::ssize_t> strides(shape.size());
  py::ssize_t stride = item;
  for (size_t i = shape.size(); i-- > 0;) {
    strides[i] = stride;
    stride *= shape[i];
  }
  py::array out(b.dtype(), shape, strides, aligned, raw);
  py::object colsum = py::none();
  int32_t* cs = nullptr;
  if (dtype_is_int8(t)) {
    std::vector<py::ssize_t> cshape;
    if (batched) cshape.push_back(count);
    cshape.push_back(n);
    py::array_t<int32_t> c(cshape);
    cs = c.mutable_data();
    colsum = c;
  }
  const char* src = (const char*)b.data();
  char* dst = (char*)out.mutable_data();
  const int64_t src_stride = batched ? b.strides(0) : 0;
  {
    py::gil_scoped_release nogil;
    if (panels)
      pack_b_panels(t, src, k, n, ld_src, dst, cs);
    else
      for (int64_t i = 0; i < count; ++i)
        pack_b(t, src + i * src_stride, k, n, ld_src, dst + i * per_block * item, ldb, cs ? cs + i * n : nullptr);
  }
  return py::make_tuple(out, colsum);
}


// batch_reduce for packed B: A (batch, M, K) of the dtype's A type, B the packed array from
// pack_b, k and n the unpacked sizes; colsum: B's column sums (batch, n) for int8, or None.
py::array batch_reduce_packed(py::handle A, py::handle B, int64_t k, int64_t n, py::object C, double beta,
                              const std::string& dt, py::object ep, py::object colsum) {
  const dtype t = dtype_from_name(dt);
  py::array a = typed_array(A, "A", dtype_a(t)), b = typed_array(B, "B", dtype_b(t));
  if (a.ndim() != 3) value_error("A must be 3-D (batch, M, K), got ndim " + std::to_string(a.ndim()));
  require_nonempty(a, "A");
  const int64_t count = a.shape(0), m = a.shape(1), kp = dtype_kpack(t), rows = (k + kp - 1) / kp;
  if (a.shape(2) != k)
    value_error("A and B disagree on K: A is " + str(a.attr("shape")) + ", B was packed with K = " + std::to_string(k));
  if (b.ndim() != 4 || b.shape(0) != count || b.shape(1) != rows || b.shape(3) != kp || b.shape(2) < n)
    value_error("B must be packed for " + std::string(dtype_name(t)) + " as (batch, ceil(K/" + std::to_string(kp) +
                "), ldb, " + std::to_string(kp) + ") = (" + std::to_string(count) + ", " + std::to_string(rows) +
                ", >=" + std::to_string(n) + ", " + std::to_string(kp) + "), got " + str(b.attr("shape")));
  if (!(b.flags() & py::array::c_style)) value_error("B (packed) must be C-contiguous");
  check_beta_for(t, beta);
  const epilogue_spec s = epilogue_structure(ep, t, beta, n);
  desc d;
  d.type = t;
  d.m = m;
  d.n = n;
  d.k = k;
  d.lda = leading_dim(a, 1, k, "A");
  d.ldb = b.shape(2);
  py::array c = result_matrix(C, out_element(t, s.e.out), m, n, beta, a, b, &d.ldc);
  d.beta = (float)beta;
  batch_ref batch;
  batch.count = count;
  batch.a = a.data();
  batch.b = b.data();
  batch.stride_a = count > 1 ? a.strides(0) / a.itemsize() : 0;
  batch.stride_b = rows * d.ldb * kp;
  run_batch(d, batch, c.mutable_data(), ep, s, colsum);
  return c;
}

// layers::gemm with the epilogue bound; A (m × k, row stride lda) as a one-block batch for
// the row sums a B zero point needs.
py::array run_gemm(dtype t, const py::array& a, const py::array& b, int64_t m, int64_t n, int64_t k, int64_t lda,
                   int64_t ldb, py::object C, double beta, py::object ep, py::object colsum,
                   b_layout layout = b_layout::rows) {
  const epilogue_spec s = epilogue_structure(ep, t, beta, n);
  int64_t ldc;
  py::array c = result_matrix(C, out_element(t, s.e.out), m, n, beta, a, b, &ldc);
  epilogue_args args;
  epilogue_arrays ea;
  if (s.e.any()) {
    batch_ref one;
    one.count = 1;
    one.a = a.data();
    ea = epilogue_arrays_of(ep, s, n, colsum);
    args = epilogue_data(s, ea, t, m, n, k, one, batch_kind::stride, lda);
  }
  const void* ap = a.data();
  const void* bp = b.data();
  void* cp = c.mutable_data();
  status st;
  {
    py::gil_scoped_release nogil;
    st = layers::gemm(t, m, n, k, ap, lda, bp, ldb, cp, ldc, (float)beta, s.e, s.e.any() ? &args : nullptr, layout);
  }
  check_status(st);
  return c;
}

// gemm for packed B: A (M, K) of the dtype's A type, B the packed array from pack_b
// ((ceil(K/KP), ldb, KP), or in panels (ceil(N/64), ceil(K/KP), 64, KP)), k and n the
// unpacked sizes; colsum (n,) for int8, or None.
py::array gemm_packed(py::handle A, py::handle B, int64_t k, int64_t n, py::object C, double beta,
                      const std::string& dt, py::object ep, py::object colsum, bool panels) {
  const dtype t = dtype_from_name(dt);
  py::array a = typed_array(A, "A", dtype_a(t)), b = typed_array(B, "B", dtype_b(t));
  if (a.ndim() != 2) value_error("A must be 2-D (M, K), got ndim " + std::to_string(a.ndim()));
  require_nonempty(a, "A");
  const int64_t m = a.shape(0), kp = dtype_kpack(t), rows = (k + kp - 1) / kp;
  if (a.shape(1) != k)
    value_error("A and B disagree on K: A is " + str(a.attr("shape")) + ", B was packed with K = " + std::to_string(k));
  if (panels) {
    const int64_t n_panels = (n + panel_width - 1) / panel_width;
    if (b.ndim() != 4 || b.shape(0) != n_panels || b.shape(1) != rows || b.shape(2) != panel_width ||
        b.shape(3) != kp)
      value_error("B must be packed for " + std::string(dtype_name(t)) + " in panels as (ceil(N/64), ceil(K/" +
                  std::to_string(kp) + "), 64, " + std::to_string(kp) + ") = (" + std::to_string(n_panels) + ", " +
                  std::to_string(rows) + ", 64, " + std::to_string(kp) + "), got " + str(b.attr("shape")));
    if (!(b.flags() & py::array::c_style)) value_error("B (packed) must be C-contiguous");
    check_beta_for(t, beta);
    return run_gemm(t, a, b, m, n, k, leading_dim(a, 0, k, "A"), panel_width, C, beta, ep, colsum,
                    b_layout::panels);
  }
  if (b.ndim() != 3 || b.shape(0) != rows || b.shape(2) != kp || b.shape(1) < n)
    value_error("B must be packed for " + std::string(dtype_name(t)) + " as (ceil(K/" + std::to_string(kp) +
                "), ldb, " + std::to_string(kp) + ") = (" + std::to_string(rows) + ", >=" + std::to_string(n) + ", " +
                std::to_string(kp) + "), got " + str(b.attr("shape")));
  if (!(b.flags() & py::array::c_style)) value_error("B (packed) must be C-contiguous");
  check_beta_for(t, beta);
  return run_gemm(t, a, b, m, n, k, leading_dim(a, 0, k, "A"), b.shape(1), C, beta, ep, colsum);
}

py::array gemm(py::handle A, py::handle B, py::object C, double beta, py::object ep) {
  py::array a = f32_array(A, "A"), b = f32_array(B, "B");
  if (a.ndim() != 2) value_error("A must be 2-D (M, K), got ndim " + std::to_string(a.ndim()));
  if (b.ndim() != 2) value_error("B must be 2-D (K, N), got ndim " + std::to_string(b.ndim()));
  require_nonempty(a, "A");
  require_nonempty(b, "B");
  const int64_t m = a.shape(0), k = a.shape(1), n = b.shape(1);
  if (b.shape(0) != k)
    value_error("A and B disagree on K: A is " + str(a.attr("shape")) + ", B is " + str(b.attr("shape")));
  check_beta(beta);
  return run_gemm(dtype::f32, a, b, m, n, k, leading_dim(a, 0, k, "A"), leading_dim(b, 0, n, "B"), C, beta, ep,
                  py::none());
}

}  // namespace

void register_gemm(py::module_& m) {
  m.def("batch_reduce", &batch_reduce, py::arg("A"), py::arg("B"), py::arg("C") = py::none(),
        py::arg("beta") = 0.0, py::arg("epilogue") = py::none());
  m.def("pack_b", &pack_b_py, py::arg("B"), py::arg("dtype"), py::arg("ldb") = -1, py::arg("panels") = false);
  m.def("batch_reduce_packed", &batch_reduce_packed, py::arg("A"), py::arg("B"), py::arg("k"), py::arg("n"),
        py::arg("C") = py::none(), py::arg("beta") = 0.0, py::arg("dtype") = "bf16",
        py::arg("epilogue") = py::none(), py::arg("colsum") = py::none());
  m.def("gemm_packed", &gemm_packed, py::arg("A"), py::arg("B"), py::arg("k"), py::arg("n"),
        py::arg("C") = py::none(), py::arg("beta") = 0.0, py::arg("dtype") = "bf16",
        py::arg("epilogue") = py::none(), py::arg("colsum") = py::none(), py::arg("panels") = false);
  m.def("gemm", &gemm, py::arg("A"), py::arg("B"), py::arg("C") = py::none(), py::arg("beta") = 0.0,
        py::arg("epilogue") = py::none());
  m.def("_set_gemm_blocking", &layers::set_gemm_blocking, py::arg("bn"), py::arg("kc"));
}

}  // namespace brgemm::bindings
