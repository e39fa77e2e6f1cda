"""Ingest: transaction files to per-order and per-customer sums, batch by batch, on every core.

Each batch (a Parquet row group, a 64 MB CSV block, a slice of the demo data)
goes through these steps on a worker thread:

1. decoded on the host by pyarrow, then screened by the one drop rule
   (:func:`gpuseg.cleaning.screen`) in the array namespace: NumPy, or CuPy on
   a GPU, where only text stays on the host;
2. coded within the batch: its customers, invoices and orders (:mod:`gpuseg.coding`);
3. summed per order and per customer (:func:`gpuseg.features.sum_lines`).

Its lines are then dropped. Each batch also groups its customers, with their
orders, by a hash of the customer id; the batches' buckets then merge on the
thread pool, each bucket's customers and orders coded across batches and their
partial sums added in batch order (:func:`merge`). Where ids have no exact
byte key (text over 64 bytes), id types differ between batches, or the sums
are on the device, everything is coded across batches at once instead.

Memory holds sums, never all the lines. Sums take about a quarter of the
lines' room for baskets of four lines. On 10⁸ lines that is the difference
between 8.2 GB and under 4 GB.

**Rounding.** A customer's or an order's sum is added per batch, then across
batches, so it may differ in its last bits from one running sum over all
lines. When one batch holds all of a customer's lines the result is
bit-identical. On the host the sums are reproducible run to run; on a GPU
CuPy's weighted ``bincount`` adds with atomics, in no fixed order, so the
device's sums may differ from the host's, and from one run to the next, in
their last bits.
"""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .backend import get_namespace, release_freed_memory, scatter_min, to_numpy
from .cleaning import Cleaner, KeptRows, RowCounts
from .coding import (EncodedText, as_numbers, code_entries, code_ids, equal_codes, factorize_values, key_hash,
                     n_entries, order_codes, run_codes, sort_packed, text_keys, unique_inverse, whole_numbers)
from .columns import ColumnMapping
from .features import BIG_DAY, CustomerFeatures, LineSums, features_from_sums, sum_lines
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
    buckets: "Buckets | None" = None
    grouped: Any = None  # host: the orders grouped by their customer's bucket, when coding gave it


#: Customers are spread over 2**_BUCKET_BITS buckets by a hash of their id, so
#: that merging is bucket by bucket: each bucket's customers, with all their
#: orders, fit the cache and merge on their own thread (several small buckets
#: together, see _bucket_groups).
_BUCKET_BITS = 7
#: Buckets whose parts of a batch share one copy of its sums (see :func:`_bucketize`).
_CHUNK_BUCKETS = 16


@dataclass
class Part:
    """One batch's customers of one bucket, with their orders (host only)."""

    ids: pa.Array | None     # text ids as read (trimmed); None for numbers, which are their keys
    key: np.ndarray          # identity of each customer's id (_id_keys)
    monetary: np.ndarray
    bought: np.ndarray
    returned: np.ndarray
    order_customer: np.ndarray  # int32 index into this part's customer arrays
    order_day: np.ndarray
    order_net: np.ndarray
    order_gross: np.ndarray
    invoice_key: np.ndarray | None  # identity of the order's invoice (_id_keys); None: no invoice column
    has_invoice: np.ndarray | None  # None: every order has an invoice (or none, without the column)


@dataclass
class Buckets:
    """One batch's customers and orders grouped by the bucket of the customer's id (host only).

    ``parts[p]`` is bucket ``p``: views of one copy per :data:`_CHUNK_BUCKETS`
    buckets, so that merging frees a batch's sums a run of buckets at a time:
    the merged sums take the batches' room instead of adding to it (on a log
    of one-line orders they are as large).
    """

    id_type: pa.DataType
    invoice_type: pa.DataType | None
    parts: list[Part | None]


def _id_keys(part: Any) -> np.ndarray | None:
    """A key per id of a batch's id set, equal exactly for equal ids (int64, or byte
    keys for text: :func:`gpuseg.coding.text_keys`), or None when there is none."""
    if isinstance(part, EncodedText):
        return part.keys
    values = part.to_numpy(zero_copy_only=False)
    if values.dtype.kind in "iu":
        return values.astype(np.int64, copy=False)
    values = values.astype(np.float64, copy=False) + 0.0  # -0.0 and 0.0: one id; float32, float16 keyed as float64
    return values.view(np.int64)


