"""Test oracles for brgemm: plain numpy references in float64 and the error bounds they are
compared with. This is the *oracle*, not the fallback: the scalar C++ ukernel is production
code and is tested against this module like every ISA (STYLE.md point 8).

The batch-reduce GEMM is

    C[m×n] = beta·C0 + Σ_{i<count} A_i[m×k] · B_i[k×n]

and beta = 0 means C0 is never read (it may hold NaN): the reference then ignores it.

Besides the reference, :func:`make_problem` builds the operands of one kernel call the way
the kernel addresses them (flat float32 buffers with leading dimensions, stride / offset /
address batches, padding that the kernel must leave alone) and :meth:`Problem.check`
compares a result with the reference and checks that nothing outside the m×n window of C
was written.
"""

from dataclasses import dataclass, field

import numpy as np

#: Unit roundoff of float32 (round to nearest): 2**-24.
U32 = 2.0 ** -24

#: The constant c of the bound |C - ref| <= c·(K_total + 2)·u·(Σ_i |A_i||B_i| + |beta·C0|).
#:
#: Why it is (and may be) this small: every element of C is an inner product of length
#: K_total = count·k plus the term beta·C0. For any summation order, with or without FMA,
#: floating-point evaluation satisfies |fl(x·y) - x·y| <= γ_d |x|·|y| with γ_d = d·u/(1 - d·u)
#: and d the largest number of roundings any one term goes through (Higham, Accuracy and
#: Stability of Numerical Algorithms, §3.1 and Lemma 3.4). Here d <= K_total + 2: at most
#: K_total multiply-adds, one product beta·C0 and one final addition (when a driver splits K
#: into chunks and adds each chunk's partial sum into C with beta = 1, a term still goes
#: through at most K_total + 2 roundings as long as chunks hold two or more elements).
#: So the exact bound is c = 1 / (1 - (K_total + 2)·u), which is <= 1.0099 while
#: (K_total + 2)·u <= 0.0098, i.e. K_total <= 164 000 (:func:`error_bound` refuses more).
#: The remaining slack up to 1.01 covers the float64 reference's own error (relative
#: 2**-53·K_total, some 2**-29 of the bound) and the rounding of the bound's own evaluation.
#: This is a worst-case bound: it must never be raised to make a test pass.
TOL_C = 1.01

_MAX_DEPTH_U = 0.0098  # (K_total + 2)·u must stay below this for TOL_C to be a bound


def _f64(x):
    return np.asarray(x, dtype=np.float64)


def kernel_beta(beta):
    """The beta the C++ kernel computes with: the float32 nearest to ``beta``."""
    return float(np.float32(beta))


def reference(a_blocks, b_blocks, c0=None, beta=0.0):
    """float64 ``beta·C0 + Σ_i A_i @ B_i`` for lists of 2-D blocks A_i (m×k), B_i (k×n).

    beta = 0 ignores C0 entirely (it may be None or hold NaN), as the kernel must.
    ``beta`` is taken as the float32 the kernel uses. Empty lists need ``shape`` from C0.
    """
    if len(a_blocks) != len(b_blocks):
        raise ValueError("a_blocks and b_blocks differ in length")
    beta = kernel_beta(beta)
    if a_blocks:
        m, n = a_blocks[0].shape[0], b_blocks[0].shape[1]
    elif c0 is not None:
        m, n = np.shape(c0)
    else:
        raise ValueError("an empty batch needs c0 for the shape")
    acc = np.zeros((m, n), dtype=np.float64)
    for a, b in zip(a_blocks, b_blocks):
        acc += _f64(a) @ _f64(b)
    if beta != 0.0:
        acc += beta * _f64(c0)
    return acc


def error_bound(a_blocks, b_blocks, c0=None, beta=0.0, k=None):
    """Elementwise bound on |C - reference|: TOL_C·(K_total + 2)·u·(Σ_i|A_i||B_i| + |beta·C0|)
    with u = 2**-24 and K_total = count·k (see TOL_C for the derivation).

    ``k`` is only needed for an empty batch (K_total is then 0 whatever k is).
    """
    beta = kernel_beta(beta)
    count = len(a_blocks)
    if count:
        k = a_blocks[0].shape[1]
        m, n = a_blocks[0].shape[0], b_blocks[0].shape[1]
    else:
        m, n = np.shape(c0)
        k = 0
    k_total = count * k
    depth = k_total + 2
    if depth * U32 > _MAX_DEPTH_U:
        raise ValueError(f"K_total = {k_total} is too deep for the f32 bound (see TOL_C)")
    mag = np.zeros((m, n), dtype=np.float64)
    for a, b in zip(a_blocks, b_blocks):
        mag += np.abs(_f64(a)) @ np.abs(_f64(b))
    if beta != 0.0:
        mag += np.abs(beta * _f64(c0))
    return TOL_C * depth * U32 * mag


