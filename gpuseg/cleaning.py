"""Cleaning: parse dates and amounts, drop unusable rows (counted), code ids.

Rows are dropped for the first of these reasons that applies, and counted
under it: ``missing_customer_id``, ``unparseable_date``, ``date_out_of_range``
(before 1900-01-01 or after 2262-04-11), ``bad_amount`` (missing or not
finite), and, when ``as_of`` is given, ``after_as_of`` (dated on or after it). Returns and cancellations (negative amounts) are
kept. Customer ids are coded 0..C-1 in sorted id order; an *order* is an
invoice of one customer, or one customer-day when there is no invoice.
"""

from __future__ import annotations

import datetime as dt
import importlib.abc
import re
import sys
import threading
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

from .backend import batch_to_device, get_namespace, to_numpy
from .coding import (EncodedText, all_int_text, code_ids, id_present, is_encoded_text, is_text, number_values,
                     order_codes)
from .columns import ColumnMapping
from .errors import GpusegError
from .reading import CSV_SUFFIXES

DROP_REASONS = ("missing_customer_id", "unparseable_date", "date_out_of_range", "bad_amount")
AFTER_AS_OF = "after_as_of"
EPOCH = dt.date(1970, 1, 1)
#: Dates a transaction may have: from 1900 to the last day that nanosecond timestamps (pandas,
#: Dask) hold. Others are typos or sentinels (0001-01-01, 9999-12-31) that would make as_of,
#: and so every recency, meaningless; they are dropped as ``date_out_of_range``.
FIRST_DATE, LAST_DATE = dt.date(1900, 1, 1), dt.date(2262, 4, 11)
FIRST_DAY, LAST_DAY = (FIRST_DATE - EPOCH).days, (LAST_DATE - EPOCH).days



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


def days_in_month(y: Any, m: Any) -> Any:
    """Days in month ``m`` (1-12) of year ``y``, proleptic Gregorian (array-generic)."""
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
    ok &= d <= days_in_month(y, m)
    days = xp.where(ok, days_from_civil(y, m, d), 0)
    return days.astype(xp.int32), ok


#: Units of a date64 or timestamp per day.
_PER_DAY = {"ms": 86_400_000, "s": 86_400, "us": 86_400_000_000, "ns": 86_400_000_000_000}


