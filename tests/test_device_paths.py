"""The commands' device paths (``--backend cupy``) against their CPU paths, on messy input.

On a GPU these run on CuPy (marked ``gpu``); elsewhere on the CuPy emulator (marked
``emulated``: NumPy behind CuPy's host/device wall, tests/emulator), which runs the same
device branches of gpuseg on the CPU but says nothing about CUDA kernels or speed.
"""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from cli_helpers import invoke, ok
from cupy_like import is_emulator
from test_ingest import messy_batches

COLUMNS = ("--customer-col", "customer_id", "--date-col", "date", "--invoice-col", "invoice",
           "--amount-col", "amount")


@pytest.fixture
def messy(tmp_path, rng):
    """The same messy log (every drop reason, returns, shared invoices, text ids) as a folder
    of Parquet files and as one CSV file."""
    batches = messy_batches(rng, n_batches=6, rows=2_000, text_ids=True)
    folder = tmp_path / "parts"
    folder.mkdir()
    for i, b in enumerate(batches):
        pq.write_table(pa.Table.from_batches([b]), folder / f"part-{i}.parquet")
    csv = tmp_path / "log.csv"
    pacsv.write_csv(pa.Table.from_batches(batches), csv)
    return {"parquet": folder, "csv": csv}


def outputs(out):
    report = json.loads((out / "report.json").read_text())
    return (report, pq.read_table(out / "features.parquet").to_pandas(),
            pq.read_table(out / "assignments.parquet").to_pandas())


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_segment_on_the_device_gives_the_cpu_answer(tmp_path, messy, device_cp, fmt):
    src = messy[fmt]
    ok(invoke("segment", src, "--out", tmp_path / "cpu", "--backend", "cpu", "--k", 4, "-q", *COLUMNS))
    ok(invoke("segment", src, "--out", tmp_path / "gpu", "--backend", "cupy", "--precision", "float64",
              "--k", 4, "-q", *COLUMNS))
    (rc, fc, ac), (rg, fg, ag) = outputs(tmp_path / "cpu"), outputs(tmp_path / "gpu")
    assert rg["backend"] == "cupy"
    assert ("emulator" in rg["device"]) == is_emulator(device_cp)
    assert rg["rows"] == rc["rows"] and rc["rows"]["dropped"]  # the same drops, and there are some
    assert rg["n_customers"] == rc["n_customers"]
    assert list(fg.columns) == list(fc.columns)
    assert (fg["customer_id"] == fc["customer_id"]).all()
    for name in fc.columns[1:]:
        np.testing.assert_allclose(fg[name], fc[name], rtol=1e-12, atol=1e-9, err_msg=name)
    assert (ag["customer_id"] == ac["customer_id"]).all()
    assert (ag["segment"] == ac["segment"]).all()
    assert rg["inertia"] == pytest.approx(rc["inertia"], rel=1e-9)
    sc, sg = (pacsv.read_csv(tmp_path / name / "segments.csv").to_pandas() for name in ("cpu", "gpu"))
    assert list(sg["name"]) == list(sc["name"]) and list(sg["n_customers"]) == list(sc["n_customers"])
    for name in sc.columns[3:]:  # the device's float sums may differ in the last bits
        np.testing.assert_allclose(sg[name], sc[name], rtol=1e-9, err_msg=name)


