// csrc/bindings/epilogue.cpp: a brgemm.Epilogue read into the core's epilogue_desc (structure,
// checked once) and epilogue_args (arrays at every call), with the int8 zero-point arithmetic.
#include "epilogue.h"

#include <vector>

namespace brgemm::bindings {

namespace {

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

int32_t int_attr(py::handle obj, const char* name) { return obj.attr(name).cast<int32_t>(); }

}  // namespace

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

}  // namespace brgemm::bindings
