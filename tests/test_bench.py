"""`gpuseg bench` at tiny sizes on the CPU: the JSON, the table, the plot, interruption, kernel mode."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from gpuseg import bench
from gpuseg.bench import BenchConfig, parse_sizes, run_bench, summarise
from gpuseg.cli import app
from gpuseg.errors import GpusegError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    result = CliRunner().invoke(app, ["bench", "--sizes", "3000,6000", "--k", "3", "--repeats", "2",
                                      "--backends", "cpu", "--out", str(root / "out"), "--cache", str(root / "cache")])
    assert result.exit_code == 0, result.output
    return root / "out", result.output


@pytest.mark.slow
def test_json_schema(small_run):
    out, _ = small_run
    r = json.loads((out / "bench.json").read_text())
    assert {"gpuseg_version", "created", "machine", "config", "backends_run", "unavailable", "runs",
            "records", "interrupted"} <= set(r)
    m = r["machine"]
    assert {"cpu", "cores", "ram_gib", "gpu", "versions"} <= set(m)
    assert m["versions"]["numpy"] == np.__version__
    assert r["config"]["sizes"] == [3000, 6000] and r["config"]["k"] == 3 and r["config"]["repeats"] == 2
    assert r["backends_run"][:2] == ["cpu", "sklearn"]
    assert not r["interrupted"]
    # Two timed runs per size for every backend run, each with its checks.
    for size in (3000, 6000):
        for backend in r["backends_run"]:
            runs = [x for x in r["runs"] if x["size"] == size and x["backend"] == backend]
            assert [x["repeat"] for x in runs] == [1, 2]
            assert all(x["peak_host_mib"] > 0 for x in runs)
            assert all(x["ari_vs_cpu"] is not None for x in runs)
    cpu_runs = [x for x in r["runs"] if x["backend"] == "cpu"]
    assert all(set(x["timings"]) == {"load", "clean", "features", "scale", "fit", "assign", "write", "total"}
               for x in cpu_runs)
    assert all(x["ari_vs_cpu"] == 1.0 for x in cpu_runs)
    # scikit-learn from the same initial centres finds the same partition.
    assert all(x["ari_vs_cpu"] == pytest.approx(1.0) for x in r["runs"] if x["backend"] == "sklearn")
    assert all(x["inertia"] == pytest.approx(cpu_runs[0]["inertia"] if x["size"] == 3000 else cpu_runs[-1]["inertia"])
               for x in r["runs"] if x["backend"] == "sklearn")


@pytest.mark.slow
def test_records_are_median_min_max_per_size_backend_stage(small_run):
    out, _ = small_run
    r = json.loads((out / "bench.json").read_text())
    rec = {(x["size"], x["backend"], x["stage"]): x for x in r["records"]}
    for size in (3000, 6000):
        runs = [x for x in r["runs"] if x["size"] == size and x["backend"] == "cpu"]
        walls = sorted(x["wall_s"] for x in runs)
        e2e = rec[(size, "cpu", "end_to_end")]
        assert e2e["min_s"] == walls[0] and e2e["max_s"] == walls[-1]
        assert e2e["median_s"] == pytest.approx(sum(walls) / 2)
        fit = rec[(size, "cpu", "fit")]
        assert fit["median_s"] == pytest.approx(np.median([x["timings"]["fit"] for x in runs]))
        assert (size, "sklearn", "fit") in rec and (size, "sklearn", "end_to_end") not in rec


@pytest.mark.slow
def test_markdown_table(small_run):
    out, output = small_run
    md = (out / "bench.md").read_text()
    assert "| transactions | backend | end to end |" in md
    rows = [line for line in md.splitlines() if line.startswith("| 3,000 |") or line.startswith("| 6,000 |")]
    assert len(rows) == 2 * len(json.loads((out / "bench.json").read_text())["backends_run"])
    cpu_row = next(line for line in rows if "| cpu |" in line)
    assert "1.00×" in cpu_row and "1.0000" in cpu_row
    assert "| ARI vs cpu | inertia / cpu |" in md
    sklearn_row = next(line for line in rows if "| sklearn |" in line)
    assert sklearn_row.split("|")[8:10] == [" 1.0000 ", " 1.0000 "]  # ARI, inertia against the cpu run's
    # The terminal shows the medians of the same rows, as many columns as fit.
    medians = {r["backend"]: r["median_s"] for r in json.loads((out / "bench.json").read_text())["records"]
               if r["size"] == 3000 and r["stage"] == "end_to_end"}
    for backend, median in medians.items():
        line = next(line for line in output.splitlines() if line.split()[:2] == ["3,000", backend])
        assert f"{median:.3f}" in line.split()


def test_cpu_runs_are_checked_against_their_untimed_run(tmp_path, monkeypatch):
    # The cpu rows' ARI was written 1.0 without a comparison; it is now measured against the
    # untimed run, so runs that disagree show it.
    data = tmp_path / "tx.parquet"
    from gpuseg.generate import write_log
    write_log(data, 3000, 300, seed=0)
    real, shuffled = bench._labels, {"n": 0}

    def first_shuffled(path):
        got = real(path)
        shuffled["n"] += 1
        return np.random.default_rng(0).permutation(got) if shuffled["n"] == 1 else got

    monkeypatch.setattr(bench, "_labels", first_shuffled)
    emitted = []
    monkeypatch.setattr(bench, "_emit", emitted.append)
    bench.worker("cpu", data, 3, 2, 0, tmp_path / "work", None)
    assert [e["repeat"] for e in emitted] == [1, 2]
    assert all(e["ari_vs_cpu"] < 0.5 for e in emitted)


def test_one_timed_run_shows_no_range(small_run):
    out, _ = small_run
    result = json.loads((out / "bench.json").read_text())
    one = [r for r in result["runs"] if r["repeat"] == 1]
    rows = bench.summary_rows({**result, "runs": one, "records": summarise(one)})
    assert rows and all("(" not in row["end to end"] for row in rows if row["backend"] == "cpu")
    assert all("(" in row["end to end"] for row in bench.summary_rows(result) if row["backend"] == "cpu")


@pytest.mark.slow
def test_png_is_a_real_image(small_run):
    import matplotlib.image
    out, _ = small_run
    data = (out / "bench.png").read_bytes()
    assert data[:8] == PNG_MAGIC
    img = matplotlib.image.imread(out / "bench.png")
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 400
    assert img.std() > 0.01  # not a blank canvas


def test_unavailable_backends_are_listed_with_reasons(tmp_path, monkeypatch):
    def fake_resolve(name):
        raise GpusegError(f"backend {name!r} cannot run: CuPy is not installed")
    monkeypatch.setattr("gpuseg.backend.resolve_backend", fake_resolve)
    ok, missing = bench.availability(("cpu", "cupy", "cuml"))
    assert ok[:2] == ["cpu", "sklearn"]
    reasons = {m["backend"]: m["reason"] for m in missing}
    assert "CuPy is not installed" in reasons["cupy"] and "cuml" in reasons


def test_interruption_keeps_the_runs_gathered_so_far(tmp_path):
    config = BenchConfig(out=tmp_path / "out", sizes=(3000,), k=2, backends=("cpu",), repeats=2,
                         cache=tmp_path / "cache")
    seen = []

    def stop_after_first_run(kind, info):
        if kind == "run":
            seen.append(info)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_bench(config, stop_after_first_run)
    r = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert r["interrupted"] is True
    assert len(r["runs"]) == 1 and r["runs"][0]["backend"] == "cpu"
    assert "Interrupted" in (tmp_path / "out" / "bench.md").read_text()
    assert (tmp_path / "out" / "bench.png").read_bytes()[:8] == PNG_MAGIC


def test_kernel_mode(tmp_path):
    result = CliRunner().invoke(app, ["bench", "--kernel", "--sizes", "2000", "--kernel-d", "3", "--kernel-k", "2,4",
                                      "--backends", "cpu", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    r = json.loads((tmp_path / "bench.json").read_text())
    assert r["mode"] == "kernel" and r["host_bandwidth_gbs"] > 0
    assert [(c["impl"], c["n"], c["d"], c["k"]) for c in r["cases"]] == [("cpu", 2000, 3, 2), ("cpu", 2000, 3, 4)]
    for c in r["cases"]:
        assert c["ms_per_iter"] > 0
        assert c["pct_of_floor"] == pytest.approx(100 * c["floor_ms"] / c["ms_per_iter"])
    assert "% of floor" in (tmp_path / "bench.md").read_text()


@pytest.mark.parametrize("args, message", [
    (["--sizes", "abc"], "--sizes takes whole numbers"),
    (["--sizes", "10"], "--sizes must be a whole number from 100"),
    # Were tracebacks (OverflowError, ValueError) from int(float(...)).
    (["--sizes", "inf"], "--sizes must be a whole number"),
    (["--sizes", "nan"], "--sizes must be a whole number"),
    (["--sizes", "1e400"], "--sizes must be a whole number"),
    (["--backends", "cupy"], "--backends must include cpu"),
    (["--backends", "cpu,tpu"], "unknown backend 'tpu'"),
    (["--repeats", "0"], "--repeats must be an integer >= 1"),
    # Exited 0 with an empty table: 20 customers at 200 transactions.
    (["--sizes", "200", "--k", "50"], "--k 50 is more than the 20 customers of the smallest log"),
    (["--kernel", "--kernel-d", "abc"], "--kernel-d takes whole numbers"),
    (["--kernel", "--kernel-k", "1e400"], "--kernel-k must be a whole number"),
    (["--kernel", "--kernel-k", "0", "--sizes", "1e3"], "--kernel-k must be a whole number from 1"),  # ZeroDivisionError
    (["--kernel", "--kernel-k", "-3", "--sizes", "1e3"], "--kernel-k must be a whole number"),  # timed X[:-3]
    (["--kernel", "--kernel-k", "2000", "--sizes", "1e3"], "--kernel-k 2000 is more than the 1,000 points"),
    (["--kernel", "--backends", "foo", "--sizes", "1e3"], "unknown backend 'foo'"),
])
def test_bad_options_are_one_line_errors(tmp_path, args, message):
    result = CliRunner().invoke(app, ["bench", "--out", str(tmp_path / "o"), *args])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o").exists()


def test_parse_sizes_and_summarise_units():
    assert parse_sizes("1e3, 100,1e3") == (100, 1000)
    runs = [{"size": 100, "backend": "cpu", "wall_s": w, "timings": {"fit": w / 2, "features": 0.1, "scale": 0.1,
                                                                       "assign": 0.1}} for w in (1.0, 3.0, 2.0)]
    rec = {(r["stage"]): r for r in summarise(runs)}
    assert rec["end_to_end"]["median_s"] == 2.0 and rec["end_to_end"]["n"] == 3
    assert rec["features_to_assign"]["median_s"] == pytest.approx(0.3 + 1.0)


def test_one_iteration_timed_for_the_peer_comparison_is_one_lloyd_iteration(rng):
    # bench's fused_iteration (the step, then the new centres) moves the centres as the driver does.
    from gpuseg.cluster.lloyd import lloyd
    from gpuseg.cluster.steps import ChunkedStep
    X = rng.normal(size=(3_000, 3))
    C = X[:4].copy()
    C[3] = 1e6  # attracts nothing: keeps its place in an iteration without relocation
    X[0] = 50.0
    got = bench.fused_iteration(ChunkedStep(X, 512, track_labels=False), C)
    want = lloyd(ChunkedStep(X, 512, track_labels=False), C[:3], max_iter=1).centers
    np.testing.assert_allclose(got[:3], want, rtol=1e-12)
    np.testing.assert_array_equal(got[3], C[3])


def test_flash_kmeans_peer_says_why_it_is_missing():
    fn, why = bench.probe_flash_kmeans()
    try:
        import torch  # noqa: F401
        import flash_kmeans.kmeans_triton_impl  # noqa: F401
    except Exception:
        assert fn is None and why.startswith("flash-kmeans with its Triton kernels is not importable")
    else:
        assert fn is not None or "CUDA device" in why


@pytest.mark.gpu
def test_kernel_mode_on_a_gpu_times_fused_generic_and_flash_kmeans_when_there(cp):
    r = bench.run_kernel_bench({"n": (20_011,), "d": (3,), "k": (5,)}, ("cupy",), reps=2)
    impls = [c["impl"] for c in r["cases"]]
    assert impls[:2] == ["fused", "generic"]
    flash, why = bench.probe_flash_kmeans()
    if flash is None:
        assert any(u["backend"] == "flash-kmeans" and u["reason"] == why for u in r["unavailable"])
    else:
        assert impls[2:] == ["flash-kmeans"], r["unavailable"]
        # The peer assigns as gpuseg does, from the same data and centres (float32: near-ties may differ).
        X = cp.random.default_rng(1).standard_normal((20_011, 3), dtype=cp.float32)
        from gpuseg.cluster.fused import FusedStep
        _, labels = bench.flash_kmeans_iteration(flash, X, X[:5].copy())
        ours = FusedStep(X, 5).assign(X[:5].copy())[0]
        assert float((labels() == ours).mean()) > 0.999


def test_kernel_mode_where_the_fused_kernel_does_not_build_times_the_rest(device_cp, monkeypatch):
    # It stopped with a traceback: the fused case is reported with why, and the generic step still timed.
    from gpuseg.cluster import fused
    monkeypatch.setattr(fused, "kernel_source", lambda: "extern \"C\" __global__ void broken( { }")
    monkeypatch.setattr(bench, "host_bandwidth_gbs", lambda: 10.0)  # not what this test measures
    monkeypatch.setattr(bench, "device_bandwidth_gbs", lambda cp: 1000.0)
    fused._compiled.cache_clear()
    try:
        r = bench.run_kernel_bench({"n": (5_003,), "d": (3,), "k": (4,)}, ("cupy",), reps=2)
    finally:
        monkeypatch.undo()
        fused._compiled.cache_clear()
    assert [c["impl"] for c in r["cases"]][:1] == ["generic"]
    assert "fused" not in [c["impl"] for c in r["cases"]]
    why = [u["reason"] for u in r["unavailable"] if u["backend"] == "fused at n=5003, d=3, k=4"]
    assert len(why) == 1 and why[0].startswith("the fused kernel failed to compile or launch")


def test_out_holds_one_run_of_one_command(tmp_path):
    # bench wrote into --out as it pleased: beside another command's files, and leaving a pipeline
    # run's bench.png beside a kernel run's bench.json.
    out = tmp_path / "o"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    args = ["bench", "--kernel", "--sizes", "2000", "--kernel-d", "3", "--kernel-k", "2", "--backends", "cpu"]
    result = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 2 and "holds files gpuseg did not write (e.g. 'notes.txt')" in result.output
    (out / "notes.txt").unlink()
    (out / "bench.png").write_bytes(b"an earlier pipeline run's plot")
    (out / "choose_k.json").write_text("{}")
    result = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["bench.json", "bench.md"]


def test_out_is_replaced_only_when_the_run_ends_or_is_interrupted(tmp_path):
    # bench removed the earlier run's files first and wrote into --out as it went: a killed run
    # left a mix of the two. Now it stages; an interrupt still keeps what was measured.
    from gpuseg.outputs import staged_output
    out = tmp_path / "o"
    out.mkdir()
    (out / "bench.json").write_text("earlier")
    with pytest.raises(RuntimeError):
        with staged_output(out, swap_on_interrupt=lambda: True) as tmp:
            (tmp / "bench.json").write_text("half")
            assert (out / "bench.json").read_text() == "earlier"  # untouched while the run goes on
            raise RuntimeError("a crash")
    assert (out / "bench.json").read_text() == "earlier"
    with pytest.raises(KeyboardInterrupt):
        with staged_output(out, swap_on_interrupt=lambda: True) as tmp:
            (tmp / "bench.json").write_text("interrupted")
            raise KeyboardInterrupt
    assert (out / "bench.json").read_text() == "interrupted"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]  # no staging folder left


def test_an_interrupt_keeps_the_earlier_run_when_nothing_was_measured(tmp_path):
    from gpuseg.outputs import staged_output
    out = tmp_path / "o"
    out.mkdir()
    (out / "bench.json").write_text("earlier")
    with pytest.raises(KeyboardInterrupt):
        with staged_output(out, swap_on_interrupt=lambda: False) as tmp:  # bench: no run yet
            (tmp / "bench.json").write_text("empty")
            raise KeyboardInterrupt
    assert (out / "bench.json").read_text() == "earlier"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]