def _part_type(part: Any) -> pa.DataType:
    return pa.string() if isinstance(part, EncodedText) else part.type


def key_values(key: np.ndarray, id_type: pa.DataType) -> np.ndarray:
    """The numbers that :func:`_id_keys` keyed (floats were keyed by their bits, uint64 ids
    past 2**63 wrapped to negative int64)."""
    if pa.types.is_floating(id_type):
        return key.view(np.float64)
    return key.view(np.uint64) if pa.types.is_unsigned_integer(id_type) else key


def _bucket_of(key: np.ndarray) -> np.ndarray:
    return (key_hash(key) >> np.uint64(64 - _BUCKET_BITS)).astype(np.uint8)


def _bounds(bucket: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(np.bincount(bucket, minlength=1 << _BUCKET_BITS))])


def _bucket_order(bucket: np.ndarray) -> np.ndarray | None:
    """The stable order that groups ``bucket`` (a counting sort for 8-bit keys); None when
    it is grouped already (see :func:`_in_bucket_order`)."""
    if len(bucket) < 2 or bool((bucket[1:] >= bucket[:-1]).all()):
        return None
    return np.argsort(bucket, kind="stable")


def _bucket_codes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Codes of numeric customer ids (one per order), numbered in the order that
    :func:`_bucketize` keeps customers in (by bucket, then by value), the ids so
    numbered, and the rows grouped by bucket (by value, then row, within one).

    One sort of ``(bucket << b | value - min) << r | row`` (b bits of value
    span, r of row), where :func:`gpuseg.coding.unique_inverse` sorted
    ``(value - min) << r | row`` and bucketing then gathered every customer
    column and sorted the orders by bucket again (retail log, summing and
    bucketing a row group: 67 -> 60 ms). None when the ids are not whole
    numbers, or their span leaves no room for the bucket and row bits.
    """
    n = len(values)
    if not n or (values.dtype.kind == "u" and values.dtype.itemsize == 8 and int(values.max()) >= 1 << 63):
        return None
    if values.dtype.kind == "f":
        values = values.astype(np.float64, copy=False) + 0.0  # -0.0 and 0.0: one id, keyed as 0.0 (float64 bits)
        whole = whole_numbers(values)
        if whole is None:
            return None
        key = values.view(np.int64)
    else:
        whole = key = values.astype(np.int64, copy=False)
    lo, hi = int(whole.min()), int(whole.max())
    row_bits, value_bits = max(1, (n - 1).bit_length()), (hi - lo).bit_length()
    if _BUCKET_BITS + value_bits + row_bits > 63:
        return None
    packed = _bucket_of(key).astype(np.int64)
    packed <<= value_bits
    packed += whole
    packed -= lo
    rows, first = sort_packed(packed, row_bits)
    return run_codes(rows, first), values[rows[first]], rows


def _in_bucket_order(customer: np.ndarray, customers: Any) -> tuple[np.ndarray, Any]:
    """Renumber a batch's customer codes so that its customers come in bucket order.

    Its customer sums then need no gather to be bucketed, nor do its orders
    when their codes follow the customers' (as a sort-based coding of
    customer-days makes them). On a log of a few lines per customer (CDNOW's
    buyers, date-ordered, 9·10⁵ customers a batch) those gathers were most of
    the bucketing. The sums are unchanged: a customer's lines add in line order.
    """
    key = _id_keys(customers)
    if key is None:
        return customer, customers
    perm = _bucket_order(_bucket_of(key))
    if perm is None:
        return customer, customers
    rank = np.empty(len(perm), dtype=customer.dtype)
    rank[perm] = np.arange(len(perm), dtype=customer.dtype)
    if isinstance(customers, EncodedText):
        customers = EncodedText(np.empty(0, np.int32), customers.dictionary.take(pa.array(perm)),
                                customers.keys[perm], customers._all_int)
    else:
        customers = customers.take(pa.array(perm))
    return rank[customer], customers


def _bucketize(batch: BatchSums) -> Buckets | None:
    """Group a batch's sums by customer bucket, or None when its ids have no exact key."""
    key = _id_keys(batch.customers)
    invoice_key = None if batch.invoices is None else _id_keys(batch.invoices)
    if key is None or (batch.invoices is not None and invoice_key is None):
        return None
    sums = batch.sums
    bucket = _bucket_of(key)
    cperm = _bucket_order(bucket)
    cb = _bounds(bucket)
    # Each order's customer as an index into its bucket's customers.
    within = np.arange(len(bucket), dtype=np.int32) - np.repeat(cb[:-1], np.diff(cb)).astype(np.int32)
    if cperm is not None:
        within[cperm] = within.copy()
    order_bucket = bucket[sums.order_customer]
    operm = batch.grouped if batch.grouped is not None else _bucket_order(order_bucket)
    ob = _bounds(order_bucket)
    del order_bucket
    has = inv = None
    if invoice_key is not None:
        has = batch.order_invoice >= 0
        inv = invoice_key[np.maximum(batch.order_invoice, 0)] if len(invoice_key) else \
            np.zeros(len(has), invoice_key.dtype)  # no row of the batch has an invoice
        if has.all():
            has = None
    # Numeric ids are their keys; text is kept for the output (keys are padded bytes).
    ids = batch.customers.dictionary if isinstance(batch.customers, EncodedText) else None
    if ids is not None and cperm is not None:
        ids = ids.take(pa.array(cperm))
    # Whole arrays gathered, then cut into copies: 1.6x faster than a gather per bucket.
    c_cols = [a if cperm is None else a[cperm] for a in (key, sums.monetary, sums.bought, sums.returned)]
    o_cols = [a if a is None or operm is None else a[operm]
              for a in (within[sums.order_customer], sums.order_day, sums.order_net, sums.order_gross, inv, has)]
    parts: list[Part | None] = []
    # A copy per run of _CHUNK_BUCKETS buckets, and the buckets views of it: a copy per bucket
    # and column was 1,280 short NumPy calls a batch, each taking the GIL back; the merge still
    # frees a batch's sums a run of buckets at a time.
    for first in range(0, 1 << _BUCKET_BITS, _CHUNK_BUCKETS):
        last = first + _CHUNK_BUCKETS
        c0, o0 = cb[first], ob[first]
        cc = [a[c0:cb[last]].copy() for a in c_cols]
        oc_ = [None if a is None else a[o0:ob[last]].copy() for a in o_cols]
        for p in range(first, last):
            c, o = slice(cb[p] - c0, cb[p + 1] - c0), slice(ob[p] - o0, ob[p + 1] - o0)
            k, mon, bou, ret = (a[c] for a in cc)
            oc, day, net, gross, ik, hi = (None if a is None else a[o] for a in oc_)
            parts.append(Part(ids=None if ids is None else ids[cb[p]:cb[p + 1]], key=k, monetary=mon, bought=bou,
                              returned=ret, order_customer=oc, order_day=day, order_net=net, order_gross=gross,
                              invoice_key=ik, has_invoice=hi))
    invoice_type = None if batch.invoices is None else _part_type(batch.invoices)
    return Buckets(_part_type(batch.customers), invoice_type, parts)


