"""Ingest: per-batch sums merged across batches give the features of all lines at once."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from gpuseg import cleaning as cleaning_module
from gpuseg import coding
from gpuseg import ingest as ingest_module
from gpuseg.backend import to_numpy
from gpuseg.cleaning import clean
from gpuseg.columns import ColumnMapping
from gpuseg.errors import GpusegError
from gpuseg.features import compute_features
from gpuseg.ingest import ingest

MAP = ColumnMapping(customer="customer_id", date="date", invoice="invoice", amount="amount")


def messy_batches(rng, n_batches=4, rows=400, text_ids=False, long_text=False, own_invoices=False):
    """Batches with every drop reason, returns, invoices shared by two customers (unless
    ``own_invoices``: each invoice has one customer, the usual case), invoices and
    customers spanning batches, and lines without an invoice."""
    out = []
    for b in range(n_batches):
        cust = rng.integers(0, 60, rows)
        inv = rng.integers(0, 150, rows)  # the same invoice numbers recur in every batch
        if own_invoices:
            inv = cust * 1000 + rng.integers(0, 4, rows)
        ids: list = [int(c) for c in cust]
        if text_ids:
            pad = "customer-" + "0" * 60 if long_text else "cust-000"  # over KEY_BYTES_MAX / 9-16 bytes
            ids = [f"{' ' if i % 7 == 0 else ''}{pad}{c}" for i, c in enumerate(cust)]
        invoices: list = [f"{'C' if i % 11 == 0 else ''}{v}" for i, v in enumerate(inv)]
        days = [(dt.date(2024, 1, 1) + dt.timedelta(days=int(d))).isoformat() for d in rng.integers(0, 90, rows)]
        amount = np.round(rng.normal(20, 30, rows), 2).tolist()
        for i in range(rows):
            r = (i * 13 + b) % 50
            if r == 0:
                ids[i] = None
            elif r == 1:
                days[i] = "2024-02-30"
            elif r == 2:
                amount[i] = None
            elif r == 3:
                amount[i] = float("inf")
            elif r in (4, 5):
                invoices[i] = None
            elif r == 6:
                invoices[i] = "  "
        out.append(pa.record_batch({"customer_id": pa.array(ids, pa.string() if text_ids else pa.int64()),
                                    "date": days, "invoice": invoices, "amount": amount}))
    return out


def reference(batches, mapping=MAP, as_of=None):
    tx = clean([(Path("x.parquet"), iter(batches))], mapping, as_of=as_of)
    feats = compute_features(tx.customer, tx.day, tx.amount, tx.order, tx.n_customers, tx.n_orders, tx.as_of)
    return tx, feats


def assert_same(got, tx, feats):
    assert got.rows.to_dict() == tx.rows.to_dict()
    assert got.as_of == tx.as_of
    assert got.n_orders == tx.n_orders
    ids = got.customer_ids.take(pa.array(to_numpy(got.features.customer)))
    assert ids.equals(tx.customer_ids.take(pa.array(to_numpy(feats.customer))))
    assert got.features.n_without_purchase == feats.n_without_purchase
    for name, want in feats.columns.items():
        have, want = to_numpy(got.features.columns[name]), to_numpy(want)
        assert have.dtype == want.dtype, name
        if want.dtype.kind in "iu":
            assert np.array_equal(have, want), name
        else:  # sums added per batch, then across batches: equal to rounding
            np.testing.assert_allclose(have, want, rtol=1e-12, atol=1e-9, err_msg=name)


@pytest.mark.parametrize("own_invoices", [False, True])
@pytest.mark.parametrize("text_ids", [False, True])
@pytest.mark.parametrize("workers", [1, 3])
def test_merged_batches_equal_all_lines_at_once(rng, text_ids, workers, own_invoices):
    batches = messy_batches(rng, text_ids=text_ids, own_invoices=own_invoices)
    tx, feats = reference(batches)
    assert tx.rows.dropped["missing_customer_id"] and tx.rows.dropped["unparseable_date"] and \
        tx.rows.dropped["bad_amount"]
    got = ingest(((Path("x.parquet"), b) for b in batches), MAP, workers=workers)
    assert_same(got, tx, feats)


@pytest.mark.parametrize("own_invoices", [False, True])
def test_all_at_once_merge_equals_bucket_merge(rng, monkeypatch, own_invoices):
    batches = messy_batches(rng, text_ids=True, own_invoices=own_invoices)
    tx, feats = reference(batches)
    bucketed = ingest(((Path("x.parquet"), b) for b in batches), MAP)
    monkeypatch.setattr(ingest_module, "_bucketize", lambda batch: None)
    at_once = ingest(((Path("x.parquet"), b) for b in batches), MAP)
    assert_same(bucketed, tx, feats)
    assert_same(at_once, tx, feats)


def test_long_text_ids_and_as_of(rng):
    batches = messy_batches(rng, text_ids=True, long_text=True)
    as_of = dt.date(2024, 3, 1)
    tx, feats = reference(batches, as_of=as_of)
    assert tx.rows.dropped["after_as_of"] > 0
    assert_same(ingest(((Path("x.parquet"), b) for b in batches), MAP, as_of=as_of, workers=2), tx, feats)


def test_non_ascii_text_ids_merge_like_all_lines_at_once(rng):
    """Text ids and invoices that begin with a non-ASCII letter have byte keys past 2^63 in a
    narrow span: the merge codes them like any others (they once overflowed its packed sort)."""
    batches = []
    for b in messy_batches(rng, text_ids=True, own_invoices=True):
        ids = [None if v is None else "Ü" + v.strip()[-3:] for v in b.column("customer_id").to_pylist()]
        invoices = [None if v is None else "Ö" + v for v in b.column("invoice").to_pylist()]
        batches.append(b.set_column(0, "customer_id", pa.array(ids, pa.string()))
                        .set_column(2, "invoice", pa.array(invoices, pa.string())))
    tx, feats = reference(batches)
    assert_same(ingest(((Path("x.parquet"), b) for b in batches), MAP, workers=2), tx, feats)


def test_without_an_invoice_column_orders_are_customer_days(rng):
    mapping = ColumnMapping(customer="customer_id", date="date", amount="amount")
    batches = [b.drop_columns(["invoice"]) for b in messy_batches(rng)]
    tx, feats = reference(batches, mapping)
    assert_same(ingest(((Path("x.parquet"), b) for b in batches), mapping, workers=2), tx, feats)


def test_one_batch_is_bit_identical(rng):
    batch = pa.concat_batches(messy_batches(rng)) if hasattr(pa, "concat_batches") else \
        pa.Table.from_batches(messy_batches(rng)).combine_chunks().to_batches()[0]
    tx, feats = reference([batch])
    got = ingest([(Path("x.parquet"), batch)], MAP)
    for name, want in feats.columns.items():
        assert np.array_equal(got.features.columns[name], want), name


def test_csv_integer_text_ids_become_integers(rng):
    batches = [pa.record_batch({"customer_id": [" 12", "3", "12"], "date": ["2024-01-02"] * 3,
                                "invoice": ["a", "b", "a"], "amount": [1.0, 2.0, 3.0]}),
               pa.record_batch({"customer_id": ["7"], "date": ["2024-01-03"], "invoice": ["c"], "amount": [4.0]})]
    got = ingest(((Path("x.csv"), b) for b in batches), MAP)
    assert got.customer_ids.type == pa.int64()
    assert got.customer_ids.to_pylist() == [3, 7, 12]
    assert to_numpy(got.features.columns["monetary"]).tolist() == [2.0, 4.0, 4.0]


def test_device_cleaning_equals_host_cleaning(rng, device_cp):
    """The whole front half on the device: same drop counts, codes and features as on the host."""
    cp = device_cp
    for text_ids, own_invoices in ((False, False), (True, False), (False, True), (True, True)):
        batches = messy_batches(rng, text_ids=text_ids, own_invoices=own_invoices)
        host = ingest(((Path("x.parquet"), b) for b in batches), MAP, workers=2)
        device = ingest(((Path("x.parquet"), b) for b in batches), MAP, xp=cp, workers=2)
        assert isinstance(device.features.columns["monetary"], cp.ndarray)
        assert device.rows.to_dict() == host.rows.to_dict()
        assert device.n_orders == host.n_orders and device.as_of == host.as_of
        ids = lambda r: r.customer_ids.take(pa.array(to_numpy(r.features.customer)))  # noqa: E731
        assert ids(device).equals(ids(host))
        for name, want in host.features.columns.items():
            np.testing.assert_allclose(to_numpy(device.features.columns[name]), want, rtol=1e-12, atol=1e-9)


def test_id_types_that_differ_between_batches_become_text(rng):
    first, second = messy_batches(rng, n_batches=2)
    columns = {name: second.column(name) for name in second.schema.names}
    columns["customer_id"] = pa.array([None if v is None else str(v) for v in second.column(0).to_pylist()])
    columns["invoice"] = pa.array([None if v is None or not v.strip().isdigit() else int(v)
                                   for v in second.column("invoice").to_pylist()], pa.int64())
    batches = [first, pa.record_batch(columns)]
    tx, feats = reference(batches)
    assert pa.types.is_string(tx.customer_ids.type)
    assert_same(ingest(((Path("x.parquet"), b) for b in batches), MAP, workers=2), tx, feats)


def test_decimal_ids_are_whole_numbers_or_their_text(rng):
    """A database's NUMBER(10) ids arrive as decimals: whole ones become integers, others
    their text; both merge across batches like ids of those types (they crashed the merge)."""
    import decimal

    whole, fractional = messy_batches(rng, n_batches=2)

    def as_decimal(batch, scale, bump):
        cols = {name: batch.column(name) for name in batch.schema.names}
        cols["customer_id"] = pa.array([None if v is None else decimal.Decimal(v) + bump
                                        for v in batch.column("customer_id").to_pylist()], pa.decimal128(12, scale))
        return pa.record_batch(cols)

    as_int = [as_decimal(whole, 0, 0), as_decimal(fractional, 2, 0)]  # 7.00 is 7
    got = ingest(((Path("x.parquet"), b) for b in as_int), MAP, workers=2)
    assert got.customer_ids.type == pa.int64()
    assert_same(got, *reference([whole, fractional]))
    half = as_decimal(fractional, 1, decimal.Decimal("0.5"))  # 7.5: not a whole number, so its text
    got = ingest(((Path("x.parquet"), b) for b in [as_int[0], half]), MAP, workers=2)
    assert pa.types.is_string(got.customer_ids.type)

    def as_text(batch, suffix):
        cols = {name: batch.column(name) for name in batch.schema.names}
        cols["customer_id"] = pa.array([None if v is None else f"{v}{suffix}"
                                        for v in batch.column("customer_id").to_pylist()], pa.string())
        return pa.record_batch(cols)

    assert_same(got, *reference([as_text(whole, ""), as_text(fractional, ".5")]))


def test_merge_lets_each_bucket_of_each_batch_go(rng):
    """Bucket by bucket, the batches' sums are let go as they are merged, and the merged sums
    as their features are made: memory holds about one copy, not the two added."""
    from gpuseg.cleaning import Cleaner
    batches = messy_batches(rng, own_invoices=True)
    cleaner = Cleaner(MAP, encode_text=True)
    summed = list(cleaner.map(((Path("x.parquet"), b) for b in batches), then=ingest_module.sum_batch))
    held = [b.buckets for b in summed]
    assert all(b is not None and any(part is not None for part in b.parts) for b in held)
    merged = ingest_module.merge(summed, cleaner.ids_to_int, workers=2)
    assert summed == [] and all(part is None for b in held for part in b.parts)
    buckets = merged.buckets
    merged.features(cleaner.as_of, workers=2)
    assert merged.buckets is None and all(b is None for b in buckets)


def test_without_an_invoice_column_no_invoice_is_kept(rng):
    mapping = ColumnMapping(customer="customer_id", date="date", amount="amount")
    batch = messy_batches(rng, n_batches=1)[0].drop_columns(["invoice"])
    from gpuseg.cleaning import clean_batch
    kept, _ = clean_batch(Path("x.parquet"), batch, mapping, encode_text=True)
    parts = [p for p in ingest_module.sum_batch(kept).buckets.parts if len(p.key)]
    assert parts and all(p.invoice_key is None and p.has_invoice is None for p in parts)
    assert all(p.order_customer.dtype == np.int32 for p in parts)


@pytest.mark.parametrize("text_ids", [False, True])
def test_customers_renumbered_in_bucket_order_keep_every_rows_id(rng, text_ids):
    from gpuseg.cleaning import clean_batch
    mapping = ColumnMapping(customer="customer_id", date="date", amount="amount")
    batch = messy_batches(rng, n_batches=1, rows=3000, text_ids=text_ids)[0].drop_columns(["invoice"])
    kept, _ = clean_batch(Path("x.parquet"), batch, mapping, encode_text=True)
    customer, customers, _, _ = ingest_module._local(kept.ids, np)
    ids = lambda codes, c: (c.dictionary if text_ids else c).take(pa.array(codes))  # noqa: E731
    before = ids(customer, customers)
    customer2, customers2 = ingest_module._in_bucket_order(customer, customers)
    assert ids(customer2, customers2).equals(before)  # every row keeps its id
    bucket = ingest_module._bucket_of(ingest_module._id_keys(customers2))
    assert ingest_module._bucket_order(bucket) is None and len(np.unique(bucket)) > 1  # grouped by bucket


@pytest.mark.parametrize("id_type", ["int", "float", "negative float"])
def test_ids_put_in_order_range_by_range_on_the_pool(rng, monkeypatch, id_type):
    """Numeric ids, negative floats too (coded as numbers, not by their bits), come out of
    the buckets ascending and are put in order range by range (_merge_runs): the
    customers of all lines at once, in id order."""
    batches = messy_batches(rng, rows=2000)
    if id_type != "int":
        shift = -30.5 if id_type == "negative float" else 0.25
        batches = [b.set_column(0, "customer_id", pa.array([None if v is None else v + shift for v in
                                                            b.column(0).to_pylist()], pa.float64()))
                   for b in batches]
    used = []
    real = ingest_module._merge_runs
    monkeypatch.setattr(ingest_module, "_merge_runs", lambda *a: used.append(1) or real(*a))
    got = ingest(((Path("x.parquet"), b) for b in batches), MAP, workers=2)
    assert_same(got, *reference(batches))
    assert used
    import pyarrow.compute as pc
    assert pc.all(pc.less(got.customer_ids[:-1], got.customer_ids[1:])).as_py()


def test_few_customers_keep_the_feature_types(rng):
    """Most buckets are empty with a handful of customers; an empty bucket's sums are int64
    (bincount of nothing), which must not set the type of monetary."""
    ids = np.arange(1, 400)
    ids = ids[ingest_module._bucket_of(ids) != 0][:5]  # bucket 0, the first, left empty
    batch = pa.record_batch({"customer_id": pa.array(np.repeat(ids, 3)), "date": ["2024-01-02"] * 15,
                             "invoice": [f"i{i // 2}" for i in range(15)],
                             "amount": np.round(rng.normal(20, 5, 15), 2)})
    got = ingest([(Path("x.parquet"), batch)], MAP, workers=2)
    assert_same(got, *reference([batch]))
    assert got.features.columns["monetary"].dtype == np.float64


def test_buckets_merged_in_groups_give_the_same_features_bit_for_bit(rng, monkeypatch):
    """Buckets taken together in one merge task (a bucket alone, a few, the most the pool
    allows) give identical features and ids: customers never share buckets, and each
    one's sums are still added in batch order."""
    batches = messy_batches(rng, rows=3000, text_ids=True)
    real = ingest_module._bucket_groups
    runs = []
    for group_orders in (1, 500, 1 << 30):
        groups: list = []
        monkeypatch.setattr(ingest_module, "_GROUP_ORDERS", group_orders)
        monkeypatch.setattr(ingest_module, "_bucket_groups", lambda *a: groups.append(real(*a)) or groups[-1])
        got = ingest(((Path("x.parquet"), b) for b in batches), MAP, workers=2)
        runs.append((len(groups[0]), got))
    (n_alone, alone), (n_few, few), (n_most, most) = runs
    assert n_alone > n_few > n_most >= 8  # 8: four tasks a thread
    for got in (few, most):
        assert got.customer_ids.equals(alone.customer_ids)
        assert np.array_equal(got.features.customer, alone.features.customer)
        for name, col in alone.features.columns.items():
            assert np.array_equal(got.features.columns[name], col, equal_nan=True), name