def assert_close(C, a_blocks, b_blocks, c0=None, beta=0.0, *, what="C"):
    """Asserts that the m×n result ``C`` is within :func:`error_bound` of :func:`reference`
    in every element (NaN or inf anywhere fails)."""
    C = np.asarray(C)
    ref = reference(a_blocks, b_blocks, c0, beta)
    bound = error_bound(a_blocks, b_blocks, c0, beta)
    if C.shape != ref.shape:
        raise AssertionError(f"{what} has shape {C.shape}, the reference {ref.shape}")
    err = np.abs(_f64(C) - ref)
    ok = err <= bound  # False for NaN
    if not ok.all():
        bad = np.argwhere(~ok)
        i, j = bad[0]
        raise AssertionError(
            f"{what}: {len(bad)} of {C.size} elements outside the bound; first at [{i}, {j}]: "
            f"got {C[i, j]!r}, reference {ref[i, j]!r}, |error| {err[i, j]:.3g} > bound "
            f"{bound[i, j]:.3g}")


def assert_agree(C1, C2, a_blocks, b_blocks, c0=None, beta=0.0, *, what="results"):
    """Two computed results (e.g. two ISAs) agree: each is within the bound of the exact
    value, so they differ by at most twice the bound."""
    bound = 2.0 * error_bound(a_blocks, b_blocks, c0, beta)
    err = np.abs(_f64(C1) - _f64(C2))
    ok = err <= bound
    if not ok.all():
        i, j = np.argwhere(~ok)[0]
        raise AssertionError(f"{what} disagree at [{i}, {j}]: {C1[i, j]!r} vs {C2[i, j]!r}, "
                             f"|difference| {err[i, j]:.3g} > {bound[i, j]:.3g}")


def block(buf, offset, rows, cols, ld):
    """The rows × cols block of a flat buffer starting at element ``offset`` with row stride
    ``ld``, as a new array (fancy indexing: an address outside the buffer raises)."""
    idx = offset + np.arange(rows)[:, None] * ld + np.arange(cols)[None, :]
    if idx.size and (idx.min() < 0 or idx.max() >= buf.size):
        raise IndexError(f"block at {offset} (rows {rows}, cols {cols}, ld {ld}) is outside "
                         f"a buffer of {buf.size}")
    return np.asarray(buf).reshape(-1)[idx]


def window_mask(size, rows, cols, ld, offset=0):
    """Boolean mask over a flat buffer of ``size``: True on the rows × cols window."""
    mask = np.zeros(size, dtype=bool)
    idx = offset + np.arange(rows)[:, None] * ld + np.arange(cols)[None, :]
    mask[idx.reshape(-1)] = True
    return mask


def random_f32(shape, rng):
    """Standard normal float32 values (no exact zeros, no cancellation-free structure)."""
    return rng.standard_normal(shape, dtype=np.float32)


def bits(x):
    """The raw bits of a float32 array, for bit-identical (NaN-aware) comparison."""
    return np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)


@dataclass
class Problem:
    """The operands of one Kernel call and how the oracle reads them.

    ``a``, ``b`` (stride/offset) are flat float32 buffers, or lists of flat blocks (address);
    ``c`` is the flat output buffer (row stride ldc, padding filled with random values that
    the kernel must not touch) and ``c0`` its copy before the call. ``args`` are the call's
    arguments after (A, B, C) for stride/offset. ``a_blocks``/``b_blocks`` are the 2-D blocks
    the call names, read back out of the buffers by the oracle's own index arithmetic.
    """

    m: int
    n: int
    k: int
    lda: int
    ldb: int
    ldc: int
    beta: float
    batch: str
    count: int
    a: object
    b: object
    c: np.ndarray
    c0: np.ndarray
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    a_blocks: list = field(default_factory=list)
    b_blocks: list = field(default_factory=list)
    a0: object = None
    b0: object = None

    def kernel_kwargs(self):
        """Keyword arguments for brgemm.Kernel describing this problem (no ukernel)."""
        return dict(batch=self.batch, lda=self.lda, ldb=self.ldb, ldc=self.ldc, beta=self.beta)

    def run(self, kernel, c=None):
        """Calls ``kernel`` on this problem's operands, writing into ``c`` (default: the
        problem's own C buffer); returns what the kernel returns."""
        c = self.c if c is None else c
        if self.batch == "address":
            return kernel(self.a, self.b, c)
        return kernel(self.a, self.b, c, *self.args, **self.kwargs)

    def c_window(self, c=None):
        """The m×n result inside the flat C buffer."""
        c = self.c if c is None else c
        return block(c, 0, self.m, self.n, self.ldc)

    def c0_window(self):
        return block(self.c0, 0, self.m, self.n, self.ldc)

    def check(self, c=None, what="C"):
        """Result within the bound of the reference, every element of C outside the m×n
        window bit-identical to before the call, and A and B unchanged."""
        c = self.c if c is None else c
        for name, now, before in (("A", self.a, self.a0), ("B", self.b, self.b0)):
            now = now if isinstance(now, list) else [now]
            before = before if isinstance(before, list) else [before]
            if not all(np.array_equal(bits(x), bits(y)) for x, y in zip(now, before)):
                raise AssertionError(f"{what}: the kernel modified its input {name}")
        outside = ~window_mask(c.size, self.m, self.n, self.ldc)
        if not np.array_equal(bits(c)[outside], bits(self.c0)[outside]):
            raise AssertionError(f"{what}: the kernel wrote outside the m×n window (ldc = {self.ldc})")
        assert_close(self.c_window(c), self.a_blocks, self.b_blocks, self.c0_window(), self.beta,
                     what=what)

    def fresh_c(self):
        """A new copy of the C buffer as it was before any call."""
        return self.c0.copy()


