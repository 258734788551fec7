// PYBIND11_MODULE(_core): validate every argument (naming it in the exception), release the
// GIL, call the core or a layer driver. The only place that turns status codes into Python
// exceptions; the core below never throws.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <sys/mman.h>

#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "brgemm/brgemm.h"
#include "../../layers/gemm.h"
#include "../../layers/eltwise.h"
#include "../../layers/blocks.h"
#include "../../layers/conv.h"
#include "../../layers/linear.h"
#include "../../layers/rnn.h"
#include "../kernels/ktanh_table.h"

namespace py = pybind11;
using namespace brgemm;

namespace {

std::string str(py::handle h) { return py::str(h).cast<std::string>(); }

[[noreturn]] void value_error(const std::string& msg) { throw py::value_error(msg); }
[[noreturn]] void type_error(const std::string& msg) { throw py::type_error(msg); }

std::string available_list() {
  std::string s;
  for (int i = 0; i < isa_count; ++i)
    if (isa_available((isa)i)) s += (s.empty() ? "" : ", ") + std::string(isa_name((isa)i));
  return s;
}

// --- arrays --------------------------------------------------------------------------------

// Element types the bindings accept. bf16 is ml_dtypes.bfloat16 (numpy kind 'V', 2 bytes).
enum class elem { f32, bf16, u8, s8, s32, f16 };
const char* elem_name(elem e) {
  switch (e) {
    case elem::f32: return "float32";
    case elem::bf16: return "bfloat16 (ml_dtypes)";
    case elem::u8: return "uint8";
    case elem::s8: return "int8";
    case elem::f16: return "float16";
    default: return "int32";
  }
}
// ml_dtypes.bfloat16 is a user-defined numpy type: recognised by name once, then by its type
// number, unique per registered type (reading dtype.name costs about a microsecond per call).
bool is_bf16(const py::dtype& dt) {
  static int bf16_num = -1;  // written under the GIL
  if (dt.itemsize() != 2) return false;
  if (bf16_num >= 0) return dt.num() == bf16_num;
  if (str(dt.attr("name")) != "bfloat16") return false;
  bf16_num = dt.num();
  return true;
}
bool elem_matches(const py::dtype& dt, elem e) {
  if (dt.byteorder() == '>') return false;
  switch (e) {
    case elem::f32: return dt.kind() == 'f' && dt.itemsize() == 4;
    case elem::bf16: return is_bf16(dt);
    case elem::u8: return dt.kind() == 'u' && dt.itemsize() == 1;
    case elem::s8: return dt.kind() == 'i' && dt.itemsize() == 1;
    case elem::f16: return dt.kind() == 'f' && dt.itemsize() == 2;
    default: return dt.kind() == 'i' && dt.itemsize() == 4;
  }
}
// What each kernel dtype reads and writes.
elem a_elem(dtype t) {
  return t == dtype::bf16 ? elem::bf16 : t == dtype::u8s8 ? elem::u8 : t == dtype::s8s8 ? elem::s8 : elem::f32;
}
elem b_elem(dtype t) {
  return t == dtype::bf16 ? elem::bf16 : dtype_is_int8(t) ? elem::s8 : t == dtype::f32f16 ? elem::f16 : elem::f32;
}
elem c_elem(dtype t) { return dtype_is_int8(t) ? elem::s32 : elem::f32; }
elem out_elem(dtype t, out_type o) {
  switch (o) {
    case out_type::f32: return elem::f32;
    case out_type::bf16: return elem::bf16;
    case out_type::u8: return elem::u8;
    case out_type::s8: return elem::s8;
    default: return c_elem(t);
  }
}
// The numpy dtype of an element type (for allocating outputs).
py::dtype elem_dtype(elem e) {
  switch (e) {
    case elem::bf16: {
      static py::object* bf16 = new py::object(py::module_::import("ml_dtypes").attr("bfloat16"));  // never freed
      return py::dtype::from_args(*bf16);
    }
    case elem::u8: return py::dtype::of<uint8_t>();
    case elem::s8: return py::dtype::of<int8_t>();
    case elem::s32: return py::dtype::of<int32_t>();
    case elem::f16: return py::dtype("float16");
    default: return py::dtype::of<float>();
  }
}

// An array of element type e in native byte order and aligned; anything else is refused,
// never converted.
py::array typed_array(py::handle h, const char* name, elem e) {
  if (!py::isinstance<py::array>(h))
    type_error(std::string(name) + " must be a numpy array of " + elem_name(e) + ", got " +
               str(py::type::of(h).attr("__name__")));
  auto arr = py::reinterpret_borrow<py::array>(h);
  if (!elem_matches(arr.dtype(), e))
    type_error(std::string(name) + " must have dtype " + elem_name(e) + ", got " + str(arr.dtype()));
  const py::ssize_t size = arr.itemsize();
  if ((reinterpret_cast<uintptr_t>(arr.data()) % size) != 0)
    value_error(std::string(name) + " is not aligned to its " + std::to_string(size) + "-byte elements");
  for (py::ssize_t i = 0; i < arr.ndim(); ++i)
    if (arr.shape(i) > 1 && arr.strides(i) % size != 0)
      value_error(std::string(name) + " has a stride that is not a multiple of its element size");
  return arr;
}
py::array f32_array(py::handle h, const char* name) { return typed_array(h, name, elem::f32); }

void require_writeable(const py::array& arr, const char* name) {
  if (!arr.writeable()) value_error(std::string(name) + " is read-only");
}

void require_nonempty(const py::array& arr, const char* name) {
  if (arr.size() == 0)
    value_error(std::string(name) + " has a zero-size dimension (shape " + str(arr.attr("shape")) +
                "); sizes must be at least 1");
}

// The byte range an array's elements span (strides may be negative).
struct span {
  uintptr_t lo, hi;
};
span extent(const py::array& arr) {
  auto lo = reinterpret_cast<uintptr_t>(arr.data()), hi = lo;
  for (py::ssize_t i = 0; i < arr.ndim(); ++i) {
    const py::ssize_t step = (arr.shape(i) - 1) * arr.strides(i);
    (step < 0 ? lo : hi) += step;
  }
  return {lo, hi + (uintptr_t)arr.itemsize()};
}
bool overlaps(span a, span b) { return a.lo < b.hi && b.lo < a.hi; }

void require_disjoint(const py::array& c, const py::array& x, const char* cname, const char* xname) {
  if (overlaps(extent(c), extent(x)))
    value_error(std::string(cname) + " overlaps " + xname + " in memory; the output must not alias an input");
}

// Leading dimension (in elements) of a 2-D view given by (rows, row stride); rows are
// required to run forward with contiguous elements.
int64_t leading_dim(const py::array& arr, int row_axis, int64_t width, const char* name) {
  const int64_t rows = arr.shape(row_axis);
  const int64_t item = arr.itemsize();
  if (width > 1 && arr.strides(row_axis + 1) != item)
    value_error(std::string(name) + " must have contiguous rows (last-axis stride of " + std::to_string(item) +
                " bytes, got " + std::to_string(arr.strides(row_axis + 1)) + ")");
  if (rows == 1) return width;
  const int64_t ld = arr.strides(row_axis) / item;
  if (ld < width)
    value_error(std::string(name) + " rows must not overlap or run backwards: row stride is " +
                std::to_string(ld) + " elements for rows of " + std::to_string(width));
  return ld;
}

// a·b + c with overflow reported as "too large" for the named argument.
int64_t checked_madd(int64_t a, int64_t b, int64_t c, const char* name) {
  int64_t r;
  if (__builtin_mul_overflow(a, b, &r) || __builtin_add_overflow(r, c, &r))
    value_error(std::string(name) + ": sizes overflow a 64-bit element count");
  return r;
}

void check_status(status s) {
  switch (s) {
    case status::ok: return;
    case status::isa_not_built:
    case status::isa_not_supported:
      value_error(std::string(status_message(s)) + " (active: " + isa_name(active_isa()) +
                  "; available: " + available_list() + ")");
    default: value_error(status_message(s));
  }
}

int64_t index_arg(py::handle h, const char* name) {
  if (!PyIndex_Check(h.ptr()))
    type_error(std::string(name) + " must be an integer, got " + str(py::type::of(h).attr("__name__")));
  const Py_ssize_t v = PyNumber_AsSsize_t(h.ptr(), PyExc_OverflowError);
  if (v == -1 && PyErr_Occurred()) {
    const bool overflow = PyErr_ExceptionMatches(PyExc_OverflowError);
    PyErr_Clear();
    if (!overflow)  // e.g. an array of several elements: __index__ exists but refuses
      type_error(std::string(name) + " must be an integer, got " + str(py::type::of(h).attr("__name__")));
    value_error(std::string(name) + " does not fit in 64 bits");
  }
  return v;
}

// Binds a call's positional and keyword arguments to `names` (the first `required` must be
// given), the way a Python signature would.
std::vector<py::object> bind_args(const py::args& args, const py::kwargs& kw, std::initializer_list<const char*> names,
                                  size_t required, const char* signature) {
  std::vector<const char*> nm(names);
  if (args.size() > nm.size())
    type_error(std::string("too many arguments; the call is ") + signature);
  std::vector<py::object> out(nm.size(), py::none());
  std::vector<bool> given(nm.size(), false);
  for (size_t i = 0; i < args.size(); ++i) {
    out[i] = args[i];
    given[i] = true;
  }
  for (auto item : kw) {
    const std::string key = py::cast<std::string>(item.first);
    size_t i = 0;
    while (i < nm.size() && key != nm[i]) ++i;
    if (i == nm.size()) type_error("unexpected argument '" + key + "'; the call is " + signature);
    if (given[i]) type_error("argument '" + key + "' given twice; the call is " + signature);
    out[i] = py::reinterpret_borrow<py::object>(item.second);
    given[i] = true;
  }
  for (size_t i = 0; i < required; ++i)
    if (!given[i]) type_error(std::string("missing argument '") + nm[i] + "'; the call is " + signature);
  return out;
}

void check_beta(double beta) {
  if (!std::isfinite(beta)) value_error("beta must be finite, got " + str(py::repr(py::float_(beta))));
  // The kernels compute with float32: a double beyond its range is checked here, before
  // any work, not by dispatch (gemm would already have added K chunks into C by then).
  if (!std::isfinite((float)beta))
    value_error("beta must be finite as a float32, got " + str(py::repr(py::float_(beta))));
}

// --- epilogues -------------------------------------------------------------------------------
// A brgemm.Epilogue (Python) is read here: its structure once (what the kernel does, part of
// its description), its data at every call (arrays may be written in place between calls).

// The Epilogue's structure for a kernel dtype and beta, checked.
struct epilogue_spec {
  epilogue_desc e;
  int32_t za = 0, zb = 0;  // zero points of A and B
  int32_t za_shifted = 0;  // za, +128 for s8 A (the kernels see a + 128)
};

int32_t int_attr(py::handle obj, const char* name) { return obj.attr(name).cast<int32_t>(); }

epilogue_spec epilogue_structure(py::handle obj, dtype t, double beta, int64_t n) {
  epilogue_spec s;
  if (obj.is_none()) {
    if (t == dtype::s8s8) s.e.col_offset = true;  // the +128 shift is always compensated
    s.za_shifted = t == dtype::s8s8 ? 128 : 0;
    return s;
  }
  const int out = int_attr(obj, "_out"), act = int_attr(obj, "_act");
  s.e.out = (out_type)out;
  s.e.act = (activation)act;
  s.e.bias = !obj.attr("bias").is_none();
  py::object scale = obj.attr("scale");
  const bool int8 = dtype_is_int8(t);
  s.za = int_attr(obj, "a_zero_point");
  s.zb = int_attr(obj, "b_zero_point");
  if (!int8) {
    if (!scale.is_none()) value_error("epilogue: scale is for int8 kernels (it dequantizes the int32 accumulator)");
    if (s.za || s.zb) value_error("epilogue: zero points are for int8 kernels");
  } else {
    if (!scale.is_none()) {
      const py::ssize_t size = py::reinterpret_borrow<py::array>(scale).size();
      if (size != 1 && size != n)
        value_error("epilogue: scale must hold 1 (per tensor) or n = " + std::to_string(n) +
                    " (per column) values, got " + std::to_string(size));
      s.e.scale = size == 1 ? scale_kind::tensor : scale_kind::column;
    }
    if (t == dtype::u8s8 && (s.za < 0 || s.za > 255))
      value_error("epilogue: a_zero_point must be in 0..255 for uint8 A, got " + std::to_string(s.za));
    if (t == dtype::s8s8 && (s.za < -128 || s.za > 127))
      value_error("epilogue: a_zero_point must be in -128..127 for int8 A, got " + std::to_string(s.za));
    s.za_shifted = s.za + (t == dtype::s8s8 ? 128 : 0);
    s.e.col_offset = s.za_shifted != 0 || (s.za != 0 && s.zb != 0);
    s.e.row_offset = s.zb != 0;
    if (s.e.out == out_type::acc && (s.e.bias || s.e.act != activation::none || s.e.scale != scale_kind::none))
      value_error("epilogue: bias, activation and scale need a float or requantized output: set out_dtype "
                  "('float32', 'bfloat16', 'uint8' or 'int8'); the int32 output takes zero points only");
  }
  const bool holds_acc = s.e.out == out_type::acc || (s.e.out == out_type::f32 && !int8);
  if (beta != 0.0 && !holds_acc)
    value_error("beta must be 0 with this epilogue: its output (out_dtype) does not hold the accumulator, so "
                "there is no previous sum to scale");
  return s;
}

// The Epilogue's arrays and values, checked against n; kept by reference (in-place writes
// reach later calls). colsum: B's column sums (int32 (n,) or (batch, n)) when the PackedB
// has them, else the Epilogue's b_colsum; needed only when the zero point of A (+128 for s8 A)
// is not 0.
struct epilogue_arrays {
  epilogue_args args;
  py::object bias, scale, colsum;
};

epilogue_arrays epilogue_arrays_of(py::handle obj, const epilogue_spec& s, int64_t n, py::handle colsum) {
  epilogue_arrays ea;
  if (!obj.is_none()) {
    if (s.e.bias) {
      py::array bias = typed_array(obj.attr("bias"), "bias", elem::f32);
      if (bias.ndim() != 1 || bias.shape(0) != n)
        value_error("bias must be 1-D with n = " + std::to_string(n) + " values, got shape " + str(bias.attr("shape")));
      if (n > 1 && bias.strides(0) != 4) value_error("bias must be contiguous");
      ea.args.bias = (const float*)bias.data();
      ea.bias = bias;
    }
    if (s.e.scale != scale_kind::none) {
      py::array scale = typed_array(obj.attr("scale"), "scale", elem::f32);
      const int64_t want = s.e.scale == scale_kind::tensor ? 1 : n;
      if (scale.ndim() != 1 || scale.shape(0) != want || (want > 1 && scale.strides(0) != 4))
        value_error("scale must be contiguous 1-D with " + std::to_string(want) + " values, got shape " +
                    str(scale.attr("shape")));
      ea.args.scale = (const float*)scale.data();
      ea.scale = scale;
    }
    ea.args.out_scale = obj.attr("out_scale").cast<float>();
    ea.args.out_zero_point = int_attr(obj, "out_zero_point");
  }
  if (s.za_shifted != 0) {
    py::object src = colsum.is_none() && !obj.is_none() ? obj.attr("b_colsum") : py::reinterpret_borrow<py::object>(colsum);
    if (src.is_none())
      value_error("epilogue: b_colsum (column sums of B over the batch, int32) is needed for a nonzero "
                  "a_zero_point or int8 A; pack B with brgemm.pack_b, which computes them");
    py::array cs = typed_array(src, "b_colsum", elem::s32);
    if ((cs.ndim() != 1 && cs.ndim() != 2) || cs.shape(cs.ndim() - 1) != n)
      value_error("b_colsum must have n = " + std::to_string(n) + " columns, got shape " + str(cs.attr("shape")));
    if (!(cs.flags() & py::array::c_style)) value_error("b_colsum must be C-contiguous");
    ea.colsum = cs;
  }
  return ea;
}

// Row sums of A over the batch (int8 values as the caller sees them: u8, or s8 for s8s8).
void row_sums(dtype t, const batch_ref& b, batch_kind kind, int64_t m, int64_t k, int64_t lda,
              std::vector<int64_t>& out) {
  out.assign(m, 0);
  for (int64_t i = 0; i < b.count; ++i) {
    const char* a = kind == batch_kind::stride   ? (const char*)b.a + i * b.stride_a
                    : kind == batch_kind::offset ? (const char*)b.a + b.offs_a[i]
                                                 : (const char*)b.addr_a[i];
    for (int64_t r = 0; r < m; ++r) {
      int64_t s = 0;
      if (t == dtype::s8s8)
        for (int64_t c = 0; c < k; ++c) s += ((const int8_t*)a)[r * lda + c];
      else
        for (int64_t c = 0; c < k; ++c) s += ((const uint8_t*)a)[r * lda + c];
      out[r] += s;
    }
  }
}

// The epilogue's data for one call: the arrays, and the int8 offsets of this batch in
// per-thread buffers (no allocation once warm; valid until this thread's next call).
epilogue_args epilogue_data(const epilogue_spec& s, const epilogue_arrays& ea, dtype t, int64_t m, int64_t n,
                            int64_t k, const batch_ref& batch, batch_kind kind, int64_t lda) {
  epilogue_args args = ea.args;
  static thread_local std::vector<int64_t> sums;
  static thread_local std::vector<int32_t> col, row;
  const int64_t k_total = k * batch.count;
  if (s.e.col_offset) {
    // −za'·colsum_j + K·za·zb, modulo 2^32 like the accumulator (za' = za, +128 for s8 A).
    sums.assign(n, 0);
    if (s.za_shifted != 0) {
      const py::array cs = py::reinterpret_borrow<py::array>(ea.colsum);
      const int32_t* p = (const int32_t*)cs.data();
      for (int64_t r = 0, rows = cs.size() / n; r < rows; ++r)
        for (int64_t j = 0; j < n; ++j) sums[j] += p[r * n + j];
    }
    col.resize(n);
    const uint64_t both = (uint64_t)k_total * (uint64_t)(int64_t)s.za * (uint64_t)(int64_t)s.zb;
    for (int64_t j = 0; j < n; ++j) col[j] = (int32_t)(uint32_t)((uint64_t)(-(int64_t)s.za_shifted * sums[j]) + both);
    args.col_offset = col.data();
  }
  if (s.e.row_offset) {
    row_sums(t, batch, kind, m, k, lda, sums);
    row.resize(m);
    for (int64_t i = 0; i < m; ++i) row[i] = (int32_t)(uint32_t)(uint64_t)(-(int64_t)s.zb * sums[i]);
    args.row_offset = row.data();
  }
  return args;
}

// C given (checked: element type, shape (m, n), writeable, not overlapping A or B) or
// allocated here (then beta must be 0). Sets *ldc.
py::array result_matrix(py::object C, elem e, int64_t m, int64_t n, double beta, const py::array& a,
                        const py::array& b, int64_t* ldc) {
  if (C.is_none()) {
    if (beta != 0.0) value_error("beta = " + str(py::repr(py::float_(beta))) + " needs C to be given");
    *ldc = n;
    return py::array(elem_dtype(e), std::vector<py::ssize_t>{(py::ssize_t)m, (py::ssize_t)n});
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

// --- the Kernel class ----------------------------------------------------------------------

batch_kind batch_from_name(const std::string& s) {
  if (s == "stride") return batch_kind::stride;
  if (s == "offset") return batch_kind::offset;
  if (s == "address") return batch_kind::address;
  value_error("batch must be 'stride', 'offset' or 'address', got '" + s + "'");
}
const char* batch_name(batch_kind b) {
  return b == batch_kind::stride ? "stride" : b == batch_kind::offset ? "offset" : "address";
}

dtype dtype_from_name(const std::string& s) {
  if (s == "f32" || s == "float32") return dtype::f32;
  if (s == "bf16" || s == "bfloat16") return dtype::bf16;
  if (s == "u8s8") return dtype::u8s8;
  if (s == "s8s8") return dtype::s8s8;
  if (s == "f32f16") return dtype::f32f16;
  value_error("dtype must be 'f32', 'bf16', 'u8s8', 's8s8' or 'f32f16', got '" + s + "'");
}

struct py_kernel {
  const kernel* kr;
  py::object ep_obj;  // the Epilogue (or None)
  epilogue_spec spec;
  epilogue_arrays arrays;  // its arrays, by reference

  py_kernel(int64_t m, int64_t n, int64_t k, const std::string& dt, const std::string& batch,
            int64_t lda, int64_t ldb, int64_t ldc, double beta, py::object ukernel, py::object epilogue)
      : ep_obj(epilogue) {
    desc d;
    d.type = dtype_from_name(dt);
    d.batch = batch_from_name(batch);
    auto positive = [](int64_t v, const char* name) {
      if (v < 1) value_error(std::string(name) + " must be at least 1, got " + std::to_string(v));
      if (v >= (int64_t(1) << 60)) value_error(std::string(name) + " must be below 2^60, got " + std::to_string(v));
    };
    positive(m, "m");
    positive(n, "n");
    positive(k, "k");
    d.m = m;
    d.n = n;
    d.k = k;
    d.lda = lda < 0 ? k : lda;
    d.ldb = ldb < 0 ? n : ldb;
    d.ldc = ldc < 0 ? n : ldc;
    if (d.lda < k) value_error("lda must be at least k = " + std::to_string(k) + ", got " + std::to_string(d.lda));
    if (d.ldb < n) value_error("ldb must be at least n = " + std::to_string(n) + ", got " + std::to_string(d.ldb));
    if (d.ldc < n) value_error("ldc must be at least n = " + std::to_string(n) + ", got " + std::to_string(d.ldc));
    check_beta(beta);
    if (dtype_is_int8(d.type) && beta != 0.0 && beta != 1.0)
      value_error("beta must be 0 or 1 for " + std::string(dtype_name(d.type)) +
                  " (it applies to the s32 accumulator), got " + str(py::repr(py::float_(beta))));
    d.beta = (float)beta;
    spec = epilogue_structure(ep_obj, d.type, beta, n);
    arrays = epilogue_arrays_of(ep_obj, spec, n, py::none());
    d.ep = spec.e;
    std::string uk_name;
    if (!ukernel.is_none()) {
      uk_name = ukernel.cast<std::string>();
      const ukernel_info* u = find_ukernel(uk_name.c_str());
      if (!u) value_error("ukernel '" + uk_name + "' does not exist in this build; see brgemm.ukernels()");
      if (u->type != d.type)
        value_error("ukernel '" + uk_name + "' is for dtype " + dtype_name(u->type) + ", not " + dtype_name(d.type));
      if ((int)u->level > (int)active_isa())
        value_error("ukernel '" + uk_name + "' needs ISA " + isa_name(u->level) + "; active: " +
                    isa_name(active_isa()) + ", available: " + available_list());
    }
    const status s = dispatch(d, &kr, uk_name.empty() ? nullptr : uk_name.c_str());
    if (s == status::bad_lda) value_error("lda is too large: lda*m overflows");
    if (s == status::bad_ldb) value_error("ldb is too large: ldb*k overflows");
    if (s == status::bad_ldc) value_error("ldc is too large: ldc*m overflows");
    check_status(s);
  }

  const desc& d() const { return kr->d; }

  // Elements one block of A, B and C spans (B in its packed layout: ceil(k/KP) rows of ldb·KP).
  int64_t a_extent() const { return checked_madd(d().m - 1, d().lda, d().k, "A"); }
  int64_t b_extent() const {
    const int64_t kp = dtype_kpack(d().type), rows = (d().k + kp - 1) / kp;
    return checked_madd(rows - 1, d().ldb * kp, d().n * kp, "B");
  }
  int64_t c_extent() const { return checked_madd(d().m - 1, d().ldc, d().n, "C"); }

  // A flat buffer of the operand's element type, C-contiguous, at least `need` elements.
  py::array buffer(py::handle h, const char* name, int64_t need) const {
    const elem e = name[0] == 'A'   ? a_elem(d().type)
                   : name[0] == 'B' ? b_elem(d().type)
                                    : out_elem(d().type, d().ep.out);
    py::array arr = typed_array(h, name, e);
    if (!(arr.flags() & py::array::c_style))
      value_error(std::string(name) + " must be C-contiguous (it is used as a flat buffer with leading dimensions)");
    if (arr.size() < need)
      value_error(std::string(name) + " is too small: the kernel reads " + std::to_string(need) +
                  " elements of it, it has " + std::to_string(arr.size()));
    return arr;
  }

  py::array output(py::handle h) const {
    py::array c = buffer(h, "C", c_extent());
    require_writeable(c, "C");
    return c;
  }

  static void* cp_of(py::array& c) { return c.mutable_data(); }

  // Binds the epilogue's data (GIL held), then computes without the GIL.
  void run(const batch_ref& batch, void* cp) {
    epilogue_args args;
    if (d().ep.any()) args = epilogue_data(spec, arrays, d().type, d().m, d().n, d().k, batch, d().batch, d().lda);
    py::gil_scoped_release nogil;
    execute(*kr, batch, cp, &args);
  }

  void require_batch_kind(batch_kind want) const {
    if (d().batch != want)
      value_error(std::string("this kernel was dispatched with batch='") + batch_name(d().batch) +
                  "', not '" + batch_name(want) + "'");
  }

  // kernel(...): the arguments depend on the batch kind the kernel was dispatched with.
  py::array call(const py::args& args, const py::kwargs& kw) {
    switch (d().batch) {
      case batch_kind::stride: {
        auto a = bind_args(args, kw, {"A", "B", "C", "count", "stride_a", "stride_b"}, 4,
                           "kernel(A, B, C, count, stride_a=None, stride_b=None)");
        return run_stride(a[0], a[1], a[2], index_arg(a[3], "count"), a[4], a[5]);
      }
      case batch_kind::offset: {
        auto a = bind_args(args, kw, {"A", "B", "C", "offsets_a", "offsets_b"}, 5,
                           "kernel(A, B, C, offsets_a, offsets_b)");
        return run_offset(a[0], a[1], a[2], a[3], a[4]);
      }
      default: {
        auto a = bind_args(args, kw, {"A", "B", "C"}, 3, "kernel(A_blocks, B_blocks, C)");
        return run_address(a[0], a[1], a[2]);
      }
    }
  }

  py::array run_stride(py::handle A, py::handle B, py::handle C, int64_t count, py::object stride_a,
                       py::object stride_b) {
    require_batch_kind(batch_kind::stride);
    if (count < 0) value_error("count must be at least 0, got " + std::to_string(count));
    const int64_t sa = stride_a.is_none() ? d().m * d().lda : index_arg(stride_a, "stride_a");
    // Default B stride: one whole block in B's layout (packed: ceil(k/KP) rows of ldb·KP, not k·ldb).
    const int64_t sb =
        stride_b.is_none() ? packed_b_elements(d().type, d().k, d().ldb) : index_arg(stride_b, "stride_b");
    if (sa < 0) value_error("stride_a must be at least 0, got " + std::to_string(sa));
    if (sb < 0) value_error("stride_b must be at least 0, got " + std::to_string(sb));
    const int64_t last = count > 0 ? count - 1 : 0;
    py::array a = buffer(A, "A", checked_madd(last, sa, a_extent(), "stride_a"));
    py::array b = buffer(B, "B", checked_madd(last, sb, b_extent(), "stride_b"));
    py::array c = output(C);
    require_disjoint(c, a, "C", "A");
    require_disjoint(c, b, "C", "B");
    batch_ref batch;
    batch.count = count;
    batch.a = a.data();
    batch.b = b.data();
    batch.stride_a = sa;
    batch.stride_b = sb;
    run(batch, cp_of(c));
    return c;
  }

  static py::array_t<int64_t> offsets(py::handle h, const char* name) {
    py::array arr = py::isinstance<py::array>(h) ? py::reinterpret_borrow<py::array>(h)
                                                  : py::module_::import("numpy").attr("asarray")(h);
    if (arr.size() == 0) arr = py::array_t<int64_t>(0);  // [] becomes float64 in numpy: still an empty batch
    if (arr.dtype().kind() != 'i' && arr.dtype().kind() != 'u')
      type_error(std::string(name) + " must have an integer dtype, got " + str(arr.dtype()));
    if (arr.ndim() != 1) value_error(std::string(name) + " must be 1-D, got ndim " + std::to_string(arr.ndim()));
    return py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(arr);
  }

  static void check_offsets(const py::array_t<int64_t>& offs, int64_t extent, int64_t size, const char* name,
                            const char* array) {
    const int64_t* o = offs.data();
    for (py::ssize_t i = 0; i < offs.size(); ++i)
      if (o[i] < 0 || o[i] > size - extent)
        value_error(std::string(name) + "[" + std::to_string(i) + "] = " + std::to_string(o[i]) +
                    " puts a block outside " + array + " (valid: 0.." + std::to_string(size - extent) + ")");
  }

  py::array run_offset(py::handle A, py::handle B, py::handle C, py::handle offs_a, py::handle offs_b) {
    require_batch_kind(batch_kind::offset);
    auto oa = offsets(offs_a, "offsets_a"), ob = offsets(offs_b, "offsets_b");
    if (oa.size() != ob.size())
      value_error("offsets_a and offsets_b differ in length: " + std::to_string(oa.size()) + " and " +
                  std::to_string(ob.size()));
    py::array a = buffer(A, "A", a_extent()), b = buffer(B, "B", b_extent());
    py::array c = output(C);
    require_disjoint(c, a, "C", "A");
    require_disjoint(c, b, "C", "B");
    check_offsets(oa, a_extent(), a.size(), "offsets_a", "A");
    check_offsets(ob, b_extent(), b.size(), "offsets_b", "B");
    batch_ref batch;
    batch.count = oa.size();
    batch.a = a.data();
    batch.b = b.data();
    batch.offs_a = oa.data();
    batch.offs_b = ob.data();
    run(batch, cp_of(c));
    return c;
  }

  py::array run_address(py::handle As, py::handle Bs, py::handle C) {
    require_batch_kind(batch_kind::address);
    auto seq = [](py::handle h, const char* name) {
      if (!py::isinstance<py::sequence>(h) || py::isinstance<py::array>(h) || py::isinstance<py::str>(h))
        type_error(std::string(name) + " must be a list or tuple of float32 arrays");
      return py::reinterpret_borrow<py::sequence>(h);
    };
    py::sequence as = seq(As, "A"), bs = seq(Bs, "B");
    if (as.size() != bs.size())
      value_error("A and B differ in length: " + std::to_string(as.size()) + " and " + std::to_string(bs.size()) +
                  " blocks");
    py::array c = output(C);
    const span cs = extent(c);
    std::vector<py::array> keep;  // holds the blocks alive while C++ reads them
    std::vector<const void*> pa(as.size()), pb(bs.size());
    keep.reserve(2 * as.size());
    for (size_t i = 0; i < as.size(); ++i) {
      const std::string na = "A[" + std::to_string(i) + "]", nb = "B[" + std::to_string(i) + "]";
      py::array a = buffer(as[i], na.c_str(), a_extent()), b = buffer(bs[i], nb.c_str(), b_extent());
      if (overlaps(cs, extent(a))) value_error("C overlaps " + na + " in memory; the output must not alias an input");
      if (overlaps(cs, extent(b))) value_error("C overlaps " + nb + " in memory; the output must not alias an input");
      pa[i] = a.data();
      pb[i] = b.data();
      keep.push_back(std::move(a));
      keep.push_back(std::move(b));
    }
    batch_ref batch;
    batch.count = (int64_t)pa.size();
    batch.addr_a = pa.data();
    batch.addr_b = pb.data();
    run(batch, cp_of(c));
    return c;
  }
};

// --- whole-array entry points ----------------------------------------------------------------

// beta for a kernel dtype: finite, and 0 or 1 on the s32 accumulator of int8.
void check_beta_for(dtype t, double beta) {
  check_beta(beta);
  if (dtype_is_int8(t) && beta != 0.0 && beta != 1.0)
    value_error("beta must be 0 or 1 for " + std::string(dtype_name(t)) + ", got " + str(py::repr(py::float_(beta))));
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
  py::array c = result_matrix(C, out_elem(dtype::f32, s.e.out), m, n, beta, a, b, &d.ldc);
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
  py::array b = typed_array(B, "B", b_elem(t));
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
  py::array a = typed_array(A, "A", a_elem(t)), b = typed_array(B, "B", b_elem(t));
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
  py::array c = result_matrix(C, out_elem(t, s.e.out), m, n, beta, a, b, &d.ldc);
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
  py::array c = result_matrix(C, out_elem(t, s.e.out), m, n, beta, a, b, &ldc);
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
  py::array a = typed_array(A, "A", a_elem(t)), b = typed_array(B, "B", b_elem(t));
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

// --- Element-wise functions ----------------------------------------------------------------

// A float32 or bfloat16 array (which one is reported through *bf16), any strides.
py::array float_array(py::handle h, const char* name, bool* bf16) {
  if (!py::isinstance<py::array>(h))
    type_error(std::string(name) + " must be a numpy array of float32 or bfloat16 (ml_dtypes), got " +
               str(py::type::of(h).attr("__name__")));
  auto arr = py::reinterpret_borrow<py::array>(h);
  *bf16 = is_bf16(arr.dtype());
  if (!*bf16 && !elem_matches(arr.dtype(), elem::f32))
    type_error(std::string(name) + " must have dtype float32 or bfloat16 (ml_dtypes), got " + str(arr.dtype()));
  return typed_array(h, name, *bf16 ? elem::bf16 : elem::f32);
}

// The same, C-contiguous.
py::array eltwise_array(py::handle h, const char* name, bool* bf16) {
  py::array arr = float_array(h, name, bf16);
  if (!(arr.flags() & py::array::c_style)) value_error(std::string(name) + " must be C-contiguous");
  return arr;
}

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

activation activation_arg(const std::string& name) {
  static const char* names[] = {"none", "relu", "tanh", "sigmoid", "gelu", "swish", "ktanh", "ksigmoid", "kgelu",
                                "kswish"};
  for (int i = 1; i < activation_count; ++i)
    if (name == names[i]) return (activation)i;
  value_error("activation must be one of relu, tanh, sigmoid, gelu, swish, ktanh, ksigmoid, kgelu, kswish; got '" +
              name + "'");
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
  py::array g = typed_array(G, "grad_y", elem::f32);
  if (!(g.flags() & py::array::c_style)) value_error("grad_y must be C-contiguous");
  const bool need_x = activation_backward_needs_x(a);
  py::object src = need_x ? X : Y;
  const char* src_name = need_x ? "x" : "y";
  if (src.is_none()) value_error(std::string("the backward pass of ") + name + " needs " + src_name);
  py::array v = typed_array(src, src_name, elem::f32);
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

py::array softmax_backward_py(int order, py::object Z, py::handle Y, py::handle G) {
  if (order < 0 || order > 16 || order % 2) value_error("order must be 0 (exact) or even, 2 to 16");
  py::array y = typed_array(Y, "y", elem::f32), g = typed_array(G, "grad_y", elem::f32);
  for (auto* a : {&y, &g})
    if (!(a->flags() & py::array::c_style)) value_error("y and grad_y must be C-contiguous");
  if (y.ndim() < 1 || y.size() == 0) value_error("y must have at least one element along the softmax axis");
  if (!y.attr("shape").equal(g.attr("shape")))
    value_error("grad_y must have y's shape " + str(y.attr("shape")) + ", got " + str(g.attr("shape")));
  py::array z;
  if (order > 0) {
    z = typed_array(Z, "x", elem::f32);
    if (!(z.flags() & py::array::c_style)) value_error("x must be C-contiguous");
    if (!z.attr("shape").equal(y.attr("shape")))
      value_error("x must have y's shape " + str(y.attr("shape")) + ", got " + str(z.attr("shape")));
  }
  py::array out = eltwise_out(py::none(), y, {});
  const int64_t cols = y.shape(y.ndim() - 1), rows = y.size() / cols;
  const float *zp = order > 0 ? (const float*)z.data() : nullptr, *yp = (const float*)y.data(),
              *gp = (const float*)g.data();
  float* op = (float*)out.mutable_data();
  {
    py::gil_scoped_release nogil;
    layers::softmax_backward(order, zp, yp, gp, op, rows, cols);
  }
  return out;
}

// --- Fully-connected layers (brgemm.nn.Linear / MLP drive these) --------------------------

// A C-contiguous, writeable-if-asked array of element type e holding exactly `elems` elements.
py::array exact_array(py::handle h, const char* name, elem e, int64_t elems, bool write) {
  py::array a = typed_array(h, name, e);
  if (!(a.flags() & py::array::c_style)) value_error(std::string(name) + " must be C-contiguous");
  if (a.size() != elems)
    value_error(std::string(name) + " must hold " + std::to_string(elems) + " elements, got " +
                std::to_string(a.size()));
  if (write) require_writeable(a, name);
  return a;
}

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
  exact_array(XB, "xb", bbf ? elem::bf16 : elem::f32, blocked_elems(n, c, bn, bc), true);
  require_disjoint(xb, x, "xb", "x");
  const void* xp = x.data();
  void* bp = xb.mutable_data();
  py::gil_scoped_release nogil;
  layers::fc_to_blocked(xp, xbf, n, c, ld, bp, bbf, bn, bc);
}

void fc_from_blocked_py(py::handle XB, int64_t bn, int64_t bc, py::handle X) {
  check_blocks(bn, bc);
  bool xbf, bbf;
  py::array x = plain_rows(X, "out", &xbf);
  require_writeable(x, "out");
  const int64_t n = x.shape(0), c = x.shape(1), ld = leading_dim(x, 0, c, "out");
  py::array xb = eltwise_array(XB, "xb", &bbf);
  exact_array(XB, "xb", bbf ? elem::bf16 : elem::f32, blocked_elems(n, c, bn, bc), false);
  require_disjoint(x, xb, "out", "xb");
  const void* bp = xb.data();
  void* xp = x.mutable_data();
  py::gil_scoped_release nogil;
  layers::fc_from_blocked(bp, bbf, n, c, bn, bc, xp, xbf, ld);
}

// The C++ layer, with every array argument checked against its geometry.
struct py_linear {
  layers::fc_layer fc;
  py_linear(const std::string& dt, int64_t in, int64_t out, const std::string& act)
      : fc(dtype_arg(dt), positive(in, "in_features"), positive(out, "out_features"),
           act == "none" ? activation::none : activation_arg(act)) {}

  static dtype dtype_arg(const std::string& dt) {
    if (dt == "float32") return dtype::f32;
    if (dt == "bfloat16") return dtype::bf16;
    value_error("dtype must be 'float32' or 'bfloat16', got '" + dt + "'");
  }
  static int64_t positive(int64_t v, const char* name) {
    if (v < 1) value_error(std::string(name) + " must be at least 1, got " + std::to_string(v));
    return v;
  }
  elem act_elem() const { return fc.bf16() ? elem::bf16 : elem::f32; }
  const float* weight(py::handle w, bool write) {
    return (const float*)exact_array(w, "weight", elem::f32, fc.out() * fc.in(), write).data();
  }
  const float* bias(py::handle b, bool write) {
    return b.is_none() ? nullptr : (const float*)exact_array(b, "bias", elem::f32, fc.out(), write).data();
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
    const float* wgp = (const float*)exact_array(wg, "weight_grad", elem::f32, fc.out() * fc.in(), false).data();
    const float* bgp = bp ? (const float*)exact_array(bg, "bias_grad", elem::f32, fc.out(), false).data() : nullptr;
    py::gil_scoped_release nogil;
    fc.sgd(wp, bp, wgp, bgp, (float)lr, stochastic, seed);
  }

  void forward(int64_t n, int64_t bn, py::handle xb, py::handle yb, py::handle zb) {
    rows(n, bn);
    const void* xp = exact_array(xb, "xb", act_elem(), blocked_elems(n, fc.in(), bn, fc.bc()), false).data();
    py::array y = exact_array(yb, "yb", act_elem(), blocked_elems(n, fc.out(), bn, fc.bk()), true);
    void* yp = y.mutable_data();
    float* zp = nullptr;
    if (!zb.is_none()) {
      py::array z = exact_array(zb, "zb", elem::f32, blocked_elems(n, fc.out(), bn, fc.bk()), true);
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

  void backward(int64_t n, int64_t bn, py::handle gyb, py::handle yb, py::handle zb, py::handle xb, py::handle gxb,
                py::handle wg, py::handle bg, bool accumulate) {
    rows(n, bn);
    const int64_t ye = blocked_elems(n, fc.out(), bn, fc.bk()), xe = blocked_elems(n, fc.in(), bn, fc.bc());
    const float* gy = (const float*)exact_array(gyb, "grad_out", elem::f32, ye, false).data();
    const void* y = fc.needs_z() ? nullptr : exact_array(yb, "yb", act_elem(), ye, false).data();
    const float* z = fc.needs_z() ? (const float*)exact_array(zb, "zb", elem::f32, ye, false).data() : nullptr;
    const void* x = exact_array(xb, "xb", act_elem(), xe, false).data();
    float* gx = gxb.is_none() ? nullptr : (float*)exact_array(gxb, "grad_in", elem::f32, xe, true).mutable_data();
    float* w = (float*)exact_array(wg, "weight_grad", elem::f32, fc.out() * fc.in(), true).mutable_data();
    float* b = bg.is_none() ? nullptr : (float*)exact_array(bg, "bias_grad", elem::f32, fc.out(), true).mutable_data();
    status s;
    {
      py::gil_scoped_release nogil;
      s = fc.backward(n, bn, gy, y, z, x, gx, w, b, accumulate);
    }
    check_status(s);
  }
};

// --- Convolution (brgemm.nn.Conv2d drives this) -------------------------------------------

// A C-contiguous float32, bfloat16 or uint8 array of exactly `ndim` dimensions, non-empty.
py::array dense_array(py::handle h, const char* name, int ndim, layers::element* e) {
  if (!py::isinstance<py::array>(h))
    type_error(std::string(name) + " must be a numpy array, got " + str(py::type::of(h).attr("__name__")));
  const py::dtype dt = py::reinterpret_borrow<py::array>(h).dtype();
  const elem k = elem_matches(dt, elem::u8) ? elem::u8 : elem_matches(dt, elem::bf16) ? elem::bf16 : elem::f32;
  if (!elem_matches(dt, k))
    type_error(std::string(name) + " must have dtype float32, bfloat16 or uint8, got " + str(dt));
  py::array a = typed_array(h, name, k);
  if (!(a.flags() & py::array::c_style)) value_error(std::string(name) + " must be C-contiguous");
  if (a.ndim() != ndim)
    value_error(std::string(name) + " must be " + std::to_string(ndim) + "-D, got " + std::to_string(a.ndim()) + "-D");
  require_nonempty(a, name);
  *e = k == elem::u8 ? layers::element::u8 : k == elem::bf16 ? layers::element::bf16 : layers::element::f32;
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

// x (N, C, H, W) → xb (N, C/bc, H, W, bc): float32/bfloat16 to either, uint8 to uint8, or
// float32 to uint8 quantized with scale and zero_point.
void conv_to_blocked_py(py::handle X, py::handle XB, py::object scale, int64_t zero_point) {
  layers::element xt, bt;
  py::array x = dense_array(X, "x", 4, &xt);
  py::array xb = dense_array(XB, "xb", 5, &bt);
  const bool quantize = bt == layers::element::u8 && xt != layers::element::u8;
  if ((xt == layers::element::u8) != (bt == layers::element::u8) && !(quantize && xt == layers::element::f32))
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
  layers::conv_to_blocked(xp, xt, n, c, hw, bp, bt, bc, sc, zp);
}

void conv_from_blocked_py(py::handle XB, py::handle X) {
  layers::element xt, bt;
  py::array xb = dense_array(XB, "xb", 5, &bt);
  py::array x = dense_array(X, "out", 4, &xt);
  if ((xt == layers::element::u8) != (bt == layers::element::u8))
    type_error("xb (" + str(xb.dtype()) + ") cannot be unblocked into " + str(x.dtype()) +
               ": uint8 goes to uint8, float32/bfloat16 to either of them");
  const int64_t n = x.shape(0), c = x.shape(1), hw = checked_madd(x.shape(2), x.shape(3), 0, "out");
  const int64_t bc = blocks_of(x, xb, "out");
  require_writeable(x, "out");
  require_disjoint(x, xb, "out", "xb");
  const void* bp = xb.data();
  void* xp = x.mutable_data();
  py::gil_scoped_release nogil;
  layers::conv_from_blocked(bp, bt, n, c, hw, bc, xp, xt);
}

layers::conv_geometry geometry(int64_t c, int64_t k, int64_t r, int64_t s, int64_t sh, int64_t sw, int64_t pt,
                               int64_t pb, int64_t pl, int64_t pr, int64_t dh, int64_t dw) {
  layers::conv_geometry g;
  g.c = c, g.k = k, g.r = r, g.s = s, g.stride_h = sh, g.stride_w = sw, g.pad_t = pt, g.pad_b = pb;
  g.pad_l = pl, g.pad_r = pr, g.dil_h = dh, g.dil_w = dw;
  return g;
}

// The C++ layer, with every array argument checked against its geometry.
struct py_conv {
  layers::conv_layer cv;
  py_conv(const std::string& dt, const layers::conv_geometry& g, const std::string& act)
      : cv(py_linear::dtype_arg(dt), checked(g), act == "none" ? activation::none : activation_arg(act)) {}

  static const layers::conv_geometry& checked(const layers::conv_geometry& g) {
    for (auto [v, name] : {std::pair{g.c, "in_channels"}, {g.k, "out_channels"}, {g.r, "kernel rows"},
                           {g.s, "kernel columns"}, {g.stride_h, "stride"}, {g.stride_w, "stride"},
                           {g.dil_h, "dilation"}, {g.dil_w, "dilation"}})
      if (v < 1) value_error(std::string(name) + " must be at least 1, got " + std::to_string(v));
    for (int64_t p : {g.pad_t, g.pad_b, g.pad_l, g.pad_r})
      if (p < 0) value_error("padding must not be negative, got " + std::to_string(p));
    return g;
  }
  elem act_elem() const { return cv.bf16() ? elem::bf16 : elem::f32; }
  int64_t weights() const { return cv.geometry().k * cv.geometry().c * cv.geometry().r * cv.geometry().s; }
  // Elements of a blocked activation of `channels` in blocks of b for n images of h × w.
  static int64_t blocked(int64_t n, int64_t channels, int64_t b, int64_t h, int64_t w) {
    return checked_madd(checked_madd(n, (channels + b - 1) / b * b, 0, "activation"), checked_madd(h, w, 0, "activation"),
                        0, "activation");
  }
  void sizes(int64_t n, int64_t h, int64_t w) const {
    if (n < 1 || h < 1 || w < 1) value_error("n, h and w must be at least 1");
    if (cv.geometry().out_h(h) < 1 || cv.geometry().out_w(w) < 1)
      value_error("the dilated kernel is larger than the padded input (" + std::to_string(h) + " x " +
                  std::to_string(w) + ")");
  }

  bool refresh(py::handle w, py::handle b) {
    const float* wp = (const float*)exact_array(w, "weight", elem::f32, weights(), false).data();
    const float* bp = b.is_none() ? nullptr : (const float*)exact_array(b, "bias", elem::f32, cv.geometry().k, false).data();
    py::gil_scoped_release nogil;
    return cv.refresh(wp, bp);
  }

  void forward(int64_t n, int64_t h, int64_t w, py::handle xb, py::handle yb, py::handle zb) {
    sizes(n, h, w);
    const auto& g = cv.geometry();
    const int64_t oh = g.out_h(h), ow = g.out_w(w);
    const void* xp = exact_array(xb, "xb", act_elem(), blocked(n, g.c, cv.bc(), h, w), false).data();
    py::array y = exact_array(yb, "yb", act_elem(), blocked(n, g.k, cv.bk(), oh, ow), true);
    void* yp = y.mutable_data();
    float* zp = nullptr;
    if (!zb.is_none()) {
      py::array z = exact_array(zb, "zb", elem::f32, blocked(n, g.k, cv.bk(), oh, ow), true);
      require_disjoint(z, y, "zb", "yb");
      zp = (float*)z.mutable_data();
    }
    require_disjoint(y, py::reinterpret_borrow<py::array>(xb), "yb", "xb");
    status s;
    {
      py::gil_scoped_release nogil;
      s = cv.forward(n, h, w, xp, yp, zp);
    }
    check_status(s);
  }

  void backward(int64_t n, int64_t h, int64_t w, py::handle gyb, py::handle yb, py::handle zb, py::handle xb,
                py::handle gxb, py::handle wg, py::handle bg, bool accumulate) {
    sizes(n, h, w);
    const auto& g = cv.geometry();
    const int64_t ye = blocked(n, g.k, cv.bk(), g.out_h(h), g.out_w(w)), xe = blocked(n, g.c, cv.bc(), h, w);
    const float* gy = (const float*)exact_array(gyb, "grad_out", elem::f32, ye, false).data();
    const void* y = cv.needs_z() ? nullptr : exact_array(yb, "yb", act_elem(), ye, false).data();
    const float* z = cv.needs_z() ? (const float*)exact_array(zb, "zb", elem::f32, ye, false).data() : nullptr;
    const void* x = exact_array(xb, "xb", act_elem(), xe, false).data();
    float* gx = nullptr;
    if (!gxb.is_none()) {
      py::array gxa = exact_array(gxb, "grad_in", elem::f32, xe, true);
      require_disjoint(gxa, py::reinterpret_borrow<py::array>(gyb), "grad_in", "grad_out");
      gx = (float*)gxa.mutable_data();
    }
    float* wgp = (float*)exact_array(wg, "weight_grad", elem::f32, weights(), true).mutable_data();
    float* bgp = bg.is_none() ? nullptr : (float*)exact_array(bg, "bias_grad", elem::f32, g.k, true).mutable_data();
    status s;
    {
      py::gil_scoped_release nogil;
      s = cv.backward(n, h, w, gy, y, z, x, gx, wgp, bgp, accumulate);
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
    // 255·128·C·R·S must fit the s32 sums (and their zero-point correction).
    if (g.c * g.r * g.s > (int64_t(1) << 31) / (255 * 128))
      value_error("in_channels·R·S = " + std::to_string(g.c * g.r * g.s) +
                  " is too long a reduction for exact int32 sums (at most 65793)");
    return g;
  }
  static out_type out_arg(const std::string& out) {
    if (out == "uint8") return out_type::u8;
    if (out == "float32") return out_type::f32;
    value_error("out_dtype must be 'uint8' or 'float32', got '" + out + "'");
    return out_type::f32;
  }
  int64_t weights() const { return cv.geometry().k * cv.geometry().c * cv.geometry().r * cv.geometry().s; }

  bool refresh(py::handle w, py::handle ws, py::handle b, double xs, int64_t xz, double ys, int64_t yz) {
    const int64_t k = cv.geometry().k;
    const int8_t* wp = (const int8_t*)exact_array(w, "weight", elem::s8, weights(), false).data();
    const float* wsp = (const float*)exact_array(ws, "weight_scale", elem::f32, k, false).data();
    for (int64_t i = 0; i < k; ++i) scale_arg(wsp[i], "weight_scale");
    const float* bp = b.is_none() ? nullptr : (const float*)exact_array(b, "bias", elem::f32, k, false).data();
    layers::conv_quant q;
    q.x_scale = scale_arg(xs, "input_scale");
    q.x_zero = u8_zero_arg(xz, "input_zero_point");
    q.y_scale = scale_arg(ys, "output_scale");
    q.y_zero = u8_zero_arg(yz, "output_zero_point");
    py::gil_scoped_release nogil;
    return cv.refresh(wp, wsp, bp, q);
  }

  void forward(int64_t n, int64_t h, int64_t w, py::handle xb, py::handle yb) {
    if (n < 1 || h < 1 || w < 1) value_error("n, h and w must be at least 1");
    const auto& g = cv.geometry();
    const int64_t oh = g.out_h(h), ow = g.out_w(w);
    if (oh < 1 || ow < 1)
      value_error("the dilated kernel is larger than the padded input (" + std::to_string(h) + " x " +
                  std::to_string(w) + ")");
    const uint8_t* xp =
        (const uint8_t*)exact_array(xb, "xb", elem::u8, py_conv::blocked(n, g.c, cv.bc(), h, w), false).data();
    const elem ye = cv.out() == out_type::u8 ? elem::u8 : elem::f32;
    py::array y = exact_array(yb, "yb", ye, py_conv::blocked(n, g.k, cv.bk(), oh, ow), true);
    require_disjoint(y, py::reinterpret_borrow<py::array>(xb), "yb", "xb");
    void* yp = y.mutable_data();
    status s;
    {
      py::gil_scoped_release nogil;
      s = cv.forward(n, h, w, xp, yp);
    }
    check_status(s);
  }
};

// --- Recurrent layers (brgemm.nn.LSTM and GRU drive this, one per layer and direction) ---------

struct py_rnn {
  layers::rnn_layer l;
  int64_t steps = 0, rows = 0;  // of the last training forward
  bool trained = false;
  py_rnn(const std::string& cell, const std::string& dt, int64_t input, int64_t hidden, bool reverse, bool ktanh)
      : l(cell_arg(cell), py_linear::dtype_arg(dt), positive(input, "input_size"), positive(hidden, "hidden_size"),
          reverse, ktanh) {}
  static layers::rnn_cell cell_arg(const std::string& c) {
    if (c == "lstm") return layers::rnn_cell::lstm;
    if (c != "gru") value_error("cell must be 'lstm' or 'gru', got '" + c + "'");
    return layers::rnn_cell::gru;
  }
  static int64_t positive(int64_t v, const char* name) {
    if (v < 1) value_error(std::string(name) + " must be at least 1, got " + std::to_string(v));
    return v;
  }
  int64_t gh() const { return l.gates() * l.hidden(); }

  bool refresh(py::handle wih, py::handle whh, py::handle bih, py::handle bhh) {
    const float* a = (const float*)exact_array(wih, "weight_ih", elem::f32, gh() * l.input(), false).data();
    const float* b = (const float*)exact_array(whh, "weight_hh", elem::f32, gh() * l.hidden(), false).data();
    if (bih.is_none() != bhh.is_none()) value_error("bias_ih and bias_hh must both be given or both be None");
    const float* c = bih.is_none() ? nullptr : (const float*)exact_array(bih, "bias_ih", elem::f32, gh(), false).data();
    const float* d = bhh.is_none() ? nullptr : (const float*)exact_array(bhh, "bias_hh", elem::f32, gh(), false).data();
    py::gil_scoped_release nogil;
    return l.refresh(a, b, c, d);
  }

  // (T, N, cols) float32 with this direction's H columns at col; returns its data at col.
  float* columns(py::handle h, const char* name, int64_t T, int64_t N, int64_t col, bool write, int64_t* ld) {
    py::array a = typed_array(h, name, elem::f32);
    if (a.ndim() != 3 || a.shape(0) != T || a.shape(1) != N || col < 0 || col + l.hidden() > a.shape(2))
      value_error(std::string(name) + " must be (T, N, ≥ col + hidden_size) float32, got " + str(a.attr("shape")));
    if (!(a.flags() & py::array::c_style)) value_error(std::string(name) + " must be C-contiguous");
    if (write) require_writeable(a, name);
    *ld = a.shape(2);
    return (float*)a.data() + col;
  }
  const float* state(py::handle h, const char* name, int64_t N) {
    if (h.is_none()) return nullptr;
    return (const float*)exact_array(h, name, elem::f32, N * l.hidden(), false).data();
  }
  float* state_out(py::handle h, const char* name, int64_t N) {
    if (h.is_none()) return nullptr;
    return (float*)exact_array(h, name, elem::f32, N * l.hidden(), true).mutable_data();
  }

  const void* input(py::handle x, int64_t T, int64_t N) {
    positive(T, "T");
    positive(N, "N");
    return exact_array(x, "x", l.bf16() ? elem::bf16 : elem::f32, checked_madd(T * N, l.input(), 0, "x"), false).data();
  }
  static std::vector<int64_t> lengths_arg(py::handle lengths, int64_t T, int64_t N) {
    std::vector<int64_t> len;
    if (lengths.is_none()) return len;
    py::array_t<int64_t, py::array::c_style | py::array::forcecast> a(py::reinterpret_borrow<py::object>(lengths));
    if (a.ndim() != 1 || a.shape(0) != N) value_error("lengths must hold N = " + std::to_string(N) + " values");
    len.assign(a.data(), a.data() + N);
    for (int64_t i = 0; i < N; ++i)
      if (len[i] < 1 || len[i] > T || (i && len[i] > len[i - 1]))
        value_error("lengths must be sorted in decreasing order, each in [1, T = " + std::to_string(T) + "]");
    return len;
  }
  float* workspace(py::handle ws, int64_t T, int64_t N, bool write) {
    if (ws.is_none()) return nullptr;
    return (float*)exact_array(ws, "workspace", elem::f32, l.workspace_size(T, N), write).mutable_data();
  }

  // With a workspace (workspace_size(T, N) float32), what backward needs is kept there, for
  // backward_from; without, in the layer, for backward.
  void forward(int64_t T, int64_t N, py::handle x, py::handle lengths, py::handle h0, py::handle c0, py::handle y,
               int64_t col, py::handle hT, py::handle cT, bool train, py::handle ws) {
    const void* xp = input(x, T, N);
    const std::vector<int64_t> len = lengths_arg(lengths, T, N);
    int64_t ldy;
    float* yp = columns(y, "y", T, N, col, true, &ldy);
    const float* h0p = state(h0, "h0", N);
    const float* c0p = state(c0, "c0", N);
    float* hTp = state_out(hT, "hT", N);
    float* cTp = state_out(cT, "cT", N);
    if (!hTp) value_error("hT must be given");
    float* wsp = workspace(ws, T, N, true);
    status s;
    {
      py::gil_scoped_release nogil;
      s = l.forward(T, N, xp, len.empty() ? nullptr : len.data(), h0p, c0p, yp, ldy, hTp, cTp, train, wsp);
    }
    check_status(s);
    steps = T, rows = N, trained = train && !wsp;
  }

  struct grads {
    const float *dy = nullptr, *dhT, *dcT;
    int64_t ldy = 0;
    float *dx, *dh0, *dc0, *a, *b, *c, *d;
  };
  grads gradient_args(int64_t T, int64_t N, py::handle dy, int64_t col, py::handle dhT, py::handle dcT, py::handle dx,
                      py::handle dh0, py::handle dc0, py::handle gwih, py::handle gwhh, py::handle gbih,
                      py::handle gbhh) {
    grads g;
    if (!dy.is_none()) g.dy = columns(dy, "grad_y", T, N, col, false, &g.ldy);
    g.dhT = state(dhT, "grad_hT", N);
    g.dcT = state(dcT, "grad_cT", N);
    g.dx = dx.is_none() ? nullptr
                        : (float*)exact_array(dx, "grad_x", elem::f32, T * N * l.input(), true).mutable_data();
    g.dh0 = state_out(dh0, "grad_h0", N);
    g.dc0 = state_out(dc0, "grad_c0", N);
    g.a = (float*)exact_array(gwih, "weight_ih_grad", elem::f32, gh() * l.input(), true).mutable_data();
    g.b = (float*)exact_array(gwhh, "weight_hh_grad", elem::f32, gh() * l.hidden(), true).mutable_data();
    g.c = gbih.is_none() ? nullptr : (float*)exact_array(gbih, "bias_ih_grad", elem::f32, gh(), true).mutable_data();
    g.d = gbhh.is_none() ? nullptr : (float*)exact_array(gbhh, "bias_hh_grad", elem::f32, gh(), true).mutable_data();
    return g;
  }

  void backward(py::handle dy, int64_t col, py::handle dhT, py::handle dcT, py::handle dx, bool dx_add, py::handle dh0,
                py::handle dc0, py::handle gwih, py::handle gwhh, py::handle gbih, py::handle gbhh, bool accumulate) {
    if (!trained) throw std::runtime_error("backward needs a training forward (without a workspace) first");
    const grads g = gradient_args(steps, rows, dy, col, dhT, dcT, dx, dh0, dc0, gwih, gwhh, gbih, gbhh);
    status s;
    {
      py::gil_scoped_release nogil;
      s = l.backward(g.dy, g.ldy, g.dhT, g.dcT, g.dx, dx_add, g.dh0, g.dc0, g.a, g.b, g.c, g.d, accumulate);
    }
    check_status(s);
  }

  // The backward of a forward that kept its state in `workspace`: its T, N, x and lengths again.
  void backward_from(int64_t T, int64_t N, py::handle x, py::handle lengths, py::handle ws, py::handle dy, int64_t col,
                     py::handle dhT, py::handle dcT, py::handle dx, bool dx_add, py::handle dh0, py::handle dc0,
                     py::handle gwih, py::handle gwhh, py::handle gbih, py::handle gbhh, bool accumulate) {
    const void* xp = input(x, T, N);
    const std::vector<int64_t> len = lengths_arg(lengths, T, N);
    if (ws.is_none()) value_error("workspace must be given");
    const float* wsp = workspace(ws, T, N, false);
    const grads g = gradient_args(T, N, dy, col, dhT, dcT, dx, dh0, dc0, gwih, gwhh, gbih, gbhh);
    trained = false;  // the layer's saved state now points into this workspace
    status s;
    {
      py::gil_scoped_release nogil;
      s = l.backward(T, N, xp, len.empty() ? nullptr : len.data(), wsp, g.dy, g.ldy, g.dhT, g.dcT, g.dx, dx_add,
                     g.dh0, g.dc0, g.a, g.b, g.c, g.d, accumulate);
    }
    check_status(s);
  }
};

// --- ISA, threads, introspection ---------------------------------------------------------------

isa isa_arg(const std::string& name) {
  isa level;
  if (!isa_from_name(name.c_str(), &level))
    value_error("unknown ISA '" + name + "'; levels are scalar, avx2, avx512, avx512_vnni, avx512_bf16 "
                "(available here: " + available_list() + ")");
  return level;
}

void set_isa(py::object name) {
  if (name.is_none()) return clear_isa_cap();
  if (!py::isinstance<py::str>(name)) type_error("set_isa expects an ISA name (str) or None");
  const std::string s = name.cast<std::string>();
  const isa level = isa_arg(s);
  const status st = set_isa_cap(level);
  if (st == status::isa_not_built)
    value_error("ISA '" + s + "' was left out of this build (the compiler lacked its flags); available: " +
                available_list());
  if (st != status::ok)
    value_error("ISA '" + s + "' is not supported by this CPU (detected: " + isa_name(detected_isa()) +
                "); available: " + available_list());
}

py::list available_isas() {
  py::list out;
  for (int i = 0; i < isa_count; ++i)
    if (isa_available((isa)i)) out.append(isa_name((isa)i));
  return out;
}

py::list ukernels() {
  py::list out;
  for (int i = 0; i < ukernel_count(); ++i) {
    const ukernel_info* u = ukernel_at(i);
    py::dict e;
    e["name"] = u->name;
    e["dtype"] = dtype_name(u->type);
    e["kp"] = u->kp;
    e["isa"] = isa_name(u->level);
    e["mr"] = u->mr;
    e["nr"] = u->nr;
    e["available"] = isa_available(u->level);
    out.append(e);
  }
  return out;
}

#ifndef BRGEMM_BUILD_FLAGS
#define BRGEMM_BUILD_FLAGS "{}"
#endif

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "brgemm's C++ core: ISA dispatch, the batch-reduce GEMM and its layer drivers";

  m.def("isa", [] { return std::string(isa_name(active_isa())); }, "The active ISA level.");
  m.def("detected_isa", [] { return std::string(isa_name(detected_isa())); },
        "The best ISA level this CPU and OS support.");
  m.def("available_isas", &available_isas, "Levels this CPU and build support, ascending.");
  m.def("built_isas", [] {
    py::list out;
    for (int i = 0; i < isa_count; ++i)
      if (isa_built((isa)i)) out.append(isa_name((isa)i));
    return out;
  });
  m.def("set_isa", &set_isa, py::arg("name"), "Cap the ISA level (None removes the cap).");
  m.def("set_num_threads", [](int n) {
    if (n < 1) value_error("n must be at least 1, got " + std::to_string(n));
    set_num_threads(n);
  }, py::arg("n"));
  m.def("get_num_threads", [] { return num_threads(); });
  m.def("ukernels", &ukernels, "Every microkernel of this build, reference first.");
  m.def("build_flags", [] { return std::string(BRGEMM_BUILD_FLAGS); }, "JSON: compiler flags per ISA.");

  py::class_<py_kernel>(m, "_Kernel", py::dynamic_attr())
      .def(py::init<int64_t, int64_t, int64_t, const std::string&, const std::string&, int64_t, int64_t,
                    int64_t, double, py::object, py::object>(),
           py::arg("m"), py::arg("n"), py::arg("k"), py::arg("dtype"), py::arg("batch"), py::arg("lda"),
           py::arg("ldb"), py::arg("ldc"), py::arg("beta"), py::arg("ukernel"), py::arg("epilogue") = py::none())
      .def_property_readonly("name", [](const py_kernel& k) { return std::string(k.kr->uk->name); })
      .def_property_readonly("isa", [](const py_kernel& k) { return std::string(isa_name(k.kr->uk->level)); })
      .def_property_readonly("mr", [](const py_kernel& k) { return k.kr->uk->mr; })
      .def_property_readonly("nr", [](const py_kernel& k) { return k.kr->uk->nr; })
      .def_property_readonly("kp", [](const py_kernel& k) { return k.kr->uk->kp; })
      .def_property_readonly("dtype", [](const py_kernel& k) { return std::string(dtype_name(k.d().type)); })
      .def_property_readonly("m", [](const py_kernel& k) { return k.d().m; })
      .def_property_readonly("n", [](const py_kernel& k) { return k.d().n; })
      .def_property_readonly("k", [](const py_kernel& k) { return k.d().k; })
      .def_property_readonly("lda", [](const py_kernel& k) { return k.d().lda; })
      .def_property_readonly("ldb", [](const py_kernel& k) { return k.d().ldb; })
      .def_property_readonly("ldc", [](const py_kernel& k) { return k.d().ldc; })
      .def_property_readonly("beta", [](const py_kernel& k) { return (double)k.d().beta; })
      .def_property_readonly("batch", [](const py_kernel& k) { return std::string(batch_name(k.d().batch)); })
      .def_property_readonly("epilogue", [](const py_kernel& k) { return k.ep_obj; })
      .def_property_readonly("handle", [](const py_kernel& k) { return (uintptr_t)k.kr; },
                             "Identity of the cached kernel: equal descriptors give equal handles.")
      .def("__call__", &py_kernel::call)
      .def("run_stride", &py_kernel::run_stride)
      .def("run_offset", &py_kernel::run_offset)
      .def("run_address", &py_kernel::run_address);

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
  m.def("activation", &activation_py, py::arg("x"), py::arg("name"), py::arg("out") = py::none());
  m.def("activation_backward", &activation_backward_py, py::arg("name"), py::arg("grad_y"), py::arg("x") = py::none(),
        py::arg("y") = py::none(), py::arg("out") = py::none());
  m.def("softmax", &softmax_py, py::arg("x"), py::arg("order"), py::arg("out") = py::none());
  m.def("softmax_backward", &softmax_backward_py, py::arg("order"), py::arg("x"), py::arg("y"), py::arg("grad_y"));
  m.def("ktanh_table", [] {
    py::list e, sh, b;
    for (int i = 0; i < 32; ++i) {
      e.append(ktanh::exponent[i]);
      sh.append(ktanh::shift[i]);
      b.append(ktanh::bias[i]);
    }
    return py::make_tuple(e, sh, b, ktanh::low_exp, ktanh::high_exp);
  }, "The K-TanH tables compiled in: (exponent, shift, bias, low_exp, high_exp).");
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
      .def("refresh", &py_linear::refresh, py::arg("weight"), py::arg("bias"))
      .def("sgd", &py_linear::sgd, py::arg("weight"), py::arg("bias"), py::arg("weight_grad"), py::arg("bias_grad"),
           py::arg("lr"), py::arg("stochastic"), py::arg("seed"))
      .def("forward", &py_linear::forward, py::arg("n"), py::arg("bn"), py::arg("xb"), py::arg("yb"), py::arg("zb"))
      .def("backward", &py_linear::backward, py::arg("n"), py::arg("bn"), py::arg("grad_out"), py::arg("yb"),
           py::arg("zb"), py::arg("xb"), py::arg("grad_in"), py::arg("weight_grad"), py::arg("bias_grad"),
           py::arg("accumulate"));
  m.def("conv_to_blocked", &conv_to_blocked_py, py::arg("x"), py::arg("xb"), py::arg("scale") = py::none(),
        py::arg("zero_point") = 0);
  m.def("conv_from_blocked", &conv_from_blocked_py, py::arg("xb"), py::arg("out"));
  m.def("conv_block", [](int64_t channels) {
    if (channels < 1) value_error("channels must be at least 1, got " + std::to_string(channels));
    return layers::conv_block(channels);
  }, py::arg("channels"));
  py::class_<py_conv>(m, "_Conv2d")
      .def(py::init([](const std::string& dt, int64_t c, int64_t k, int64_t r, int64_t s, int64_t sh, int64_t sw,
                       int64_t pt, int64_t pb, int64_t pl, int64_t pr, int64_t dh, int64_t dw, const std::string& act) {
             return new py_conv(dt, geometry(c, k, r, s, sh, sw, pt, pb, pl, pr, dh, dw), act);
           }),
           py::arg("dtype"), py::arg("in_channels"), py::arg("out_channels"), py::arg("r"), py::arg("s"),
           py::arg("stride_h"), py::arg("stride_w"), py::arg("pad_t"), py::arg("pad_b"), py::arg("pad_l"),
           py::arg("pad_r"), py::arg("dil_h"), py::arg("dil_w"), py::arg("activation"))
      .def_property_readonly("bc", [](const py_conv& l) { return l.cv.bc(); })
      .def_property_readonly("bk", [](const py_conv& l) { return l.cv.bk(); })
      .def_property_readonly("needs_z", [](const py_conv& l) { return l.cv.needs_z(); })
      .def("out_size", [](const py_conv& l, int64_t h, int64_t w) {
        return py::make_tuple(l.cv.geometry().out_h(h), l.cv.geometry().out_w(w));
      }, py::arg("h"), py::arg("w"))
      .def("refresh", &py_conv::refresh, py::arg("weight"), py::arg("bias"))
      .def("forward", &py_conv::forward, py::arg("n"), py::arg("h"), py::arg("w"), py::arg("xb"), py::arg("yb"),
           py::arg("zb"))
      .def("backward", &py_conv::backward, py::arg("n"), py::arg("h"), py::arg("w"), py::arg("grad_out"),
           py::arg("yb"), py::arg("zb"), py::arg("xb"), py::arg("grad_in"), py::arg("weight_grad"),
           py::arg("bias_grad"), py::arg("accumulate"));
  py::class_<py_qconv>(m, "_QuantizedConv2d")
      .def(py::init([](int64_t c, int64_t k, int64_t r, int64_t s, int64_t sh, int64_t sw, int64_t pt, int64_t pb,
                       int64_t pl, int64_t pr, int64_t dh, int64_t dw, const std::string& act, const std::string& out) {
             return new py_qconv(geometry(c, k, r, s, sh, sw, pt, pb, pl, pr, dh, dw), act, out);
           }),
           py::arg("in_channels"), py::arg("out_channels"), py::arg("r"), py::arg("s"), py::arg("stride_h"),
           py::arg("stride_w"), py::arg("pad_t"), py::arg("pad_b"), py::arg("pad_l"), py::arg("pad_r"),
           py::arg("dil_h"), py::arg("dil_w"), py::arg("activation"), py::arg("out_dtype"))
      .def_property_readonly("bc", [](const py_qconv& l) { return l.cv.bc(); })
      .def_property_readonly("bk", [](const py_qconv& l) { return l.cv.bk(); })
      .def("refresh", &py_qconv::refresh, py::arg("weight"), py::arg("weight_scale"), py::arg("bias"),
           py::arg("input_scale"), py::arg("input_zero_point"), py::arg("output_scale"), py::arg("output_zero_point"))
      .def("forward", &py_qconv::forward, py::arg("n"), py::arg("h"), py::arg("w"), py::arg("xb"), py::arg("yb"));
  py::class_<py_rnn>(m, "_RNN")
      .def(py::init<const std::string&, const std::string&, int64_t, int64_t, bool, bool>(), py::arg("cell"),
           py::arg("dtype"), py::arg("input_size"), py::arg("hidden_size"), py::arg("reverse"), py::arg("ktanh"))
      .def("refresh", &py_rnn::refresh, py::arg("weight_ih"), py::arg("weight_hh"), py::arg("bias_ih"),
           py::arg("bias_hh"))
      .def("workspace_size", [](const py_rnn& r, int64_t T, int64_t N) {
        py_rnn::positive(T, "T");
        py_rnn::positive(N, "N");
        return r.l.workspace_size(T, N);
      }, py::arg("T"), py::arg("N"))
      .def("forward", &py_rnn::forward, py::arg("T"), py::arg("N"), py::arg("x"), py::arg("lengths"), py::arg("h0"),
           py::arg("c0"), py::arg("y"), py::arg("col"), py::arg("hT"), py::arg("cT"), py::arg("train"),
           py::arg("workspace") = py::none())
      .def("backward_from", &py_rnn::backward_from, py::arg("T"), py::arg("N"), py::arg("x"), py::arg("lengths"),
           py::arg("workspace"), py::arg("grad_y"), py::arg("col"), py::arg("grad_hT"), py::arg("grad_cT"),
           py::arg("grad_x"), py::arg("dx_add"), py::arg("grad_h0"), py::arg("grad_c0"), py::arg("weight_ih_grad"),
           py::arg("weight_hh_grad"), py::arg("bias_ih_grad"), py::arg("bias_hh_grad"), py::arg("accumulate"))
      .def("backward", &py_rnn::backward, py::arg("grad_y"), py::arg("col"), py::arg("grad_hT"), py::arg("grad_cT"),
           py::arg("grad_x"), py::arg("dx_add"), py::arg("grad_h0"), py::arg("grad_c0"), py::arg("weight_ih_grad"),
           py::arg("weight_hh_grad"), py::arg("bias_ih_grad"), py::arg("bias_hh_grad"), py::arg("accumulate"));
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
  m.def("_set_gemm_blocking", &layers::set_gemm_blocking, py::arg("bn"), py::arg("kc"));

  m.def("measure_peak", [](const std::string& op, int threads, double seconds) {
    peak_op o;
    if (op == "fma_f32") o = peak_op::fma_f32;
    else if (op == "dot_bf16") o = peak_op::dot_bf16;
    else if (op == "dot_u8s8") o = peak_op::dot_u8s8;
    else value_error("op must be 'fma_f32', 'dot_bf16' or 'dot_u8s8', got '" + op + "'");
    if (threads < 1) value_error("threads must be at least 1");
    py::gil_scoped_release nogil;
    return measure_peak(o, threads, seconds);
  }, py::arg("op"), py::arg("threads"), py::arg("seconds") = 0.2);
  m.def("measure_bandwidth", [](int threads, int64_t bytes, int repeats) {
    if (threads < 1) value_error("threads must be at least 1");
    if (bytes < 4096) value_error("bytes must be at least 4096");
    py::gil_scoped_release nogil;
    return measure_bandwidth(threads, bytes, repeats);
  }, py::arg("threads"), py::arg("bytes") = int64_t(64) << 20, py::arg("repeats") = 5);
}
