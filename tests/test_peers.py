"""The benchmark peers compute exactly gpuseg's features, on tidy and on messy logs."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import gpuseg
from gpuseg.features import _NET_RTOL
from gpuseg.peers import NET_RTOL, RETAIL_COLUMNS, PeerColumns, run_peer, transform

PEERS = ["polars+sklearn", "pandas+sklearn"]
START = dt.datetime(2024, 1, 1, 9, 30)


def _retail_table(rng: np.random.Generator, n_customers: int = 150, n_invoices: int = 600) -> pa.Table:
    """A retail-shaped log (text invoices, float ids with gaps) with every awkward case planted."""
    rows: list[tuple] = []  # (invoice, quantity, date, price, customer)
    for i in range(n_invoices):
        cust = float(1000 + rng.integers(n_customers))
        when = START + dt.timedelta(days=int(rng.integers(0, 300)), minutes=int(rng.integers(0, 600)))
        cancel = rng.random() < 0.1
        for _ in range(int(rng.integers(1, 5))):
            q = int(rng.integers(1, 12))
            rows.append((("C" if cancel else "") + str(500000 + i), -q if cancel else q, when,
                         float(np.round(rng.lognormal(1, 1), 2)), cust))
    late = START + dt.timedelta(days=400)
    rows += [
        # A fully returned order (nets 5.6e-17, float residue): not a purchase.
        ("600001", 1, START + dt.timedelta(days=10), 0.1, 1001.0),
        ("600001", 1, START + dt.timedelta(days=10), 0.2, 1001.0),
        ("600001", -1, START + dt.timedelta(days=10), 0.3, 1001.0),
        # A customer whose only orders are returns: left out.
        ("C600002", -2, START + dt.timedelta(days=20), 5.0, 9001.0),
        # The latest used line is a cancellation of a non-purchasing customer: as_of still comes from it.
        ("C600003", -1, START + dt.timedelta(days=350, hours=20), 4.0, 9002.0),
        # Later lines that are dropped must not move as_of.
        ("600004", 3, late, 2.0, None),                       # missing customer
        ("600005", 3, late, 2.0, float("nan")),               # NaN customer id
        ("600006", 3, late, None, 1002.0),                    # missing price
        ("600007", 3, late, float("inf"), 1002.0),            # infinite amount
        ("600008", 3, None, 2.0, 1002.0),                     # missing date
        # One invoice id shared by two customers: two orders.
        ("600009", 2, START + dt.timedelta(days=30), 3.0, 1003.0),
        ("600009", 2, START + dt.timedelta(days=31), 3.0, 1004.0),
        # Lines without an invoice: one order per customer-day.
        (None, 1, START + dt.timedelta(days=40, hours=1), 7.0, 1005.0),
        (None, 1, START + dt.timedelta(days=40, hours=5), 7.0, 1005.0),
        (None, 1, START + dt.timedelta(days=41), 7.0, 1005.0),
        # An order spanning midnight: its day is the earliest.
        ("600010", 1, START + dt.timedelta(days=50, hours=14), 9.0, 1006.0),
        ("600010", 1, START + dt.timedelta(days=51, hours=1), 9.0, 1006.0),
    ]
    order = rng.permutation(len(rows))
    rows = [rows[i] for i in order]
    inv, qty, date, price, cust = zip(*rows)
    return pa.table({
        "Invoice": pa.array(inv, pa.string()),
        "Quantity": pa.array(qty, pa.int64()),
        "InvoiceDate": pa.array(date, pa.timestamp("us")),
        "Price": pa.array(price, pa.float64()),
        "Customer ID": pa.array(cust, pa.float64()),
        "Country": pa.array(["United Kingdom"] * len(rows)),
    })


@pytest.fixture(scope="module")
def retail_log(tmp_path_factory):
    path = tmp_path_factory.mktemp("peers") / "retail.parquet"
    pq.write_table(_retail_table(np.random.default_rng(7)), path, row_group_size=400)
    return path


@pytest.fixture(scope="module")
def generated_log(tmp_path_factory):
    from gpuseg.generate import write_log
    path = tmp_path_factory.mktemp("peers") / "tx.parquet"
    write_log(path, 30_000, 3_000, seed=3, dirty=0.01)
    return path


def _gpuseg_features(path, out, columns=None) -> dict[str, np.ndarray]:
    gpuseg.segment(str(path), out=out, k=3, backend="cpu", columns=columns or {})
    t = pq.read_table(out / "features.parquet")
    return {c: t.column(c).to_numpy() for c in ("customer_id", "recency_days", "frequency", "monetary")}


def _assert_same_features(ours: dict[str, np.ndarray], peer_out) -> None:
    t = pq.read_table(peer_out)
    np.testing.assert_array_equal(t.column("customer_id").to_numpy(), ours["customer_id"])
    for c in ("recency_days", "frequency"):
        np.testing.assert_array_equal(t.column(c).to_numpy(), ours[c], err_msg=c)
    np.testing.assert_allclose(t.column("monetary").to_numpy(), ours["monetary"], rtol=0, atol=1e-9)


def test_rtol_is_gpusegs():
    assert NET_RTOL == _NET_RTOL


@pytest.mark.parametrize("peer", PEERS)
def test_messy_retail_log_gives_gpusegs_features(peer, retail_log, tmp_path):
    pytest.importorskip(peer.split("+")[0])
    columns = {"customer": "Customer ID", "date": "InvoiceDate", "invoice": "Invoice",
               "quantity": "Quantity", "price": "Price"}
    ours = _gpuseg_features(retail_log, tmp_path / "gpuseg", columns)
    # The planted cases are where we think they are.
    ids = list(ours["customer_id"])
    assert 9001.0 not in ids and 9002.0 not in ids
    assert ours["frequency"][ids.index(1005.0)] >= 2
    run = run_peer(peer, retail_log, tmp_path / "peer.parquet", k=3, columns=RETAIL_COLUMNS)
    _assert_same_features(ours, tmp_path / "peer.parquet")
    assert run.import_s >= 0 and run.compute_s > 0
    assert run.labels.dtype == np.int32 and len(run.labels) == len(ids)


@pytest.mark.parametrize("peer", PEERS)
def test_generator_log_gives_gpusegs_features(peer, generated_log, tmp_path):
    pytest.importorskip(peer.split("+")[0])
    ours = _gpuseg_features(generated_log, tmp_path / "gpuseg")
    run_peer(peer, generated_log, tmp_path / "peer.parquet", k=3)  # gpuseg's column names by default
    _assert_same_features(ours, tmp_path / "peer.parquet")


@pytest.mark.parametrize("peer", PEERS)
def test_amount_column_and_no_invoice(peer, tmp_path):
    """An amount column instead of quantity × price, and no invoice column: orders are customer-days."""
    pytest.importorskip(peer.split("+")[0])
    rng = np.random.default_rng(1)
    n = 3000
    day = START + np.array([dt.timedelta(days=int(d), hours=int(h))
                            for d, h in zip(rng.integers(0, 200, n), rng.integers(0, 20, n))])
    amount = np.round(rng.normal(20, 30, n), 2)
    path = tmp_path / "amounts.parquet"
    pq.write_table(pa.table({"cust": pa.array(rng.integers(0, 300, n)), "when": pa.array(list(day), pa.timestamp("s")),
                             "value": pa.array(amount)}), path)
    ours = _gpuseg_features(path, tmp_path / "gpuseg", {"customer": "cust", "date": "when", "amount": "value"})
    run_peer(peer, path, tmp_path / "peer.parquet", k=3,
             columns={"customer": "cust", "date": "when", "amount": "value", "invoice": None})
    _assert_same_features(ours, tmp_path / "peer.parquet")


def test_peer_labels_are_sklearn_kmeans_on_gpusegs_scaled_features(retail_log, tmp_path):
    """The transform is gpuseg's scaler, so the peer clusters the same matrix gpuseg scales."""
    pytest.importorskip("polars")
    from gpuseg.model import SegmentModel
    from gpuseg.scaling import Scaler
    out = tmp_path / "gpuseg"
    ours = _gpuseg_features(retail_log, out, {"customer": "Customer ID", "date": "InvoiceDate",
                                              "invoice": "Invoice", "quantity": "Quantity", "price": "Price"})
    X = np.stack([ours[c].astype(np.float64) for c in ("recency_days", "frequency", "monetary")], axis=1)
    model = SegmentModel.load(out / "model.json")
    np.testing.assert_allclose(transform(X), Scaler.fit(X, model.features).transform(X), rtol=1e-12, atol=1e-12)


def test_columns_from_mapping():
    from gpuseg.columns import ColumnMapping
    cm = ColumnMapping(customer="c", date="d", invoice=None, amount="a")
    assert PeerColumns.of(cm) == PeerColumns(customer="c", date="d", invoice=None, quantity=None, price=None,
                                             amount="a")
    assert PeerColumns.of(None) == PeerColumns()
    with pytest.raises(ValueError, match="unknown column roles"):
        PeerColumns.of({"client": "c"})
    with pytest.raises(ValueError, match="amount column"):
        PeerColumns(quantity=None)


def test_skip_env_marks_a_peer_unavailable(monkeypatch):
    from gpuseg.peers import SKIP_ENV, why_unavailable
    monkeypatch.setenv(SKIP_ENV, "pandas+sklearn")
    assert "skipped" in why_unavailable("pandas+sklearn")
    if pytest.importorskip("polars"):
        assert why_unavailable("polars+sklearn") is None
