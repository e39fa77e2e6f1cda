"""`gpuseg choose-k`: planted groups are found; the outputs; the recommendation rule; bad options."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from gpuseg.choose_k import KMetrics, recommend
from gpuseg.cli import app

runner = CliRunner()
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# (customers, orders each, days since last order, amount per order): four RFM groups far apart.
PLANTED = [(150, 1, 600, 10.0), (150, 20, 2, 500.0), (150, 6, 90, 60.0), (150, 2, 300, 2000.0)]


def planted_log(path, seed=0):
    rng = np.random.default_rng(seed)
    end = dt.date(2025, 1, 1)
    cust, day, inv, amt = [], [], [], []
    cid, invoice = 1000, 1
    for n, orders, last, amount in PLANTED:
        for _ in range(n):
            last_c = last + int(rng.integers(0, 5))
            for o in range(orders):
                cust.append(cid)
                day.append(end - dt.timedelta(days=last_c + 3 * o))
                inv.append(invoice)
                amt.append(amount * rng.uniform(0.9, 1.1))
                invoice += 1
            cid += 1
    pq.write_table(pa.table({"customer_id": cust, "order_date": day, "order_id": inv, "amount": amt}), path)


@pytest.fixture(scope="module")
def chosen(tmp_path_factory):
    root = tmp_path_factory.mktemp("ck")
    planted_log(root / "tx.parquet")
    result = runner.invoke(app, ["choose-k", str(root / "tx.parquet"), "--k-min", "2", "--k-max", "8",
                                 "--sample-size", "400", "--out", str(root / "out")])
    assert result.exit_code == 0, result.output
    return root / "out", result.output


def test_recommends_the_planted_number_of_groups(chosen):
    out, output = chosen
    r = json.loads((out / "choose_k.json").read_text())
    assert isinstance(r["recommended_k"], int) and r["recommended_k"] == len(PLANTED)
    assert r["reasons"] and "silhouette" in r["reasons"][0]
    assert "Recommended k = 4" in output


def test_json_holds_every_metric_for_every_k(chosen):
    out, _ = chosen
    r = json.loads((out / "choose_k.json").read_text())
    assert [m["k"] for m in r["metrics"]] == list(range(2, 9))
    for m in r["metrics"]:
        assert {"inertia", "silhouette", "calinski_harabasz", "davies_bouldin", "stability", "n_iter"} <= set(m)
        assert -1 <= m["silhouette"] <= 1 and 0 <= m["stability"] <= 1 + 1e-12
    inertia = [m["inertia"] for m in r["metrics"]]
    assert all(b < a for a, b in zip(inertia, inertia[1:]))  # more clusters, tighter
    at4 = r["metrics"][2]
    assert at4["stability"] == pytest.approx(1.0) and at4["silhouette"] > 0.7
    assert r["sample_size"] == 400 and r["runs"] == 3 and r["n_customers"] == 600


def test_plot_is_written(chosen):
    out, _ = chosen
    assert (out / "choose_k.png").read_bytes()[:8] == PNG_MAGIC


def m(k, sil, stab, ch=1.0, db=1.0, inertia=10.0):
    return KMetrics(k=k, inertia=inertia, silhouette=sil, calinski_harabasz=ch, davies_bouldin=db, stability=stab,
                    n_iter=3)


def test_rule_prefers_stable_k_then_silhouette_then_smaller_k():
    # k=3 has the best silhouette but is unstable; k=5 wins among the stable ones.
    k, reasons = recommend([m(2, 0.5, 0.9), m(3, 0.9, 0.5), m(4, 0.6, 0.95), m(5, 0.7, 0.85)], runs=3)
    assert k == 5 and "stable" in reasons[0]
    assert recommend([m(2, 0.6, 0.9), m(3, 0.6, 0.9)], runs=3)[0] == 2  # tie -> smaller k
    k, reasons = recommend([m(2, 0.4, 0.1), m(3, 0.5, 0.2)], runs=3)  # none stable: best silhouette, said so
    assert k == 3 and "no k reached" in reasons[0]


@pytest.mark.parametrize("args, message", [
    (["--k-min", "1"], "--k-min must be an integer >= 2"),
    (["--k-min", "0"], "--k-min must be an integer >= 2"),  # was "--k must be an integer >= 1": no such option
    (["--k-min", "-2"], "--k-min must be an integer >= 2"),
    (["--k-min", "5", "--k-max", "3"], "--k-max (3) must be >= --k-min (5)"),
    (["--k-max", "900"], "--k-max 900 needs more customers"),
    (["--runs", "0"], "--runs must be an integer >= 1"),
    # Silhouettes of 10 sampled customers in 11 or 12 clusters (2 in 2: all 0) chose k; an audit found it.
    (["--k-max", "12", "--sample-size", "10"], "--sample-size 10 must be above --k-max 12"),
    (["--k-min", "2", "--k-max", "2", "--sample-size", "2"], "allowed: --sample-size >= 3"),
])
def test_bad_options(tmp_path, args, message):
    planted_log(tmp_path / "tx.parquet")
    result = runner.invoke(app, ["choose-k", str(tmp_path / "tx.parquet"), "--out", str(tmp_path / "o"), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o").exists()
