"""The command line, on real files in tmp_path; outputs checked through the library."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from cli_helpers import checkout_env, invoke, ok
from typer.testing import CliRunner

from gpuseg.cli import app
from gpuseg.config import SegmentConfig
from gpuseg.features import DEFAULT_FEATURES, FEATURES
from gpuseg.model import SegmentModel
from gpuseg.pipeline import run

OUTPUT_FILES = ["assignments.parquet", "features.parquet", "model.json", "report.json", "segments.csv"]
STAGES = {"load", "clean", "features", "scale", "fit", "assign", "write", "total"}


# -- input files --------------------------------------------------------------------

def sample(n_customers=40, seed=0, ids=None):
    """Columns of a small log: 1-5 invoices per customer over 2024, 1-3 lines each."""
    rng = np.random.default_rng(seed)
    ids = list(range(1001, 1001 + n_customers)) if ids is None else ids
    cols = {"customer_id": [], "invoice_date": [], "invoice": [], "amount": []}
    invoice = 500_000
    for i, cid in enumerate(ids):
        for _ in range(int(rng.integers(1, 6))):
            when = dt.datetime(2024, 1, 1, int(rng.integers(8, 20)), 15) + dt.timedelta(days=int(rng.integers(0, 330)))
            for _ in range(int(rng.integers(1, 4))):
                cols["customer_id"].append(cid)
                cols["invoice_date"].append(when)
                cols["invoice"].append(invoice)
                cols["amount"].append(float(rng.integers(1, 60) * (1 + i % 4)))
            invoice += 1
    return cols


def write_csv(path: Path, cols: dict, date_format: str = "%Y-%m-%dT%H:%M:%S") -> Path:
    text = {k: [v.strftime(date_format) if isinstance(v, dt.datetime) else v for v in vals]
            for k, vals in cols.items()}
    pacsv.write_csv(pa.table(text), path)
    return path


def write_parquet(path: Path, cols: dict) -> Path:
    pq.write_table(pa.table(cols), path)
    return path


def read_outputs(out: Path) -> dict:
    return {
        "assignments": pq.read_table(out / "assignments.parquet"),
        "features": pq.read_table(out / "features.parquet"),
        "segments": pacsv.read_csv(out / "segments.csv"),
        "model": SegmentModel.load(out / "model.json"),
        "report": json.loads((out / "report.json").read_text()),
    }


def no_partial_left(parent: Path) -> None:
    assert not [p.name for p in parent.iterdir() if ".partial" in p.name]


# -- a full run -----------------------------------------------------------------------

def check_outputs(out: Path, n_customers: int, k: int) -> dict:
    assert sorted(p.name for p in out.iterdir()) == OUTPUT_FILES
    o = read_outputs(out)
    a, f, segs, model, rep = o["assignments"], o["features"], o["segments"], o["model"], o["report"]

    assert a.column_names == ["customer_id", "segment", "segment_name", "distance"]
    assert a.num_rows == n_customers
    seg = a["segment"].to_numpy()
    dist = a["distance"].to_numpy()
    assert set(seg.tolist()) <= set(range(k)) and len(set(seg.tolist())) == k
    assert np.isfinite(dist).all() and (dist >= 0).all()

    assert f.column_names == ["customer_id", *FEATURES]
    assert f["customer_id"].equals(a["customer_id"])

    # Each customer sits at its stated distance from its own, nearest, centroid.
    assert model.k == k and model.features == DEFAULT_FEATURES
    X = np.stack([f[name].to_numpy().astype(np.float64) for name in model.features], axis=1)
    Z = model.scaler.transform(X)
    d2 = ((Z[:, None, :] - model.centroids[None, :, :]) ** 2).sum(axis=2)
    # float64 on the CPU; `auto` fits in float32 on a GPU (about 7 significant digits).
    tol = 1e-9 if rep["precision"] == "float64" else 2e-5
    np.testing.assert_allclose(dist, np.sqrt(d2[np.arange(len(seg)), seg]), rtol=tol, atol=tol)
    np.testing.assert_allclose(d2.min(axis=1), d2[np.arange(len(seg)), seg], rtol=tol, atol=tol)

    assert segs.num_rows == k
    assert segs["segment"].to_pylist() == list(range(k))
    assert segs["n_customers"].to_pylist() == np.bincount(seg, minlength=k).tolist()
    assert sum(segs["share"].to_pylist()) == pytest.approx(1.0)
    means = segs["mean_monetary"].to_pylist()
    assert means == sorted(means, reverse=True)  # segment 0 is the most valuable
    for name in FEATURES:
        assert f"mean_{name}" in segs.column_names
    # Named segments: unique, the same in the table, the model and the assignments.
    names = segs["name"].to_pylist()
    assert len(set(names)) == k and names == model.names()
    assert a["segment_name"].to_pylist() == [names[s] for s in seg]

    assert set(rep["timings"]) == STAGES
    assert all(v >= 0 for v in rep["timings"].values())
    assert rep["timings"]["total"] >= max(v for s, v in rep["timings"].items() if s != "total")
    assert rep["backend"] in ("cpu", "cupy", "cuml") and isinstance(rep["device"], str) and rep["device"]
    assert isinstance(rep["fallbacks"], list)
    assert set(rep["rows"]) == {"read", "used", "dropped"}
    assert rep["rows"]["used"] + sum(rep["rows"]["dropped"].values()) == rep["rows"]["read"]
    assert rep["n_customers"] == n_customers
    assert rep["k"] == k
    assert rep["n_iter"] >= 1 and rep["inertia"] >= 0 and isinstance(rep["converged"], bool)
    assert rep["inertia"] == pytest.approx(float((dist**2).sum()), rel=1e-6)
    assert isinstance(rep["customers_without_purchase"], int)
    return o


def test_segment_csv(tmp_path):
    cols = sample()
    src = write_csv(tmp_path / "tx.csv", cols)
    out = tmp_path / "out"
    result = ok(invoke("segment", src, "--k", 3, "--out", out))
    assert "Wrote" in result.output and "40" in result.output
    o = check_outputs(out, n_customers=40, k=3)
    rep = o["report"]
    assert rep["rows"] == {"read": len(cols["amount"]), "used": len(cols["amount"]),
                           "dropped": {"missing_customer_id": 0, "unparseable_date": 0,
                                       "date_out_of_range": 0, "bad_amount": 0}}
    assert rep["customers_without_purchase"] == 0
    assert rep["columns"] == {"customer": "customer_id", "date": "invoice_date", "invoice": "invoice",
                              "amount": "amount", "quantity": None, "price": None}
    assert rep["inputs"] == [str(src)] and rep["demo"] is False
    # Frequency is the number of invoices (all positive here); monetary their sum.
    f = o["features"]
    by_customer = {}
    for c, inv, amt in zip(cols["customer_id"], cols["invoice"], cols["amount"]):
        rec = by_customer.setdefault(c, [set(), 0.0])
        rec[0].add(inv)
        rec[1] += amt
    for c, freq, money in zip(f["customer_id"].to_pylist(), f["frequency"].to_pylist(), f["monetary"].to_pylist()):
        assert freq == len(by_customer[c][0]) and money == pytest.approx(by_customer[c][1])
    last_day = max(cols["invoice_date"]).date()
    assert rep["as_of"] == (last_day + dt.timedelta(days=1)).isoformat()
    assert o["model"].as_of == last_day + dt.timedelta(days=1)
    no_partial_left(tmp_path)


def test_segment_parquet_matches_csv(tmp_path):
    cols = sample(seed=1)
    ok(invoke("segment", write_csv(tmp_path / "tx.csv", cols), "--k", 3, "--out", tmp_path / "from_csv"))
    ok(invoke("segment", write_parquet(tmp_path / "tx.parquet", cols), "--k", 3, "--out", tmp_path / "from_pq"))
    pq_out = check_outputs(tmp_path / "from_pq", n_customers=40, k=3)
    csv_out = read_outputs(tmp_path / "from_csv")
    assert pq_out["assignments"].equals(csv_out["assignments"])
    assert pq_out["features"].equals(csv_out["features"])
    assert pq_out["assignments"]["customer_id"].type == pa.int64()


def test_revenue_shares_when_returns_outweigh_purchases(tmp_path):
    # Every customer buys for 10 and later returns 50: net revenue is negative in total, and a
    # share of it would flip sign. segments.csv leaves the share empty; the table shows "–".
    cols = {"customer_id": [], "invoice_date": [], "invoice": [], "amount": []}
    for c in range(40):
        for i, amount in enumerate((10.0 + c, -50.0)):
            cols["customer_id"].append(c)
            cols["invoice_date"].append(dt.datetime(2024, 1, 1 + i + c % 20))
            cols["invoice"].append(1000 + 2 * c + i)
            cols["amount"].append(amount)
    data = write_csv(tmp_path / "returns.csv", cols)
    result = ok(invoke("segment", data, "--k", 3, "--out", tmp_path / "out"))
    segs = pacsv.read_csv(tmp_path / "out" / "segments.csv")
    assert segs.column("revenue_share").null_count == 3 and segs.column("n_customers").to_pylist() != [0, 0, 0]
    table = result.output.split("Segments")[1].split("Stage timings")[0]
    assert table.count("%") == 3 and table.count("–") >= 3  # the customers' shares only


def test_same_seed_gives_identical_assignments(tmp_path):
    src = write_parquet(tmp_path / "tx.parquet", sample(n_customers=80, seed=2))
    for name in ("a", "b"):
        ok(invoke("segment", src, "--k", 4, "--seed", 5, "--n-init", 2, "--out", tmp_path / name))
    a = pq.read_table(tmp_path / "a" / "assignments.parquet")
    b = pq.read_table(tmp_path / "b" / "assignments.parquet")
    assert a.equals(b)
    assert json.loads((tmp_path / "a" / "model.json").read_text())["centroids"] == \
        json.loads((tmp_path / "b" / "model.json").read_text())["centroids"]


def test_features_option_and_quiet(tmp_path):
    src = write_csv(tmp_path / "tx.csv", sample())
    result = ok(invoke("segment", src, "-k", 2, "--features", "tenure_days, return_share,monetary", "--quiet",
                       "-o", tmp_path / "out"))
    assert result.output.strip() == ""
    model = SegmentModel.load(tmp_path / "out" / "model.json")
    assert model.features == ("tenure_days", "return_share", "monetary")
    assert model.centroids.shape == (2, 3)


def test_folder_input_reads_every_part(tmp_path):
    cols = sample(n_customers=30)
    half = len(cols["amount"]) // 2
    (tmp_path / "parts").mkdir()
    write_csv(tmp_path / "parts" / "a.csv", {k: v[:half] for k, v in cols.items()})
    write_parquet(tmp_path / "parts" / "b.parquet", {k: v[half:] for k, v in cols.items()})
    ok(invoke("segment", tmp_path / "parts", "--k", 2, "--out", tmp_path / "out"))
    rep = read_outputs(tmp_path / "out")["report"]
    assert rep["rows"]["read"] == len(cols["amount"])
    assert len(rep["inputs"]) == 2


def test_dropped_rows_and_as_of_are_reported(tmp_path):
    cols = sample(n_customers=20)
    n = len(cols["amount"])
    text = {"customer_id": [str(c) for c in cols["customer_id"]] + ["", "1001", "1002", "1003"],
            "invoice_date": [d.isoformat() for d in cols["invoice_date"]] + ["2024-03-01", "2024-02-30",
                                                                               "2024-03-01", "2024-12-30"],
            "invoice": cols["invoice"] + [1, 2, 3, 4],
            "amount": cols["amount"] + [5.0, 5.0, None, 5.0]}
    src = tmp_path / "tx.csv"
    pacsv.write_csv(pa.table(text), src)
    result = ok(invoke("segment", src, "--k", 2, "--as-of", "2024-12-01", "--out", tmp_path / "out"))
    late = sum(d >= dt.datetime(2024, 12, 1) for d in cols["invoice_date"]) + 1
    rep = read_outputs(tmp_path / "out")["report"]
    assert rep["rows"]["read"] == n + 4
    assert rep["rows"]["dropped"] == {"missing_customer_id": 1, "unparseable_date": 1, "date_out_of_range": 0,
                                      "bad_amount": 1, "after_as_of": late}
    assert rep["as_of"] == "2024-12-01"
    assert "dropped" in result.output and "missing_customer_id 1" in result.output


# -- column options -----------------------------------------------------------------------

def baseline(tmp_path, cols):
    ok(invoke("segment", write_parquet(tmp_path / "base.parquet", cols), "--k", 3, "--out", tmp_path / "base"))
    return pq.read_table(tmp_path / "base" / "assignments.parquet")


def test_every_column_option(tmp_path):
    cols = sample(seed=3)
    expected = baseline(tmp_path, cols)
    renamed = {"client": cols["customer_id"], "when": cols["invoice_date"], "ticket": cols["invoice"],
               "net": cols["amount"], "decoy_amount": [0.0] * len(cols["amount"])}
    src = write_csv(tmp_path / "odd.csv", renamed)
    ok(invoke("segment", src, "--k", 3, "--out", tmp_path / "out", "--customer-col", "client", "--date-col", "when",
              "--invoice-col", "ticket", "--amount-col", "net"))
    o = read_outputs(tmp_path / "out")
    assert o["report"]["columns"] == {"customer": "client", "date": "when", "invoice": "ticket", "amount": "net",
                                      "quantity": None, "price": None}
    assert o["model"].columns == o["report"]["columns"]
    assert o["assignments"].equals(expected)


def test_quantity_and_price_options(tmp_path):
    cols = sample(seed=4)
    expected = baseline(tmp_path, cols)
    src = write_csv(tmp_path / "qp.csv", {
        "customer_id": cols["customer_id"], "invoice_date": cols["invoice_date"], "invoice": cols["invoice"],
        "amount": [-1.0] * len(cols["amount"]),  # a detected amount the options must override
        "n": [2] * len(cols["amount"]), "each": [a / 2 for a in cols["amount"]]})
    ok(invoke("segment", src, "--k", 3, "--out", tmp_path / "out", "--quantity-col", "n", "--price-col", "each"))
    o = read_outputs(tmp_path / "out")
    assert (o["report"]["columns"]["amount"], o["report"]["columns"]["quantity"],
            o["report"]["columns"]["price"]) == (None, "n", "each")
    assert o["assignments"].equals(expected)


def test_online_retail_headers_are_detected(tmp_path):
    cols = sample(seed=5)
    expected = baseline(tmp_path, cols)
    src = write_csv(tmp_path / "retail.csv", {
        "InvoiceNo": cols["invoice"], "StockCode": ["X"] * len(cols["amount"]), "Quantity": [4] * len(cols["amount"]),
        "InvoiceDate": cols["invoice_date"], "UnitPrice": [a / 4 for a in cols["amount"]],
        "CustomerID": cols["customer_id"]}, date_format="%m/%d/%Y %H:%M")
    ok(invoke("segment", src, "--k", 3, "--out", tmp_path / "out", "--date-format", "%m/%d/%Y %H:%M"))
    o = read_outputs(tmp_path / "out")
    assert o["report"]["columns"] == {"customer": "CustomerID", "date": "InvoiceDate", "invoice": "InvoiceNo",
                                      "amount": None, "quantity": "Quantity", "price": "UnitPrice"}
    assert o["report"]["date_format"] == "%m/%d/%Y %H:%M" and o["model"].date_format == "%m/%d/%Y %H:%M"
    assert o["report"]["rows"]["dropped"]["unparseable_date"] == 0
    assert o["assignments"].equals(expected)


# -- ids come back as read -------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_string_ids_stay_strings(tmp_path, fmt):
    ids = [f"C{i:03d}" for i in range(25)] + ["007", "42"]
    cols = sample(n_customers=len(ids), ids=ids)
    writer = write_csv if fmt == "csv" else write_parquet
    ok(invoke("segment", writer(tmp_path / f"tx.{fmt}", cols), "--k", 2, "--out", tmp_path / "out"))
    got = pq.read_table(tmp_path / "out" / "assignments.parquet")["customer_id"]
    assert pa.types.is_string(got.type)
    assert sorted(got.to_pylist()) == sorted(ids)


def test_categorical_parquet_columns(tmp_path):
    cols = sample(n_customers=20, ids=[f"c{i}" for i in range(20)])
    expected = baseline(tmp_path, cols)
    dates = [d.isoformat() for d in cols["invoice_date"]]
    categorical = {"customer_id": pa.array(cols["customer_id"]).dictionary_encode(),
                   "invoice_date": pa.array(dates).dictionary_encode()}
    src = write_parquet(tmp_path / "cat.parquet", {**cols, **categorical})
    ok(invoke("segment", src, "--k", 3, "--out", tmp_path / "out"))
    got = pq.read_table(tmp_path / "out" / "assignments.parquet")
    assert got["customer_id"].type == pa.string()
    assert got.equals(expected)


@pytest.mark.parametrize("fmt, type_", [("csv", pa.int64()), ("parquet", pa.int32()), ("parquet", pa.int64())])
def test_integer_ids_stay_integers(tmp_path, fmt, type_):
    cols = sample(n_customers=20)
    if fmt == "csv":
        src = write_csv(tmp_path / "tx.csv", cols)
    else:
        src = write_parquet(tmp_path / "tx.parquet", {**cols, "customer_id": pa.array(cols["customer_id"], type_)})
    ok(invoke("segment", src, "--k", 2, "--out", tmp_path / "out"))
    for name in ("assignments.parquet", "features.parquet"):
        got = pq.read_table(tmp_path / "out" / name)["customer_id"]
        assert got.type == type_
        assert sorted(got.to_pylist()) == list(range(1001, 1021))


# -- bad input ------------------------------------------------------------------------------

def _csv(name, text):
    def make(tmp_path):
        (tmp_path / name).write_text(text)
        return [tmp_path / name]
    return make


GOOD = "customer_id,invoice_date,amount\n1,2024-01-01,5\n2,2024-01-02,6\n3,2024-01-03,7\n"


def _good_with(*options):
    def make(tmp_path):
        return [_csv("tx.csv", GOOD)(tmp_path)[0], *options]
    return make


def _corrupt_parquet(tmp_path):
    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"customer_id": [1, 2], "invoice_date": ["2024-01-01"] * 2, "amount": [1.0, 2.0]}), good)
    data = good.read_bytes()
    good.unlink()
    (tmp_path / "tx.parquet").write_bytes(data[: len(data) // 2])
    return [tmp_path / "tx.parquet"]


def _header_only_parquet(tmp_path):
    schema = pa.schema([("customer_id", pa.int64()), ("invoice_date", pa.timestamp("s")), ("amount", pa.float64())])
    pq.write_table(schema.empty_table(), tmp_path / "tx.parquet")
    return [tmp_path / "tx.parquet"]


def _list_ids_parquet(tmp_path):
    pq.write_table(pa.table({"customer_id": [[1], [2]], "invoice_date": ["2024-01-01"] * 2, "amount": [1.0, 2.0]}),
                   tmp_path / "tx.parquet")
    return [tmp_path / "tx.parquet"]


BAD_INPUTS = {
    "missing customer column": (_csv("tx.csv", "shop,invoice_date,amount\n1,2024-01-01,5\n"),
                                ["no customer column", "--customer-col"]),
    "missing amount and price": (_csv("tx.csv", "customer_id,date,quantity\n1,2024-01-01,5\n"), ["--price-col"]),
    "explicit column not in file": (_good_with("--customer-col", "client"), ["'client'", "--customer-col"]),
    "empty file": (_csv("tx.csv", ""), ["is empty"]),
    "header-only csv": (_csv("tx.csv", "customer_id,invoice_date,amount\n"), ["no data rows"]),
    "header-only parquet": (_header_only_parquet, ["no data rows"]),
    "corrupt parquet": (_corrupt_parquet, ["cannot read", "parquet"]),
    "not parquet at all": (_csv("tx.parquet", "customer_id,date\n1,2\n"), ["cannot read"]),
    "k = 0": (_good_with("--k", "0"), ["--k must be an integer >= 1, got 0"]),
    "k above customers": (_good_with("--k", "4"), ["--k 4", "3 customers"]),
    "unknown backend": (_good_with("--backend", "tpu"), ["'tpu'", "cpu"]),
    "unknown feature": (_good_with("--features", "recency_days,loyalty"), ["'loyalty'", "recency_days"]),
    "duplicate feature": (_good_with("--features", "monetary,monetary"), ["twice"]),
    "bad as-of": (_good_with("--as-of", "2024-13-01"), ["--as-of", "YYYY-MM-DD"]),
    "as-of not as YYYY-MM-DD": (_good_with("--as-of", "20240601"), ["--as-of", "YYYY-MM-DD"]),  # was taken
    "as-of in words": (_good_with("--as-of", "yesterday"), ["--as-of"]),
    "as-of before every row": (_good_with("--as-of", "2020-01-01"), ["after_as_of: 3"]),
    "date format without codes": (_good_with("--date-format", "mm/dd/yyyy"), ["--date-format"]),
    "no parseable date": (_csv("tx.csv", "customer_id,date,amount\n1,12/01/2010 08:26,5\n"), ["--date-format"]),
    "every row dropped": (_csv("tx.csv", "customer_id,date,amount\n,2024-01-01,5\n,2024-01-02,5\n"),
                          ["all 2 rows were dropped"]),
    "text in the amount column": (_csv("tx.csv", "customer_id,date,amount\n1,2024-01-01,12 EUR\n"),
                                  ["cannot read", "'12 EUR'"]),
    "customer ids of a nested type": (_list_ids_parquet, ["customer id column", "list<"]),
    "nonexistent input": (lambda tmp_path: [tmp_path / "nope.csv"], ["does not exist"]),
    "unsupported suffix": (_csv("tx.txt", GOOD), ["allowed suffixes"]),
    "empty folder": (lambda tmp_path: [(tmp_path / "empty").mkdir() or tmp_path / "empty"], ["no input files"]),
    "second file lacks a column": (lambda tmp_path: [_csv("a.csv", GOOD)(tmp_path)[0],
                                                     _csv("b.csv", "customer_id,amount\n1,5\n")(tmp_path)[0]],
                                   ["lacks column", "'invoice_date'"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_one_error_line_nothing_written(tmp_path, case):
    make, expected = BAD_INPUTS[case]
    args = make(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    out = tmp_path / "out"
    result = invoke("segment", *args, "--out", out)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.output
    for text in expected:
        assert text in lines[0], (text, lines[0])
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    no_partial_left(tmp_path)


def test_failure_while_writing_leaves_nothing(tmp_path, monkeypatch):
    import gpuseg.pipeline

    def disk_full(path, rows):
        path.write_text("half")
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(gpuseg.pipeline, "write_segments_csv", disk_full)
    src = write_csv(tmp_path / "tx.csv", sample(n_customers=10))
    out = tmp_path / "new" / "out"
    result = invoke("segment", src, "--k", 2, "--out", out)
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert "Error: no space left to write --out" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tx.csv"]  # not even the parent folder


def test_failed_run_keeps_an_existing_output_folder(tmp_path):
    src = write_csv(tmp_path / "tx.csv", sample(n_customers=10))
    out = tmp_path / "out"
    ok(invoke("segment", src, "--k", 2, "--out", out))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    result = invoke("segment", src, "--k", 11, "--out", out)
    assert result.exit_code == 2 and "Error:" in result.output
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    no_partial_left(tmp_path)


def test_out_that_is_a_file(tmp_path):
    src = write_csv(tmp_path / "tx.csv", sample(n_customers=10))
    (tmp_path / "out").write_text("keep me")
    result = invoke("segment", src, "--k", 2, "--out", tmp_path / "out")
    assert result.exit_code == 2 and "Error:" in result.output and "not a folder" in result.output
    assert (tmp_path / "out").read_text() == "keep me"
    no_partial_left(tmp_path)


# -- demo data ---------------------------------------------------------------------------------

def test_segment_without_input_runs_the_demo(tmp_path):
    out = tmp_path / "demo"
    result = ok(invoke("segment", "--k", 3, "--out", out))
    assert "No INPUT given" in result.output and "demo" in result.output
    rep = json.loads((out / "report.json").read_text())
    assert rep["demo"] is True and rep["inputs"] == ["<demo>"]
    assert rep["rows"]["read"] == 10 * SegmentConfig().demo_customers
    assert sorted(p.name for p in out.iterdir()) == OUTPUT_FILES


def test_small_demo_through_the_library(tmp_path):
    result = run(SegmentConfig(out=tmp_path / "demo", k=4, demo_customers=2000))
    rep = result.report
    assert rep["rows"]["read"] == 20_000
    dropped = rep["rows"]["dropped"]
    assert dropped["missing_customer_id"] > 0 and dropped["bad_amount"] > 0  # the demo has a few dirty rows
    assert rep["n_customers"] + rep["customers_without_purchase"] <= 2000
    assert rep["n_customers"] > 1800
    check_outputs(tmp_path / "demo", n_customers=rep["n_customers"], k=4)
    again = run(SegmentConfig(out=tmp_path / "again", k=4, demo_customers=2000))
    assert pq.read_table(tmp_path / "again" / "assignments.parquet").equals(
        pq.read_table(tmp_path / "demo" / "assignments.parquet"))
    assert again.report["inertia"] == rep["inertia"]


# -- generate ------------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_generate_then_segment(tmp_path, suffix):
    log = tmp_path / f"tx{suffix}"
    result = ok(invoke("generate", "--transactions", "3e3", "--customers", "200", "--seed", 1, "--out", log))
    assert "3,000 rows" in result.output and "200 customers" in result.output
    t = pacsv.read_csv(log) if suffix == ".csv" else pq.read_table(log)
    assert t.num_rows == 3000 and len(set(t["customer_id"].to_pylist())) == 200
    ok(invoke("segment", log, "--k", 4, "--out", tmp_path / "seg"))
    o = check_outputs(tmp_path / "seg", n_customers=json.loads((tmp_path / "seg" / "report.json").read_text())
                      ["n_customers"], k=4)
    rep = o["report"]
    assert rep["rows"]["read"] == rep["rows"]["used"] == 3000
    assert rep["n_customers"] + rep["customers_without_purchase"] == 200
    assert rep["columns"]["quantity"] == "quantity" and rep["columns"]["price"] == "unit_price"
    assert o["assignments"]["customer_id"].type == pa.int64()


def test_generated_csv_and_parquet_segment_alike(tmp_path):
    for suffix in (".csv", ".parquet"):
        ok(invoke("generate", "--transactions", "2000", "--customers", "1e2", "-q", "--out", tmp_path / f"tx{suffix}"))
        ok(invoke("segment", tmp_path / f"tx{suffix}", "--k", 3, "-q", "--out", tmp_path / f"seg{suffix}"))
    a = pq.read_table(tmp_path / "seg.csv" / "assignments.parquet")
    b = pq.read_table(tmp_path / "seg.parquet" / "assignments.parquet")
    assert a.equals(b)


@pytest.mark.parametrize("args, expected", [
    (["--customers", "0"], "--customers must be >= 1"),
    (["--transactions", "10", "--customers", "20"], "--transactions (10) must be >= --customers (20)"),
    (["--dirty", "1.5"], "--dirty"),
    (["--transactions", "1e30", "--customers", "1"], "--transactions must be at most 1,000,000,000,000"),  # traceback
    (["--seed", "-1"], "--seed must be an integer from 0 to 4294967295"),  # was a traceback
])
def test_generate_bad_sizes(tmp_path, args, expected):
    out = tmp_path / "tx.parquet"
    result = invoke("generate", "--transactions", "100", "--customers", "10", *args, "--out", out)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:") and expected in lines[0], result.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("value", ["many", "1.5", "-3"])
def test_generate_rejects_counts_that_are_not_whole_numbers(tmp_path, value):
    result = invoke("generate", "--transactions", value, "--out", tmp_path / "tx.csv")
    assert result.exit_code == 2
    assert "Traceback" not in result.output and "whole number" in result.output
    assert list(tmp_path.iterdir()) == []


# -- help ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["segment", "generate"])
def test_help_shows_an_example(command):
    result = ok(invoke(command, "--help"))
    assert "Example" in result.output
    assert f"gpuseg {command}" in result.output


def test_version():
    from gpuseg import __version__
    result = ok(invoke("--version"))
    assert result.output.strip() == f"gpuseg {__version__}"


def test_error_text_with_brackets_is_printed_verbatim(tmp_path, monkeypatch):
    # Rich markup must not eat "[cuda12]" from the install hint.
    from gpuseg import backend as backend_mod

    def no_cupy(name):
        raise ImportError(f"No module named {name!r}")
    monkeypatch.setattr(backend_mod, "_import", no_cupy)
    result = CliRunner().invoke(app, ["segment", "--backend", "cupy", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "gpuseg[cuda12]" in result.output and "gpuseg[cuda13]" in result.output


# -- the console script ends without the interpreter's teardown, but as sys.exit would ---------

_MAIN = """
import atexit, gc, sys
gc.disable()  # only an explicit collection finds the cycle below
class Holder:  # cyclic garbage whose finalizer writes: collected before the process ends
    def __del__(self):
        print("finalizer ran", flush=True)
