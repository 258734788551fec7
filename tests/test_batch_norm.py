"""BatchNorm2d in training mode on the blocked layout: the operator
``torch.ops.brgemm.batch_norm_blocked`` (brgemm/torch/_norm.py), its driver (layers/batch_norm.h)
and the core's per-lane kernels (brgemm/norm.h), every ISA forced in turn.

Reference: ``torch.nn.functional.batch_norm`` in float64 on the plain layout of the same values
(blocked tensors go through ``torch.ops.brgemm.to_blocked`` / ``from_blocked``), then + residual,
then ReLU; gradients by float64 autograd through that, with the ReLU mask taken from the
operator's own output (where the computed output sits within rounding of 0 the two masks could
differ, and the gradient is discontinuous there).

Tolerances, derived (u = 2⁻²⁴ the float32 unit roundoff, u_d = 2⁻⁵³, u_b = 2⁻⁸ bfloat16's,
M = N·H·W values per channel, μ, σ², x_c = x − μ, s = γ/√(σ² + ε) exact; every float32
operation adds at most u times its result, every double one u_d):

- Statistics: the sums of d = x − K and d² (K: a mean of some of the channel's values, so
  |K − μ| ≤ max|x_c|) are recursive in double, M terms on any path:
  |Δvar| ≤ 2(M+5)·u_d·(σ² + 2·max|x_c|²) (derivation in layers/batch_norm.cpp), plus u·var for the
  float32 result; |Δmean| ≤ u·|μ| + 2(M+2)·u_d·(max|x_c| + |μ|). Hence the scale's relative error
  from the statistics δ_s = ½|Δvar|/(σ² + ε) + 2u_d.
- Output: y = (((x − μ_f)·s_f) + β) + r in float32 with μ_f = fl(μ), s_f = fl(s):
  |Δ(x − μ_f)| ≤ u(|μ| + |x_c|), then the product adds 2u|s·x_c| (its rounding and s_f's) and
  δ_s|s·x_c|, each sum u times its value:
  |Δy| ≤ u·(|s|·(|μ| + 3|x_c|) + |s·x_c + β| + |s·x_c + β + r|) + δ_s·|s·x_c|; ReLU is
  1-Lipschitz and exact. bfloat16 output: + u_b·(|y| + that bound) for the final rounding.
- Gradients (g = dy·[y > 0], exact; dβ = Σg, P = Σg·x_c, dγ = invstd·P, A = γ·invstd,
  B = −γ·invstd³·P/M, C = −A·dβ/M, dx = A·g + B·x_c + C): the double sums are off by
  (M+1)u_d·Σ|g| and ΔP ≤ u|μ|·|dβ| + 2(M+2)u_d·Σ|g|(|x_c| + u|μ|) (the backward centres on
  μ_f, as PyTorch does on its saved float32 mean); invstd comes from the float32 variance:
  δ_i = u/2 + δ_s. So |Δdβ| ≤ u|dβ| + (M+1)u_d·Σ|g|, |Δdγ| ≤ (u + δ_i)|dγ| + invstd·ΔP, the
  coefficients ΔA ≤ (u + δ_i)|A|, ΔB ≤ (u + 3δ_i)|B| + |γ|invstd³·ΔP/M,
  ΔC ≤ (u + δ_i)|C| + |A|(M+1)u_d·Σ|g|/M, and the float32 evaluation of
  ((A·g) + (B·(x − μ_f))) + C adds u|Ag| + u|B|(|μ| + 2|x_c|) + u(|Ag| + |Bx_c|) +
  u(|Ag| + |Bx_c| + |C|) to ΔA|g| + ΔB|x_c| + ΔC. bfloat16 dx: + u_b·(|dx| + that bound).
  The residual's gradient is g itself: exact.
Every bound is multiplied by (1 + 8u) for the second-order terms the first-order sums leave out.

bfloat16 inputs are exact in float64, so the same bounds hold on the bfloat16 values.
Results must be bit-identical across ISAs (the kernels' contract) and across thread counts (the
driver's fixed reduction order).
"""

import copy
import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import brgemm
import brgemm.torch  # noqa: F401  (registers torch.ops.brgemm.*)
from brgemm import _core
from brgemm.torch._norm import batch_norm_train
from conftest import ISA_LEVELS, isa_unavailable_reason, restore_isa

ops = torch.ops.brgemm
F64 = torch.float64
U, UD, UB = 2.0 ** -24, 2.0 ** -53, 2.0 ** -8
SECOND_ORDER = 1 + 8 * U

# (N, C, H, W): C below one block (bc 4, 12), not a multiple of its block, exactly one, several;
# N·H·W = 2 (the least training allows), H·W = 1; rows past one task chunk (bc 16: 1024 rows,
# bc 64: 256) so that a channel's sum crosses tasks.
SHAPES = [(2, 3, 4, 5), (1, 10, 3, 3), (4, 17, 1, 1), (2, 1, 1, 1), (3, 40, 7, 9), (2, 64, 5, 5), (1, 100, 2, 3),
          (2, 200, 3, 3), (2, 16, 40, 40), (2, 64, 20, 20)]
