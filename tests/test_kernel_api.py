"""Bad input for every argument of every public function: the exception type (TypeError for
a wrong type or dtype, ValueError for a wrong shape or value) and a message that names the
argument. Also the call forms that must work, the Kernel's properties and the kernel cache."""

import re
import subprocess
import sys
import traceback

import numpy as np
import pytest

import brgemm
from brgemm.testing import assert_close, make_problem, random_f32
from conftest import ISA_LEVELS, UKERNELS, restore_isa, subprocess_env

M, N, K = 3, 5, 4  # the kernel most error tests use: A needs 12 elements, B 20, C 15
A_EXT, B_EXT, C_EXT = (M - 1) * K + K, (K - 1) * N + N, (M - 1) * N + N


def names(*args):
    """A regex that requires each argument name as a whole token, in this order."""
    parts = [rf"(?<![\w\[]){re.escape(a)}(?![\w])" for a in args]
    return ".*".join(parts)


def misaligned(size):
    """A float32 view at byte offset 1 of a uint8 buffer (numpy allows it; the kernel must not)."""
    raw = np.zeros(4 * size + 1, dtype=np.uint8)
    view = raw[1:].view(np.float32)
    assert view.ctypes.data % 4 == 1
    return view


def readonly(a):
    a = a.copy()
    a.setflags(write=False)
    return a


@pytest.fixture
def ops(rng):
    """Valid flat operands for the M×N×K kernel with a batch of 2."""
    return dict(A=random_f32(M * K + A_EXT, rng), B=random_f32(K * N + B_EXT, rng),
                C=random_f32(C_EXT, rng))


# --- the Kernel constructor ------------------------------------------------------------------

@pytest.mark.parametrize("arg", ["m", "n", "k"])
@pytest.mark.parametrize("value, exc", [
    (0, ValueError), (-1, ValueError), (-(2 ** 40), ValueError),
    (2.0, TypeError), ("3", TypeError), (None, TypeError), (np.float32(3), TypeError),
    (2 ** 61, ValueError),            # fits int64, but no buffer can be that large
    (2 ** 64, ValueError),  # does not fit int64
])
def test_kernel_size_args(arg, value, exc):
    sizes = dict(m=M, n=N, k=K)
    sizes[arg] = value
    with pytest.raises(exc, match=names(arg)):
        brgemm.Kernel(sizes["m"], sizes["n"], sizes["k"])


def test_kernel_sizes_accept_integers_of_any_kind():
    kernel = brgemm.Kernel(np.int64(M), np.int32(N), np.uint8(K))
    assert (kernel.m, kernel.n, kernel.k) == (M, N, K)


@pytest.mark.parametrize("arg, too_small", [("lda", K - 1), ("ldb", N - 1), ("ldc", N - 1)])
@pytest.mark.parametrize("how", ["below_minimum", "zero", "negative", "float", "str", "huge"])
def test_kernel_leading_dims(arg, too_small, how):
    value, exc = {
        "below_minimum": (too_small, ValueError),
        "zero": (0, ValueError),
        "negative": (-1, ValueError),
        "float": (7.0, TypeError),
        "str": ("7", TypeError),
        "huge": (2 ** 64, ValueError),
    }[how]
    with pytest.raises(exc, match=names(arg)):
        brgemm.Kernel(M, N, K, **{arg: value})


@pytest.mark.parametrize("m, n, k, arg", [
    (2 ** 40, 1, 2 ** 30, "lda"),  # lda = k: m·lda overflows
    (1, 2 ** 30, 2 ** 40, "ldb"),  # ldb = n: k·ldb overflows
    (2 ** 40, 2 ** 30, 1, "ldc"),  # ldc = n: m·ldc overflows
])
def test_kernel_size_products_overflow(m, n, k, arg):
    with pytest.raises(ValueError, match=names(arg)):
        brgemm.Kernel(m, n, k)


def test_kernel_leading_dim_defaults_and_minimums():
    kernel = brgemm.Kernel(M, N, K)
    assert (kernel.lda, kernel.ldb, kernel.ldc) == (K, N, N)
    kernel = brgemm.Kernel(M, N, K, lda=K, ldb=N, ldc=N)
    assert (kernel.lda, kernel.ldb, kernel.ldc) == (K, N, N)
    kernel = brgemm.Kernel(M, N, K, lda=K + 9, ldb=N + 3, ldc=N + 1)
    assert (kernel.lda, kernel.ldb, kernel.ldc) == (K + 9, N + 3, N + 1)


