"""Reading and cleaning on the GPU with cuDF, for the ``cupy``/``cuml`` backends.

Same rules as :mod:`gpuseg.cleaning` (drop reasons and their precedence,
returns kept, ids coded in sorted order, invoices within customers), but the
files are decoded, filtered and factorized on the device, and the result holds
CuPy arrays for :func:`gpuseg.features.compute_features`. Only the sorted
customer ids come back to the host, for writing.

Written against cuDF's documented API (``read_parquet``, ``read_csv``,
``to_datetime(errors="coerce")``, ``Series.factorize``); cuDF is imported only
when this path runs.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .backend import _import
from .cleaning import BatchStats, RowCounts, Transactions, check_rows, day_number, screen, yyyymmdd_days
from .columns import ColumnMapping
from .errors import GpusegError
from .reading import file_format

_INT_TEXT = r"^-?(0|[1-9][0-9]{0,17})$"


def _read(cudf: Any, path: Path, mapping: ColumnMapping) -> Any:
    cols = mapping.needed
    if file_format(path) == "parquet":
        return cudf.read_parquet(str(path), columns=cols)
    return cudf.read_csv(str(path), usecols=cols, dtype=mapping.csv_types("str", "float64"))


def _is_string(s: Any) -> bool:
    return str(s.dtype) in ("object", "str", "string")


def _present(cp: Any, s: Any) -> Any:
    ok = s.notna()
    if _is_string(s):
        ok &= s.str.strip().str.len() > 0
    elif s.dtype.kind == "f":
        ok &= s.fillna(0).abs() < float("inf")
    return ok.fillna(False).values


def _days(cudf: Any, cp: Any, s: Any, date_format: str | None) -> tuple[Any, Any]:
    kind = s.dtype.kind
    if kind == "M":
        days = (s.astype("datetime64[s]").astype("int64") // 86400).fillna(0).values.astype(cp.int32)
        return days, s.notna().values
    if kind in "iu":
        return yyyymmdd_days(s.fillna(0).values, s.notna().values)
    if _is_string(s):
        text = s.str.strip()
        if date_format is None:
            text = text.str.slice(0, 10)  # ISO date part; the time is not needed
        ts = cudf.to_datetime(text, format=date_format or "%Y-%m-%d", errors="coerce")
        return _days(cudf, cp, ts, None)
    raise GpusegError(f"date column has type {s.dtype}; allowed: dates, timestamps, integer YYYYMMDD, "
                      "ISO 8601 text, or text in the format given by --date-format")


def _amounts(cp: Any, df: Any, mapping: ColumnMapping) -> Any:
    def num(col: str) -> Any:
        s = df[col]
        if s.dtype.kind not in "iuf":
            raise GpusegError(f"column {col!r} has type {s.dtype}; amounts, quantities and prices must be numeric")
        return s.astype("float64").fillna(float("nan")).values
    if mapping.amount:
        return num(mapping.amount)
    return num(mapping.quantity) * num(mapping.price)


def _ids(s: Any) -> Any:
    """Text ids that are all canonical integers become int64, as on the CPU path."""
    if _is_string(s):
        s = s.str.strip()
        if bool(s.str.match(_INT_TEXT).all()):
            return s.astype("int64")
    return s


def load_cudf(files: Sequence[Path], mapping: ColumnMapping, date_format: str | None = None,
              as_of: dt.date | None = None) -> Transactions:
    """Read ``files`` with cuDF and clean them on the device.

    Returns :class:`~gpuseg.cleaning.Transactions` whose arrays are CuPy arrays.

    Raises
    ------
    GpusegError
        As :func:`gpuseg.cleaning.clean`.
    """
    cudf, cp = _import("cudf"), _import("cupy")
    frames = [_read(cudf, f, mapping) for f in files]
    df = cudf.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    rows = RowCounts(read=len(df))
    if rows.read == 0:
        check_rows(BatchStats(rows), mapping, date_format)  # says: no data rows
    has_cust = _present(cp, df[mapping.customer])
    day, date_ok = _days(cudf, cp, df[mapping.date], date_format)
    amount = _amounts(cp, df, mapping)
    keep, dropped = screen(has_cust, day, date_ok, amount, day_number(as_of) if as_of is not None else None)
    rows.dropped.update(dropped)
    rows.used = int(keep.sum())
    bad = None
    if dropped["unparseable_date"]:
        bad = (files[0], df[mapping.date].iloc[int(cp.argmax(has_cust & ~date_ok))])
    check_rows(BatchStats(rows, bad_date=bad), mapping, date_format)

    mask = cudf.Series(keep)
    customer_col = _ids(df[mapping.customer][mask].reset_index(drop=True))
    codes, uniques = customer_col.factorize(sort=True)
    customer = cp.asarray(codes).astype(cp.int32)
    day, amount = day[keep], amount[keep]
    order, n_orders = _orders(cudf, cp, customer, day,
                              df[mapping.invoice][mask].reset_index(drop=True) if mapping.invoice else None)
    as_of_day = day_number(as_of) if as_of is not None else int(day.max()) + 1
    return Transactions(customer=customer, day=day.astype(cp.int32), amount=amount, order=order,
                        n_orders=n_orders, customer_ids=uniques.to_arrow(), as_of=as_of_day, rows=rows)


def _orders(cudf: Any, cp: Any, customer: Any, day: Any, invoice: Any | None) -> tuple[Any, int]:
    n = customer.shape[0]
    order = cp.empty(n, dtype=cp.int64)
    n_orders = 0
    has = _present(cp, invoice) if invoice is not None else cp.zeros(n, dtype=bool)
    if invoice is not None and bool(has.any()):
        inv_codes, inv_uniques = _ids(invoice[cudf.Series(has)]).factorize()
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
