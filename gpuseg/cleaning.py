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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .backend import get_namespace
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


# -- amounts and ids -------------------------------------------------------------

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


def _check_ids(batch: pa.RecordBatch, mapping: ColumnMapping) -> None:
    for role, column in (("customer", mapping.customer), ("invoice", mapping.invoice)):
        if column is None:
            continue
        t = batch.schema.field(column).type
        if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_string(t)
                or pa.types.is_large_string(t) or pa.types.is_decimal(t)):
            raise GpusegError(f"{role} id column {column!r} has type {t}; allowed: integers or text")


def _present(arr: pa.Array) -> np.ndarray:
    if arr.null_count == 0 and (pa.types.is_integer(arr.type) or pa.types.is_decimal(arr.type)):
        return np.ones(len(arr), dtype=bool)
    valid = arr.is_valid()
    t = arr.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        valid = pc.and_(valid, pc.not_equal(pc.utf8_trim_whitespace(arr), ""))
    elif pa.types.is_floating(t):
        valid = pc.and_(valid, pc.is_finite(arr))
    return pc.fill_null(valid, False).to_numpy(zero_copy_only=False)


def _unify(parts: list[pa.Array], text_to_int: bool = False) -> pa.Array:
    """Concatenate id arrays from several batches or files; mixed types become text.

    With ``text_to_int`` (the text came from CSV files, where ids are read as
    text to keep leading zeros) text that is all canonical integers becomes
    int64, as the file would have typed it; text from Parquet stays text.
    """
    types = {p.type for p in parts}
    if len(types) > 1:
        if all(pa.types.is_integer(t) for t in types):
            parts = [p.cast(pa.int64()) for p in parts]
        else:
            parts = [p.cast(pa.string()) for p in parts]
    arr = pa.concat_arrays(parts) if parts else pa.array([], pa.string())
    if (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)) and len(arr):
        arr = pc.utf8_trim_whitespace(arr)
        if text_to_int and pc.all(pc.match_substring_regex(arr, _INT_TEXT)).as_py():
            arr = arr.cast(pa.int64())
    return arr


def factorize(arr: pa.Array, sort: bool = True) -> tuple[np.ndarray, pa.Array]:
    """Integer codes and unique values of a null-free array.

    With ``sort``, codes follow the sorted order of the values. Integers in a
    dense range are coded by direct indexing (linear time); other values by
    Arrow's hash table.
    """
    n = len(arr)
    if pa.types.is_integer(arr.type) and n:
        v = arr.to_numpy(zero_copy_only=False)
        lo, hi = int(v.min()), int(v.max())
        span = hi - lo + 1
        if span <= max(4 * n, 1 << 20):
            offset = np.subtract(v, lo, dtype=np.int64)
            present = np.zeros(span, dtype=bool)
            present[offset] = True
            uniques = np.flatnonzero(present)
            rank = np.cumsum(present, dtype=np.int32 if len(uniques) < 2**31 else np.int64)
            rank -= 1
            codes = rank[offset]
            return codes, pa.array((uniques + lo).astype(v.dtype))
    enc = pc.dictionary_encode(arr)
    codes, dictionary = enc.indices.to_numpy(zero_copy_only=False), enc.dictionary
    if sort and len(dictionary):
        order = pc.sort_indices(dictionary).to_numpy()
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        codes, dictionary = rank[codes], dictionary.take(pa.array(order))
    return _small(codes, len(dictionary)), dictionary


def _small(codes: np.ndarray, n: int) -> np.ndarray:
    return codes.astype(np.int32 if n < 2**31 else np.int64, copy=False)


