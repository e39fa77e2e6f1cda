"""Cleaning: parse dates and amounts, drop unusable rows (counted), code ids.

Rows are dropped for the first of these reasons that applies, and counted
under it: ``missing_customer_id``, ``unparseable_date``, ``bad_amount``
(missing or not finite), and, when ``as_of`` is given, ``after_as_of``
(dated on or after it). Returns and cancellations (negative amounts) are
kept. Customer ids are coded 0..C-1 in sorted id order; an *order* is an
invoice of one customer, or one customer-day when there is no invoice.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .backend import get_namespace, to_numpy
from .columns import ColumnMapping
from .errors import GpusegError
from .reading import CSV_SUFFIXES

DROP_REASONS = ("missing_customer_id", "unparseable_date", "bad_amount")
AFTER_AS_OF = "after_as_of"
EPOCH = dt.date(1970, 1, 1)

_INT_TEXT = r"^-?(0|[1-9][0-9]{0,17})$"


@dataclass
class RowCounts:
    """What happened to the input rows."""

    read: int = 0
    used: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))

    def to_dict(self) -> dict:
        return {"read": self.read, "used": self.used, "dropped": dict(self.dropped)}


@dataclass
class Transactions:
    """Clean, coded transaction lines (host arrays, one entry per line).

    Attributes
    ----------
    customer : int32 array
        Customer code; ``customer_ids[code]`` is the id as read.
    day : int32 array
        Calendar day, days since 1970-01-01.
    amount : float64 array
        Line amount (negative for returns).
    order : int32 or int64 array
        Order code 0..n_orders-1; every order belongs to one customer.
    """

    customer: np.ndarray
    day: np.ndarray
    amount: np.ndarray
    order: np.ndarray
    n_orders: int
    customer_ids: pa.Array
    as_of: int
    rows: RowCounts
    read_seconds: float = 0.0

    @property
    def n_customers(self) -> int:
        return len(self.customer_ids)


def day_number(d: dt.date) -> int:
    return (d - EPOCH).days


def day_date(n: int) -> dt.date:
    return EPOCH + dt.timedelta(days=int(n))


# -- dates ---------------------------------------------------------------------

def days_from_civil(y: Any, m: Any, d: Any) -> Any:
    """Days since 1970-01-01 of proleptic Gregorian dates (H. Hinnant's algorithm).

    Integer arrays of any namespace (NumPy, CuPy).
    """
    xp = get_namespace(y)
    y = y - (m <= 2)
    era = xp.floor_divide(y, 400)
    yoe = y - era * 400
    doy = (153 * (m + xp.where(m > 2, -3, 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _days_in_month(y: Any, m: Any) -> Any:
    xp = get_namespace(y)
    leap = ((y % 4 == 0) & (y % 100 != 0)) | (y % 400 == 0)
    lengths = xp.asarray([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])
    return lengths[xp.clip(m, 1, 12) - 1] + (leap & (m == 2))


def yyyymmdd_days(values: Any, valid: Any) -> tuple[Any, Any]:
    """Integer YYYYMMDD -> (days since 1970-01-01 as int32, which are real dates)."""
    xp = get_namespace(values)
    v = xp.where(valid, values, 19700101).astype(xp.int64)
    y, m, d = v // 10000, (v // 100) % 100, v % 100
    ok = valid & (v >= 10000101) & (v <= 99991231) & (m >= 1) & (m <= 12) & (d >= 1)
    ok &= d <= _days_in_month(y, m)
    days = xp.where(ok, days_from_civil(y, m, d), 0)
    return days.astype(xp.int32), ok


def _date32_days(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    valid = arr.is_valid().to_numpy(zero_copy_only=False)
    days = pc.fill_null(arr.cast(pa.date32()).view(pa.int32()), 0).to_numpy(zero_copy_only=False)
    return days.astype(np.int32, copy=False), valid


def _strictly_valid(text: str, date_format: str) -> bool:
    try:
        dt.datetime.strptime(text, date_format)
    except ValueError as exc:
        # Only an impossible day is judged here; other disagreements between
        # Python's and Arrow's strptime leave Arrow's reading alone.
        return "range" not in str(exc)
    return True


def _reject_rollover(text: pa.Array, parsed: pa.Array, date_format: str) -> pa.Array:
    """Null where ``parsed`` is an impossible date rolled over (02/30 -> 03/01).

    Arrow's strptime does not check the day against the month. A rolled-over
    date lands on day 1..3 of the next month, so only those rows are checked
    again, with Python's strict parser, once per distinct text.
    """
    suspect = pc.fill_null(pc.less_equal(pc.day(parsed), 3), False)
    if not pc.any(suspect).as_py():
        return parsed
    bad = [v for v in pc.unique(text.filter(suspect)).to_pylist() if not _strictly_valid(v, date_format)]
    if not bad:
        return parsed
    return pc.if_else(pc.is_in(text, pa.array(bad, text.type)), pa.scalar(None, parsed.type), parsed)


def _text_days(arr: pa.Array, date_format: str | None) -> tuple[np.ndarray, np.ndarray]:
    text = pc.utf8_trim_whitespace(arr)
    if date_format:
        parsed = pc.strptime(text, format=date_format, unit="s", error_is_null=True)
        return _date32_days(_reject_rollover(text, parsed, date_format))
    # ISO 8601 (date, or date then 'T' or ' ' and a time): the date part must
    # round-trip, since strptime would roll 2024-02-30 over into March.
    head = pc.utf8_slice_codeunits(text, 0, 10)
    parsed = pc.strptime(head, format="%Y-%m-%d", unit="s", error_is_null=True)
    sep = pc.utf8_slice_codeunits(text, 10, 11)
    shape_ok = pc.or_(pc.equal(pc.utf8_length(text), 10), pc.is_in(sep, pa.array(["T", " "])))
    exact = pc.equal(pc.strftime(parsed, format="%Y-%m-%d"), head)
    iso = pc.if_else(pc.and_(shape_ok, exact), parsed, pa.scalar(None, parsed.type))
    days, ok = _date32_days(iso)
    # Compact integer dates written as text (YYYYMMDD).
    compact = pc.match_substring_regex(text, r"^[0-9]{8}$")
    compact_np = pc.fill_null(compact, False).to_numpy(zero_copy_only=False) & ~ok
    if compact_np.any():
        nums = pc.cast(pc.if_else(compact, text, "0"), pa.int64()).to_numpy(zero_copy_only=False)
        cdays, cok = yyyymmdd_days(nums, compact_np)
        days = np.where(cok, cdays, days)
        ok = ok | cok
    return days, ok


def parse_days(arr: pa.Array, date_format: str | None = None, column: str = "date") -> tuple[np.ndarray, np.ndarray]:
    """Calendar days (since 1970-01-01, int32) of a date column, and which parsed.

    Accepts dates, timestamps (days in the timestamp's own zone), integer
    YYYYMMDD, ISO 8601 text, and text in ``date_format`` (strptime codes).
    """
    t = arr.type
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return _date32_days(arr)
    if pa.types.is_integer(t):
        valid = arr.is_valid().to_numpy(zero_copy_only=False)
        return yyyymmdd_days(pc.fill_null(arr, 0).to_numpy(zero_copy_only=False), valid)
    if pa.types.is_floating(t):
        v = pc.fill_null(arr, np.nan).to_numpy(zero_copy_only=False)
        valid = np.isfinite(v) & (v == np.floor(np.where(np.isfinite(v), v, 0)))
        return yyyymmdd_days(np.where(valid, v, 0).astype(np.int64), valid)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return _text_days(arr, date_format)
    raise GpusegError(f"date column {column!r} has type {t}; allowed: dates, timestamps, integer YYYYMMDD, "
                      "ISO 8601 text, or text in the format given by --date-format")


# -- amounts and ids (host decoding) -------------------------------------------------

def _numeric(arr: pa.Array, column: str) -> np.ndarray:
    t = arr.type
    if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)):
        raise GpusegError(f"column {column!r} has type {t}; amounts, quantities and prices must be numeric")
    return pc.fill_null(arr.cast(pa.float64()), np.nan).to_numpy(zero_copy_only=False)


def line_amounts(batch: pa.RecordBatch, mapping: ColumnMapping) -> np.ndarray:
    """Line amount: the amount column, else quantity × unit price (NaN where missing)."""
    if mapping.amount:
        return _numeric(batch.column(mapping.amount), mapping.amount)
    qty = _numeric(batch.column(mapping.quantity), mapping.quantity)
    price = _numeric(batch.column(mapping.price), mapping.price)
    return qty * price


def _plain(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Dictionary-encoded columns (e.g. pandas categoricals) decoded to plain arrays."""
    if not any(pa.types.is_dictionary(f.type) for f in batch.schema):
        return batch
    return pa.record_batch([c.dictionary_decode() if pa.types.is_dictionary(c.type) else c for c in batch.columns],
                           names=batch.schema.names)


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _check_ids(batch: pa.RecordBatch, mapping: ColumnMapping) -> None:
    for role, column in (("customer", mapping.customer), ("invoice", mapping.invoice)):
        if column is None:
            continue
        t = batch.schema.field(column).type
        if not (pa.types.is_integer(t) or pa.types.is_floating(t) or _is_text(t) or pa.types.is_decimal(t)):
            raise GpusegError(f"{role} id column {column!r} has type {t}; allowed: integers or text")


def _present(arr: pa.Array) -> np.ndarray:
    """Which ids are there: not null, not blank text, not a non-finite float."""
    if arr.null_count == 0 and (pa.types.is_integer(arr.type) or pa.types.is_decimal(arr.type)):
        return np.ones(len(arr), dtype=bool)
    if pa.types.is_dictionary(arr.type):
        blank = _present(arr.dictionary)
        return arr.is_valid().to_numpy(zero_copy_only=False) & blank[pc.fill_null(arr.indices, 0).to_numpy()]
    valid = arr.is_valid()
    t = arr.type
    if _is_text(t):
        valid = pc.and_(valid, pc.not_equal(pc.utf8_trim_whitespace(arr), ""))
    elif pa.types.is_floating(t):
        valid = pc.and_(valid, pc.is_finite(arr))
    return pc.fill_null(valid, False).to_numpy(zero_copy_only=False)


def _all_int_text(text: pa.Array) -> bool:
    return bool(pc.all(pc.match_substring_regex(pc.utf8_trim_whitespace(text), _INT_TEXT)).as_py())


# -- drop accounting and coding (array namespace: NumPy or CuPy) ---------------------------

def screen(has_customer: Any, day: Any, date_ok: Any, amount: Any,
           as_of_day: int | None = None) -> tuple[Any, dict[str, int]]:
    """Which rows to keep, and how many were dropped for which reason.

    The one drop rule of every front-end (single process, streamed scoring,
    Dask, cuDF): a row counts once, under the first of ``missing_customer_id``,
    ``unparseable_date``, ``bad_amount`` (missing or not finite) and, with
    ``as_of_day``, ``after_as_of`` (dated on or after it).

    Parameters
    ----------
    has_customer, date_ok : bool arrays of shape (n,)
    day : int array of shape (n,)
        Days since 1970-01-01 (any value where not ``date_ok``).
    amount : float array of shape (n,)
    as_of_day : int, optional

    Returns
    -------
    keep : bool array of shape (n,), in the input's namespace
    dropped : dict of reason -> int
    """
    xp = get_namespace(day, amount)
    n = int(day.shape[0])
    keep = has_customer & date_ok
    amount_ok = xp.isfinite(amount)
    dropped = {"missing_customer_id": n - int(xp.count_nonzero(has_customer)),
               "unparseable_date": int(xp.count_nonzero(has_customer & ~date_ok)),
               "bad_amount": int(xp.count_nonzero(keep & ~amount_ok))}
    keep &= amount_ok
    if as_of_day is not None:
        late = keep & (day >= as_of_day)
        dropped[AFTER_AS_OF] = int(xp.count_nonzero(late))
        keep &= ~late
    return keep, dropped


def _code_dtype(n: int) -> Any:
    return np.int32 if n < 2**31 else np.int64


def factorize_values(values: Any, sort: bool = True, owned: bool = False) -> tuple[Any, Any]:
    """Integer codes and unique values of a numeric array without NaN, in its namespace.

    Integers (or integral floats, as ids with gaps come from pandas) in a
    dense range are coded by direct indexing, in linear time, in sorted order.
    Other values: Arrow's hash table on the host (sorted afterwards when
    ``sort``), a sort on the device. ``owned`` lets the array be overwritten.
    """
    xp = get_namespace(values)
    n = int(values.shape[0])
    if n == 0:
        return xp.empty(0, dtype=np.int32), values[:0]
    if values.dtype.kind in "iu" and values.dtype.itemsize < 8:
        values, owned = values.astype(xp.int64), True  # room for value - min
    lo_v, hi_v = values.min(), values.max()
    lo, hi = float(lo_v), float(hi_v)
    integral = values.dtype.kind in "iu" or (abs(lo) < 2**52 and abs(hi) < 2**52
                                            and bool(xp.all(values == xp.floor(values))))
    if integral and hi - lo + 1 <= max(4 * n, 1 << 20):
        lo_i, span = int(lo), int(hi - lo) + 1
        offset = xp.subtract(values, values.dtype.type(lo_i), out=values if owned else None)
        offset = offset.astype(_code_dtype(span), copy=False)
        present = xp.zeros(span, dtype=bool)
        present[offset] = True
        uniques = xp.flatnonzero(present)
        rank = xp.cumsum(present, dtype=_code_dtype(int(uniques.shape[0])))
        rank -= 1
        return rank[offset], (uniques + lo_i).astype(values.dtype)
    if xp is np:
        enc = pc.dictionary_encode(pa.array(values))
        codes, dictionary = enc.indices.to_numpy(zero_copy_only=False), enc.dictionary.to_numpy(zero_copy_only=False)
        if sort:
            order = np.argsort(dictionary, kind="stable")
            rank = np.empty_like(order)
            rank[order] = np.arange(len(order))
            codes, dictionary = rank[codes], dictionary[order]
        return codes.astype(_code_dtype(len(dictionary)), copy=False), dictionary
    uniques, codes = xp.unique(values, return_inverse=True)
    return codes.reshape(-1).astype(_code_dtype(int(uniques.shape[0])), copy=False), uniques


def _unify(parts: list[pa.Array], text_to_int: bool = False) -> pa.Array:
    """Concatenate id arrays from several batches or files; mixed types become text.

    With ``text_to_int`` (the text came from CSV files, where ids are read as
    text to keep leading zeros) text that is all canonical integers becomes
    int64, as the file would have typed it; text from Parquet stays text.
    """
    parts = [p.dictionary_decode() if pa.types.is_dictionary(p.type) else p for p in parts]
    types = {p.type for p in parts}
    if len(types) > 1:
        if all(pa.types.is_integer(t) for t in types):
            parts = [p.cast(pa.int64()) for p in parts]
        else:
            parts = [p.cast(pa.string()) for p in parts]
    arr = pa.concat_arrays(parts) if parts else pa.array([], pa.string())
    if _is_text(arr.type) and len(arr):
        arr = pc.utf8_trim_whitespace(arr)
        if text_to_int and pc.all(pc.match_substring_regex(arr, _INT_TEXT)).as_py():
            arr = arr.cast(pa.int64())
    return arr


def factorize(arr: pa.Array, sort: bool = True) -> tuple[np.ndarray, pa.Array]:
    """Integer codes and unique values of a null-free Arrow array (host).

    With ``sort``, codes follow the sorted order of the values.
    """
    if pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type):
        codes, uniques = factorize_values(arr.to_numpy(zero_copy_only=False), sort)
        return codes, pa.array(uniques, arr.type)
    enc = pc.dictionary_encode(arr)
    codes, dictionary = enc.indices.to_numpy(zero_copy_only=False), enc.dictionary
    if sort and len(dictionary):
        order = pc.sort_indices(dictionary).to_numpy()
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        codes, dictionary = rank[codes], dictionary.take(pa.array(order))
    return codes.astype(_code_dtype(len(dictionary)), copy=False), dictionary


def _pack_short(text: pa.Array) -> np.ndarray | None:
    """Text of at most 8 bytes as uint64 keys (bytes big-endian, zero-padded):
    equal keys for equal text, ordered as the text sorts. None when longer text
    or a NUL byte (which would make the padding ambiguous) exists.

    Hashing integer keys is several times faster than hashing strings, and
    invoice and customer ids are almost always this short.
    """
    if len(text) == 0 or text.null_count or not pa.types.is_string(text.type):
        return None
    offsets = np.frombuffer(text.buffers()[1], dtype=np.int32)[text.offset:text.offset + len(text) + 1]
    lengths = np.diff(offsets)
    if int(lengths.max()) > 8:
        return None
    data = np.frombuffer(text.buffers()[2], dtype=np.uint8)[int(offsets[0]):int(offsets[-1])]
    if not data.all():
        return None
    data = np.concatenate([data, np.zeros(8, np.uint8)])
    starts = offsets[:-1] - offsets[0]
    key = np.zeros(len(text), dtype=np.uint64)
    for j in range(8):  # one byte column at a time: 8 gathers, no (n, 8) temporaries
        byte = data[starts + j].astype(np.uint64)
        byte[lengths <= j] = 0
        key <<= np.uint64(8)
        key |= byte
    return key


@dataclass
class EncodedText:
    """Text ids of one batch, dictionary-encoded in its worker thread.

    The per-batch work (hashing rows, trimming, the integer check, packing
    short text into integer keys) runs on the thread pool; only the
    dictionaries, a few per cent of the rows for invoice ids, meet on one
    thread in :func:`code_ids`.
    """

    indices: np.ndarray            # int32 entry of each row, -1 where null
    dictionary: pa.Array           # trimmed text
    keys: np.ndarray | None        # uint64 key of each entry (see _pack_short); None when some is long
    all_int: bool                  # every entry is a canonical integer

    @classmethod
    def encode(cls, text: pa.Array) -> "EncodedText":
        enc = pc.dictionary_encode(text)
        dictionary = pc.utf8_trim_whitespace(enc.dictionary)
        indices = pc.fill_null(enc.indices, -1).to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
        all_int = bool(len(dictionary)) and bool(pc.all(pc.match_substring_regex(dictionary, _INT_TEXT)).as_py())
        return cls(indices, dictionary, _pack_short(dictionary), all_int)

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def null_count(self) -> int:
        return int(np.count_nonzero(self.indices < 0))

    def filter(self, mask: pa.Array) -> "EncodedText":
        return EncodedText(self.indices[mask.to_numpy(zero_copy_only=False)], self.dictionary, self.keys,
                           self.all_int)

    def decode(self) -> pa.Array:
        idx = pa.array(self.indices, mask=self.indices < 0)
        return self.dictionary.take(idx)


def _entry_codes(parts: list[EncodedText], sort: bool, text_to_int: bool) -> tuple[np.ndarray, pa.Array]:
    """Codes of the dictionary entries of several batches (one after the other), merging
    equal entries (equal as integers with ``text_to_int``); blank entries get -1."""
    text = pa.concat_arrays([p.dictionary for p in parts])
    entry = np.full(len(text), -1, dtype=np.int64)
    if text_to_int and all(p.all_int or not len(p.dictionary) for p in parts):
        codes, uniques = factorize(text.cast(pa.int64()), sort)
        entry[:] = codes
        return entry, uniques
    if all(p.keys is not None or not len(p.dictionary) for p in parts):
        keys = np.concatenate([p.keys for p in parts if p.keys is not None])
        keep = np.flatnonzero(keys != 0)  # key 0 is the empty text
        codes, _ = factorize_values(keys[keep], sort, owned=True)
        first = np.empty(int(codes.max()) + 1 if len(codes) else 0, dtype=np.int64)
        first[codes[::-1]] = keep[::-1]  # the first entry of each code
        entry[keep] = codes
        return entry, text.take(pa.array(first))
    blank = pc.fill_null(pc.equal(text, ""), True).to_numpy(zero_copy_only=False)
    keep = np.flatnonzero(~blank)
    codes, uniques = factorize(text.take(pa.array(keep)) if len(keep) < len(text) else text, sort)
    entry[keep] = codes
    return entry, uniques


def code_ids(parts: list[Any], xp: Any = np, sort: bool = True,
             text_to_int: bool = False) -> tuple[Any, pa.Array, Any]:
    """Codes of the ids of several batches, their unique values, and which rows have an id.

    ``parts`` are Arrow arrays or, for text, :class:`EncodedText` (encoded in
    the worker threads); the dictionaries are unified here once, on the host,
    and only integer codes go to ``xp``'s device. Numbers are coded in ``xp``.

    Returns
    -------
    codes : int array of shape (n,) in ``xp``
        Any value where the row has no id.
    uniques : pyarrow.Array
    present : bool array of shape (n,) in ``xp``, or None when every row has an id
    """
    if parts and all(isinstance(p, EncodedText) for p in parts):
        entry, uniques = _entry_codes(parts, sort, text_to_int)
        starts = np.cumsum([0] + [len(p.dictionary) for p in parts])
        # Index -1 (a null row) reads the -1 appended to each batch's entries.
        codes = xp.concatenate([xp.asarray(np.append(entry[starts[i]:starts[i + 1]], -1))[xp.asarray(p.indices)]
                                for i, p in enumerate(parts)])
        codes = codes.astype(_code_dtype(len(uniques)), copy=False)
        present = codes >= 0
        return codes, uniques, None if bool(present.all()) else present
    parts = [p.decode() if isinstance(p, EncodedText) else p for p in parts]
    if parts and all(pa.types.is_integer(p.type) or pa.types.is_floating(p.type) for p in parts) \
            and len({p.type for p in parts}) == 1:
        has = np.concatenate([_present(p) for p in parts])
        every = bool(has.all())
        values = np.concatenate([p.to_numpy(zero_copy_only=False) if p.null_count == 0 else
                                 pc.fill_null(p, 0).to_numpy(zero_copy_only=False) for p in parts])
        values = xp.asarray(values if every else values[has])
        codes, uniques = factorize_values(values, sort, owned=True)
        uniques = pa.array(to_numpy(uniques), parts[0].type)
        if every:
            return codes, uniques, None
        out = xp.full(has.shape[0], -1, dtype=codes.dtype)
        has_x = xp.asarray(has)
        out[has_x] = codes
        return out, uniques, has_x
    arr = _unify(parts, text_to_int)
    has = _present(arr)
    every = bool(has.all())
    codes, uniques = factorize(arr if every else arr.filter(pa.array(has)), sort)
    if every:
        return xp.asarray(codes), uniques, None
    out = np.full(len(arr), -1, dtype=codes.dtype)
    out[has] = codes
    return xp.asarray(out), uniques, xp.asarray(has)


def order_codes(customer: Any, day: Any, invoice: Any | None = None, has_invoice: Any | None = None,
                n_invoices: int = 0) -> tuple[Any, int]:
    """Order codes: invoices within customers, customer-days where there is no invoice.

    Parameters
    ----------
    customer, day : int arrays of shape (n,), one namespace
    invoice : int array of shape (n,), optional
        Invoice codes, dense in ``0..n_invoices-1`` over the rows that have
        one (any value where ``has_invoice`` is False), as :func:`code_ids` gives.
    has_invoice : bool array of shape (n,), optional
        None: every row has an invoice (when ``invoice`` is given).

    Returns
    -------
    order : int32 (or int64) array of shape (n,), and the number of orders
    """
    xp = get_namespace(customer)
    n = int(customer.shape[0])
    if invoice is None:
        has = xp.zeros(n, dtype=bool)
    else:
        has = has_invoice if has_invoice is not None else xp.ones(n, dtype=bool)
    every = invoice is not None and bool(has.all())
    parts: list[tuple[Any, Any]] = []  # (codes, rows) per kind of order
    n_orders = 0
    if invoice is not None and bool(has.any()):
        rows = None if every else xp.flatnonzero(has)
        inv = invoice if every else invoice[rows]
        cust = customer if every else customer[rows]
        n_inv = n_invoices
        owner = xp.empty(n_inv, dtype=cust.dtype)
        owner[inv] = cust
        if bool(xp.all(owner[inv] == cust)):  # the usual case: an invoice has one customer
            codes, n_orders = inv, n_inv
        else:
            key = cust.astype(xp.int64) * n_inv + inv
            codes, uniq = factorize_values(key, sort=False, owned=True)
            n_orders = int(uniq.shape[0])
        if every:
            return codes, n_orders
        parts.append((codes, rows))
    rows = xp.flatnonzero(~has)
    d = day[rows].astype(xp.int64)
    lo = int(d.min())
    key = customer[rows].astype(xp.int64) * (int(d.max()) - lo + 1) + (d - lo)
    codes, uniq = factorize_values(key, sort=False, owned=True)
    parts.append((codes.astype(xp.int64) + n_orders, rows))
    n_orders += int(uniq.shape[0])
    order = xp.empty(n, dtype=_code_dtype(n_orders))
    for codes, rows in parts:
        order[rows] = codes
    return order, n_orders


# -- the stage -------------------------------------------------------------------

@dataclass
class KeptRows:
    """The rows of one batch that survived cleaning, ids still as read.

    ``ids`` and ``invoices`` are Arrow arrays on the host, or text encoded
    per batch (:class:`EncodedText`); ``day`` and ``amount`` are arrays of
    the cleaning namespace (NumPy, or CuPy when cleaning on the device).
    """

    ids: Any
    invoices: Any
    day: Any
    amount: Any


@dataclass
class BatchStats:
    """What cleaning one batch (or a whole input) saw; merged in input order."""

    rows: RowCounts
    max_day: int | None = None
    text_ids: bool = False          # some kept customer id was text
    text_from_csv: bool = True      # every text id came from a CSV file
    text_all_int: bool = True       # and every one of them is a canonical integer
    bad_date: tuple[Path, object] | None = None  # the first unparseable date seen
    device_bytes: int = 0           # copied to the device for cleaning there

    def merge(self, other: "BatchStats") -> None:
        self.rows.read += other.rows.read
        self.rows.used += other.rows.used
        for reason, count in other.rows.dropped.items():
            self.rows.dropped[reason] = self.rows.dropped.get(reason, 0) + count
        if other.max_day is not None:
            self.max_day = other.max_day if self.max_day is None else max(self.max_day, other.max_day)
        self.text_ids |= other.text_ids
        self.text_from_csv &= other.text_from_csv
        self.text_all_int &= other.text_all_int
        self.bad_date = self.bad_date or other.bad_date
        self.device_bytes += other.device_bytes


def clean_batch(path: Path, batch: pa.RecordBatch, mapping: ColumnMapping, date_format: str | None = None,
                as_of_day: int | None = None, xp: Any = np, encode_text: bool = False) -> tuple[KeptRows, BatchStats]:
    """Clean one batch: decode on the host, screen and compact in ``xp``.

    Pure (no shared state), so batches are cleaned on a thread pool. With
    ``encode_text`` text ids are dictionary-encoded here, so that only
    integer codes and one small dictionary per batch leave the thread.
    """
    n = batch.num_rows
    stats = BatchStats(RowCounts(read=n, dropped=dict.fromkeys(DROP_REASONS, 0)))
    if as_of_day is not None:
        stats.rows.dropped[AFTER_AS_OF] = 0
    batch = _plain(batch)
    _check_ids(batch, mapping)
    cust_col = batch.column(mapping.customer)
    has_cust = _present(cust_col)
    day, date_ok = parse_days(batch.column(mapping.date), date_format, mapping.date)
    amount = line_amounts(batch, mapping)
    if xp is not np:  # the rest of the rules run where the features will be built
        stats.device_bytes = sum(a.nbytes for a in (has_cust, day, date_ok, amount))
        has_cust, day, date_ok, amount = (xp.asarray(a) for a in (has_cust, day, date_ok, amount))
    keep, dropped = screen(has_cust, day, date_ok, amount, as_of_day)
    stats.rows.dropped.update(dropped)
    if dropped["unparseable_date"]:
        first = int(xp.argmax(has_cust & ~date_ok))
        stats.bad_date = (path, batch.column(mapping.date)[first].as_py())
    day, amount = day[keep], amount[keep]
    mask = pa.array(to_numpy(keep))
    ids = cust_col.filter(mask)
    if _is_text(ids.type):
        stats.text_ids = True
        stats.text_from_csv = path.name.lower().endswith(CSV_SUFFIXES)
        if encode_text:
            ids = EncodedText.encode(ids)
            stats.text_all_int = ids.all_int or not len(ids)
        else:
            stats.text_all_int = _all_int_text(ids) if len(ids) else True
    invoices = batch.column(mapping.invoice).filter(mask) if mapping.invoice else None
    if invoices is not None and encode_text and _is_text(invoices.type):
        invoices = EncodedText.encode(invoices)
    stats.rows.used = int(day.shape[0])
    if stats.rows.used:
        stats.max_day = int(day.max())
    return KeptRows(ids=ids, invoices=invoices, day=day, amount=amount), stats


def _ordered_map(fn: Callable[[Any], Any], items: Iterable[Any], workers: int) -> Iterator[Any]:
    """``map(fn, items)`` on a thread pool, in order, with at most 2 × workers items in flight
    (bounded memory: a finished batch waits only for the ones before it)."""
    if workers <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="gpuseg-clean") as pool:
        pending: deque[Future] = deque()
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) >= 2 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for f in pending:
                f.cancel()