# (relu, residual, affine)
VARIANTS = [(False, False, True), (True, False, True), (True, True, True), (False, True, False)]


def _blocked(x):
    return ops.to_blocked(x)


def _plain(xb, c):
    return ops.from_blocked(xb, c)


def _data(shape, gen, offset=1.5, scale=2.0):
    return torch.randn(shape, generator=gen, dtype=F64) * scale + offset


def _ch(v):
    return v[None, :, None, None]


class Case:
    """One forward + backward through the operator and the float64 reference, with the bounds."""

    def __init__(self, shape, dtype, relu, residual, affine, gen, eps=1e-5, offset=1.5):
        n, c, h, w = shape
        self.shape, self.dtype, self.relu, self.c, self.eps = shape, dtype, relu, c, eps
        x = _data(shape, gen, offset).to(dtype)
        r = _data(shape, gen, -0.5, 1.0).to(dtype) if residual else None
        wt = (torch.randn(c, generator=gen, dtype=F64) + 0.5).float() if affine else None
        bt = torch.randn(c, generator=gen, dtype=F64).float() if affine else None
        gy = torch.randn(shape, generator=gen, dtype=F64).to(dtype)
        self.x, self.r, self.w, self.b, self.gy = x, r, wt, bt, gy
        # the operator
        xb = _blocked(x).requires_grad_()
        rb = _blocked(r).requires_grad_() if residual else None
        wg = wt.clone().requires_grad_() if affine else None
        bg = bt.clone().requires_grad_() if affine else None
        out, mean, var = ops.batch_norm_blocked(xb, wg, bg, eps, rb, relu, c)
        out.backward(_blocked(gy))
        self.xb, self.out, self.mean, self.var = xb.detach(), out.detach(), mean, var
        self.gxb, self.grb = xb.grad, rb.grad if residual else None
        self.gw, self.gb = (wg.grad, bg.grad) if affine else (None, None)
        # the reference
        x64 = x.double().requires_grad_()
        w64 = wt.double().requires_grad_() if affine else None
        b64 = bt.double().requires_grad_() if affine else None
        z = F.batch_norm(x64, None, None, w64, b64, True, 0.0, eps)
        if residual:
            z = z + r.double()
        self.y = _plain(self.out, c).double()
        self.y_ref = torch.relu(z) if relu else z
        self.g = gy.double() * (self.y > 0) if relu else gy.double()
        grads = torch.autograd.grad(z, [t for t in (x64, w64, b64) if t is not None], self.g)
        self.gx_ref = grads[0]
        self.gw_ref, self.gb_ref = (grads[1], grads[2]) if affine else (None, None)
        self.bounds()

    def bounds(self):
        n, c, h, w = self.shape
        m = n * h * w
        x = self.x.double()
        mu = x.mean((0, 2, 3))
        xc = x - _ch(mu)
        var = (xc * xc).mean((0, 2, 3))
        maxxc = xc.abs().amax((0, 2, 3))
        gamma = self.w.double() if self.w is not None else torch.ones(c, dtype=F64)
        beta = self.b.double() if self.b is not None else torch.zeros(c, dtype=F64)
        invstd = (var + self.eps).rsqrt()
        s = gamma * invstd
        dvar = 2 * (m + 5) * UD * (var + 2 * maxxc ** 2)
        ds = 0.5 * dvar / (var + self.eps) + 2 * UD
        self.tol_mean = (U * mu.abs() + 2 * (m + 2) * UD * (maxxc + mu.abs())) * SECOND_ORDER
        self.tol_var = (U * var + dvar) * SECOND_ORDER
        v = _ch(s) * xc
        vb = v + _ch(beta)
        vr = vb + (self.r.double() if self.r is not None else 0)
        tol_y = U * (_ch(s.abs()) * (_ch(mu.abs()) + 3 * xc.abs()) + vb.abs() + vr.abs()) + _ch(ds) * v.abs()
        tol_y = tol_y * SECOND_ORDER
        if self.dtype == torch.bfloat16:
            tol_y = tol_y + UB * (self.y_ref.detach().abs() + tol_y)
        self.tol_y = tol_y
        # backward
        g = self.g
        dbeta = g.sum((0, 2, 3))
        p = (g * xc).sum((0, 2, 3))
        dgamma = invstd * p
        a, b = gamma * invstd, -gamma * invstd ** 3 * p / m
        cc = -a * dbeta / m
        sg = g.abs().sum((0, 2, 3))
        dp = U * mu.abs() * dbeta.abs() + 2 * (m + 2) * UD * (g.abs() * (xc.abs() + U * _ch(mu.abs()))).sum((0, 2, 3))
        di = U / 2 + ds
        self.tol_dbeta = (U * dbeta.abs() + (m + 1) * UD * sg) * SECOND_ORDER
        self.tol_dgamma = ((U + di) * dgamma.abs() + invstd * dp) * SECOND_ORDER
        da = (U + di) * a.abs()
        db = (U + 3 * di) * b.abs() + gamma.abs() * invstd ** 3 * dp / m
        dc = (U + di) * cc.abs() + a.abs() * (m + 1) * UD * sg / m
        ag, bx = (_ch(a) * g).abs(), (_ch(b) * xc).abs()
        tol_dx = (_ch(da) * g.abs() + U * ag + _ch(db) * xc.abs() + U * _ch(b.abs()) * (_ch(mu.abs()) + 2 * xc.abs())
                  + U * (ag + bx) + _ch(dc) + U * (ag + bx + _ch(cc.abs()))) * SECOND_ORDER
        if self.dtype == torch.bfloat16:
            tol_dx = tol_dx + UB * (self.gx_ref.abs() + tol_dx)
        self.tol_dx = tol_dx

    def check(self):
        c = self.c
        x = self.x.double()
        _within(self.y, self.y_ref.detach(), self.tol_y, "output")
        _within(self.mean.double(), x.mean((0, 2, 3)), self.tol_mean, "mean")
        _within(self.var.double(), x.var((0, 2, 3), unbiased=False), self.tol_var, "var")
        assert self.mean.dtype == self.var.dtype == torch.float32 and self.mean.shape == (c,)
        assert self.out.dtype == self.dtype and self.out.shape == self.xb.shape
        _padding_is_zero(self.out, c, "output")
        gx = _plain(self.gxb, c).double()
        _within(gx, self.gx_ref, self.tol_dx, "grad input")
        _padding_is_zero(self.gxb, c, "grad input")
        assert self.gxb.dtype == self.dtype
        if self.gw is not None:
            _within(self.gw.double(), self.gw_ref, self.tol_dgamma, "grad weight")
            _within(self.gb.double(), self.gb_ref, self.tol_dbeta, "grad bias")
        if self.grb is not None:
            assert self.grb.dtype == self.dtype
            assert torch.equal(_plain(self.grb, c).double(), self.g), "the residual's gradient is g, exactly"
            _padding_is_zero(self.grb, c, "grad residual")