def _orders(customer: np.ndarray, day: np.ndarray, invoice: pa.Array | None) -> tuple[np.ndarray, int]:
    """Order codes: invoices within customers, customer-days where no invoice."""
    n = len(customer)
    has = _present(invoice) if invoice is not None else np.zeros(n, dtype=bool)
    every = bool(has.all())
    parts: list[tuple[np.ndarray, np.ndarray | None]] = []  # (codes, rows) per kind of order
    n_orders = 0
    if has.any():
        rows = None if every else np.flatnonzero(has)
        inv_codes, inv_uniques = factorize(invoice if every else invoice.take(pa.array(rows)), sort=False)
        cust = customer if every else customer[rows]
        owner = np.empty(len(inv_uniques), dtype=cust.dtype)
        owner[inv_codes] = cust
        if np.array_equal(owner[inv_codes], cust):  # the usual case: an invoice has one customer
            codes, n_orders = inv_codes, len(inv_uniques)
        else:
            key = cust.astype(np.int64) * len(inv_uniques) + inv_codes
            codes, uniq = factorize(pa.array(key), sort=False)
            n_orders = len(uniq)
        if every:
            return codes, n_orders
        parts.append((codes, rows))
    rows = np.flatnonzero(~has)
    d = day[rows].astype(np.int64)
    key = customer[rows].astype(np.int64) * (int(d.max() - d.min()) + 1) + (d - d.min())
    codes, uniq = factorize(pa.array(key), sort=False)
    parts.append((codes.astype(np.int64) + n_orders, rows))
    n_orders += len(uniq)
    order = np.empty(n, dtype=np.int64)
    for codes, rows in parts:
        order[rows] = codes
    return _small(order, n_orders), n_orders


# -- the stage -------------------------------------------------------------------

@dataclass
class KeptRows:
    """The rows of one batch that survived cleaning, ids still as read."""

    ids: pa.Array
    invoices: pa.Array | None
    day: np.ndarray
    amount: np.ndarray


class Cleaner:
    """Cleans batches one at a time, counting every dropped row.

    :func:`clean` runs it over whole inputs; scoring runs it while streaming
    rows into partitions.
    """

    def __init__(self, mapping: ColumnMapping, date_format: str | None = None, as_of: dt.date | None = None):
        self.mapping, self.date_format = mapping, date_format
        self.rows = RowCounts()
        self.as_of_day = day_number(as_of) if as_of is not None else None
        if as_of is not None:
            self.rows.dropped[AFTER_AS_OF] = 0
        self.max_day: int | None = None
        self.from_csv = True  # every text id came from a CSV file
        self.text_ids_all_int = True  # and every one of them is a canonical integer
        self.bad_date_example: tuple[Path, object] | None = None

    def batch(self, path: Path, batch: pa.RecordBatch) -> KeptRows | None:
        """Clean one batch; None when it has no rows."""
        mapping, rows = self.mapping, self.rows
        n = batch.num_rows
        if n == 0:
            return None
        rows.read += n
        batch = _plain(batch)
        _check_ids(batch, mapping)
        cust_col = batch.column(mapping.customer)
        has_cust = _present(cust_col)
        day, date_ok = parse_days(batch.column(mapping.date), self.date_format, mapping.date)
        amount = line_amounts(batch, mapping)
        amount_ok = np.isfinite(amount)
        bad_date = has_cust & ~date_ok
        rows.dropped["missing_customer_id"] += int(n - has_cust.sum())
        rows.dropped["unparseable_date"] += int(bad_date.sum())
        keep = has_cust & date_ok
        rows.dropped["bad_amount"] += int((keep & ~amount_ok).sum())
        keep &= amount_ok
        if self.as_of_day is not None:
            late = keep & (day >= self.as_of_day)
            rows.dropped[AFTER_AS_OF] += int(late.sum())
            keep &= ~late
        if self.bad_date_example is None and bad_date.any():
            self.bad_date_example = (path, batch.column(mapping.date)[int(np.argmax(bad_date))].as_py())
        mask = pa.array(keep)
        ids = cust_col.filter(mask)
        if pa.types.is_string(ids.type) or pa.types.is_large_string(ids.type):
            self.from_csv &= path.name.lower().endswith(CSV_SUFFIXES)
            if self.text_ids_all_int and len(ids):
                self.text_ids_all_int = bool(pc.all(pc.match_substring_regex(pc.utf8_trim_whitespace(ids),
                                                                             _INT_TEXT)).as_py())
        kept = KeptRows(ids=ids, invoices=batch.column(mapping.invoice).filter(mask) if mapping.invoice else None,
                        day=day[keep], amount=amount[keep])
        rows.used += len(kept.day)
        if len(kept.day):
            top = int(kept.day.max())
            self.max_day = top if self.max_day is None else max(self.max_day, top)
        return kept

    def check(self) -> None:
        """Raise the errors that only the whole input can show."""
        rows = self.rows
        if rows.read == 0:
            raise GpusegError("the input has no data rows")
        example = self.bad_date_example
        if example and rows.dropped["unparseable_date"] == rows.read - rows.dropped["missing_customer_id"]:
            path, value = example
            hint = ("give its format with --date-format, e.g. --date-format '%m/%d/%Y %H:%M'"
                    if self.date_format is None else f"it does not match --date-format {self.date_format!r}")
            raise GpusegError(f"no date in column {self.mapping.date!r} could be parsed (e.g. {value!r} in "
                              f"{str(path)!r}); {hint}")
        if rows.used == 0:
            reasons = ", ".join(f"{k}: {v}" for k, v in rows.dropped.items() if v)
            raise GpusegError(f"no usable rows: all {rows.read} rows were dropped ({reasons})")

    @property
    def as_of(self) -> int:
        """The reference day: given, or the day after the latest used row."""
        if self.as_of_day is not None:
            return self.as_of_day
        return (self.max_day if self.max_day is not None else 0) + 1

    @property
    def ids_to_int(self) -> bool:
        """Whether text ids become integers (CSV text that is all canonical integers)."""
        return self.from_csv and self.text_ids_all_int


