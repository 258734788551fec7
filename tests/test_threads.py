"""Concurrency: 8 Python threads calling kernels at once (every available ukernel through
Kernel, every batch kind, batch_reduce, and gemm with its own OpenMP team) must give results
bit-identical to the same calls made one after another; kernels dispatched concurrently
from the cache must be the same kernels."""

import threading

import numpy as np
import pytest

import brgemm
from brgemm.testing import bits, make_problem, random_f32
from conftest import UKERNELS, restore_isa

N_THREADS = 8
ROUNDS = 3


def _jobs(rng):
    """name -> callable returning a fresh result array (inputs fixed, outputs new)."""
    jobs = {}
    for u in UKERNELS:
        if not u["available"]:
            continue
        p = make_problem(u["mr"] + 3, 2 * u["nr"] + 5, 37, rng=rng, batch="stride", count=4,
                         lda=41, ldc=2 * u["nr"] + 9, beta=0.5)
        kernel = brgemm.Kernel(p.m, p.n, p.k, ukernel=u["name"], **p.kernel_kwargs())

        jobs[u["name"]] = lambda p=p, kernel=kernel: p.run(kernel, p.fresh_c())
    for kind in ("offset", "address"):
        p = make_problem(29, 83, 19, rng=rng, batch=kind, count=7, ldb=90, c_fill="nan")
        kernel = brgemm.Kernel(p.m, p.n, p.k, **p.kernel_kwargs())

        jobs[f"dispatched_{kind}"] = lambda p=p, kernel=kernel: p.run(kernel, p.fresh_c())
    A, B = random_f32((5, 31, 47), rng), random_f32((5, 47, 66), rng)
    C0 = random_f32((31, 66), rng)
    jobs["batch_reduce"] = lambda: brgemm.batch_reduce(A, B, C0.copy(), beta=1.0)
    GA = random_f32((96, 300), rng)
    GB = random_f32((300, 320), rng)[:, :100]  # ldb = 320: the packing path
    jobs["gemm"] = lambda: brgemm.gemm(GA, GB)
    SA, SB = random_f32((6, 700), rng), random_f32((700, 20), rng)  # small M, 2 K chunks
    jobs["gemm_small"] = lambda: brgemm.gemm(SA, SB)
    return jobs


def _run_concurrently(target):
    """Runs target(i) on N_THREADS threads released together; re-raises the first error."""
    barrier = threading.Barrier(N_THREADS)
    errors = []

    def body(i):
        try:
            barrier.wait(timeout=60)
            target(i)
        except BaseException as e:  # noqa: BLE001 - reported in the main thread
            errors.append(e)
            barrier.abort()

    threads = [threading.Thread(target=body, args=(i,)) for i in range(N_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    if errors:
        raise errors[0]


@pytest.mark.parametrize("omp_threads", [1, 2])
def test_concurrent_calls_are_bit_identical_to_serial(threads_restored, omp_threads):
    brgemm.set_isa(None)  # every available ukernel can be forced
    try:
        brgemm.set_num_threads(omp_threads)
        rng = np.random.default_rng(7)
        jobs = _jobs(rng)
        names = list(jobs)
        serial = {name: bits(jobs[name]()) for name in names}
        # The serial run itself is deterministic.
        assert all(np.array_equal(serial[n], bits(jobs[n]())) for n in names)
        results = [dict() for _ in range(N_THREADS)]

        def work(i):
            order = names[i % len(names):] + names[:i % len(names)]  # threads collide on jobs
            for r in range(ROUNDS):
                for name in order:
                    results[i][(name, r)] = bits(jobs[name]())

        _run_concurrently(work)
    finally:
        restore_isa()
    for i in range(N_THREADS):
        for (name, r), got in results[i].items():
            assert np.array_equal(got, serial[name]), f"thread {i}, round {r}: {name} differs"
        assert len(results[i]) == ROUNDS * len(names)


def test_concurrent_dispatch_gives_the_cached_kernels():
    """Threads dispatching the same new descriptors at once all get the same kernel."""
    descs = [dict(m=m, n=n, k=k, beta=b, batch=kind)
             for m, n, k in ((3, 1001, 7), (1013, 5, 2), (17, 19, 1019))
             for b in (0.0, 0.75) for kind in ("stride", "offset", "address")]
    handles = [None] * N_THREADS

    def work(i):
        order = list(range(len(descs)))
        order = order[i % len(order):] + order[:i % len(order)]  # threads collide on descriptors
        handles[i] = {j: brgemm.Kernel(**descs[j]).handle for j in order}

    _run_concurrently(work)
    for i in range(1, N_THREADS):
        assert handles[i] == handles[0], f"thread {i} got other kernels"
    assert len(set(handles[0].values())) == len(descs)
    assert [handles[0][j] for j in range(len(descs))] == [brgemm.Kernel(**d).handle for d in descs]