def _within(got, want, tol, what):
    err = (got - want).abs()
    bad = ~(err <= tol)
    if bad.any():
        i = bad.nonzero()[0].tolist()
        raise AssertionError(f"{what}: {int(bad.sum())} values beyond the bound; at {i}: got {got[tuple(i)].item()!r}, "
                             f"want {want[tuple(i)].item()!r}, error {err[tuple(i)].item():.3g} > "
                             f"bound {tol[tuple(i)].item():.3g}")


def _padding_is_zero(tb, c, what):
    """The padded channels of a blocked tensor hold +0 exactly (bits)."""
    bc = tb.shape[4]
    tail = tb[:, -1, :, :, c - (tb.shape[1] - 1) * bc:]
    bits = tail.contiguous().view(torch.int32 if tb.dtype == torch.float32 else torch.int16)
    assert not bits.any(), f"{what}: padded channels must be exactly +0"


def _gen(*key):
    """A generator seeded from the key: fixed across runs (str hashes are not)."""
    g = torch.Generator()
    g.manual_seed(zlib.crc32(repr(key).encode()))
    return g


# --- outputs, statistics and gradients against float64 PyTorch ------------------------------------

@pytest.mark.parametrize("variant", VARIANTS, ids=["bn", "bn_relu", "bn_add_relu", "bn_add_noaffine"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_float32(isa, shape, variant):
    relu, residual, affine = variant
    Case(shape, torch.float32, relu, residual, affine, _gen(shape, variant)).check()


@pytest.mark.parametrize("variant", VARIANTS, ids=["bn", "bn_relu", "bn_add_relu", "bn_add_noaffine"])
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (3, 40, 7, 9), (2, 64, 5, 5), (2, 16, 40, 40)],
                         ids=lambda s: "x".join(map(str, s)))
def test_bfloat16(isa, shape, variant):
    relu, residual, affine = variant
    Case(shape, torch.bfloat16, relu, residual, affine, _gen(shape, variant, "bf16")).check()


@pytest.mark.parametrize("offset", [0.0, 100.0, -3e3])
def test_mean_far_from_zero(offset):
    """A large mean next to a unit spread: the shifted sums keep the variance at float32 accuracy
    (the bounds' |μ| terms are what the output loses to float32 itself)."""
    Case((4, 24, 9, 11), torch.float32, True, True, True, _gen("offset", offset), offset=offset).check()


def test_eps_and_constant_channels():
    """A channel with one value throughout has variance 0: the output is β (+ residual), finite."""
    gen = _gen("const")
    x = _data((3, 20, 5, 5), gen)
    x[:, 7] = 2.5
    xb = _blocked(x.float())
    w, b = torch.randn(20, generator=gen, dtype=F64).float(), torch.randn(20, generator=gen, dtype=F64).float()
    out, mean, var = ops.batch_norm_blocked(xb, w, b, 1e-3)
    assert var[7] == 0 and mean[7] == 2.5
    assert torch.equal(_plain(out, 20)[:, 7], b[7].expand(3, 5, 5))


# --- ISAs, threads ---------------------------------------------------------------------------------

