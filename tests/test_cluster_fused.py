"""The fused CUDA Lloyd kernel against the array-generic NumPy reference, and the engine's fallback.

The GPU tests (marker ``gpu``) skip without CuPy and a CUDA device; the
source, layout and fallback tests run everywhere, and the kernel source is
compiled with ``nvcc --ptx`` for every architecture it supports when nvcc is
on PATH.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import types

import numpy as np
import pytest
from cupy_like import is_emulator

from gpuseg.backend import to_numpy
from gpuseg.cluster import engine as engine_module
from gpuseg.cluster import fused
from gpuseg.cluster.fit import fit_kmeans, nearest
from gpuseg.cluster.fused import (ARCHS, MAXD_BOUNDS, SMEM_LIMIT, _smem, compile_options, kernel_source,
                                  kernel_variant, pad_rows, padded_width, why_unsupported)
from gpuseg.cluster.steps import lloyd_partials

gpu = pytest.mark.gpu
needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH")


# -- everywhere ---------------------------------------------------------------

def _nvcc_ptx(tmp_path, arch, *options):
    src = tmp_path / "lloyd.cu"
    src.write_text(kernel_source())
    out = tmp_path / f"lloyd_{arch}.ptx"
    proc = subprocess.run(["nvcc", "--ptx", f"-arch={arch}", *options, str(src), "-o", str(out)],
                          capture_output=True, text=True)
    return proc, (out.read_text() if proc.returncode == 0 else "")


@pytest.mark.slow
@needs_nvcc
@pytest.mark.parametrize("arch", ARCHS)
def test_kernel_source_compiles_for_every_architecture(tmp_path, arch):
    # With the options the host passes for a device of this architecture.
    variant = kernel_variant(int(arch[3:]))
    proc, ptx = _nvcc_ptx(tmp_path, arch, *compile_options(variant))
    assert proc.returncode == 0, proc.stderr
    for dtype in ("f32", "f64"):
        for maxd in MAXD_BOUNDS:
            assert f".entry lloyd_step_{dtype}_d{maxd}(" in ptx
            assert f".entry lloyd_step_staged_{dtype}_d{maxd}(" in ptx
            assert f".entry assign_{dtype}_d{maxd}(" in ptx
    # sm_80+ keeps the single-instruction warp reduction; sm_75 has none and uses shuffles.
    assert ("redux.sync" in ptx) == (variant == "redux")


@pytest.mark.slow
@needs_nvcc
@pytest.mark.parametrize("arch", ARCHS)
def test_kernel_source_compiles_without_options(tmp_path, arch):
    # Without -DGPUSEG_REDUX the architecture being compiled picks the variant.
    proc, ptx = _nvcc_ptx(tmp_path, arch, "-std=c++17")
    assert proc.returncode == 0, proc.stderr
    assert ("redux.sync" in ptx) == (int(arch[3:]) >= 80)


@needs_nvcc
def test_the_sm80_reduction_does_not_build_for_sm75(tmp_path):
    # Why sm_75 needs its own variant: __reduce_max_sync does not exist there.
    proc, _ = _nvcc_ptx(tmp_path, "sm_75", *compile_options("redux"))
    assert proc.returncode != 0 and "__reduce_max_sync" in proc.stderr


@pytest.mark.parametrize("cc, variant", [(75, "shuffle"), (80, "redux"), (86, "redux"), (89, "redux"),
                                         (90, "redux"), (100, "redux")])
def test_variant_follows_compute_capability(cc, variant):
    assert kernel_variant(cc) == variant
    assert f"-DGPUSEG_REDUX={int(variant == 'redux')}" in compile_options(variant)


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="kernel variant must be one of redux, shuffle, got 'fast'"):
        compile_options("fast")


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


# -- the fallback when the fused kernel fails, injected on the CPU ---------------------

@pytest.fixture
def failing_fused(monkeypatch):
    """The engine treats NumPy as a device, and the fused kernel fails to build there."""
    calls = []

    def build(X, n_clusters):
        calls.append(X.shape)
        raise RuntimeError("injected: no kernel image is available for execution on the device")

    monkeypatch.setattr(engine_module, "_on_device", lambda xp: True)
    monkeypatch.setattr(engine_module, "build_fused", build)
    return calls


def test_failed_fused_kernel_falls_back_with_its_reason(rng, failing_fused):
    X = rng.normal(size=(2_000, 3))
    init = X[:4].copy()
    got = fit_kmeans(X, 4, init=init, tol=0)
    assert failing_fused, "the fused kernel was never tried"
    assert got.engine == "generic"
    assert got.engine_note.startswith("array-generic step: the fused kernel failed to compile or launch")
    assert "RuntimeError: injected: no kernel image" in got.engine_note


def test_failed_fused_kernel_gives_the_generic_result(rng, failing_fused, monkeypatch):
    X = rng.normal(size=(2_000, 3))
    init = X[:4].copy()
    got = fit_kmeans(X, 4, init=init, tol=0)
    monkeypatch.undo()
    want = fit_kmeans(X, 4, init=init, tol=0)
    assert want.engine_note is None
    np.testing.assert_array_equal(got.labels, want.labels)
    assert got.n_iter == want.n_iter and got.inertia == want.inertia


def test_failed_fused_kernel_is_an_error_when_asked_for(rng, failing_fused):
    with pytest.raises(ValueError, match="fused Lloyd kernel cannot run: the fused kernel failed .*injected"):
        fit_kmeans(rng.normal(size=(100, 3)), 3, engine="fused")


def test_unsupported_shape_is_not_tried(rng, failing_fused):
    got = fit_kmeans(rng.normal(size=(500, 40)), 3, random_state=0)
    assert not failing_fused
    assert got.engine_note == "array-generic step: d=40 features (the fused kernel takes at most 32)"


def test_fallback_reason_reaches_report_json(tmp_path, failing_fused):
    from gpuseg import pipeline
    from gpuseg.config import SegmentConfig
    result = pipeline.run(SegmentConfig(out=tmp_path / "out", demo_customers=3_000, backend="cpu", k=4))
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert failing_fused
    assert report["engine"] == "generic"
    assert "the fused kernel failed to compile or launch (RuntimeError: injected" in report["engine_note"]
    assert result.report["engine_note"] == report["engine_note"]


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


def _fused(X, k, **options):
    from gpuseg.cluster.fused import FusedStep
    return FusedStep(X, k, **options)


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
    step = _fused(cp.asarray(X), k, mode=mode)  # 0: warp-aggregated sums, 1: one atomic per value
    Cd = cp.asarray(C)
    part = step.partials(Cd)
    labels, sqdist = step.assign(Cd)
    labels = to_numpy(labels)
    assert not np.any(labels[~ties] != labels_ref[~ties])
    sums, counts = to_numpy(part.sums), to_numpy(part.counts)
    assert sums.shape == (k, d)  # the padded layout stays inside the step
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
    step = _fused(cp.asarray(X), 6)
    ref = lloyd_partials(X, C)
    part = step.partials(cp.asarray(C))
    np.testing.assert_allclose(to_numpy(part.sums), ref.sums, rtol=1e-10, atol=1e-8)
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


def test_streamed_fit_equals_in_memory_fit(device_cp):
    # float64 and separated clusters: the same partial sums, so the same fit.
    cp = device_cp
    engine = "generic" if is_emulator(cp) else "fused"
    rng = np.random.default_rng(3)
    centers = rng.normal(0, 6, (10, 8))
    X = centers[rng.integers(0, 10, 40_000)] + rng.normal(0, 1, (40_000, 8))
    init = X[:10].copy()
    a = fit_kmeans(cp.asarray(X), 10, init=cp.asarray(init), tol=1e-6, engine=engine)
    b = fit_kmeans(X, 10, init=init, tol=1e-6, engine="streamed", stream_rows=7_000)
    assert b.engine == f"streamed-{engine}"
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
    step = _fused(X, k)
    assert step.Xp is X  # d = 8 float32 is already whole vectors: no copy
    part = step.partials(C)
    assert float(part.counts.sum()) == n
    labels, _ = step.assign(C)
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


@gpu
@pytest.mark.parametrize("n, d, k", [(10_007, 3, 5), (20_011, 8, 64), (6_007, 32, 16), (70_001, 16, 33)])
def test_shuffle_variant_equals_the_sm80_variant(cp, n, d, k):
    # The sm_75 variant, run on this device: the same integer maximum, so the same partials to the bit.
    rng = np.random.default_rng([n, d, k, 1])
    X = cp.asarray(rng.normal(size=(n, d)).astype(np.float32))
    C = X[:k].copy()
    if int(cp.cuda.Device().compute_capability) < 80:
        pytest.skip("this device has no __reduce_max_sync")
    redux, shuffle = _fused(X, k, variant="redux"), _fused(X, k, variant="shuffle")
    a, b = redux.partials(C), shuffle.partials(C)
    np.testing.assert_array_equal(to_numpy(a.sums), to_numpy(b.sums))
    np.testing.assert_array_equal(to_numpy(a.counts), to_numpy(b.counts))
    assert float(a.inertia) == float(b.inertia)


@gpu
def test_device_picks_its_variant(cp):
    step = _fused(cp.zeros((10, 3), dtype=cp.float32), 2)
    assert step.variant == kernel_variant(int(cp.cuda.Device().compute_capability))
    step.probe()


def test_compile_failure_on_the_device_falls_back(device_cp, monkeypatch, caplog):
    # A kernel source that does not compile: auto falls back to the generic CuPy step and says why,
    # compiling once and warning once however many steps are built.
    cp = device_cp
    monkeypatch.setattr(fused, "kernel_source", lambda: "extern \"C\" __global__ void broken( { }")
    monkeypatch.setattr(engine_module, "_warned", set())
    built = []
    real = cp.RawModule
    compiles = getattr(real, "compiles", 0)
    monkeypatch.setattr(cp, "RawModule", lambda *args, **kwargs: built.append(1) or real(*args, **kwargs))
    fused._compiled.cache_clear()
    try:
        X = cp.asarray(np.random.default_rng(2).normal(size=(5_000, 3)).astype(np.float32))
        got = fit_kmeans(X, 4, random_state=0)
        assert got.engine == "generic"
        assert "the fused kernel failed to compile or launch" in got.engine_note
        again = fit_kmeans(X, 4, random_state=0)
        labels, _ = nearest(X, got.centers)
        assert again.engine_note == got.engine_note
        np.testing.assert_array_equal(to_numpy(labels), to_numpy(got.labels))
        with pytest.raises(ValueError, match="fused Lloyd kernel cannot run"):
            fit_kmeans(X, 4, random_state=0, engine="fused")
        assert len(built) == 1
        if is_emulator(cp):  # CuPy would compile at each kernel lookup: the emulator counts them
            assert real.compiles - compiles == 1
        assert sum("falls back to the array-generic step" in r.getMessage() for r in caplog.records) == 1
    finally:
        monkeypatch.undo()
        fused._compiled.cache_clear()


# -- the fused step's host side, on a stand-in device ------------------------------------
# A NumPy stand-in for CuPy whose "kernels" compute what lloyd.cu computes, from the same
# launch arguments: the Python layer (padding, launch arguments, partials, relocation, the
# engine, streaming, variant choice) runs on the CPU, not only on a lent GPU.

class _Kernel:
    def __init__(self, name, calls):
        self.name, self.calls = name, calls

    def __call__(self, grid, block, args, shared_mem=0):
        assert block == (fused.BLOCK,) and 0 < shared_mem <= fused.SMEM_LIMIT
        if self.name.startswith("lloyd_step"):
            X, n, d, ld, cm2, csq, k, copies, per_block, mode, partials = args
            n, d, ld, k, per_block = int(n), int(d), int(ld), int(k), int(per_block)
            assert grid[0] == -(-n // per_block) and partials.shape == (grid[0], k * (d + 1) + 1)
            assert int(copies) >= 1 and int(mode) == 0
        else:
            X, n, ld, cm2, csq, k, labels, sqdist = args
            n, ld, k = int(n), int(ld), int(k)
        self.calls.append((self.name, n))
        assert X.shape == (n, ld) and X.flags.c_contiguous and cm2.shape[0] == k and cm2.flags.c_contiguous
        x = X.astype(np.float64)
        c = cm2[:, :ld].astype(np.float64)
        lab = (csq[None, :] + x @ c.T).argmin(axis=1)
        dist = ((x + 0.5 * c[lab]) ** 2).sum(axis=1)  # cm2 holds -2 * centre
        if not self.name.startswith("lloyd_step"):
            labels[:], sqdist[:] = lab, dist
            return
        for b in range(grid[0]):
            s, e = b * per_block, min(n, (b + 1) * per_block)
            acc = np.zeros((k, d + 1))
            for f in range(d):
                acc[:, f] = np.bincount(lab[s:e], weights=x[s:e, f], minlength=k)
            acc[:, d] = np.bincount(lab[s:e], minlength=k)
            partials[b] = np.concatenate([acc.ravel(), [dist[s:e].sum()]])


class _Device:
    compute_capability = "90"
    id = 0
    attributes = {"MultiProcessorCount": 3}

    def synchronize(self):
        pass


class _Module:
    compiled = []
    calls = []

    def __init__(self, code, options):
        assert code == kernel_source()
        _Module.compiled.append(options)

    def compile(self):
        pass

    def get_function(self, name):
        return _Kernel(name, _Module.calls)


class _StandIn:
    """The parts of CuPy the fused step uses, over NumPy."""

    RawModule = _Module

    def __init__(self):
        self.cuda = type("cuda", (), {"Device": _Device})

    def __getattr__(self, name):
        return getattr(np, name)


@pytest.fixture
def stand_in(monkeypatch):
    device = _StandIn()
    fused._compiled.cache_clear()
    _Module.compiled.clear()
    _Module.calls.clear()
    monkeypatch.setattr(fused, "_import", lambda name: device if name == "cupy" else None)
    monkeypatch.setattr(engine_module, "_on_device", lambda xp: True)
    yield device
    fused._compiled.cache_clear()  # the stand-in's module must not reach a real device's tests


def _blobs(n=6_000, d=3, k=5, dtype=np.float64, seed=4):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 8, (k, d))
    return (centres[rng.integers(0, k, n)] + rng.normal(0, 1, (n, d))).astype(dtype)


@pytest.mark.parametrize("d", [3, 4, 9])
def test_stand_in_fused_fit_equals_the_generic_fit(stand_in, d):
    X = _blobs(d=d)
    init = X[:5].copy()
    init[4] = 1e3  # attracts nothing: relocated through get_subset on the first iteration
    got = fit_kmeans(X, 5, init=init, tol=1e-6, engine="fused")
    want = fit_kmeans(X, 5, init=init, tol=1e-6, engine="generic")
    assert got.engine == "fused" and got.engine_note is None
    assert ("lloyd_step_f64_d" + str(fused._bound(padded_width(d, np.float64))), 512) in _Module.calls  # probed
    np.testing.assert_array_equal(got.labels, want.labels)
    assert got.n_iter == want.n_iter
    assert got.inertia == pytest.approx(want.inertia, rel=1e-9)
    np.testing.assert_allclose(got.centers, want.centers, rtol=1e-9, atol=1e-9)
    assert got.centers.shape == (5, d)


def test_stand_in_step_keeps_its_layout_to_itself(stand_in):
    from gpuseg.cluster.fused import FusedStep
    X = _blobs(n=1_001, d=3, dtype=np.float32)
    step = FusedStep(X, 4)
    assert step.Xp.shape == (1_001, 4) and not step.Xp[:, 3].any() and step.X is X
    assert step.count() == 1_001 and step.dim() == 3
    np.testing.assert_array_equal(step.get_subset(np.array([7, 2])), X[[7, 2]])
    part = step.partials(X[:4])
    assert part.sums.shape == (4, 3) and part.counts.sum() == 1_001 and part.n_changed is None
    ref = lloyd_partials(X.astype(np.float64), X[:4].astype(np.float64))
    np.testing.assert_allclose(part.sums, ref.sums, rtol=1e-5)


@pytest.mark.parametrize("cc, redux", [("75", 0), ("86", 1), ("90", 1)])
def test_stand_in_compiles_the_variant_of_the_device(stand_in, monkeypatch, cc, redux):
    from gpuseg.cluster.fused import FusedStep
    monkeypatch.setattr(_Device, "compute_capability", cc)
    step = FusedStep(_blobs(n=100), 3)
    assert step.variant == ("redux" if redux else "shuffle")
    assert _Module.compiled == [("-std=c++17", f"-DGPUSEG_REDUX={redux}")]


def test_stand_in_streamed_fused_equals_in_memory(stand_in):
    X = _blobs(n=5_000)
    init = X[:5].copy()
    got = fit_kmeans(X, 5, init=init, tol=1e-6, engine="streamed", stream_rows=1_300, device=stand_in)
    want = fit_kmeans(X, 5, init=init, tol=1e-6, engine="generic")
    assert got.engine == "streamed-fused"
    np.testing.assert_array_equal(got.labels, want.labels)
    assert got.n_iter == want.n_iter
    labels, _ = nearest(X, want.centers, engine="streamed", stream_rows=1_300, device=stand_in)
    np.testing.assert_array_equal(labels, want.labels)


def test_stand_in_kmeans_plus_plus_seeds_from_the_step(stand_in):
    X = _blobs(n=3_000)
    got = fit_kmeans(X, 5, random_state=0, engine="fused")
    want = fit_kmeans(X, 5, random_state=0, engine="generic")
    np.testing.assert_array_equal(got.labels, want.labels)


def test_stand_in_staged_candidate_is_chosen_only_when_asked(stand_in):
    from gpuseg.cluster.fused import FusedStep
    X = _blobs(n=4_000)
    default, staged = FusedStep(X, 5), FusedStep(X, 5, staged=True)
    assert staged.smem_step > default.smem_step
    part = staged.partials(X[:5])
    assert _Module.calls[-1] == ("lloyd_step_staged_f64_d4", 4_000)
    ref = default.partials(X[:5])
    np.testing.assert_allclose(part.sums, ref.sums, rtol=1e-12)
    fit = fit_kmeans(X, 5, init=X[:5].copy(), engine="fused")
    assert all(name != "lloyd_step_staged_f64_d4" for name, _ in _Module.calls[-3:])  # the engine keeps the default
    assert fit.engine == "fused"
    with pytest.raises(ValueError, match="staged kernel's rows do not fit"):
        FusedStep(_blobs(n=100, d=32, k=3), 64, staged=True)
    with pytest.raises(ValueError, match="no per-value atomic mode"):
        FusedStep(X, 5, staged=True, mode=1)


@gpu
@pytest.mark.parametrize("n, d, k, dtype", [(10_007, 3, 5, np.float32), (100_003, 8, 16, np.float32),
                                            (20_011, 8, 64, np.float32), (70_001, 16, 33, np.float32),
                                            (30_001, 16, 20, np.float64)])  # the last: shared atomics
def test_staged_candidate_matches_the_default_kernel(cp, n, d, k, dtype):
    rng = np.random.default_rng([n, d, k, 2])
    X = cp.asarray(rng.normal(size=(n, d)).astype(dtype))
    C = X[rng.choice(n, k, replace=False)].copy()
    default, staged = _fused(X, k), _fused(X, k, staged=True)
    if dtype == np.float64 and d == 16:
        assert staged.copies < 8  # not every warp has its own copy here
    a, b = default.partials(C), staged.partials(C)
    np.testing.assert_array_equal(to_numpy(a.counts), to_numpy(b.counts))
    np.testing.assert_allclose(to_numpy(b.sums), to_numpy(a.sums), rtol=1e-5 if dtype == np.float32 else 1e-12,
                               atol=1e-3 if dtype == np.float32 else 1e-9)
    assert float(b.inertia) == pytest.approx(float(a.inertia), rel=1e-9)


def test_only_a_compilers_refusal_is_remembered(monkeypatch):
    # A passing failure (the driver out of memory while loading) must not turn the fused kernel
    # off for the life of the process; a compiler's refusal is remembered, and raised afresh.
    attempts = []

    class CompileException(Exception):
        pass

    class Module:
        def __init__(self, code, options):
            pass

        def compile(self):
            attempts.append(1)
            if len(attempts) == 1:
                raise MemoryError("cudaErrorMemoryAllocation: out of memory")
            if len(attempts) == 2:
                raise CompileException("error: expected a ';'")

    monkeypatch.setattr(fused, "_import", lambda name: types.SimpleNamespace(RawModule=Module))
    fused._compiled.cache_clear()
    try:
        with pytest.raises(MemoryError):
            fused._module(0, "redux")
        errors = []
        for _ in range(2):
            with pytest.raises(fused.KernelCompileError, match="CompileException: error: expected a ';'") as info:
                fused._module(0, "redux")
            errors.append(info.value)
        assert len(attempts) == 2 and errors[0] is not errors[1]
    finally:
        fused._compiled.cache_clear()
