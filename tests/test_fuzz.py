"""Property-based fuzzing of every public function, class and operator (issue 18).

The property: whatever the input (random shapes including 0 and negative sizes and sizes
whose products overflow, any dtype, non-contiguous / strided / misaligned / byte-swapped /
read-only / zero-stride arrays, wrong types, NaN, ±inf, ±0, huge values), a call returns, or
raises TypeError or ValueError with a message; a RuntimeError only for a call-order error
(backward before forward...) whose message names what to call first. Never another type, never
a crash, and never a write outside the output it was given (outputs sit between guard bands).

Coverage: ``SUBJECTS`` maps every public name (``brgemm.__all__``, ``brgemm.layout``,
``brgemm.nn``, ``brgemm.nn.functional``, ``brgemm.quant``, each ``torch.ops.brgemm`` operator,
and each public method or settable property of the public classes) to the fuzzer that calls
it; :func:`test_every_public_name_is_fuzzed` fails when a new name appears without one.

Each example is "valid" (plausible arguments only, so that the computing paths run, on
special values too), "one" (now and then a wrong argument or layout) or "wild" (many), drawn
per example. Two exceptions besides the rule, both the language's or the framework's:
``Sequential[i]`` past the end raises IndexError (the sequence protocol), and torch's argument
parser rejects a value of the wrong type for an operator's schema with a RuntimeError.

Size: ``BRGEMM_FUZZ_EXAMPLES`` examples per fuzzer (default 120: more than 10⁴ calls in all,
asserted by :func:`test_zz_call_count`); 1100 gives more than 10⁵. Hypothesis runs
derandomized without a database, so every run makes the same calls. Valid calls stay small:
sizes are below 10 or so large (≥ 2⁶²) that any allocation of them overflows, which must be
rejected before anything is allocated.
"""

import collections
import inspect
import math
import os
import time
import warnings

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import brgemm
import brgemm.layout
import brgemm.nn
import brgemm.nn.functional as F
import brgemm.quant as Q

try:  # PyTorch is optional: without it, its operators are not fuzzed
    import torch

    import brgemm.torch  # noqa: F401  (registers torch.ops.brgemm.*)
except ImportError:
    torch = None

DEFAULT_EXAMPLES = 120
EXAMPLES = int(os.environ.get("BRGEMM_FUZZ_EXAMPLES", DEFAULT_EXAMPLES))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, print_blob=True,
                suppress_health_check=list(HealthCheck))

#: Calls made, by subject; test_zz_call_count checks the total.
CALLS = collections.Counter()
VERBOSE = bool(os.environ.get("BRGEMM_FUZZ_VERBOSE"))
WHY = collections.defaultdict(collections.Counter)  # rejections of "valid" examples, when VERBOSE
OK = collections.Counter()  # ... of which returned (the fuzzer reaches the computing paths too)
RUN = set()

BF16 = np.dtype(ml_dtypes.bfloat16)
DTYPES = [np.dtype(d) for d in (np.float32, np.float64, np.float16, BF16, np.uint8, np.int8, np.int32, np.int64,
                                np.bool_, np.complex64, object)]
FLOATS = [np.dtype(np.float32), BF16]
SPECIAL = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 3.4e38, -3.4e38, 1e-45, 1e-39, 1.0, -1.0, 65504.0])

#: Sizes: small (valid calls stay cheap), negative, or so large that any product overflows
#: 64-bit byte counts. Nothing in between: 2**31 elements would be a real 8 GB allocation.
HUGE = (2 ** 62, 2 ** 63 - 1, 2 ** 63, 2 ** 64 + 1, 10 ** 30)
#: Values that only index or stride into given buffers (nothing is allocated from them), where
#: 32-bit overflow is worth trying too.
HUGE_INDEX = HUGE + (2 ** 31 - 1, 2 ** 31, 2 ** 32 + 1)


class Rejected:
    def __repr__(self):
        return "<rejected>"


REJECTED = Rejected()


def call(subject, fn, *args, order=(), **kwargs):
    """fn(*args, **kwargs), or REJECTED if it raised TypeError / ValueError with a message.
    ``order``: words of which a RuntimeError must name one (a call-order error says what to
    call first). Anything else propagates and fails the test."""
    CALLS[subject] += 1
    try:
        out = fn(*args, **kwargs)
        OK[subject] += 1
        return out
    except (TypeError, ValueError) as e:
        if not str(e).strip():
            raise AssertionError(f"{subject}: {type(e).__name__} without a message") from e
        if VERBOSE and MODE[0] == "valid":
            WHY[subject][str(e)[:90]] += 1
        return REJECTED
    except RuntimeError as e:
        if order and any(w in str(e) for w in order):
            return REJECTED
        raise


# --- values -------------------------------------------------------------------------------------

def _values(rng, shape, fill):
    if fill == "normal":
        return rng.standard_normal(shape) * 3
    if fill == "special":
        return rng.choice(SPECIAL, size=shape)
    if fill == "ints":
        return rng.integers(-300, 300, size=shape).astype(np.float64)
    return np.zeros(shape)


