// layers/bindings/kernel.cpp: brgemm.Kernel (_core._Kernel): a kernel described and dispatched
// once, then called on batches given by strides, offsets or addresses, every block checked to
// lie inside its array before the GIL is released.
#include "arrays.h"
#include "epilogue.h"

namespace brgemm::bindings {

namespace {

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

batch_kind batch_from_name(const std::string& s) {
  if (s == "stride") return batch_kind::stride;
  if (s == "offset") return batch_kind::offset;
  if (s == "address") return batch_kind::address;
  value_error("batch must be 'stride', 'offset' or 'address', got '" + s + "'");
}
const char* batch_name(batch_kind b) {
  return b == batch_kind::stride ? "stride" : b == batch_kind::offset ? "offset" : "address";
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
    if (dtype_is_integer(d.type) && beta != 0.0 && beta != 1.0)
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
    const element e = name[0] == 'A'   ? dtype_a(d().type)
                   : name[0] == 'B' ? dtype_b(d().type)
                                    : out_element(d().type, d().ep.out);
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

}  // namespace

void register_kernel(py::module_& m) {
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
}

}  // namespace brgemm::bindings