@dataclass
class Ingested:
    """Every batch merged: the customers' features and what the report needs.

    Attributes
    ----------
    features : CustomerFeatures
        ``features.customer`` indexes ``customer_ids``.
    customer_ids : pyarrow.Array
        Customer ids in sorted order.
    n_orders : int
    as_of : int
        The reference day.
    rows : RowCounts
    device_bytes : int
        Bytes copied to the device to clean there.
    """

    features: CustomerFeatures
    customer_ids: pa.Array
    n_orders: int
    as_of: int
    rows: RowCounts
    device_bytes: int = 0


def _local(ids: Any, xp: Any) -> tuple[Any, Any, int, Any]:
    """Codes of a batch's ids within the batch: (row codes, the batch's id set, its size,
    which rows have an id or None). Text is coded by its dictionary entries as
    encoded in the worker (entries equal once trimmed are merged across batches)."""
    if isinstance(ids, EncodedText):
        codes, present = ids.local_codes(xp)
        return codes, ids.entries(), len(ids.dictionary), present
    codes, uniques, present = code_ids([ids], xp, sort=False)
    return codes, uniques, len(uniques), present


def _line_keys(ids: Any, xp: Any) -> Any:
    """Each line's customer as a number, equal for equal ids within the batch:
    the dictionary entry of text, the value of a number (kept lines all have one)."""
    if isinstance(ids, EncodedText):
        return xp.asarray(ids.indices)
    return xp.asarray(ids.to_numpy(zero_copy_only=False))