def default_workers() -> int:
    """Threads for reading and cleaning: every core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class Cleaner:
    """Cleans batches, counting every dropped row; :func:`clean` runs it over whole inputs,
    scoring runs it while streaming rows into partitions.

    Items given to :meth:`map` are record batches, or callables that read one
    (a Parquet row group), so that reading also runs on the thread pool.
    """

    def __init__(self, mapping: ColumnMapping, date_format: str | None = None, as_of: dt.date | None = None,
                 xp: Any = np, encode_text: bool = False):
        self.mapping, self.date_format, self.xp, self.encode_text = mapping, date_format, xp, encode_text
        self.as_of_day = day_number(as_of) if as_of is not None else None
        self.stats = BatchStats(RowCounts())
        if as_of is not None:
            self.stats.rows.dropped[AFTER_AS_OF] = 0
        self.read_seconds = 0.0  # summed over threads: time spent decoding files

    @property
    def rows(self) -> RowCounts:
        return self.stats.rows

    def _clean(self, item: tuple[Path, Any]) -> tuple[KeptRows, BatchStats] | None:
        path, batch = item
        if callable(batch):
            t0 = time.perf_counter()
            batch = batch()
            self.read_seconds += time.perf_counter() - t0  # a float add: atomic under the GIL
        if batch is None or batch.num_rows == 0:
            return None
        return clean_batch(path, batch, self.mapping, self.date_format, self.as_of_day, self.xp, self.encode_text)

    def batch(self, path: Path, batch: pa.RecordBatch) -> KeptRows | None:
        """Clean one batch; None when it has no rows."""
        done = self._clean((path, batch))
        if done is None:
            return None
        self.stats.merge(done[1])
        return done[0]

    def map(self, items: Iterable[tuple[Path, Any]], workers: int = 1,
            on_rows: Callable[[int], None] | None = None) -> Iterator[KeptRows]:
        """Clean (path, batch or reader) items on ``workers`` threads; kept rows in input order."""
        for done in _ordered_map(self._clean, items, workers):
            if done is None:
                continue
            self.stats.merge(done[1])
            if on_rows is not None:
                on_rows(done[1].rows.read)
            yield done[0]

    def check(self) -> None:
        """Raise the errors that only the whole input can show."""
        check_rows(self.stats, self.mapping, self.date_format)

    def assemble(self, parts: list[KeptRows]) -> Transactions:
        """Code the kept rows (emptying ``parts``) into :class:`Transactions`."""
        tx = assemble(parts, self.as_of, self.rows, self.ids_to_int, self.mapping.invoice is not None, self.xp)
        tx.read_seconds = self.read_seconds
        return tx

    @property
    def max_day(self) -> int | None:
        return self.stats.max_day

    @property
    def as_of(self) -> int:
        """The reference day: given, or the day after the latest used row."""
        return as_of_of(self.stats, self.as_of_day)

    @property
    def ids_to_int(self) -> bool:
        """Whether text ids become integers (CSV text that is all canonical integers)."""
        return ids_to_int(self.stats)


def as_of_of(stats: BatchStats, as_of_day: int | None) -> int:
    """The reference day: given, or the day after the latest used row."""
    if as_of_day is not None:
        return as_of_day
    return (stats.max_day if stats.max_day is not None else 0) + 1


def ids_to_int(stats: BatchStats) -> bool:
    """Whether text ids become integers (CSV text that is all canonical integers)."""
    return stats.text_from_csv and stats.text_all_int


def check_rows(stats: BatchStats, mapping: ColumnMapping, date_format: str | None) -> None:
    """Raise the errors that only the whole input can show (every front-end calls this)."""
    rows = stats.rows
    if rows.read == 0:
        raise GpusegError("the input has no data rows")
    example = stats.bad_date
    if example and rows.dropped["unparseable_date"] == rows.read - rows.dropped["missing_customer_id"]:
        path, value = example
        hint = ("give its format with --date-format, e.g. --date-format '%m/%d/%Y %H:%M'"
                if date_format is None else f"it does not match --date-format {date_format!r}")
        raise GpusegError(f"no date in column {mapping.date!r} could be parsed (e.g. {value!r} in "
                          f"{str(path)!r}); {hint}")
    if rows.used == 0:
        reasons = ", ".join(f"{k}: {v}" for k, v in rows.dropped.items() if v)
        raise GpusegError(f"no usable rows: all {rows.read} rows were dropped ({reasons})")


def assemble(parts: list[KeptRows], as_of: int, rows: RowCounts, ids_to_int: bool,
             has_invoice: bool, xp: Any = None) -> Transactions:
    """Code the kept rows of some batches into :class:`Transactions` (in ``xp``,
    default: the namespace of the parts' arrays). ``parts`` is emptied as its
    columns are concatenated, to bound peak memory."""
    if xp is None:
        xp = get_namespace(*(p.day for p in parts[:1])) if parts else np
    day = xp.concatenate([p.day for p in parts]) if parts else xp.empty(0, xp.int32)
    amount = xp.concatenate([p.amount for p in parts]) if parts else xp.empty(0)
    for p in parts:
        p.day = p.amount = None
    customer, customer_ids, _ = code_ids([p.ids for p in parts], xp, sort=True, text_to_int=ids_to_int)
    invoice_parts = [p.invoices for p in parts] if has_invoice else []
    parts.clear()
    if invoice_parts:
        invoice, invoice_ids, has = code_ids(invoice_parts, xp, sort=False, text_to_int=True)
        del invoice_parts
        order, n_orders = order_codes(customer, day, invoice, has, len(invoice_ids))
    else:
        order, n_orders = order_codes(customer, day)
    return Transactions(customer=customer, day=day.astype(xp.int32, copy=False), amount=amount, order=order,
                        n_orders=n_orders, customer_ids=customer_ids, as_of=as_of, rows=rows)


def clean(batches: Iterable[tuple[Path, Iterable[Any]]], mapping: ColumnMapping,
          date_format: str | None = None, as_of: dt.date | None = None, xp: Any = np,
          workers: int = 1, on_rows: Callable[[int], None] | None = None) -> Transactions:
    """Turn raw batches into :class:`Transactions`, counting every dropped row.

    Parameters
    ----------
    batches : iterable of (path, iterable of RecordBatch or of callables reading one)
        The mapped columns of each input file.
    mapping : ColumnMapping
    date_format : str, optional
        strptime format of text dates (ISO 8601 and YYYYMMDD need none).
    as_of : date, optional
        Reference day; rows dated on or after it are dropped. Default: the
        day after the latest used row.
    xp : module
        Where the rules run and the result lives: NumPy, or CuPy (cleaning on
        the device; only text stays on the host).
    workers : int
        Threads that read and clean batches at once.

    Raises
    ------
    GpusegError
        When the input has no rows, or no row survives cleaning.
    """
    cleaner = Cleaner(mapping, date_format, as_of, xp=xp, encode_text=True)
    items = ((path, b) for path, file_batches in batches for b in file_batches)
    parts = list(cleaner.map(items, workers, on_rows))
    cleaner.check()
    return cleaner.assemble(parts)
