"""The CPU Lloyd step: the generic step's answer, bit for bit, in either layout, on any thread count."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import numpy as np
import pytest

from gpuseg.cluster.contract import Step
from gpuseg.cluster.engine import make_step
from gpuseg.cluster.host import (
    _POOL_BLOCK_ROWS,
    HostStep,
    centre_feature_major,
    host_step,
    piece_rows,
)
from gpuseg.cluster.lloyd import lloyd
from gpuseg.cluster.steps import _HOST_ROWS, ChunkedStep, default_chunk_size


def blobs(rng, n, d, k, dtype=np.float64):
    centers = rng.normal(0, 4, (k, d))
    return (centers[rng.integers(0, k, n)] + rng.normal(0, 1.5, (n, d))).astype(dtype)


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n, k, chunk", [(5_000, 5, 700), (40_000, 8, 40_000), (3_001, 130, 1_024)])
def test_partials_equal_the_generic_steps_bit_for_bit(rng, order, dtype, n, k, chunk):
    # Sums, counts and n_changed: identical, iteration after iteration, full and delta;
    # the inertia (a sum in another order) to rounding.
    X = np.asarray(blobs(rng, n, 3, min(k, 8), dtype), order=order)
    host, generic = HostStep(X, chunk), ChunkedStep(X, chunk)
    C = X[rng.choice(n, k, replace=False)].copy()
    for it in range(4):
        a, b = host.partials(C, delta=it > 0), generic.partials(C, delta=it > 0)
        assert a.delta == b.delta == (it > 0)
        np.testing.assert_array_equal(a.sums, b.sums)
        np.testing.assert_array_equal(a.counts, b.counts)
        assert a.n_changed == b.n_changed
        assert a.inertia == pytest.approx(float(b.inertia), rel=1e-5 if dtype == np.float32 else 1e-12)
        np.testing.assert_array_equal(host.labels(), generic.labels())
        assert it == 0 or 0 < a.n_changed < n  # moved centres: some points change cluster
        C = (C + rng.normal(0, 0.5, C.shape)).astype(dtype)
    labels, sqdist = host.assign(C)
    want_labels, want_sqdist = generic.assign(C)
    np.testing.assert_array_equal(labels, want_labels)
    np.testing.assert_allclose(sqdist, want_sqdist, rtol=1e-12, atol=0)
    assert sqdist.dtype == np.float64 and labels.dtype == np.int32
    assert host.inertia(C) == pytest.approx(generic.inertia(C), rel=1e-12)


def test_without_labels_the_step_returns_full_sums(rng):
    X = np.asfortranarray(blobs(rng, 3_000, 4, 5))
    C = X[:5].copy()
    host, generic = HostStep(X, 512, track_labels=False), ChunkedStep(X, 512, track_labels=False)
    a, b = host.partials(C, delta=True), generic.partials(C, delta=True)
    assert not a.delta and a.n_changed is None and host.labels() is None
    np.testing.assert_array_equal(a.sums, b.sums)
    np.testing.assert_array_equal(a.counts, b.counts)
    assert host.inertia(C) == pytest.approx(float(generic.assign(C)[1].sum()), rel=1e-12)


def test_threads_do_not_change_the_answer(rng):
    X = np.asfortranarray(blobs(rng, 20_000, 3, 6))
    init = X[:6].copy()
    one = lloyd(HostStep(X, 1_500), init, tol=0)
    with ThreadPoolExecutor(3) as pool:
        three = lloyd(HostStep(X, 1_500, pool), init, tol=0)
    np.testing.assert_array_equal(one.labels, three.labels)
    assert one.n_iter == three.n_iter
    np.testing.assert_array_equal(one.centers, three.centers)


def test_buffers_follow_the_number_of_centres(rng):
    # Relocation and predict may call one step with other centres; its per-thread buffers are remade.
    X = blobs(rng, 2_000, 2, 4)
    step = HostStep(X, 300)
    for k in (4, 2, 9, 4):
        C = X[:k].copy()
        labels, sqdist = step.assign(C)
        D = ((X[:, None, :] - C[None]) ** 2).sum(axis=2)
        np.testing.assert_array_equal(labels, D.argmin(axis=1))
        np.testing.assert_allclose(sqdist, D.min(axis=1), rtol=1e-12, atol=1e-12)


def test_host_engine_is_the_cpu_choice(rng):
    X = blobs(rng, 500, 3, 3)
    with ExitStack() as stack:
        for engine in ("auto", "generic"):
            eng = make_step(X, 3, engine, stack, n_threads=2)
            assert isinstance(eng.step, HostStep) and isinstance(eng.step, Step)
            assert eng.step.name == "generic" and eng.note is None
        step = host_step(X, stack, 3, chunk_size=100, n_threads=1)
        assert step.executor is None and step.chunk_size == 100


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n, d", [(2, 3), (65_535, 2), (65_536, 2), (130_001, 6)])  # blocks: 1 MiB
def test_centring_gives_numpys_mean_and_centred_points_bit_for_bit(rng, dtype, n, d):
    # NumPy's (and scikit-learn's) X.mean(axis=0) adds the rows in order; float32 sums stay float32.
    # (With one row or one column X is F-ordered too, and NumPy sums it pairwise: _centred does not come here.)
    X = (rng.lognormal(3, 2, (n, d)) * rng.choice([-1, 1], (n, d))).astype(dtype)
    Xc, mean = centre_feature_major(X)
    assert Xc.flags.f_contiguous and Xc.dtype == mean.dtype == dtype
    np.testing.assert_array_equal(mean, X.mean(axis=0))
    np.testing.assert_array_equal(Xc, X - X.mean(axis=0))


def test_a_pool_takes_larger_pieces_and_blocks():
    # Fewer NumPy calls per row on a pool (each hands the GIL over); alone, pieces that stay in L2.
    assert piece_rows(8, 8, pooled=False) == piece_rows(500, 8, pooled=False) == _HOST_ROWS
    assert piece_rows(8, 8, pooled=True) == piece_rows(5, 4, pooled=True) == 4 * _HOST_ROWS
    assert piece_rows(64, 8, pooled=True) == _HOST_ROWS and piece_rows(20, 8, pooled=True) == (1 << 22) // 160
    X = np.zeros((10, 3))
    with ExitStack() as stack:
        assert host_step(X, stack, 5, n_threads=1).chunk_size == default_chunk_size(np, 5, 3)
        assert host_step(X, stack, 5, n_threads=2).chunk_size == _POOL_BLOCK_ROWS
        assert host_step(X, stack, 5, chunk_size=777, n_threads=2).chunk_size == 777


def test_pooled_defaults_give_the_single_thread_answer(rng):
    # Past one pooled block (131,072 rows) and one pooled piece (65,536): same labels, n_iter, centres.
    from gpuseg.cluster.fit import fit_kmeans
    X = blobs(rng, 300_000, 3, 5)
    init = X[:5].copy()
    one = fit_kmeans(X, 5, init=init, n_threads=1)
    two = fit_kmeans(X, 5, init=init, n_threads=2)
    np.testing.assert_array_equal(one.labels, two.labels)
    assert one.n_iter == two.n_iter > 2
    np.testing.assert_allclose(one.centers, two.centers, rtol=1e-12)
    assert one.inertia == pytest.approx(two.inertia, rel=1e-12)


def test_fits_that_overlap_on_threads_put_blas_back_as_they_found_it():
    # Each fit pinned BLAS to one thread and put back what it found: two overlapping fits (two
    # gpuseg.segment calls on threads) left the whole process's BLAS at one thread for good.
    from contextlib import ExitStack

    from threadpoolctl import threadpool_info

    from gpuseg.cluster.steps import cpu_pool

    def blas() -> list[int]:
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    before = blas()
    if not before or max(before) < 2:
        pytest.skip("no BLAS with more than one thread here")
    first, second = ExitStack(), ExitStack()
    cpu_pool(first, 2)
    cpu_pool(second, 2)
    assert max(blas()) == 1
    first.close()  # the first to start ends first: the second still runs with one BLAS thread
    assert max(blas()) == 1
    second.close()
    assert blas() == before