def _date32_days(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Days (int32; any value where null) of a date or timestamp array, and which are not null.

    Dates, and timestamps without a zone or in UTC, are divided in NumPy
    (10⁶ timestamps: 2 against 4 ms for Arrow's cast), days past int32's
    range clipped to its ends (out of range either way; Arrow's cast wraps
    them). A zoned timestamp's day is the one in its zone: Arrow's cast.
    """
    t = arr.type
    valid = np.ones(len(arr), dtype=bool) if arr.null_count == 0 else arr.is_valid().to_numpy(zero_copy_only=False)
    if pa.types.is_date32(t):
        per_day = 1
    elif pa.types.is_date64(t) or (pa.types.is_timestamp(t) and t.tz in (None, "UTC")):
        per_day = _PER_DAY["ms" if pa.types.is_date64(t) else t.unit]
    else:
        days = pc.fill_null(arr.cast(pa.date32()).view(pa.int32()), 0).to_numpy(zero_copy_only=False)
        return days.astype(np.int32, copy=False), valid
    if arr.buffers()[1] is None:  # every row null
        return np.zeros(len(arr), dtype=np.int32), valid
    values = np.frombuffer(arr.buffers()[1], dtype=np.int32 if per_day == 1 else np.int64)
    values = values[arr.offset:arr.offset + len(arr)]
    if per_day == 1:
        return values.copy(), valid
    days = np.floor_divide(values, per_day)
    if per_day <= _PER_DAY["ms"]:  # seconds and milliseconds reach past int32's days
        np.clip(days, np.iinfo(np.int32).min, np.iinfo(np.int32).max, out=days)
    return days.astype(np.int32), valid


def _uses(date_format: str, directive: str) -> bool:
    """Whether ``date_format`` has ``directive`` (``%z``), not as escaped text (``%%z``)."""
    return directive in date_format.replace("%%", "")


def _strictly_valid(text: str, date_format: str) -> bool:
    try:
        dt.datetime.strptime(text, date_format)
    except re.error:  # a format Python cannot compile (a directive twice): Arrow's reading stands
        return True
    except ValueError as exc:
        # Only an impossible day is judged here; other disagreements between
        # Python's and Arrow's strptime leave Arrow's reading alone.
        return "range" not in str(exc)
    if _uses(date_format, "%j"):
        # Python rolls day 366 of a 365-day year over into the next year; time.strptime
        # keeps the day of the year as written beside the date it rolled to.
        t = time.strptime(text, date_format)
        return dt.date(t.tm_year, t.tm_mon, t.tm_mday).timetuple().tm_yday == t.tm_yday
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


#: A UTC offset at the end, or at the start, of a date's text, as Arrow's strptime reads %z.
_ZONE_SUFFIX = r"\s*(?:[Zz]|[+-][0-9]{2}(?::?[0-9]{2})?)$"
_ZONE_PREFIX = r"^(?:[Zz]|[+-][0-9]{2}(?::?[0-9]{2})?)\s*"


def _wall_clock(text: pa.Array, date_format: str) -> tuple[pa.Array, pa.Array, str]:
    """The written (wall-clock) time of text whose format has a UTC offset (%z), as a
    naive timestamp, null where it does not parse; and the text and format that the
    rollover check reads (without the offset where it was cut off).

    Arrow's strptime gives the UTC instant, whose day may be the day before or
    after the written one. A format that ends or starts with %z is parsed
    again without it, the offset cut off the text; rows that this does not
    read (or any other place of %z) are read by Python's strptime, once per
    distinct text.
    """
    instant = pc.strptime(text, format=date_format, unit="s", error_is_null=True)
    head = date_format.strip()
    wall = pa.nulls(len(text), pa.timestamp("s"))
    checked = text, date_format
    cut = (_ZONE_SUFFIX, head[:-2].rstrip()) if head.endswith("%z") else \
        (_ZONE_PREFIX, head[2:].lstrip()) if head.startswith("%z") else None
    if cut is not None and not _uses(cut[1], "%z"):
        # Python's %z does not read every offset Arrow's does ("-05"): the check reads the rest.
        checked = (pc.replace_substring_regex(text, cut[0], ""), cut[1])
        wall = pc.strptime(checked[0], format=checked[1], unit="s", error_is_null=True)
    wall = pc.if_else(instant.is_valid(), wall, pa.scalar(None, wall.type))
    missing = pc.and_(instant.is_valid(), wall.is_null())
    if pc.any(missing).as_py():
        distinct = pc.unique(text.filter(missing))
        seconds = []
        for value in distinct.to_pylist():
            try:
                written = dt.datetime.strptime(value, date_format).replace(tzinfo=None)
                seconds.append(int((written - dt.datetime(1970, 1, 1)).total_seconds()))
            except (ValueError, re.error):  # a form Arrow reads and Python does not: the UTC instant's day
                seconds.append(None)
        found = pc.take(pa.array(seconds, pa.int64()), pc.index_in(text, value_set=distinct)).cast(wall.type)
        found = pc.coalesce(found, instant.cast(pa.int64()).cast(wall.type))
        wall = pc.if_else(missing, found, wall)
    return wall, *checked


def _text_days(arr: pa.Array, date_format: str | None) -> tuple[np.ndarray, np.ndarray]:
    text = pc.utf8_trim_whitespace(arr)
    if date_format:
        if _uses(date_format, "%z"):  # the day in the written zone, as ISO text and zoned timestamps count it
            parsed, text, date_format = _wall_clock(text, date_format)
        else:
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
    if pa.types.is_decimal(t):
        return decimal_floats(arr)
    if arr.null_count == 0:  # the usual case: no fill, one NumPy cast
        return arr.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    return pc.fill_null(arr.cast(pa.float64()), np.nan).to_numpy(zero_copy_only=False)


#: Integers up to this many digits are exact in float64 (10¹⁵ < 2⁵³).
_EXACT_DIGITS = 15


def decimal_floats(arr: pa.Array) -> np.ndarray:
    """Decimals as the float64 nearest each value (NaN where null), as the same digits read
    from text give: Arrow's cast is off by one unit in the last place for about one value
    in seven (``0.35`` became 0.35000000000000003), so a price stored as a decimal would
    not be the price written in a CSV file.

    Up to 15 digits the stored integer and the power of ten are exact floats, and one
    IEEE division (or product, for a negative scale) rounds correctly; wider decimals
    go through their text.
    """
    t = arr.type
    width = t.bit_width // 8
    if t.precision > _EXACT_DIGITS or abs(t.scale) > 22 or width > 16:
        text = pc.cast(arr, pa.string())
        return pc.fill_null(pc.cast(text, pa.float64()), np.nan).to_numpy(zero_copy_only=False)
    words = np.frombuffer(arr.buffers()[1], dtype=np.int32 if width == 4 else np.int64)
    # Below 10¹⁵ the low 64 bits of a 128-bit decimal are its value (the high ones its sign).
    step = max(1, width // 8)
    unscaled = words[arr.offset * step:(arr.offset + len(arr)) * step:step].astype(np.float64)
    values = unscaled / 10.0 ** t.scale if t.scale >= 0 else unscaled * 10.0 ** -t.scale
    if arr.null_count:
        values[~arr.is_valid().to_numpy(zero_copy_only=False)] = np.nan
    return values


def line_amounts(batch: pa.RecordBatch, mapping: ColumnMapping) -> np.ndarray:
    """Line amount: the amount column, else quantity × unit price (NaN where missing)."""
    if mapping.amount:
        return _numeric(batch.column(mapping.amount), mapping.amount)
    qty = _numeric(batch.column(mapping.quantity), mapping.quantity)
    price = _numeric(batch.column(mapping.price), mapping.price)
    with np.errstate(over="ignore", invalid="ignore"):  # inf or NaN: the line is dropped as bad_amount
        return qty * price


def _plain(batch: pa.RecordBatch, keep: tuple[str | None, ...] = ()) -> pa.RecordBatch:
    """Dictionary-encoded columns (e.g. pandas categoricals) decoded to plain arrays,
    except the text columns named in ``keep`` (ids, encoded per batch anyway); string
    views (Arrow's ``string_view``, as pyarrow writes it to Parquet) as strings."""
    def decode(name: str, c: pa.Array) -> bool:
        return pa.types.is_dictionary(c.type) and not (name in keep and is_encoded_text(c.type))

    def plain(name: str, c: pa.Array) -> pa.Array:
        if decode(name, c):
            c = c.dictionary_decode()
        return c.cast(pa.string()) if pa.types.is_string_view(c.type) else c

    def view(c: pa.Array) -> bool:
        return pa.types.is_string_view(c.type) or (pa.types.is_dictionary(c.type)
                                                    and pa.types.is_string_view(c.type.value_type))
    if not any(decode(n, c) or view(c) for n, c in zip(batch.schema.names, batch.columns)):
        return batch
    return pa.record_batch([plain(n, c) for n, c in zip(batch.schema.names, batch.columns)],
                           names=batch.schema.names)


def _kept_rows(column: pa.Array, keep: np.ndarray) -> pa.Array:
    """The rows of ``column`` that ``keep`` marks; integers and floats filtered by NumPy
    (10⁶ float customer ids: 1.5 against 3.7 ms for Arrow's filter)."""
    if keep.all():
        return column
    t = column.type
    if not (pa.types.is_integer(t) or pa.types.is_floating(t)):
        return column.filter(pa.array(keep))
    mask = None
    if column.null_count:
        mask = ~column.is_valid().to_numpy(zero_copy_only=False)[keep]
        mask = mask if mask.any() else None
    return pa.array(number_values(column)[keep], t, mask=mask)


def _check_ids(batch: pa.RecordBatch, mapping: ColumnMapping) -> pa.RecordBatch:
    """Refuse id columns of other types; decimal ids (a database's NUMBER(10)) become
    int64 where every value of the batch is a whole number in range, otherwise text, whole
    values written as integers (101.00 is "101", 101.50 stays "101.50")."""
    for role, column in (("customer", mapping.customer), ("invoice", mapping.invoice)):
        if column is None:
            continue
        t = batch.schema.field(column).type
        if not (pa.types.is_integer(t) or pa.types.is_floating(t) or is_text(t) or is_encoded_text(t)
                or pa.types.is_decimal(t)):
            raise GpusegError(f"{role} id column {column!r} has type {t}; allowed: integers or text")
        if pa.types.is_decimal(t):
            ids = batch.column(column)
            try:
                ids = pc.cast(ids, pa.int64())  # a safe cast: refuses fractions and overflow
            except pa.ArrowInvalid:
                # Text, with whole values as integers: 101.00 is "101" here and 101 in a batch
                # of whole values, so that batches typed either way merge it as one customer.
                ids = pc.replace_substring_regex(pc.cast(ids, pa.string()), r"\.0+$", "")
                ids = pc.replace_substring_regex(ids, r"^-0$", "0")
            i = batch.schema.get_field_index(column)
            batch = batch.set_column(i, pa.field(column, ids.type), ids)
    return batch


# -- drop accounting (array namespace: NumPy or CuPy) ---------------------------------------

def screen(has_customer: Any, day: Any, date_ok: Any, amount: Any,
           as_of_day: int | None = None) -> tuple[Any, dict[str, int]]:
    """Which rows to keep, and how many were dropped for which reason.

    The one drop rule of every front-end (single process, streamed scoring,
    Dask, cuDF): a row counts once, under the first of ``missing_customer_id``,
    ``unparseable_date``, ``date_out_of_range`` (before :data:`FIRST_DATE` or
    after :data:`LAST_DATE`), ``bad_amount`` (missing or not finite) and, with
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
    in_range = (day >= FIRST_DAY) & (day <= LAST_DAY)
    amount_ok = xp.isfinite(amount)
    dropped = {"missing_customer_id": n - int(xp.count_nonzero(has_customer)),
               "unparseable_date": int(xp.count_nonzero(has_customer & ~date_ok)),
               "date_out_of_range": int(xp.count_nonzero(keep & ~in_range))}
    keep &= in_range
    dropped["bad_amount"] = int(xp.count_nonzero(keep & ~amount_ok))
    keep &= amount_ok
    if as_of_day is not None:
        late = keep & (day >= as_of_day)
        dropped[AFTER_AS_OF] = int(xp.count_nonzero(late))
        keep &= ~late
    return keep, dropped


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
    text_from_csv: bool = True      # every text id came from a CSV file
    text_all_int: bool = True       # and every one of them is a canonical integer
    bad_date: tuple[Path, object] | None = None  # the first unparseable date seen
    device_bytes: int = 0           # copied to the device for cleaning there
    failed_text: int = 0            # unparseable dates that are text, not blank (with a --date-format)
    exchanged: int = 0              # of those, how many read with %d and %m exchanged (see _transposed)
    exchanged_example: tuple[Path, str] | None = None  # the first of them

    def merge(self, other: "BatchStats") -> None:
        self.rows.read += other.rows.read
        self.rows.used += other.rows.used
        for reason, count in other.rows.dropped.items():
            self.rows.dropped[reason] = self.rows.dropped.get(reason, 0) + count
        if other.max_day is not None:
            self.max_day = other.max_day if self.max_day is None else max(self.max_day, other.max_day)
        self.text_from_csv &= other.text_from_csv
        self.text_all_int &= other.text_all_int
        self.bad_date = self.bad_date or other.bad_date
        self.device_bytes += other.device_bytes
        self.failed_text += other.failed_text
        self.exchanged += other.exchanged
        self.exchanged_example = self.exchanged_example or other.exchanged_example


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
    batch = _plain(batch, (mapping.customer, mapping.invoice) if encode_text else ())
    batch = _check_ids(batch, mapping)
    cust_col = batch.column(mapping.customer)
    has_cust = id_present(cust_col)
    day, date_ok = parse_days(batch.column(mapping.date), date_format, mapping.date)
    amount = line_amounts(batch, mapping)
    if xp is not np:  # the rest of the rules run where the features will be built
        stats.device_bytes = sum(a.nbytes for a in (has_cust, day, date_ok, amount))
        has_cust, day, date_ok, amount = (batch_to_device(xp, a) for a in (has_cust, day, date_ok, amount))
    keep, dropped = screen(has_cust, day, date_ok, amount, as_of_day)
    stats.rows.dropped.update(dropped)
    if dropped["unparseable_date"]:
        failed = to_numpy(has_cust & ~date_ok)
        first = int(np.argmax(failed))
        stats.bad_date = (path, batch.column(mapping.date)[first].as_py())
        stats.failed_text, stats.exchanged, example = _exchanged(batch.column(mapping.date), failed, date_format)
        if example is not None:
            stats.exchanged_example = (path, example)
    day, amount = day[keep], amount[keep]
    keep = to_numpy(keep)

    def kept(column: pa.Array) -> Any:
        if encode_text and (is_text(column.type) or is_encoded_text(column.type)):
            return EncodedText.encode(column, keep)
        return _kept_rows(column, keep)

    ids = kept(cust_col)
    # The id type is chosen on the kept rows: a batch whose rows were all dropped has no say.
    if len(ids) and (isinstance(ids, EncodedText) or is_text(ids.type) or is_encoded_text(ids.type)):
        stats.text_from_csv = path.name.lower().endswith(CSV_SUFFIXES)
        # Only CSV text may become integers (see ids_to_int): only it is checked.
        if stats.text_from_csv:
            stats.text_all_int = ids.all_int if isinstance(ids, EncodedText) else all_int_text(ids)
    invoices = kept(batch.column(mapping.invoice)) if mapping.invoice else None
    stats.rows.used = int(day.shape[0])
    if stats.rows.used:
        stats.max_day = int(day.max())
    return KeptRows(ids=ids, invoices=invoices, day=day, amount=amount), stats


_pandas_import: threading.Thread | None = None
#: Set by :func:`one_job_process`: pyarrow is told that pandas is absent instead of importing it.
_one_job = False
_pandas_settled = False


def one_job_process() -> None:
    """Mark this process as one job's that needs no pandas unless something imports it
    (the ``gpuseg`` command: :func:`gpuseg.cli.main`); see :func:`_start_pandas_import`."""
    global _one_job
    _one_job = True


def _start_pandas_import() -> None:
    """Deal, before the pool starts, with the import of pandas that pyarrow makes (when pandas
    is installed) the first time it converts a value.

    pyarrow imports pandas then only to ask whether values are pandas objects.
    In a one-job process (:func:`one_job_process`) where nothing has imported
    pandas yet (the Dask path and cuDF import it first), pyarrow is told that
    pandas is absent (:func:`_pyarrow_without_pandas`). Otherwise the import
    starts on a thread of its own: it takes ~0.3 s, most of it holding the GIL
    and a lock that every converting thread then waits on; made by the first
    worker to convert, mid-batch, it stalled the whole pool. Started before
    the pool, it runs while the first batches decode (retail log, 10⁷ lines,
    2 cores: load stage 1.40-1.61 -> 1.31-1.37 s). Not a daemon: an
    interpreter's usual exit waits for it rather than cut an import short (the
    console script's exit, :func:`gpuseg.cli._exit_now`, needs nothing from it).
    """
    global _pandas_import, _pandas_settled
    if _pandas_import is not None or _pandas_settled or "pandas" in sys.modules:
        return
    if _one_job:
        _pyarrow_without_pandas()
        _pandas_settled = True
        return
    _pandas_import = threading.Thread(target=_import_pandas, name="gpuseg-pandas-import")
    _pandas_import.start()


class _NoPandas(importlib.abc.MetaPathFinder):
    """Finds pandas nowhere, as when it is not installed."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


def _pyarrow_without_pandas() -> None:
    """Let pyarrow settle, once, that pandas is absent, without hiding it from anything else.

    pyarrow's check for pandas runs at its first conversion and is kept; with
    pandas not found then, its conversions never import it. Its pandas
    interop (``to_pandas``, ``from_pandas``) still imports pandas when called.
    Retail log, 10⁷ lines, 2 cores, medians of 6 interleaved runs: run total
    1.535 -> 1.38 s, peak RSS 600 -> 495 MB (pandas and the ~340 modules it
    brings are never loaded).
    """
    finder = _NoPandas()
    sys.meta_path.insert(0, finder)
    try:
        pa.scalar(0)
    finally:
        sys.meta_path.remove(finder)


def _import_pandas() -> None:
    """Make pyarrow import pandas. A pandas that fails other than with ImportError would stop
    pyarrow's first conversion, in a worker, with an unrelated error; failing here, it
    leaves pyarrow to go on without pandas, as when none is installed."""
    try:
        pa.scalar(0)
    except Exception:  # noqa: BLE001
        pass


def _importing_pandas() -> bool:
    return _pandas_import is not None and _pandas_import.is_alive()


def _ordered_map(fn: Callable[[Any], Any], items: Iterable[tuple[Path, Any]], workers: int) -> Iterator[Any]:
    """``map(fn, items)`` on a thread pool, in order, with at most 2 × workers items in flight
    (bounded memory: a finished batch waits only for the ones before it).

    While pandas is being imported, every worker's first conversion waits for
    it (:func:`_start_pandas_import`), and a core would idle; this thread
    decodes the next row groups meanwhile (a Parquet read needs neither the
    GIL nor pandas), up to 4 × workers items in flight (retail log, 10⁷
    lines, 2 cores: run total, median of 6, 1.48 -> 1.42 s; peak RSS +60 MB).
    """
    _start_pandas_import()
    if workers <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="gpuseg-clean") as pool:
        pending: deque[Future] = deque()
        try:
            for item in items:
                if _importing_pandas() and len(pending) >= workers and callable(item[1]):
                    try:
                        item = (item[0], item[1]())
                    except GpusegError:
                        pass  # its worker meets the error again, so errors come in input order
                pending.append(pool.submit(fn, item))
                while len(pending) >= (4 if _importing_pandas() else 2) * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for f in pending:
                f.cancel()


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

    @property
    def rows(self) -> RowCounts:
        return self.stats.rows

    def _clean(self, item: tuple[Path, Any],
               then: Callable[[KeptRows], Any] | None = None) -> tuple[Any, BatchStats] | None:
        path, batch = item
        if callable(batch):
            batch = batch()
        if batch is None or batch.num_rows == 0:
            return None
        kept, stats = clean_batch(path, batch, self.mapping, self.date_format, self.as_of_day, self.xp,
                                  self.encode_text)
        if then is not None:
            kept = then(kept) if stats.rows.used else None
        return kept, stats

    def batch(self, path: Path, batch: pa.RecordBatch) -> KeptRows | None:
        """Clean one batch; None when it has no rows."""
        done = self._clean((path, batch))
        if done is None:
            return None
        self.stats.merge(done[1])
        return done[0]

    def map(self, items: Iterable[tuple[Path, Any]], workers: int = 1,
            on_rows: Callable[[int], None] | None = None,
            then: Callable[[KeptRows], Any] | None = None) -> Iterator[Any]:
        """Clean (path, batch or reader) items on ``workers`` threads; kept rows in input order.

        ``then`` runs on the kept rows of each batch on the same thread (and
        its result is yielded instead; batches with no kept row are skipped).
        """
        for done in _ordered_map(lambda item: self._clean(item, then), items, workers):
            if done is None:
                continue
            self.stats.merge(done[1])
            if on_rows is not None:
                on_rows(done[1].rows.read)
            if then is None or done[0] is not None:
                yield done[0]

    def check(self) -> None:
        """Raise the errors that only the whole input can show."""
        check_rows(self.stats, self.mapping, self.date_format)

    def assemble(self, parts: list[KeptRows]) -> Transactions:
        """Code the kept rows (emptying ``parts``) into :class:`Transactions`."""
        return assemble(parts, self.as_of, self.rows, self.ids_to_int, self.mapping.invoice is not None, self.xp)

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
        if re.fullmatch(r"\s*[1-9][0-9]{4}(\.[0-9]*)?\s*", str(value)):  # 45385: a day count from 1899-12-30
            hint = ("it looks like a spreadsheet's serial day number, which no format reads: export the dates "
                    "as text (e.g. YYYY-MM-DD) or as a date column")
        raise GpusegError(f"no date in column {mapping.date!r} could be parsed (e.g. {value!r} in "
                          f"{str(path)!r}); {hint}")
    swapped = _transposed(date_format, stats)
    if swapped:
        path, value = stats.exchanged_example
        raise GpusegError(f"--date-format {date_format!r} leaves {rows.dropped['unparseable_date']:,} of "
                          f"{rows.read - rows.dropped['missing_customer_id']:,} dated rows unparseable, and "
                          f"{stats.exchanged:,} of them read with day and month exchanged (e.g. {value!r} in "
                          f"{str(path)!r}); the rows it did read may have theirs exchanged too: give --date-format "
                          f"{swapped!r} if the dates are written so")
    if rows.used == 0:
        reasons = ", ".join(f"{k}: {v}" for k, v in rows.dropped.items() if v)
        raise GpusegError(f"no usable rows: all {rows.read} rows were dropped ({reasons})")


def _swapped(date_format: str | None) -> str | None:
    """``date_format`` with %d and %m exchanged; None without both."""
    if not date_format or "%d" not in date_format or "%m" not in date_format:
        return None
    return date_format.replace("%d", "\0").replace("%m", "%d").replace("\0", "%m")


def _exchanged(column: pa.Array, failed: np.ndarray, date_format: str | None) -> tuple[int, int, str | None]:
    """Of the rows ``failed`` marks, how many hold text that is not blank, how many of those read
    with ``date_format``'s %d and %m exchanged, and the first of them (0, 0, None without such a
    format or text)."""
    swapped = _swapped(date_format)
    if swapped is None or not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return 0, 0, None
    text = pc.utf8_trim_whitespace(column.filter(pa.array(failed)))
    text = text.filter(pc.fill_null(pc.not_equal(text, ""), False))
    if not len(text):
        return 0, 0, None
    _, ok = _text_days(text, swapped)
    n = int(np.count_nonzero(ok))
    return len(text), n, (text[int(np.argmax(ok))].as_py() if n else None)


def _transposed(date_format: str | None, stats: BatchStats) -> str | None:
    """The format with %d and %m exchanged, when the dates that fail the given one but read with it
    are at least 10% of the dated rows and nine in ten of the failing text dates: dd/mm dates read
    as mm/dd keep every day up to the 12th, exchanged, and drop the rest, about 60% of them (or
    the other way round). Blank dates and typos that happen to read exchanged do not stop a run."""
    swapped = _swapped(date_format)
    rows = stats.rows
    dated = rows.read - rows.dropped["missing_customer_id"]
    if swapped is None or stats.exchanged * 10 < dated or stats.exchanged * 10 < 9 * stats.failed_text:
        return None
    return swapped


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