def make_array(shape, dtype, seed, fill="normal", layout="c"):
    """An array of ``shape`` and ``dtype`` with values by ``fill`` in memory laid out by ``layout``."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # casting NaN to int... is what we ask for here
        v = _values(rng, shape, fill)
        if dtype.kind in "iu":
            v = np.nan_to_num(v, posinf=1e9, neginf=-1e9).clip(-1e18, 1e18)
        x = np.asarray(v).astype(dtype)
    if dtype == object or layout == "c":
        return x
    if layout == "f":
        return np.asfortranarray(x)
    if layout == "strided" and x.ndim:
        base = np.zeros(shape[:-1] + (2 * shape[-1] + 1,), dtype)
        base[..., 1::2] = x
        return base[..., 1::2]
    if layout == "misaligned":
        buf = np.zeros(x.nbytes + 1, np.uint8)
        y = np.ndarray(shape, dtype, buf.data, offset=1)
        y[...] = x
        return y
    if layout == "swapped" and dtype.itemsize > 1:
        return x.astype(dtype.newbyteorder())
    if layout == "broadcast" and x.size:
        return np.broadcast_to(x.reshape(-1)[:1].reshape((1,) * x.ndim), shape)
    if layout == "readonly":
        x.setflags(write=False)
    return x


LAYOUTS = ("c", "c", "c", "f", "strided", "misaligned", "swapped", "broadcast", "readonly")


@st.composite
def arrays(draw, shape, dtypes=None, good=FLOATS):
    """An array of ``shape`` (a tuple, dims may be perturbed), dtype mostly from ``good``."""
    odd = odds()
    if odd and draw(st.integers(0, odd)) == 0:
        shape = tuple(draw(st.integers(0, 4)) for _ in range(draw(st.integers(0, 4))))  # any shape
    if dtypes is None:
        dtypes = DTYPES if odd and draw(st.integers(0, odd)) == 0 else good
    dtype = draw(st.sampled_from(dtypes))
    fill = draw(st.sampled_from(("normal", "normal", "special", "ints", "zeros")))
    layout = draw(st.sampled_from(LAYOUTS)) if odd and draw(st.integers(0, odd)) == 0 else "c"
    return make_array(tuple(shape), dtype, draw(st.integers(0, 2 ** 32 - 1)), fill, layout)


def junk():
    """Values of the wrong type or range for most arguments."""
    return JUNK


JUNK = st.one_of(
    st.none(), st.booleans(), st.sampled_from([0, 1, -1, 2, 3, 17, *HUGE, -2 ** 63, -2 ** 64]),
    st.sampled_from([float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1e-45, 1e308, -2.5, 0.5]),
    st.sampled_from(["", "relu", "float32", "bf16", "f32", "u8s8", "NCHW", "exact", "none", "l2", "x" * 40]),
    st.sampled_from([object, list, lambda: [1, 2], lambda: (3,), dict, lambda: {"bias": 1}, lambda: np.float32(1),
                     lambda: np.int64(-1), lambda: 1 + 2j, lambda: np.array(2.0), lambda: np.zeros((2, 0), np.float32),
                     lambda: np.ones(3, np.float32), lambda: slice(1)]).map(lambda make: make()),  # fresh each time
)


#: How much of an example is wrong, drawn per example (test_fuzz): "valid" (plausible arguments
#: only, so the computing paths run, on special values too), "one" (now and then a wrong
#: argument or layout) or "wild" (many).
MODE = ["wild"]
MODES = ("valid", "valid", "one", "wild")


def maybe(valid):
    """A valid value, or (by the example's MODE) sometimes junk."""
    if MODE[0] == "valid":
        return valid
    return st.one_of(*([valid] * (7 if MODE[0] == "one" else 3)), JUNK)


def odds():
    """1 in this many arrays gets an odd shape, dtype or layout, by MODE."""
    return {"valid": 0, "one": 10, "wild": 4}[MODE[0]]


def side(hi=5):
    """An array side: 0..hi, but at least 1 in "valid" examples (an empty array is rejected)."""
    return st.integers(1 if MODE[0] == "valid" else 0, hi)


def size():
    return st.one_of(st.integers(0, 9), st.integers(1, 9), st.integers(-3, -1), st.sampled_from(HUGE))


def pos():
    return st.integers(1, 6)


def dim():
    """A layer or array size: in "valid" examples 1..6, else also 0, negative or huge."""
    return pos() if MODE[0] == "valid" else st.one_of(pos(), size())


def pick(valid, other=()):
    """One of ``valid``, or in examples that are not "valid" also one of ``other``."""
    return st.sampled_from(list(valid) + ([] if MODE[0] == "valid" else list(other)))


# --- outputs in guard bands ------------------------------------------------------------------------

def guarded(shape, dtype):
    """An output array inside a larger buffer: returns (array, check) where check() asserts the
    bytes around it are untouched. The output holds all-ones bytes (NaN for floats): beta = 0
    must not read them."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape)) if shape else 1
    buf = np.zeros(n + 32, dtype)
    buf.view(np.uint8)[:] = 0xA5
    buf.view(np.uint8)[16 * dtype.itemsize:(16 + n) * dtype.itemsize] = 0xFF
    guard = buf.copy()
    out = buf[16:16 + n].reshape(shape)

    def check(what):
        got = buf.view(np.uint8)
        ref = guard.view(np.uint8)
        k = 16 * dtype.itemsize
        assert np.array_equal(got[:k], ref[:k]) and np.array_equal(got[-k:], ref[-k:]), \
            f"{what} wrote outside its output"
    return out, check


# --- the core API ----------------------------------------------------------------------------------

KERNEL_DTYPES = ("f32", "bf16", "u8s8", "s8s8", "f32f16")
A_DTYPE = {"f32": np.float32, "bf16": BF16, "u8s8": np.uint8, "s8s8": np.int8, "f32f16": np.float32}
B_DTYPE = {"f32": np.float32, "bf16": BF16, "u8s8": np.int8, "s8s8": np.int8, "f32f16": np.float16}


INT_KERNELS = ("u8s8", "s8s8")


@st.composite
def epilogues(draw, n=4, kdt="f32"):
    """An Epilogue, its dict of arguments, None, or (not "valid") junk. "valid" ones fit kdt."""
    if MODE[0] == "valid":
        if draw(st.booleans()):
            return None
        if kdt in INT_KERNELS:  # dequantized to float32 (b_colsum comes from the PackedB)
            kw = {"scale": draw(st.one_of(st.floats(1e-3, 1), arrays((n,), dtypes=[np.dtype(np.float32)]))),
                  "out_dtype": draw(st.sampled_from(["float32", "bfloat16"]))}
        else:
            kw = {"out_dtype": draw(st.sampled_from([None, "float32", "bfloat16"]))}
        if draw(st.booleans()):
            kw["bias"] = draw(arrays((n,), dtypes=[np.dtype(np.float32)]))
        kw["activation"] = draw(st.sampled_from([None, "relu", "tanh", "gelu", "ktanh", "kswish"]))
        return kw if draw(st.booleans()) else call("brgemm.Epilogue", brgemm.Epilogue, **kw)
    if draw(st.integers(0, 2)) == 0:
        return draw(maybe(st.none()))
    kw = {}
    if draw(st.booleans()):
        kw["bias"] = draw(maybe(arrays((n,), good=[np.float32])))
    if draw(st.booleans()):
        kw["activation"] = draw(maybe(st.sampled_from([None, "relu", "tanh", "gelu", "ktanh", "kswish", "bogus"])))
    if draw(st.booleans()):
        kw["out_dtype"] = draw(maybe(st.sampled_from([None, "float32", "bfloat16", "uint8", "int8", "s8", np.int32])))
    if draw(st.booleans()):
        kw["scale"] = draw(maybe(st.one_of(st.floats(allow_nan=True), arrays((n,), good=[np.float32]))))
    for name in ("a_zero_point", "b_zero_point", "out_zero_point"):
        if draw(st.integers(0, 3)) == 0:
            kw[name] = draw(maybe(st.integers(-130, 260)))
    if draw(st.integers(0, 3)) == 0:
        kw["out_scale"] = draw(maybe(st.floats(allow_nan=True, allow_infinity=True)))
    if draw(st.integers(0, 3)) == 0:
        kw["b_colsum"] = draw(maybe(arrays((n,), good=[np.int32])))
    if draw(st.booleans()):
        return kw  # a dict: gemm makes the Epilogue
    return call("brgemm.Epilogue", brgemm.Epilogue, **kw)


@st.composite
def operand_b(draw, kdt, shape, batched):
    """B for a kernel dtype: plain (its dtype or another), packed by pack_b, or (not "valid") a
    hand-made PackedB whose fields lie about its data."""
    how = draw(st.integers(0, 4 if MODE[0] == "valid" else 5))
    plain = draw(arrays(shape, good=[np.dtype(B_DTYPE[kdt])]))
    if how <= 2:
        return plain
    if how <= 4:
        layout = "rows" if batched or MODE[0] != "valid" and draw(st.booleans()) else \
            draw(st.sampled_from(["rows", "panels"]))
        packed = call("brgemm.pack_b", brgemm.pack_b, plain, kdt, layout=layout)
        return plain if packed is REJECTED else packed
    # the core must check these fields against the array
    data = draw(arrays(draw(st.sampled_from([shape, shape[:-1], (2, 3, 4, 2)])), DTYPES))
    return call("brgemm.PackedB", brgemm.PackedB, data, draw(st.sampled_from(KERNEL_DTYPES)),
                draw(size()), draw(size()), draw(st.sampled_from([None, 1, 2, 2 ** 62])), draw(size()),
                draw(st.sampled_from([1, 2, 4, 0, 3])), draw(maybe(arrays((4,), good=[np.int32]))),
                draw(st.sampled_from(["rows", "panels", "x"])))


def out_dtype(kdt, ep):
    """C's dtype for a kernel dtype and epilogue."""
    name = ep.out_dtype if isinstance(ep, brgemm.Epilogue) else (ep or {}).get("out_dtype")
    if name is None:
        return np.dtype(np.int32 if kdt in INT_KERNELS else np.float32)
    return np.dtype(BF16 if name == "bfloat16" else name)


def fuzz_product(draw, batched):
    name = "brgemm.batch_reduce" if batched else "brgemm.gemm"
    fn = brgemm.batch_reduce if batched else brgemm.gemm
    valid = MODE[0] == "valid"
    kdt = draw(st.sampled_from(KERNEL_DTYPES))
    m, k, n, count = (draw(st.integers(1 if valid else 0, 9)) for _ in range(4))
    lead = (count,) if batched else ()
    a = draw(maybe(arrays(lead + (m, k), good=[np.dtype(A_DTYPE[kdt])])))
    b = draw(maybe(operand_b(kdt, lead + (k, n), batched)))
    ep = draw(epilogues(n, kdt))
    beta = draw(maybe(st.sampled_from([0.0, 1.0] if valid or kdt in INT_KERNELS else [0.0, 1.0, 0.5, float("nan")])))
    kwargs = dict(beta=beta, epilogue=ep)
    check = None
    if valid and (beta or draw(st.booleans())):
        c, check = guarded((m, n), out_dtype(kdt, ep if ep is not REJECTED else None))
        c[...] = 0
        kwargs["C"] = c
    elif not valid and draw(st.booleans()):
        cdt = draw(st.sampled_from([np.float32, np.int32, BF16, np.uint8, np.int8, np.float64]))
        c, check = guarded(draw(st.sampled_from([(m, n), (m, n + 1), (n, m), (m,)])), cdt)
        if draw(st.integers(0, 4)) == 0:
            c = c[:, ::-1] if c.ndim == 2 else c  # negative stride
        kwargs["C"] = c
    out = call(name, fn, a, b, **kwargs)
    if check:
        check(name)
    if out is not REJECTED:
        assert isinstance(out, np.ndarray) and out.shape == (m, n), f"{name} returned {type(out)} {getattr(out, 'shape', '')}"


def fuzz_gemm(draw):
    fuzz_product(draw, False)


def fuzz_batch_reduce(draw):
    fuzz_product(draw, True)


def fuzz_pack_b(draw):
    kdt = draw(maybe(st.sampled_from(KERNEL_DTYPES + ("f64",))))
    shape = draw(st.sampled_from([(3, 5), (2, 3, 5), (0, 4), (4, 0), (1,), (9, 1)]))
    b = draw(maybe(arrays(shape, good=[np.dtype(B_DTYPE.get(kdt, np.float32))]))) if isinstance(kdt, str) else \
        draw(arrays(shape))
    kw = {}
    if draw(st.booleans()):  # not 2**31: a valid ldb that large is a real allocation of gigabytes
        kw["ldb"] = draw(maybe(st.one_of(st.integers(-2, 12), st.sampled_from(HUGE))))
    if draw(st.booleans()):
        kw["layout"] = draw(maybe(st.sampled_from(["rows", "panels", "cols"])))
    call("brgemm.pack_b", brgemm.pack_b, b, kdt, **kw)


def fuzz_epilogue(draw):
    draw(epilogues())


def fuzz_packedb(draw):
    draw(operand_b("bf16", (3, 4), False))


def index():
    return st.one_of(st.integers(-2, 12), st.sampled_from(HUGE_INDEX), junk())


def valid_kernel_call(draw):
    """A Kernel and a call that fits it: every batch kind, packed B, lda/ldc with gaps."""
    kdt = draw(st.sampled_from(["f32", "bf16", "u8s8", "f32f16"]))
    batch = draw(st.sampled_from(["stride", "offset", "address"]))
    m, n, k, count = (draw(st.integers(1, 6)) for _ in range(4))
    lda, ldc = k + draw(st.integers(0, 2)), n + draw(st.integers(0, 2))
    kern = call("brgemm.Kernel", brgemm.Kernel, m, n, k, dtype=kdt, batch=batch, lda=lda, ldc=ldc,
                beta=draw(st.sampled_from([0.0, 1.0])))
    a3 = draw(arrays((count, m, lda), dtypes=[np.dtype(A_DTYPE[kdt])]))
    b3 = draw(arrays((count, k, n), dtypes=[np.dtype(B_DTYPE[kdt])]))
    bdata = b3 if kdt == "f32" else brgemm.pack_b(b3, kdt).data
    a_blocks, b_blocks = a3.reshape(count, -1), bdata.reshape(count, -1)
    c, check = guarded(((m - 1) * ldc + n,), np.int32 if kdt in INT_KERNELS else np.float32)
    c[...] = 0
    if batch == "stride":
        args = (a_blocks.reshape(-1), b_blocks.reshape(-1), c, count)
    elif batch == "offset":
        order = np.array(draw(st.permutations(range(count))), np.int64)
        args = (a_blocks.reshape(-1), b_blocks.reshape(-1), c, order * a_blocks.shape[1], order[::-1] * b_blocks.shape[1])
    else:
        args = (list(a_blocks), list(b_blocks), c)
    out = call("brgemm.Kernel.__call__", kern, *args)
    check("Kernel()")
    assert out is not REJECTED, "a valid Kernel call was rejected"


def fuzz_kernel(draw):
    if MODE[0] == "valid":
        return valid_kernel_call(draw)
    kdt = draw(maybe(st.sampled_from(KERNEL_DTYPES)))
    batch = draw(maybe(st.sampled_from(["stride", "offset", "address"])))
    m, n, k = (draw(st.one_of(st.integers(0, 6), st.integers(1, 6), st.sampled_from(HUGE_INDEX), st.integers(-2, -1)))
               for _ in range(3))
    kw = {"dtype": kdt, "batch": batch}
    for name in ("lda", "ldb", "ldc"):
        if draw(st.integers(0, 2)) == 0:
            kw[name] = draw(index())
    if draw(st.booleans()):
        kw["beta"] = draw(maybe(st.sampled_from([0.0, 1.0, 2.0, float("nan")])))
    if draw(st.integers(0, 3)) == 0:
        kw["ukernel"] = draw(maybe(st.sampled_from([u["name"] for u in brgemm.ukernels()] + ["nope"])))
    if draw(st.integers(0, 2)) == 0:
        kw["epilogue"] = draw(epilogues(n if isinstance(n, int) and 0 <= n < 10 else 3))
    kern = call("brgemm.Kernel", brgemm.Kernel, m, n, k, **kw)
    if kern is REJECTED:
        return
    repr(kern)
    # Buffers of about the right size (or not): the kernel must check every extent it reads
    adt = A_DTYPE.get(kdt, np.float32)
    bdt = B_DTYPE.get(kdt, np.float32)
    small = lambda v: v if isinstance(v, int) and 0 <= v < 10 else 3  # noqa: E731
    ea = draw(st.integers(0, 3 * small(m) * small(k) + 4))
    eb = draw(st.integers(0, 3 * small(k) * small(n) * 4 + 4))
    cdt = draw(st.sampled_from([np.float32, np.int32, BF16, np.uint8]))
    c, check = guarded((draw(st.integers(0, 3 * small(m) * small(n) + 4)),), cdt)
    kind = kern.batch
    if kind == "address":
        cnt = draw(st.integers(0, 3))
        a = [draw(arrays((ea,), good=[np.dtype(adt)])) for _ in range(cnt)]
        b = [draw(arrays((eb,), good=[np.dtype(bdt)])) for _ in range(draw(st.sampled_from([cnt, cnt, cnt + 1])))]
        args = (draw(maybe(st.just(a))), b, c)
    else:
        a = draw(arrays((ea,), good=[np.dtype(adt)]))
        b = draw(arrays((eb,), good=[np.dtype(bdt)]))
        if kind == "stride":
            args = (a, b, c, draw(st.one_of(st.integers(-1, 3), st.sampled_from(HUGE_INDEX), junk())))
            if draw(st.booleans()):
                args += (draw(index()), draw(index()))
        else:
            cnt = draw(st.integers(0, 3))
            offs = [draw(st.one_of(st.integers(-3, 40), st.sampled_from(HUGE_INDEX))) for _ in range(cnt)]
            oa = draw(maybe(st.sampled_from([np.array(offs, np.int64), offs, np.array(offs, np.int32)])))
            ob = draw(maybe(st.sampled_from([np.array(offs[::-1], np.int64), offs[:1], np.array(offs, np.float32)])))
            args = (a, b, c, oa, ob)
    kwargs = {}
    if draw(st.integers(0, 3)) == 0:
        kwargs["b_colsum"] = draw(arrays((small(n),), good=[np.dtype(np.int32)]))
    how = draw(st.sampled_from(["__call__", "__call__", "run_stride", "run_offset", "run_address"]))
    if how == "__call__":
        call("brgemm.Kernel.__call__", kern, *args, **kwargs)
    else:  # the positional entry points (possibly the wrong one for this kernel's batch kind)
        if how == "run_stride":
            args = (args + (None, None, None))[:4] + (None, None)
        call(f"brgemm.Kernel.{how}", getattr(kern, how), *args[:{"run_stride": 6, "run_offset": 5}.get(how, 3)])
    check("Kernel()")


def fuzz_isa(draw):
    call("brgemm.isa", brgemm.isa)
    call("brgemm.available_isas", brgemm.available_isas)
    call("brgemm.ukernels", brgemm.ukernels)
    try:
        call("brgemm.set_isa", brgemm.set_isa,
             draw(maybe(st.sampled_from(["scalar", "avx2", "avx512", "avx512_vnni", "avx512_bf16", None, "AVX2", "sse"]))))
        a = np.ones((3, 4), np.float32)
        assert np.array_equal(brgemm.gemm(a, np.ones((4, 2), np.float32)), np.full((3, 2), 4, np.float32))
    finally:
        brgemm.set_isa(os.environ.get("BRGEMM_ISA") or None)


def fuzz_threads(draw):
    before = brgemm.get_num_threads()
    try:
        # no counts between 5 and 2**31: a valid one would start that many threads
        call("brgemm.set_num_threads", brgemm.set_num_threads,
             draw(st.one_of(st.integers(-3, 4), st.sampled_from(HUGE_INDEX[:-3] + (2 ** 31, 2 ** 32 + 1)), junk())))
        call("brgemm.get_num_threads", brgemm.get_num_threads)
    finally:
        brgemm.set_num_threads(before)


# --- layout ----------------------------------------------------------------------------------------

def fuzz_block_size(draw):
    call("brgemm.layout.block_size", brgemm.layout.block_size, draw(maybe(size())))


def fuzz_to_blocked(draw):
    shape = tuple(draw(side()) for _ in range(4))
    x = draw(maybe(arrays(shape, good=FLOATS + [np.dtype(np.uint8)])))
    if isinstance(x, np.ndarray) and x.ndim == 4 and draw(st.integers(0, 3)) == 0:
        x = nhwc_view(x)
    kw = {}
    if draw(st.booleans()):
        kw["block"] = draw(maybe(st.one_of(st.integers(-1, 9), st.sampled_from(HUGE))))
    if draw(st.booleans()):
        kw["layout"] = draw(maybe(st.sampled_from(["NCHW", "KCRS", "NHWC"])))
    if draw(st.booleans()):
        kw["dtype"] = draw(maybe(pick([None, np.float32, BF16, "bfloat16"], [np.uint8, np.int8])))
    call("brgemm.layout.to_blocked", brgemm.layout.to_blocked, x, **kw)


def nhwc_view(x):
    """x (N, C, H, W) over NHWC memory (numpy's view of a channels_last tensor), read as it is."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def fuzz_from_blocked(draw):
    if MODE[0] == "valid":  # a blocked array from to_blocked, and its channel count
        c = draw(side())
        xb = brgemm.layout.to_blocked(draw(arrays((draw(side()), c, draw(side()), draw(side())))))
        call("brgemm.layout.from_blocked", brgemm.layout.from_blocked, xb, c)
        return
    shape = tuple(draw(st.integers(0, 4)) for _ in range(draw(st.sampled_from([5, 5, 6, 4]))))
    xb = draw(maybe(arrays(shape, good=FLOATS + [np.dtype(np.uint8)])))
    call("brgemm.layout.from_blocked", brgemm.layout.from_blocked, xb, draw(maybe(size())),
         **({"layout": draw(maybe(st.sampled_from(["NCHW", "KCRS", "x"])))} if draw(st.booleans()) else {}))


# --- nn.functional ---------------------------------------------------------------------------------

def fuzz_elementwise(fname):
    fn = getattr(F, fname)

    def fuzz(draw):
        shape = tuple(draw(side()) for _ in range(draw(st.integers(1 if MODE[0] == 'valid' else 0, 3))))
        x = draw(maybe(arrays(shape)))
        kw = {}
        if draw(st.integers(0, 2)) == 0:
            dt = getattr(x, "dtype", np.float32)
            out, check = guarded(draw(st.sampled_from([shape, shape[:-1], (7,)])), dt if dt != object else np.float32)
            kw["out"] = draw(st.sampled_from([out, out, x]))
        else:
            check = None
        if fname == "activation":
            got = call(f"brgemm.nn.functional.{fname}", fn, x, draw(maybe(pick(F._ACTIVATIONS, ("bogus",)))), **kw)
        else:
            got = call(f"brgemm.nn.functional.{fname}", fn, x, **kw)
        if check:
            check(fname)
        if got is not REJECTED:
            assert got.shape == x.shape and got.dtype == x.dtype
    return fuzz


def fuzz_activation_backward(draw):
    shape = tuple(draw(side()) for _ in range(draw(st.integers(1 if MODE[0] == 'valid' else 0, 3))))
    name = draw(maybe(pick(F._ACTIVATIONS, ("bogus",))))
    kw = {}
    for arg in ("x", "y"):
        if MODE[0] == "valid" or draw(st.booleans()):
            kw[arg] = draw(maybe(arrays(shape, good=[np.dtype(np.float32)])))
    check = None
    if draw(st.integers(0, 2)) == 0:
        kw["out"], check = guarded(draw(st.sampled_from([shape, (3,)])), np.float32)
    call("brgemm.nn.functional.activation_backward", F.activation_backward, name, draw(maybe(arrays(shape, good=[np.dtype(np.float32)]))),
         **kw)
    if check:
        check("activation_backward")


def _axis_order(draw, kw, order=True):
    if draw(st.booleans()):
        kw["axis"] = draw(maybe(st.one_of(st.integers(-4, 4), st.sampled_from(HUGE))))
    if order and draw(st.booleans()):
        kw["order"] = draw(maybe(st.integers(-1, 20)))


def fuzz_softmax(fname):
    fn = getattr(F, fname)

    def fuzz(draw):
        shape = tuple(draw(side()) for _ in range(draw(st.integers(1 if MODE[0] == 'valid' else 0, 3))))
        args = [draw(maybe(arrays(shape)))]
        if fname.endswith("backward"):
            args.insert(0, draw(maybe(arrays(draw(st.sampled_from([shape, shape[::-1]])), good=[np.dtype(np.float32)]))))
        kw = {}
        _axis_order(draw, kw, order=fname.startswith("taylor"))
        call(f"brgemm.nn.functional.{fname}", fn, *args, **kw)
    return fuzz


def fuzz_dropout(draw):
    shape = tuple(draw(side()) for _ in range(draw(st.integers(1 if MODE[0] == 'valid' else 0, 3))))
    x = draw(maybe(arrays(shape, good=[np.dtype(np.float32)])))
    p = draw(maybe(st.one_of(st.floats(0, 1), st.floats(allow_nan=True), st.integers(-1, 2))))
    seed = draw(maybe(st.one_of(st.integers(0, 2**64 - 1), st.integers(-2**70, 2**70))))
    kw, check = {}, None
    if draw(st.integers(0, 2)) == 0:
        kw["out"], check = guarded(draw(st.sampled_from([shape, (3,)])), np.float32)
    got = call("brgemm.nn.functional.dropout", F.dropout, x, p, seed, **kw)
    if check:
        check("dropout")
    if got is not REJECTED:
        assert got.shape == x.shape and got.dtype == np.float32


def fuzz_cross_entropy(draw):
    n, c = draw(side()), draw(side())
    logits = draw(maybe(arrays((n, c), good=[np.dtype(np.float32)])))
    labels = draw(maybe(st.one_of(arrays((n,), good=[np.dtype(np.int64)]),
                                  st.lists(st.integers(0, max(c - 1, 0)), min_size=n, max_size=n).map(np.array))))
    call("brgemm.nn.functional.cross_entropy", F.cross_entropy, logits, labels)


# --- quant ------------------------------------------------------------------------------------------

@st.composite
def qparams(draw, channels=3):
    per_channel = draw(st.booleans())
    shape = (channels,) if per_channel else ()
    if MODE[0] == "valid":
        scale = np.array(draw(st.lists(st.floats(1e-6, 1e3), min_size=channels, max_size=channels)), np.float32)
        scale = scale if per_channel else scale[0]
        dtype = draw(st.sampled_from(["uint8", "int8"]))
        zp = np.array(draw(st.integers(*Q.DTYPES[dtype])) if not per_channel else
                      draw(st.lists(st.integers(*Q.DTYPES[dtype]), min_size=channels, max_size=channels)))
        axis = draw(st.sampled_from([0, 1, -1])) if per_channel else None
        return call("brgemm.quant.QParams", Q.QParams, scale, zp, dtype, axis)
    scale = draw(maybe(st.one_of(arrays(shape, good=[np.dtype(np.float32)]), st.floats(allow_nan=True))))
    zp = draw(maybe(arrays(shape, good=[np.dtype(np.int32)], dtypes=[np.dtype(np.int32), np.dtype(np.int64)])))
    axis = draw(maybe(st.sampled_from([0, 1, -1, 5] if per_channel else [None, None, 0])))
    dtype = draw(maybe(st.sampled_from(["uint8", "int8", "int16"])))
    return call("brgemm.quant.QParams", Q.QParams, scale, zp, dtype, axis)


def fuzz_qparams(draw):
    qp = draw(qparams())
    if qp is REJECTED:
        return
    shape = tuple(draw(side(4)) for _ in range(draw(st.integers(1 if MODE[0] == 'valid' else 0, 3))))
    if MODE[0] == "valid" and qp.axis is not None:  # 3 channels on its axis
        shape = (3, 3)
    call("brgemm.quant.QParams.quantize", qp.quantize, draw(maybe(arrays(shape))))
    call("brgemm.quant.QParams.dequantize", qp.dequantize, draw(maybe(arrays(shape, good=[np.dtype(np.uint8)]))))


def fuzz_quantize(fname):
    fn = getattr(Q, fname)

    def fuzz(draw):
        qp = draw(maybe(qparams()))
        shape = tuple(draw(side(4)) for _ in range(draw(st.integers(1 if MODE[0] == 'valid' else 0, 3))))
        if MODE[0] == "valid" and isinstance(qp, Q.QParams) and qp.axis is not None:  # 3 channels on its axis
            shape = (3, 3)
        call(f"brgemm.quant.{fname}", fn, draw(maybe(arrays(shape, good=[np.dtype(np.float32), np.dtype(np.uint8)]))),
             REJECTED if qp is REJECTED else qp)
    return fuzz


def _observer_kw(draw, axis=True):
    kw = {}
    for name in ("symmetric", "signed"):
        if draw(st.booleans()):
            kw[name] = draw(maybe(st.booleans()))
    if axis and draw(st.booleans()):
        kw["axis"] = draw(maybe(st.one_of(st.none(), st.integers(-3, 3), st.sampled_from(HUGE))))
    return kw


def fuzz_choose_qparams(draw):
    shape = tuple(draw(side(4)) for _ in range(draw(st.integers(1 if MODE[0] == 'valid' else 0, 3))))
    kw = _observer_kw(draw)
    if draw(st.booleans()):
        kw["method"] = draw(maybe(st.sampled_from(["minmax", "l2", "percentile", "mse"])))
    if draw(st.integers(0, 2)) == 0:
        kw["percentile"] = draw(maybe(st.floats(allow_nan=True, allow_infinity=True)))
    if draw(st.integers(0, 2)) == 0:
        kw["bins"] = draw(maybe(st.one_of(st.integers(-2, 40), st.sampled_from(HUGE))))
    call("brgemm.quant.choose_qparams", Q.choose_qparams, draw(maybe(arrays(shape))), **kw)


def fuzz_minmax_observer(draw):
    obs = call("brgemm.quant.MinMaxObserver", Q.MinMaxObserver, **_observer_kw(draw))
    if obs is REJECTED:
        return
    for _ in range(draw(st.integers(0, 3))):
        if draw(st.booleans()):
            shape = tuple(draw(side(4)) for _ in range(draw(st.integers(1 if MODE[0] == 'valid' else 0, 3))))
            call("brgemm.quant.MinMaxObserver.observe", obs.observe, draw(maybe(arrays(shape))))
        else:
            call("brgemm.quant.MinMaxObserver.qparams", obs.qparams, order=("observe",))


def fuzz_histogram_observer(draw):
    kw = _observer_kw(draw, axis=False)
    if draw(st.booleans()):
        kw["bins"] = draw(maybe(st.one_of(st.integers(-2, 40), st.sampled_from(HUGE))))
    obs = call("brgemm.quant.HistogramObserver", Q.HistogramObserver, **kw)
    if obs is REJECTED:
        return
    for _ in range(draw(st.integers(0, 3))):
        step = draw(st.sampled_from(["observe", "observe", "qparams", "l2_range", "edges"]))
        if step == "observe":
            shape = tuple(draw(side(4)) for _ in range(draw(st.integers(1 if MODE[0] == 'valid' else 0, 3))))
            call("brgemm.quant.HistogramObserver.observe", obs.observe, draw(maybe(arrays(shape))))
        elif step == "qparams":
            kw = {}
            if draw(st.booleans()):
                kw["method"] = draw(maybe(st.sampled_from(["minmax", "l2", "percentile", "x"])))
            if draw(st.booleans()):
                kw["percentile"] = draw(maybe(st.floats(allow_nan=True, allow_infinity=True)))
            call("brgemm.quant.HistogramObserver.qparams", obs.qparams, order=("observe",), **kw)
        elif step == "l2_range":
            call("brgemm.quant.HistogramObserver.l2_range", obs.l2_range, order=("observe",))
        else:
            call("brgemm.quant.HistogramObserver.edges", lambda: obs.edges, order=("observe",))


def fuzz_split_outliers(draw, fname="split_outliers"):
    o, i = draw(side()), draw(side())
    w = draw(maybe(arrays((o, i), good=[np.dtype(np.float32)])))
    kw = {}
    if draw(st.booleans()):
        kw["outlier_fraction"] = draw(maybe(st.one_of(st.floats(-0.5, 1.5), st.just(float('nan')))))
    if draw(st.booleans()) or not kw:
        kw["threshold"] = draw(maybe(st.floats(allow_nan=True, allow_infinity=True)))
    if fname == "outlier_error":
        x = draw(maybe(arrays((draw(side(4)), i), good=[np.dtype(np.float32)])))
        call("brgemm.quant.outlier_error", Q.outlier_error, w, x, **kw)
    else:
        call("brgemm.quant.split_outliers", Q.split_outliers, w, **kw)


def fuzz_outlier_error(draw):
    fuzz_split_outliers(draw, "outlier_error")


def fuzz_sharing(draw):
    """share_weights, centroid_gradients, pack_shared / SharedWeights and its methods, gemm on it."""
    k, n = draw(side()), draw(side())
    bits = draw(maybe(pick([2, 3, 4, 5, 8], [1, 9, 4.0, True, None])))
    w = draw(maybe(arrays((k, n), good=[np.dtype(np.float32)])))
    kw = {"iters": draw(maybe(pick([1, 30], [0, -2, float("nan")])))} if draw(st.booleans()) else {}
    got = call("brgemm.quant.share_weights", Q.share_weights, w, bits, **kw)
    valid_bits = bits if isinstance(bits, int) and not isinstance(bits, bool) and 2 <= bits <= 8 else 4
    if got is REJECTED:
        codebook = np.linspace(-1, 1, 1 << valid_bits, dtype=np.float32)
        idx = np.zeros((k, n), np.uint8)
    else:
        codebook, idx = got
    g = draw(maybe(arrays(idx.shape, good=[np.dtype(np.float32)])))
    call("brgemm.quant.centroid_gradients", Q.centroid_gradients, draw(maybe(st.just(idx))), g, bits)
    cb = draw(maybe(st.one_of(st.just(codebook), arrays((draw(pick([4, 16, 256], [3, 0, 512])),)))))
    make = draw(st.sampled_from([Q.pack_shared, Q.SharedWeights]))
    shared = call(f"brgemm.quant.{'pack_shared' if make is Q.pack_shared else 'SharedWeights'}", make, cb,
                  draw(maybe(st.one_of(st.just(idx), arrays((k, n), good=[np.dtype(np.uint8)])))))
    if shared is REJECTED:
        return
    repr(shared)
    a = draw(maybe(arrays((draw(side()), draw(pick([shared.k], [shared.k + 1, 0]))), good=[np.dtype(np.float32)])))
    for _ in range(draw(st.integers(0, 3))):
        step = draw(st.sampled_from(["gemm", "brgemm.gemm", "decode", "fine_tune"]))
        if step == "gemm":
            call("brgemm.quant.SharedWeights.gemm", shared.gemm, a)
        elif step == "brgemm.gemm":
            kw = {"beta": draw(maybe(pick([0.0], [1.0])))} if draw(st.booleans()) else {}
            call("brgemm.gemm", brgemm.gemm, a, shared, **kw)
        elif step == "decode":
            call("brgemm.quant.SharedWeights.decode", shared.decode)
        else:
            call("brgemm.quant.SharedWeights.fine_tune", shared.fine_tune, draw(maybe(st.just(idx))),
                 draw(maybe(arrays((k, n), good=[np.dtype(np.float32)]))), draw(maybe(st.floats(-1, 1))))


def fuzz_ternarize(draw):
    w = draw(maybe(arrays((draw(side()), draw(side())))))
    kw = {}
    for name, values in (("block", st.integers(-1, 9)), ("max_residuals", st.integers(-1, 3)),
                         ("error_target", st.floats(-0.5, 1.5))):
        if draw(st.booleans()):
            kw[name] = draw(maybe(values))
    t = call("brgemm.quant.ternarize", Q.ternarize, w, **kw)
    if t is not REJECTED:
        call("brgemm.quant.Ternary", t.dequantize, draw(maybe(st.one_of(st.none(), st.integers(-1, 4)))))


def fuzz_shared_linear(draw):
    """brgemm.nn.SharedLinear: its constructor, from_linear, forward (vector, matrix, out=)."""
    k, n = draw(side()), draw(side())
    bits = draw(pick([2, 4, 8], [1, 9]))
    cb = draw(maybe(st.one_of(st.just(np.linspace(-1, 1, 1 << bits, dtype=np.float32)), arrays((draw(pick([4, 16], [3, 0])),)))))
    idx = draw(maybe(st.one_of(st.just(np.zeros((n, k), np.uint8)), arrays((n, k), good=[np.dtype(np.uint8)]))))
    bias = draw(maybe(st.one_of(st.none(), arrays((draw(pick([n], [n + 1])),), good=[np.dtype(np.float32)]))))
    if draw(st.booleans()):
        lin = brgemm.nn.Linear(max(k, 1), max(n, 1), seed=0)
        layer = call("brgemm.nn.SharedLinear.from_linear", brgemm.nn.SharedLinear.from_linear,
                     draw(st.sampled_from([lin, None, "x"])), draw(maybe(pick([bits], [0, 2.5]))))
    else:
        layer = call("brgemm.nn.SharedLinear", brgemm.nn.SharedLinear, cb, idx, bias,
                     draw(maybe(pick([None, "relu"], ["gelu", 3]))))
    if layer is REJECTED:
        return
    repr(layer)
    call("brgemm.nn.SharedLinear.decoded_weight", layer.decoded_weight)
    for _ in range(draw(st.integers(0, 3))):
        rows = draw(side())
        x = draw(maybe(st.one_of(arrays((rows, draw(pick([k], [k + 1])))), arrays((k,)))))
        kw = {}
        if draw(st.booleans()) and isinstance(x, np.ndarray):
            kw["out"] = draw(maybe(arrays(x.shape[:-1] + (draw(pick([n], [n + 2])),), good=[np.dtype(np.float32)])))
        call("brgemm.nn.SharedLinear.forward", layer.forward, x, **kw)


def fuzz_ternary_linear(draw):
    """brgemm.nn.TernaryLinear: its constructor, from_float, residuals, forward (uint8 or float32, out=)."""
    k, n = draw(side()), draw(side())
    if draw(st.booleans()):
        lin = brgemm.nn.Linear(max(k, 1), max(n, 1), seed=0)
        layer = call("brgemm.nn.TernaryLinear.from_float", brgemm.nn.TernaryLinear.from_float,
                     draw(st.sampled_from([lin, None, "x"])), draw(maybe(pick([0.05], [0.0, -1.0, float("nan")]))),
                     block=draw(pick([4, 64], [3, 0, 512])), max_residuals=draw(pick([0, 2], [-1])))
    else:
        t = call("brgemm.quant.ternarize", Q.ternarize,
                 np.random.default_rng(0).standard_normal((max(n, 1), max(k, 1))).astype(np.float32),
                 block=draw(pick([4, 8], [3, 5])), max_residuals=1)
        layer = call("brgemm.nn.TernaryLinear", brgemm.nn.TernaryLinear, draw(st.sampled_from([t, None, 3])),
                     draw(maybe(st.one_of(st.none(), arrays((draw(pick([max(n, 1)], [n + 2])),))))),
                     draw(maybe(pick([None, "relu"], ["gelu", 3]))),
                     input_zero_point=draw(maybe(pick([0, 128], [-1, 256, 2.5]))),
                     residuals=draw(maybe(st.one_of(st.none(), pick([0, 1], [-1, 1.5])))))
    if layer is REJECTED:
        return
    repr(layer)
    layer.nbytes()
    for _ in range(draw(st.integers(0, 3))):
        if draw(st.booleans()):
            call("brgemm.nn.TernaryLinear.residuals", setattr, layer, "residuals", draw(pick([0, 1, 5], [-1, "x"])))
            continue
        x = draw(maybe(arrays((draw(side()), draw(pick([layer.in_features], [layer.in_features + 1]))),
                              good=[np.dtype(np.uint8), np.dtype(np.float32)])))
        kw = {}
        if draw(st.booleans()) and isinstance(x, np.ndarray) and x.ndim == 2:
            kw["out"] = draw(maybe(arrays((x.shape[0], draw(pick([layer.out_features], [layer.out_features + 1]))),
                                          good=[np.dtype(np.float32)])))
        call("brgemm.nn.TernaryLinear.forward", layer.forward, x, **kw)


def fuzz_ternary_conv(draw):
    """brgemm.nn.TernaryConv2d: from_float (also as QuantizedConv2d.from_float(weights="ternary")),
    the constructor, residuals, forward (uint8 or float32, out=)."""
    c, k = draw(side(3)), draw(side(3))
    kernel = draw(st.integers(1, 3))
    if draw(st.booleans()):
        conv = call("brgemm.nn.Conv2d", brgemm.nn.Conv2d, max(c, 1), max(k, 1), kernel, seed=0, **_geometry(draw))
        if conv is REJECTED:
            return
        fn = draw(st.sampled_from([brgemm.nn.TernaryConv2d.from_float,
                                   lambda *a, **kw: brgemm.nn.QuantizedConv2d.from_float(*a, weights="ternary", **kw)]))
        layer = call("brgemm.nn.TernaryConv2d.from_float", fn, draw(st.sampled_from([conv, None, "x"])),
                     draw(maybe(pick([0.05], [0.0, -1.0, float("nan")]))),
                     draw(maybe(pick([0, 200], [-1, 256]))), draw(maybe(pick([None, 0.1], [0.0, float("inf")]))),
                     block=draw(pick([4, 8], [3, 0, 512])), max_residuals=draw(pick([0, 2], [-1])),
                     residuals=draw(maybe(pick([None, 0, 1], [-1, 1.5]))))
    else:
        t = call("brgemm.quant.ternarize", Q.ternarize,
                 np.random.default_rng(0).standard_normal((max(k, 1), max(c, 1), kernel, kernel)).astype(np.float32),
                 block=draw(pick([4, 8], [3, 5])), max_residuals=1)
        layer = call("brgemm.nn.TernaryConv2d", brgemm.nn.TernaryConv2d, draw(st.sampled_from([t, None, 3])),
                     draw(maybe(st.one_of(st.none(), arrays((draw(pick([max(k, 1)], [k + 2])),))))),
                     draw(maybe(pick([None, "relu"], ["gelu", 3]))),
                     input_zero_point=draw(maybe(pick([0, 128], [-1, 256, 2.5]))),
                     out_dtype=draw(maybe(pick([None, "float32"], ["uint8", "int8"]))), **_geometry(draw))
    if layer is REJECTED:
        return
    repr(layer)
    layer.nbytes()
    for _ in range(draw(st.integers(0, 3))):
        if draw(st.booleans()):
            call("brgemm.nn.TernaryConv2d.residuals", setattr, layer, "residuals", draw(pick([0, 1, 5], [-1, "x"])))
            continue
        h, w = draw(side(6)), draw(side(6))
        x = draw(maybe(arrays((draw(side(2)), draw(pick([layer.in_channels], [layer.in_channels + 1])), h, w),
                              good=[np.dtype(np.uint8), np.dtype(np.float32)])))
        kw = {}
        if draw(st.booleans()) and isinstance(x, np.ndarray) and x.ndim == 4:
            try:
                oh, ow = layer.output_size(h, w)
            except ValueError:
                oh, ow = 1, 1
            kw["out"] = draw(maybe(arrays((x.shape[0], layer.out_channels, oh, ow), good=[np.dtype(layer.out_dtype)])))
        call("brgemm.nn.TernaryConv2d.forward", layer.forward, x, **kw)


def fuzz_set_residuals(draw):
    lin = brgemm.nn.Linear(8, 3, seed=1)
    model = brgemm.nn.Sequential(*([lin] if draw(st.booleans()) else
                                   [brgemm.nn.TernaryLinear.from_float(lin, 0.1, block=4, max_residuals=1)]))
    call("brgemm.quant.set_residuals", Q.set_residuals, draw(maybe(st.just(model))),
         draw(maybe(pick([0, 1, 3], [-1, 1.5, None]))))


def fuzz_l2_search(draw):  # private, but its loops run without bounds checks
    from brgemm._l2search import l2_search

    b = draw(side(6))
    counts = draw(maybe(arrays((b,), good=[np.dtype(np.float64)])))
    edges = draw(maybe(arrays((draw(pick([b + 1], [b, 0, b + 3])),), good=[np.dtype(np.float64)])))
    if MODE[0] == "valid":  # a histogram: counts ≥ 0, increasing edges
        counts, edges = np.abs(counts), np.cumsum(np.abs(edges) + 0.5) - 3
    levels = st.integers(2, 256) if MODE[0] == "valid" else st.one_of(st.integers(-1, 256), st.sampled_from(HUGE))
    call("brgemm._l2search.l2_search", l2_search, counts, edges, draw(maybe(levels)), draw(maybe(st.booleans())))


def fuzz_quantize_model(draw):
    c = draw(st.integers(1, 4))
    model = brgemm.nn.Sequential(brgemm.nn.Linear(c, 3, seed=1), brgemm.nn.Linear(3, 2, seed=2))
    model = draw(maybe(st.just(model)))
    batches = draw(maybe(st.lists(arrays((draw(side(3)), c), good=[np.dtype(np.float32)]), min_size=1 if MODE[0] == 'valid' else 0, max_size=2)))
    kw = {}
    if draw(st.booleans()):
        kw["method"] = draw(maybe(st.sampled_from(["minmax", "l2", "percentile", "x"])))
    if draw(st.booleans()):
        kw["keep_float"] = draw(maybe(st.sampled_from([(), (0,), (1, 0), (7,), (-1,)])))
    if draw(st.integers(0, 3)) == 0:
        kw["auto_precision"] = True
        kw["max_accuracy_drop"] = draw(maybe(st.one_of(st.floats(-1, 2), st.just(float('nan')))))
    if draw(st.booleans()):
        kw["per_channel"] = draw(st.booleans())
    if draw(st.integers(0, 3)) == 0:
        kw["weights"] = draw(maybe(pick(["ternary", "int8"], ["int4"])))
        if kw["weights"] == "ternary":
            kw["block"] = draw(pick([4], [3]))
    call("brgemm.quant.quantize_model", Q.quantize_model, model, batches, **kw)


# --- nn layers: construct, then a random sequence of method calls ----------------------------------------

def _geometry(draw):
    kw = {}
    for name, valid in (("stride", st.integers(1, 3)), ("padding", st.one_of(st.integers(0, 2), st.sampled_from(
            ["valid", (1, 0), (0, 1, 1, 0)]), pick(["same"], ["x"]))), ("dilation", st.integers(1, 2))):
        if draw(st.booleans()):
            kw[name] = draw(maybe(valid if MODE[0] == "valid" else st.one_of(valid, st.integers(-2, 0),
                                                                            st.sampled_from(HUGE))))
    return kw


def _ctor(draw, cls):
    """(args, kwargs) for a layer constructor: mostly small valid geometry, sometimes not."""
    dtype = draw(pick(["float32", "float32", "bfloat16"], ["float16", None]))
    act = draw(maybe(pick([None, "relu", "tanh", "ktanh", "gelu"], ["bogus"])))
    if cls in (brgemm.nn.Linear, brgemm.nn.QuantizedLinear):
        args = [draw(maybe(dim())), draw(maybe(dim()))]
        kw = {"activation": act, "seed": 0}
        if cls is brgemm.nn.Linear:
            kw["dtype"] = dtype
    elif cls in (brgemm.nn.Conv2d, brgemm.nn.QuantizedConv2d):
        args = [draw(maybe(dim())), draw(maybe(dim())),
                draw(maybe(st.one_of(st.integers(1, 3), st.sampled_from([(1, 2), (2, 1)]), dim(),
                                     pick([1], [(3, 1, 1), 0]))))]
        kw = dict(_geometry(draw), activation=act, seed=0)
        if cls is brgemm.nn.Conv2d:
            kw["dtype"] = draw(pick([dtype, dtype, "dfp16"], []))
            if draw(st.booleans()):
                kw["algorithm"] = draw(maybe(pick(["auto", "direct", "winograd", "winograd2", "winograd4"],
                                                  ["fast", 4])))
    elif cls is brgemm.nn.MLP:
        args = [draw(maybe(st.lists(dim(), min_size=2 if MODE[0] == "valid" else 0, max_size=4)))]
        kw = {"activation": act, "dtype": dtype, "seed": 0}
    elif cls in (brgemm.nn.LSTM, brgemm.nn.GRU):
        args = [draw(maybe(dim())), draw(maybe(dim()))]
        kw = {"num_layers": draw(maybe(st.integers(1 if MODE[0] == "valid" else 0, 2))),
              "bidirectional": draw(st.booleans()),
              "activation": draw(maybe(pick(["exact", "ktanh"], ["relu"]))), "dtype": dtype, "seed": 0}
    elif cls is brgemm.nn.Sequential:
        args = [brgemm.nn.Flatten(), brgemm.nn.Linear(draw(st.integers(1, 4)), 2, seed=0)] + \
            draw(st.lists(junk(), max_size=1))
        kw = {}
    else:
        args, kw = [], {}
    if cls in (brgemm.nn.QuantizedLinear, brgemm.nn.QuantizedConv2d):
        for name, valid in (("input_scale", st.floats(1e-3, 1)), ("input_zero_point", st.integers(0, 255)),
                            ("output_scale", st.one_of(st.none(), st.floats(1e-3, 1))),
                            ("out_dtype", pick([None, "uint8", "float32"], ["int8"]))):
            if draw(st.booleans()):
                kw[name] = draw(maybe(valid))
    return args, kw


def _input_shape(layer, draw):
    """A plausible input shape for a constructed layer (sometimes a wrong one)."""
    n = draw(side(3))
    if hasattr(layer, "in_features"):
        shape = (n, layer.in_features)
    elif hasattr(layer, "in_channels"):
        shape = (n, layer.in_channels, draw(side(6)), draw(side(6)))
    elif hasattr(layer, "input_size"):
        shape = (draw(side(3)), n, layer.input_size)
    elif hasattr(layer, "sizes"):
        shape = (n, layer.sizes[0])
    elif isinstance(layer, brgemm.nn.Sequential):
        first = layer.layers[1].in_features
        shape = (n, first) if draw(st.booleans()) else (n, 1, 1, first)
    else:
        shape = (n, 2, 3)
    return shape


def _grad_like(draw, y):
    if isinstance(y, tuple):
        y = y[0]
    shape = getattr(y, "shape", (2, 3))
    return draw(maybe(arrays(shape, good=[np.dtype(np.float32)])))


#: Method name → how to call it on a constructed layer (the method gets draw, layer, state).
def _m_forward(draw, layer, state, name):
    x = draw(maybe(arrays(_input_shape(layer, draw), good=FLOATS + [np.dtype(np.uint8)])))
    kw = {}
    params = inspect.signature(layer.forward).parameters
    if "out" in params and draw(st.integers(0, 3)) == 0:
        kw["out"] = draw(maybe(st.none()))
    if "state" in params and draw(st.integers(0, 2)) == 0:
        kw["state"] = draw(maybe(st.none()))
    if "lengths" in params and draw(st.integers(0, 2)) == 0:
        t, n = (x.shape[:2] if getattr(x, "ndim", 0) > 1 else (2, 2))
        valid = st.lists(st.integers(1, max(t, 1)), min_size=n, max_size=n).map(lambda v: sorted(v, reverse=True))
        kw["lengths"] = draw(maybe(valid if MODE[0] == "valid" else arrays((n,), good=[np.dtype(np.int64)])))
    fn = layer if draw(st.booleans()) and callable(layer) else layer.forward
    y = call(f"{name}.forward", fn, x, **kw)
    if y is not REJECTED:
        state["y"] = y


def _m_backward(draw, layer, state, name):
    g = _grad_like(draw, state.get("y"))
    kw = {}
    params = inspect.signature(layer.backward).parameters
    if "input_grad" in params and draw(st.booleans()):
        kw["input_grad"] = draw(maybe(st.booleans()))
    if "grad_state" in params and draw(st.integers(0, 2)) == 0:
        kw["grad_state"] = draw(maybe(st.none()))
    if "out" in params and draw(st.integers(0, 3)) == 0:
        kw["out"] = draw(maybe(st.none()))
    call(f"{name}.backward", layer.backward, g, order=("forward",), **kw)


def _m_apply_sgd(draw, layer, state, name):
    kw = {}
    if "stochastic_rounding" in inspect.signature(layer.apply_sgd).parameters and draw(st.booleans()):
        kw["stochastic_rounding"] = draw(maybe(st.booleans()))
    call(f"{name}.apply_sgd", layer.apply_sgd, draw(maybe(st.sampled_from([0.1, 0.0, -1.0, float('nan'), float('inf')]))),
         order=("backward",), **kw)


def _m_train(draw, layer, state, name):
    call(f"{name}.train", layer.train, *([draw(maybe(st.booleans()))] if draw(st.booleans()) else []))


def _m_simple(method):
    def run(draw, layer, state, name):
        call(f"{name}.{method}", getattr(layer, method))
    return run


def _m_from_float(draw, layer, state, name):
    src = brgemm.nn.Linear(3, 2, seed=0) if hasattr(layer, "in_features") else brgemm.nn.Conv2d(2, 3, 1, seed=0)
    src = draw(maybe(st.just(src)))
    kw = {}
    if draw(st.booleans()):
        kw["output_scale"] = draw(maybe(st.floats(1e-3, 1)))
    if draw(st.booleans()):
        kw["input_zero_point"] = draw(maybe(st.integers(-2, 258)))
    if "outlier_fraction" in inspect.signature(type(layer).from_float).parameters and draw(st.booleans()):
        kw["outlier_fraction"] = draw(maybe(st.floats(-0.5, 1.5)))
    call(f"{name}.from_float", type(layer).from_float, src, draw(maybe(st.floats(1e-3, 1))), **kw)


def _m_set(attr):
    def run(draw, layer, state, name):
        cur = getattr(layer, attr)
        shape = getattr(cur, "shape", (2,))
        call(f"{name}.{attr}=", setattr, layer, attr,
             draw(maybe(arrays(draw(st.sampled_from([shape, shape[::-1], (1,)])), good=[np.dtype(np.float32)]))))
    return run


def _m_getitem(draw, layer, state, name):
    # IndexError past the end is the sequence protocol (iteration stops on it), not a bug
    try:
        call(f"{name}.__getitem__", lambda i: layer[i], draw(maybe(st.integers(-4, 4))))
    except IndexError as e:
        assert "out of range" in str(e) or "index-sized integer" in str(e)  # a list's own messages


def _m_prune(draw, layer, state, name):
    kw = {}
    if draw(st.booleans()):
        kw["block"] = draw(maybe(pick([None, 1, (1, 1), 2], [0, -1, (3, 7), "x", (1,), 2.5])))
    amount = draw(maybe(st.one_of(st.floats(0, 0.99), pick([0.0, 0.5], [1.0, -0.1, float("nan"), "half"]))))
    call(f"{name}.prune", layer.prune, amount, **kw)


def _m_packing(draw, layer, state, name):
    call(f"{name}.packing=", setattr, layer, "packing", draw(maybe(pick(["auto", "dense", "sparse"], ["csr", 3]))))


def _m_get(attr):
    return lambda draw, layer, state, name: getattr(layer, attr)


METHODS = {
    "forward": _m_forward, "__call__": _m_forward, "backward": _m_backward, "apply_sgd": _m_apply_sgd,
    "train": _m_train, "eval": _m_simple("eval"), "zero_grad": _m_simple("zero_grad"),
    "parameters": _m_simple("parameters"), "output_size": None, "from_float": _m_from_float,
    "weight": _m_set("weight"), "bias": _m_set("bias"), "weight_scale": _m_set("weight_scale"),
    "weight_grad": None, "bias_grad": None,
    "__getitem__": _m_getitem, "__len__": _m_simple("__len__"), "__iter__": _m_simple("__iter__"),
}


def _m_output_size(draw, layer, state, name):
    call(f"{name}.output_size", layer.output_size, draw(maybe(dim())), draw(maybe(dim())))


METHODS["output_size"] = _m_output_size
METHODS["prune"], METHODS["packing"] = _m_prune, _m_packing
for _attr in ("mask", "sparsity", "block_sparse", "block_density", "exponents"):
    METHODS[_attr] = _m_get(_attr)
METHODS["algorithm_used"] = lambda draw, layer, state, name: getattr(layer, "algorithm_used")
METHODS["weight_grad"] = METHODS["bias_grad"] = lambda draw, layer, state, name: getattr(layer, name.split(".")[-1],
                                                                                         None)

LAYERS = ("Conv2d", "QuantizedConv2d", "Linear", "QuantizedLinear", "MLP", "LSTM", "GRU", "Sequential", "Flatten")


def public_methods(cls):
    """Public methods and settable properties of a class (what a user can call or assign)."""
    names = []
    for n in dir(cls):
        if n.startswith("_") and n not in ("__call__", "__getitem__", "__len__", "__iter__"):
            continue
        v = inspect.getattr_static(cls, n, None)
        if isinstance(v, property) or callable(v) or isinstance(v, (classmethod, staticmethod)):
            if n in ("__call__", "__getitem__", "__len__", "__iter__") and n not in cls.__dict__ and \
                    not any(n in b.__dict__ for b in cls.__mro__[:-1]):
                continue
            names.append(n)
    return names


def fuzz_layer(cname):
    cls = getattr(brgemm.nn, cname)
    methods = [m for m in public_methods(cls) if m in METHODS]

    def fuzz(draw):
        args, kw = _ctor(draw, cls)
        layer = call(f"brgemm.nn.{cname}", cls, *args, **kw)
        if layer is REJECTED:
            return
        repr(layer)
        state = {}
        steps = draw(st.lists(st.sampled_from(methods), max_size=5))
        if draw(st.booleans()):
            steps = [m for m in ("forward", "backward") if m in methods] + steps  # the common path, then anything
        for m in steps:
            METHODS[m](draw, layer, state, f"brgemm.nn.{cname}")
    return fuzz


def fuzz_bucket_by_length(draw):
    lengths = draw(maybe(st.one_of(arrays((draw(side(6)),), good=[np.dtype(np.int64)]),
                                   st.lists(st.integers(1, 9), min_size=1, max_size=6))))
    kw = {}
    if draw(st.booleans()):
        kw["shuffle"] = draw(maybe(st.booleans()))
        kw["seed"] = draw(maybe(st.integers(0, 9)))
    call("brgemm.nn.bucket_by_length", brgemm.nn.bucket_by_length, lengths, draw(maybe(st.one_of(size(), pos()))), **kw)


def fuzz_quantize_per_channel(name, fn):
    def fuzz(draw):
        shape = tuple(draw(side(4)) for _ in range(draw(st.integers(2 if MODE[0] == "valid" else 0, 4))))
        call(name, fn, draw(maybe(arrays(shape))))
    return fuzz


# --- torch operators -------------------------------------------------------------------------------

#: numpy dtypes a tensor is made from (torch.from_numpy, bfloat16 through float32)
T_DTYPES = [np.dtype(d) for d in (np.float32, BF16, np.uint8, np.int8, np.float64, np.int64, np.int32, np.float16)]


@st.composite
def tensors(draw, shape, good=(np.dtype(np.float32),)):
    """A tensor (sometimes non-contiguous, sometimes of another dtype), or junk."""
    odd = odds()
    x = draw(arrays(shape, good=list(good), dtypes=list(T_DTYPES) if odd and draw(st.integers(0, odd)) == 0
                    else list(good)))
    x = np.array(x, dtype=x.dtype.newbyteorder("="))  # torch wants writable native-order memory
    t = torch.from_numpy(x.astype(np.float32) if x.dtype == BF16 else x)
    if x.dtype == BF16:
        t = t.to(torch.bfloat16)
    layout = draw(st.integers(0, 5)) if odd else 2
    if layout == 0 and t.dim() >= 2:
        t = t.transpose(-1, -2).contiguous().transpose(-1, -2)
    elif layout == 1 and t.dim() >= 1:
        t = torch.repeat_interleave(t, 2, dim=-1)[..., ::2]
    elif layout == 2:
        t = t.requires_grad_(t.is_floating_point())
    return t


def maybe_t(shape, good=(np.dtype(np.float32),)):
    return maybe(tensors(shape, good))


def _op(name, *args, **kw):
    """call() for an operator. torch's own argument parser rejects values of the wrong type for
    the schema (a str for a Tensor, 2**63 for an int) with a RuntimeError, before our code
    runs: that is the framework's, and its message names the argument."""
    fn = getattr(torch.ops.brgemm, name)
    CALLS[f"torch.ops.brgemm.{name}"] += 1
    try:
        out = fn(*args, **kw)
        OK[f"torch.ops.brgemm.{name}"] += 1
    except (TypeError, ValueError) as e:
        assert str(e).strip(), f"{name}: {type(e).__name__} without a message"
        if VERBOSE and MODE[0] == "valid":
            WHY[f"torch.ops.brgemm.{name}"][str(e)[:90]] += 1
        return REJECTED
    except RuntimeError as e:
        if str(e).startswith(f"brgemm::{name}() "):  # the parser: "brgemm::gemm() Expected a value of type ..."
            return REJECTED
        raise
    # The backward ops are not differentiated again, and the int8 ones are inference only (torch
    # says "no autograd formula was registered" when asked for their gradient).
    if not name.endswith("_backward") and not name.startswith("quantized_"):
        backward(name, out)
    return out


def backward(name, out):
    """Gradients through the op's autograd formula, when the output asks for them."""
    outs = out if isinstance(out, (tuple, list)) else (out,)
    t = next((o for o in outs if isinstance(o, torch.Tensor) and o.requires_grad), None)
    if t is not None and t.numel():
        call(f"torch.ops.brgemm.{name}.backward", lambda: t.float().sum().backward(), order=("train=True",))


def fuzz_op(name):
    def fuzz(draw):
        valid = MODE[0] == "valid"
        n, i, o = draw(side(3)), draw(side(4)), draw(side(4))
        f32 = (np.dtype(np.float32),)
        lowp = (draw(st.sampled_from([np.dtype(np.float32), BF16])),) if valid else (np.dtype(np.float32), BF16)
        acts = pick(["none", "relu", "tanh", "ktanh"], ["bogus"])
        fwd = name.removesuffix("_backward")
        if name in ("gemm", "batch_reduce"):
            lead = (draw(side(3)),) if name == "batch_reduce" else ()
            _op(name, draw(maybe_t(lead + (n, i), lowp)), draw(maybe_t(lead + (i, o), lowp)))
        elif fwd == "batch_norm_blocked":
            bc, cb = draw(st.sampled_from([4, 12, 16, 64])), draw(side(3))
            shape = (n, cb, draw(side(3)), draw(side(3)), bc)
            ch = draw(maybe(pick([(cb - 1) * bc + 1, cb * bc], [0, -1, cb * bc + 1, HUGE[0]])))
            vec = (ch if type(ch) is int and 0 < ch <= 4 * 64 else 3,)
            x = draw(maybe_t(shape, lowp))
            w, b = (draw(st.one_of(st.none(), maybe_t(vec))) for _ in range(2))
            eps = draw(maybe(pick([1e-5, 0.0, 0.5], [-1.0, float("nan"), float("inf")])))
            r = draw(st.one_of(st.none(), maybe_t(shape, lowp)))
            relu = draw(maybe(st.booleans()))
            if name == fwd:
                _op(name, x, w, b, eps, r, relu, ch)
                return
            out = _op(fwd, x, w, b, eps, r, relu, ch) if valid else REJECTED
            y, mean, var = (out if out is not REJECTED else
                            (draw(maybe_t(shape, lowp)), draw(maybe_t(vec)), draw(maybe_t(vec))))
            g = draw(maybe_t(shape, lowp))
            _op(name, g, x, y, w, mean, var, eps, relu, draw(maybe(st.booleans())), draw(maybe(st.booleans())))
        elif fwd == "linear":
            x, w, b, act = draw(maybe_t((n, i), lowp)), draw(maybe_t((o, i), lowp)), draw(maybe_t((o,))), draw(maybe(acts))
            if name == "linear":
                _op(name, x, w, b, act)
            elif valid:  # the backward of a forward that ran
                y = _op("linear", x, w, b, act)
                if y is not REJECTED:
                    _op(name, draw(tensors(tuple(y.shape), (BF16 if y.dtype == torch.bfloat16 else f32[0],))),
                        x, w, b, y, act, draw(st.booleans()))
            else:
                _op(name, draw(maybe_t((n, o))), x, w, b, draw(maybe_t((n, o))), act, draw(maybe(st.booleans())))
        elif fwd in ("conv2d", "quantized_conv2d", "conv2d_moments"):
            r = draw(st.integers(1, 3))
            h, w = (draw(st.integers(r, 6)) for _ in range(2)) if valid else (draw(side()) for _ in range(2))
            geo = [draw(maybe(pick([[1, 1], [2, 1]], [[0, 1], [1], list(HUGE[:2])]))),
                   draw(maybe(pick([[0, 0], [1, 1], [1, 0, 0, 1]], [[-1, 0], [1]]))),
                   draw(maybe(pick([[1, 1], [2, 2]], [[0, 1], [HUGE[0], 1]])))]
            q = name == "quantized_conv2d"
            x = draw(maybe_t((n, i, h, w), (np.dtype(np.uint8),) if q else lowp))
            wt = draw(maybe_t((o, i, r, r), (np.dtype(np.int8),) if q else lowp))
            bias, act = draw(maybe_t((o,))), draw(maybe(acts))
            if name == "conv2d":
                kw = {}
                if draw(st.booleans()):
                    kw["groups"] = draw(maybe(pick([1], [0, 2])))
                if draw(st.booleans()):
                    kw["blocked_output"] = draw(maybe(st.booleans()))
                if draw(st.booleans()):  # a residual: right only for a blocked output of the right shape
                    kw["blocked_output"] = True
                    ko = -(-o // 16) if o >= 16 else 1
                    kw["residual"] = draw(maybe_t((n, ko, h, w, 16 if o >= 16 else -(-o // 4) * 4), lowp))
                _op(name, x, wt, bias, *geo, activation=act, **kw)
            elif name == "conv2d_moments":  # a blocked input, as the fused convolutions give it
                xb = _op("to_blocked", x) if valid and isinstance(x, torch.Tensor) else x
                _op(name, xb, wt, bias, *geo, draw(maybe(pick([1], [0, 2]))))
            elif name == "conv2d_backward":
                y = _op("conv2d", x, wt, bias, *geo, activation=act) if valid else draw(maybe_t((n, o, h, w)))
                if y is not REJECTED:
                    g = draw(maybe_t(tuple(y.shape) if isinstance(y, torch.Tensor) else (n, o, h, w), lowp))
                    _op(name, g, x, wt, bias, y, *geo, act, draw(maybe(st.booleans())))
            else:
                _op(name, x, wt, draw(maybe_t((o,))), bias, *geo, draw(maybe(st.floats(1e-3, 1))),
                    draw(maybe(pick(range(256), [-1, 256]))), draw(maybe(st.floats(1e-3, 1))),
                    draw(maybe(st.integers(0, 255))), draw(maybe(pick(["float32", "uint8"], ["int8"]))), act)
        elif name == "quantized_linear":
            _op(name, draw(maybe_t((n, i), (np.dtype(np.uint8),))), draw(maybe_t((o, i), (np.dtype(np.int8),))),
                draw(maybe_t((o,))), draw(maybe_t((o,))), draw(maybe(st.floats(1e-3, 1))),
                draw(maybe(pick(range(256), [-1, 256]))), draw(maybe(st.floats(1e-3, 1))),
                draw(maybe(st.integers(0, 255))), draw(maybe(pick(["float32", "uint8"], ["int8"]))), draw(maybe(acts)))
        elif fwd in ("lstm", "gru"):
            g = 4 if fwd == "lstm" else 3
            t, h = draw(side(3)), draw(st.integers(1, 3))
            x = draw(maybe_t((t, n, i), lowp))
            weights = [draw(maybe_t((g * h, i))), draw(maybe_t((g * h, h))), draw(maybe_t((g * h,))),
                       draw(maybe_t((g * h,)))]
            if valid:
                lengths = draw(st.one_of(st.none(), st.lists(st.integers(1, t), min_size=n, max_size=n).map(
                    lambda v: torch.tensor(sorted(v, reverse=True)))))
            else:
                lengths = draw(st.one_of(st.none(), maybe_t((n,), (np.dtype(np.int64),))))
            act = draw(maybe(pick(["exact", "ktanh"], ["none"])))
            rev = draw(maybe(st.booleans()))
            states = [draw(st.one_of(st.none(), maybe_t((n, h)))) for _ in range(2 if g == 4 else 1)]
            if name == fwd:
                _op(name, x, *states, *weights, lengths, rev, act, draw(maybe(st.booleans())))
                return
            if valid:  # the workspace of a training forward
                out = _op(fwd, x, *states, *weights, lengths, rev, act, True)
                if out is REJECTED:
                    return
                ws = out[-1]
                grads = [draw(st.one_of(st.none(), tensors(tuple(v.shape)))) for v in out[:-1]]
            else:
                grads = [draw(st.one_of(st.none(), maybe_t((t, n, h))))] + \
                    [draw(st.one_of(st.none(), maybe_t((n, h)))) for _ in range(2 if g == 4 else 1)]
                ws = draw(maybe_t((draw(st.integers(0, 40)),)))
            _op(name, *grads, x, *weights, lengths, ws, rev, act)
        elif fwd in ("ktanh", "taylor_softmax"):
            shape = tuple(draw(side(4)) for _ in range(draw(st.integers(1 if valid else 0, 3))))
            x = draw(maybe_t(shape, lowp))
            if name == "ktanh":
                _op(name, x)
            elif name == "ktanh_backward":
                _op(name, draw(maybe_t(shape)), x)
            else:
                dim = draw(maybe(st.integers(-len(shape), len(shape) - 1) if valid else
                                 st.one_of(st.integers(-3, 3), st.sampled_from(HUGE[:2]))))
                order = draw(maybe(pick([2, 4, 6], [-1, 0, 1, 3, 18])))
                if name == "taylor_softmax":
                    _op(name, x, dim, order)
                else:
                    _op(name, draw(maybe_t(shape)), draw(maybe_t(shape, f32)) if valid else x, dim, order)
        elif fwd == "max_pool2d_blocked":
            if name == fwd:  # the forward pass takes quantized uint8 activations too
                u8 = np.dtype(np.uint8)
                lowp = (draw(st.sampled_from([np.dtype(np.float32), BF16, u8])),) if valid else lowp + (u8,)
            k, bc, cb = draw(st.integers(1, 3)), draw(st.sampled_from([4, 8, 16])), draw(side(3))
            h, w = (draw(st.integers(k, 6)) for _ in range(2)) if valid else (draw(side()) for _ in range(2))
            geo = [draw(maybe(pick([[k, k], [k, 1]], [[0, 1], [7, 7], [1, 2, 3], list(HUGE[:2])]))),
                   draw(maybe(pick([[1, 1], [2, 2], [3, 1]], [[0, 1], [-1, 1], [HUGE[0], 1]]))),
                   draw(maybe(pick([[0, 0], [k // 2, 0]], [[-1, 0], [k, k], [HUGE[0], 0]])))]
            x = draw(maybe_t((n, cb, h, w, bc), lowp))
            if name == fwd:
                _op(name, x, *geo)
                return
            y = _op(fwd, x, *geo) if valid else draw(maybe_t((n, cb, h, w, bc)))
            if y is not REJECTED:
                _op(name, draw(maybe_t(tuple(y.shape) if isinstance(y, torch.Tensor) else (n, cb, h, w, bc), lowp)),
                    x, *geo)
        elif name == "global_avg_pool_blocked_u8":
            bc, cb = draw(st.sampled_from([3, 4, 8, 16, 64])), draw(side(3))
            shape = (n, cb, draw(side(3)), draw(side(3)), bc)
            ch = draw(maybe(pick([(cb - 1) * bc + 1, cb * bc], [0, -1, cb * bc + 1, HUGE[0]])))
            scale = draw(maybe(pick([1.0, 0.02, 3e-3, 1e-40], [0.0, -1.0, math.nan, math.inf, 1e-50, 1e39])))
            zp = draw(maybe(pick([0, 128, 255], [-1, 256, HUGE[0]])))
            _op(name, draw(maybe_t(shape, (np.dtype(np.uint8),))), ch, scale, zp)
        elif fwd == "global_avg_pool_blocked":
            bc, cb = draw(st.sampled_from([4, 8, 16])), draw(side(3))
            shape = (n, cb, draw(side(3)), draw(side(3)), bc)
            ch = draw(maybe(pick([(cb - 1) * bc + 1, cb * bc], [0, -1, cb * bc + 1, HUGE[0]])))
            if name == fwd:
                _op(name, draw(maybe_t(shape, lowp)), ch)
            else:
                _op(name, draw(maybe_t((n, ch if type(ch) is int and 0 <= ch < 100 else 3), lowp)),
                    draw(maybe(pick([list(shape)], [list(shape[:3]), [n, HUGE[0], 2, 2, bc], [-1, 1, 1, 1, 1]]))))
        elif name == "to_blocked":
            x = draw(maybe_t((n, draw(side(40)), draw(side(4)), draw(side(4))), lowp))
            if isinstance(x, torch.Tensor) and x.dim() == 4 and draw(st.booleans()):  # read from NHWC memory
                x = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_(x.requires_grad)
            _op(name, x)
        elif name == "quantize_to_blocked":
            x = draw(maybe_t((n, draw(side(40)), draw(side(4)), draw(side(4))), lowp))
            if isinstance(x, torch.Tensor) and x.dim() == 4 and draw(st.booleans()):  # read from NHWC memory
                x = x.detach().contiguous(memory_format=torch.channels_last)
            scale = draw(maybe(pick([1.0, 0.02, 3e-3], [0.0, -1.0, math.nan, math.inf])))
            _op(name, x, scale, draw(maybe(pick([0, 128, 255], [-1, 256, HUGE[0]]))))
        elif name == "from_blocked":
            bc, cb = draw(st.sampled_from([4, 8, 16, 32])), draw(side(3))
            _op(name, draw(maybe_t((n, cb, draw(side(3)), draw(side(3)), bc), lowp)),
                draw(maybe(pick([cb * bc, (cb - 1) * bc + 1], [0, -1, cb * bc + 1, HUGE[0]]))))
        elif name == "dropout":
            x = draw(maybe_t(tuple(draw(side(6)) for _ in range(draw(st.integers(1, 3))))))
            p = draw(maybe(pick([0.0, 0.1, 0.5, 1.0], [-0.1, 1.5, math.nan, math.inf])))
            _op(name, x, p, draw(maybe(pick([0, 7, -2**63, 2**63 - 1], [HUGE[0]]))))
        else:
            raise AssertionError(f"no fuzzer for torch.ops.brgemm.{name}")
    return fuzz


def torch_op_names():
    if torch is None:
        return []
    return sorted(n.split("::", 1)[1] for n in torch._C._dispatch_get_all_op_names() if n.startswith("brgemm::"))


# --- what is covered -------------------------------------------------------------------------------

SUBJECTS = {
    "brgemm.gemm": fuzz_gemm, "brgemm.batch_reduce": fuzz_batch_reduce, "brgemm.pack_b": fuzz_pack_b,
    "brgemm.Kernel": fuzz_kernel, "brgemm.Epilogue": fuzz_epilogue, "brgemm.PackedB": fuzz_packedb,
    "brgemm.ukernels": fuzz_isa, "brgemm.isa": fuzz_isa, "brgemm.set_isa": fuzz_isa, "brgemm.available_isas": fuzz_isa,
    "brgemm.set_num_threads": fuzz_threads, "brgemm.get_num_threads": fuzz_threads,
    "brgemm.layout.block_size": fuzz_block_size, "brgemm.layout.to_blocked": fuzz_to_blocked,
    "brgemm.layout.from_blocked": fuzz_from_blocked,
    "brgemm.nn.bucket_by_length": fuzz_bucket_by_length, "brgemm.nn.quantize_per_channel": fuzz_quantize_per_channel("brgemm.nn.quantize_per_channel",
                                                                  brgemm.nn.quantize_per_channel),
    "brgemm.quant.quantize_per_channel": fuzz_quantize_per_channel("brgemm.quant.quantize_per_channel",
                                                                   Q.quantize_per_channel),
    "brgemm.nn.functional.activation_backward": fuzz_activation_backward,
    "brgemm.nn.functional.cross_entropy": fuzz_cross_entropy,
    "brgemm.nn.functional.dropout": fuzz_dropout,
    "brgemm.quant.QParams": fuzz_qparams, "brgemm.quant.quantize": fuzz_quantize("quantize"),
    "brgemm.quant.dequantize": fuzz_quantize("dequantize"), "brgemm.quant.choose_qparams": fuzz_choose_qparams,
    "brgemm.quant.MinMaxObserver": fuzz_minmax_observer, "brgemm.quant.HistogramObserver": fuzz_histogram_observer,
    "brgemm.quant.split_outliers": fuzz_split_outliers, "brgemm.quant.outlier_error": fuzz_outlier_error,
    "brgemm.quant.ternarize": fuzz_ternarize, "brgemm.quant.Ternary": fuzz_ternarize,
    "brgemm.quant.quantize_model": fuzz_quantize_model, "brgemm._l2search.l2_search": fuzz_l2_search,
    "brgemm.quant.share_weights": fuzz_sharing, "brgemm.quant.centroid_gradients": fuzz_sharing,
    "brgemm.quant.pack_shared": fuzz_sharing, "brgemm.quant.SharedWeights": fuzz_sharing,
    "brgemm.nn.SharedLinear": fuzz_shared_linear, "brgemm.nn.TernaryLinear": fuzz_ternary_linear,
    "brgemm.nn.TernaryConv2d": fuzz_ternary_conv, "brgemm.quant.set_residuals": fuzz_set_residuals,
}
for _f in ("ktanh", "ksigmoid", "kswish", "kgelu", "tanh", "sigmoid", "swish", "gelu", "relu", "relu6", "activation"):
    SUBJECTS[f"brgemm.nn.functional.{_f}"] = fuzz_elementwise(_f)
for _f in ("taylor_softmax", "taylor_softmax_backward", "softmax", "softmax_backward"):
    SUBJECTS[f"brgemm.nn.functional.{_f}"] = fuzz_softmax(_f)
for _c in LAYERS:
    SUBJECTS[f"brgemm.nn.{_c}"] = fuzz_layer(_c)
for _op_name in torch_op_names():
    SUBJECTS[f"torch.ops.brgemm.{_op_name}"] = fuzz_op(_op_name)

#: Methods of public classes called by their class's fuzzer (the Kernel, observers and QParams
#: fuzzers call theirs directly).
CLASS_METHODS = {
    "brgemm.Kernel": {"__call__", "run_stride", "run_offset", "run_address"}, "brgemm.quant.QParams": {"quantize", "dequantize"},
    "brgemm.quant.MinMaxObserver": {"observe", "qparams"},
    "brgemm.quant.HistogramObserver": {"observe", "qparams", "l2_range", "edges"},
    "brgemm.quant.SharedWeights": {"gemm", "decode", "fine_tune", "nbytes"},
}


def public_names():
    """Every public callable: module functions and classes by the modules' own lists (or, where
    a module has none, the names it defines), torch operators, and each class's methods."""
    names = []
    mods = {"brgemm": brgemm, "brgemm.layout": brgemm.layout, "brgemm.nn": brgemm.nn,
            "brgemm.nn.functional": F, "brgemm.quant": Q}
    for mname, mod in mods.items():
        listed = getattr(mod, "__all__", None) or [n for n in dir(mod) if not n.startswith("_")]
        for n in listed:
            v = getattr(mod, n)
            if inspect.ismodule(v) or not callable(v):
                continue
            if getattr(v, "__module__", "").split(".")[0] not in ("brgemm",):
                continue  # imported from elsewhere (numpy, dataclasses, ...)
            names.append(f"{mname}.{n}")
    names += [f"torch.ops.brgemm.{n}" for n in torch_op_names()]
    return names


def test_every_public_name_is_fuzzed():
    # brgemm.Kernel is defined in brgemm._api and re-exported: the name users see is the key
    missing = [n for n in public_names() if n not in SUBJECTS]
    assert not missing, f"public names without a fuzzer (add one to SUBJECTS): {missing}"
    for cname in LAYERS:
        cls = getattr(brgemm.nn, cname)
        unknown = [m for m in public_methods(cls) if m not in METHODS]
        assert not unknown, f"brgemm.nn.{cname} methods without a fuzzer (add them to METHODS): {unknown}"
    for cname, known in CLASS_METHODS.items():
        mod, _, attr = cname.rpartition(".")
        cls = getattr({"brgemm": brgemm, "brgemm.quant": Q}[mod], attr)
        own = {m for m in public_methods(cls) if m != "__call__" or cls is brgemm.Kernel}
        own -= {n for n in dir(cls) if isinstance(inspect.getattr_static(cls, n, None), property)
                and inspect.getattr_static(cls, n).fset is None and n not in known}
        own -= {"handle", "name", "isa", "m", "n", "k", "lda", "ldb", "ldc", "beta", "batch", "dtype"}
        assert own <= known, f"{cname} methods without a fuzzer: {sorted(own - known)}"


# --- what the fuzzer found: each fixed at its source, and pinned here ------------------------------

@pytest.mark.parametrize("dtype, elem", [("f32", np.float32), ("f32f16", np.float16), ("bf16", BF16),
                                         ("u8s8", np.int8)])
def test_pack_b_checks_the_packed_size_for_overflow(dtype, elem):
    # rows·ldb·KP·itemsize wrapped around: std::bad_alloc (a MemoryError), or a small buffer
    for ldb in (2 ** 61, 2 ** 62, 2 ** 63 - 1):
        with pytest.raises(ValueError, match="ldb: sizes overflow"):
            brgemm.pack_b(np.ones((3, 5), elem), dtype, ldb=ldb)


def test_block_size_takes_integers_only():
    with pytest.raises(TypeError, match="channels must be an integer"):
        brgemm.layout.block_size(float("inf"))  # was OverflowError from int()
    with pytest.raises(TypeError, match="channels must be an integer"):
        brgemm.layout.block_size(2.5)  # was silently 2
    with pytest.raises(ValueError, match="channels must be in 1..2"):
        brgemm.layout.block_size(2 ** 64)
    assert brgemm.layout.block_size(np.int64(3)) == 3


def test_minmax_observer_axis_is_checked():
    with pytest.raises(ValueError, match="axis 5 is out of range for x with 2 dimensions"):
        Q.MinMaxObserver(axis=5).observe(np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match="axis .* is out of range"):
        Q.MinMaxObserver(axis=2 ** 63).observe(np.ones((2, 3), np.float32))  # was OverflowError in numpy
    with pytest.raises(TypeError, match="axis must be an integer"):
        Q.MinMaxObserver(axis=1.0)


def test_histogram_bins_are_a_bounded_integer():
    with pytest.raises(TypeError, match="bins must be an integer"):
        Q.HistogramObserver(bins=float("inf"))  # was OverflowError from int()
    with pytest.raises(ValueError, match="bins must be in 2..65536"):
        Q.choose_qparams(np.ones(3, np.float32), method="l2", bins=2 ** 62)  # numpy: "Maximum allowed dimension"


def test_histogram_edges_before_observe_says_what_to_call():
    with pytest.raises(RuntimeError, match="observe some data first"):  # was a TypeError on None - None
        Q.HistogramObserver().edges


def test_l2_search_checks_its_sizes():
    from brgemm._l2search import l2_search

    # it loops without bounds checks: short edges used to read past the array
    with pytest.raises(ValueError, match="edges must have len\\(counts\\) \\+ 1 = 4 values"):
        l2_search(np.ones(3), np.arange(2.0), 256, False)
    with pytest.raises(ValueError, match="levels must be in 2..2"):
        l2_search(np.ones(3), np.arange(4.0), 2 ** 63, False)  # was OverflowError
    counts, edges = np.ones(3), np.arange(4.0)
    counts.setflags(write=False)
    edges.setflags(write=False)
    lo, hi, err = l2_search(counts, edges, 256, False)  # read-only input was a BufferError
    assert (lo, hi) == (0.0, 3.0) and err >= 0


def test_flatten_checks_its_input_and_takes_empty_batches():
    f = brgemm.nn.Flatten()
    with pytest.raises(TypeError, match="x must be a numpy array"):
        f.forward(None)  # was AttributeError
    with pytest.raises(ValueError, match="0-d"):
        f.forward(np.array(1.0))  # was IndexError
    assert f.forward(np.ones((0, 2, 3), np.float32)).shape == (0, 6)  # was a reshape error
    with pytest.raises(ValueError, match="grad_out must have the shape of the last output"):
        f.backward(np.ones((2, 3), np.float32))


def test_empty_inputs_have_their_own_messages():
    with pytest.raises(ValueError, match="logits must be \\(N, classes\\) with N and classes at least 1"):
        F.cross_entropy(np.ones((2, 0), np.float32), np.zeros(2, np.int64))  # numpy: "zero-size array to ..."
    with pytest.raises(ValueError, match="weight has a zero-size dimension"):
        brgemm.nn.quantize_per_channel(np.ones((0, 3), np.float32))  # numpy: "cannot reshape ..."


def test_layer_sizes_are_bounded_before_anything_is_allocated():
    # products of these overflowed inside numpy ("array is too big"), naming no argument
    for cls in (brgemm.nn.Linear, brgemm.nn.QuantizedLinear):
        with pytest.raises(ValueError, match="in_features must be at most 2\\*\\*31 - 1"):
            cls(2 ** 62, 4)
    with pytest.raises(ValueError, match="padding must hold integers in 0..2\\*\\*31 - 1"):
        brgemm.nn.Conv2d(2, 2, 1, padding=2 ** 62)
    with pytest.raises(TypeError, match="h must be an integer"):
        brgemm.nn.Conv2d(2, 2, 1).output_size(float("inf"), 3)  # was OverflowError from int()


@pytest.mark.parametrize("act", ["gelu", "swish", "kgelu", "kswish"])
def test_bf16_conv_training_forward_with_an_activation_from_its_input(act):
    # These keep the pre-activation z for backward; the driver then stored act(z) as float32
    # into the bfloat16 output: twice its size, a heap overflow (found as a crash at exit).
    conv = brgemm.nn.Conv2d(2, 1, 1, activation=act, dtype="bfloat16", seed=0)
    x = np.random.default_rng(0).standard_normal((3, 2, 4, 4)).astype(np.float32)
    y_eval = conv.eval().forward(x).copy()  # one fused epilogue
    y_train = conv.train().forward(x)       # z kept, activation after
    np.testing.assert_array_equal(y_train.astype(np.float32), y_eval.astype(np.float32))
    assert conv.backward(np.ones(y_train.shape, np.float32)).shape == x.shape


def test_quantize_per_channel_of_subnormal_weights():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # was a division by a zero scale, then NaN cast to int8
        q, scale = brgemm.nn.quantize_per_channel(np.array([[1e-45, 0.0], [1.0, -1.0]], np.float32))
    assert np.all(scale > 0) and q[0].tolist() == [0, 0] and q[1].tolist() == [127, -127]


def test_quantize_model_checks_the_model_first():
    with pytest.raises(TypeError, match="model must be a brgemm.nn.Sequential"):
        Q.quantize_model(None, [np.ones((2, 3), np.float32)], auto_precision=True)  # was AttributeError


@pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
def test_torch_ops_on_empty_shapes():
    # reshape(-1, 0) is ambiguous in torch: these were RuntimeErrors from inside the operators
    A = torch.ones((2, 3, 0), requires_grad=True)
    B = torch.ones((2, 0, 4), requires_grad=True)
    torch.ops.brgemm.batch_reduce(A, B).sum().backward()
    assert B.grad.shape == (2, 0, 4)
    with pytest.raises(ValueError, match="weight must be \\(out_features, in_features\\), both at least 1"):
        torch.ops.brgemm.linear(torch.ones(2, 0), torch.ones(3, 0))
    with pytest.raises(ValueError, match="weight must be \\(out_features, in_features\\), both at least 1"):
        torch.ops.brgemm.quantized_linear(torch.ones(2, 0, dtype=torch.uint8), torch.ones(3, 0, dtype=torch.int8),
                                          torch.ones(3), None, 1.0, 0)


@pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
def test_rnn_backward_without_train_says_what_to_call():
    x = torch.ones(2, 1, 3)
    w_ih, w_hh = torch.ones(8, 3, requires_grad=True), torch.ones(8, 2)
    out = torch.ops.brgemm.lstm(x, None, None, w_ih, w_hh, None, None, train=False)
    with pytest.raises(RuntimeError, match="call it with train=True"):
        out[0].sum().backward()


_START = time.perf_counter()
_FUZZERS = sorted(set(SUBJECTS.values()), key=lambda f: min(k for k, v in SUBJECTS.items() if v is f))
_IDS = [min(k for k, v in SUBJECTS.items() if v is f) for f in _FUZZERS]


@pytest.mark.parametrize("fuzzer", _FUZZERS, ids=_IDS)
def test_fuzz(fuzzer, request):
    @FUZZ
    @given(st.data())
    def run(data):
        MODE[0] = data.draw(st.sampled_from(MODES))
        fuzzer(data.draw)

    run()
    RUN.add(request.node.callspec.id)


def test_zz_call_count(capsys):
    """Every fuzzer ran, and the calls add up: more than 10⁴ by default, about 10⁵ with
    BRGEMM_FUZZ_EXAMPLES=1100. Runs last (pytest keeps a file's order)."""
    total = sum(CALLS.values())
    with capsys.disabled():
        print(f"\nfuzz: {total} calls ({sum(OK.values())} returned) over {len(CALLS)} subjects in "
              f"{time.perf_counter() - _START:.1f} s ({EXAMPLES} examples each)")
        if VERBOSE:
            for k in sorted(CALLS):
                print(f"  {k:55s} {CALLS[k]:7d} {OK[k]:7d}")
                for why, c in WHY[k].most_common(3):
                    print(f"      {c:5d} {why}")
    if RUN != set(_IDS):
        pytest.skip("only part of the fuzz suite ran")
    # about 100 calls per example count (some examples call several times, a few none); the
    # default must make the 10⁴ that CI promises
    floor = max(80 * EXAMPLES, 10 ** 4 if EXAMPLES >= DEFAULT_EXAMPLES else 0)
    assert total >= floor, f"only {total} calls for {EXAMPLES} examples per fuzzer"
    untouched = [n for n in SUBJECTS if not any(k == n or k.startswith(n + ".") for k in CALLS)]
    assert not untouched, f"subjects never called: {untouched}"