def _sum_by_invoice(kept: KeptRows, xp: Any) -> BatchSums | None:
    """The usual case with fewer passes over the lines: when every invoice of the batch
    has one customer, lines are summed per order first (order codes are the
    invoices' own, in appearance order, so the sums stay cache-local) and per
    customer from the orders. None when an invoice is shared by customers."""
    invoice, invoices, n_invoices, has = _local(kept.invoices, xp)
    key = _line_keys(kept.ids, xp)
    runs = kept.invoices.runs if xp is np and has is None and isinstance(kept.invoices, EncodedText) else None
    if runs is not None:  # each invoice one run of lines: one customer where the key changes only at runs
        owner = key[runs]
        changed = key[1:] != key[:-1]
        changed[runs[1:] - 1] = False
        if bool(changed.any()):
            return None
    else:
        inv_rows, key_rows = (invoice, key) if has is None else (invoice[has], key[has])
        owner = xp.empty(n_invoices, dtype=key.dtype)
        owner[inv_rows] = key_rows
        if not bool(xp.all(owner[inv_rows] == key_rows)):
            return None
    order = invoice.astype(xp.int64)
    owners = [owner]
    n_orders = n_invoices
    if has is not None:  # customer-days of the lines without an invoice
        rows = xp.flatnonzero(~has)
        cust, _ = factorize_values(key[rows], sort=False)
        d = kept.day[rows].astype(xp.int64)
        lo = int(d.min())
        days, uniq = factorize_values(cust.astype(xp.int64) * (int(d.max()) - lo + 1) + (d - lo), sort=False,
                                      owned=True)
        day_owner = xp.empty(int(uniq.shape[0]), dtype=key.dtype)
        day_owner[days] = key[rows]
        order[rows] = days + n_invoices
        owners.append(day_owner)
        n_orders += int(uniq.shape[0])
    if runs is not None:  # every entry has its run of lines
        used = None
    else:
        lines = xp.bincount(order, minlength=n_orders)
        used = None if bool((lines > 0).all()) else xp.flatnonzero(lines > 0)  # blank invoice entries
    order_key = xp.concatenate(owners) if len(owners) > 1 else owner
    order_invoice = xp.arange(n_orders) if n_orders == n_invoices else \
        xp.where(xp.arange(n_orders) < n_invoices, xp.arange(n_orders), -1)
    if used is not None:
        order_key, order_invoice = order_key[used], order_invoice[used]
    grouped = None
    if isinstance(kept.ids, EncodedText):  # entries are the customers' codes already
        customer, customers, n_customers = order_key.astype(xp.int64), kept.ids.entries(), len(kept.ids.dictionary)
    else:
        coded = _bucket_codes(order_key) if xp is np else None
        if coded is None:
            customer, uniques = factorize_values(order_key, sort=False)
        else:
            customer, uniques, grouped = coded
        customers = pa.array(to_numpy(uniques), kept.ids.type)
        n_customers = len(customers)
    # Each line's customer through its order; the customer sums then add the lines in
    # their own order, as sum_lines does, whatever the codes' numbering (CSV and
    # Parquet copies of a log give identical sums).
    if xp is np:  # the index type of sum_lines' bincounts, cast per order rather than per line
        customer = customer.astype(np.intp, copy=False)
    if used is None:
        line_customer = customer[order]
    else:
        of_order = xp.empty(n_orders, dtype=customer.dtype)
        of_order[used] = customer
        line_customer = of_order[order]
    sums = sum_lines(line_customer, kept.day, kept.amount, order, n_customers, n_orders, runs)
    if used is not None:
        for name in ("order_customer", "order_net", "order_gross", "order_day"):
            setattr(sums, name, getattr(sums, name)[used])
    return BatchSums(customers, invoices, order_invoice, sums, grouped=grouped)