def assemble(parts: list[KeptRows], as_of: int, rows: RowCounts, ids_to_int: bool,
             has_invoice: bool) -> Transactions:
    """Code the kept rows of some batches into :class:`Transactions`."""
    day_all = np.concatenate([p.day for p in parts]) if parts else np.empty(0, np.int32)
    customer, customer_ids = factorize(_unify([p.ids for p in parts], ids_to_int), sort=True)
    invoice = _unify([p.invoices for p in parts], text_to_int=True) if has_invoice else None
    order, n_orders = _orders(customer, day_all, invoice)
    amount = np.concatenate([p.amount for p in parts]) if parts else np.empty(0)
    return Transactions(customer=customer, day=day_all, amount=amount, order=order,
                        n_orders=n_orders, customer_ids=customer_ids, as_of=as_of, rows=rows)


def clean(batches: Iterable[tuple[Path, Iterator[pa.RecordBatch]]], mapping: ColumnMapping,
          date_format: str | None = None, as_of: dt.date | None = None) -> Transactions:
    """Turn raw batches into :class:`Transactions`, counting every dropped row.

    Parameters
    ----------
    batches : iterable of (path, iterator of RecordBatch)
        The mapped columns of each input file.
    mapping : ColumnMapping
    date_format : str, optional
        strptime format of text dates (ISO 8601 and YYYYMMDD need none).
    as_of : date, optional
        Reference day; rows dated on or after it are dropped. Default: the
        day after the latest used row.

    Raises
    ------
    GpusegError
        When the input has no rows, or no row survives cleaning.
    """
    cleaner = Cleaner(mapping, date_format, as_of)
    parts = [kept for path, file_batches in batches for batch in file_batches
             if (kept := cleaner.batch(path, batch)) is not None]
    cleaner.check()
    return assemble(parts, cleaner.as_of, cleaner.rows, cleaner.ids_to_int, mapping.invoice is not None)