freeze = gc.freeze
def freeze_then_make_garbage():  # main freezes what start-up made; the run's garbage comes after
    freeze()
    h = Holder(); h.me = h
gc.freeze = freeze_then_make_garbage
atexit.register(lambda: print("exit handler ran", gc.get_freeze_count() > 0))  # buffered: flushed on the way out
sys.argv = ["gpuseg", *sys.argv[1:]]
from gpuseg.cli import main
main()
print("not reached")
"""


def _main(*args: str, cwd: Path, prelude: str = "") -> "subprocess.CompletedProcess[str]":
    """``gpuseg args`` through ``main`` in a new interpreter: this checkout's code, stdout buffered
    (so that an exit that skips the flush loses the last lines)."""
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-c", prelude + _MAIN, *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd, env=checkout_env(buffered=True))


def test_main_runs_exit_handlers_and_finalizers_and_keeps_the_exit_status(tmp_path):
    done = _main("--version", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1:] == ["finalizer ran", "exit handler ran True"]
    assert done.stdout.startswith("gpuseg ")
    bad = _main("segment", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "seg"), cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.startswith("Error: ") and "Traceback" not in bad.stderr
    assert "exit handler ran" in bad.stdout and "not reached" not in bad.stdout
    assert not (tmp_path / "seg").exists()


def test_main_writes_every_output_before_it_ends(tmp_path):
    done = _main("segment", "--out", str(tmp_path / "seg"), "-q", cwd=tmp_path)  # the demo data
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "seg" / "report.json").read_text())
    assert report["n_customers"] == pq.read_table(tmp_path / "seg" / "assignments.parquet").num_rows
    assert SegmentModel.load(tmp_path / "seg" / "model.json").k == report["k"]


def test_main_with_closed_console_streams_still_succeeds(tmp_path):
    """``gpuseg ... >&-``: Python starts with sys.stdout (or stderr) None; the run's status stays 0."""
    for stream in ("stdout", "stderr"):
        done = _main("segment", "--out", str(tmp_path / stream), "-q", cwd=tmp_path,
                     prelude=f"import sys\nsys.{stream} = None\n")
        assert done.returncode == 0, done.stderr
        assert (tmp_path / stream / "report.json").exists()