def make_problem(m, n, k, *, rng, batch="stride", count=1, lda=None, ldb=None, ldc=None,
                 beta=0.0, c_fill="random", stride_gap=0):
    """Operands for one call of a Kernel(m, n, k, batch=..., lda, ldb, ldc, beta).

    - stride: A and B are exactly as large as the call needs; strides are the defaults
      (m·lda, k·ldb, passed as None) unless ``stride_gap`` > 0, which passes explicit strides
      that leave gaps (m·lda + gap, k·ldb + 2·gap + 1).
    - offset: blocks sit in slots with gaps, in a shuffled order, and when count >= 3 one
      block of A and one of B are used twice (repeated offsets are legal).
    - address: every block is its own exactly-sized array.

    ``c_fill``: "random" or "nan" (the whole C buffer NaN; only meaningful with beta = 0).
    Padding of C (ldc > n and a tail) is random and must survive the call bit for bit.
    """
    lda = k if lda is None else lda
    ldb = n if ldb is None else ldb
    ldc = n if ldc is None else ldc
    a_ext = (m - 1) * lda + k
    b_ext = (k - 1) * ldb + n
    args, kwargs = (), {}

    if batch == "stride":
        sa = m * lda + (stride_gap if stride_gap else 0)
        sb = k * ldb + (2 * stride_gap + 1 if stride_gap else 0)
        last = max(count - 1, 0)
        a = random_f32(last * sa + a_ext, rng)
        b = random_f32(last * sb + b_ext, rng)
        offs_a = [i * sa for i in range(count)]
        offs_b = [i * sb for i in range(count)]
        args = (count,)
        if stride_gap:
            kwargs = dict(stride_a=sa, stride_b=sb)
        a_blocks = [block(a, o, m, k, lda) for o in offs_a]
        b_blocks = [block(b, o, k, n, ldb) for o in offs_b]
    elif batch == "offset":
        slot_a, slot_b = a_ext + 3, b_ext + 5
        offs_a = rng.permutation(count).astype(np.int64) * slot_a
        offs_b = rng.permutation(count).astype(np.int64) * slot_b
        if count >= 3:
            offs_a[2] = offs_a[0]
            offs_b[1] = offs_b[count - 1]
        a = random_f32(max(count - 1, 0) * slot_a + a_ext, rng)
        b = random_f32(max(count - 1, 0) * slot_b + b_ext, rng)
        args = (offs_a, offs_b)
        a_blocks = [block(a, int(o), m, k, lda) for o in offs_a]
        b_blocks = [block(b, int(o), k, n, ldb) for o in offs_b]
    elif batch == "address":
        a = [random_f32(a_ext, rng) for _ in range(count)]
        b = [random_f32(b_ext, rng) for _ in range(count)]
        a_blocks = [block(x, 0, m, k, lda) for x in a]
        b_blocks = [block(x, 0, k, n, ldb) for x in b]
    else:
        raise ValueError(f"unknown batch kind {batch!r}")

    c_size = (m - 1) * ldc + n + 3  # a short tail after the last row: it must stay untouched
    c = random_f32(c_size, rng)
    if c_fill == "nan":
        c[window_mask(c_size, m, n, ldc)] = np.nan
    elif c_fill != "random":
        raise ValueError(f"unknown c_fill {c_fill!r}")
    return Problem(m=m, n=n, k=k, lda=lda, ldb=ldb, ldc=ldc, beta=beta, batch=batch, count=count,
                   a=a, b=b, c=c, c0=c.copy(), args=args, kwargs=kwargs,
                   a_blocks=a_blocks, b_blocks=b_blocks,
                   a0=[x.copy() for x in a] if isinstance(a, list) else a.copy(),
                   b0=[x.copy() for x in b] if isinstance(b, list) else b.copy())


def padded(rng, shape, pad, offset=None):
    """A random float32 array of ``shape`` that is a slice of a larger array: every axis is
    ``pad`` longer and the slice starts at ``offset`` (default 1 on every axis), so its
    strides exceed its shape. Returns (view, base)."""
    pad = (pad,) * len(shape) if np.isscalar(pad) else tuple(pad)
    offset = (1,) * len(shape) if offset is None else tuple(offset)
    base = random_f32(tuple(s + p for s, p in zip(shape, pad)), rng)
    view = base[tuple(slice(o, o + s) for o, s in zip(offset, shape))]
    return view, base


def next_prime_above(x):
    """The smallest prime > x."""
    p = x + 1
    while p < 2 or any(p % d == 0 for d in range(2, int(p ** 0.5) + 1)):
        p += 1
    return p
