// layers/bindings/arrays.h: what every file of the bindings shares. Errors are Python exceptions
// that name the argument; arrays are checked against an element type and refused, never
// converted; names the Python side passes (dtype, activation) are parsed here once.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>  // in every file: one set of type casters for the whole module

#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "brgemm/brgemm.h"

namespace brgemm::bindings {

namespace py = pybind11;

// --- exceptions ------------------------------------------------------------------------------
std::string str(py::handle h);
[[noreturn]] void value_error(const std::string& msg);
[[noreturn]] void type_error(const std::string& msg);
std::string available_list();     // the ISA levels available here, for error messages
void check_status(status s);      // ok, or a ValueError with the core's message

// --- element types (brgemm/types.h) as numpy sees them ----------------------------------------
// bf16 is ml_dtypes.bfloat16 (numpy kind 'V', 2 bytes), f16 numpy's float16.
const char* numpy_name(element e);                  // for messages: float32, bfloat16 (ml_dtypes), …
bool is_bf16(const py::dtype& dt);
bool numpy_matches(const py::dtype& dt, element e);  // native byte order only
py::dtype numpy_dtype(element e);                   // for allocating outputs

// --- arrays ------------------------------------------------------------------------------------
// An array of element type e in native byte order and aligned; anything else is refused.
py::array typed_array(py::handle h, const char* name, element e);
py::array f32_array(py::handle h, const char* name);
// A float32 or bfloat16 array (which one is reported through *bf16), any strides.
py::array float_array(py::handle h, const char* name, bool* bf16);
// The same, C-contiguous.
py::array eltwise_array(py::handle h, const char* name, bool* bf16);
// A C-contiguous, writeable-if-asked array of element type e holding exactly `elems` elements.
py::array exact_array(py::handle h, const char* name, element e, int64_t elems, bool write);
// The same for float64 (sums the layers accumulate in double, not a kernel element type).
py::array exact_f64_array(py::handle h, const char* name, int64_t elems, bool write);

void require_writeable(const py::array& arr, const char* name);
void require_nonempty(const py::array& arr, const char* name);

// The byte range an array's elements span (strides may be negative).
struct span {
  uintptr_t lo, hi;
};
span extent(const py::array& arr);
inline bool overlaps(span a, span b) { return a.lo < b.hi && b.lo < a.hi; }
void require_disjoint(const py::array& c, const py::array& x, const char* cname, const char* xname);

// The scratch arrays of a plain-layout layer call (blocked input xb, blocked output yb, optional
// float32 pre-activation zb), checked once for the conv and linear layers alike: exact sizes,
// writeable, and disjoint from each other and from the caller's x and y.
struct plain_scratch {
  py::array xb, yb;
  float* z = nullptr;
};
plain_scratch plain_scratch_arrays(const py::array& x, const py::array& y, py::handle xb, py::handle yb,
                                   py::handle zb, element act, int64_t x_elems, int64_t y_elems);

// Leading dimension (in elements) of a 2-D view given by (rows, row stride); rows are
// required to run forward with contiguous elements.
int64_t leading_dim(const py::array& arr, int row_axis, int64_t width, const char* name);
// a·b + c with overflow reported as "too large" for the named argument.
int64_t checked_madd(int64_t a, int64_t b, int64_t c, const char* name);

// --- scalars and names -------------------------------------------------------------------------
int64_t index_arg(py::handle h, const char* name);
void check_beta(double beta);
// beta for a kernel dtype: finite, and 0 or 1 on the s32 accumulator of int8.
void check_beta_for(dtype t, double beta);
dtype dtype_from_name(const std::string& s);          // f32/float32, bf16/bfloat16, u8s8, s8s8, f32f16
dtype layer_dtype_arg(const std::string& dt);         // a training layer's: float32 or bfloat16
activation activation_arg(const std::string& name);   // any but none

}  // namespace brgemm::bindings
