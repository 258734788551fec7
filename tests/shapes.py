"""The one named shape sweep every f32 microkernel variant is tested with (STYLE.md point 9).

``sweep(mr, nr)`` returns the cases for a ukernel with an MR × NR register tile: the sizes
that straddle common block sizes, deep K, K below/at/above the unroll of 2, every m and n
remainder tile of *this* MR × NR, padded leading dimensions (lda = next prime above K),
strided C, ``beta0_nan_c``, beta 1 and 0.5, batch {1, 2, 7} × {stride, offset, address} and
empty batches. Each case has a readable id used as the pytest id.
"""

from dataclasses import dataclass

from brgemm.testing import next_prime_above

BATCH_KINDS = ("stride", "offset", "address")
DIAGONAL_SIZES = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 15, 16, 17, 31, 32, 33, 63, 64, 65)
DEEP_K = 1031  # prime, above the gemm driver's K chunk of 512 twice over


@dataclass(frozen=True)
class Case:
    id: str
    m: int
    n: int
    k: int
    lda: int = None
    ldb: int = None
    ldc: int = None
    beta: float = 0.0
    batch: str = "stride"
    count: int = 1
    c_fill: str = "random"
    stride_gap: int = 0

    def problem_kwargs(self):
        return dict(batch=self.batch, count=self.count, lda=self.lda, ldb=self.ldb, ldc=self.ldc,
                    beta=self.beta, c_fill=self.c_fill, stride_gap=self.stride_gap)


def sweep(mr, nr):
    """Every case for an MR × NR ukernel, ids unique."""
    cases = []
    # Sizes on the diagonal m = n = k.
    for s in DIAGONAL_SIZES:
        cases.append(Case(f"mnk{s}", s, s, s))
    # Deep K: one block, and a batch of 2 (K_total = 2·DEEP_K).
    cases.append(Case(f"deep_k{DEEP_K}", mr, nr, DEEP_K))
    cases.append(Case(f"deep_k{DEEP_K}_stride_x2", mr + 1, nr + 1, DEEP_K, count=2))
    # K = 1..4: below, at and above the kernels' K unroll of 2, on a full tile.
    for k in range(1, 5):
        cases.append(Case(f"k{k}_full_tile", mr, nr, k))
    # m remainder tiles at n = NR, and n remainder tiles at small m.
    for m in range(1, mr + 2):
        cases.append(Case(f"m{m}_n{nr}_k5", m, nr, 5))
    for n in range(1, nr + 2):
        cases.append(Case(f"n{n}_m2_k5", 2, n, 5))
    # Two tiles plus a remainder in both directions.
    cases.append(Case("two_tiles_plus_rem", 2 * mr + 1, 2 * nr + 3, 9))
    # Leading dimensions: lda = next prime above K, ldb > n, strided C (ldc > n), all three.
    for k in (7, 20, 64):
        lda = next_prime_above(k)
        cases.append(Case(f"lda_prime{lda}_k{k}", mr + 1, nr + 1, k, lda=lda))
    cases.append(Case("ldb_pad", mr + 1, nr + 3, 11, ldb=nr + 3 + 13))
    cases.append(Case("ldc_pad", mr + 1, nr + 3, 11, ldc=nr + 3 + 7))
    cases.append(Case("lda_ldb_ldc_pad", 2 * mr - 1, nr - 1 if nr > 1 else 1, 13,
                      lda=next_prime_above(13), ldb=nr + 5, ldc=nr + 9))
    # beta: C full of NaN under beta = 0 must not be read; beta 1 accumulates; general beta.
    cases.append(Case("beta0_nan_c", mr + 1, nr + 1, 7, c_fill="nan"))
    cases.append(Case("beta0_nan_c_ldc_pad_x2", mr - 1 if mr > 1 else 1, nr + 5, 7, ldc=nr + 8,
                      count=2, c_fill="nan"))
    cases.append(Case("beta1", mr + 1, nr + 1, 7, beta=1.0))
    cases.append(Case("beta0.5", mr + 1, nr + 1, 7, beta=0.5))
    cases.append(Case("beta-1.75_ldc_pad", mr, nr + 2, 6, beta=-1.75, ldc=nr + 7))
    # Batches: {1, 2, 7} × {stride, offset, address}, on remainder tiles with padding.
    for kind in BATCH_KINDS:
        for count in (1, 2, 7):
            cases.append(Case(f"{kind}_x{count}", mr + 1, nr + 1, 5, lda=7, ldb=nr + 4, ldc=nr + 2,
                              beta=0.5 if count == 2 else 0.0, batch=kind, count=count,
                              stride_gap=3 if (kind == "stride" and count == 7) else 0))
    # Empty batch: C = beta·C (beta 0.5), C = 0 (beta 0, C full of NaN before).
    for kind in BATCH_KINDS:
        cases.append(Case(f"{kind}_x0_beta0.5", mr + 1, nr + 1, 5, beta=0.5, batch=kind, count=0))
        cases.append(Case(f"{kind}_x0_beta0_nan_c", mr + 1, nr + 1, 5, batch=kind, count=0,
                          c_fill="nan"))
    ids = [c.id for c in cases]
    assert len(ids) == len(set(ids)), "sweep ids must be unique"
    return cases


def representative(mr, nr):
    """A short subset of the sweep (a remainder tile per kind, beta, padding) for tests that
    repeat every case under several ISAs."""
    keep = {"mnk17", "two_tiles_plus_rem", "lda_ldb_ldc_pad", "beta0_nan_c", "beta0.5",
            "offset_x7", "address_x2", "stride_x7", "k3_full_tile"}
    return [c for c in sweep(mr, nr) if c.id in keep]
