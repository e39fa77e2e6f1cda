"""Peers for benchmarks: the pipelines a user would otherwise write, pandas or
polars group-bys + scikit-learn KMeans.

They compute gpuseg's clustering features with gpuseg's definitions (net
amount per invoice; recency and frequency over purchase orders, i.e.
invoices with a positive net; monetary over all lines), apply the same
signed-log1p-then-standardise transform, fit ``sklearn.cluster.KMeans(k,
random_state=seed)`` and write ``customer_id, segment`` to Parquet.

pandas and polars are imported only when their pipeline runs.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np


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


def pandas_features(path: str):
    import pandas as pd
    df = pd.read_parquet(path, columns=["customer_id", "invoice", "invoice_date", "quantity", "unit_price"])
    df = df.dropna(subset=["customer_id", "invoice_date"])
    df["amount"] = df["quantity"] * df["unit_price"]
    df = df[np.isfinite(df["amount"])]
    df["day"] = df["invoice_date"].dt.floor("D")
    as_of = df["day"].max() + pd.Timedelta(days=1)
    orders = df.groupby(["customer_id", "invoice"], sort=False).agg(net=("amount", "sum"), day=("day", "min"))
    purchases = orders[orders["net"] > 0].reset_index()
    per = purchases.groupby("customer_id").agg(last=("day", "max"), frequency=("invoice", "size"))
    per["monetary"] = df.groupby("customer_id")["amount"].sum()
    per["recency_days"] = (as_of - per["last"]).dt.days
    per = per.sort_index()
    return per.index.to_numpy(), per[["recency_days", "frequency", "monetary"]].to_numpy()


def polars_features(path: str):
    import polars as pl
    lf = (pl.scan_parquet(path)
          .select("customer_id", "invoice", "invoice_date", "quantity", "unit_price")
          .drop_nulls(["customer_id", "invoice_date"])
          .with_columns(amount=pl.col("quantity") * pl.col("unit_price"),
                        day=pl.col("invoice_date").dt.date())
          .filter(pl.col("amount").is_finite()))
    df = lf.collect()
    as_of = df["day"].max() + dt.timedelta(days=1)
    orders = df.group_by("customer_id", "invoice").agg(net=pl.col("amount").sum(), day=pl.col("day").min())
    per = (orders.filter(pl.col("net") > 0)
           .group_by("customer_id").agg(last=pl.col("day").max(), frequency=pl.len())
           .join(df.group_by("customer_id").agg(monetary=pl.col("amount").sum()), on="customer_id")
           .with_columns(recency_days=(pl.lit(as_of) - pl.col("last")).dt.total_days())
           .sort("customer_id"))
    return per["customer_id"].to_numpy(), per.select("recency_days", "frequency", "monetary").to_numpy()


PEERS = {"pandas+sklearn": ("pandas", pandas_features), "polars+sklearn": ("polars", polars_features)}


def why_unavailable(peer: str) -> str | None:
    """None when the peer's dataframe library imports, else the reason."""
    try:
        __import__(PEERS[peer][0])
    except ImportError as exc:
        return f"{PEERS[peer][0]} is not installed ({exc})"
    return None


def run_peer(peer: str, path: str | Path, out: str | Path, k: int = 5, seed: int = 0) -> np.ndarray:
    """Run one peer pipeline end to end; writes ``customer_id, segment`` and
    the features to ``out`` (Parquet) and returns the labels."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from sklearn.cluster import KMeans
    ids, X = PEERS[peer][1](str(path))
    labels = KMeans(k, random_state=seed).fit_predict(transform(X)).astype(np.int32)
    pq.write_table(pa.table({"customer_id": ids, "segment": labels, "recency_days": X[:, 0],
                             "frequency": X[:, 1], "monetary": X[:, 2]}), str(out))
    return labels
