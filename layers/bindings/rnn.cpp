// layers/bindings/rnn.cpp: the recurrent layers (brgemm.nn.LSTM and GRU drive _core._RNN, one per
// layer and direction), with the layer's saved state kept in it or in a caller's workspace.
#include "arrays.h"

#include <stdexcept>

#include "../rnn.h"

namespace brgemm::bindings {

namespace {

struct py_rnn {
  layers::rnn_layer l;
  int64_t steps = 0, rows = 0;  // of the last training forward
  bool trained = false;
  py_rnn(const std::string& cell, const std::string& dt, int64_t input, int64_t hidden, bool reverse, bool ktanh)
      : l(cell_arg(cell), layer_dtype_arg(dt), positive(input, "input_size"), positive(hidden, "hidden_size"),
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

  // "auto", "dense" or "sparse" (rnn_layer::set_sparse_policy).
  void set_policy(const std::string& p) {
    if (p == "auto") l.set_sparse_policy(layers::sparse_policy::automatic);
    else if (p == "dense") l.set_sparse_policy(layers::sparse_policy::dense);
    else if (p == "sparse") l.set_sparse_policy(layers::sparse_policy::sparse);
    else value_error("packing must be 'auto', 'dense' or 'sparse', got '" + p + "'");
  }
  std::string policy() const {
    const auto p = l.policy();
    return p == layers::sparse_policy::automatic ? "auto" : p == layers::sparse_policy::dense ? "dense" : "sparse";
  }

  // The pruning masks (uint8, PyTorch's shapes, 0 = pruned) or None (rnn_layer::set_mask).
  void set_mask(py::handle mih, py::handle mhh) {
    const uint8_t* a = mih.is_none() ? nullptr
                                     : (const uint8_t*)exact_array(mih, "mask_ih", element::u8, gh() * l.input(), false).data();
    const uint8_t* b = mhh.is_none() ? nullptr
                                     : (const uint8_t*)exact_array(mhh, "mask_hh", element::u8, gh() * l.hidden(), false).data();
    py::gil_scoped_release nogil;
    l.set_mask(a, b);
  }

  bool refresh(py::handle wih, py::handle whh, py::handle bih, py::handle bhh) {
    const float* a = (const float*)exact_array(wih, "weight_ih", element::f32, gh() * l.input(), false).data();
    const float* b = (const float*)exact_array(whh, "weight_hh", element::f32, gh() * l.hidden(), false).data();
    if (bih.is_none() != bhh.is_none()) value_error("bias_ih and bias_hh must both be given or both be None");
    const float* c = bih.is_none() ? nullptr : (const float*)exact_array(bih, "bias_ih", element::f32, gh(), false).data();
    const float* d = bhh.is_none() ? nullptr : (const float*)exact_array(bhh, "bias_hh", element::f32, gh(), false).data();
    py::gil_scoped_release nogil;
    return l.refresh(a, b, c, d);
  }

  // (T, N, cols) float32 with this direction's H columns at col; returns its data at col.
  float* columns(py::handle h, const char* name, int64_t T, int64_t N, int64_t col, bool write, int64_t* ld) {
    py::array a = typed_array(h, name, element::f32);
    if (a.ndim() != 3 || a.shape(0) != T || a.shape(1) != N || col < 0 || col + l.hidden() > a.shape(2))
      value_error(std::string(name) + " must be (T, N, ≥ col + hidden_size) float32, got " + str(a.attr("shape")));
    if (!(a.flags() & py::array::c_style)) value_error(std::string(name) + " must be C-contiguous");
    if (write) require_writeable(a, name);
    *ld = a.shape(2);
    return (float*)a.data() + col;
  }
  // y of forward: (T, N, cols) float32, or bfloat16 for a bf16 layer (*bf16 says which).
  void* output(py::handle h, int64_t T, int64_t N, int64_t col, bool* bf16, int64_t* ld) {
    *bf16 = l.bf16() && py::isinstance<py::array>(h) && is_bf16(py::reinterpret_borrow<py::array>(h).dtype());
    if (!*bf16) return columns(h, "y", T, N, col, true, ld);
    py::array a = typed_array(h, "y", element::bf16);
    if (a.ndim() != 3 || a.shape(0) != T || a.shape(1) != N || col < 0 || col + l.hidden() > a.shape(2))
      value_error("y must be (T, N, ≥ col + hidden_size) float32 or bfloat16, got " + str(a.attr("shape")));
    if (!(a.flags() & py::array::c_style)) value_error("y must be C-contiguous");
    require_writeable(a, "y");
    *ld = a.shape(2);
    return (uint16_t*)a.mutable_data() + col;
  }
  const float* state(py::handle h, const char* name, int64_t N) {
    if (h.is_none()) return nullptr;
    return (const float*)exact_array(h, name, element::f32, N * l.hidden(), false).data();
  }
  float* state_out(py::handle h, const char* name, int64_t N) {
    if (h.is_none()) return nullptr;
    return (float*)exact_array(h, name, element::f32, N * l.hidden(), true).mutable_data();
  }

  const void* input(py::handle x, int64_t T, int64_t N) {
    positive(T, "T");
    positive(N, "N");
    return exact_array(x, "x", l.bf16() ? element::bf16 : element::f32, checked_madd(T * N, l.input(), 0, "x"), false).data();
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
    return (float*)exact_array(ws, "workspace", element::f32, l.workspace_size(T, N), write).mutable_data();
  }

  // With a workspace (workspace_size(T, N) float32), what backward needs is kept there, for
  // backward_from; without, in the layer, for backward.
  void forward(int64_t T, int64_t N, py::handle x, py::handle lengths, py::handle h0, py::handle c0, py::handle y,
               int64_t col, py::handle hT, py::handle cT, bool train, py::handle ws) {
    const void* xp = input(x, T, N);
    const std::vector<int64_t> len = lengths_arg(lengths, T, N);
    int64_t ldy;
    bool y16;
    void* yp = output(y, T, N, col, &y16, &ldy);
    const float* h0p = state(h0, "h0", N);
    const float* c0p = state(c0, "c0", N);
    float* hTp = state_out(hT, "hT", N);
    float* cTp = state_out(cT, "cT", N);
    if (!hTp) value_error("hT must be given");
    float* wsp = workspace(ws, T, N, true);
    status s;
    {
      py::gil_scoped_release nogil;
      s = l.forward(T, N, xp, len.empty() ? nullptr : len.data(), h0p, c0p, yp, y16, ldy, hTp, cTp, train, wsp);
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
                        : (float*)exact_array(dx, "grad_x", element::f32, T * N * l.input(), true).mutable_data();
    g.dh0 = state_out(dh0, "grad_h0", N);
    g.dc0 = state_out(dc0, "grad_c0", N);
    g.a = (float*)exact_array(gwih, "weight_ih_grad", element::f32, gh() * l.input(), true).mutable_data();
    g.b = (float*)exact_array(gwhh, "weight_hh_grad", element::f32, gh() * l.hidden(), true).mutable_data();
    g.c = gbih.is_none() ? nullptr : (float*)exact_array(gbih, "bias_ih_grad", element::f32, gh(), true).mutable_data();
    g.d = gbhh.is_none() ? nullptr : (float*)exact_array(gbhh, "bias_hh_grad", element::f32, gh(), true).mutable_data();
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

}  // namespace

void register_rnn(py::module_& m) {
  py::class_<py_rnn>(m, "_RNN")
      .def(py::init<const std::string&, const std::string&, int64_t, int64_t, bool, bool>(), py::arg("cell"),
           py::arg("dtype"), py::arg("input_size"), py::arg("hidden_size"), py::arg("reverse"), py::arg("ktanh"))
      .def("refresh", &py_rnn::refresh, py::arg("weight_ih"), py::arg("weight_hh"), py::arg("bias_ih"),
           py::arg("bias_hh"))
      .def_property("packing", &py_rnn::policy, &py_rnn::set_policy)
      .def_property_readonly("block_sparse", [](const py_rnn& r) { return r.l.block_sparse(); })
      .def_property_readonly("gradient_sparse", [](const py_rnn& r) { return r.l.gradient_sparse(); })
      .def("set_mask", &py_rnn::set_mask, py::arg("mask_ih"), py::arg("mask_hh"))
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
}

}  // namespace brgemm::bindings
