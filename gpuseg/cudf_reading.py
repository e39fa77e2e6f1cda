"""Reading and cleaning on the GPU with cuDF, for the ``cupy``/``cuml`` backends.

Same rules as :mod:`gpuseg.cleaning` (drop reasons and their precedence,
returns kept, ids coded in sorted order, invoices within customers), but the
files are decoded, filtered and factorized on the device, and the result holds
CuPy arrays for :func:`gpuseg.features.compute_features`. Only the sorted
customer ids come back to the host, for writing.

Checked against the cuDF 26.10 sources (cuDF is imported only when this path
runs):

- ``cudf.to_datetime`` raises ``NotImplementedError`` for ``errors="coerce"``
  on anything but a scalar (``cudf/core/tools/datetimes.py``), and without it
  ``StringColumn.strptime`` raises on any invalid row and on valid strings of
  differing lengths. Text dates are therefore not parsed by cuDF: the fields
  are cut out with ``Series.str.extract`` and judged by the array-generic
  :func:`field_days`, with the CPU path's own day-of-month rule.
  ``str.istimestamp`` is not enough either: libcudf's ``is_timestamp`` does not
  check that the whole string was read (``2024-01-05junk`` passes
  ``%Y-%m-%d``), while the CPU path's parser does.
- ``read_parquet`` restores a pandas index (``RangeIndex(start=k)`` even with
  ``use_pandas_metadata=False``, ``_process_metadata`` in
  ``cudf/io/parquet.py``) and a boolean ``cudf.Series`` indexer aligns by label
  (``parse_single_row_loc_key`` in ``cudf/core/indexing_utils.py``): rows are
  masked by position with CuPy arrays through ``.iloc``, after a reset index.
- ``read_parquet`` defaults to ``ignore_missing_columns=True`` (a missing
  column becomes nulls); the file's columns are checked first as on the CPU
  path, and the reader is told not to ignore them.
- Decimal dtypes report ``kind == 'O'`` (pandas' ``ExtensionDtype``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .backend import _import, get_namespace
from .cleaning import (BatchStats, RowCounts, Transactions, _days_in_month, check_rows, day_number,
                       days_from_civil, parse_days, screen, yyyymmdd_days)
from .columns import ColumnMapping
from .errors import GpusegError
from .reading import _check_columns, file_format

_INT_TEXT = r"^-?(0|[1-9][0-9]{0,17})$"


def read_options(path: Path, mapping: ColumnMapping) -> tuple[str, dict[str, Any]]:
    """The cuDF reader and keyword arguments for one file.

    Parquet: only the mapped columns, no pandas index columns, and a mapped
    column missing from the file is an error rather than nulls.
    """
    cols = mapping.needed
    if file_format(path) == "parquet":
        return "read_parquet", {"columns": cols, "use_pandas_metadata": False, "ignore_missing_columns": False}
    return "read_csv", {"usecols": cols, "dtype": mapping.csv_types("str", "float64")}


def _read(cudf: Any, path: Path, mapping: ColumnMapping) -> Any:
    _check_columns(path, mapping)  # the CPU path's check and message
    reader, kwargs = read_options(path, mapping)
    return getattr(cudf, reader)(str(path), **kwargs)


def _is_string(s: Any) -> bool:
    return str(s.dtype) in ("object", "str", "string")


def _present(cp: Any, s: Any) -> Any:
    ok = s.notna()
    if _is_string(s):
        ok &= s.str.strip().str.len() > 0
    elif s.dtype.kind == "f":
        ok &= s.fillna(0).abs() < float("inf")
    return ok.fillna(False).values


def _ints(s: Any) -> Any:
    """Digit strings (null where absent) as int64 on the device, 0 where null."""
    return s.fillna("0").astype("int64").values


def _lengths(s: Any) -> Any:
    return s.str.len().fillna(0).astype("int64").values


# -- text dates: the CPU parser's rules, cut out with one regex --------------------

# The CPU path parses text dates with Arrow's strptime, which on Linux is glibc's:
# numbers are read by get_number(from, to, width), which skips leading white
# space, reads at most `width` digits and stops early once another digit would
# pass `to`; a white-space character in the format skips any white space; every
# other character must match itself; the whole string must be read. Only these
# directives are mirrored; other formats are parsed on the host.
_NUMBER_FIELDS = {"Y": (4, 0, 9999), "y": (2, 0, 99), "m": (2, 1, 12), "d": (2, 1, 31),
                  "H": (2, 0, 23), "I": (2, 1, 12), "M": (2, 0, 59), "S": (2, 0, 61)}
# glibc's isspace in the C locale, less \v: the device may be stricter than the
# CPU parser (what it rejects is parsed again on the host), never looser.
_SPACE = "[ \\t\\n\\r\\f]"
_SPACE_CHARS = " \t\n\r\f\v"
# Escaped in a literal: the characters libcudf's regex reads as special (cpp/doxygen/regex.md).
_REGEX_SPECIAL = "[\\^$.|?*+(){}"


@dataclass(frozen=True)
class DatePattern:
    """A strptime format as one regex with a capture group per field.

    ``fields[i]`` says what group ``i`` holds: a directive letter of
    ``_NUMBER_FIELDS`` (leading white space, then digits), ``"p"`` (AM/PM) or
    ``" "`` (a run of white space the format allows). ``runs`` lists the
    number groups that may run straight into the next number group, with the
    white-space groups between them: ``(g, (w, ...), h)``.
    """

    regex: str
    fields: tuple[str, ...]
    runs: tuple[tuple[int, tuple[int, ...], int], ...] = ()


def date_pattern(date_format: str) -> DatePattern | None:
    """The device's reading of ``date_format``, or None where it cannot mirror the CPU parser.

    None for directives other than ``%Y %y %m %d %H %I %M %S %p %%``, for a
    directive given twice, for a format without the year, month and day, and
    for a literal digit or non-ASCII character.
    """
    parts, fields, seen = ["^"], [], set()
    runs, last, gaps = [], None, []  # last: the latest number group, gaps: white space since
    i, n = 0, len(date_format)
    while i < n:
        ch = date_format[i]
        if ch in _SPACE_CHARS:
            while i < n and date_format[i] in _SPACE_CHARS:
                i += 1
            parts.append(f"({_SPACE}*)")
            gaps.append(len(fields))
            fields.append(" ")
            continue
        i += 1
        if ch == "%" and i < n and date_format[i] == "%":
            ch, i = "%%", i + 1
        if ch != "%":
            if len(ch) == 1 and (ch.isdigit() or not ch.isascii()):
                return None
            parts.append("\\" + ch[0] if ch[0] in _REGEX_SPECIAL else ch[0])
            last = None
            continue
        if i == n:
            return None
        ch = date_format[i]
        i += 1
        if ch in seen or not (ch in _NUMBER_FIELDS or ch == "p"):
            return None
        seen.add(ch)
        if ch == "p":
            parts.append("([AaPp][Mm])")
            last = None
        else:
            if last is not None:
                runs.append((last, tuple(gaps), len(fields)))
            last, gaps = len(fields), []
            parts.append(f"({_SPACE}*[0-9]{{1,{_NUMBER_FIELDS[ch][0]}}})")
        fields.append(ch)
    if not ({"m", "d"} <= seen and ("Y" in seen) != ("y" in seen)):
        return None
    parts.append("$")
    return DatePattern("".join(parts), tuple(fields), tuple(runs))


def field_days(pattern: DatePattern, value: Mapping[int, Any], digits: Mapping[int, Any],
               length: Mapping[int, Any], matched: Any) -> tuple[Any, Any]:
    """Days since 1970-01-01 (int32) of dates cut out by ``pattern``, and which are valid.

    Array-generic (NumPy, CuPy). For each number group ``g``: ``value[g]``,
    ``digits[g]`` (its digit count) and ``length[g]`` (with its leading white
    space); for each white-space group, ``length[g]``; all int arrays of shape
    (n,). ``matched`` (bool, (n,)) says where the regex matched.

    Valid means what the CPU parser accepts: every field in its range, and the
    day within its month (the CPU path's rule: Arrow's parser would roll 02/30
    over into March, and the CPU path refuses that). A regex can split digits
    that glibc reads greedily another way (``%Y%m`` on ``20241``): where a
    number shorter than its width runs straight into the next one and glibc
    would have read on, the row is left invalid, for the host to parse.
    Year 0 is left to the host too (the CPU path's check of it is Python's).
    """
    xp = get_namespace(matched)
    ok = matched.copy()
    for g, f in enumerate(pattern.fields):
        if f in _NUMBER_FIELDS:
            _, lo, hi = _NUMBER_FIELDS[f]
            ok &= (value[g] >= lo) & (value[g] <= hi)
    for g, spaces, h in pattern.runs:
        width, _, hi = _NUMBER_FIELDS[pattern.fields[g]]
        gap = length[h] > digits[h]
        for w in spaces:
            gap |= length[w] > 0
        ok &= gap | (digits[g] >= width) | (value[g] * 10 > hi)
    at = {f: i for i, f in enumerate(pattern.fields)}
    if "Y" in at:
        year = value[at["Y"]]
    else:
        yy = value[at["y"]]
        year = yy + xp.where(yy < 69, 2000, 1900)
    month, day = value[at["m"]], value[at["d"]]
    ok &= (year >= 1) & (day <= _days_in_month(year, month))
    days = xp.where(ok, days_from_civil(year, xp.clip(month, 1, 12), day), 0)
    return days.astype(xp.int32), ok


def iso_days(year: Any, month: Any, day: Any, matched: Any) -> tuple[Any, Any]:
    """Days (int32) and validity of ISO dates ``YYYY-MM-DD`` cut into int arrays (any namespace).

    The CPU path's rule: a real calendar date, any year 0000-9999.
    """
    xp = get_namespace(matched)
    ok = matched & (month >= 1) & (month <= 12) & (day >= 1) & (day <= _days_in_month(year, month))
    days = xp.where(ok, days_from_civil(year, xp.clip(month, 1, 12), day), 0)
    return days.astype(xp.int32), ok


def float_yyyymmdd_days(values: Any) -> tuple[Any, Any]:
    """Floating YYYYMMDD (NaN where missing) -> (days as int32, which are real dates), as on the CPU path."""
    xp = get_namespace(values)
    finite = xp.isfinite(values)
    valid = finite & (values == xp.floor(xp.where(finite, values, 0)))
    return yyyymmdd_days(xp.where(valid, values, 0).astype(xp.int64), valid)


def _iso_text_days(cp: Any, text: Any) -> tuple[Any, Any]:
    head = text.str.slice(0, 10)
    ymd = head.str.extract(r"^([0-9]{4})-([0-9]{2})-([0-9]{2})$")
    shape_ok = ((text.str.len() == 10) | text.str.slice(10, 11).isin(["T", " "])).fillna(False).values
    days, ok = iso_days(_ints(ymd[0]), _ints(ymd[1]), _ints(ymd[2]), ymd[0].notna().values & shape_ok)
    compact = text.str.extract(r"^([0-9]{8})$")[0]  # YYYYMMDD written as text
    cdays, cok = yyyymmdd_days(_ints(compact), compact.notna().values & ~ok)
    return cp.where(cok, cdays, days), ok | cok


def _format_text_days(cp: Any, text: Any, pattern: DatePattern) -> tuple[Any, Any]:
    groups = text.str.extract(pattern.regex)
    value, digits, length = {}, {}, {}
    for g, f in enumerate(pattern.fields):
        col = groups[g]
        length[g] = _lengths(col)
        if f in _NUMBER_FIELDS:
            number = col.str.strip()
            value[g], digits[g] = _ints(number), _lengths(number)
    first_number = next(g for g, f in enumerate(pattern.fields) if f in _NUMBER_FIELDS)
    matched = groups[first_number].notna().values  # a white-space group may match nothing
    return field_days(pattern, value, digits, length, matched)


def _host_text_days(cp: Any, text: Any, date_format: str | None) -> tuple[Any, Any]:
    """The CPU path's parser on these rows' text (an explicit round trip through the host)."""
    days, ok = parse_days(text.to_arrow(), date_format)
    return cp.asarray(days), cp.asarray(ok)


def _text_days(cp: Any, s: Any, date_format: str | None) -> tuple[Any, Any]:
    text = s.str.strip()
    if date_format is None:
        return _iso_text_days(cp, text)
    pattern = date_pattern(date_format)
    if pattern is None:  # e.g. %b: libcudf has no month names
        return _host_text_days(cp, text, date_format)
    days, ok = _format_text_days(cp, text, pattern)
    # What the device refused (few rows, in data worth reading) is parsed again
    # on the host, so that the result is the CPU path's whatever the device's
    # reading left out.
    again = ~ok & (text.str.len() > 0).fillna(False).values
    if bool(again.any()):
        where = cp.flatnonzero(again)
        hdays, hok = _host_text_days(cp, text.iloc[where], date_format)
        days[where], ok[where] = hdays, hok
    return days, ok


_PER_DAY = {"s": 86_400, "ms": 86_400_000, "us": 86_400_000_000, "ns": 86_400_000_000_000}


def _days(cudf: Any, cp: Any, s: Any, date_format: str | None) -> tuple[Any, Any]:
    kind = s.dtype.kind
    if kind == "M":
        # The stored count in the column's own unit, floored to days here: no unit cast
        # whose rounding of times before 1970 would need checking.
        unit = getattr(s.dtype, "unit", None) or np.datetime_data(s.dtype)[0]
        raw = s.astype("int64").fillna(0).values
        return cp.floor_divide(raw, _PER_DAY[unit]).astype(cp.int32), s.notna().values
    if kind in "iu":
        return yyyymmdd_days(s.fillna(0).values, s.notna().values)
    if kind == "f":
        return float_yyyymmdd_days(s.fillna(float("nan")).values)
    if _is_string(s):
        return _text_days(cp, s, date_format)
    raise GpusegError(f"date column has type {s.dtype}; allowed: dates, timestamps, integer YYYYMMDD, "
                      "ISO 8601 text, or text in the format given by --date-format")


def _amounts(cudf: Any, df: Any, mapping: ColumnMapping) -> Any:
    def num(col: str) -> Any:
        s = df[col]
        if s.dtype.kind not in "iuf" and not cudf.api.types.is_decimal_dtype(s.dtype):
            raise GpusegError(f"column {col!r} has type {s.dtype}; amounts, quantities and prices must be numeric")
        return s.astype("float64").fillna(float("nan")).values
    if mapping.amount:
        return num(mapping.amount)
    return num(mapping.quantity) * num(mapping.price)


def _ids(s: Any, to_int: bool = True) -> Any:
    """Text ids; with ``to_int``, all canonical integers become int64 (the CPU path
    does so for text read from CSV only)."""
    if _is_string(s):
        s = s.str.strip()
        if to_int and bool(s.str.match(_INT_TEXT).all()):
            return s.astype("int64")
    return s


@dataclass
class _Decoded:
    """One file's columns decoded on the device: the ids as read (index reset), the rest as arrays."""

    ids: Any
    has_customer: Any
    day: Any
    date_ok: Any
    amount: Any
    bad_date: tuple[Path, object] | None


