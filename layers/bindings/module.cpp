// layers/bindings/module.cpp: PYBIND11_MODULE(_core), the only symbol the extension exports. Each
// file of layers/bindings registers its own topic; every call validates its arguments (naming
// them in the exception), releases the GIL, and calls the core or a layer driver. The bindings
// are the only place that turns the core's status codes into Python exceptions.
#include "arrays.h"

namespace brgemm::bindings {
void register_isa(py::module_& m);       // isa.cpp: ISA levels, threads, ukernels, build, peak
void register_kernel(py::module_& m);    // kernel.cpp: _Kernel
void register_gemm(py::module_& m);      // gemm.cpp: pack_b, batch_reduce, gemm
void register_epilogue(py::module_& m);  // epilogue.cpp: _zero_point_offsets (for the tests)
void register_eltwise(py::module_& m);   // eltwise.cpp: activations, softmax, K-TanH table
void register_linear(py::module_& m);    // linear.cpp: _Linear, fc layout copies, same_bytes
void register_conv(py::module_& m);      // conv.cpp: _Conv2d, _QuantizedConv2d, conv layout copies
void register_rnn(py::module_& m);       // rnn.cpp: _RNN
void register_pool(py::module_& m);      // pool.cpp: max pooling, global average pooling (blocked)
void register_batch_norm(py::module_& m);  // batch_norm.cpp: batch norm (training) on blocked activations
void register_codebook(py::module_& m);  // codebook.cpp: shared-weight packing and product
void register_dfp(py::module_& m);       // dfp.cpp: DFP-16 conversions and the chunked int16 product
void register_dfp_conv(py::module_& m);  // dfp_conv.cpp: _DFPConv2d (DFP-16 convolution)
void register_ternary(py::module_& m);   // ternary.cpp: ternary (2-bit, residual levels) packing and product
}  // namespace brgemm::bindings

PYBIND11_MODULE(_core, m) {
  m.doc() = "brgemm's C++ core: ISA dispatch, the batch-reduce GEMM and its layer drivers";
  using namespace brgemm::bindings;
  register_isa(m);
  register_kernel(m);
  register_gemm(m);
  register_epilogue(m);
  register_eltwise(m);
  register_linear(m);
  register_conv(m);
  register_rnn(m);
  register_pool(m);
  register_batch_norm(m);
  register_codebook(m);
  register_dfp(m);
  register_dfp_conv(m);
  register_ternary(m);
}
