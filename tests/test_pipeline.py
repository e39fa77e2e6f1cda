"""The pipeline as a library call: engines, precision, the memory plan, CPU vs GPU agreement."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import adjusted_rand_score

from gpuseg import pipeline
from gpuseg.backend import Backend, probe_cudf
from gpuseg.config import SegmentConfig
from gpuseg.errors import GpusegError
from gpuseg.memory import fit_bytes


def run(tmp_path, name, **options):
    return pipeline.run(SegmentConfig(out=tmp_path / name, demo_customers=20_000, **options))


def assignments(result) -> dict[str, np.ndarray]:
    t = pq.read_table(result.out / "assignments.parquet")
    return {name: t.column(name).to_numpy() for name in t.column_names}


def test_cpu_run_reports_engine_precision_and_no_plan(tmp_path):
    r = run(tmp_path, "cpu", backend="cpu")
    rep = r.report
    assert rep["engine"] == "generic" and rep["engine_note"] is None
    assert rep["precision"] == "float64"
    assert rep["memory_plan"] is None
    assert rep["transfers"] == []


def test_unknown_precision_is_refused(tmp_path):
    with pytest.raises(GpusegError, match="unknown precision 'half'; allowed: auto, float32, float64"):
        SegmentConfig(out=tmp_path / "x", precision="half")


def test_float32_on_the_cpu_is_close_to_float64(tmp_path):
    a = assignments(run(tmp_path, "f64", backend="cpu"))
    b = assignments(run(tmp_path, "f32", backend="cpu", precision="float32"))
    assert adjusted_rand_score(a["segment"], b["segment"]) > 0.99


class _Loaded(Exception):
    pass


@pytest.mark.parametrize("inputs, cleaned_on_device", [((), True), (("tx.parquet",), False)])
def test_with_cudf_only_files_are_read_by_it_and_the_demo_is_cleaned_on_the_device(
        tmp_path, monkeypatch, inputs, cleaned_on_device):
    # With cuDF installed, the demo data (no files for cuDF to read) was cleaned on the host, so
    # its features, and the fit, stayed on the CPU under --backend cupy.
    device_xp = object()
    monkeypatch.setattr(pipeline, "resolve_backend", lambda name: Backend("cupy", device_xp, "a GPU"))
    monkeypatch.setattr(pipeline, "probe_cudf", lambda: (object(), None))
    seen = {}

    def load(config, timer, progress, xp=np, cudf_ok=False):
        seen.update(xp=xp, cudf_ok=cudf_ok)
        raise _Loaded

    monkeypatch.setattr(pipeline, "load_transactions", load)
    with pytest.raises(_Loaded):
        pipeline.prepare(SegmentConfig(inputs=inputs, out=tmp_path / "out"))
    assert seen == {"xp": device_xp if cleaned_on_device else np, "cudf_ok": not cleaned_on_device}


@pytest.mark.gpu
def test_cupy_float64_gives_the_cpu_assignments(tmp_path, cp):
    cpu = run(tmp_path, "cpu", backend="cpu")
    gpu = run(tmp_path, "gpu", backend="cupy", precision="float64")
    assert gpu.report["backend"] == "cupy" and gpu.report["engine"] == "fused"
    a, b = assignments(cpu), assignments(gpu)
    np.testing.assert_array_equal(a["customer_id"], b["customer_id"])
    np.testing.assert_array_equal(a["segment"], b["segment"])
    np.testing.assert_allclose(b["distance"], a["distance"], rtol=1e-6, atol=1e-9)
    assert gpu.report["inertia"] == pytest.approx(cpu.report["inertia"], rel=1e-9)
    assert any(t["direction"] == "host_to_device" for t in gpu.report["transfers"])
    # Reading on the host is a fallback exactly when cuDF is missing, and the report says so.
    cudf, _ = probe_cudf()
    assert any(f.startswith("cudf:") for f in gpu.report["fallbacks"]) == (cudf is None)


@pytest.mark.gpu
def test_cupy_default_float32_agrees_with_cpu(tmp_path, cp):
    cpu = run(tmp_path, "cpu", backend="cpu")
    gpu = run(tmp_path, "gpu", backend="cupy")
    assert gpu.report["precision"] == "float32"
    a, b = assignments(cpu), assignments(gpu)
    assert adjusted_rand_score(a["segment"], b["segment"]) > 0.99
    assert gpu.report["inertia"] == pytest.approx(cpu.report["inertia"], rel=1e-3)
    assert gpu.report["memory_plan"]["mode"] == "device"


@pytest.mark.gpu
def test_streamed_fit_when_the_device_is_too_small(tmp_path, cp, monkeypatch):
    full = run(tmp_path, "device", backend="cupy")
    need = fit_bytes(full.report["n_customers"], 3, 5, 4)
    monkeypatch.setattr(pipeline, "device_free_bytes", lambda xp: need // 20)
    streamed = run(tmp_path, "streamed", backend="cupy")
    plan = streamed.report["memory_plan"]
    assert plan["mode"] == "streamed" and plan["stream_rows"] < full.report["n_customers"]
    assert streamed.report["engine"] == "streamed-fused"
    # Streamed k-means++ seeds from a sample, so the optimum may differ a little.
    assert streamed.report["inertia"] == pytest.approx(full.report["inertia"], rel=0.05)
    assert len(assignments(streamed)["segment"]) == full.report["n_customers"]


@pytest.mark.parametrize("bad", [1e151, -1e151, np.nan, np.inf])
def test_scaled_values_beyond_measuring_name_the_customer(xp, bad):
    """Either sign, NaN and infinity are found (a NaN makes the fast path's max and min undecided)."""
    import pyarrow as pa

    from gpuseg.features import CustomerFeatures
    feats = CustomerFeatures(customer=xp.asarray([0, 1, 2]), columns={}, n_without_purchase=0)
    ids = pa.array(["a", "b", "c"])
    Z = xp.zeros((3, 2))
    pipeline.refuse_non_finite_scaled(Z, feats, ids, ["x", "y"], "float64")  # all measurable: no error
    Z[1, 1] = bad
    with pytest.raises(GpusegError, match="customer 'b' is too far"):
        pipeline.refuse_non_finite_scaled(Z, feats, ids, ["x", "y"], "float64")
