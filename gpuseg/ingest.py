"""Ingest: transaction files to per-order and per-customer sums, batch by batch, on every core.

Each batch (a Parquet row group, a 64 MB CSV block, a slice of the demo data)
goes through these steps on a worker thread:

1. decoded on the host by pyarrow, then screened by the one drop rule
   (:func:`gpuseg.cleaning.screen`) in the array namespace: NumPy, or CuPy on
   a GPU, where only text stays on the host;
2. coded within the batch: its customers, invoices and orders (:mod:`gpuseg.coding`);
3. summed per order and per customer (:func:`gpuseg.features.sum_lines`).

Its lines are then dropped. The sums of all batches are merged on one
thread: customer ids and invoices are coded once across batches, and the
partial sums of an order that spans batches are added in batch order.

Memory holds sums, never all the lines. Sums take about a quarter of the
lines' room for baskets of four lines. On 10⁸ lines that is the difference
between 8.2 GB and under 4 GB.

**Rounding.** A customer's or an order's sum is added per batch, then across
batches, so it may differ in its last bits from one running sum over all
lines. When one batch holds all of a customer's lines the result is
bit-identical.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from .backend import get_namespace, scatter_min
from .cleaning import Cleaner, KeptRows, RowCounts
from .coding import EncodedText, code_entries, code_ids, n_entries, order_codes
from .columns import ColumnMapping
from .features import _BIG_DAY, LineSums, sum_lines
from .timing import StageTimer


@dataclass
class BatchSums:
    """One batch's lines, coded within the batch and summed.

    Attributes
    ----------
    customers : pyarrow.Array or EncodedText
        The id of each of the batch's customers, as read (text trimmed).
    invoices : pyarrow.Array, EncodedText or None
        The id of each of the batch's invoices; None without an invoice column.
    order_invoice : int array of shape (n_orders,)
        The batch's invoice of each order; -1 for a customer-day order.
    sums : LineSums
        ``order_customer`` indexes ``customers``.
    """

    customers: Any
    invoices: Any
    order_invoice: Any
    sums: LineSums


@dataclass
class Ingested:
    """Every batch's sums merged: what features are built from.

    Attributes
    ----------
    sums : LineSums
        Per order (``n_orders``) and per customer (``n_customers``).
    customer_ids : pyarrow.Array
        Sorted; ``customer_ids[code]`` is the id of customer ``code``.
    as_of : int
        The reference day.
    rows : RowCounts
    read_seconds : float
        Decoding time summed over threads.
    device_bytes : int
        Bytes copied to the device to clean there.
    """

    sums: LineSums
    customer_ids: pa.Array
    n_orders: int
    as_of: int
    rows: RowCounts
    read_seconds: float = 0.0
    device_bytes: int = 0

    @property
    def n_customers(self) -> int:
        return len(self.customer_ids)


def _local(ids: Any, xp: Any) -> tuple[Any, Any, int, Any]:
    """Codes of a batch's ids within the batch: (row codes, the batch's id set, its size,
    which rows have an id or None). Text is coded by its dictionary entries as
    encoded in the worker (entries equal once trimmed are merged across batches)."""
    if isinstance(ids, EncodedText):
        codes, present = ids.local_codes(xp)
        return codes, ids.entries(), len(ids.dictionary), present
    codes, uniques, present = code_ids([ids], xp, sort=False)
    return codes, uniques, len(uniques), present


def sum_batch(kept: KeptRows) -> BatchSums:
    """Code one batch's kept lines within the batch and sum them per order and per customer."""
    xp = get_namespace(kept.day)
    customer, customers, n_customers, _ = _local(kept.ids, xp)
    invoices = None
    if kept.invoices is not None:
        invoice, invoices, n_invoices, has = _local(kept.invoices, xp)
        order, n_orders = order_codes(customer, kept.day, invoice, has, n_invoices)
        order_invoice = xp.full(n_orders, -1, dtype=xp.int64)
        if has is None:
            order_invoice[order] = invoice
        else:
            order_invoice[order[has]] = invoice[has]
    else:
        order, n_orders = order_codes(customer, kept.day)
        order_invoice = xp.full(n_orders, -1, dtype=xp.int64)
    sums = sum_lines(customer, kept.day, kept.amount, order, n_customers, n_orders)
    return BatchSums(customers, invoices, order_invoice, sums)