def sum_batch(kept: KeptRows) -> BatchSums:
    """Code one batch's kept lines within the batch and sum them per order and per customer."""
    xp = get_namespace(kept.day)
    batch = _sum_by_invoice(kept, xp) if kept.invoices is not None else None
    if batch is None:
        batch = _sum_by_line(kept, xp)
    buckets = _bucketize(batch) if xp is np else None
    # Keep one copy: the bucketed arrays hold everything (see _unbucket).
    return batch if buckets is None else BatchSums(None, None, None, None, buckets)


def _sum_by_line(kept: KeptRows, xp: Any) -> BatchSums:
    """Customers and orders coded per line, then summed per order and per customer."""
    customer, customers, n_customers, _ = _local(kept.ids, xp)
    if xp is np:
        customer, customers = _in_bucket_order(customer, customers)
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


def _merge_all(batches: list[BatchSums], ids_to_int: bool) -> tuple[LineSums, pa.Array, int]:
    """Merge the sums of several batches, coding ids and orders across all of them at once
    (array-generic): returns the sums, the sorted customer ids and the number of orders."""
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
        # NumPy's bincount adds in array order, which is batch order (CuPy's, in no fixed order).
        return xp.bincount(index, weights=xp.concatenate([getattr(b.sums, name) for b in batches]), minlength=n)

    merged_day = xp.full(n_orders, BIG_DAY, dtype=xp.int32)
    scatter_min(merged_day, order, order_day)
    merged_customer = xp.empty(n_orders, dtype=xp.int32 if n_customers < 2**31 else xp.int64)
    merged_customer[order] = order_customer
    sums = LineSums(order_customer=merged_customer, order_net=added("order_net", order, n_orders),
                    order_gross=added("order_gross", order, n_orders), order_day=merged_day,
                    monetary=added("monetary", customer, n_customers), bought=added("bought", customer, n_customers),
                    returned=added("returned", customer, n_customers))
    batches.clear()
    return sums, customer_ids, n_orders


@dataclass
class Merged:
    """Every batch's sums merged: per customer bucket on the host, or all at once."""

    n_orders: int
    sums: LineSums | None = None            # all at once: per order and per customer
    customer_ids: pa.Array | None = None    # all at once: the sorted ids the sums' codes index
    buckets: list[tuple[Any, LineSums]] | None = None  # per bucket: (its customers' ids, its sums)
    id_type: pa.DataType | None = None
    ids_to_int: bool = False

    def features(self, as_of: int, workers: int = 1) -> tuple[CustomerFeatures, pa.Array]:
        """Customer features, and the ids their ``customer`` codes index (sorted)."""
        if self.buckets is None:
            return features_from_sums(self.sums, len(self.customer_ids), as_of), self.customer_ids
        buckets, self.buckets = self.buckets, None

        def one(i: int) -> tuple[Any, CustomerFeatures, int]:
            ids, sums = buckets[i]
            buckets[i] = None  # each bucket's order sums go as its features are made
            return _bucket_features(ids, sums, as_of)

        with ThreadPoolExecutor(workers) as pool:
            done = list(pool.map(one, range(len(buckets))))
            ids = _cat([ids for ids, _, _ in done])
            n_customers = sum(n for _, _, n in done)
            if isinstance(ids, pa.Array):
                if self.ids_to_int and len(ids):  # every batch's text was checked: canonical integers
                    ids = ids.cast(pa.int64())
                order = pc.sort_indices(ids).to_numpy()
                customer_ids = ids.take(pa.array(order))
            elif workers > 1 and all(_ascending(i) for i, _, _ in done):
                sorted_ids, columns = _merge_runs(done, pool, 4 * workers)
                return CustomerFeatures(customer=np.arange(len(sorted_ids)), columns=columns,
                                        n_without_purchase=n_customers - len(sorted_ids)), \
                    pa.array(sorted_ids, self.id_type)
            else:
                order = np.argsort(ids, kind="stable")
                customer_ids = pa.array(ids[order], self.id_type)
            # Column by column on the pool: a random gather of 10⁷ rows is bound by memory
            # latency, which more threads hide (scattering each bucket's rows to their
            # sorted places instead cost more than this concatenation and gather).
            names = list(done[0][1].columns)
            gathered = pool.map(lambda name: np.concatenate([f.columns[name] for _, f, _ in done])[order], names)
            columns = dict(zip(names, gathered))
        return CustomerFeatures(customer=np.arange(len(order)), columns=columns,
                                n_without_purchase=n_customers - len(order)), customer_ids


