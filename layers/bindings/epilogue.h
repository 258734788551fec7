// layers/bindings/epilogue.h: a brgemm.Epilogue (Python) read for the kernel API — its structure
// once (what the kernel does, part of its description), its data at every call (arrays may be
// written in place between calls), and the int8 zero-point offsets of each call.
#pragma once
#include "arrays.h"

namespace brgemm::bindings {

// The Epilogue's structure for a kernel dtype and beta, checked.
struct epilogue_spec {
  epilogue_desc e;
  zero_points z;           // of A and B
  int32_t za_shifted = 0;  // z.a, +128 for s8 A (the kernels see a + 128)
};
epilogue_spec epilogue_structure(py::handle obj, dtype t, double beta, int64_t n);

// The Epilogue's arrays and values, checked against n; kept by reference (in-place writes
// reach later calls). colsum: B's column sums (int32 (n,) or (batch, n)) when the PackedB
// has them, else the Epilogue's b_colsum; needed only when the zero point of A (+128 for s8 A)
// is not 0.
struct epilogue_arrays {
  epilogue_args args;
  py::object bias, scale, colsum;
};
epilogue_arrays epilogue_arrays_of(py::handle obj, const epilogue_spec& s, int64_t n, py::handle colsum);

// The epilogue's data for one call: the arrays, and the int8 offsets of this batch (the core's
// zero_point_col_offsets and zero_point_row_offsets) in per-thread buffers (no allocation once
// warm; valid until this thread's next call).
epilogue_args epilogue_data(const epilogue_spec& s, const epilogue_arrays& ea, dtype t, int64_t m, int64_t n,
                            int64_t k, const batch_ref& batch, batch_kind kind, int64_t lda);

}  // namespace brgemm::bindings