def test_exit_now_prints_a_message_status_and_exits_1(monkeypatch, capsys):
    import os
    from gpuseg import cli
    codes = []
    monkeypatch.setattr(os, "_exit", lambda code: codes.append(code))
    monkeypatch.setattr(cli.atexit, "_run_exitfuncs", lambda: codes.append("handlers"))
    monkeypatch.setattr(sys, "gettrace", lambda: None)  # as when no debugger or coverage tool runs
    monkeypatch.setattr(sys, "getprofile", lambda: None)
    cli._exit_now("stopped: a message")
    cli._exit_now(None)
    cli._exit_now(3)
    cli._exit_now(True)
    assert codes == ["handlers", 1, "handlers", 0, "handlers", 3, "handlers", True]
    assert capsys.readouterr().err == "stopped: a message\n"


def test_exit_now_exits_as_usual_under_a_profiler(monkeypatch):
    from gpuseg import cli
    monkeypatch.setattr(sys, "getprofile", lambda: object())
    with pytest.raises(SystemExit) as exc:
        cli._exit_now(4)
    assert exc.value.code == 4


def test_the_cli_process_asks_numpy_for_small_pages_unless_the_user_chose(monkeypatch):
    try:
        from numpy._core.multiarray import _set_madvise_hugepage as set_huge
    except ImportError:  # NumPy 1.x
        from numpy.core.multiarray import _set_madvise_hugepage as set_huge
    from gpuseg import cli
    before = set_huge(True)
    try:
        monkeypatch.delenv("NUMPY_MADVISE_HUGEPAGE", raising=False)
        cli._small_pages()
        assert set_huge(True) is False  # it had been switched off
        monkeypatch.setenv("NUMPY_MADVISE_HUGEPAGE", "1")
        cli._small_pages()
        assert set_huge(True) is True  # the user's choice stands
    finally:
        set_huge(before)


def test_closing_lines_name_what_was_written_in_plain_words(tmp_path):
    # "Wrote choose-k//choose_k.json", "Streamed through 1 partitions", and migration.csv left out
    # of the folder's list: found by following the README.
    cols = sample(n_customers=40)
    write_parquet(tmp_path / "tx.parquet", cols)
    out = ok(invoke("choose-k", tmp_path / "tx.parquet", "--k-min", 2, "--k-max", 3, "--out", f"{tmp_path}/ck/"))
    text = " ".join(out.output.split())
    assert "ck/choose_k.json" in text and "//" not in text.replace("://", "")
    ok(invoke("segment", tmp_path / "tx.parquet", "--k", 2, "--out", tmp_path / "a"))
    ref = ok(invoke("segment", tmp_path / "tx.parquet", "--k", 2, "--out", tmp_path / "b", "--reference-model",
                    tmp_path / "a" / "model.json"))
    assert "migration.csv" in " ".join(ref.output.split())
    scored = ok(invoke("score", tmp_path / "tx.parquet", "--model", tmp_path / "a" / "model.json", "--out",
                       tmp_path / "s", "--partitions", 1))
    assert "Streamed through 1 partition;" in " ".join(scored.output.split())