def _ascending(ids: np.ndarray) -> bool:
    """Whether a bucket's ids are in ascending order (numbers always are: they are coded
    in sorted order, floats as numbers rather than by their bits)."""
    return len(ids) < 2 or bool((ids[1:] > ids[:-1]).all())


def _merge_runs(done: list[tuple[np.ndarray, CustomerFeatures, int]], pool: ThreadPoolExecutor,
                ranges: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The buckets' customers (each bucket's ids ascending, no id in two buckets) in id order,
    with their feature columns, built range by range on the pool.

    Splitters from a sample of every bucket cut the ids into ``ranges`` ranges of
    about equal size; each range takes its slice of every bucket, sorts that and
    gathers its rows, within a few cache-sized arrays, into its own place of
    the output. One argsort and gather over all customers (7 s of 8 s for the
    features of 3.4·10⁷ customers on this 2-core VM) ran on one core, at
    memory latency. Equal to the global sort: ids are distinct.
    """
    runs = [ids for ids, _, _ in done]
    lengths = np.array([len(r) for r in runs])
    sample = np.sort(np.concatenate([r[::max(1, len(r) // 64)] for r in runs]))
    splitters = np.unique(sample[np.linspace(0, len(sample), ranges + 1)[1:-1].astype(np.int64)]) if len(sample) \
        else sample  # no customer with a purchase: the caller says so
    cuts = np.stack([np.searchsorted(r, splitters) for r in runs]).reshape(len(runs), -1)
    lo = np.concatenate([np.zeros((len(runs), 1), np.int64), cuts], axis=1)
    hi = np.concatenate([cuts, lengths[:, None]], axis=1)
    offsets = np.concatenate([[0], np.cumsum((hi - lo).sum(axis=0))])
    names = list(done[0][1].columns)
    out_ids = np.empty(int(offsets[-1]), dtype=runs[0].dtype)
    # The dtype np.concatenate would give (an empty bucket's bincount sums are int64).
    out = {name: np.empty(len(out_ids), dtype=np.result_type(*[f.columns[name] for _, f, _ in done]))
           for name in names}

    def fill(r: int) -> None:
        pieces = [(b, int(lo[b, r]), int(hi[b, r])) for b in range(len(runs)) if hi[b, r] > lo[b, r]]
        ids = np.concatenate([runs[b][a:z] for b, a, z in pieces]) if pieces else out_ids[:0]
        order = np.argsort(ids, kind="stable")
        at = slice(int(offsets[r]), int(offsets[r + 1]))
        out_ids[at] = ids[order]
        for name in names:
            cols = [done[b][1].columns[name][a:z] for b, a, z in pieces]
            out[name][at] = np.concatenate(cols)[order] if cols else out[name][:0]

    list(pool.map(fill, range(len(offsets) - 1)))
    return out_ids, out


def _bucket_features(ids: Any, sums: LineSums, as_of: int) -> tuple[Any, CustomerFeatures, int]:
    n = len(sums.monetary)
    feats = features_from_sums(sums, n, as_of)
    kept = ids.take(pa.array(feats.customer)) if isinstance(ids, pa.Array) else ids[feats.customer]
    return kept, feats, n


def merge(batches: list[BatchSums], ids_to_int: bool, workers: int = 1) -> Merged:
    """Merge the sums of several batches (``batches`` is emptied as it is consumed).

    On the host, when every batch's ids have exact integer keys
    (:func:`_bucketize`), customers merge bucket by bucket on ``workers``
    threads; otherwise (long text ids, id types that differ between batches,
    the device) ids and orders are coded across all batches at once.
    """
    if batches and all(b.buckets is not None for b in batches) \
            and len({(b.buckets.id_type, b.buckets.invoice_type) for b in batches}) == 1:
        buckets = [b.buckets for b in batches]
        batches.clear()
        groups = _bucket_groups(buckets, workers)
        with ThreadPoolExecutor(workers) as pool:
            done = list(pool.map(lambda group: _merge_buckets(group, buckets), groups))
        return Merged(n_orders=sum(len(sums.order_net) for _, sums in done), buckets=done,
                      id_type=buckets[0].id_type, ids_to_int=ids_to_int)
    batches[:] = [_unbucket(b.buckets) if b.buckets is not None else b for b in batches]
    sums, customer_ids, n_orders = _merge_all(batches, ids_to_int)
    return Merged(n_orders=n_orders, sums=sums, customer_ids=customer_ids)


def _key_part(key: np.ndarray, id_type: pa.DataType) -> Any:
    """Unique keys back as a batch's id set for :func:`code_entries`."""
    if key.dtype.kind == "S":
        return EncodedText.encode(pa.array([k.decode() for k in key.tolist()], pa.string()))
    return pa.array(key_values(key, id_type)).cast(id_type)