def _mapped(codes: Any, sizes: list[int], local: list[Any]) -> Any:
    """``codes`` of the batches' entries (concatenated) looked up by each batch's local indices;
    a local index of -1 maps to -1."""
    xp = get_namespace(codes)
    out, start = [], 0
    for size, idx in zip(sizes, local):
        table = xp.concatenate([codes[start:start + size].astype(xp.int64), xp.asarray([-1], dtype=xp.int64)])
        out.append(table[idx])
        start += size
    return xp.concatenate(out) if out else xp.empty(0, dtype=xp.int64)


def merge(batches: list[BatchSums], ids_to_int: bool) -> tuple[LineSums, pa.Array, int]:
    """Merge the sums of several batches: returns the sums, the sorted customer ids
    and the number of orders. ``batches`` is emptied as it is consumed."""
    xp = get_namespace(batches[0].sums.order_net)
    customer, customer_ids = code_entries([b.customers for b in batches], xp, sort=True, text_to_int=ids_to_int)
    n_customers = len(customer_ids)
    sizes = [n_entries(b.customers) for b in batches]
    order_customer = _mapped(customer, sizes, [b.sums.order_customer for b in batches])
    order_day = xp.concatenate([b.sums.order_day for b in batches])
    if batches[0].invoices is not None:
        invoice, n_invoices = code_entries([b.invoices for b in batches], xp, sort=False, text_to_int=True,
                                           uniques=False)
        order_invoice = _mapped(invoice, [n_entries(b.invoices) for b in batches], [b.order_invoice for b in batches])
        has = order_invoice >= 0
        order, n_orders = order_codes(order_customer, order_day, order_invoice,
                                      None if bool(has.all()) else has, n_invoices)
        del order_invoice, has
    else:
        order, n_orders = order_codes(order_customer, order_day)

    def added(name: str, index: Any, n: int) -> Any:
        # bincount adds in array order, which is batch order.
        return xp.bincount(index, weights=xp.concatenate([getattr(b.sums, name) for b in batches]), minlength=n)

    merged_day = xp.full(n_orders, _BIG_DAY, dtype=xp.int32)
    scatter_min(merged_day, order, order_day)
    merged_customer = xp.empty(n_orders, dtype=xp.int32 if n_customers < 2**31 else xp.int64)
    merged_customer[order] = order_customer
    sums = LineSums(order_customer=merged_customer, order_net=added("order_net", order, n_orders),
                    order_gross=added("order_gross", order, n_orders), order_day=merged_day,
                    monetary=added("monetary", customer, n_customers), bought=added("bought", customer, n_customers),
                    returned=added("returned", customer, n_customers))
    batches.clear()
    return sums, customer_ids, n_orders


def ingest(items: Iterable[tuple[Path, Any]], mapping: ColumnMapping, date_format: str | None = None,
           as_of: dt.date | None = None, xp: Any = np, workers: int = 1,
           on_rows: Callable[[int], None] | None = None, timer: StageTimer | None = None) -> Ingested:
    """Read, clean and sum ``items`` on ``workers`` threads (stage ``load``), then merge (``clean``).

    Parameters
    ----------
    items : iterable of (path, record batch or callable reading one)
        From :func:`gpuseg.reading.iter_readers`.
    xp : module
        Where screening, coding and sums run: NumPy, or CuPy.

    Raises
    ------
    GpusegError
        When the input has no rows, or no row survives cleaning.
    """
    timer = timer or StageTimer()
    cleaner = Cleaner(mapping, date_format, as_of, xp=xp, encode_text=True)
    with timer.stage("load"):
        batches = list(cleaner.map(items, workers, on_rows, then=sum_batch))
        cleaner.check()
    with timer.stage("clean"):
        sums, customer_ids, n_orders = merge(batches, cleaner.ids_to_int)
    return Ingested(sums, customer_ids, n_orders, cleaner.as_of, cleaner.rows, cleaner.read_seconds,
                    cleaner.stats.device_bytes)
