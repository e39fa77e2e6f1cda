"""The pipeline as a library call: engines, precision, the memory plan, CPU vs GPU agreement."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from cupy_like import is_emulator
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


def test_cpu_scaled_matrix_is_feature_major_and_changes_no_segment(tmp_path, monkeypatch):
    """On the host the scaled matrix is F-ordered (the Lloyd step's fast layout); the segments
    equal those of a row-major matrix."""
    from gpuseg.scaling import Scaler
    seen = []
    real = Scaler.transform_columns

    def spy(self, columns, dtype=None, workers=1, order="C"):
        Z = real(self, columns, dtype, workers, order)
        seen.append(Z.flags.f_contiguous)
        return Z

    monkeypatch.setattr(Scaler, "transform_columns", spy)
    fast = assignments(run(tmp_path, "f", backend="cpu"))
    monkeypatch.setattr(Scaler, "transform_columns",
                        lambda self, columns, dtype=None, workers=1, order="C": real(self, columns, dtype, workers))
    rows = assignments(run(tmp_path, "c", backend="cpu"))
    assert seen == [True]
    assert np.array_equal(fast["segment"], rows["segment"])
    np.testing.assert_allclose(fast["distance"], rows["distance"], rtol=1e-9)


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

    def load(config, timer, progress, xp=np, cudf_ok=False, fallbacks=None):
        seen.update(xp=xp, cudf_ok=cudf_ok)
        raise _Loaded

    monkeypatch.setattr(pipeline, "load_transactions", load)
    with pytest.raises(_Loaded):
        pipeline.prepare(SegmentConfig(inputs=inputs, out=tmp_path / "out"))
    # Files read by cuDF get the device namespace too: a host fallback cleans there (issue 12).
    assert seen == {"xp": device_xp, "cudf_ok": not cleaned_on_device}


def fused_engine(cp, engine: str = "fused") -> str:
    """The engine a device run reports: the emulator's fused kernel never compiles, so its
    runs fall back to the array-generic step."""
    return engine.replace("fused", "generic") if is_emulator(cp) else engine


def test_cupy_float64_gives_the_cpu_assignments(tmp_path, device_cp):
    cpu = run(tmp_path, "cpu", backend="cpu")
    gpu = run(tmp_path, "gpu", backend="cupy", precision="float64")
    assert gpu.report["backend"] == "cupy" and gpu.report["engine"] == fused_engine(device_cp)
    if is_emulator(device_cp):
        assert "the fused kernel failed to compile or launch" in gpu.report["engine_note"]
    a, b = assignments(cpu), assignments(gpu)
    np.testing.assert_array_equal(a["customer_id"], b["customer_id"])
    np.testing.assert_array_equal(a["segment"], b["segment"])
    np.testing.assert_allclose(b["distance"], a["distance"], rtol=1e-6, atol=1e-9)
    assert gpu.report["inertia"] == pytest.approx(cpu.report["inertia"], rel=1e-9)
    assert any(t["direction"] == "host_to_device" for t in gpu.report["transfers"])
    # Reading on the host is a fallback exactly when cuDF is missing, and the report says so.
    cudf, _ = probe_cudf()
    assert any(f.startswith("cudf:") for f in gpu.report["fallbacks"]) == (cudf is None)


def test_cupy_default_float32_agrees_with_cpu(tmp_path, device_cp):
    cpu = run(tmp_path, "cpu", backend="cpu")
    gpu = run(tmp_path, "gpu", backend="cupy")
    assert gpu.report["precision"] == "float32"
    a, b = assignments(cpu), assignments(gpu)
    assert adjusted_rand_score(a["segment"], b["segment"]) > 0.99
    assert gpu.report["inertia"] == pytest.approx(cpu.report["inertia"], rel=1e-3)
    assert gpu.report["memory_plan"]["mode"] == "device"


def test_streamed_fit_when_the_device_is_too_small(tmp_path, device_cp, monkeypatch):
    full = run(tmp_path, "device", backend="cupy")
    need = fit_bytes(full.report["n_customers"], 3, 5, 4)
    monkeypatch.setattr(pipeline, "device_free_bytes", lambda xp: need // 20)
    streamed = run(tmp_path, "streamed", backend="cupy")
    plan = streamed.report["memory_plan"]
    assert plan["mode"] == "streamed" and plan["stream_rows"] < full.report["n_customers"]
    assert streamed.report["engine"] == fused_engine(device_cp, "streamed-fused")
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


# -- the cuDF reader inside the pipeline, on the stand-in (tests/cudf_standin.py) --------------
# The stand-in runs cudf_reading on pandas and NumPy; it is no substitute for cuDF on a device
# (tests/test_cudf_reading.py's gpu tests and scripts/gpu_cudf_check.sh are).

def tx_files(tmp_path):
    """A messy CSV file and a Parquet file of 60 customers."""
    import pandas as pd

    rng = np.random.default_rng(7)
    n = 600
    df = pd.DataFrame({"customer_id": [f"{c}" for c in rng.integers(1, 61, n)],
                       "date": [f"2024-{m:02d}-{d:02d}" for m, d in zip(rng.integers(1, 13, n), rng.integers(1, 29, n))],
                       "invoice": [f"I{i // 3}" for i in range(n)], "amount": rng.normal(30, 20, n).round(2)})
    df.loc[5, "customer_id"], df.loc[9, "date"], df.loc[11, "amount"] = None, "2024-02-30", np.nan
    csv, parquet = tmp_path / "a.csv", tmp_path / "b.parquet"
    df.iloc[:400].to_csv(csv, index=False)
    df.iloc[400:].assign(date=lambda d: pd.to_datetime(d["date"])).to_parquet(parquet)
    return [csv, parquet]


def run_files(tmp_path, name, files, **options):
    options = {"backend": "cpu", **options}
    return pipeline.run(SegmentConfig(inputs=tuple(map(str, files)), out=tmp_path / name, k=3, **options))


def outputs(result) -> dict[str, dict]:
    return {f: pq.read_table(result.out / f).to_pydict() for f in ("features.parquet", "assignments.parquet")}


@pytest.fixture
def cudf_reads(monkeypatch):
    """cuDF reads the inputs (the stand-in on NumPy), whatever the backend."""
    import cudf_standin

    standin = cudf_standin.install(monkeypatch)
    monkeypatch.setattr(pipeline, "use_cudf", lambda config, backend, fallbacks: bool(config.inputs))
    return standin


def test_the_cudf_reader_in_the_pipeline_gives_the_host_results(tmp_path, monkeypatch):
    files = tx_files(tmp_path)
    host = run_files(tmp_path, "host", files)
    import cudf_standin
    standin = cudf_standin.install(monkeypatch)
    monkeypatch.setattr(pipeline, "use_cudf", lambda config, backend, fallbacks: True)
    got = run_files(tmp_path, "cudf", files)
    assert [c[0] for c in standin.calls] == ["read_csv", "read_parquet"]  # it did read with "cuDF"
    assert got.report["fallbacks"] == [] and got.report["rows"] == host.report["rows"]
    a, b = outputs(host), outputs(got)
    for f in ("assignments.parquet", "features.parquet"):
        assert a[f]["customer_id"] == b[f]["customer_id"]
    assert a["assignments.parquet"]["segment"] == b["assignments.parquet"]["segment"]
    for name, col in a["features.parquet"].items():
        if name != "customer_id":  # summed per batch on the host, over all lines on the device
            np.testing.assert_allclose(b["features.parquet"][name], col, rtol=1e-12, err_msg=name)


@pytest.mark.emulated
def test_the_cudf_reader_on_the_device_gives_the_host_results(tmp_path, monkeypatch, emulated_cupy):
    """``--backend cupy`` with cuDF reading: the stand-in's frames over the CuPy emulator hand
    device arrays to the device cleaning, features and fit (what a real GPU run does, less CUDA)."""
    import cudf_standin

    files = tx_files(tmp_path)
    host = run_files(tmp_path, "host", files)
    standin = cudf_standin.install(monkeypatch, emulated_cupy)
    monkeypatch.setattr(pipeline, "probe_cudf", lambda: (standin, None))
    got = run_files(tmp_path, "device", files, backend="cupy", precision="float64")
    assert [c[0] for c in standin.calls] == ["read_csv", "read_parquet"]  # it did read with "cuDF"
    assert got.report["backend"] == "cupy" and not any(f.startswith("cudf:") for f in got.report["fallbacks"])
    assert got.report["rows"] == host.report["rows"]
    a, b = outputs(host), outputs(got)
    assert a["assignments.parquet"]["customer_id"] == b["assignments.parquet"]["customer_id"]
    assert a["assignments.parquet"]["segment"] == b["assignments.parquet"]["segment"]
    for name, col in a["features.parquet"].items():
        if name != "customer_id":
            np.testing.assert_allclose(b["features.parquet"][name], col, rtol=1e-12, err_msg=name)


#: What cuDF raises on input it cannot read. pylibcudf's exception_handler.pxd maps libcudf's
#: exceptions: std::bad_alloc (rmm's out_of_memory) to MemoryError, cudf::data_type_error to
#: TypeError, std::ios_base::failure to OSError, any other std::exception (cudf::logic_error) to
#: RuntimeError; cuDF's Python layer raises NotImplementedError.
CUDF_FAILURES = {
    "not_implemented": NotImplementedError("cudf does not support this yet"),
    "libcudf": RuntimeError("CUDF failure at: /cpp/src/io/parquet/reader_impl.cpp:42: Unsupported encoding\n"
                            "second line"),
    "memory": MemoryError("std::bad_alloc: out_of_memory: CUDA error at: rmm/cuda_memory_resource.hpp"),
    "type": TypeError("Unsupported type_id conversion to cudf"),
    "io": OSError("ios_base::failure: cannot read the file"),
}


@pytest.mark.parametrize("case", list(CUDF_FAILURES))
@pytest.mark.parametrize("where", ["load_cudf", "reader"])
def test_a_cudf_failure_falls_back_to_the_host_reader(tmp_path, cudf_reads, monkeypatch, caplog, case, where):
    files = tx_files(tmp_path)
    exc = CUDF_FAILURES[case]

    def fail(*args, **kwargs):
        raise exc
    if where == "load_cudf":
        monkeypatch.setattr(pipeline, "load_cudf", fail)
    else:  # deep inside: the second file's read
        monkeypatch.setattr(cudf_reads, "read_parquet", fail)
    with caplog.at_level("WARNING", logger="gpuseg.pipeline"):
        got = run_files(tmp_path, "fallback", files)
    line = (f"cudf: reading failed ({type(exc).__name__}: {str(exc).splitlines()[0]}); reading and cleaning on "
            "the host with pyarrow")
    assert got.report["fallbacks"] == [line]
    assert json.loads((got.out / "report.json").read_text())["fallbacks"] == [line]
    assert [r.getMessage() for r in caplog.records] == [line]
    monkeypatch.undo()  # the host path alone, for the reference
    host = run_files(tmp_path, "host", files)
    assert outputs(got) == outputs(host)
    assert got.report["rows"] == host.report["rows"] and host.report["fallbacks"] == []


def test_bad_input_on_the_cudf_path_is_one_error_not_a_fallback(tmp_path, cudf_reads, caplog):
    import pandas as pd

    files = tx_files(tmp_path)
    lacking = tmp_path / "c.parquet"
    pd.read_parquet(files[1]).drop(columns="amount").to_parquet(lacking)
    with pytest.raises(GpusegError, match="lacks column") as err:
        run_files(tmp_path, "bad", files + [lacking])
    assert "fallback" not in str(err.value) and not (tmp_path / "bad").exists()
    texty = tmp_path / "d.parquet"
    pd.read_parquet(files[1]).astype({"amount": "str"}).to_parquet(texty)
    with pytest.raises(GpusegError, match="amounts, quantities and prices must be numeric"):
        run_files(tmp_path, "bad", files + [texty])
    assert not (tmp_path / "bad").exists()
    assert [r.getMessage() for r in caplog.records if r.name == "gpuseg.pipeline"] == []  # no host attempt


def test_ids_the_cudf_reader_leaves_to_the_host(tmp_path, cudf_reads):
    import pandas as pd

    files = tx_files(tmp_path)
    floats = tmp_path / "f.parquet"
    pd.read_parquet(files[1]).astype({"customer_id": "float64"}).to_parquet(floats)
    got = run_files(tmp_path, "mixed", [files[0], floats])
    assert len(got.report["fallbacks"]) == 1
    assert got.report["fallbacks"][0].startswith("cudf: reading failed (CudfUnsupported: customer ids of types ")
    host = pipeline.run(SegmentConfig(inputs=(str(files[0]), str(floats)), out=tmp_path / "host", backend="cpu",
                                      k=3))
    assert outputs(got) == outputs(host)


def test_segment_from_python_takes_a_date_and_features_as_the_cli_writes_them(tmp_path):
    # as_of="2024-06-01" was "out of range; allowed: 1900-01-02 to ..."; features="a,b" became its letters.
    from gpuseg import segment
    result = segment(out=tmp_path / "o", k=3, demo_customers=2000, as_of="2024-06-01",
                     features="recency_days,frequency,monetary")
    assert result.report["as_of"] == "2024-06-01"
    assert result.report["features"] == ["recency_days", "frequency", "monetary"]
    with pytest.raises(GpusegError, match="--as-of must be a date"):
        SegmentConfig(out=tmp_path / "p", as_of=20240601)


def test_python_callers_give_numpy_integers_datetimes_and_single_paths(tmp_path):
    import datetime as dt
    from gpuseg.choose_k import choose_k
    from gpuseg.generate import write_log
    from gpuseg.scoring import ScoreConfig, score
    log = tmp_path / "tx.parquet"
    assert write_log(log, 2e4, 2e3, seed=np.int64(1)) == 20_000  # 2e4 was numpy's TypeError on 2000.0
    with pytest.raises(GpusegError, match="--transactions must be a whole number"):
        write_log(tmp_path / "u.parquet", 20000.9, 2000)  # was cut to 20000
    with pytest.raises(GpusegError, match="--seed must be an integer"):
        write_log(tmp_path / "u.parquet", 2e4, 2e3, seed=True)  # was taken as 1
    # A NumPy seed failed at the end (model.json: int64 is not JSON); a datetime as_of was a TypeError;
    # one path as a str was split into its letters.
    config = SegmentConfig(inputs=str(log), out=tmp_path / "a", k=np.int64(3), seed=np.int64(3),
                           as_of=dt.datetime(2025, 1, 1, 15, 30))
    assert config.inputs == (str(log),) and config.as_of == dt.date(2025, 1, 1) and type(config.seed) is int
    result = pipeline.run(config)
    result.model.save(str(tmp_path / "copy.json"))  # a str path was an AttributeError
    assert json.loads((tmp_path / "copy.json").read_text())["seed"] == 3
    assert SegmentConfig(inputs=None, out=tmp_path / "b").inputs == ()
    got = choose_k(SegmentConfig(inputs=str(log), out=tmp_path / "ck"), k_min=np.int64(2), k_max=np.int64(3),
                   runs=np.int64(1), sample_size=np.int64(500))  # was "--k-min must be an integer >= 2"
    assert [m["k"] for m in got["metrics"]] == [2, 3]
    scored = score(ScoreConfig(model=tmp_path / "a" / "model.json", inputs=log, out=tmp_path / "s",
                               as_of="2025-01-01", memory_limit="2GB", partitions=np.int64(2)))
    assert scored.report["as_of"] == "2025-01-01" and scored.report["partitions"] == 2
    for bad, message in ((dict(partitions=3.0), "--partitions must be an integer"),
                         (dict(partitions=True), "--partitions must be an integer"),
                         (dict(memory_limit="lots"), "memory")):
        with pytest.raises(GpusegError, match=message):
            ScoreConfig(model=tmp_path / "a" / "model.json", inputs=log, out=tmp_path / "t", **bad)


def test_logs_made_on_two_threads_at_once_are_each_their_own():
    # The one-process path kept its customer plan in a module global that each thread reset.
    from concurrent.futures import ThreadPoolExecutor
    from gpuseg.generate import iter_tables
    def rows(n):
        return sum(t.num_rows for t in iter_tables(n, n // 10, seed=0, block_rows=2000, workers=1))
    with ThreadPoolExecutor(2) as pool:
        assert list(pool.map(rows, [20_000, 30_000] * 3)) == [20_000, 30_000] * 3


def test_wrong_python_types_are_one_gpuseg_error_and_friendly_ones_are_taken(tmp_path):
    # From Python these raised TypeError or AttributeError from deep inside (features=None,
    # columns=[...], date_format=5, out=None, inputs=5), or ran on a dict's keys or a bytes' numbers.
    import gpuseg
    from gpuseg.errors import GpusegError
    from gpuseg.scoring import ScoreConfig
    for options, message in ((dict(columns=["customer"]), "columns must be a dict"),
                             (dict(date_format=5), "date_format must be"),
                             (dict(out=None), "out must be a folder path"),
                             (dict(features={"frequency": 1}), "features must be a list"),
                             (dict(inputs=5), "inputs must be a path"),
                             (dict(inputs={"tx.parquet": 1}), "inputs must be a path"),
                             (dict(inputs=b"tx.parquet"), "inputs must be a path")):
        with pytest.raises(GpusegError, match=message):
            SegmentConfig(**{"out": tmp_path / "o", **options})
    config = SegmentConfig(out=tmp_path / "o", features=None, columns=None)
    assert config.features == SegmentConfig(out=tmp_path / "o").features and config.columns == {}
    assert SegmentConfig(out=tmp_path / "o", features=[" frequency", "monetary "]).features == ("frequency", "monetary")
    with pytest.raises(GpusegError, match="model must be a path"):
        ScoreConfig(model=None, inputs=("tx.parquet",), out=tmp_path / "s")
    # A model's columns (None for a role it had no column for) are taken as they are.
    assert SegmentConfig(out=tmp_path / "o", columns={"customer": "customer_id", "amount": None}).columns == \
        {"customer": "customer_id"}

    class Folder:  # an os.PathLike that is not a Path: its path, not its repr, is checked
        def __init__(self, path):
            self.path = path

        def __fspath__(self):
            return str(self.path)
    (tmp_path / "seg").mkdir()
    (tmp_path / "seg" / "model.json").write_text("{}")
    (tmp_path / "tx.csv").write_text("customer_id,invoice_date,amount\n1,2024-01-01,2\n")
    with pytest.raises(GpusegError, match="holds the --model"):
        ScoreConfig(model=tmp_path / "seg" / "model.json", inputs=(Folder(tmp_path / "tx.csv"),),
                    out=Folder(tmp_path / "seg"))
    assert not (tmp_path / "o").exists() and gpuseg.GpusegError is GpusegError
