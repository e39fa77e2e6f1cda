"""The pipeline on a real Dask LocalCluster of 2 worker processes (CPU)."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

distributed = pytest.importorskip("distributed")
pytest.importorskip("dask.dataframe")

from typer.testing import CliRunner  # noqa: E402

from gpuseg.cli import app  # noqa: E402
from gpuseg.cluster.fit import fit_kmeans  # noqa: E402
from gpuseg.config import SegmentConfig  # noqa: E402
from gpuseg.dask_pipeline import run_dask, score_dask  # noqa: E402
from gpuseg.errors import GpusegError  # noqa: E402
from gpuseg.generate import iter_tables  # noqa: E402
from gpuseg.model import SegmentModel  # noqa: E402
from gpuseg.pipeline import run  # noqa: E402
from gpuseg.scoring import ScoreConfig, score  # noqa: E402


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A log split over six files (six input partitions), with a few dirty rows."""
    root = tmp_path_factory.mktemp("dask-in")
    for i, table in enumerate(iter_tables(240_000, 24_000, seed=5, dirty=0.002, block_rows=40_000, workers=1)):
        pq.write_table(table, root / f"part-{i}.parquet")
    return root


def read_dataset(path, columns=None):
    return pq.read_table(path, columns=columns).sort_by("customer_id")


@pytest.fixture(scope="module")
def both(client, files, tmp_path_factory):
    out = tmp_path_factory.mktemp("dask-out")
    single = run(SegmentConfig(inputs=(str(files),), out=out / "single", k=5))
    result = run_dask(SegmentConfig(inputs=(str(files),), out=out / "dask", k=5), client=client)
    return single, result, out


def test_features_are_identical_to_one_process(both):
    single, result, out = both
    report = result.report
    a = read_dataset(out / "single" / "features.parquet")
    b = read_dataset(out / "dask" / "features")
    assert a.column_names == b.column_names
    assert a.column("customer_id").equals(b.column("customer_id"))
    for name in a.column_names[1:]:
        np.testing.assert_allclose(b.column(name).to_numpy(), a.column(name).to_numpy(), rtol=1e-12, atol=1e-9)
    assert report["n_customers"] == single.report["n_customers"]
    assert report["customers_without_purchase"] == single.report["customers_without_purchase"]
    assert report["rows"] == single.report["rows"]


def test_same_seed_same_segments_names_and_model(both):
    single, result, out = both
    report = result.report
    a = read_dataset(out / "single" / "assignments.parquet")
    b = read_dataset(out / "dask" / "assignments")
    np.testing.assert_array_equal(b.column("segment").to_numpy(), a.column("segment").to_numpy())
    np.testing.assert_allclose(b.column("distance").to_numpy(), a.column("distance").to_numpy(), rtol=1e-9)
    model = SegmentModel.load(out / "dask" / "model.json")
    assert model.names() == single.model.names()
    np.testing.assert_allclose(model.centroids, single.model.centroids, rtol=1e-9, atol=1e-12)
    assert report["n_iter"] == single.report["n_iter"]
    assert report["inertia"] == pytest.approx(single.report["inertia"], rel=1e-9)
    assert report["workers"] == 2 and report["partitions"] >= 2
    assert set(report["timings"]) >= {"clean", "features", "scale", "fit", "assign", "write", "total"}
    assert len(list((out / "dask" / "assignments").glob("part-*.parquet"))) == report["partitions"]


def test_same_segments_csv_training_summary_and_report_fields(both):
    single, result, out = both
    assert type(result).__name__ == type(single).__name__ == "SegmentResult"
    assert result.out == out / "dask" and result.model.names() == single.model.names()
    a = pacsv.read_csv(out / "single" / "segments.csv")
    b = pacsv.read_csv(out / "dask" / "segments.csv")
    assert a.column_names == b.column_names and a.column("name").equals(b.column("name"))
    for name in ("segment", "n_customers"):
        assert a.column(name).equals(b.column(name))
    for name in a.column_names[3:]:  # sums added over partitions: equal to rounding
        np.testing.assert_allclose(b.column(name).to_numpy(), a.column(name).to_numpy(), rtol=1e-12)
    assert [p["name"] for p in result.profiles] == b.column("name").to_pylist()
    t1, t2 = single.model.training, result.model.training
    assert t1["n_customers"] == t2["n_customers"] and t1["segment_shares"] == t2["segment_shares"]
    assert t2["mean_distance"] == pytest.approx(t1["mean_distance"], rel=1e-9)
    np.testing.assert_allclose(t2["segment_mean_distance"], t1["segment_mean_distance"], rtol=1e-9)
    on_disk = json.loads((out / "dask" / "report.json").read_text())
    assert on_disk["scheduler"] == result.report["scheduler"]
    common = set(single.report) - {"demo", "engine_note", "precision", "memory_plan", "transfers"}
    assert common <= set(on_disk), common - set(on_disk)
    assert on_disk["engine"] == "dask" and on_disk["n_init"] == 1 and on_disk["warnings"] == []


