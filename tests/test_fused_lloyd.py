"""The fused CUDA Lloyd kernel against the array-generic NumPy reference.

The GPU tests (marker ``gpu``) skip without CuPy and a CUDA device; the
source and layout tests run everywhere, and the kernel source is compiled
with ``nvcc --ptx`` for sm_80 and sm_90 when nvcc is on PATH.
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from gpuseg.backend import to_numpy
from gpuseg.clustering import fit_kmeans, lloyd_partials, nearest
from gpuseg.fused_lloyd import (MAXD_BOUNDS, SMEM_LIMIT, _smem, kernel_source, pad_rows, padded_width,
                                why_unsupported)

gpu = pytest.mark.gpu


# -- everywhere ---------------------------------------------------------------

@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_kernel_source_compiles_with_nvcc(tmp_path, arch):
    src = tmp_path / "lloyd.cu"
    src.write_text(kernel_source())
    out = tmp_path / f"lloyd_{arch}.ptx"
    proc = subprocess.run(["nvcc", "-std=c++17", "--ptx", f"-arch={arch}", str(src), "-o", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    ptx = out.read_text()
    for dtype in ("f32", "f64"):
        for maxd in MAXD_BOUNDS:
            assert f".entry lloyd_step_{dtype}_d{maxd}(" in ptx
            assert f".entry assign_{dtype}_d{maxd}(" in ptx


@pytest.mark.parametrize("d, dtype, ld", [(1, np.float32, 4), (3, np.float32, 4), (8, np.float32, 8),
                                           (9, np.float32, 12), (3, np.float64, 4), (32, np.float64, 32)])
def test_padded_width_is_whole_16_byte_vectors(d, dtype, ld):
    assert padded_width(d, dtype) == ld
    assert ld * np.dtype(dtype).itemsize % 16 == 0


def test_pad_rows_keeps_values_and_zeroes_padding(rng):
    X = rng.normal(size=(7, 3)).astype(np.float32)
    P = pad_rows(X, 4)
    assert P.shape == (7, 4) and P.flags.c_contiguous
    np.testing.assert_array_equal(P[:, :3], X)
    assert not P[:, 3].any()
    assert pad_rows(P, 4) is P


def test_unsupported_shapes_say_why():
    assert why_unsupported(8, 16, np.float32) is None
    assert "at most 32" in why_unsupported(33, 4, np.float32)
    assert "float32 or float64" in why_unsupported(4, 4, np.int32)
    big_k = next(k for k in range(1, 10_000) if _smem(k, 32, 32, 8, 1) > SMEM_LIMIT)
    assert "shared memory" in why_unsupported(32, big_k, np.float64)


def test_fused_engine_refuses_host_arrays(rng):
    X = rng.normal(size=(100, 3))
    with pytest.raises(ValueError, match="needs CuPy arrays"):
        fit_kmeans(X, 3, engine="fused")


# -- on a GPU ----------------------------------------------------------------

def _reference(X: np.ndarray, C: np.ndarray):
    """float64 labels, sums, counts and inertia of one Lloyd step, plus near-tie rows."""
    X64, C64 = X.astype(np.float64), C.astype(np.float64)
    D = ((X64[:, None, :] - C64[None, :, :]) ** 2).sum(axis=2)
    order = np.sort(D, axis=1)
    ties = (order[:, 1] - order[:, 0]) <= 1e-5 * np.maximum(order[:, 1], 1e-12) if D.shape[1] > 1 \
        else np.zeros(len(X), bool)
    labels = D.argmin(axis=1)
    k = C.shape[0]
    sums = np.stack([np.bincount(labels, X64[:, f], minlength=k) for f in range(X.shape[1])], axis=1)
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    return labels, sums, counts, D.min(axis=1).sum(), ties


def _fused(d, k, dtype=np.float32):
    from gpuseg.fused_lloyd import FusedStep
    return FusedStep(d, k, dtype)


CASES = [  # n (not a multiple of the block), d, k
    (10_007, 3, 5), (4_099, 8, 1), (4_099, 8, 2), (20_011, 8, 64), (9_001, 1, 7), (6_007, 32, 16),
    (3, 4, 3), (70_001, 16, 33),
]


@gpu
@pytest.mark.parametrize("mode", [0, 1])
@pytest.mark.parametrize("n, d, k", CASES)
def test_fused_step_matches_numpy_reference(cp, n, d, k, mode):
    rng = np.random.default_rng([n, d, k])  # fresh inputs per shape
    X = rng.normal(size=(n, d)).astype(np.float32) * rng.uniform(0.5, 3.0, d).astype(np.float32)
    C = X[rng.choice(n, k, replace=False)] + rng.normal(0, 0.1, (k, d)).astype(np.float32)
    labels_ref, sums_ref, counts_ref, inertia_ref, ties = _reference(X, C)
    step = _fused(d, k)
    step.mode = mode  # 0: warp-aggregated sums, 1: one atomic per value
    Xd = pad_rows(cp.asarray(X), step.ld)
    Cd = cp.zeros((k, step.ld), dtype=cp.float32)
    Cd[:, :d] = cp.asarray(C)
    part = step(Xd, Cd)
    labels, sqdist = step.assign(Xd, Cd)
    labels = to_numpy(labels)
    assert not np.any(labels[~ties] != labels_ref[~ties])
    sums, counts = to_numpy(part.sums)[:, :d], to_numpy(part.counts)
    assert not to_numpy(part.sums)[:, d:].any()  # padding stays zero
    assert counts.sum() == n
    if not ties.any():
        np.testing.assert_array_equal(counts, counts_ref)
        filled = counts_ref > 0
        got = sums[filled] / counts[filled, None]
        want = sums_ref[filled] / counts_ref[filled, None]
        assert np.linalg.norm(got - want) <= 1e-5 * max(np.linalg.norm(want), 1e-6)
    assert float(part.inertia) == pytest.approx(inertia_ref, rel=1e-5)
    assert float(to_numpy(sqdist).sum()) == pytest.approx(inertia_ref, rel=1e-5)


@gpu
def test_fused_step_float64_matches_numpy_closely(cp):
    rng = np.random.default_rng(7)
    X = rng.normal(size=(30_001, 5))
    C = X[:6].copy()
    step = _fused(5, 6, np.float64)
    Xd = pad_rows(cp.asarray(X), step.ld)
    Cd = cp.zeros((6, step.ld))
    Cd[:, :5] = cp.asarray(C)
    ref = lloyd_partials(X, C)
    part = step(Xd, Cd)
    np.testing.assert_allclose(to_numpy(part.sums)[:, :5], ref.sums, rtol=1e-10, atol=1e-8)
    np.testing.assert_array_equal(to_numpy(part.counts), ref.counts)


@gpu
def test_fused_fit_matches_generic_fit_and_relocates_empty_clusters(cp):
    rng = np.random.default_rng(11)
    centers = rng.normal(0, 8, (6, 4))
    X = (centers[rng.integers(0, 6, 50_000)] + rng.normal(0, 1, (50_000, 4))).astype(np.float32)
    init = X[:6].copy()
    init[5] = 1e4  # attracts nothing: must be re-seeded, never NaN
    ref = fit_kmeans(X.astype(np.float64), 6, init=init.astype(np.float64), tol=1e-6)
    got = fit_kmeans(cp.asarray(X), 6, init=cp.asarray(init), tol=1e-6, engine="fused")
    assert got.engine == "fused"
    assert np.isfinite(to_numpy(got.centers)).all()
    from sklearn.metrics import adjusted_rand_score
    assert adjusted_rand_score(ref.labels, to_numpy(got.labels)) > 0.999
    assert got.inertia == pytest.approx(ref.inertia, rel=1e-5)
    np.testing.assert_allclose(to_numpy(got.centers), ref.centers, rtol=1e-4, atol=1e-4)


@gpu
def test_streamed_fit_equals_in_memory_fit(cp):
    # float64 and separated clusters: the same partial sums, so the same fit.
    rng = np.random.default_rng(3)
    centers = rng.normal(0, 6, (10, 8))
    X = centers[rng.integers(0, 10, 40_000)] + rng.normal(0, 1, (40_000, 8))
    init = X[:10].copy()
    a = fit_kmeans(cp.asarray(X), 10, init=cp.asarray(init), tol=1e-6, engine="fused")
    b = fit_kmeans(X, 10, init=init, tol=1e-6, engine="streamed", stream_rows=7_000)
    assert b.engine == "streamed-fused"
    np.testing.assert_array_equal(to_numpy(a.labels), b.labels)
    assert a.n_iter == b.n_iter
    assert b.inertia == pytest.approx(a.inertia, rel=1e-9)


@gpu
def test_64_bit_offsets_past_2_31_elements(cp):
    # n * ld >= 2^31: offsets of the last rows overflow 32-bit indexing.
    d, k = 8, 4
    n = (1 << 31) // d + 4_099
    X = cp.random.default_rng(5).standard_normal((n, d), dtype=cp.float32)
    C = X[:k].copy()
    step = _fused(d, k)
    part = step(X, C)
    assert float(part.counts.sum()) == n
    labels, _ = step.assign(X, C)
    tail = to_numpy(X[-5_000:])
    want, *_ = _reference(tail, to_numpy(C))
    np.testing.assert_array_equal(to_numpy(labels[-5_000:]), want)
    del X


@gpu
def test_nearest_on_device_uses_the_fused_kernel_and_agrees_with_cpu(cp):
    rng = np.random.default_rng(9)
    X = rng.normal(size=(12_345, 3)).astype(np.float32)
    C = X[:5].copy()
    lab_gpu, sq_gpu = nearest(cp.asarray(X), cp.asarray(C))
    lab_cpu, sq_cpu = nearest(X.astype(np.float64), C.astype(np.float64))
    np.testing.assert_array_equal(to_numpy(lab_gpu), lab_cpu)
    np.testing.assert_allclose(to_numpy(sq_gpu), sq_cpu, rtol=1e-4, atol=1e-5)
