"""One feature row per customer, computed with the array namespace of the input.

The same code runs on NumPy arrays on the CPU and on CuPy arrays on a GPU:
group sums are ``bincount`` with weights and group minima/maxima are scatter
operations, so no per-customer Python loop and no sort are needed.

Definitions (an *order* is an invoice, or one customer-day without invoices;
a *purchase order* has a net amount > 0; ``as_of`` is a calendar day):

=========================  ====================================================
recency_days               days from the last purchase order's day to as_of
tenure_days                days from the first purchase order's day to as_of
frequency                  number of purchase orders
monetary                   net sum of all the customer's line amounts
avg_order_value            monetary / frequency
mean_days_between_orders   (last − first purchase day) / (frequency − 1);
                           tenure_days for one-time buyers (the gap is at
                           least that long, and still open)
return_share               value of negative lines / value of positive lines
=========================  ====================================================

An order's day is the earliest day among its lines. Customers without a
purchase order are left out and counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .backend import bincount, get_namespace, scatter_max, scatter_min

FEATURES: dict[str, str] = {
    "recency_days": "days from the last purchase order's day to as_of",
    "tenure_days": "days from the first purchase order's day to as_of",
    "frequency": "number of purchase orders (orders with net amount > 0)",
    "monetary": "net sum of all line amounts, returns included",
    "avg_order_value": "monetary / frequency",
    "mean_days_between_orders": "days between first and last purchase / (frequency - 1); "
                                "tenure_days for one-time buyers",
    "return_share": "value of returned lines / value of purchased lines",
}
DEFAULT_FEATURES = ("recency_days", "frequency", "monetary")

#: The int32 day that stands for "no day yet" in minimum (and, negated, maximum) scatters.
BIG_DAY = 2**31 - 1
#: An order nets "more than zero" when its net exceeds this share of its gross.
_NET_RTOL = 1e-9


@dataclass
class CustomerFeatures:
    """Features of the customers with at least one purchase order.

    Attributes
    ----------
    customer : int array of shape (n,)
        Customer codes of the rows, ascending.
    columns : dict of name -> array of shape (n,)
        Every feature in :data:`FEATURES`, in original units.
    n_without_purchase : int
        Customers left out because they have no purchase order.
    """

    customer: Any
    columns: dict[str, Any]
    n_without_purchase: int

    def __len__(self) -> int:
        return int(self.customer.shape[0])

    def matrix(self, names: tuple[str, ...] | list[str]) -> Any:
        """The named features as one float64 array of shape (n, len(names))."""
        xp = get_namespace(self.customer)
        return xp.stack([self.columns[name].astype(xp.float64) for name in names], axis=1)


@dataclass
class LineSums:
    """Transaction lines summed per order and per customer: all that features need.

    One block of lines (a batch, a Dask partition, a whole log) gives one;
    the single-process pipeline sums each batch on its own thread and merges
    the blocks (:func:`gpuseg.ingest.merge`), so the lines are never held
    all at once.

    Attributes
    ----------
    order_customer : int array of shape (n_orders,)
        The customer of each order.
    order_net, order_gross : float64 arrays of shape (n_orders,)
        Net and absolute sums of the order's line amounts.
    order_day : int32 array of shape (n_orders,)
        The earliest day among the order's lines.
    monetary, bought, returned : float64 arrays of shape (n_customers,)
        Sums of each customer's line amounts: all, positive, and negated negative.
    """

    order_customer: Any
    order_net: Any
    order_gross: Any
    order_day: Any
    monetary: Any
    bought: Any
    returned: Any


def sum_lines(customer: Any, day: Any, amount: Any, order: Any, n_customers: int, n_orders: int,
              runs: Any = None) -> LineSums:
    """Sum coded lines per order and per customer (array-generic).

    Parameters
    ----------
    customer : int array of shape (m,)
        Customer code of each line, in ``0..n_customers-1``.
    day : int32 array of shape (m,)
    amount : float64 array of shape (m,)
    order : int array of shape (m,)
        Order code of each line, in ``0..n_orders-1``; one customer per order.
    runs : int array of shape (n_orders,), optional (host)
        When order ``o`` is lines ``runs[o]..runs[o+1]-1`` (an export lists an
        invoice's lines together): the line each order starts at. An order's
        day is then its first line's, lowered by the scatter only where a later
        line is earlier (an invoice's lines share a day as a rule; the scatter
        holds the GIL, and ``np.minimum.reduceat`` of 2.5·10⁵ short runs took
        twice as long as the scatter).
    """
    xp = get_namespace(customer, day, amount, order)
    if runs is not None:
        order_day = day[runs]
        earlier = day < order_day[order]
        if bool(earlier.any()):
            scatter_min(order_day, order[earlier], day[earlier])
        order_customer = customer[runs]
    else:
        order_day = xp.full(n_orders, BIG_DAY, dtype=xp.int32)
        scatter_min(order_day, order, day)
        order_customer = xp.empty(n_orders, dtype=customer.dtype)
        order_customer[order] = customer
    if xp is np:  # bincount's index type, cast once rather than in each call
        customer, order = customer.astype(np.intp, copy=False), order.astype(np.intp, copy=False)
    order_net = xp.bincount(order, weights=amount, minlength=n_orders)
    # Returns are few: sums of negated negative lines over those lines alone. A sum of
    # non-negative terms in row order skips the zeros without changing a bit.
    negative = xp.flatnonzero(amount < 0)
    returned = xp.zeros(n_customers, dtype=xp.float64)  # a bincount of no lines would be int64
    if negative.shape[0]:
        returned = xp.bincount(customer[negative], weights=-amount[negative], minlength=n_customers)
    if runs is not None and xp is np:
        # An order without a negative line grosses what it nets, bit for bit (the same terms
        # in the same order); the others' lines are their runs.
        order_gross = order_net.copy()
        mixed = np.zeros(n_orders, dtype=bool)
        mixed[order[negative]] = True
        mixed = np.flatnonzero(mixed)
        if len(mixed):
            starts = runs[mixed]
            length = np.append(runs[1:], len(amount))[mixed] - starts
            rows = np.arange(int(length.sum())) + np.repeat(starts - (np.cumsum(length) - length), length)
            order_gross[mixed] = np.bincount(order[rows], weights=np.abs(amount[rows]), minlength=n_orders)[mixed]
    else:
        order_gross = xp.bincount(order, weights=xp.abs(amount), minlength=n_orders)
    return LineSums(order_customer=order_customer, order_net=order_net, order_gross=order_gross,
                    order_day=order_day, monetary=xp.bincount(customer, weights=amount, minlength=n_customers),
                    bought=xp.bincount(customer, weights=xp.maximum(amount, 0.0), minlength=n_customers),
                    returned=returned)


def features_from_sums(sums: LineSums, n_customers: int, as_of: int) -> CustomerFeatures:
    """Per-customer features from per-order and per-customer sums (array-generic)."""
    xp = get_namespace(sums.order_net)
    # Float sums leave residue: an order fully returned within itself
    # (0.1 + 0.2 - 0.3) nets 5.6e-17, which is not a purchase.
    purchase = sums.order_net > _NET_RTOL * sums.order_gross
    # An order whose sum overflowed (inf, or nan from both signs) is kept, so that its customer's
    # non-finite monetary stops the run with the customer's name instead of leaving it out.
    purchase |= ~xp.isfinite(sums.order_net)
    p_customer = sums.order_customer[purchase]
    p_day = sums.order_day[purchase]
    frequency = bincount(xp, p_customer, minlength=n_customers)  # empty when no order is a purchase
    first = xp.full(n_customers, BIG_DAY, dtype=xp.int32)
    last = xp.full(n_customers, -BIG_DAY, dtype=xp.int32)
    scatter_min(first, p_customer, p_day)
    scatter_max(last, p_customer, p_day)

    keep = xp.flatnonzero(frequency > 0)
    freq = frequency[keep].astype(xp.int64)
    first, last = first[keep], last[keep]
    tenure = (as_of - first).astype(xp.int32)
    span = (last - first).astype(xp.float64)
    mean_gap = xp.where(freq > 1, span / xp.maximum(freq - 1, 1), tenure.astype(xp.float64))
    money = sums.monetary[keep]
    columns = {
        "recency_days": (as_of - last).astype(xp.int32),
        "tenure_days": tenure,
        "frequency": freq,
        "monetary": money,
        "avg_order_value": money / freq,
        "mean_days_between_orders": mean_gap,
        # bought > 0 for every kept customer: a purchase order has a positive line.
        "return_share": sums.returned[keep] / sums.bought[keep],
    }
    return CustomerFeatures(customer=keep, columns=columns,
                            n_without_purchase=int(n_customers - keep.shape[0]))


def compute_features(customer: Any, day: Any, amount: Any, order: Any,
                     n_customers: int, n_orders: int, as_of: int) -> CustomerFeatures:
    """Per-customer features from coded transaction lines.

    Parameters
    ----------
    customer : int array of shape (m,)
        Customer code of each line, in ``0..n_customers-1``.
    day : int32 array of shape (m,)
        Day of each line (days since 1970-01-01).
    amount : float64 array of shape (m,)
        Line amounts; negative for returns.
    order : int array of shape (m,)
        Order code of each line, in ``0..n_orders-1``; one customer per order.
    n_customers, n_orders : int
    as_of : int
        Reference day, after every line's day.

    Returns
    -------
    CustomerFeatures
    """
    return features_from_sums(sum_lines(customer, day, amount, order, n_customers, n_orders), n_customers, as_of)