def test_from_the_same_initial_centroids_identical_labels(client, files, both, tmp_path):
    single, _, out = both
    feats = read_dataset(out / "single" / "features.parquet")
    model = single.model
    Z = model.scaler.transform(np.stack([feats.column(f).to_numpy().astype(float) for f in model.features], 1))
    init = Z[np.random.default_rng(0).choice(len(Z), 5, replace=False)]
    ref = fit_kmeans(Z, 5, init=init)
    report = run_dask(SegmentConfig(inputs=(str(files),), out=tmp_path / "d", k=5), client=client, init=init).report
    got = read_dataset(tmp_path / "d" / "assignments")
    ours = np.asarray(ref.labels)
    # Labels are relabelled by revenue in both; compare the partitions themselves.
    from sklearn.metrics import adjusted_rand_score
    assert adjusted_rand_score(ours, got.column("segment").to_numpy()) == 1.0
    assert report["inertia"] == pytest.approx(ref.inertia, rel=1e-9)


def test_score_on_the_cluster_equals_score_in_one_process(client, files, both, tmp_path):
    _, _, out = both
    cfg = ScoreConfig(model=out / "single" / "model.json", inputs=(str(files),), out=tmp_path / "one")
    one = score(cfg)
    res = score_dask(ScoreConfig(model=out / "single" / "model.json", inputs=(str(files),), out=tmp_path / "many"),
                     client=client)
    a = read_dataset(tmp_path / "one" / "assignments.parquet")
    b = read_dataset(tmp_path / "many" / "assignments")
    np.testing.assert_array_equal(b.column("segment").to_numpy(), a.column("segment").to_numpy())
    assert res["drift"]["n_customers"] == one.drift["n_customers"]
    assert set(one.report) - {"memory_limit_bytes", "estimated_rows", "estimated_working_bytes"} <= set(res["report"])
    for x, y in zip(res["drift"]["segments"], one.drift["segments"]):
        assert x["customers"] == y["customers"]
        assert x["mean_distance"] == pytest.approx(y["mean_distance"], rel=1e-9)


@pytest.mark.slow
def test_a_worker_killed_mid_run_is_survived_or_reported(client, files, both, tmp_path):
    single, _, _ = both
    killed = []

    def kill_one_worker(stage):
        if stage == "fit" and not killed:
            victim = sorted(client.scheduler_info()["workers"])[0]
            pid = client.run(os.getpid, workers=[victim])[victim]
            os.kill(pid, signal.SIGKILL)  # the nanny starts a new worker; its data is gone
            killed.append(victim)

    out = tmp_path / "killed"
    try:
        report = run_dask(SegmentConfig(inputs=(str(files),), out=out, k=5), client=client,
                          on_stage=kill_one_worker).report
    except GpusegError as exc:  # a clear error, and nothing left behind
        print(f"worker killed: the run failed cleanly: {exc}")
        assert "Dask" in str(exc)
        assert not out.exists()
        assert not [p for p in tmp_path.iterdir() if ".partial" in p.name]
    else:  # the scheduler recomputed the lost partitions: the same answer
        print("worker killed: the run recomputed what it lost and finished")
        assert killed
        assert report["inertia"] == pytest.approx(single.report["inertia"], rel=1e-9)
        a = read_dataset(single.out / "assignments.parquet")
        b = read_dataset(out / "assignments")
        np.testing.assert_array_equal(b.column("segment").to_numpy(), a.column("segment").to_numpy())
    client.wait_for_workers(2, timeout=60)


