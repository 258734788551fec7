// layers/bindings/epilogue.cpp: a brgemm.Epilogue read into the core's epilogue_desc (structure,
// checked once) and epilogue_args (arrays at every call, and the int8 zero-point offsets the
// core computes for the call's batch).
#include "epilogue.h"

#include <vector>

namespace brgemm::bindings {

namespace {

int32_t int_attr(py::handle obj, const char* name) { return obj.attr(name).cast<int32_t>(); }

}  // namespace

epilogue_spec epilogue_structure(py::handle obj, dtype t, double beta, int64_t n) {
  epilogue_spec s;
  if (obj.is_none()) {
    s.za_shifted = zero_point_a_shifted(t, 0);
    s.e.col_offset = zero_points_need_col_offset(t, s.z);  // s8s8: the +128 shift is always compensated
    return s;
  }
  const int out = int_attr(obj, "_out"), act = int_attr(obj, "_act");
  s.e.out = (out_type)out;
  s.e.act = (activation)act;
  s.e.bias = !obj.attr("bias").is_none();
  py::object scale = obj.attr("scale");
  const bool s32_acc = dtype_is_integer(t);
  s.z.a = int_attr(obj, "a_zero_point");
  s.z.b = int_attr(obj, "b_zero_point");
  if (!dtype_is_int8(t) && (s.z.a || s.z.b)) value_error("epilogue: zero points are for int8 kernels");
  if (!s32_acc) {
    if (!scale.is_none())
      value_error("epilogue: scale is for int8 kernels and s16s16 (it dequantizes the int32 accumulator)");
  } else {
    if (!scale.is_none()) {
      const py::ssize_t size = py::reinterpret_borrow<py::array>(scale).size();
      if (size != 1 && size != n)
        value_error("epilogue: scale must hold 1 (per tensor) or n = " + std::to_string(n) +
                    " (per column) values, got " + std::to_string(size));
      s.e.scale = size == 1 ? scale_kind::tensor : scale_kind::column;
    }
    if (t == dtype::u8s8 && (s.z.a < 0 || s.z.a > 255))
      value_error("epilogue: a_zero_point must be in 0..255 for uint8 A, got " + std::to_string(s.z.a));
    if (t == dtype::s8s8 && (s.z.a < -128 || s.z.a > 127))
      value_error("epilogue: a_zero_point must be in -128..127 for int8 A, got " + std::to_string(s.z.a));
    s.za_shifted = zero_point_a_shifted(t, s.z.a);
    s.e.col_offset = zero_points_need_col_offset(t, s.z);
    s.e.row_offset = s.z.b != 0;
    if (s.e.out == out_type::acc && (s.e.bias || s.e.act != activation::none || s.e.scale != scale_kind::none))
      value_error("epilogue: bias, activation and scale need a float or requantized output: set out_dtype "
                  "('float32', 'bfloat16', 'uint8' or 'int8'); the int32 output takes zero points only");
  }
  const bool holds_acc = s.e.out == out_type::acc || (s.e.out == out_type::f32 && !s32_acc);
  if (beta != 0.0 && !holds_acc)
    value_error("beta must be 0 with this epilogue: its output (out_dtype) does not hold the accumulator, so "
                "there is no previous sum to scale");
  return s;
}

epilogue_arrays epilogue_arrays_of(py::handle obj, const epilogue_spec& s, int64_t n, py::handle colsum) {
  epilogue_arrays ea;
  if (!obj.is_none()) {
    if (s.e.bias) {
      py::array bias = typed_array(obj.attr("bias"), "bias", element::f32);
      if (bias.ndim() != 1 || bias.shape(0) != n)
        value_error("bias must be 1-D with n = " + std::to_string(n) + " values, got shape " + str(bias.attr("shape")));
      if (n > 1 && bias.strides(0) != 4) value_error("bias must be contiguous");
      ea.args.bias = (const float*)bias.data();
      ea.bias = bias;
    }
    if (s.e.scale != scale_kind::none) {
      py::array scale = typed_array(obj.attr("scale"), "scale", element::f32);
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
    py::array cs = typed_array(src, "b_colsum", element::s32);
    if ((cs.ndim() != 1 && cs.ndim() != 2) || cs.shape(cs.ndim() - 1) != n)
      value_error("b_colsum must have n = " + std::to_string(n) + " columns, got shape " + str(cs.attr("shape")));
    if (!(cs.flags() & py::array::c_style)) value_error("b_colsum must be C-contiguous");
    ea.colsum = cs;
  }
  return ea;
}


epilogue_args epilogue_data(const epilogue_spec& s, const epilogue_arrays& ea, dtype t, int64_t m, int64_t n,
                            int64_t k, const batch_ref& batch, batch_kind kind, int64_t lda) {
  epilogue_args args = ea.args;
  static thread_local std::vector<const int32_t*> colsums;
  static thread_local std::vector<int32_t> col, row;
  if (s.e.col_offset) {
    colsums.clear();
    if (s.za_shifted != 0) {  // the rows of b_colsum (checked C-contiguous with n columns)
      const py::array cs = py::reinterpret_borrow<py::array>(ea.colsum);
      const int32_t* p = (const int32_t*)cs.data();
      for (int64_t r = 0, rows = cs.size() / n; r < rows; ++r) colsums.push_back(p + r * n);
    }
    col.resize(n);
    zero_point_col_offsets(t, s.z, k * batch.count, colsums.data(), (int64_t)colsums.size(), n, col.data());
    args.col_offset = col.data();
  }
  if (s.e.row_offset) {
    row.resize(m);
    zero_point_row_offsets(t, s.z, batch, kind, m, k, lda, row.data());
    args.row_offset = row.data();
  }
  return args;
}

namespace {

// _zero_point_offsets(A, colsum, a_zero_point, b_zero_point, dtype): the core's offsets for A
// (batch, m, k) of the dtype's A type and colsum (rows, n), as (row (m,), col (n,)) int32, so
// that tests can check them against exact integers.
py::tuple zero_point_offsets_py(py::handle A, py::handle colsum, int32_t za, int32_t zb, const std::string& dt) {
  const dtype t = dtype_from_name(dt);
  if (!dtype_is_int8(t)) value_error("dtype must be 'u8s8' or 's8s8', got '" + dt + "'");
  py::array a = typed_array(A, "A", dtype_a(t)), cs = typed_array(colsum, "colsum", element::s32);
  if (a.ndim() != 3 || !(a.flags() & py::array::c_style)) value_error("A must be C-contiguous 3-D (batch, m, k)");
  if (cs.ndim() != 2 || !(cs.flags() & py::array::c_style)) value_error("colsum must be C-contiguous 2-D (rows, n)");
  const int64_t count = a.shape(0), m = a.shape(1), k = a.shape(2), rows = cs.shape(0), n = cs.shape(1);
  py::array_t<int32_t> row(m), col(n);
  std::vector<const int32_t*> sums;
  for (int64_t r = 0; r < rows; ++r) sums.push_back((const int32_t*)cs.data() + r * n);
  batch_ref batch;
  batch.count = count;
  batch.a = a.data();
  batch.stride_a = m * k;
  int32_t *rp = row.mutable_data(), *cp = col.mutable_data();
  {
    py::gil_scoped_release nogil;
    zero_point_row_offsets(t, {za, zb}, batch, batch_kind::stride, m, k, k, rp);
    zero_point_col_offsets(t, {za, zb}, k * count, sums.data(), rows, n, cp);
  }
  return py::make_tuple(row, col);
}

}  // namespace

void register_epilogue(py::module_& m) {
  m.def("_zero_point_offsets", &zero_point_offsets_py, py::arg("A"), py::arg("colsum"), py::arg("a_zero_point"),
        py::arg("b_zero_point"), py::arg("dtype"));
}

}  // namespace brgemm::bindings