def _decode(cudf: Any, cp: Any, path: Path, df: Any, mapping: ColumnMapping, date_format: str | None) -> _Decoded:
    # Per file, as the CPU path decodes per batch: files may type a column differently
    # (text dates in one, timestamps in another; float or decimal amounts).
    df = df.reset_index(drop=True)
    has_cust = _present(cp, df[mapping.customer])
    day, date_ok = _days(cudf, cp, df[mapping.date], date_format)
    amount = _amounts(cudf, df, mapping)
    missed = has_cust & ~date_ok
    bad = (path, df[mapping.date].iloc[int(cp.argmax(missed))]) if bool(missed.any()) else None
    ids = df[[c for c in (mapping.customer, mapping.invoice) if c]]
    return _Decoded(ids, has_cust, day, date_ok, amount, bad)


def load_cudf(files: Sequence[Path], mapping: ColumnMapping, date_format: str | None = None,
              as_of: dt.date | None = None) -> Transactions:
    """Read ``files`` with cuDF and clean them on the device.

    Returns :class:`~gpuseg.cleaning.Transactions` whose arrays are CuPy arrays.

    Raises
    ------
    GpusegError
        As :func:`gpuseg.cleaning.clean`, and when a file lacks a mapped column.
    """
    cudf, cp = _import("cudf"), _import("cupy")
    frames = [_read(cudf, f, mapping) for f in files]
    rows = RowCounts(read=sum(len(f) for f in frames))
    if rows.read == 0:
        check_rows(BatchStats(rows), mapping, date_format)  # says: no data rows
    parts = []
    for i, path in enumerate(files):
        parts.append(_decode(cudf, cp, path, frames[i], mapping, date_format))
        frames[i] = None
    has_cust, day, date_ok, amount = (cp.concatenate([getattr(p, a) for p in parts])
                                      for a in ("has_customer", "day", "date_ok", "amount"))
    keep, dropped = screen(has_cust, day, date_ok, amount, day_number(as_of) if as_of is not None else None)
    rows.dropped.update(dropped)
    rows.used = int(keep.sum())
    bad = next((p.bad_date for p in parts if p.bad_date is not None), None)
    check_rows(BatchStats(rows, bad_date=bad), mapping, date_format)

    # Masks are positional (CuPy arrays through .iloc) on frames whose index was reset:
    # a boolean cudf.Series would align by label.
    ids = cudf.concat([p.ids for p in parts], ignore_index=True) if len(parts) > 1 else parts[0].ids
    del parts
    ids = ids.iloc[keep].reset_index(drop=True)
    from_csv = all(file_format(f) == "csv" for f in files)
    codes, uniques = _ids(ids[mapping.customer], from_csv).factorize(sort=True)
    customer = cp.asarray(codes).astype(cp.int32)
    day, amount = day[keep], amount[keep]
    order, n_orders = _orders(cp, customer, day, ids[mapping.invoice] if mapping.invoice else None)
    as_of_day = day_number(as_of) if as_of is not None else int(day.max()) + 1
    return Transactions(customer=customer, day=day.astype(cp.int32), amount=amount, order=order,
                        n_orders=n_orders, customer_ids=uniques.to_arrow(), as_of=as_of_day, rows=rows)