def test_input_errors_are_the_same_as_in_one_process(client, tmp_path):
    # One drop accounting (gpuseg.cleaning.check_rows) for both front-ends.
    bad = tmp_path / "bad.csv"
    bad.write_text("customer_id,invoice_date,amount\n1,31/31/2024,5\n2,32/01/2024,3\n,2024-01-05,4\n")
    dropped = tmp_path / "dropped.csv"
    dropped.write_text("customer_id,invoice_date,amount\n1,2024-01-02,7\n,2024-01-05,4\n")
    messages = []
    for path in (bad, dropped):
        config = dict(inputs=(str(path),), k=2, as_of=dt.date(2024, 1, 1))
        with pytest.raises(GpusegError) as one:
            run(SegmentConfig(out=tmp_path / "one", **config))
        with pytest.raises(GpusegError) as many:
            run_dask(SegmentConfig(out=tmp_path / "many", **config), client=client)
        assert str(many.value) == str(one.value)
        assert not (tmp_path / "many").exists()
        messages.append(str(one.value))
    assert "no date in column 'invoice_date' could be parsed (e.g. '31/31/2024'" in messages[0]
    assert messages[1] == "no usable rows: all 2 rows were dropped (missing_customer_id: 1, after_as_of: 1)"


@pytest.mark.slow
def test_cli_errors(tmp_path, files):
    runner = CliRunner()
    result = runner.invoke(app, ["segment", "--scheduler", "local", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "needs INPUT files" in result.output
    result = runner.invoke(app, ["segment", str(files), "--scheduler", "tcp://127.0.0.1:9", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "cannot reach the Dask scheduler" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "o").exists()


@pytest.mark.slow
def test_works_when_the_data_is_larger_than_a_workers_memory_limit(tmp_path):
    # 14M rows: the five input columns take 14e6 x 36 B = 504 MB in memory, more than the
    # 500 MB each worker may use; Dask spills (and may restart a worker) and the run completes.
    data = tmp_path / "big"
    data.mkdir()
    for i, table in enumerate(iter_tables(14_000_000, 1_400_000, seed=3, block_rows=700_000, workers=2)):
        pq.write_table(table, data / f"p{i:02d}.parquet")
    in_memory = sum(pq.read_metadata(f).num_rows for f in data.iterdir()) * 36
    limit = 500 * 10**6
    assert in_memory > limit
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, memory_limit=limit,
                                       dashboard_address=None,
                                       env={"ARROW_DEFAULT_MEMORY_POOL": "system", "MALLOC_TRIM_THRESHOLD_": "65536"})
    with distributed.Client(cluster) as c:
        report = run_dask(SegmentConfig(inputs=(str(data),), out=tmp_path / "dask", k=5), client=c).report
    cluster.close()
    single = run(SegmentConfig(inputs=(str(data),), out=tmp_path / "single", k=5))
    assert report["n_customers"] == single.report["n_customers"]
    a = read_dataset(tmp_path / "single" / "assignments.parquet", ["customer_id", "segment"])
    b = read_dataset(tmp_path / "dask" / "assignments", ["customer_id", "segment"])
    assert a.column("customer_id").equals(b.column("customer_id"))
    np.testing.assert_array_equal(b.column("segment").to_numpy(), a.column("segment").to_numpy())


@pytest.mark.parametrize("ids", ["uint64_past_2_63", "float16"])
def test_id_types_at_the_edges_match_one_process(client, tmp_path, ids):
    # uint64 ids past 2**63 came to the workers in chunks RecordBatch.from_pandas refused; Arrow
    # sorts no float16 ids for seeding. Both ended in tracebacks.
    n = 600
    cid = np.arange(n) % 40 + 1
    cid = cid.astype(np.uint64) + np.uint64(2**63) if ids.startswith("uint64") else cid.astype(np.float16)
    (tmp_path / "in").mkdir()
    for part in range(2):
        rows = slice(part * n // 2, (part + 1) * n // 2)
        pq.write_table(pa.table({"customer_id": pa.array(cid[rows]),
                                 "date": [f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}" for i in range(n)][rows],
                                 "invoice": [f"I{i // 3}" for i in range(n)][rows],
                                 "amount": (np.arange(n) % 9 + 1.0)[rows]}), tmp_path / "in" / f"p{part}.parquet")
    single = run(SegmentConfig(inputs=(str(tmp_path / "in"),), out=tmp_path / "one", k=3))
    run_dask(SegmentConfig(inputs=(str(tmp_path / "in"),), out=tmp_path / "dask", k=3), client=client)
    def by_id(path):  # Arrow sorts no float16: those by the ids as float32, which holds them exactly
        t = pq.read_table(path)
        key = t.column("customer_id")
        return t.take(pc.sort_indices(key.cast(pa.float32()) if pa.types.is_float16(key.type) else key))
    a = by_id(tmp_path / "one" / "features.parquet")
    b = by_id(tmp_path / "dask" / "features")
    assert a.column("customer_id").equals(b.column("customer_id")) and a.num_rows == 40
    np.testing.assert_allclose(b.column("monetary").to_numpy(), a.column("monetary").to_numpy(), rtol=1e-12)
    assert single.report["n_customers"] == 40


def _two_parquet_files(root, first, second):
    root.mkdir()
    for name, ids in (("a", first), ("b", second)):
        n = len(ids)
        pq.write_table(pa.table({"customer_id": ids, "date": [f"2024-{1 + i % 12:02d}-{1 + i % 27:02d}" for i in range(n)],
                                 "amount": np.arange(n) % 7 + 1.5}), root / f"{name}.parquet")
    return root


def _same_as_one_process(client, tmp_path, inputs, k=3):
    one = run(SegmentConfig(inputs=(str(inputs),), out=tmp_path / "one", k=k))
    many = run_dask(SegmentConfig(inputs=(str(inputs),), out=tmp_path / "many", k=k), client=client)
    a = read_dataset(tmp_path / "one" / "features.parquet")
    b = read_dataset(tmp_path / "many" / "features")
    assert b.schema.field("customer_id").type == a.schema.field("customer_id").type
    assert a.column("customer_id").equals(b.column("customer_id"))
    np.testing.assert_allclose(b.column("monetary").to_numpy(), a.column("monetary").to_numpy(), rtol=1e-12)
    assert read_dataset(tmp_path / "many" / "assignments").column("segment").equals(
        read_dataset(tmp_path / "one" / "assignments.parquet").column("segment"))
    assert many.report["n_customers"] == one.report["n_customers"] and many.report["rows"] == one.report["rows"]
    return one


@pytest.mark.parametrize("first, second, n_customers", [
    # Text ids trimmed before the shuffle: " C1 " is C1's rows too (were two customers on Dask).
    ([f"C{i % 30}" for i in range(300)], [f" C{i % 30} " for i in range(300)], 30),
    # Ids typed otherwise in another file: one type for all (were a traceback, or float ids).
    (pa.array(np.arange(300) % 30), pa.array([str(i % 40) for i in range(300)]), 40),
    (pa.array(np.arange(300) % 30), pa.array((np.arange(300) % 40).astype(np.float64)), 40),
    (pa.array(np.arange(300) % 30, pa.int32()), pa.array(np.arange(300) % 40 + 2**40), 70),
])
def test_ids_of_differing_types_across_files_are_one_customer_each_as_in_one_process(client, tmp_path, first,
                                                                                      second, n_customers):
    inputs = _two_parquet_files(tmp_path / "in", first, second)
    one = _same_as_one_process(client, tmp_path, inputs)
    assert one.report["n_customers"] == n_customers


def test_csv_pieces_are_read_as_one_process_reads_the_file(client, tmp_path, monkeypatch):
    # Null spellings are Arrow's ("None" is an id, as in one process; pandas' read_csv made it null),
    # and a file cut into byte ranges at line ends loses and repeats no line.
    import gpuseg.reading as reading
    monkeypatch.setattr(reading, "CSV_BLOCK_BYTES", 97)
    lines = ["customer_id,invoice_date,amount"] + [
        f"{'None' if i % 17 == 0 else i % 23},2024-{1 + i % 12:02d}-{1 + i % 27:02d},{i % 9 + 0.5}" for i in range(400)]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "log.csv").write_text("\r\n".join(lines) + "\r\n")
    one = _same_as_one_process(client, tmp_path, tmp_path / "in")
    assert one.report["rows"]["read"] == 400 and "None" in pq.read_table(
        tmp_path / "many" / "features").column("customer_id").to_pylist()


def test_an_unreadable_csv_value_is_one_error_line_as_in_one_process(client, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("customer_id,invoice_date,amount\n1,2024-01-02,7\n2,2024-01-03,abc\n")
    with pytest.raises(GpusegError) as one:
        run(SegmentConfig(inputs=(str(bad),), out=tmp_path / "one", k=1))
    with pytest.raises(GpusegError) as many:
        run_dask(SegmentConfig(inputs=(str(bad),), out=tmp_path / "many", k=1), client=client)
    assert str(many.value) == str(one.value) and "'abc' in column 'amount' is not a number" in str(one.value)
    assert not (tmp_path / "many").exists()


def test_score_on_the_cluster_refuses_a_customer_too_far_to_measure(client, tmp_path):
    train = tmp_path / "train.csv"
    train.write_text("customer_id,invoice_date,amount\n1,2024-01-02,7\n2,2024-01-03,-9\n2,2024-01-04,3\n"
                     "3,2024-01-05,4\n3,2024-01-06,5\n")
    run(SegmentConfig(inputs=(str(train),), out=tmp_path / "m", k=2))
    new = tmp_path / "new.csv"
    new.write_text("customer_id,invoice_date,amount\n1,2024-01-02,1e300\n3,2024-01-05,4\n")
    config = ScoreConfig(model=tmp_path / "m" / "model.json", inputs=(str(new),), out=tmp_path / "s")
    with pytest.raises(GpusegError) as one:
        score(config)
    with pytest.raises(GpusegError) as many:
        score_dask(config, client=client)
    assert "too far from every segment to measure" in str(one.value)
    assert str(many.value) == str(one.value) and not (tmp_path / "s").exists()


def test_customers_that_cannot_be_used_are_reported_as_in_one_process(client, tmp_path):
    # Each partition refused alone: a count of its own customers, and whichever it held first.
    (tmp_path / "in").mkdir()
    pq.write_table(pa.table({"customer_id": list(range(1, 41)) * 2,
                             "invoice_date": ["2024-01-02"] * 40 + ["2024-01-03"] * 40,
                             "amount": [1.7e308 if i % 2 else 3.0 for i in range(40)] * 2}), tmp_path / "in" / "a.parquet")
    config = dict(inputs=(str(tmp_path / "in"),), k=2)
    with pytest.raises(GpusegError) as one:
        run(SegmentConfig(out=tmp_path / "one", **config))
    with pytest.raises(GpusegError) as many:
        run_dask(SegmentConfig(out=tmp_path / "many", **config), client=client)
    assert str(many.value) == str(one.value) and "(20 customer(s) in all)" in str(one.value)


def test_dotted_twins_are_warned_of_and_a_score_without_purchases_is_refused(client, tmp_path):
    # Neither Dask path warned of ids written 12346.0 beside 12346 (they hash to other partitions),
    # and a Dask score of customers who only returned goods wrote outputs for no customer.
    (tmp_path / "in").mkdir()
    rows = [f"{100 + i},2024-01-{1 + i % 27:02d},{i + 1}.5" for i in range(60)]
    rows += [f"{100 + i}.0,2024-02-{1 + i % 27:02d},{i + 2}.5" for i in range(10)]
    # Twins without a purchase are no customers anyone segments: every front-end leaves them out
    # of the count (one process counted them on one of its two paths, Dask never).
    rows += [f"{100 + i}.0,2024-02-{1 + i % 27:02d},-{i + 2}.5" for i in range(20, 25)]
    (tmp_path / "in" / "a.csv").write_text("customer_id,invoice_date,amount\n" + "\n".join(rows) + "\n")
    one = run(SegmentConfig(inputs=(str(tmp_path / "in"),), out=tmp_path / "one", k=2))
    many = run_dask(SegmentConfig(inputs=(str(tmp_path / "in"),), out=tmp_path / "many", k=2), client=client)
    twins = [w for w in one.report["warnings"] if "decimal point" in w]
    assert twins and twins[0].startswith("10 customer id(s)") and twins == \
        [w for w in many.report["warnings"] if "decimal point" in w]
    scored = score_dask(ScoreConfig(model=tmp_path / "one" / "model.json", inputs=(str(tmp_path / "in"),),
                                    out=tmp_path / "s"), client=client)
    assert any(w.startswith("10 customer id(s)") for w in scored["report"]["warnings"])
    (tmp_path / "ret.csv").write_text("customer_id,invoice_date,amount\n1,2024-01-02,-5\n2,2024-01-03,-1\n")
    config = ScoreConfig(model=tmp_path / "one" / "model.json", inputs=(str(tmp_path / "ret.csv"),),
                         out=tmp_path / "r")
    with pytest.raises(GpusegError) as in_one:
        score(config)
    with pytest.raises(GpusegError) as on_dask:
        score_dask(config, client=client)
    assert str(on_dask.value) == str(in_one.value) and not (tmp_path / "r").exists()


@pytest.mark.slow
def test_ctrl_c_on_a_local_cluster_prints_no_worker_tracebacks(tmp_path):
    # A terminal's Ctrl-C reaches the whole process group: the workers took it too and printed
    # four tracebacks while gpuseg stopped the run.
    import time
    data = tmp_path / "tx.parquet"
    pq.write_table(pa.concat_tables(iter_tables(1_000_000, 100_000, seed=1, workers=1)), data)
    gpuseg = os.path.join(os.path.dirname(sys.executable), "gpuseg")
    proc = subprocess.Popen([gpuseg, "segment", str(data), "--out", str(tmp_path / "o"), "-q", "--scheduler", "local"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    time.sleep(2.0)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the run ended before the interrupt")
    assert proc.returncode == 130 and "Traceback" not in err.decode() and not (tmp_path / "o").exists()
