"""Features: every definition on a toy log worked by hand, then a pure-Python reference on random logs."""

from __future__ import annotations

import numpy as np
import pytest
from cupy_like import CUPY_LIKE
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpuseg import features as features_module
from gpuseg.backend import to_numpy
from gpuseg.features import DEFAULT_FEATURES, FEATURES, compute_features

AS_OF = 100

# (customer, day, amount, order). Worked by hand:
#   customer 0: order 0 = days 12, 10 (+20, +30) -> net 50 on day 10 (its earliest line);
#               order 1 = day 40 (+100, -10) -> net 90;
#               order 2 = day 70 (-25) -> a return, not a purchase;
#               order 3 = day 60 (+5, -5) -> nets 0, not a purchase.
#     purchases on days 10 and 40: frequency 2, recency 100-40 = 60, tenure 100-10 = 90,
#     monetary 30+20+100-10-25+5-5 = 115, avg 57.5, gap (40-10)/1 = 30,
#     return share (10+25+5) / (30+20+100+5) = 40/155.
#   customer 1: only a return (order 4) -> left out, counted as without purchase.
#   customer 2: one order 5 on days 80 and 78 -> day 78: frequency 1, recency = tenure = 22,
#     monetary 15, avg 15, gap = tenure = 22 (one-time buyer), return share 0.
#   customer 3: orders 6, 7, 8 on days 20, 50, 95 of 10 each: recency 5, tenure 80,
#     gap (95-20)/2 = 37.5, monetary 30, avg 10.
TOY = [
    (0, 12, 20.0, 0), (0, 10, 30.0, 0), (0, 40, 100.0, 1), (0, 40, -10.0, 1), (0, 70, -25.0, 2),
    (0, 60, 5.0, 3), (0, 60, -5.0, 3),
    (1, 50, -8.0, 4),
    (2, 80, 12.0, 5), (2, 78, 3.0, 5),
    (3, 20, 10.0, 6), (3, 95, 10.0, 8), (3, 50, 10.0, 7),
]
EXPECTED = {
    "recency_days": [60, 22, 5],
    "tenure_days": [90, 22, 80],
    "frequency": [2, 1, 3],
    "monetary": [115.0, 15.0, 30.0],
    "avg_order_value": [57.5, 15.0, 10.0],
    "mean_days_between_orders": [30.0, 22.0, 37.5],
    "return_share": [40 / 155, 0.0, 0.0],
}


def features_of(lines, xp=np, n_customers=None, n_orders=None, as_of=AS_OF):
    cust, day, amount, order = (list(c) for c in zip(*lines))
    return compute_features(
        xp.asarray(np.array(cust, np.int32)), xp.asarray(np.array(day, np.int32)),
        xp.asarray(np.array(amount, np.float64)), xp.asarray(np.array(order, np.int32)),
        n_customers=n_customers if n_customers is not None else max(cust) + 1,
        n_orders=n_orders if n_orders is not None else max(order) + 1, as_of=as_of)


def host(feats):
    return {name: to_numpy(col) for name, col in feats.columns.items()}


def test_every_feature_has_a_toy_expectation():
    assert set(EXPECTED) == set(FEATURES)
    assert set(DEFAULT_FEATURES) <= set(FEATURES)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_toy_feature_worked_by_hand(xp, name):
    feats = features_of(TOY, xp)
    assert to_numpy(feats.customer).tolist() == [0, 2, 3]
    np.testing.assert_allclose(to_numpy(feats.columns[name]), EXPECTED[name], rtol=1e-12)


def test_toy_left_out_customers_and_dtypes(xp):
    feats = features_of(TOY, xp)
    assert feats.n_without_purchase == 1
    assert len(feats) == 3
    cols = host(feats)
    for name in ("recency_days", "tenure_days", "frequency"):
        assert np.issubdtype(cols[name].dtype, np.integer), name
    for name in ("monetary", "avg_order_value", "mean_days_between_orders", "return_share"):
        assert cols[name].dtype == np.float64, name


def test_result_does_not_depend_on_line_order(xp):
    shuffled = [TOY[i] for i in np.random.default_rng(0).permutation(len(TOY))]
    a, b = host(features_of(TOY, xp)), host(features_of(shuffled, xp))
    for name in FEATURES:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_matrix_stacks_the_named_features_as_float64(xp):
    feats = features_of(TOY, xp)
    M = to_numpy(feats.matrix(["frequency", "recency_days"]))
    assert M.dtype == np.float64 and M.shape == (3, 2)
    np.testing.assert_array_equal(M, [[2, 60], [1, 22], [3, 5]])