def test_score_on_the_device_gives_the_cpu_answer(tmp_path, messy, device_cp):
    ok(invoke("segment", messy["parquet"], "--out", tmp_path / "model", "--backend", "cpu", "--k", 4, "-q",
              *COLUMNS))
    model = tmp_path / "model" / "model.json"
    ok(invoke("score", messy["csv"], "--model", model, "--out", tmp_path / "cpu", "--backend", "cpu", "-q"))
    ok(invoke("score", messy["csv"], "--model", model, "--out", tmp_path / "gpu", "--backend", "cupy", "-q"))
    cpu = pq.read_table(tmp_path / "cpu" / "assignments.parquet").to_pandas()
    gpu = pq.read_table(tmp_path / "gpu" / "assignments.parquet").to_pandas()
    assert len(cpu) > 0
    assert list(gpu.columns) == list(cpu.columns)
    assert (gpu["customer_id"] == cpu["customer_id"]).all()
    assert (gpu["segment"] == cpu["segment"]).all()
    np.testing.assert_allclose(gpu["distance"], cpu["distance"], rtol=1e-9)
    rc = json.loads((tmp_path / "cpu" / "score_report.json").read_text())
    rg = json.loads((tmp_path / "gpu" / "score_report.json").read_text())
    assert rg["backend"] == "cupy"
    assert rg["rows"] == rc["rows"] and rc["rows"]["dropped"]["bad_amount"]
    drift_cpu = json.loads((tmp_path / "cpu" / "drift.json").read_text())
    drift_gpu = json.loads((tmp_path / "gpu" / "drift.json").read_text())
    assert drift_gpu["n_customers"] == drift_cpu["n_customers"]
    assert drift_gpu["mean_distance"] == pytest.approx(drift_cpu["mean_distance"], rel=1e-9)


@pytest.mark.emulated
def test_between_features_and_write_only_the_features_come_back_to_the_host(tmp_path, monkeypatch, emulated_cupy):
    """Scaling, the fit and the assignment stay on the device: apart from the features' one copy
    back (in the report's transfers), the host reads only what is k-sized or a scalar."""
    from gpuseg import pipeline
    from gpuseg.config import SegmentConfig
    from gpuseg.timing import StageTimer

    stage_of_read = []
    real_stage = StageTimer.stage

    @contextlib.contextmanager
    def stage(self, name):
        emulated_cupy.reads.clear()
        with real_stage(self, name):
            yield
        stage_of_read.extend((name, n) for _, n in emulated_cupy.reads)

    monkeypatch.setattr(StageTimer, "stage", stage)
    real_to_host = pipeline.Transfers.to_host

    def to_host(self, name, a):  # a logged copy: its reads are not counted
        start = len(emulated_cupy.reads)
        out = real_to_host(self, name, a)
        del emulated_cupy.reads[start:]
        return out

    monkeypatch.setattr(pipeline.Transfers, "to_host", to_host)
    result = pipeline.run(SegmentConfig(out=tmp_path / "out", backend="cupy", k=4, demo_customers=20_000))
    n = result.report["n_customers"]
    copied = [t["what"] for t in result.report["transfers"] if t["direction"] == "device_to_host"]
    middle = [b for s, b in stage_of_read if s in ("scale", "fit", "assign")]
    assert n > 10_000 and "monetary" in copied
    assert max(middle) < n, sorted(middle)[-5:]  # nothing per customer came back unlogged
    assert sum(middle) < n, (len(middle), sum(middle))  # k-sized and scalar reads: 1.3 kB here


def test_integer_ids_above_2_to_the_53_on_the_device_stay_apart(tmp_path, device_cp):
    # The device coded 64-bit ids through floats, merging two customers into one with an id that
    # is not in the data. (Ids of 19 digits or more stay text, on both paths.)
    ids = [2**54 + 3, 2**54 + 4, 2**54 + 4, 2**54 + 6, 2**54 + 9]  # a dense range: coded by offsets
    log = tmp_path / "ids.csv"
    log.write_text("customer_id,date,amount\n" + "".join(
        f"{c},2024-0{i + 1}-05,{10 * (i + 1)}\n" for i, c in enumerate(ids)))
    for backend in ("cpu", "cupy"):
        ok(invoke("segment", log, "--out", tmp_path / backend, "--backend", backend, "--k", 2, "-q"))
    cpu = pq.read_table(tmp_path / "cpu" / "features.parquet").to_pydict()
    gpu = pq.read_table(tmp_path / "cupy" / "features.parquet").to_pydict()
    assert cpu["customer_id"] == sorted(set(ids))
    assert gpu == cpu
