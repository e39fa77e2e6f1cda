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
- ``read_parquet`` has no time zones: libcudf's timestamps carry none (it
  parses Parquet's ``isAdjustedToUTC`` and drops it), and ``_process_metadata``
  restores only the index, decimal precision and empty object columns. A
  tz-aware column (stored as UTC instants) comes back naive, in UTC. The zone
  is read from the file's Arrow schema instead, and days are taken in it, as
  on the CPU path (:func:`zone_offsets`). cuDF's own ``tz_convert`` is not
  used: ``DatetimeTZColumn._local_time`` searches its transition table (the
  file's transitions, then a 400-year rule cycle) as if it were sorted, which
  the 26.10 sources themselves say can give wrong local times.
- ``concat`` of an integer and a text column is left to no rule of cuDF's:
  ids whose types differ between files are made one type first, as the CPU
  path does (:func:`common_ids`); mixes it cannot format as the CPU path does
  (floats, decimals) raise :class:`CudfUnsupported`, and the pipeline reads
  those inputs on the host.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .backend import _import, get_namespace
from .coding import INT_TEXT
from .cleaning import (FIRST_DAY, LAST_DAY, BatchStats, RowCounts, Transactions, _swapped, check_rows, day_number,
                       days_from_civil, days_in_month, parse_days, screen, yyyymmdd_days)
from .columns import ColumnMapping
from .errors import GpusegError
from .reading import check_columns, file_format



class CudfUnsupported(NotImplementedError):
    """An input the cuDF reader cannot read as the CPU path does; the pipeline reads it on the host."""


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
    check_columns(path, mapping)  # the CPU path's check and message
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
    ok &= (year >= 1) & (day <= days_in_month(year, month))
    days = xp.where(ok, days_from_civil(year, xp.clip(month, 1, 12), day), 0)
    return days.astype(xp.int32), ok


def iso_days(year: Any, month: Any, day: Any, matched: Any) -> tuple[Any, Any]:
    """Days (int32) and validity of ISO dates ``YYYY-MM-DD`` cut into int arrays (any namespace).

    The CPU path's rule: a real calendar date, any year 0000-9999.
    """
    xp = get_namespace(matched)
    ok = matched & (month >= 1) & (month <= 12) & (day >= 1) & (day <= days_in_month(year, month))
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


_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
_DAY_SECONDS = 86_400
#: Where offsets are looked up: the accepted dates with two days to spare. A UTC
#: offset is under a day, so a row outside stays outside the accepted dates.
_ZONE_WINDOW = ((FIRST_DAY - 2) * _DAY_SECONDS, (LAST_DAY + 2) * _DAY_SECONDS)
#: Offsets are sampled this often, then each change is found to the second. The
#: closest two offset changes of any zone in tzdata 2025b are 4 days apart
#: (Africa/Freetown, 1939), so one step never holds two.
_ZONE_STEP = 6 * 3600


def _utc_offsets(zone: str, seconds: np.ndarray) -> np.ndarray:
    """UTC offsets (int64 seconds) of ``zone`` at UTC instants ``seconds``, by Arrow's
    time-zone database: the one the CPU path's cast to days uses."""
    local = pc.local_timestamp(pa.array(seconds, pa.timestamp("s", zone)))
    return local.cast(pa.int64()).to_numpy(zero_copy_only=False) - seconds


def zone_offsets(zone: str, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """The UTC offsets of ``zone`` between UTC seconds ``lo`` and ``hi``, as a table.

    Returns ``(starts, offsets)``, int64 of shape (m,): ``offsets[i]`` holds from
    UTC second ``starts[i]`` until ``starts[i + 1]``; ``starts[0]`` is ``lo``
    (clipped to the accepted dates). Host only; m is the number of offset
    changes in the span plus one.
    """
    lo, hi = (int(np.clip(v, *_ZONE_WINDOW)) for v in (lo, hi))
    grid = np.append(np.arange(lo, hi, _ZONE_STEP, dtype=np.int64), np.int64(hi))
    off = _utc_offsets(zone, grid)
    change = np.flatnonzero(off[1:] != off[:-1])
    a, b, before = grid[change], grid[change + 1], off[change]
    while len(a) and int((b - a).max()) > 1:  # b is the first second known to have moved
        mid = a + (b - a) // 2
        same = _utc_offsets(zone, mid) == before
        a, b = np.where(same, mid, a), np.where(same, b, mid)
    return np.concatenate([grid[:1], b]), np.concatenate([off[:1], _utc_offsets(zone, b)])


def local_days(raw: Any, unit: str, valid: Any, zone: str) -> Any:
    """Calendar days (int32) in ``zone`` of UTC instants ``raw`` (int64 counts of ``unit``).

    Array-generic (NumPy, CuPy): the offset table (:func:`zone_offsets`, a few
    entries, over the valid rows' span) is built on the host and looked up
    here. Offsets are whole seconds, so the day is the floor of (the floored
    second + offset) / 86400: no sum that could pass int64's range.
    """
    xp = get_namespace(raw)
    seconds = xp.floor_divide(raw, _PER_SECOND[unit])
    if not bool(valid.any()):
        return xp.zeros(raw.shape[0], dtype=xp.int32)
    span = seconds[valid]
    starts, offsets = zone_offsets(zone, int(span.min()), int(span.max()))
    starts, offsets = xp.asarray(starts), xp.asarray(offsets)
    at = xp.clip(xp.searchsorted(starts, seconds, side="right") - 1, 0, starts.shape[0] - 1)
    return xp.floor_divide(seconds + offsets[at], _DAY_SECONDS).astype(xp.int32)


def stored_as_int96(path: Path, column: str) -> bool:
    """Whether a Parquet file stores ``column`` as INT96 (Spark's and Impala's timestamps).

    cuDF reads them as nanoseconds, where dates past 2262 wrap around into range; the
    CPU path reads them as microseconds (:func:`gpuseg.reading.open_parquet`)."""
    if file_format(path) != "parquet":
        return False
    schema = pq.ParquetFile(path).schema
    return any(schema.column(i).path == column and schema.column(i).physical_type == "INT96"
               for i in range(len(schema)))


def file_zone(path: Path, column: str) -> str | None:
    """The time zone of a Parquet file's timestamp ``column`` (its Arrow schema), else None."""
    if file_format(path) != "parquet":
        return None
    t = pq.read_schema(path).field(column).type
    return t.tz if pa.types.is_timestamp(t) else None


def _days(cudf: Any, cp: Any, s: Any, date_format: str | None, zone: str | None = None) -> tuple[Any, Any]:
    kind = s.dtype.kind
    if kind == "M":
        tz = getattr(s.dtype, "tz", None)
        if tz is not None:  # a tz-aware column, should cuDF give one: its UTC instants and its zone
            zone, s = str(tz), s.dt.tz_convert(None)
        # The stored count in the column's own unit, floored to days here: no unit cast
        # whose rounding of times before 1970 would need checking.
        unit = getattr(s.dtype, "unit", None) or np.datetime_data(s.dtype)[0]
        raw = s.astype("int64").fillna(0).values
        valid = s.notna().values
        if zone is not None:  # days in the timestamp's own zone, as on the CPU path
            return local_days(raw, unit, valid, zone), valid
        return cp.floor_divide(raw, _PER_SECOND[unit] * _DAY_SECONDS).astype(cp.int32), valid
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
        if cudf.api.types.is_decimal_dtype(s.dtype):
            # The CPU path reads each decimal as the nearest float64 (cleaning.decimal_floats), which
            # a cast does not promise (Arrow's gives 0.35000000000000003 for 0.35).
            raise CudfUnsupported(f"decimal column {col!r}")
        if s.dtype.kind not in "iuf":
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
        if to_int and bool(s.str.match(INT_TEXT).all()):
            return s.astype("int64")
    return s


def _id_kind(s: Any) -> str:
    if _is_string(s):
        return "text"
    return "integer" if s.dtype.kind == "i" or str(s.dtype) in ("uint8", "uint16", "uint32") else str(s.dtype)


def common_ids(cols: Sequence[Any], role: str) -> list[Any]:
    """Files' id columns of one role made one type, as the CPU path unifies them
    (``coding._unify``): integers of any width become int64; integers and text
    become text (cuDF writes integers as the CPU path does, in canonical decimal).

    Raises
    ------
    CudfUnsupported
        For other mixes (floats, decimals, uint64): the CPU path writes them as
        Arrow formats them, which cuDF's casts need not match.
    """
    if len({str(c.dtype) for c in cols}) <= 1:
        return list(cols)
    kinds = {_id_kind(c) for c in cols}
    if kinds == {"integer"}:
        return [c.astype("int64") for c in cols]
    if kinds == {"text"}:  # text typed two ways (object and str)
        return [c.astype("str") for c in cols]
    if kinds == {"integer", "text"}:
        return [c if _is_string(c) else c.astype("str") for c in cols]
    raise CudfUnsupported(f"{role} ids of types {', '.join(sorted(str(c.dtype) for c in cols))} across files "
                          "(the CPU path compares them as Arrow's text, which cuDF's casts need not match)")


@dataclass
class _Decoded:
    """One file's columns decoded on the device: the ids as read (index reset), the rest as arrays."""

    customer: Any
    invoice: Any | None
    has_customer: Any
    day: Any
    date_ok: Any
    amount: Any
    bad_date: tuple[Path, object] | None


def _decode(cudf: Any, cp: Any, path: Path, df: Any, mapping: ColumnMapping, date_format: str | None) -> _Decoded:
    # Per file, as the CPU path decodes per batch: files may type a column differently
    # (text dates in one, timestamps in another; float or decimal amounts).
    df = df.reset_index(drop=True)
    if stored_as_int96(path, mapping.date):
        raise CudfUnsupported("INT96 timestamps")
    has_cust = _present(cp, df[mapping.customer])
    day, date_ok = _days(cudf, cp, df[mapping.date], date_format, file_zone(path, mapping.date))
    amount = _amounts(cudf, df, mapping)
    missed = has_cust & ~date_ok
    bad = (path, df[mapping.date].iloc[int(cp.argmax(missed))]) if bool(missed.any()) else None
    return _Decoded(df[mapping.customer], df[mapping.invoice] if mapping.invoice else None, has_cust, day, date_ok,
                    amount, bad)


def _concat(cudf: Any, cols: list[Any]) -> Any:
    return cudf.concat(cols, ignore_index=True) if len(cols) > 1 else cols[0]


def load_cudf(files: Sequence[Path], mapping: ColumnMapping, date_format: str | None = None,
              as_of: dt.date | None = None) -> Transactions:
    """Read ``files`` with cuDF and clean them on the device.

    Returns :class:`~gpuseg.cleaning.Transactions` whose arrays are CuPy arrays.

    Raises
    ------
    GpusegError
        As :func:`gpuseg.cleaning.clean`, and when a file lacks a mapped column.
    CudfUnsupported
        For an input this reader cannot read as the CPU path does: decimal ids, and the
        mixes of id types :func:`common_ids` refuses.
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
    dated = rows.read - rows.dropped["missing_customer_id"]
    if _swapped(date_format) and rows.dropped["unparseable_date"] * 10 >= dated:
        # Day and month may be exchanged (cleaning._transposed): the host reader counts the text dates
        # that read so, which this reader does not.
        raise CudfUnsupported("a --date-format that leaves 10% of the dates unparseable")
    check_rows(BatchStats(rows, bad_date=bad), mapping, date_format)

    # Text ids become integers as on the CPU path: when every file whose ids are text is a
    # CSV file (CSV ids are read as text, to keep leading zeros) and they are all integers.
    to_int = all(file_format(f) == "csv" for f, p in zip(files, parts) if _is_string(p.customer))
    for role, cols in (("customer", [p.customer for p in parts]), ("invoice", [p.invoice for p in parts])):
        if any(c is not None and cudf.api.types.is_decimal_dtype(c.dtype) for c in cols):
            # The CPU path makes them int64 or text batch by batch (cleaning._check_ids).
            raise CudfUnsupported(f"decimal {role} ids")
    customer = _concat(cudf, common_ids([p.customer for p in parts], "customer"))
    invoice = _concat(cudf, common_ids([p.invoice for p in parts], "invoice")) if mapping.invoice else None
    del parts
    # Masks are positional (CuPy arrays through .iloc) on columns whose index was reset:
    # a boolean cudf.Series would align by label.
    customer = customer.iloc[keep].reset_index(drop=True)
    codes, uniques = _ids(customer, to_int).factorize(sort=True)
    del customer
    customer_codes = cp.asarray(codes).astype(cp.int32)
    day, amount = day[keep], amount[keep]
    if invoice is not None:
        invoice = invoice.iloc[keep].reset_index(drop=True)
    order, n_orders = _orders(cp, customer_codes, day, invoice)
    as_of_day = day_number(as_of) if as_of is not None else int(day.max()) + 1
    return Transactions(customer=customer_codes, day=day.astype(cp.int32), amount=amount, order=order,
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