def test_order_day_is_its_earliest_line(xp):
    # One order with lines on days 30 and 10: the purchase happened on day 10.
    feats = host(features_of([(0, 30, 5.0, 0), (0, 10, 5.0, 0)], xp, as_of=50))
    assert feats["recency_days"].tolist() == [40]
    assert feats["tenure_days"].tolist() == [40]
    assert feats["frequency"].tolist() == [1]


def test_return_in_a_later_order_does_not_move_recency(xp):
    feats = host(features_of([(0, 10, 50.0, 0), (0, 40, -20.0, 1)], xp, as_of=50))
    assert feats["recency_days"].tolist() == [40]
    assert feats["frequency"].tolist() == [1]
    assert feats["monetary"].tolist() == [30.0]
    np.testing.assert_allclose(feats["return_share"], [0.4])


def test_order_netting_zero_is_not_a_purchase(xp):
    feats = features_of([(0, 10, 7.0, 0), (0, 10, -7.0, 0), (1, 20, 1.0, 1)], xp, as_of=30)
    assert to_numpy(feats.customer).tolist() == [1]
    assert feats.n_without_purchase == 1


def test_order_netting_zero_up_to_rounding_is_not_a_purchase(xp):
    # 0.1 + 0.2 - 0.3 is 5.6e-17 in floating point; the order was fully returned.
    lines = [(0, 10, 0.1, 0), (0, 10, 0.2, 0), (0, 10, -0.3, 0), (0, 12, 5.0, 1)]
    feats = host(features_of(lines, xp, as_of=20))
    assert feats["frequency"].tolist() == [1]
    assert feats["tenure_days"].tolist() == [8]


def test_customers_with_only_returns_or_no_lines_are_counted(xp):
    # Customers 1 and 3 have only returns, customer 2 has no lines at all.
    lines = [(0, 1, 10.0, 0), (1, 2, -3.0, 1), (3, 3, -1.0, 2), (3, 4, -1.0, 3)]
    feats = features_of(lines, xp, n_customers=4, as_of=10)
    assert to_numpy(feats.customer).tolist() == [0]
    assert feats.n_without_purchase == 3


def test_no_purchase_order_at_all_leaves_every_customer_out(xp):
    feats = features_of([(0, 1, -3.0, 0), (1, 2, 4.0, 1), (1, 2, -4.0, 1)], xp, as_of=10)
    assert len(feats) == 0 and feats.n_without_purchase == 2
    assert all(col.shape == (0,) for col in feats.columns.values())


def test_no_purchase_order_on_a_cupy_like_namespace(monkeypatch):
    # CuPy before 14.2 cannot bincount no values: the device path must not ask it to.
    monkeypatch.setattr(features_module, "get_namespace", lambda *a: CUPY_LIKE)
    feats = features_of([(0, 1, -3.0, 0), (1, 2, 4.0, 1), (1, 2, -4.0, 1)], as_of=10)
    assert len(feats) == 0 and feats.n_without_purchase == 2
    got = host(features_of(TOY))
    for name, want in EXPECTED.items():
        np.testing.assert_allclose(got[name], want, rtol=1e-15)


def test_line_sums_are_the_sequential_sums_bit_for_bit():
    """Each per-order and per-customer sum is the running sum of its lines in row order from 0.0
    (as a bincount adds them), whether orders are runs of lines or not: returns summed over the
    negative lines alone, and orders without one grossing what they net, change no bit."""
    rng = np.random.default_rng(5)
    lengths = rng.integers(1, 9, 3000)
    order = np.repeat(np.arange(len(lengths)), lengths)
    runs = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    owner = rng.integers(0, 700, len(lengths))
    customer = owner[order]
    amount = rng.normal(3.0, 40.0, len(order)) * 10.0 ** rng.integers(-3, 4, len(order))
    amount[rng.random(len(order)) < 0.05] = 0.0
    amount[rng.random(len(order)) < 0.02] = -0.0
    day = rng.integers(19000, 19400, len(order)).astype(np.int32)
    expected = {name: np.zeros(n) for name, n in (("order_net", len(lengths)), ("order_gross", len(lengths)),
                                                  ("monetary", 700), ("bought", 700), ("returned", 700))}
    for i, (o, c, a) in enumerate(zip(order.tolist(), customer.tolist(), amount.tolist(), strict=True)):
        expected["order_net"][o] += a
        expected["order_gross"][o] += abs(a)
        expected["monetary"][c] += a
        expected["bought"][c] += max(a, 0.0)
        expected["returned"][c] += max(-a, 0.0)
    for by_runs in (runs, None):
        sums = features_module.sum_lines(customer, day, amount, order, 700, len(lengths), by_runs)
        for name, want in expected.items():
            assert getattr(sums, name).dtype == np.float64
            assert getattr(sums, name).tobytes() == (want + 0.0).tobytes(), name
    no_returns = features_module.sum_lines(customer, day, np.abs(amount), order, 700, len(lengths), runs)
    assert no_returns.returned.dtype == np.float64 and not no_returns.returned.any()