def _run_core(xb, c, gamma, beta, r, relu, gy, two_pass=False):
    """Every output of the forward and backward bindings, as numpy arrays."""
    x = xb.numpy() if xb.dtype == torch.float32 else xb.view(torch.int16).numpy().view(_bf16())
    conv = (lambda t: None if t is None else (t.numpy() if t.dtype == torch.float32 else
                                              t.view(torch.int16).numpy().view(_bf16())))
    y = np.empty_like(x)
    mean, var = np.empty(c, np.float32), np.empty(c, np.float32)
    _core.batch_norm_forward(x, conv(gamma), conv(beta), 1e-5, conv(r), relu, y, mean, var, two_pass=two_pass)
    gx, gr = np.empty(x.shape, np.float32), np.empty_like(x)
    gg, gb = np.empty(c, np.float32), np.empty(c, np.float32)
    _core.batch_norm_backward(conv(gy), x, y, relu, conv(gamma), mean, var, 1e-5, gx, gg, gb, gr)
    gxb = np.empty_like(x)
    _core.batch_norm_backward(conv(gy), x, y, relu, conv(gamma), mean, var, 1e-5, gxb, None, None, None)
    return [a.view(np.uint8) for a in (y, mean, var, gx, gr, gg, gb, gxb)]


def _bf16():
    import ml_dtypes
    return ml_dtypes.bfloat16


def _any_block(x, bc):
    """(N, C, H, W) → (N, ceil(C/bc), H, W, bc) for any bc (to_blocked uses conv_block's)."""
    n, c, h, w = x.shape
    cb = -(-c // bc)
    x = torch.cat([x, x.new_zeros(n, cb * bc - c, h, w)], 1)
    return x.reshape(n, cb, bc, h, w).permute(0, 1, 3, 4, 2).contiguous()


# Widths of every kind: below one AVX2 vector, between vectors, each conv_block, and odd ones.
WIDTHS = [1, 4, 5, 8, 12, 16, 24, 32, 48, 63, 64]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bc", WIDTHS)
def test_every_isa_gives_the_scalar_bits(bc, dtype):
    """The kernels' contract: the same bits on every ISA (each lane's double sums in row order, the
    element-wise formulas as written), for every lane width, padding lanes included."""
    gen = _gen("isa", bc, str(dtype))
    c = max(1, bc * 2 - 3)
    shape = (3, c, 9, 13)
    xb = _any_block(_data(shape, gen).to(dtype), bc)
    r = _any_block(_data(shape, gen).to(dtype), bc)
    gy = _any_block(torch.randn(shape, generator=gen, dtype=F64).to(dtype), bc)
    gamma, beta = torch.randn(c, generator=gen).float(), torch.randn(c, generator=gen).float()
    results = {}
    try:
        for level in ISA_LEVELS:
            if isa_unavailable_reason(level):
                continue
            brgemm.set_isa(level)
            for relu in (False, True):
                for res in (None, r):
                    results[level, relu, res is None] = _run_core(xb, c, gamma, beta, res, relu, gy)
    finally:
        restore_isa()
    for (level, relu, nores), got in results.items():
        for k, (a, b) in enumerate(zip(got, results["scalar", relu, nores])):
            assert np.array_equal(a, b), \
                f"{level} differs from scalar in output {k} (relu={relu}, residual={not nores})"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_residual_gradient_is_dy_masked_bit_for_bit(isa, dtype):
    """g = dy where y > 0, else +0 whatever dy holds (NaN, ±inf where y ≤ 0 are dropped); without
    the mask g is dy's bits, a NaN's payload included; padded channels +0."""
    gen = _gen("gbits", str(dtype))
    c, shape = 20, (2, 20, 5, 7)
    xb = _blocked(_data(shape, gen).to(dtype))
    y = _blocked(torch.randn(shape, generator=gen).to(dtype))
    gy = _blocked(torch.randn(shape, generator=gen).to(dtype))
    special = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0]).to(dtype)
    flat, yflat = gy.view(-1), y.view(-1)
    where = (yflat <= 0).nonzero().flatten()[:40]
    flat[where] = special.repeat(10)[: len(where)]
    flat.view(torch.int32 if dtype == torch.float32 else torch.int16)[where[-1]] = \
        0x7F800001 if dtype == torch.float32 else 0x7F81  # a signalling NaN: its bits must pass unchanged
    mean, var = torch.zeros(c), torch.ones(c)
    to_np = (lambda t: t.numpy()) if dtype == torch.float32 else \
        (lambda t: t.view(torch.int16).numpy().view(_bf16()))
    bits = torch.int32 if dtype == torch.float32 else torch.int16
    for relu in (True, False):
        g = torch.empty_like(xb)
        _core.batch_norm_backward(to_np(gy), to_np(xb), to_np(y), relu, None, mean.numpy(), var.numpy(), 1e-5, None,
                                  None, None, to_np(g))
        keep = (y > 0) if relu else torch.ones_like(y, dtype=torch.bool)
        want = torch.where(keep, gy.view(bits), torch.zeros((), dtype=bits))
        want[:, -1, ..., c - (xb.shape[1] - 1) * xb.shape[4]:] = 0
        assert torch.equal(g.view(bits), want), f"relu={relu}"


