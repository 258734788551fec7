// layers/bindings/isa.cpp: the machine as the Python side sees it — ISA levels (detected, built,
// available, the cap), threads, the microkernels of this build, the build's flags, and the
// peak and bandwidth measurements of `python -m brgemm peak`.
#include "arrays.h"

#ifndef BRGEMM_BUILD_FLAGS  // setup.py defines it: JSON of the compiler flags per ISA
#define BRGEMM_BUILD_FLAGS "{}"
#endif

namespace brgemm::bindings {

namespace {

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

}  // namespace

void register_isa(py::module_& m) {
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

  m.def("measure_peak", [](const std::string& op, int threads, double seconds) {
    peak_op o;
    if (op == "fma_f32") o = peak_op::fma_f32;
    else if (op == "dot_bf16") o = peak_op::dot_bf16;
    else if (op == "dot_u8s8") o = peak_op::dot_u8s8;
    else if (op == "dot_s16s16") o = peak_op::dot_s16s16;
    else value_error("op must be 'fma_f32', 'dot_bf16', 'dot_u8s8' or 'dot_s16s16', got '" + op + "'");
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

}  // namespace brgemm::bindings
