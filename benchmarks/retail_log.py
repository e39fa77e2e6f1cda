"""A transaction log shaped the way retailers export them, made without gpuseg.

gpuseg's own generator plants archetypes in tidy columns (integer ids, one
timestamp unit). Benchmarks must not be tuned to it alone, so this script
writes what an ERP or e-commerce export usually looks like, modelled on the
public "Online Retail II" export:

============  ===============================================================
Invoice       text: six or seven digits; cancellations carry a "C" prefix
StockCode     text product code
Description   text
Quantity      int64, negative on cancellation invoices
InvoiceDate   timestamp[us], shop hours, with seasonality
Price         float64 unit price (log-normal; some zeros)
Customer ID   float64 with nulls (how pandas exports an id column with gaps)
Country       text
============  ===============================================================

Customers' order counts are heavy-tailed (a Pareto draw), basket sizes are
geometric, and an invoice belongs to one customer. It uses only NumPy and
pyarrow, and writes row groups of ~1M rows, streamed, so 10⁸ rows need little
memory.

Usage: python benchmarks/retail_log.py --rows 1e7 --out retail-1e7.parquet [--seed 1] [--csv]
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

SCHEMA = pa.schema([
    ("Invoice", pa.string()),
    ("StockCode", pa.string()),
    ("Description", pa.string()),
    ("Quantity", pa.int64()),
    ("InvoiceDate", pa.timestamp("us")),
    ("Price", pa.float64()),
    ("Customer ID", pa.float64()),
    ("Country", pa.string()),
])
COUNTRIES = ["United Kingdom", "Germany", "France", "EIRE", "Netherlands", "Spain", "Belgium", "Switzerland",
             "Portugal", "Australia", "Norway", "Italy", "Sweden", "Denmark", "USA", "Japan"]
COUNTRY_P = np.array([0.82, 0.03, 0.03, 0.02, 0.02, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.005, 0.005, 0.005,
                      0.005, 0.01])
START = dt.datetime(2022, 12, 1)
SPAN_DAYS = 760
LINES_PER_INVOICE = 4.0
ROWS_PER_CUSTOMER = 20
MISSING_CUSTOMER = 0.05
CANCEL_SHARE = 0.02
CHUNK_INVOICES = 250_000


def _products(rng: np.random.Generator, n: int = 4000) -> tuple[pa.Array, pa.Array, np.ndarray]:
    codes = pa.array([f"{c}{s}" for c, s in zip(rng.integers(10000, 90000, n), rng.choice(["", "A", "B", "C"], n))])
    words = np.array(["SET", "OF", "3", "HEART", "LANTERN", "WHITE", "RED", "VINTAGE", "MUG", "BAG", "JUMBO",
                      "CAKE", "CASE", "T-LIGHT", "HOLDER", "PAPER", "CHAIN", "KIT", "REGENCY", "TEA"])
    desc = pa.array([" ".join(rng.choice(words, rng.integers(2, 6))) for _ in range(n)])
    price = np.round(np.exp(rng.normal(1.0, 0.9, n)), 2)
    price[rng.random(n) < 0.003] = 0.0
    return codes, desc, price


def write(out: Path, rows: int, seed: int = 1, csv: bool = False) -> None:
    rng = np.random.default_rng(seed)
    n_customers = max(rows // ROWS_PER_CUSTOMER, 1)
    codes, desc, price_of = _products(rng)
    # Heavy-tailed activity: weight ~ Pareto, so a few customers own many invoices.
    weight = rng.pareto(1.6, n_customers) + 0.2
    cdf = np.cumsum(weight / weight.sum())
    cust_ids = rng.permutation(np.arange(12346, 12346 + n_customers, dtype=np.int64)).astype(np.float64)
    country_of = rng.choice(len(COUNTRIES), n_customers, p=COUNTRY_P / COUNTRY_P.sum())
    # Each customer is active over a window inside the span.
    first = rng.integers(0, SPAN_DAYS, n_customers)
    last = np.minimum(SPAN_DAYS - 1, first + rng.exponential(300, n_customers).astype(np.int64))
    writer = None
    written, next_invoice = 0, 489434
    try:
        while written < rows:
            m = CHUNK_INVOICES
            lines = rng.geometric(1 / LINES_PER_INVOICE, m)
            cum = np.cumsum(lines)
            keep_inv = int(np.searchsorted(cum, rows - written, side="right")) + 1
            m = min(m, keep_inv)
            lines = lines[:m]
            lines[-1] -= max(0, int(lines.sum()) - (rows - written))
            cust = np.minimum(np.searchsorted(cdf, rng.random(m)), n_customers - 1)
            day = first[cust] + (rng.random(m) * (last[cust] - first[cust] + 1)).astype(np.int64)
            seconds = (day * 86400 + rng.integers(7 * 3600, 20 * 3600, m)).astype(np.int64)
            cancel = rng.random(m) < CANCEL_SHARE
            inv_no = next_invoice + np.arange(m, dtype=np.int64)
            next_invoice += m
            n = int(lines.sum())
            inv_row = np.repeat(np.arange(m), lines)
            prod = rng.zipf(1.3, n) % len(price_of)
            qty = np.maximum(1, rng.geometric(0.25, n) - 1 + (rng.random(n) < 0.1) * 11).astype(np.int64)
            qty = np.where(cancel[inv_row], -qty, qty)
            text = pc.cast(pa.array(inv_no), pa.string())
            text = pc.if_else(pa.array(cancel), pc.binary_join_element_wise("C", text, ""), text)
            cust_col = pa.array(cust_ids[cust][inv_row], mask=rng.random(n) < MISSING_CUSTOMER)
            ts = (START - dt.datetime(1970, 1, 1)).total_seconds() + seconds[inv_row]
            table = pa.table({
                "Invoice": text.take(pa.array(inv_row)),
                "StockCode": codes.take(pa.array(prod)),
                "Description": desc.take(pa.array(prod)),
                "Quantity": qty,
                "InvoiceDate": pa.array((ts * 1_000_000).astype(np.int64), pa.timestamp("us")),
                "Price": price_of[prod],
                "Customer ID": cust_col,
                "Country": pa.array(np.array(COUNTRIES)[country_of[cust][inv_row]]),
            }, schema=SCHEMA)
            if csv:
                if writer is None:
                    writer = pacsv.CSVWriter(str(out), SCHEMA)
            elif writer is None:
                writer = pq.ParquetWriter(str(out), SCHEMA, compression="snappy")
            writer.write_table(table, **({} if csv else {"row_group_size": 1 << 20}))
            written += n
    finally:
        if writer is not None:
            writer.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=float, default=1e7)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--csv", action="store_true", help="write CSV instead of Parquet")
    args = ap.parse_args()
    write(Path(args.out), int(args.rows), args.seed, args.csv)


if __name__ == "__main__":
    main()