def test_two_threads_give_the_bits_of_one(threads_restored):
    """Reductions per fixed-size task, added in task order: the thread count changes nothing."""
    gen = _gen("threads")
    for shape, dtype in (((4, 40, 30, 30), torch.float32), ((2, 64, 33, 17), torch.bfloat16),
                         ((8, 256, 5, 5), torch.float32)):
        c = shape[1]
        xb = _blocked(_data(shape, gen).to(dtype))
        r = _blocked(_data(shape, gen).to(dtype))
        gy = _blocked(torch.randn(shape, generator=gen, dtype=F64).to(dtype))
        gamma, beta = torch.randn(c, generator=gen).float(), torch.randn(c, generator=gen).float()
        runs = []
        for t in (1, 2, 3):
            brgemm.set_num_threads(t)
            runs.append(_run_core(xb, c, gamma, beta, r, True, gy) + _run_core(xb, c, gamma, beta, None, False, gy))
        for t, run in zip((2, 3), runs[1:]):
            for k, (a, b) in enumerate(zip(run, runs[0])):
                assert np.array_equal(a, b), f"{shape} {dtype}: {t} threads differ from 1 in output {k}"


# --- the variance: shifted one-pass against two-pass ----------------------------------------------

@pytest.mark.parametrize("offset", [0.0, 1e4, -3e5])
def test_variance_bound_shifted_and_two_pass(offset):
    """Both schemes against a long-double reference, within the derived bound
    2(M+5)·u_d·(σ² + 2·max|x_c|²) (layers/batch_norm.cpp), on M = 2·10⁵ values per channel whose
    mean is up to 3·10⁵ σ from 0 (float32's own rounding of such values is ~0.03σ: the data is
    what it is, the sums must be exact to double precision)."""
    gen = _gen("var", offset)
    shape = (8, 16, 160, 160)
    x = (torch.randn(shape, generator=gen, dtype=F64) + offset).float()
    xb = _blocked(x)
    m = shape[0] * shape[2] * shape[3]
    xl = x.numpy().astype(np.longdouble).transpose(1, 0, 2, 3).reshape(16, -1)
    mu = xl.mean(1)
    xc = xl - mu[:, None]
    var = (xc * xc).mean(1)
    bound = 2 * (m + 5) * UD * (var + 2 * np.abs(xc).max(1) ** 2)
    for two_pass in (False, True):
        mean_d, var_d = _core.batch_norm_statistics(xb.numpy(), 16, two_pass)
        err = np.abs(var_d.astype(np.longdouble) - var)
        assert np.all(err <= bound), (two_pass, (err / var).max(), (bound / var).max())
        assert np.all(np.abs(mean_d - mu) <= 2 * (m + 2) * UD * (np.abs(xc).max(1) + np.abs(mu)))


# --- the running statistics ------------------------------------------------------------------------

