"""A real transaction log for benchmarks: the CDNOW purchases, tiled to any size.

CDNOW_master.txt holds every purchase of 23,570 customers of the CDNOW music
store from January 1997 to June 1998 (69,659 lines: customer id, date
YYYYMMDD, number of CDs, dollar value), the log used by Fader, Hardie and
Lee (2005) and shipped in the MIT-licensed ``Lifetimes`` package. Neither
gpuseg nor any of its scripts generated it: it has the gaps, the zero-value
lines and the heavy tail of real buyers. It has no invoice ids, so orders
are customer-days, and amounts are line totals (gpuseg's ``--amount-col``).

To reach 10⁷ or 10⁸ rows it is tiled: copy ``c`` of the log is the same
purchases by customers ``c · 10⁵ + id``; nothing else changes. The rows are
then ordered by date (stably), the order of an export, and written as
Parquet in row groups of 2²⁰ rows: ``customer_id`` int64, ``date`` date32,
``cds`` int32, ``amount`` float64. ``--rows`` below the log's size writes
its first rows in date order (and ``--rows 0`` the whole log once).

The script reads the file from the Lifetimes wheel or an installed
``lifetimes`` package and never downloads anything. Fetch the wheel once
with the package installer, e.g.::

    pip download lifetimes==0.11.3 --no-deps -d benchmarks/data

Usage: python benchmarks/cdnow_log.py --rows 1e7 --out benchmarks/data/cdnow-1e7.parquet [--source PATH]
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import io
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
MEMBER = "lifetimes/datasets/CDNOW_master.txt"
#: Customer ids of one copy stay below this (CDNOW's go to 23,570).
ID_STRIDE = 100_000
ROW_GROUP = 1 << 20
EPOCH = np.datetime64("1970-01-01", "D")


def find_source(given: str | None) -> Path:
    """CDNOW_master.txt, a Lifetimes wheel holding it, or an installed ``lifetimes`` package's copy."""
    if given:
        return Path(given)
    wheels = sorted(glob.glob(str(HERE / "data" / "[Ll]ifetimes-*.whl")))
    if wheels:
        return Path(wheels[-1])
    spec = importlib.util.find_spec("lifetimes")
    if spec is not None and spec.origin:
        path = Path(spec.origin).parent / "datasets" / "CDNOW_master.txt"
        if path.exists():
            return path
    raise SystemExit("CDNOW_master.txt not found: run `pip download lifetimes==0.11.3 --no-deps -d "
                     "benchmarks/data` once, or give --source (the .txt, or a Lifetimes wheel)")


def read_cdnow(source: Path) -> dict[str, np.ndarray]:
    """The log's columns as NumPy arrays (customer_id, day since 1970, cds, amount), in file order."""
    if source.suffix == ".whl":
        with zipfile.ZipFile(source) as z:
            text = z.read(MEMBER).decode("ascii")
    else:
        text = source.read_text(encoding="ascii")
    table = np.loadtxt(io.StringIO(text), skiprows=1, dtype=np.float64)
    ymd = table[:, 1].astype(np.int64)
    dates = np.array([f"{v // 10000:04d}-{v // 100 % 100:02d}-{v % 100:02d}" for v in ymd], dtype="datetime64[D]")
    return {"customer_id": table[:, 0].astype(np.int64), "day": (dates - EPOCH).astype(np.int32),
            "cds": table[:, 2].astype(np.int32), "amount": table[:, 3]}


def tiled(log: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
    """``rows`` rows of the log tiled (ids offset per copy), ordered by date, stably."""
    n = len(log["day"])
    copies = -(-rows // n)
    copy = np.repeat(np.arange(copies, dtype=np.int64), n)[:rows]
    line = np.tile(np.arange(n), copies)[:rows]
    # Date order, then copy, then the file's order: an export sorted by date.
    order = np.lexsort((line, copy, log["day"][line]))
    copy, line = copy[order], line[order]
    return {"customer_id": log["customer_id"][line] + copy * ID_STRIDE, "day": log["day"][line],
            "cds": log["cds"][line], "amount": log["amount"][line]}


def write(columns: dict[str, np.ndarray], out: Path) -> None:
    table = pa.table({"customer_id": columns["customer_id"],
                      "date": pa.array(columns["day"], pa.int32()).view(pa.date32()),
                      "cds": columns["cds"], "amount": columns["amount"]})
    pq.write_table(table, out, row_group_size=ROW_GROUP, compression="snappy")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", default="0", help="rows to write, e.g. 1e7 (0: the log once, 69,659 rows)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--source", help="CDNOW_master.txt or a Lifetimes wheel (default: benchmarks/data/Lifetimes-*.whl, "
                                     "else an installed lifetimes)")
    args = ap.parse_args()
    log = read_cdnow(find_source(args.source))
    rows = int(float(args.rows)) or len(log["day"])
    write(tiled(log, rows), Path(args.out))
    print(f"wrote {rows:,} rows of CDNOW purchases ({-(-rows // len(log['day']))} copies) to {args.out}")


if __name__ == "__main__":
    main()