def _unbucket(b: Buckets) -> BatchSums:
    """A bucketed batch as a plain one, for the all-at-once merge (id types that differ
    between batches: rare, so this need not be fast)."""
    parts = [part for part in b.parts if part is not None]
    key = np.concatenate([part.key for part in parts])
    if parts[0].ids is not None:  # one entry per customer, as the sums are: not encoded again, which would
        ids = pa.concat_arrays([part.ids for part in parts])  # merge ids equal once trimmed (" A" and "A")
        customers = EncodedText(np.empty(0, np.int32), ids, text_keys(ids))
    else:
        customers = _key_part(key, b.id_type)
    starts = np.cumsum([0] + [len(part.key) for part in parts])
    order_customer = np.concatenate([part.order_customer.astype(np.int64) + start
                                     for part, start in zip(parts, starts)])
    n_orders = len(order_customer)
    invoices = None
    order_invoice = np.full(n_orders, -1, dtype=np.int64)
    if b.invoice_type is not None:
        has = np.concatenate([np.ones(len(part.order_day), bool) if part.has_invoice is None else part.has_invoice
                              for part in parts])
        uniques, codes = np.unique(np.concatenate([part.invoice_key for part in parts])[has], return_inverse=True)
        order_invoice[has] = codes.reshape(-1)
        invoices = _key_part(uniques, b.invoice_type)

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(part, name) for part in parts])

    sums = LineSums(order_customer=order_customer, order_net=cat("order_net"), order_gross=cat("order_gross"),
                    order_day=cat("order_day"), monetary=cat("monetary"), bought=cat("bought"),
                    returned=cat("returned"))
    return BatchSums(customers, invoices, order_invoice, sums)


def _cat(parts: list[Any]) -> Any:
    if parts and isinstance(parts[0], pa.Array):
        return pa.concat_arrays(parts)
    return np.concatenate(parts)


#: The merge takes consecutive buckets together until a task holds this many orders
#: (of all batches), fewer where the pool would otherwise get under four tasks a thread.
_GROUP_ORDERS = 1 << 17