def _orders(cp: Any, customer: Any, day: Any, invoice: Any | None) -> tuple[Any, int]:
    n = customer.shape[0]
    order = cp.empty(n, dtype=cp.int64)
    n_orders = 0
    has = _present(cp, invoice) if invoice is not None else cp.zeros(n, dtype=bool)
    if invoice is not None and bool(has.any()):
        inv_codes, inv_uniques = _ids(invoice.iloc[has]).factorize()
        inv_codes = cp.asarray(inv_codes).astype(cp.int64)
        cust = customer[has]
        owner = cp.full(len(inv_uniques), -1, dtype=cp.int64)
        owner[inv_codes] = cust
        if bool((owner[inv_codes] == cust).all()):
            codes, n_orders = inv_codes, len(inv_uniques)
        else:
            uniq, codes = cp.unique(cust.astype(cp.int64) * len(inv_uniques) + inv_codes, return_inverse=True)
            n_orders = int(uniq.shape[0])
        order[has] = codes
    if not bool(has.all()):
        d = day[~has].astype(cp.int64)
        key = customer[~has].astype(cp.int64) * (int(d.max() - d.min()) + 1) + (d - d.min())
        uniq, codes = cp.unique(key, return_inverse=True)
        order[~has] = codes.ravel() + n_orders
        n_orders += int(uniq.shape[0])
    return order.astype(cp.int32 if n_orders < 2**31 else cp.int64), n_orders
