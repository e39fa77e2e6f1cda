"""Per-segment sums, profiles, revenue order, names and the report: worked by hand, and merged."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from gpuseg.backend import to_numpy
from gpuseg.cleaning import RowCounts, day_number
from gpuseg.cluster.fit import KMeansFit
from gpuseg.config import SegmentConfig
from gpuseg.naming import name_segments, standings
from gpuseg.outputs import segment_profiles
from gpuseg.summary import SegmentSums, fit_warnings, run_report, segment_report


def assert_rows_close(got, want, rel):
    assert [list(r) for r in got] == [list(r) for r in want]
    for a, b in zip(got, want):
        for key in a:
            if isinstance(b[key], float):
                assert a[key] == pytest.approx(b[key], rel=rel, nan_ok=True), (b["segment"], key)
            else:
                assert a[key] == b[key], (b["segment"], key)


def toy(xp):
    # Segment 0: customers 0, 2; segment 1: 1, 3, 4; segment 2: nobody; segment 3: customer 5.
    labels = xp.asarray([0, 1, 0, 1, 1, 3])
    columns = {"recency_days": xp.asarray([5, 0, 15, 30, 60, 9]),
               "frequency": xp.asarray([1, 3, 3, 2, 1, 4]),
               "monetary": xp.asarray([10.0, 40, 30, 20, 30, 30])}
    distance = xp.asarray([1.0, 2, 3, 0.5, 0.5, 4])
    return labels, columns, distance


def test_profiles_worked_by_hand(xp):
    labels, columns, distance = toy(xp)
    sums = SegmentSums.of(labels, columns, 4, distance)
    assert sums.k == 4 and sums.n == 6
    np.testing.assert_array_equal(sums.counts, [2, 3, 0, 1])
    rows = sums.profiles(["A", "B", "C", "D"])
    # Revenue 40, 90, 0, 30 of 160; means: recency (5+15)/2, (0+30+60)/3, -, 9.
    expected = [(0, "A", 2, 2 / 6, 40 / 160, 10.0, 2.0, 20.0),
                (1, "B", 3, 3 / 6, 90 / 160, 30.0, 2.0, 30.0),
                (2, "C", 0, 0.0, 0.0, None, None, None),  # an empty segment has no means (null, not NaN)
                (3, "D", 1, 1 / 6, 30 / 160, 9.0, 4.0, 30.0)]
    keys = ["segment", "name", "n_customers", "share", "revenue_share",
            "mean_recency_days", "mean_frequency", "mean_monetary"]
    for row, want in zip(rows, expected):
        assert list(row) == keys
        for key, value in zip(keys, want):
            assert row[key] == (value if value is None else pytest.approx(value)), (row["segment"], key)
    assert [r["name"] for r in sums.profiles()] == ["Segment 0", "Segment 1", "Segment 2", "Segment 3"]
    # Mean distances (1+3)/2, (2+.5+.5)/3, none, 4; overall 11/6.
    np.testing.assert_allclose(sums.mean_distances(), [2.0, 1.0, 0.0, 4.0])
    training = sums.training()
    assert training["n_customers"] == 6 and training["mean_distance"] == pytest.approx(11 / 6)
    np.testing.assert_allclose(training["segment_shares"], [2 / 6, 3 / 6, 0, 1 / 6])
    assert training["segment_mean_distance"] == [2.0, 1.0, None, 4.0]  # the empty segment has none: null


def test_revenue_shares_need_a_positive_total(xp):
    # Returns outweigh purchases: shares of a negative total would flip sign (-29%, 193%): none.
    labels, columns, distance = toy(xp)
    columns["monetary"] = xp.asarray([10.0, -400, 30, 20, 30, 30])
    rows = SegmentSums.of(labels, columns, 4, distance).profiles()
    assert [r["revenue_share"] for r in rows] == [None] * 4
    columns["monetary"] = xp.asarray([10.0, -90, 30, 20, 30, 30])  # a total of 30: shares of it
    rows = SegmentSums.of(labels, columns, 4, distance).profiles()
    assert [r["revenue_share"] for r in rows] == pytest.approx([40 / 30, -40 / 30, 0.0, 30 / 30])


def test_revenue_order_puts_the_highest_mean_first_and_keeps_ties_in_id_order(xp):
    labels, columns, _ = toy(xp)
    # Mean monetary 20, 30, 0 (empty), 30: segments 1 and 3 tie.
    sums = SegmentSums.of(labels, columns, 4)
    perm = sums.revenue_order()
    np.testing.assert_array_equal(perm, [1, 3, 0, 2])
    rank = np.argsort(perm)
    ordered = sums.relabel(rank)
    np.testing.assert_array_equal(ordered.counts, [3, 1, 2, 0])
    np.testing.assert_array_equal(ordered.revenue_order(), [0, 1, 2, 3])
    # The same as summing the relabelled customers.
    again = SegmentSums.of(xp.asarray(rank)[labels], columns, 4)
    assert_rows_close(ordered.profiles(), again.profiles(), rel=1e-15)
    np.testing.assert_allclose(ordered.standings(), again.standings(), rtol=1e-12)


def test_relabel_to_more_ids_leaves_the_new_ones_empty():
    labels, columns, distance = toy(np)
    sums = SegmentSums.of(labels, columns, 4, distance).relabel([5, 0, 2, 1], 6)
    np.testing.assert_array_equal(sums.counts, [3, 1, 0, 0, 0, 2])
    assert sums.profiles()[3]["mean_monetary"] is None and sums.profiles()[5]["mean_monetary"] == 20
    with pytest.raises(ValueError, match="distinct ids"):
        sums.relabel([0, 0, 1, 2, 3, 4])
    with pytest.raises(ValueError, match="distinct ids"):
        sums.relabel([0, 1, 2, 3, 4, 6])


def test_naming_from_sums_is_the_naming_rule(xp, rng):
    n = 3000
    columns = {"recency_days": xp.asarray(rng.exponential(60, n).round()),
               "frequency": xp.asarray(rng.poisson(2, n) + 1),
               "monetary": xp.asarray(rng.lognormal(5, 1.2, n))}
    labels = xp.asarray(rng.integers(0, 10, n))
    sums = SegmentSums.of(labels, columns, 10)
    np.testing.assert_array_equal(sums.standings(), standings(columns, labels, 10))
    assert sums.names() == name_segments(columns, labels, 10)
    with pytest.raises(ValueError, match="naming needs"):
        SegmentSums.of(labels, {"monetary": columns["monetary"]}, 10).names()


@pytest.mark.parametrize("cuts", [[1500], [0, 1, 700, 700, 2999]])
def test_two_halves_add_up_to_the_whole(xp, rng, cuts):
    n, k = 3000, 7
    columns = {"recency_days": rng.exponential(60, n).round(), "tenure_days": rng.uniform(0, 900, n),
               "frequency": (rng.poisson(2, n) + 1).astype(np.int64), "monetary": rng.lognormal(5, 1.2, n)}
    labels = rng.integers(0, k, n)
    labels[labels == 5] = 6  # segment 5 empty
    distance = rng.uniform(0, 3, n)

    def part(lo, hi):
        return SegmentSums.of(xp.asarray(labels[lo:hi]), {c: xp.asarray(v[lo:hi]) for c, v in columns.items()},
                              k, xp.asarray(distance[lo:hi]))

    bounds = [0, *cuts, n]
    merged = part(bounds[0], bounds[1])
    for lo, hi in zip(bounds[1:-1], bounds[2:]):
        merged = merged + part(lo, hi)
    whole = part(0, n)
    np.testing.assert_array_equal(merged.counts, whole.counts)
    for field in ("sums", "rfm_sums", "rfm_m2", "distance_sums"):
        np.testing.assert_allclose(getattr(merged, field), getattr(whole, field), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(merged.revenue_order(), whole.revenue_order())
    assert merged.names() == whole.names()
    np.testing.assert_allclose(merged.standings(), whole.standings(), rtol=1e-12, atol=1e-12)
    assert_rows_close(merged.profiles(), whole.profiles(), rel=1e-12)


def test_host_sums_in_blocks_on_threads_match_one_pass(rng, monkeypatch):
    """Past _SUM_BLOCK customers the host sums fixed blocks on the pool: the result is the
    one-pass sums (to rounding), and the same to the bit whatever the thread count."""
    from gpuseg import summary
    n, k = 10_301, 6
    columns = {"recency_days": rng.exponential(60, n).round(), "frequency": (rng.poisson(2, n) + 1).astype(np.int64),
               "monetary": rng.lognormal(5, 1.2, n)}
    labels = rng.integers(0, k, n)
    labels[labels == 4] = 5  # segment 4 empty
    distance = rng.uniform(0, 3, n)
    whole = SegmentSums.of(labels, columns, k, distance)  # one block
    monkeypatch.setattr(summary, "_SUM_BLOCK", 1000)  # 11 blocks, a ragged last one
    by_threads = [SegmentSums.of(labels, columns, k, distance, workers=w) for w in (1, 2, 5)]
    for got in by_threads:
        np.testing.assert_array_equal(got.counts, whole.counts)
        for field in ("sums", "rfm_sums", "rfm_m2", "distance_sums"):
            np.testing.assert_allclose(getattr(got, field), getattr(whole, field), rtol=1e-12)
            np.testing.assert_array_equal(getattr(got, field), getattr(by_threads[0], field))
        assert got.names() == whole.names()
    # A block sum that went missing or twice would show in the counts.
    assert by_threads[0].n == n


def test_sums_that_do_not_match_do_not_add():
    labels, columns, distance = toy(np)
    a = SegmentSums.of(labels, columns, 4, distance)
    with pytest.raises(ValueError, match="do not add"):
        a + SegmentSums.of(labels, columns, 5, distance)
    with pytest.raises(ValueError, match="do not add"):
        a + SegmentSums.of(labels, columns, 4)
    with pytest.raises(ValueError, match="outside 0..2"):
        SegmentSums.of(labels, columns, 3)


def test_segment_profiles_is_the_sums_rule(xp):
    labels, columns, _ = toy(xp)
    assert segment_profiles(labels, columns, 4, list("ABCD"))[1] == \
        SegmentSums.of(labels, columns, 4).profiles(list("ABCD"))[1]
    assert to_numpy(labels).tolist() == [0, 1, 0, 1, 1, 3]  # not modified


def fit(**changes):
    base = dict(centers=np.zeros((3, 2)), labels=np.zeros(9, np.int32), inertia=12.5, n_iter=4, converged=True,
                history=[{"iteration": 1, "inertia": 12.5}], n_distinct=3, engine="generic")
    return KMeansFit(**{**base, **changes})


def test_fit_warnings():
    assert fit_warnings(fit(), 3, 300) == []
    notes = fit_warnings(fit(converged=False, n_distinct=2), 3, 50)
    assert notes == ["k-means did not converge within --max-iter 50 iterations",
                     "only 2 distinct segments found for --k 3 (duplicate feature rows); some segments are empty"]


def test_segment_report_has_the_common_fields_then_the_front_ends():
    rows = RowCounts(read=10, used=9, dropped={"bad_amount": 1})
    config = SegmentConfig(k=3, features=("recency_days", "monetary"), seed=7)
    report = segment_report(config, fit(), inputs=["a.parquet"], columns={"customer": "id"},
                            as_of=day_number(dt.date(2024, 3, 1)), backend="cpu",
                            device="2 cores", fallbacks=[], rows=rows, n_customers=9, customers_without_purchase=1,
                            warnings=["w"], timings={"fit": 0.5, "total": 1.0}, scheduler="local")
    assert list(report)[:10] == ["gpuseg_version", "created", "inputs", "columns", "date_format", "as_of",
                                 "backend", "device", "fallbacks", "rows"]
    assert list(report)[-2:] == ["scheduler", "timings"]
    assert report["as_of"] == "2024-03-01" and report["rows"]["dropped"] == {"bad_amount": 1}
    assert (report["k"], report["seed"], report["n_init"]) == (3, 7, 1)
    assert report["features"] == ["recency_days", "monetary"]
    assert (report["n_iter"], report["inertia"], report["converged"], report["engine"]) == (4, 12.5, True, "generic")
    assert report["warnings"] == ["w"] and report["n_customers"] == 9 and report["customers_without_purchase"] == 1
    with pytest.raises(ValueError, match=r"\['k'\] repeat common ones"):
        segment_report(config, fit(), inputs=[], columns={}, as_of=0, backend="cpu", device="", fallbacks=[],
                       rows=rows, n_customers=9, customers_without_purchase=0, warnings=[], timings={}, k=4)
    score = run_report(inputs=["b.csv"], columns={}, date_format="%d/%m/%Y", as_of=0, backend="cpu", device="",
                       fallbacks=["x"], rows=rows, timings={"total": 2.0}, streamed=True)
    assert list(score)[-2:] == ["streamed", "timings"] and score["date_format"] == "%d/%m/%Y"