@pytest.mark.parametrize("momentum", [0.1, None, 1.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_running_statistics_follow_batchnorm2d(momentum, dtype):
    """batch_norm_train against nn.BatchNorm2d in float64 on the same values over three steps:
    num_batches_tracked exactly, running_mean/var within the sum over steps of
    (momentum·(the batch statistic's bound) + u·|new value|) (errors only shrink by (1 − momentum))."""
    gen = _gen("running", momentum, str(dtype))
    c = 20
    bn = torch.nn.BatchNorm2d(c, momentum=momentum)
    with torch.no_grad():
        bn.weight.copy_(torch.randn(c, generator=gen))
        bn.bias.copy_(torch.randn(c, generator=gen))
    ref = copy.deepcopy(bn).double()
    tol_m, tol_v = torch.zeros(c, dtype=F64), torch.zeros(c, dtype=F64)
    for step, shape in enumerate([(3, c, 5, 6), (2, c, 7, 3), (5, c, 2, 2)]):
        x = _data(shape, gen).to(dtype)
        y = batch_norm_train(_blocked(x), bn, c, relu=True)
        y_ref = torch.relu(ref(x.double()))
        case_m = x.shape[0] * x.shape[2] * x.shape[3]
        f = 1.0 / (step + 1) if momentum is None else momentum
        xd = x.double()
        mu = xd.mean((0, 2, 3))
        xc = xd - _ch(mu)
        var = (xc * xc).mean((0, 2, 3))
        maxxc = xc.abs().amax((0, 2, 3))
        tol_m += f * (U * mu.abs() + 2 * (case_m + 2) * UD * (maxxc + mu.abs())) + U * ref.running_mean.abs()
        tol_v += f * (U * var + 2 * (case_m + 5) * UD * (var + 2 * maxxc ** 2)) * case_m / (case_m - 1) \
            + U * ref.running_var.abs()
        assert int(bn.num_batches_tracked) == int(ref.num_batches_tracked) == step + 1
        _within(bn.running_mean.double(), ref.running_mean, tol_m * SECOND_ORDER, f"running_mean step {step}")
        _within(bn.running_var.double(), ref.running_var, tol_v * SECOND_ORDER, f"running_var step {step}")
        assert (_plain(y, c).double() - y_ref).abs().max() < (1e-5 if dtype == torch.float32 else 0.05)


def test_batch_norm_train_modes():
    """No running statistics tracked: nothing updated (batch statistics in eval too); eval with
    running statistics: those normalise (torch operations); an empty batch leaves them alone but
    counts the call, as BatchNorm2d does."""
    gen = _gen("modes")
    c = 12
    x = _data((2, c, 4, 4), gen).float()
    xb = _blocked(x)
    bn = torch.nn.BatchNorm2d(c, track_running_stats=False)
    y = batch_norm_train(xb, bn, c, relu=False)
    assert torch.allclose(_plain(y, c), bn(x), atol=1e-5)
    bn.eval()
    y = batch_norm_train(xb, bn, c, relu=False)
    assert torch.allclose(_plain(y, c), bn(x), atol=1e-5)
    bn = torch.nn.BatchNorm2d(c)
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(c, generator=gen))
        bn.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
    bn.eval()
    r = _blocked(_data((2, c, 4, 4), gen).float())
    y = batch_norm_train(xb, bn, c, residual=r, relu=True)
    assert torch.allclose(_plain(y, c), torch.relu(bn(x) + _plain(r, c)), atol=1e-5)
    assert int(bn.num_batches_tracked) == 0
    bn.train()
    before = bn.running_mean.clone(), bn.running_var.clone()
    empty = _blocked(torch.empty(0, c, 4, 4))
    y = batch_norm_train(empty, bn, c)
    assert y.shape == empty.shape and int(bn.num_batches_tracked) == 1
    assert torch.equal(bn.running_mean, before[0]) and torch.equal(bn.running_var, before[1])
    torch_bn = torch.nn.BatchNorm2d(c)
    torch_bn(torch.empty(0, c, 4, 4))
    assert int(torch_bn.num_batches_tracked) == 1


def test_empty_batch_and_one_value_per_channel():
    xb = _blocked(torch.empty(0, 5, 3, 3)).requires_grad_()
    w = torch.ones(5, requires_grad=True)
    out, mean, var = ops.batch_norm_blocked(xb, w, None, 1e-5, None, True)
    assert out.shape == xb.shape and mean.isnan().all() and var.isnan().all()
    out.sum().backward()
    assert xb.grad.shape == xb.shape and torch.equal(w.grad, torch.zeros(5))
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        F.batch_norm(torch.ones(1, 5, 1, 1), None, None, training=True)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        ops.batch_norm_blocked(_blocked(torch.ones(1, 5, 1, 1)), None, None, 1e-5)


# --- arguments -------------------------------------------------------------------------------------

def _bad_calls():
    xb = _blocked(torch.randn(2, 10, 3, 3))
    w = torch.ones(10)
    bf = xb.to(torch.bfloat16)
    y = np.empty(xb.shape, np.float32)
    m, v = np.empty(10, np.float32), np.empty(10, np.float32)
    x = xb.numpy()
    bo = ops.batch_norm_blocked
    return [
        (lambda: bo(xb.double(), w, None, 1e-5), TypeError, "input must have dtype"),
        (lambda: bo(torch.randn(2, 10, 3, 3), w, None, 1e-5), ValueError, "input must be 5-D"),
        (lambda: bo(xb, torch.ones(13), None, 1e-5), ValueError, "13 channels do not fit"),
        (lambda: bo(xb, torch.ones(10), torch.ones(9), 1e-5), ValueError, "disagree"),
        (lambda: bo(xb, None, None, 1e-5, None, False, 16), ValueError, "16 channels do not fit"),
        (lambda: bo(xb, torch.ones(10, 1), None, 1e-5), ValueError, "weight must be a 1-D"),
        (lambda: bo(xb, torch.ones(10, dtype=torch.int32), None, 1e-5), TypeError, "weight must have dtype"),
        (lambda: bo(xb, w, None, -1.0), ValueError, "eps must be finite and non-negative"),
        (lambda: bo(xb, w, None, float("nan")), ValueError, "eps"),
        (lambda: bo(xb, w, None, 1e-5, bf), TypeError, "residual must have dtype"),
        (lambda: bo(xb, w, None, 1e-5, xb[:1]), ValueError, "residual must have input's shape"),
        (lambda: bo(torch.randn(2, 1, 3, 3, 80), None, None, 1e-5), ValueError, "1 ≤ bc ≤ 64"),
        (lambda: ops.batch_norm_blocked_backward(xb, xb, None, w, torch.zeros(10), torch.ones(10), 1e-5, True, False),
         ValueError, "output"),
        (lambda: ops.batch_norm_blocked_backward(xb, xb, xb, w, torch.zeros(10), torch.ones(9), 1e-5, True, False),
         ValueError, "var must have mean's shape"),
        (lambda: ops.batch_norm_blocked_backward(bf, xb, xb, w, torch.zeros(10), torch.ones(10), 1e-5, False, False),
         TypeError, "grad_output must have dtype"),
        # the bindings themselves
        (lambda: _core.batch_norm_forward(x, None, None, 1e-5, None, False, x, m, v), ValueError, "y overlaps x"),
        (lambda: _core.batch_norm_forward(x, None, None, 1e-5, None, False, y, m, m), ValueError, "overlaps"),
        (lambda: _core.batch_norm_forward(x, m, None, 1e-5, None, False, y, m, v), ValueError, "mean overlaps gamma"),
        (lambda: _core.batch_norm_forward(x, None, None, 1e-5, None, False, y[:, :, ::-1], m, v), ValueError,
         "C-contiguous"),
        (lambda: _core.batch_norm_forward(x, None, None, 1e-5, None, False, y, m[:9], v), ValueError,
         "var must have shape"),
        (lambda: _core.batch_norm_forward(x, None, None, 1e-5, None, False, y, np.empty(13, np.float32),
                                          np.empty(13, np.float32)), ValueError, "13 channels, which do not fit"),
        (lambda: _core.batch_norm_forward(x, None, None, 1e-5, None, False, y, m, None), ValueError, "var"),
        (lambda: _core.batch_norm_forward(x, None, None, 1e-5, None, False, y.astype(np.float64), m, v), TypeError,
         "y must have dtype"),
        (lambda: _core.batch_norm_forward(x, None, None, 1e-5, None, False, _readonly(y), m, v), ValueError,
         "read-only"),
        (lambda: _core.batch_norm_forward(x[:0], None, None, 1e-5, None, False, y[:0], m, v), ValueError,
         "no values per channel"),
        (lambda: _core.batch_norm_forward(x, None, None, np.inf, None, False, y, m, v), ValueError, "eps"),
        (lambda: _core.batch_norm_backward(x, x, None, True, None, m, v, 1e-5, y, None, None, None), ValueError,
         "ReLU mask"),
        (lambda: _core.batch_norm_backward(x, x, x, False, None, m, v, 1e-5, x, None, None, None), ValueError,
         "grad_x overlaps"),
        (lambda: _core.batch_norm_backward(x, x, x, False, None, m, v, 1e-5, y, m, None, None), ValueError,
         "grad_gamma overlaps mean"),
        (lambda: _core.batch_norm_backward(x, x, x, False, None, m, v, 1e-5, y, None, None, y), ValueError,
         "grad_residual overlaps grad_x"),
        (lambda: _core.batch_norm_statistics(x, 0), ValueError, "channels"),
        (lambda: _core.batch_norm_statistics("x", 10), TypeError, "x must be a numpy array"),
    ]


def _readonly(a):
    a = a.copy()
    a.flags.writeable = False
    return a


@pytest.mark.parametrize("k", range(len(_bad_calls())))
def test_bad_arguments(k):
    fn, exc, match = _bad_calls()[k]
    with pytest.raises(exc, match=match):
        fn()


# --- torch.library ---------------------------------------------------------------------------------

def _opcheck_cases():
    gen = _gen("opcheck")
    cases = []
    for shape, dtype, relu, residual, affine in [((2, 10, 3, 3), torch.float32, True, True, True),
                                                 ((3, 40, 2, 5), torch.float32, False, False, False),
                                                 ((2, 16, 4, 4), torch.bfloat16, True, True, True)]:
        c = shape[1]
        xb = _blocked(_data(shape, gen).to(dtype)).requires_grad_()
        r = _blocked(_data(shape, gen).to(dtype)).requires_grad_() if residual else None
        w = torch.randn(c, generator=gen).requires_grad_() if affine else None
        b = torch.randn(c, generator=gen).requires_grad_() if affine else None
        cases.append((xb, w, b, 1e-5, r, relu, c))
    return cases


@pytest.mark.parametrize("k", range(3))
def test_opcheck(k):
    args = _opcheck_cases()[k]
    result = torch.library.opcheck(ops.batch_norm_blocked.default, args)
    assert all(v == "SUCCESS" for v in result.values()), result
    xb, w, b, eps, r, relu, c = args
    out, mean, var = ops.batch_norm_blocked(*[a.detach() if isinstance(a, torch.Tensor) else a for a in args])
    result = torch.library.opcheck(ops.batch_norm_blocked_backward.default,
                                   (torch.randn_like(out.float()).to(out.dtype), xb.detach(), out, w if w is None
                                    else w.detach(), mean, var, eps, relu, r is not None, True))
    assert all(v == "SUCCESS" for v in result.values()), result


def test_torch_compile_matches_eager():
    gen = _gen("compile")
    xb = _blocked(_data((2, 24, 5, 5), gen).float())
    r = _blocked(_data((2, 24, 5, 5), gen).float())
    w, b = torch.randn(24, generator=gen), torch.randn(24, generator=gen)

    def f(x, r):
        return ops.batch_norm_blocked(x, w, b, 1e-5, r, True)[0] * 2

    torch._dynamo.reset()
    compiled = torch.compile(f, fullgraph=True)
    assert torch.equal(compiled(xb, r), f(xb, r))


# --- statistics gathered by the convolution (conv2d_moments) ------------------------------------

MOMENT_CONVS = {  # (input (N, C, H, W), conv2d_moments' weight shape, stride, padding, groups)
    "3x3": ((3, 20, 9, 7), (36, 20, 3, 3), 1, 1, 1),
    "1x1_rows_merged": ((2, 64, 6, 6), (96, 64, 1, 1), 1, 0, 1),
    "stride2": ((2, 16, 11, 10), (24, 16, 3, 3), 2, 1, 1),
    "grouped": ((2, 32, 7, 7), (32, 8, 3, 3), 1, 1, 4),
    "depthwise": ((2, 32, 8, 9), (32, 1, 3, 3), 1, 1, 32),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("case", sorted(MOMENT_CONVS))
def test_statistics_from_the_convolution_are_the_tensors_own(case, dtype):
    """conv2d_moments' per-row statistics, merged by batch_norm_blocked, against the statistics
    it computes from the output itself: both in double from the same values, each within the
    derived bound above of the float64 truth, so within twice that of each other; the outputs
    then differ by the scale's share only. And the output is conv2d's, bit for bit."""
    shape, wshape, stride, pad, groups = MOMENT_CONVS[case]
    gen = _gen("moments" + case)
    x = ops.to_blocked(torch.randn(shape, generator=gen).to(dtype) + 3)
    w = torch.randn(wshape, generator=gen).to(dtype)
    y, moments = ops.conv2d_moments(x, w, None, [stride, stride], [pad, pad], [1, 1], groups)
    assert torch.equal(y, ops.conv2d(x, w, None, [stride, stride], [pad, pad], [1, 1], groups, "none", True))
    k = wshape[0]
    g, b = torch.rand(k, generator=gen) + 0.5, torch.randn(k, generator=gen)
    out_a, mean_a, var_a = ops.batch_norm_blocked(y, g, b, 1e-5, None, True, k, moments)
    out_b, mean_b, var_b = ops.batch_norm_blocked(y, g, b, 1e-5, None, True, k)
    plain = ops.from_blocked(y, k).double()
    m = plain.shape[0] * plain.shape[2] * plain.shape[3]
    mu, var = plain.mean((0, 2, 3)), plain.var((0, 2, 3), unbiased=False)
    xc = (plain - mu[None, :, None, None]).abs().amax((0, 2, 3))
    u, ud = 2.0 ** -24, 2.0 ** -53
    dvar = 2 * (m + 5) * ud * (var + 2 * xc ** 2) + u * var
    dmean = u * mu.abs() + 2 * (m + 2) * ud * (xc + mu.abs())
    assert ((mean_a.double() - mean_b.double()).abs() <= 2 * dmean * (1 + 8 * u)).all()
    assert ((var_a.double() - var_b.double()).abs() <= 2 * dvar * (1 + 8 * u)).all()
    ya, yb = ops.from_blocked(out_a, k).double(), ops.from_blocked(out_b, k).double()
    s = (g.double() / (var + 1e-5).sqrt())[None, :, None, None]
    delta_s = (dvar / (var + 1e-5))[None, :, None, None] + 4 * u
    rounding = (2.0 ** -8 if dtype == torch.bfloat16 else 0.0) * (ya.abs() + yb.abs())
    bound = 2 * (u * (s.abs() * (mu.abs()[None, :, None, None] + 3 * xc[None, :, None, None]) + 2 * ya.abs())
                 + delta_s * (s * xc[None, :, None, None]).abs()) + rounding
    assert ((ya - yb).abs() <= bound * (1 + 8 * u)).all()


def test_convolution_statistics_feed_the_gradients_as_conv2d_does():
    gen = _gen("moments-grad")
    x = ops.to_blocked(torch.randn(2, 16, 6, 6, generator=gen)).requires_grad_()
    w = torch.randn(24, 16, 3, 3, generator=gen).requires_grad_()
    b = torch.randn(24, generator=gen).requires_grad_()
    dy = torch.randn(2, 1, 6, 6, 32, generator=gen)  # 24 channels in one block of 32
    y, moments = ops.conv2d_moments(x, w, b, [1, 1], [1, 1], [1, 1])
    assert not moments.requires_grad
    grads = torch.autograd.grad(y, (x, w, b), dy)
    y2 = ops.conv2d(x, w, b, [1, 1], [1, 1], [1, 1], 1, "none", True)
    for a, c in zip(grads, torch.autograd.grad(y2, (x, w, b), dy)):
        assert torch.equal(a, c)


def test_moments_of_another_shape_are_refused():
    x = ops.to_blocked(torch.randn(2, 16, 5, 5))
    with pytest.raises(ValueError, match="moments must be conv2d_moments"):
        ops.batch_norm_blocked(x, None, None, 1e-5, None, False, 16, torch.zeros(2, 1, 4, 2, 16, dtype=torch.float64))
    with pytest.raises(TypeError, match="moments"):
        ops.batch_norm_blocked(x, None, None, 1e-5, None, False, 16, torch.zeros(2, 1, 5, 2, 16))