def _bucket_groups(buckets: list[Buckets], workers: int) -> list[range]:
    """Consecutive buckets merged as one task each.

    A bucket's customers are merged by a few dozen NumPy calls; on 10⁷ lines
    a bucket holds ~2·10⁴ orders, so each call is short and two threads
    merged no faster than one (retail log: 0.23 s either way; 0.17 s in groups
    of ~1.3·10⁵ orders). Buckets taken together are merged exactly as one:
    customers never share buckets. At 10⁸ lines buckets are large enough alone.
    """
    sizes = np.zeros(1 << _BUCKET_BITS, dtype=np.int64)
    for b in buckets:
        sizes += [len(part.order_day) for part in b.parts]
    target = max(1, min(_GROUP_ORDERS, int(sizes.sum()) // (4 * max(workers, 1))))
    groups, start, held = [], 0, 0
    for p, size in enumerate(sizes.tolist()):
        held += size
        if held >= target:
            groups.append(range(start, p + 1))
            start, held = p + 1, 0
    if start < len(sizes):
        groups.append(range(start, len(sizes)))
    return groups


def _merge_buckets(group: range, buckets: list[Buckets]) -> tuple[Any, LineSums]:
    """The customers of a group of buckets across batches: their ids and their merged sums.

    Each batch's part of a bucket is let go once read. Sums are added in
    batch order (bincount adds in array order; a customer is in one bucket)."""
    parts = [b.parts[p] for p in group for b in buckets]
    for b in buckets:
        for p in group:
            b.parts[p] = None

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(part, name) for part in parts])

    key = as_numbers(cat("key"))
    text = parts[0].ids is not None
    # The first index (a slower, stable sort) is needed only to find text ids; numbers are their
    # keys (floats coded as numbers, not by their bits: whole ones are sorted as integers).
    if text:
        uniques, first, customer = np.unique(key, return_index=True, return_inverse=True)
        customer = customer.reshape(-1)
    else:
        customer, uniques = unique_inverse(key_values(key, buckets[0].id_type))
    del key
    n_customers = len(uniques)
    # Each order's customer, as a code of this bucket: its part's code past the parts before.
    order_customer = cat("order_customer").astype(np.int64)
    order_customer += np.repeat(np.cumsum([0] + [len(part.key) for part in parts[:-1]]),
                                [len(part.order_customer) for part in parts])
    order_customer = customer[order_customer]
    day = cat("order_day")
    invoice, has, n_inv = None, None, 0
    if buckets[0].invoice_type is not None and all(part.has_invoice is None for part in parts):
        invoice, n_inv = equal_codes(as_numbers(cat("invoice_key")))  # every order has an invoice
    elif buckets[0].invoice_type is not None:
        has = np.concatenate([np.ones(len(part.order_day), bool) if part.has_invoice is None else part.has_invoice
                              for part in parts])
        invoice = np.zeros(len(has), dtype=np.int64)
        if has.any():
            invoice[has], n_inv = equal_codes(as_numbers(cat("invoice_key")[has]))
        if has.all():
            has = None
    order, n_orders = order_codes(order_customer, day, invoice, has, n_inv)
    merged_day = np.full(n_orders, BIG_DAY, dtype=np.int32)
    np.minimum.at(merged_day, order, day)
    merged_customer = np.empty(n_orders, dtype=np.int32 if n_customers < 2**31 else np.int64)
    merged_customer[order] = order_customer
    sums = LineSums(order_customer=merged_customer,
                    order_net=np.bincount(order, weights=cat("order_net"), minlength=n_orders),
                    order_gross=np.bincount(order, weights=cat("order_gross"), minlength=n_orders),
                    order_day=merged_day,
                    monetary=np.bincount(customer, weights=cat("monetary"), minlength=n_customers),
                    bought=np.bincount(customer, weights=cat("bought"), minlength=n_customers),
                    returned=np.bincount(customer, weights=cat("returned"), minlength=n_customers))
    if text:
        ids = pa.concat_arrays([part.ids for part in parts]).take(pa.array(first))
    else:
        ids = uniques
    return ids, sums


def ingest(items: Iterable[tuple[Path, Any]], mapping: ColumnMapping, date_format: str | None = None,
           as_of: dt.date | None = None, xp: Any = np, workers: int = 1,
           on_rows: Callable[[int], None] | None = None, timer: StageTimer | None = None) -> Ingested:
    """Read, clean and sum ``items`` on ``workers`` threads (stage ``load``), merge the
    batches (``clean``) and build customer features (``features``).

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
        merged = merge(batches, cleaner.ids_to_int, workers)
        release_freed_memory()  # the batches' sums
    with timer.stage("features"):
        features, customer_ids = merged.features(cleaner.as_of, workers)
        release_freed_memory()  # the merged sums
    return Ingested(features, customer_ids, merged.n_orders, cleaner.as_of, cleaner.rows,
                    cleaner.stats.device_bytes)