@pytest.mark.parametrize("beta, exc", [
    (float("nan"), ValueError), (float("inf"), ValueError), (-float("inf"), ValueError),
    (1e39, ValueError),  # finite as a double, inf as the kernel's float32
    ("0.5", TypeError), (None, TypeError), (True, TypeError), (1 + 0j, TypeError),
    (np.array([0.5]), TypeError),
])
def test_kernel_beta(beta, exc):
    with pytest.raises(exc, match=names("beta")):
        brgemm.Kernel(M, N, K, beta=beta)


@pytest.mark.parametrize("beta", [0, 0.0, 1, 0.5, -2.25, np.float32(0.5), np.float64(3.0), np.int16(2)])
def test_kernel_beta_accepts_real_numbers(beta):
    assert brgemm.Kernel(M, N, K, beta=beta).beta == float(np.float32(beta))


@pytest.mark.parametrize("dtype, exc", [
    ("f64", ValueError), ("float64", ValueError), (np.float64, ValueError), ("s8u8", ValueError),
    (np.int8, ValueError), ("", ValueError),
    (3, TypeError), (object(), TypeError),
])
def test_kernel_dtype(dtype, exc):
    with pytest.raises(exc, match=names("dtype")):
        brgemm.Kernel(M, N, K, dtype=dtype)


@pytest.mark.parametrize("dtype", ["f32", "float32", np.float32, np.dtype(np.float32)])
def test_kernel_dtype_accepts_f32(dtype):
    assert brgemm.Kernel(M, N, K, dtype=dtype).dtype == "f32"


@pytest.mark.parametrize("batch, exc", [
    ("strided", ValueError), ("", ValueError), ("STRIDE", ValueError),
    (0, TypeError), (None, TypeError), (b"stride", TypeError),
])
def test_kernel_batch(batch, exc):
    with pytest.raises(exc, match=names("batch")):
        brgemm.Kernel(M, N, K, batch=batch)


@pytest.mark.parametrize("ukernel, exc", [
    ("nope", ValueError), ("", ValueError), ("ukernel_f32_6x64", ValueError),
    ("ukernel_f32_4x16__avx2", ValueError),  # a plausible name that is not in the table
    (3, TypeError), (b"ukernel_f32_4x16__scalar", TypeError),
])
def test_kernel_ukernel(ukernel, exc):
    with pytest.raises(exc, match=names("ukernel")):
        brgemm.Kernel(M, N, K, ukernel=ukernel)


def test_kernel_ukernel_above_active_isa():
    above = [u for u in UKERNELS if u["isa"] != "scalar" and u["available"]]
    if not above:
        pytest.skip("only the scalar ukernel can run here: nothing is above the scalar cap")
    brgemm.set_isa("scalar")
    try:
        for u in above:
            with pytest.raises(ValueError, match=names("ukernel") + ".*" + re.escape(u["isa"])):
                brgemm.Kernel(M, N, K, ukernel=u["name"])
    finally:
        restore_isa()


def test_kernel_properties(ukernel):
    u = ukernel
    kernel = brgemm.Kernel(7, 9, 11, batch="offset", lda=13, ldb=10, ldc=12, beta=0.25,
                           ukernel=u["name"])
    assert (kernel.name, kernel.isa, kernel.mr, kernel.nr) == (u["name"], u["isa"], u["mr"], u["nr"])
    assert (kernel.m, kernel.n, kernel.k, kernel.lda, kernel.ldb, kernel.ldc) == (7, 9, 11, 13, 10, 12)
    assert kernel.beta == 0.25 and kernel.batch == "offset" and kernel.dtype == "f32"
    assert u["name"] in repr(kernel)


@pytest.mark.parametrize("bad", [dict(m=0), dict(k=2 ** 64), dict(dtype=3), dict(batch=0),
                                 dict(lda=2), dict(beta=float("nan")), dict(ukernel="nope")],
                         ids=["m", "k", "dtype", "batch", "lda", "beta", "ukernel"])
def test_failed_kernel_is_not_reachable_from_the_traceback(bad):
    """A Kernel whose constructor failed has no C++ object behind it; if a traceback frame
    kept it, printing the traceback with locals (pytest, debuggers) would crash."""
    with pytest.raises((TypeError, ValueError)) as info:
        brgemm.Kernel(**{**dict(m=M, n=N, k=K), **bad})
    for frame, _ in traceback.walk_tb(info.value.__traceback__):
        assert not any(isinstance(v, brgemm.Kernel) for v in frame.f_locals.values()), frame


