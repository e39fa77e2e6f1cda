"""Peers for benchmarks: the pipelines a user would otherwise write, polars or
pandas group-bys + scikit-learn KMeans.

They compute gpuseg's clustering features with gpuseg's definitions, so that a
benchmark compares like with like:

- a row is used when it has a customer id, a date and a finite amount
  (quantity × unit price, or the amount column); returns are kept;
- ``day`` is the calendar date of the timestamp; ``as_of`` is the day after the
  latest used row;
- an order is a (customer, invoice) pair, or a customer-day where the invoice
  is missing; its net is the sum of its amounts and its day the earliest;
- a purchase order nets more than ``1e-9`` × its gross (sum of ``|amount|``),
  gpuseg's ``features._NET_RTOL``, so float residue of a fully returned order
  is not a purchase;
- ``frequency`` = purchase orders, ``recency_days`` = as_of − last purchase
  order's day, ``monetary`` = sum of all the customer's amounts; customers
  without a purchase order are left out.

Then the same signed-log1p-then-standardise transform as gpuseg's scaler,
``sklearn.cluster.KMeans(k, random_state=seed, n_init=1)``, and a Parquet
file of ``customer_id, segment, recency_days, frequency, monetary``.

The polars peer is one lazy query, collected once. Not copied from gpuseg:
blank text ids (gpuseg trims whitespace and treats ``""`` as missing) are ids
here, as in an ordinary user pipeline; neither benchmark log has them.

This module imports nothing from gpuseg, so a benchmark can load it by path
and time a peer without gpuseg's own imports. pandas, polars and scikit-learn
are imported only when a peer runs, and timed apart from the compute.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

#: An order is a purchase when its net exceeds this share of its gross (gpuseg's features._NET_RTOL).
NET_RTOL = 1e-9
FEATURES = ("recency_days", "frequency", "monetary")


@dataclass(frozen=True)
class PeerColumns:
    """Input column names by role; gpuseg's generator names by default.

    ``amount`` set means the line amount is that column; otherwise it is
    ``quantity`` × ``price``. ``invoice`` None means orders are customer-days.
    """

    customer: str = "customer_id"
    date: str = "invoice_date"
    invoice: str | None = "invoice"
    quantity: str | None = "quantity"
    price: str | None = "unit_price"
    amount: str | None = None

    def __post_init__(self) -> None:
        if not self.amount and not (self.quantity and self.price):
            raise ValueError(f"give an amount column, or quantity and price columns; got {self}")

    @classmethod
    def of(cls, mapping: "PeerColumns | Mapping[str, str | None] | Any | None") -> "PeerColumns":
        """From a dict of roles, anything with role attributes (gpuseg's ColumnMapping), or None (defaults)."""
        if mapping is None or isinstance(mapping, cls):
            return mapping or cls()
        roles = [f.name for f in fields(cls)]
        if isinstance(mapping, Mapping):
            unknown = set(mapping) - set(roles)
            if unknown:
                raise ValueError(f"unknown column roles {sorted(unknown)}; allowed: {', '.join(roles)}")
            given = dict(mapping)
        else:
            given = {r: getattr(mapping, r) for r in roles if hasattr(mapping, r)}
        if given.get("amount"):
            given.setdefault("quantity", None)
            given.setdefault("price", None)
        return cls(**given)

    @property
    def needed(self) -> list[str]:
        cols = [self.customer, self.invoice, self.date]
        cols += [self.amount] if self.amount else [self.quantity, self.price]
        return [c for c in cols if c]


#: benchmarks/retail_log.py's columns (the "Online Retail II" export shape).
RETAIL_COLUMNS = PeerColumns(customer="Customer ID", date="InvoiceDate", invoice="Invoice",
                             quantity="Quantity", price="Price")


def transform(X: np.ndarray) -> np.ndarray:
    """gpuseg's scaling, written out: log1p for skewed non-negative columns, then z-scores."""
    from sklearn.preprocessing import StandardScaler
    X = X.astype(np.float64)
    for j in range(X.shape[1]):
        col = X[:, j]
        c = col - col.mean()
        skew = (c**3).mean() / max((c**2).mean(), 1e-300) ** 1.5
        if col.min() >= 0 and skew > 1:
            X[:, j] = np.log1p(col)
    return StandardScaler().fit_transform(X)


def _is_csv(path: str) -> bool:
    return path.lower().endswith((".csv", ".csv.gz", ".tsv"))


# -- polars ------------------------------------------------------------------------

#: The streaming engine, named so that another polars default cannot change the peer.
#: polars 2.1 on the 2-core VM, 10^7 rows, query alone, fresh processes: streaming
#: 1.05 s / 740 MiB (gpuseg's generator log) and 0.89 s / 690 MiB (retail log);
#: ``engine="in-memory"`` 2.9-3.4 s / 1.5 GiB and 2.6-2.8 s / 1.5 GiB; "auto" picks
#: streaming for this plan (same times and memory).
POLARS_ENGINE = "streaming"


def polars_query(path: str, columns: PeerColumns | None = None) -> Any:
    """The whole feature computation as one polars LazyFrame.

    Returns a LazyFrame of ``customer_id, recency_days, frequency, monetary``
    sorted by customer id; nothing is read until it is collected.
    """
    import polars as pl
    cols = PeerColumns.of(columns)
    lf = pl.scan_csv(path, try_parse_dates=True) if _is_csv(path) else pl.scan_parquet(path)
    schema = lf.collect_schema()  # Parquet footer / CSV head only: picks expressions by type

    cust = pl.col(cols.customer)
    has_customer = cust.is_not_null()
    if schema[cols.customer].is_float():
        has_customer &= cust.is_not_nan()
    date = pl.col(cols.date)
    if schema[cols.date] == pl.String:
        date = date.str.slice(0, 10).str.to_date("%Y-%m-%d", strict=False)
    day = date.dt.date().cast(pl.Int32)  # days since 1970-01-01
    if cols.amount:
        amount = pl.col(cols.amount).cast(pl.Float64)
    else:
        amount = pl.col(cols.quantity).cast(pl.Float64) * pl.col(cols.price).cast(pl.Float64)

    lines = lf.filter(has_customer).select(customer=cust, day=day, amount=amount,
                                           **({"invoice": pl.col(cols.invoice)} if cols.invoice else {}))
    # is_finite is null for a null amount, and a filter keeps only true.
    lines = lines.filter(pl.col("day").is_not_null() & pl.col("amount").is_finite())
    if cols.invoice:
        # Lines without an invoice are orders by customer-day (null key otherwise). The third
        # key cost nothing measurable at 10^7 rows (1.00-1.08 s without it, 1.05-1.07 s with).
        keys = ["customer", "invoice", pl.when(pl.col("invoice").is_null()).then(pl.col("day")).alias("no_invoice_day")]
    else:
        keys = ["customer", pl.col("day").alias("order_day")]
    orders = lines.group_by(keys).agg(net=pl.col("amount").sum(), gross=pl.col("amount").abs().sum(),
                                      day=pl.col("day").min(), top=pl.col("day").max())
    purchase = pl.col("net") > NET_RTOL * pl.col("gross")
    per = orders.group_by("customer").agg(frequency=purchase.sum().cast(pl.Int64),
                                          last=pl.col("day").filter(purchase).max(),
                                          monetary=pl.col("net").sum(), top=pl.col("top").max())
    # as_of comes from every used line, so it is taken before customers without a purchase go.
    per = per.with_columns(recency_days=(pl.col("top").max() + 1 - pl.col("last")).cast(pl.Int32))
    return (per.filter(pl.col("frequency") > 0)
            .select(customer_id="customer", recency_days="recency_days", frequency="frequency", monetary="monetary")
            .sort("customer_id"))


def polars_features(path: str, columns: PeerColumns | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(customer ids of shape (n,), features of shape (n, 3)) by the polars query."""
    df = polars_query(path, columns).collect(engine=POLARS_ENGINE)
    return df["customer_id"].to_numpy(), df.select(FEATURES).to_numpy().astype(np.float64)


# -- pandas ------------------------------------------------------------------------

def pandas_features(path: str, columns: PeerColumns | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(customer ids of shape (n,), features of shape (n, 3)) by pandas group-bys."""
    import pandas as pd
    cols = PeerColumns.of(columns)
    if _is_csv(path):
        df = pd.read_csv(path, usecols=cols.needed)
    else:
        df = pd.read_parquet(path, columns=cols.needed)
    df = df.rename(columns={cols.customer: "customer", cols.date: "date"})
    amount = (df[cols.amount].astype("float64") if cols.amount
              else df[cols.quantity].astype("float64") * df[cols.price].astype("float64"))
    date = df["date"]
    if not pd.api.types.is_datetime64_any_dtype(date):
        date = pd.to_datetime(date.astype("string").str.slice(0, 10), format="%Y-%m-%d", errors="coerce")
    df["day"] = date.to_numpy().astype("datetime64[D]").view(np.int64)  # days since 1970-01-01; NaT is int64 min
    df["amount"] = amount
    df = df[df["customer"].notna() & date.notna() & np.isfinite(df["amount"])]
    df = df.assign(day=df["day"].astype(np.int32), absolute=df["amount"].abs())
    keys = ["customer"]
    if cols.invoice:
        keys.append(cols.invoice)
        missing = df[cols.invoice].isna()
        if missing.any():  # customer-day orders for lines without an invoice
            df = df.assign(no_invoice_day=df["day"].where(missing, -1))
            keys.append("no_invoice_day")
    else:
        keys.append("day")
    orders = df.groupby(keys, sort=False, dropna=False).agg(
        net=("amount", "sum"), gross=("absolute", "sum"), day=("day", "min"), top=("day", "max"))
    orders["purchase"] = orders["net"] > NET_RTOL * orders["gross"]
    orders["purchase_day"] = orders["day"].where(orders["purchase"])
    per = orders.groupby(level="customer", sort=True).agg(
        frequency=("purchase", "sum"), last=("purchase_day", "max"), monetary=("net", "sum"), top=("top", "max"))
    as_of = per["top"].max() + 1
    per = per[per["frequency"] > 0]
    per = per.assign(recency_days=(as_of - per["last"]).astype("int32"), frequency=per["frequency"].astype("int64"))
    return per.index.to_numpy(), per[list(FEATURES)].to_numpy(np.float64)


# -- running a peer ----------------------------------------------------------------

PEERS = {"pandas+sklearn": ("pandas", pandas_features), "polars+sklearn": ("polars", polars_features)}


#: Peers named here (comma-separated) are reported unavailable, e.g. pandas at 10^8 rows
#: where a device check has no time for it.
SKIP_ENV = "GPUSEG_SKIP_PEERS"


def why_unavailable(peer: str) -> str | None:
    """None when the peer's dataframe library imports (and :data:`SKIP_ENV` does not name it), else the reason."""
    if peer in {p.strip() for p in os.environ.get(SKIP_ENV, "").split(",")}:
        return f"skipped ({SKIP_ENV}={os.environ[SKIP_ENV]})"
    try:
        __import__(PEERS[peer][0])
    except ImportError as exc:
        return f"{PEERS[peer][0]} is not installed ({exc}; pip install {PEERS[peer][0]}, or the gpuseg[bench] extra)"
    return None


@dataclass
class PeerRun:
    """One peer run: labels of shape (n,), int32, in customer id order, and its timings.

    ``imports`` holds the seconds each import took (the dataframe library,
    pyarrow for pandas, scikit-learn; near 0 when already imported),
    ``import_s`` their sum; ``compute_s`` is the query, the transform, the fit
    and the write.
    """

    labels: np.ndarray
    import_s: float
    compute_s: float
    imports: dict[str, float]
    inertia: float | None = None  # KMeans' inertia in the transformed space


def run_peer(peer: str, path: str | Path, out: str | Path, k: int = 5, seed: int = 0,
             columns: PeerColumns | Mapping[str, str | None] | None = None) -> PeerRun:
    """Run one peer pipeline end to end on ``path`` (Parquet or CSV).

    Writes ``customer_id, segment, recency_days, frequency, monetary`` to
    ``out`` (Parquet). ``columns`` maps roles to input columns (default:
    gpuseg's generator names; see :class:`PeerColumns`).
    """
    if peer not in PEERS:
        raise ValueError(f"unknown peer {peer!r}; allowed: {', '.join(PEERS)}")
    library, features = PEERS[peer]
    cols = PeerColumns.of(columns)
    imports = {}
    # pandas reads and writes Parquet through pyarrow; KMeans is in sklearn.cluster.
    for module in (library, "pyarrow.parquet", "sklearn.cluster") if library == "pandas" else (library, "sklearn.cluster"):
        t = time.perf_counter()
        __import__(module)
        imports[module] = time.perf_counter() - t
    from sklearn.cluster import KMeans
    t1 = time.perf_counter()
    ids, X = features(str(path), cols)
    km = KMeans(k, random_state=seed, n_init=1).fit(transform(X))
    labels = km.labels_.astype(np.int32)
    table = {"customer_id": ids, "segment": labels, "recency_days": X[:, 0].astype(np.int32),
             "frequency": X[:, 1].astype(np.int64), "monetary": X[:, 2]}
    if library == "polars":
        import polars as pl
        pl.DataFrame(table).write_parquet(str(out))
    else:
        import pandas as pd
        pd.DataFrame(table).to_parquet(str(out), index=False)
    t2 = time.perf_counter()
    return PeerRun(labels=labels, import_s=sum(imports.values()), compute_s=t2 - t1, imports=imports,
                   inertia=float(km.inertia_))