def test_bucket_groups_cover_every_bucket_once_in_order(rng):
    from gpuseg.cleaning import Cleaner
    cleaner = Cleaner(MAP, encode_text=True)
    summed = list(cleaner.map(((Path("x.parquet"), b) for b in messy_batches(rng, rows=3000, own_invoices=True)),
                              then=ingest_module.sum_batch))
    buckets = [b.buckets for b in summed]
    sizes = np.sum([[len(p.order_day) for p in b.parts] for b in buckets], axis=0)
    for workers in (1, 2, 16):
        groups = ingest_module._bucket_groups(buckets, workers)
        assert [p for g in groups for p in g] == list(range(1 << ingest_module._BUCKET_BITS))
        target = min(ingest_module._GROUP_ORDERS, sizes.sum() // (4 * workers))
        held = [int(sizes[g.start:g.stop].sum()) for g in groups]
        assert all(h >= target for h in held[:-1])  # every group but the last reaches the target
        assert all(h - sizes[g.stop - 1] < target for h, g in zip(held, groups))  # and no more buckets than that
        assert len(groups) >= min(4 * workers, np.count_nonzero(sizes)) // 2


def test_merged_sums_add_each_batchs_partial_in_batch_order(rng):
    """A customer's merged sum is exactly 0.0 + batch 0's partial + batch 1's + ...: the order
    that keeps results the same whatever the bucket grouping or the thread count."""
    from gpuseg.cleaning import Cleaner
    batches = messy_batches(rng, n_batches=6, rows=3000, own_invoices=True)
    cleaner = Cleaner(MAP, encode_text=True)
    summed = list(cleaner.map(((Path("x.parquet"), b) for b in batches), then=ingest_module.sum_batch))
    expected: dict = {}
    for b in summed:
        for part in b.buckets.parts:
            for key, value in zip(part.key.tolist(), part.monetary.tolist()):
                expected[key] = expected.get(key, 0.0) + value
    merged = ingest_module.merge(summed, cleaner.ids_to_int, workers=2)
    got: dict = {}
    for ids, sums in merged.buckets:
        got.update(zip(np.asarray(ids).tolist(), sums.monetary.tolist()))
    assert len(got) == len(expected) > 50
    assert got == expected


def export_batches(rng, n_batches=4, orders=120, shared=False):
    """A log as retailers export it: each invoice's lines together (some invoices run on into
    the next batch), one customer per invoice, returns as 'C' invoices, a few lines dropped
    inside runs; with ``shared`` one invoice's run has a second customer."""
    lines = []
    for o in range(n_batches * orders):
        cust = float(rng.integers(0, 80)) * 3  # whole-number float ids, as pandas exports them
        day = dt.date(2024, 1, 1) + dt.timedelta(days=int(rng.integers(0, 90)))
        invoice = f"{'C' if o % 9 == 0 else ''}{500000 + o}"
        for _ in range(int(rng.integers(1, 8))):
            amount = float(np.round(rng.normal(20, 30), 2)) * (-1 if invoice[0] == "C" else 1)
            line_day = day + dt.timedelta(days=int(rng.random() < 0.2))  # an order's day: its earliest line's
            lines.append([cust, line_day.isoformat(), invoice, None if rng.random() < 0.03 else amount])
    if shared:  # the second line of a kept run of lines gets another customer
        at = next(i for i in range(len(lines) // 2, len(lines) - 1) if lines[i][2] == lines[i + 1][2]
                  and lines[i][3] is not None and lines[i + 1][3] is not None)
        lines[at + 1][0] = 7.0
    rows = -(-len(lines) // n_batches)
    return [pa.record_batch({name: [line[j] for line in lines[b * rows:(b + 1) * rows]]
                             for j, name in enumerate(["customer_id", "date", "invoice", "amount"])})
            for b in range(n_batches)]


@pytest.mark.parametrize("shared", [False, True])
def test_invoices_in_runs_are_summed_by_run(rng, monkeypatch, shared):
    """Invoices read as runs of lines are summed by run (an order's day is its run's first line's,
    lowered where a later line is earlier), give the features of all lines at once, and the same
    bits as the general path; a run with a second customer takes the line-by-line path."""
    batches = export_batches(rng, shared=shared)
    tx, feats = reference(batches)
    assert tx.rows.dropped["bad_amount"]
    runs_seen = []
    real_sum_lines = ingest_module.sum_lines
    monkeypatch.setattr(ingest_module, "sum_lines",
                        lambda *a: runs_seen.append(len(a) > 6 and a[6] is not None) or real_sum_lines(*a))
    got = ingest(((Path("x.parquet"), b) for b in batches), MAP, workers=2)
    assert_same(got, tx, feats)
    assert runs_seen.count(True) == len(batches) - shared  # the shared invoice's batch: by line
    monkeypatch.setattr(coding, "_distinct", lambda keys: False)  # no runs known: every batch the general way
    general = ingest(((Path("x.parquet"), b) for b in batches), MAP, workers=2)
    assert not any(runs_seen[len(batches):])
    for name, col in got.features.columns.items():
        assert to_numpy(col).tobytes() == to_numpy(general.features.columns[name]).tobytes(), name


@pytest.mark.parametrize("dtype", [np.int64, np.uint32, np.float64])
def test_bucket_codes_number_customers_in_bucket_order(rng, dtype):
    """One sort codes the orders' customers by bucket, then by value: each row keeps its id,
    the ids come grouped by bucket and ascending within one, and the rows come grouped the
    same way (in row order within a customer)."""
    values = rng.integers(0 if dtype == np.uint32 else -500, 5000, 3000).astype(dtype)
    if dtype == np.float64:
        values[::97] = -0.0  # one id with 0.0
    codes, uniques, rows = ingest_module._bucket_codes(values)
    assert np.array_equal(uniques[codes], values) and len(np.unique(uniques)) == len(uniques)
    bucket = ingest_module._bucket_of(ingest_module._id_keys(pa.array(uniques)))
    assert ingest_module._bucket_order(bucket) is None and len(np.unique(bucket)) > 1
    for b in np.unique(bucket):
        assert (np.diff(uniques[bucket == b]) > 0).all()
    assert sorted(rows.tolist()) == list(range(len(values)))
    in_order = codes[rows]
    assert (np.diff(in_order) >= 0).all() and (np.diff(rows)[np.diff(in_order) == 0] > 0).all()
    # What it cannot code: fractions, spans past the bucket and row bits, uint64 past int64.
    assert ingest_module._bucket_codes(np.array([1.0, 2.5])) is None
    assert ingest_module._bucket_codes(np.array([0, 2**60], np.int64)) is None
    assert ingest_module._bucket_codes(np.array([1, 2**63], np.uint64)) is None


def test_customers_coded_in_bucket_order_give_the_same_bits(rng, monkeypatch):
    """Orders grouped by the customers' coding, not sorted by bucket again: the same parts
    (customers in the same order, the same orders) and the same features, bit for bit."""
    from gpuseg.cleaning import Cleaner
    batches = export_batches(rng)
    coded = []
    real = ingest_module._bucket_codes
    monkeypatch.setattr(ingest_module, "_bucket_codes", lambda values: coded.append(1) or real(values))

    def run() -> tuple:
        got = ingest(((Path("x.parquet"), b) for b in batches), MAP, workers=2)
        summed = Cleaner(MAP, encode_text=True).map([(Path("x.parquet"), b) for b in batches], 1,
                                                    then=ingest_module.sum_batch)
        return got, [part for b in summed for part in b.buckets.parts]

    got, parts = run()
    assert len(coded) == 2 * len(batches)
    monkeypatch.setattr(ingest_module, "_bucket_codes", lambda values: None)
    sorted_got, sorted_parts = run()
    for name, col in got.features.columns.items():
        assert to_numpy(col).tobytes() == to_numpy(sorted_got.features.columns[name]).tobytes(), name
    def orders(part: ingest_module.Part) -> list:
        return sorted(zip(part.invoice_key.tolist(), part.order_customer.tolist(), part.order_net.tolist()))

    for a, b in zip(parts, sorted_parts):
        assert a.key.tobytes() == b.key.tobytes() and a.monetary.tobytes() == b.monetary.tobytes()
        assert orders(a) == orders(b)


def test_row_groups_decoded_ahead_while_pandas_imports(monkeypatch):
    """While pandas is being imported the workers wait for it, so the submitting thread decodes
    the next row groups itself: results stay in input order, and a read that fails there
    still fails in input order, after the items before it."""
    import threading

    monkeypatch.setattr(cleaning_module, "_start_pandas_import", lambda: None)
    monkeypatch.setattr(cleaning_module, "_importing_pandas", lambda: True)
    main = threading.get_ident()
    decoded_by: dict[int, bool] = {}

    def reader(i: int):
        def read():
            decoded_by[i] = threading.get_ident() == main
            if i == 5:
                raise GpusegError("row group 5 is corrupt")
            return i
        return read

    def clean(item):
        _, batch = item
        value = batch() if callable(batch) else batch
        if value == 3:
            raise GpusegError("row group 3 has a bad column")
        return value * 10

    items = [(Path("x.parquet"), reader(i)) for i in range(8)]
    assert list(cleaning_module._ordered_map(clean, items[:3], 2)) == [0, 10, 20]
    assert not decoded_by[0] and not decoded_by[1] and decoded_by[2]  # workers busy: decoded here
    decoded_by.clear()
    got = []
    with pytest.raises(GpusegError, match="row group 3"):  # not 5's, decoded (and failed) earlier
        for value in cleaning_module._ordered_map(clean, items, 2):
            got.append(value)  # noqa: PERF402 (the values before the error)
    assert got == [0, 10, 20] and 5 in decoded_by  # 5 was read ahead, and its error waited its turn