def test_failed_kernel_traceback_with_locals_does_not_crash():
    code = ("import traceback, brgemm\n"
            "try:\n    brgemm.Kernel(0, 1, 1)\n"
            "except ValueError as e:\n"
            "    tb = traceback.TracebackException.from_exception(e, capture_locals=True)\n"
            "    print(''.join(tb.format()))\n")
    r = subprocess.run([sys.executable, "-c", code], env=subprocess_env(), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, f"child exited with {r.returncode}: {r.stderr[-2000:]}"
    assert "m must be at least 1" in r.stdout


# --- the kernel cache ------------------------------------------------------------------------

def test_kernel_cache_same_descriptor_same_handle():
    a = brgemm.Kernel(7, 9, 11, batch="offset", lda=13, beta=0.5)
    b = brgemm.Kernel(7, 9, 11, batch="offset", lda=13, beta=np.float32(0.5), ldb=9, ldc=None)
    assert a is not b
    assert a.handle == b.handle


@pytest.mark.parametrize("change", [
    dict(beta=0.25), dict(beta=1.0), dict(beta=-0.5), dict(batch="stride"), dict(batch="address"),
    dict(lda=14), dict(ldb=10), dict(ldc=10), dict(m=8), dict(n=10), dict(k=12),
])
def test_kernel_cache_different_descriptor_different_handle(change):
    base = dict(m=7, n=9, k=11, batch="offset", lda=13, beta=0.5)
    a = brgemm.Kernel(**base)
    b = brgemm.Kernel(**{**base, **change})
    assert a.handle != b.handle


def test_kernel_cache_different_ukernel_different_handle():
    avail = [u for u in UKERNELS if u["available"]]
    if len(avail) < 2:
        pytest.skip("only one ukernel can run here")
    brgemm.set_isa(None)  # any BRGEMM_ISA cap would refuse the higher ukernels
    try:
        handles = {brgemm.Kernel(5, 5, 5, ukernel=u["name"]).handle for u in avail}
        # Forcing the ukernel dispatch would pick gives the very kernel dispatch returns.
        best = brgemm.Kernel(5, 5, 5)
        assert brgemm.Kernel(5, 5, 5, ukernel=best.name).handle == best.handle
    finally:
        restore_isa()
    assert len(handles) == len(avail)


def test_kernel_cache_follows_the_active_isa():
    levels = brgemm.available_isas()
    if len(levels) < 2 or "avx2" not in levels:
        pytest.skip("needs scalar and a SIMD level with a different ukernel")
    try:
        brgemm.set_isa("scalar")
        low = brgemm.Kernel(5, 5, 5)
        brgemm.set_isa(levels[-1])
        high = brgemm.Kernel(5, 5, 5)
    finally:
        restore_isa()
    assert low.isa == "scalar" and high.isa != "scalar"
    assert low.handle != high.handle


# --- calls: what must work -------------------------------------------------------------------

def test_call_returns_c_and_accepts_any_buffer_shape(ops):
    kernel = brgemm.Kernel(M, N, K)
    A = ops["A"][:A_EXT].reshape(M, K)
    B = ops["B"][:B_EXT].reshape(K, N)
    C = np.full((M, N), np.nan, dtype=np.float32)
    out = kernel(A, B, C, 1)
    assert out is C
    assert_close(C, [A], [B])
    # Keyword arguments, and strides given explicitly.
    C2 = np.empty_like(C)
    kernel(A=A, B=B, C=C2, count=1, stride_a=0, stride_b=0)
    np.testing.assert_array_equal(C2, C)


def test_call_accepts_disjoint_slices_of_one_buffer(rng):
    buf = random_f32(A_EXT + B_EXT + C_EXT, rng)
    A, B, C = buf[:A_EXT], buf[A_EXT:A_EXT + B_EXT], buf[A_EXT + B_EXT:]
    brgemm.Kernel(M, N, K)(A, B, C, 1)
    assert_close(C.reshape(M, N), [A.reshape(M, K)], [B.reshape(K, N)])


def test_offsets_accept_lists_and_any_integer_dtype(rng):
    p = make_problem(M, N, K, rng=rng, batch="offset", count=3)
    kernel = brgemm.Kernel(M, N, K, batch="offset")
    for conv in (list, lambda o: o.astype(np.int32), lambda o: o.astype(np.uint16), tuple):
        p.c[:] = p.c0
        kernel(p.a, p.b, p.c, conv(p.args[0]), conv(p.args[1]))
        p.check()


def test_address_accepts_tuples(rng):
    p = make_problem(M, N, K, rng=rng, batch="address", count=2)
    brgemm.Kernel(M, N, K, batch="address")(tuple(p.a), tuple(p.b), p.c)
    p.check()


# --- calls: array arguments, every call form ---------------------------------------------------

BAD_ARRAYS = {
    "float64": (lambda a: a.astype(np.float64), TypeError),
    "float16": (lambda a: a.astype(np.float16), TypeError),
    "int32": (lambda a: a.astype(np.int32), TypeError),
    "int64": (lambda a: a.astype(np.int64), TypeError),
    "big_endian": (lambda a: a.astype(">f4"), TypeError),
    "list": (lambda a: a.tolist(), TypeError),
    "scalar": (lambda a: 1.0, TypeError),
    "none": (lambda a: None, TypeError),
    "non_contiguous": (lambda a: np.repeat(a, 2)[::2], ValueError),
    "non_contiguous_2d": (lambda a: np.repeat(a, 2).reshape(-1, 2)[:, 0:1], ValueError),
    "fortran_2d": (lambda a: np.asfortranarray(np.repeat(a, 2).reshape(-1, 2)), ValueError),
    "misaligned": (lambda a: misaligned(a.size), ValueError),
    "too_small": (lambda a: a[:-1].copy(), ValueError),
    "empty": (lambda a: a[:0].copy(), ValueError),
}


def _bad(name, a):
    make, exc = BAD_ARRAYS[name]
    return make(a), exc


def _stride_args(ops, count=1):
    return [ops["A"][: (count - 1) * M * K + A_EXT], ops["B"][: (count - 1) * K * N + B_EXT],
            ops["C"], count]


@pytest.mark.parametrize("bad", list(BAD_ARRAYS))
@pytest.mark.parametrize("which", [0, 1, 2], ids=["A", "B", "C"])
def test_stride_call_bad_arrays(ops, which, bad):
    args = _stride_args(ops, count=2)
    args[which], exc = _bad(bad, args[which])
    with pytest.raises(exc, match=names("ABC"[which])):
        brgemm.Kernel(M, N, K)(*args)


@pytest.mark.parametrize("bad", list(BAD_ARRAYS))
@pytest.mark.parametrize("which", [0, 1, 2], ids=["A", "B", "C"])
def test_offset_call_bad_arrays(ops, which, bad):
    args = [ops["A"][:A_EXT], ops["B"][:B_EXT], ops["C"], np.array([0, 0]), np.array([0, 0])]
    args[which], exc = _bad(bad, args[which])
    with pytest.raises(exc, match=names("ABC"[which])):
        brgemm.Kernel(M, N, K, batch="offset")(*args)


@pytest.mark.parametrize("bad", list(BAD_ARRAYS))
@pytest.mark.parametrize("which", ["A[1]", "B[0]", "C"])
def test_address_call_bad_arrays(ops, which, bad):
    A = [ops["A"][:A_EXT].copy(), ops["A"][:A_EXT].copy()]
    B = [ops["B"][:B_EXT].copy(), ops["B"][:B_EXT].copy()]
    C = ops["C"]
    if which == "A[1]":
        A[1], exc = _bad(bad, A[1])
    elif which == "B[0]":
        B[0], exc = _bad(bad, B[0])
    else:
        C, exc = _bad(bad, C)
    with pytest.raises(exc, match=names(which)):
        brgemm.Kernel(M, N, K, batch="address")(A, B, C)


@pytest.mark.parametrize("batch", ["stride", "offset", "address"])
def test_readonly_c(ops, batch):
    C = readonly(ops["C"])
    kernel = brgemm.Kernel(M, N, K, batch=batch)
    with pytest.raises(ValueError, match=names("C") + ".*read-only"):
        if batch == "stride":
            kernel(ops["A"], ops["B"], C, 1)
        elif batch == "offset":
            kernel(ops["A"], ops["B"], C, [0], [0])
        else:
            kernel([ops["A"]], [ops["B"]], C)


def test_readonly_inputs_are_fine(ops):
    C = ops["C"].copy()
    brgemm.Kernel(M, N, K)(readonly(ops["A"]), readonly(ops["B"]), C, 2)
    A, B = ops["A"], ops["B"]
    assert_close(C.reshape(M, N), [A[:M * K].reshape(M, K), A[M * K:].reshape(M, K)],
                 [B[:K * N].reshape(K, N), B[K * N:].reshape(K, N)])


@pytest.mark.parametrize("batch", ["stride", "offset", "address"])
@pytest.mark.parametrize("alias", ["A", "B"])
@pytest.mark.parametrize("how", ["same", "partial_overlap"])
def test_c_aliasing_an_input(rng, batch, alias, how):
    buf = random_f32(200, rng)
    A, B = random_f32(A_EXT, rng), random_f32(B_EXT, rng)
    inputs = dict(A=A, B=B)
    if how == "same":
        inputs[alias] = buf[:max(A_EXT, B_EXT, C_EXT)]
        C = inputs[alias]
    else:  # C starts inside the input's last elements
        inputs[alias] = buf[:max(A_EXT, B_EXT)]
        C = buf[max(A_EXT, B_EXT) - 1: max(A_EXT, B_EXT) - 1 + C_EXT]
    kernel = brgemm.Kernel(M, N, K, batch=batch)
    label = alias if batch != "address" else f"{alias}[0]"
    with pytest.raises(ValueError, match=names("C") + ".*" + names(label)):
        if batch == "stride":
            kernel(inputs["A"], inputs["B"], C, 1)
        elif batch == "offset":
            kernel(inputs["A"], inputs["B"], C, [0], [0])
        else:
            kernel([inputs["A"]], [inputs["B"]], C)


# --- calls: count, strides, offsets, address lists ---------------------------------------------

@pytest.mark.parametrize("count, exc", [
    (-1, ValueError), (-(2 ** 40), ValueError), (1.0, TypeError), ("1", TypeError), (None, TypeError),
    (np.array([1, 2]), TypeError), (2 ** 64, ValueError),
])
def test_stride_count(ops, count, exc):
    with pytest.raises(exc, match=names("count")):
        brgemm.Kernel(M, N, K)(ops["A"], ops["B"], ops["C"], count)


def test_stride_count_missing(ops):
    with pytest.raises(TypeError, match=names("count")):
        brgemm.Kernel(M, N, K)(ops["A"], ops["B"], ops["C"])


def test_stride_count_out_of_range(ops):
    """ops holds blocks for a batch of 2: a count of 3 would read past A and B."""
    kernel = brgemm.Kernel(M, N, K)
    kernel(ops["A"], ops["B"], ops["C"], 2)  # fits exactly
    with pytest.raises(ValueError, match=names("A") + ".*too small"):
        kernel(ops["A"], ops["B"], ops["C"], 3)
    with pytest.raises(ValueError, match=names("B") + ".*too small"):
        kernel(ops["A"], ops["B"][:-1], ops["C"], 2)


@pytest.mark.parametrize("arg", ["stride_a", "stride_b"])
@pytest.mark.parametrize("value, exc", [
    (-1, ValueError), (1.5, TypeError), ("3", TypeError), (np.float64(3), TypeError),
    (2 ** 62, ValueError),  # (count - 1)·stride + block overflows int64
    (2 ** 64, ValueError),
])
def test_stride_strides(ops, arg, value, exc):
    other = "stride_b" if arg == "stride_a" else "stride_a"  # 0: every block is the first
    with pytest.raises(exc, match=names(arg)):
        brgemm.Kernel(M, N, K)(ops["A"], ops["B"], ops["C"], 3, **{arg: value, other: 0})


@pytest.mark.parametrize("arg, array", [("stride_a", "A"), ("stride_b", "B")])
def test_stride_strides_out_of_range(ops, arg, array):
    default = M * K if arg == "stride_a" else K * N
    kernel = brgemm.Kernel(M, N, K)
    kernel(ops["A"], ops["B"], ops["C"], 2, **{arg: default})
    with pytest.raises(ValueError, match=names(array) + ".*too small"):
        kernel(ops["A"], ops["B"], ops["C"], 2, **{arg: default + 1})


@pytest.mark.parametrize("arg", ["offsets_a", "offsets_b"])
@pytest.mark.parametrize("value, exc", [
    ([0.0, 1.0], TypeError), (np.array([0.0, 0.0], dtype=np.float32), TypeError),
    ([True, False], TypeError), (None, TypeError), (["0", "1"], TypeError),
    ([[0, 0]], ValueError), (np.int64(0), ValueError),
    ([0, -1], ValueError), ([0, -(2 ** 40)], ValueError),
    ([0, 10 ** 6], ValueError), ([0, 2 ** 63 - 1], ValueError),
    (np.array([0, 2 ** 64 - 1], dtype=np.uint64), ValueError),
    ([0], ValueError),  # length differs from the other list
])
def test_offset_offsets(ops, arg, value, exc):
    offs = dict(offsets_a=[0, 0], offsets_b=[0, 0])
    offs[arg] = value
    with pytest.raises(exc, match=names(arg)):
        brgemm.Kernel(M, N, K, batch="offset")(ops["A"], ops["B"], ops["C"], offs["offsets_a"],
                                                offs["offsets_b"])


@pytest.mark.parametrize("arg, array", [("offsets_a", "A"), ("offsets_b", "B")])
def test_offset_last_valid_and_first_invalid(ops, arg, array):
    size = ops[array].size
    ext = A_EXT if array == "A" else B_EXT
    offs = dict(offsets_a=[0], offsets_b=[0])
    kernel = brgemm.Kernel(M, N, K, batch="offset")
    offs[arg] = [size - ext]
    kernel(ops["A"], ops["B"], ops["C"], offs["offsets_a"], offs["offsets_b"])
    offs[arg] = [size - ext + 1]
    with pytest.raises(ValueError, match=re.escape(f"{arg}[0]")):
        kernel(ops["A"], ops["B"], ops["C"], offs["offsets_a"], offs["offsets_b"])


@pytest.mark.parametrize("missing", ["offsets_a", "offsets_b"])
def test_offset_missing_offsets(ops, missing):
    kernel = brgemm.Kernel(M, N, K, batch="offset")
    kw = dict(offsets_a=[0], offsets_b=[0])
    del kw[missing]
    with pytest.raises(TypeError, match=names(missing)):
        kernel(ops["A"], ops["B"], ops["C"], **kw)


@pytest.mark.parametrize("value", ["A", "ab", 3, None])
@pytest.mark.parametrize("which", ["A", "B"])
def test_address_not_a_sequence(ops, which, value):
    lists = dict(A=[ops["A"][:A_EXT]], B=[ops["B"][:B_EXT]])
    lists[which] = value
    with pytest.raises(TypeError, match=names(which)):
        brgemm.Kernel(M, N, K, batch="address")(lists["A"], lists["B"], ops["C"])


@pytest.mark.parametrize("which", ["A", "B"])
def test_address_array_instead_of_list(ops, which):
    lists = dict(A=[ops["A"][:A_EXT]], B=[ops["B"][:B_EXT]])
    lists[which] = ops[which]
    with pytest.raises(TypeError, match=names(which)):
        brgemm.Kernel(M, N, K, batch="address")(lists["A"], lists["B"], ops["C"])


def test_address_length_mismatch(ops):
    A = [ops["A"][:A_EXT]] * 2
    with pytest.raises(ValueError, match=names("A") + ".*" + names("B")):
        brgemm.Kernel(M, N, K, batch="address")(A, [ops["B"][:B_EXT]], ops["C"])


def test_address_empty_lists_give_beta_c(ops):
    C = ops["C"].copy()
    brgemm.Kernel(M, N, K, batch="address", beta=0.5)([], [], C)
    np.testing.assert_array_equal(C, np.float32(0.5) * ops["C"])


# --- calls: the wrong call form for the kernel's batch kind ----------------------------------

def test_stride_kernel_called_with_address_form(ops):
    with pytest.raises(TypeError, match=names("A")):
        brgemm.Kernel(M, N, K)([ops["A"]], [ops["B"]], ops["C"], 1)


def test_address_kernel_called_with_stride_form(ops):
    with pytest.raises(TypeError):
        brgemm.Kernel(M, N, K, batch="address")(ops["A"], ops["B"], ops["C"], 1)
    with pytest.raises(TypeError, match=names("A")):
        brgemm.Kernel(M, N, K, batch="address")(ops["A"], ops["B"], ops["C"])


def test_offset_kernel_called_with_stride_form(ops):
    with pytest.raises((TypeError, ValueError), match="offsets_"):
        brgemm.Kernel(M, N, K, batch="offset")(ops["A"], ops["B"], ops["C"], 1)


def _entry_point(kernel, batch):
    """The per-kind entry point (run_stride, ...), wherever this version keeps it."""
    for owner in (kernel, getattr(kernel, "_k", None)):
        fn = getattr(owner, f"run_{batch}", None)
        if fn is not None:
            return fn
    pytest.skip(f"this version exposes no run_{batch} entry point")


@pytest.mark.parametrize("kind, method", [(k, m) for k in ("stride", "offset", "address")
                                          for m in ("stride", "offset", "address") if k != m])
def test_wrong_batch_kind_entry_point(ops, kind, method):
    kernel = brgemm.Kernel(M, N, K, batch=kind)
    run = _entry_point(kernel, method)
    args = {"stride": (ops["A"], ops["B"], ops["C"], 1, None, None),
            "offset": (ops["A"], ops["B"], ops["C"], np.zeros(1, np.int64), np.zeros(1, np.int64)),
            "address": ([ops["A"]], [ops["B"]], ops["C"])}[method]
    with pytest.raises(ValueError, match=rf"batch='{kind}'.*'{method}'"):
        run(*args)


# --- batch_reduce and gemm -------------------------------------------------------------------

def _br_operands(rng, batch=2, m=4, k=3, n=5):
    return random_f32((batch, m, k), rng), random_f32((batch, k, n), rng), random_f32((m, n), rng)


def _gemm_operands(rng, m=4, k=3, n=5):
    return random_f32((m, k), rng), random_f32((k, n), rng), random_f32((m, n), rng)


FUNCS = {
    "batch_reduce": (brgemm.batch_reduce, _br_operands),
    "gemm": (brgemm.gemm, _gemm_operands),
}

BAD_WHOLE_ARRAYS = {
    "float64": (lambda a: a.astype(np.float64), TypeError),
    "int32": (lambda a: a.astype(np.int32), TypeError),
    "float16": (lambda a: a.astype(np.float16), TypeError),
    "big_endian": (lambda a: a.astype(">f4"), TypeError),
    "list": (lambda a: a.tolist(), TypeError),
    "none_or_scalar": (lambda a: 2.0, TypeError),
    "misaligned": (lambda a: misaligned(a.size).reshape(a.shape), ValueError),
    "ndim_plus_1": (lambda a: a[None], ValueError),
    "ndim_minus_1": (lambda a: a[0], ValueError),
    "rows_not_contiguous": (lambda a: np.repeat(a, 2, axis=-1)[..., ::2], ValueError),
    "rows_backwards": (lambda a: a[..., ::-1, :], ValueError),
    "rows_broadcast": (lambda a: np.broadcast_to(a[..., :1, :], a.shape), ValueError),
    "fortran_order": (lambda a: np.asfortranarray(a), ValueError),
}


@pytest.mark.parametrize("bad", list(BAD_WHOLE_ARRAYS))
@pytest.mark.parametrize("which", ["A", "B", "C"])
@pytest.mark.parametrize("func", list(FUNCS))
def test_whole_array_bad_arrays(rng, func, which, bad):
    fn, make = FUNCS[func]
    A, B, C = make(rng)
    ops = dict(A=A, B=B, C=C)
    transform, exc = BAD_WHOLE_ARRAYS[bad]
    ops[which] = transform(ops[which])
    if (which, bad) == ("B", "float16"):  # half-precision weights: the f32f16 kernel, B packed on the call
        np.testing.assert_array_equal(fn(ops["A"], ops["B"], ops["C"]),
                                      fn(ops["A"], brgemm.pack_b(ops["B"], "f32f16"), C.copy()))
        return
    with pytest.raises(exc, match=names(which)):
        fn(ops["A"], ops["B"], ops["C"])


@pytest.mark.parametrize("func", list(FUNCS))
def test_whole_array_c_keyword_and_none(rng, func):
    fn, make = FUNCS[func]
    A, B, C = make(rng)
    out = fn(A, B)
    assert out.dtype == np.float32 and out.shape == C.shape and out.flags.c_contiguous
    out2 = fn(A, B, C=C)
    assert out2 is C
    np.testing.assert_array_equal(out, C)


@pytest.mark.parametrize("shapes, msg", [
    (((2, 4, 3), (3, 3, 5)), "batch"),
    (((2, 4, 3), (2, 4, 5)), r"\bK\b"),
    (((0, 4, 3), (0, 3, 5)), names("A") + ".*zero-size"),
    (((2, 0, 3), (2, 3, 5)), names("A") + ".*zero-size"),
    (((2, 4, 0), (2, 0, 5)), names("A") + ".*zero-size"),
    (((2, 4, 3), (2, 3, 0)), names("B") + ".*zero-size"),
])
def test_batch_reduce_shapes(rng, shapes, msg):
    A, B = random_f32(shapes[0], rng), random_f32(shapes[1], rng)
    with pytest.raises(ValueError, match=msg):
        brgemm.batch_reduce(A, B)


@pytest.mark.parametrize("shapes, msg", [
    (((4, 3), (4, 5)), r"\bK\b"),
    (((0, 3), (3, 5)), names("A") + ".*zero-size"),
    (((4, 0), (0, 5)), names("A") + ".*zero-size"),
    (((4, 3), (3, 0)), names("B") + ".*zero-size"),
])
def test_gemm_shapes(rng, shapes, msg):
    A, B = random_f32(shapes[0], rng), random_f32(shapes[1], rng)
    with pytest.raises(ValueError, match=msg):
        brgemm.gemm(A, B)


@pytest.mark.parametrize("func", list(FUNCS))
@pytest.mark.parametrize("shape", ["transposed", "one_row_short", "one_col_more", "1d", "3d", "empty"])
def test_whole_array_c_wrong_shape(rng, func, shape):
    fn, make = FUNCS[func]
    A, B, C = make(rng)
    m, n = C.shape
    C = {"transposed": lambda: random_f32((n, m), rng),
         "one_row_short": lambda: random_f32((m - 1, n), rng),
         "one_col_more": lambda: random_f32((m, n + 1), rng),
         "1d": lambda: random_f32(m * n, rng),
         "3d": lambda: random_f32((1, m, n), rng),
         "empty": lambda: random_f32((0, n), rng)}[shape]()
    with pytest.raises(ValueError, match=names("C")):
        fn(A, B, C)


@pytest.mark.parametrize("func", list(FUNCS))
def test_whole_array_c_readonly(rng, func):
    fn, make = FUNCS[func]
    A, B, C = make(rng)
    with pytest.raises(ValueError, match=names("C") + ".*read-only"):
        fn(A, B, readonly(C))


@pytest.mark.parametrize("func", list(FUNCS))
@pytest.mark.parametrize("alias", ["A", "B"])
def test_whole_array_c_aliasing(rng, func, alias):
    fn, _ = FUNCS[func]
    buf = random_f32(4 * 4 * 2, rng)
    square = buf[:16].reshape(4, 4)
    ops = dict(A=random_f32((4, 4), rng), B=random_f32((4, 4), rng))
    ops[alias] = square if func == "gemm" else square[None]
    if func == "batch_reduce":
        other = "B" if alias == "A" else "A"
        ops[other] = ops[other][None]
    C = buf[:16].reshape(4, 4) if func == "gemm" else buf[4:20].reshape(4, 4)  # same / partial
    with pytest.raises(ValueError, match=names("C") + ".*" + names(alias)):
        fn(ops["A"], ops["B"], C)


@pytest.mark.parametrize("func", list(FUNCS))
@pytest.mark.parametrize("beta, exc", [
    (float("nan"), ValueError), (float("inf"), ValueError), (1e39, ValueError),
    ("1", TypeError), (None, TypeError), (True, TypeError),
])
def test_whole_array_beta(rng, func, beta, exc):
    fn, make = FUNCS[func]
    A, B, C = make(rng)
    C0 = C.copy()
    with pytest.raises(exc, match=names("beta")):
        fn(A, B, C, beta=beta)
    np.testing.assert_array_equal(C, C0)  # rejected before anything is written


def test_gemm_beta_overflowing_float32_writes_nothing(rng):
    """beta = 1e39 is finite as a double but not as the kernel's float32; with K split into
    several chunks (K > 512) no chunk may have been added into C when the error is raised."""
    A, B, C = random_f32((5, 1100), rng), random_f32((1100, 7), rng), random_f32((5, 7), rng)
    C0 = C.copy()
    with pytest.raises(ValueError, match=names("beta")):
        brgemm.gemm(A, B, C, beta=1e39)
    np.testing.assert_array_equal(C, C0)


@pytest.mark.parametrize("func", list(FUNCS))
@pytest.mark.parametrize("beta", [1.0, 0.5, -1.0, 1e-30])
def test_whole_array_beta_without_c(rng, func, beta):
    fn, make = FUNCS[func]
    A, B, _ = make(rng)
    with pytest.raises(ValueError, match=names("beta") + r".*\bC\b"):
        fn(A, B, beta=beta)
    assert fn(A, B, beta=0.0).shape == (A.shape[-2], B.shape[-1])


# --- the lists of ISAs and ukernels -----------------------------------------------------------

def test_ukernels_returns_fresh_dicts():
    first = brgemm.ukernels()
    first[0]["name"] = "changed"
    assert brgemm.ukernels()[0]["name"] != "changed"
    keys = {tuple(sorted(u)) for u in brgemm.ukernels()}
    assert keys == {("available", "dtype", "isa", "kp", "mr", "name", "nr")}


def test_isa_levels_constant_matches_the_library():
    built = brgemm._core.built_isas()
    assert built[0] == "scalar"
    assert all(level in ISA_LEVELS for level in built)
