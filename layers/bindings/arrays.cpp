// layers/bindings/arrays.cpp: the helpers every file of the bindings shares (arrays.h): argument
// checks that raise Python exceptions naming the argument, numpy arrays checked against an
// element type, and the names the Python side passes.
#include "arrays.h"

#include <cmath>

namespace brgemm::bindings {

std::string str(py::handle h) { return py::str(h).cast<std::string>(); }

[[noreturn]] void value_error(const std::string& msg) { throw py::value_error(msg); }
[[noreturn]] void type_error(const std::string& msg) { throw py::type_error(msg); }

std::string available_list() {
  std::string s;
  for (int i = 0; i < isa_count; ++i)
    if (isa_available((isa)i)) s += (s.empty() ? "" : ", ") + std::string(isa_name((isa)i));
  return s;
}

// --- element types and arrays ----------------------------------------------------------------

const char* numpy_name(element e) {
  switch (e) {
    case element::f32: return "float32";
    case element::bf16: return "bfloat16 (ml_dtypes)";
    case element::u8: return "uint8";
    case element::s8: return "int8";
    case element::f16: return "float16";
    case element::s16: return "int16";
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
bool numpy_matches(const py::dtype& dt, element e) {
  if (dt.byteorder() == '>') return false;
  switch (e) {
    case element::f32: return dt.kind() == 'f' && dt.itemsize() == 4;
    case element::bf16: return is_bf16(dt);
    case element::u8: return dt.kind() == 'u' && dt.itemsize() == 1;
    case element::s8: return dt.kind() == 'i' && dt.itemsize() == 1;
    case element::f16: return dt.kind() == 'f' && dt.itemsize() == 2;
    case element::s16: return dt.kind() == 'i' && dt.itemsize() == 2;
    default: return dt.kind() == 'i' && dt.itemsize() == 4;
  }
}
// The numpy dtype of an element type (for allocating outputs).
py::dtype numpy_dtype(element e) {
  switch (e) {
    case element::bf16: {
      static py::object* bf16 = new py::object(py::module_::import("ml_dtypes").attr("bfloat16"));  // never freed
      return py::dtype::from_args(*bf16);
    }
    case element::u8: return py::dtype::of<uint8_t>();
    case element::s8: return py::dtype::of<int8_t>();
    case element::s32: return py::dtype::of<int32_t>();
    case element::f16: return py::dtype("float16");
    case element::s16: return py::dtype::of<int16_t>();
    default: return py::dtype::of<float>();
  }
}

// An array of element type e in native byte order and aligned; anything else is refused,
// never converted.
py::array typed_array(py::handle h, const char* name, element e) {
  if (!py::isinstance<py::array>(h))
    type_error(std::string(name) + " must be a numpy array of " + numpy_name(e) + ", got " +
               str(py::type::of(h).attr("__name__")));
  auto arr = py::reinterpret_borrow<py::array>(h);
  if (!numpy_matches(arr.dtype(), e))
    type_error(std::string(name) + " must have dtype " + numpy_name(e) + ", got " + str(arr.dtype()));
  const py::ssize_t size = arr.itemsize();
  if ((reinterpret_cast<uintptr_t>(arr.data()) % size) != 0)
    value_error(std::string(name) + " is not aligned to its " + std::to_string(size) + "-byte elements");
  for (py::ssize_t i = 0; i < arr.ndim(); ++i)
    if (arr.shape(i) > 1 && arr.strides(i) % size != 0)
      value_error(std::string(name) + " has a stride that is not a multiple of its element size");
  return arr;
}
py::array f32_array(py::handle h, const char* name) { return typed_array(h, name, element::f32); }

void require_writeable(const py::array& arr, const char* name) {
  if (!arr.writeable()) value_error(std::string(name) + " is read-only");
}

void require_nonempty(const py::array& arr, const char* name) {
  if (arr.size() == 0)
    value_error(std::string(name) + " has a zero-size dimension (shape " + str(arr.attr("shape")) +
                "); sizes must be at least 1");
}

// The byte range an array's elements span (strides may be negative).
span extent(const py::array& arr) {
  auto lo = reinterpret_cast<uintptr_t>(arr.data()), hi = lo;
  for (py::ssize_t i = 0; i < arr.ndim(); ++i) {
    const py::ssize_t step = (arr.shape(i) - 1) * arr.strides(i);
    (step < 0 ? lo : hi) += step;
  }
  return {lo, hi + (uintptr_t)arr.itemsize()};
}
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

void check_beta(double beta) {
  if (!std::isfinite(beta)) value_error("beta must be finite, got " + str(py::repr(py::float_(beta))));
  // The kernels compute with float32: a double beyond its range is checked here, before
  // any work, not by dispatch (gemm would already have added K chunks into C by then).
  if (!std::isfinite((float)beta))
    value_error("beta must be finite as a float32, got " + str(py::repr(py::float_(beta))));
}

// beta for a kernel dtype: finite, and 0 or 1 on the s32 accumulator of int8 and int16.
void check_beta_for(dtype t, double beta) {
  check_beta(beta);
  if (dtype_is_integer(t) && beta != 0.0 && beta != 1.0)
    value_error("beta must be 0 or 1 for " + std::string(dtype_name(t)) + ", got " + str(py::repr(py::float_(beta))));
}

// A float32 or bfloat16 array (which one is reported through *bf16), any strides.
py::array float_array(py::handle h, const char* name, bool* bf16) {
  if (!py::isinstance<py::array>(h))
    type_error(std::string(name) + " must be a numpy array of float32 or bfloat16 (ml_dtypes), got " +
               str(py::type::of(h).attr("__name__")));
  auto arr = py::reinterpret_borrow<py::array>(h);
  *bf16 = is_bf16(arr.dtype());
  if (!*bf16 && !numpy_matches(arr.dtype(), element::f32))
    type_error(std::string(name) + " must have dtype float32 or bfloat16 (ml_dtypes), got " + str(arr.dtype()));
  return typed_array(h, name, *bf16 ? element::bf16 : element::f32);
}

// The same, C-contiguous.
py::array eltwise_array(py::handle h, const char* name, bool* bf16) {
  py::array arr = float_array(h, name, bf16);
  if (!(arr.flags() & py::array::c_style)) value_error(std::string(name) + " must be C-contiguous");
  return arr;
}

// A C-contiguous, writeable-if-asked array of element type e holding exactly `elems` elements.
py::array exact_array(py::handle h, const char* name, element e, int64_t elems, bool write) {
  py::array a = typed_array(h, name, e);
  if (!(a.flags() & py::array::c_style)) value_error(std::string(name) + " must be C-contiguous");
  if (a.size() != elems)
    value_error(std::string(name) + " must hold " + std::to_string(elems) + " elements, got " +
                std::to_string(a.size()));
  if (write) require_writeable(a, name);
  return a;
}

py::array exact_f64_array(py::handle h, const char* name, int64_t elems, bool write) {
  if (!py::isinstance<py::array>(h)) type_error(std::string(name) + " must be a numpy array of float64");
  py::array a = py::reinterpret_borrow<py::array>(h);
  if (!a.dtype().equal(py::dtype::of<double>()))
    type_error(std::string(name) + " must have dtype float64, got " + std::string(py::str(a.dtype())));
  if (!(a.flags() & py::array::c_style)) value_error(std::string(name) + " must be C-contiguous");
  if (a.size() != elems)
    value_error(std::string(name) + " must hold " + std::to_string(elems) + " elements, got " + std::to_string(a.size()));
  if (write) require_writeable(a, name);
  return a;
}

plain_scratch plain_scratch_arrays(const py::array& x, const py::array& y, py::handle xb, py::handle yb,
                                   py::handle zb, element act, int64_t x_elems, int64_t y_elems) {
  plain_scratch s;
  s.xb = exact_array(xb, "xb", act, x_elems, true);
  s.yb = exact_array(yb, "yb", act, y_elems, true);
  if (!zb.is_none()) {
    py::array z = exact_array(zb, "zb", element::f32, y_elems, true);
    require_disjoint(z, s.yb, "zb", "yb");
    require_disjoint(z, y, "zb", "y");
    s.z = (float*)z.mutable_data();
  }
  require_disjoint(s.xb, x, "xb", "x");
  require_disjoint(s.yb, s.xb, "yb", "xb");
  require_disjoint(y, s.yb, "y", "yb");
  return s;
}

// --- names ------------------------------------------------------------------------------------

dtype dtype_from_name(const std::string& s) {
  if (s == "f32" || s == "float32") return dtype::f32;
  if (s == "bf16" || s == "bfloat16") return dtype::bf16;
  if (s == "u8s8") return dtype::u8s8;
  if (s == "s8s8") return dtype::s8s8;
  if (s == "f32f16") return dtype::f32f16;
  if (s == "s16s16") return dtype::s16s16;
  if (s == "s16s16f32") return dtype::s16s16f32;
  value_error("dtype must be 'f32', 'bf16', 'u8s8', 's8s8', 'f32f16', 's16s16' or 's16s16f32', got '" + s + "'");
}

dtype layer_dtype_arg(const std::string& dt) {
  if (dt == "float32") return dtype::f32;
  if (dt == "bfloat16") return dtype::bf16;
  value_error("dtype must be 'float32' or 'bfloat16', got '" + dt + "'");
}

activation activation_arg(const std::string& name) {
  static const char* names[] = {"none", "relu", "tanh", "sigmoid", "gelu", "swish", "ktanh", "ksigmoid", "kgelu",
                                "kswish", "relu6"};
  static_assert(sizeof names / sizeof names[0] == activation_count, "a name per activation");
  for (int i = 1; i < activation_count; ++i)
    if (name == names[i]) return (activation)i;
  value_error("activation must be one of relu, tanh, sigmoid, gelu, swish, ktanh, ksigmoid, kgelu, kswish, relu6; "
              "got '" + name + "'");
}

}  // namespace brgemm::bindings