def test_many_orders_on_one_day(xp):
    # Two invoices the same day are two purchase orders, zero days apart.
    feats = host(features_of([(0, 5, 1.0, 0), (0, 5, 2.0, 1)], xp, as_of=6))
    assert feats["frequency"].tolist() == [2]
    assert feats["mean_days_between_orders"].tolist() == [0.0]
    assert feats["recency_days"].tolist() == [1]


# -- against a straightforward reference -----------------------------------------------

def reference(lines, n_customers, as_of):
    """The feature definitions, written the obvious way with dicts and loops."""
    orders: dict[int, dict] = {}
    for c, d, a, o in lines:
        rec = orders.setdefault(o, {"customer": c, "net": 0.0, "day": d})
        rec["net"] += a
        rec["day"] = min(rec["day"], d)
    out = {}
    for c in range(n_customers):
        purchase_days = [r["day"] for r in orders.values() if r["customer"] == c and r["net"] > 0]
        if not purchase_days:
            continue
        mine = [a for cc, _, a, _ in lines if cc == c]
        first, last, n = min(purchase_days), max(purchase_days), len(purchase_days)
        money = sum(mine)
        out[c] = {
            "recency_days": as_of - last,
            "tenure_days": as_of - first,
            "frequency": n,
            "monetary": money,
            "avg_order_value": money / n,
            "mean_days_between_orders": (last - first) / (n - 1) if n > 1 else as_of - first,
            "return_share": sum(-a for a in mine if a < 0) / sum(a for a in mine if a > 0),
        }
    return out


@st.composite
def logs(draw):
    n_customers = draw(st.integers(1, 6))
    n_orders = draw(st.integers(1, 12))
    owner = draw(st.lists(st.integers(0, n_customers - 1), min_size=n_orders, max_size=n_orders))
    lines = []
    for o in range(n_orders):  # every order has at least one line
        for _ in range(draw(st.integers(1, 4))):
            day = draw(st.integers(-400, 400))
            # Whole amounts keep the sums exact, so "net > 0" is unambiguous.
            amount = float(draw(st.integers(-30, 60)))
            lines.append((owner[o], day, amount, o))
    order = draw(st.permutations(range(len(lines))))
    lines = [lines[i] for i in order]
    as_of = max(d for _, d, _, _ in lines) + draw(st.integers(1, 50))
    return lines, n_customers, n_orders, as_of


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(logs())
def test_matches_reference(log):
    lines, n_customers, n_orders, as_of = log
    feats = features_of(lines, n_customers=n_customers, n_orders=n_orders, as_of=as_of)
    expected = reference(lines, n_customers, as_of)
    got_customers = feats.customer.tolist()
    assert got_customers == sorted(expected)
    assert feats.n_without_purchase == n_customers - len(expected)
    cols = host(feats)
    for i, c in enumerate(got_customers):
        for name in FEATURES:
            assert cols[name][i] == pytest.approx(expected[c][name], rel=1e-12, abs=1e-12), (c, name)


@settings(max_examples=100, deadline=None)
@given(logs())
def test_invariants(log):
    lines, n_customers, n_orders, as_of = log
    cols = host(features_of(lines, n_customers=n_customers, n_orders=n_orders, as_of=as_of))
    assert (cols["frequency"] >= 1).all()
    assert (cols["recency_days"] >= 1).all()
    assert (cols["recency_days"] <= cols["tenure_days"]).all()
    assert (cols["mean_days_between_orders"] <= cols["tenure_days"]).all()
    assert (cols["mean_days_between_orders"] >= 0).all()
    assert (cols["return_share"] >= 0).all()
    np.testing.assert_allclose(cols["avg_order_value"] * cols["frequency"], cols["monetary"], atol=1e-9)
