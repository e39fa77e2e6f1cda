"""`gpuseg score`: reproducing the training run, streaming, drift, bad models and options."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from gpuseg.cli import app
from gpuseg.config import SegmentConfig
from gpuseg.errors import GpusegError
from gpuseg.generate import demo_table
from gpuseg.pipeline import run
from gpuseg.scoring import ScoreConfig, _hash_partition, parse_memory, partitions_for, score

runner = CliRunner()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("score")
    log = root / "tx.parquet"
    pq.write_table(demo_table(3000, seed=1), log)
    result = run(SegmentConfig(inputs=(str(log),), out=root / "train", k=4))
    return root, log, result


def sorted_assignments(path):
    t = pq.read_table(path).sort_by("customer_id")
    return {c: t.column(c).to_numpy(zero_copy_only=False) for c in t.column_names}


@pytest.mark.parametrize("partitions", [None, 1, 5])
def test_scoring_the_training_data_reproduces_the_training_assignments(trained, tmp_path, partitions):
    root, log, _ = trained
    res = score(ScoreConfig(model=root / "train" / "model.json", inputs=(str(log),), out=tmp_path / "s",
                            partitions=partitions))
    assert res.report["streamed"] == (partitions is not None)
    if partitions:  # partitions as asked (was the count of those that got rows), and those that did
        assert res.report["partitions"] == partitions and 1 <= res.report["partitions_with_rows"] <= partitions
    a = sorted_assignments(root / "train" / "assignments.parquet")
    b = sorted_assignments(tmp_path / "s" / "assignments.parquet")
    np.testing.assert_array_equal(a["customer_id"], b["customer_id"])
    np.testing.assert_array_equal(a["segment"], b["segment"])
    np.testing.assert_array_equal(a["segment_name"], b["segment_name"])
    np.testing.assert_allclose(a["distance"], b["distance"], rtol=1e-12, atol=1e-12)
    drift = json.loads((tmp_path / "s" / "drift.json").read_text())
    assert all(abs(s["share_change"]) < 1e-12 for s in drift["segments"])
    assert drift["mean_distance_ratio"] == pytest.approx(1.0, rel=1e-12)


def test_drift_on_new_data_and_the_cli_table(trained, tmp_path):
    root, _, train = trained
    newer = tmp_path / "new.csv"
    pacsv.write_csv(demo_table(2000, seed=7), newer)
    result = runner.invoke(app, ["score", str(newer), "--model", str(root / "train" / "model.json"),
                                 "--out", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    assert "Scored " in result.output and "drift.json" in result.output
    drift = json.loads((tmp_path / "s" / "drift.json").read_text())
    assert drift["training_n_customers"] == train.report["n_customers"]
    assert sum(s["customers"] for s in drift["segments"]) == drift["n_customers"]
    assert sum(s["share"] for s in drift["segments"]) == pytest.approx(1.0)
    for s, p in zip(drift["segments"], train.profiles):
        assert s["training_share"] == pytest.approx(p["share"])
        assert s["share_change"] == pytest.approx(s["share"] - p["share"])
    rep = json.loads((tmp_path / "s" / "score_report.json").read_text())
    assert rep["rows"]["read"] == demo_table(2000, seed=7).num_rows
    assert rep["as_of"] == "2025-01-01"  # from the new data


def test_as_of_option_and_model_mapping_overrides(trained, tmp_path):
    root, _, _ = trained
    t = demo_table(1000, seed=3).rename_columns(["cust", "invoice", "invoice_date", "quantity", "unit_price"])
    path = tmp_path / "renamed.parquet"
    pq.write_table(t, path)
    result = runner.invoke(app, ["score", str(path), "--model", str(root / "train" / "model.json"), "--customer-col",
                                 "cust", "--as-of", "2024-12-01", "--out", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    rep = json.loads((tmp_path / "s" / "score_report.json").read_text())
    assert rep["columns"]["customer"] == "cust"
    assert rep["as_of"] == "2024-12-01" and rep["rows"]["dropped"]["after_as_of"] > 0


def test_a_model_column_the_new_files_lack_is_an_error_not_another_column(tmp_path):
    # Found by a contract audit: a model that read amounts from "net" scored new files by their
    # "amount" column (twice the net) without a word; now the run stops and names the option.
    t = demo_table(600, seed=1)
    amount = pc.multiply(pc.cast(t["quantity"], pa.float64()), t["unit_price"])
    train = pa.table({"customer_id": t["customer_id"], "invoice_date": t["invoice_date"],
                      "amount": pc.multiply(amount, 2.0), "net": amount})
    new = train.drop_columns(["net"])
    pq.write_table(train, tmp_path / "train.parquet")
    pq.write_table(new, tmp_path / "new.parquet")
    run(SegmentConfig(inputs=(str(tmp_path / "train.parquet"),), out=tmp_path / "m", k=3,
                      columns={"amount": "net"}))
    with pytest.raises(GpusegError, match=r"amount from column 'net'.*--amount-col"):
        score(ScoreConfig(model=tmp_path / "m" / "model.json", inputs=(str(tmp_path / "new.parquet"),),
                          out=tmp_path / "s"))
    assert not (tmp_path / "s").exists()
    result = score(ScoreConfig(model=tmp_path / "m" / "model.json", inputs=(str(tmp_path / "new.parquet"),),
                               out=tmp_path / "s", columns={"amount": "amount"}))
    assert result.report["columns"]["amount"] == "amount"


def test_a_model_without_invoices_counts_customer_days_in_files_that_have_them(trained, tmp_path):
    t = demo_table(600, seed=2)
    pq.write_table(t.drop_columns(["invoice"]), tmp_path / "train.parquet")
    run(SegmentConfig(inputs=(str(tmp_path / "train.parquet"),), out=tmp_path / "m", k=3))
    pq.write_table(t, tmp_path / "with.parquet")
    pq.write_table(t.drop_columns(["invoice"]), tmp_path / "without.parquet")
    model = tmp_path / "m" / "model.json"
    a = score(ScoreConfig(model=model, inputs=(str(tmp_path / "with.parquet"),), out=tmp_path / "a"))
    b = score(ScoreConfig(model=model, inputs=(str(tmp_path / "without.parquet"),), out=tmp_path / "b"))
    streamed = score(ScoreConfig(model=model, inputs=(str(tmp_path / "with.parquet"),), out=tmp_path / "d",
                                 partitions=2))
    assert a.report["columns"]["invoice"] is None and streamed.report["columns"]["invoice"] is None
    want = pq.read_table(tmp_path / "b" / "assignments.parquet")
    assert pq.read_table(tmp_path / "a" / "assignments.parquet").equals(want)
    got = pq.read_table(tmp_path / "d" / "assignments.parquet").sort_by("customer_id")
    assert got.column("segment").equals(want.column("segment"))
    named = score(ScoreConfig(model=model, inputs=(str(tmp_path / "with.parquet"),), out=tmp_path / "c",
                              columns={"invoice": "invoice"}))
    assert named.report["columns"]["invoice"] == "invoice"


def test_a_model_with_invoices_scores_files_without_them_as_customer_days_and_says_so(tmp_path):
    # Refused for a while ("the model reads the invoice from column 'invoice' ..."), with no way to
    # say that the new files have no invoices: invoices are optional, as in segment.
    t = demo_table(600, seed=4)
    pq.write_table(t, tmp_path / "train.parquet")
    run(SegmentConfig(inputs=(str(tmp_path / "train.parquet"),), out=tmp_path / "m", k=3))
    pq.write_table(t.drop_columns(["invoice"]).rename_columns(
        ["customer_id", "invoice_date", "quantity", "unit_price"]), tmp_path / "new.parquet")
    for partitions in (None, 2):
        result = score(ScoreConfig(model=tmp_path / "m" / "model.json", inputs=(str(tmp_path / "new.parquet"),),
                                   out=tmp_path / f"s{partitions}", partitions=partitions))
        assert result.report["columns"]["invoice"] is None
        assert any("orders are customer-days here" in w for w in result.report["warnings"])


def test_hash_partitions_are_stable_and_cover_all():
    ints = pa.array([5, 17, 5, 1_000_000, -3])
    p = _hash_partition(ints, 4)
    assert p[0] == p[2] and set(p.tolist()) <= set(range(4))
    np.testing.assert_array_equal(p, _hash_partition(ints, 4))
    text = pa.array(["a", "bb", "a", " a "])
    q = _hash_partition(text, 3)
    assert q[0] == q[2] == q[3]  # whitespace is trimmed, as cleaning does
    many = _hash_partition(pa.array(np.arange(10_000)), 8)
    assert np.bincount(many, minlength=8).min() > 900  # spread, not clustered


def test_memory_arithmetic():
    assert parse_memory("2GB") == 2 * 10**9 and parse_memory("512MiB") == 512 * 2**20 and parse_memory("1e6") == 10**6
    assert partitions_for(10**6, 10**9, baseline=0) == 1
    # 10^7 rows x 100 B = 1e9 B of working set; a third of (400 MB - 100 MB) per partition -> 10.
    assert partitions_for(10**7, 400 * 10**6, baseline=100 * 10**6) == 10


@pytest.mark.parametrize("setup, message", [
    ("missing", "does not exist"),
    ("not_json", "is not valid JSON"),
    ("wrong_version", "format version 99 is not supported"),
    ("corrupt", "is corrupted"),
    ("unknown_feature", "unknown feature 'lifetime_value'"),
    ("no_columns", "lacks column"),
])
def test_bad_models_and_inputs_are_clear_errors(trained, tmp_path, setup, message):
    root, log, _ = trained
    model = json.loads((root / "train" / "model.json").read_text())
    path = tmp_path / "model.json"
    inputs = str(log)
    if setup == "not_json":
        path.write_text("{ not json")
    elif setup == "wrong_version":
        path.write_text(json.dumps({**model, "format_version": 99}))
    elif setup == "corrupt":
        path.write_text(json.dumps({**model, "centroids": [[1.0, 2.0]]}))
    elif setup == "unknown_feature":
        feats = ["recency_days", "frequency", "lifetime_value"]
        path.write_text(json.dumps({**model, "features": feats, "scaler": {**model["scaler"], "features": feats}}))
    elif setup == "no_columns":
        path.write_text(json.dumps({**model, "columns": {**model["columns"], "customer": "client"}}))
        other = tmp_path / "other.parquet"
        pq.write_table(pa.table({"client": [1], "when": ["2024-01-01"], "x": [1.0]}), other)
        inputs = str(other)
        result = runner.invoke(app, ["score", inputs, "--model", str(path), "--out", str(tmp_path / "o"),
                                     "--date-col", "when", "--amount-col", "price"])
        assert result.exit_code == 2 and "Error:" in result.output and "Traceback" not in result.output
        assert not (tmp_path / "o").exists()
        return
    result = runner.invoke(app, ["score", inputs, "--model", str(path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    assert "Error:" in result.output and message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o").exists()


def test_bad_memory_limit(trained, tmp_path):
    root, log, _ = trained
    result = runner.invoke(app, ["score", str(log), "--model", str(root / "train" / "model.json"),
                                 "--memory-limit", "lots", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "--memory-limit must be a size" in result.output


def test_ids_that_one_customer_can_be_written_as_share_a_partition():
    # Batches of different id types make one customer of 5, 5.0, "5" and " 5 " (and of 1e15, 10**15
    # and "1000000000000000"), so streamed scoring must put them in one partition.
    same = [pa.array([5], pa.int32()), pa.array([5], pa.uint64()), pa.array([5.0]), pa.array([5.0], pa.float32()),
            pa.array(["5"]), pa.array([" 5 "]), pa.array(["5"]).dictionary_encode()]
    assert len({int(_hash_partition(a, 97)[0]) for a in same}) == 1
    assert _hash_partition(pa.array([1e15]), 97)[0] == _hash_partition(pa.array(["1000000000000000"]), 97)[0] == \
        _hash_partition(pa.array([10**15]), 97)[0]
    assert _hash_partition(pa.array([10**18]), 97)[0] == _hash_partition(pa.array(["1000000000000000000"]), 97)[0]
    assert _hash_partition(pa.array([-0.0]), 97)[0] == _hash_partition(pa.array([0]), 97)[0]


def _two_files(root, second_ids, second_invoices=None, first_ids=lambda c: c):
    """A log over two Parquet files whose second file types its ids (or invoices) otherwise."""
    rng = np.random.default_rng(0)
    n = 4000
    cust = rng.integers(1, 400, n)
    day = pa.array(np.datetime64("2024-01-01") + rng.integers(0, 300, n).astype("timedelta64[D]"))
    amount = np.round(rng.gamma(2, 20, n), 2)
    invoice = np.arange(n) // 2
    root.mkdir()
    h = n // 2
    pq.write_table(pa.table({"customer_id": first_ids(cust[:h]), "invoice": invoice[:h], "date": day[:h],
                             "amount": amount[:h]}), root / "1.parquet")
    pq.write_table(pa.table({"customer_id": second_ids(cust[h:]),
                             "invoice": invoice[h:] if second_invoices is None else second_invoices(invoice[h:]),
                             "date": day[h:], "amount": amount[h:]}), root / "2.parquet")


@pytest.mark.parametrize("first_ids, second_ids, second_invoices", [
    (np.asarray, lambda c: c.astype(np.float64), None),                           # int, then float ids
    (lambda c: pa.array(c, pa.int32()), lambda c: c + 3_000_000_000, None),       # int32, then past its range
    (np.asarray, lambda c: pa.array([f" {v}" for v in c]), None),                 # int, then text with spaces
    (np.asarray, np.asarray, lambda i: [("C" if v % 10 == 0 else "") + str(v) for v in i]),  # text invoices
])
def test_streamed_scoring_of_files_with_differing_id_types_equals_segment(tmp_path, first_ids, second_ids,
                                                                          second_invoices):
    _two_files(tmp_path / "in", second_ids, second_invoices, first_ids)
    inputs = (str(tmp_path / "in"),)
    trained = run(SegmentConfig(inputs=inputs, out=tmp_path / "train", k=3))
    for partitions in (None, 4):
        score(ScoreConfig(model=tmp_path / "train" / "model.json", inputs=inputs, out=tmp_path / f"s{partitions}",
                          partitions=partitions))
        a = pq.read_table(tmp_path / "train" / "assignments.parquet").sort_by("customer_id")
        b = pq.read_table(tmp_path / f"s{partitions}" / "assignments.parquet").sort_by("customer_id")
        assert b.num_rows == trained.report["n_customers"]  # one row per customer, none split
        assert b.schema.field("customer_id").type == a.schema.field("customer_id").type
        assert b.column("customer_id").equals(a.column("customer_id"))
        assert b.column("segment").equals(a.column("segment"))


@pytest.mark.parametrize("partitions", [None, 2])
def test_the_report_counts_customers_without_a_purchase_and_warns_of_a_future_date(tmp_path, partitions):
    train = tmp_path / "train.csv"
    train.write_text("customer_id,invoice,date,amount\n1,100,2024-01-02,50\n1,101,2024-02-03,20\n"
                     "2,102,2024-01-05,30\n3,103,2024-01-07,80\n3,104,2024-03-01,10\n5,106,2024-02-09,25\n")
    run(SegmentConfig(inputs=(str(train),), out=tmp_path / "m", k=2))
    new = tmp_path / "new.csv"
    new.write_text(train.read_text() + "4,105,2024-02-01,-40\n7,108,2206-01-05,10\n")
    args = ["score", str(new), "--model", str(tmp_path / "m" / "model.json"), "--out", str(tmp_path / "s")]
    result = runner.invoke(app, args + (["--partitions", str(partitions)] if partitions else []))
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "s" / "score_report.json").read_text())
    assert report["customers_without_purchase"] == 1  # customer 4 has only a return
    assert report["warnings"] and "2206-01-05" in report["warnings"][0]
    text = " ".join(result.output.split())
    assert "1 customers without a purchase left out" in text and "2206-01-05" in text


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("small")
    rng = np.random.default_rng(0)
    day = np.datetime64("2024-01-01") + rng.integers(0, 300, 300).astype("timedelta64[D]")
    pq.write_table(pa.table({"customer_id": rng.integers(0, 40, 300), "date": pa.array(day),
                             "amount": rng.random(300) * 100}), root / "t.parquet")
    run(SegmentConfig(inputs=(str(root / "t.parquet"),), out=root / "seg", k=3))
    return root / "seg" / "model.json"


@pytest.mark.parametrize("case, fragment", [
    ("no_purchase", "no customer has a purchase order (every order nets to zero or less)"),
    ("overflow", "customer 1 has a monetary of inf (20 customer(s) in all)"),
    ("too_far", "customer 1 is too far from every segment to measure"),
])
def test_streamed_scoring_refuses_as_one_process_does(small_model, tmp_path, case, fragment):
    # Each partition reported alone: another message for no purchase, "11 customer(s) in all" and
    # "customer 3" depending on the number of partitions.
    first, second = "2024-01-02", "2024-01-03"
    if case == "no_purchase":
        table = {"customer_id": [1, 2], "date": [first, second], "amount": [-5.0, 0.0]}
    elif case == "overflow":
        table = {"customer_id": list(range(1, 21)) * 2, "date": [first] * 20 + [second] * 20, "amount": [1.7e308] * 40}
    else:
        table = {"customer_id": list(range(1, 11)), "date": [first] * 10, "amount": [1e300 * (i + 1) for i in range(10)]}
    pq.write_table(pa.table({k: pa.array(v) for k, v in table.items()}), tmp_path / "new.parquet")
    messages = set()
    for partitions in (None, 1, 2, 3, 5):
        with pytest.raises(GpusegError) as err:
            score(ScoreConfig(model=small_model, inputs=(str(tmp_path / "new.parquet"),), out=tmp_path / "s",
                              partitions=partitions))
        messages.add(str(err.value))
        assert not (tmp_path / "s").exists()
    assert len(messages) == 1 and fragment in messages.pop()


def test_streamed_scoring_keeps_no_more_streams_open_than_partitions(tmp_path, monkeypatch):
    # Spill streams are per partition and batch schema; with ids typed four ways they were
    # n_parts x 4 open files, past the budget _room_for_open_files had made room for.
    import pyarrow.ipc as ipc
    rng = np.random.default_rng(1)
    (tmp_path / "in").mkdir()
    for i, typed in enumerate([lambda c: pa.array(c), lambda c: pa.array([str(v) for v in c]),
                               lambda c: pa.array([str(v) for v in c], pa.large_string()),
                               lambda c: pa.array([str(v) for v in c]).dictionary_encode()]):
        cust = rng.integers(0, 300, 500)
        pq.write_table(pa.table({"customer_id": typed(cust), "date": ["2024-03-01"] * 500,
                                 "amount": rng.random(500) + 1}), tmp_path / "in" / f"{i}.parquet")
    run(SegmentConfig(inputs=(str(tmp_path / "in"),), out=tmp_path / "seg", k=3))
    state = {"open": 0, "most": 0}
    real = ipc.new_stream

    def counted(*args, **kwargs):
        writer = real(*args, **kwargs)
        state["open"] += 1
        state["most"] = max(state["most"], state["open"])
        close = writer.close

        def closed():
            state["open"] -= 1
            close()
        writer.close = closed
        return writer

    monkeypatch.setattr(ipc, "new_stream", counted)
    score(ScoreConfig(model=tmp_path / "seg" / "model.json", inputs=(str(tmp_path / "in"),), out=tmp_path / "s",
                      partitions=5))
    assert state["most"] <= 5 and state["open"] == 0
    a = pq.read_table(tmp_path / "seg" / "assignments.parquet").sort_by("customer_id")
    b = pq.read_table(tmp_path / "s" / "assignments.parquet").sort_by("customer_id")
    assert b.column("segment").equals(a.column("segment"))


@pytest.mark.parametrize("second", ["text.parquet", "int.parquet"])
def test_twins_are_counted_among_the_customers_segmented(tmp_path, second):
    # "5.0" beside "5": counted when both have a purchase, not when the dotted one only returned
    # goods. One process counted the latter when the files' id types differed (the path that codes
    # all batches at once keeps every customer's id), and not when they agreed.
    (tmp_path / "in").mkdir()
    rows = [f"{100 + i},2024-01-{1 + i % 27:02d},{i + 1}.5" for i in range(30)]
    rows += [f"{100 + i}.0,2024-02-{1 + i % 27:02d},{i + 2}.5" for i in range(4)]
    rows += [f"{110 + i}.0,2024-02-{1 + i % 27:02d},-{i + 2}.5" for i in range(6)]
    (tmp_path / "in" / "a.csv").write_text("customer_id,date,amount\n" + "\n".join(rows) + "\n")
    other = pa.array(["x1", "x2"]) if second == "text.parquet" else pa.array([900, 901])
    pq.write_table(pa.table({"customer_id": other, "date": ["2024-03-01"] * 2, "amount": [5.0, 6.0]}),
                   tmp_path / "in" / second)
    seg = run(SegmentConfig(inputs=(str(tmp_path / "in"),), out=tmp_path / "seg", k=2))
    warned = [w for w in seg.report["warnings"] if "decimal point" in w]
    assert len(warned) == 1 and warned[0].startswith("4 customer id(s)")
    for partitions in (None, 3):
        res = score(ScoreConfig(model=tmp_path / "seg" / "model.json", inputs=(str(tmp_path / "in"),),
                                out=tmp_path / f"s{partitions}", partitions=partitions))
        assert [w for w in res.report["warnings"] if "decimal point" in w] == warned


def test_ids_written_with_a_decimal_point_beside_whole_ones_are_warned_of(tmp_path):
    # An export's float ids as CSV text (12000.0) beside the same ids as Parquet doubles (12000):
    # two customers each, silently.
    (tmp_path / "in").mkdir()
    ids = np.arange(12000, 12040).astype(float)
    dates = [f"2024-01-{1 + i % 28:02d}" for i in range(40)]
    pq.write_table(pa.table({"customer_id": ids, "date": dates, "amount": np.arange(40) + 1.0}),
                   tmp_path / "in" / "a.parquet")
    (tmp_path / "in" / "b.csv").write_text("customer_id,date,amount\n" + "".join(
        f"{v:.1f},{dates[i]},{i + 2.0}\n" for i, v in enumerate(ids)))
    seg = run(SegmentConfig(inputs=(str(tmp_path / "in"),), out=tmp_path / "seg", k=2))
    assert any("40 customer id(s) appear both as a whole number and with a decimal point" in w
               for w in seg.report["warnings"])
    for partitions in (None, 3):
        res = score(ScoreConfig(model=tmp_path / "seg" / "model.json", inputs=(str(tmp_path / "in"),),
                                out=tmp_path / f"s{partitions}", partitions=partitions))
        assert any(w.startswith("40 customer id(s)") for w in res.report["warnings"])


def test_two_streamed_scores_at_once_keep_room_for_both(monkeypatch):
    # Each raised the soft limit on open files for its own partitions and put the old one back on
    # leaving, while the other still held its files: "Too many open files" on a limit of 1024.
    import resource
    from gpuseg import scoring
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2000:
        pytest.skip("the hard limit on open files is too low to raise towards")
    resource.setrlimit(resource.RLIMIT_NOFILE, (400, hard))
    try:
        with scoring._room_for_open_files(300, False):
            assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= 300 + 256
            with scoring._room_for_open_files(300, False):  # a second score on another thread
                assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= 600 + 256
            assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= 300 + 256  # the first's room stays
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == 400  # put back once neither holds files
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_score_config_takes_as_of_model_as_the_cli_does(trained, tmp_path):
    root, log, _ = trained
    config = ScoreConfig(model=root / "train" / "model.json", inputs=(str(log),), out=tmp_path / "s", as_of="model")
    assert config.as_of is None and config.as_of_from_model


def test_any_score_sweeps_a_dead_streamed_scores_scratch(trained, tmp_path, monkeypatch):
    # Only a later streamed score removed it; an in-memory one (or any other command) left it.
    import os
    import socket
    import tempfile
    monkeypatch.setenv("TMPDIR", str(tmp_path / "t"))
    (tmp_path / "t").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", None)
    dead = tmp_path / "t" / f"gpuseg-score-{socket.gethostname().replace('-', '_')}-{2**22 + os.getpid()}-x"
    dead.mkdir()
    (dead / "part-0-0.arrow").write_bytes(b"left by a killed run")
    root, log, _ = trained
    score(ScoreConfig(model=root / "train" / "model.json", inputs=(str(log),), out=tmp_path / "s"))
    assert not dead.exists()
