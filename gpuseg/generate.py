"""Synthetic transaction logs with planted customer behaviours.

Each customer belongs to one planted archetype (champions, loyal, new,
at risk, hibernating, one-off) that sets how often, how recently, how much and
how many returns. The log is written in blocks of customers, so 10⁸+ rows
stream to disk with bounded memory; the same seed gives the same file.

Columns: ``customer_id`` (int64), ``invoice`` (int64), ``invoice_date``
(timestamp), ``quantity`` (int32, negative for returns), ``unit_price``
(float64). With ``dirty > 0`` that share of rows loses its customer id (half of them) or its price.
"""

from __future__ import annotations

import datetime as dt
import numbers
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from .config import SEED_MAX
from .errors import GpusegError
from .outputs import owner_tag, sweep_stale

#: The most rows a log can have (some 10 TB of CSV): counts stay well inside int64.
MAX_ROWS = 10**12

START = dt.date(2023, 1, 1)
DAYS = 731  # two years, through 2024-12-31


@dataclass(frozen=True)
class Archetype:
    name: str
    share: float          # of customers
    lines: float          # relative number of lines
    lines_per_order: float
    window: tuple[int, int]  # active days, counted back from the end: (first_max_back, last_min_back)
    price: float          # median unit price
    quantity: float       # mean extra units per line
    return_rate: float    # share of orders that are returns
    last_spread: int = 30  # days over which the last order falls, back from last_min_back
    max_orders: int | None = None  # at most this many orders (one-off customers: one)


ARCHETYPES = (
    Archetype("champions", 0.10, 14.0, 4.0, (730, 0), 9.0, 6.0, 0.02),
    Archetype("loyal", 0.15, 7.0, 3.5, (600, 30), 5.0, 3.0, 0.03),
    Archetype("new", 0.15, 1.2, 2.5, (60, 0), 4.0, 2.0, 0.02),
    Archetype("at_risk", 0.15, 5.0, 3.5, (730, 200), 5.0, 3.0, 0.05),
    Archetype("hibernating", 0.20, 1.6, 2.0, (730, 400), 3.0, 1.5, 0.05),
    # One purchase, of a few lines, on any day of the two years.
    Archetype("one_off", 0.25, 0.3, 2.0, (730, 0), 2.5, 1.0, 0.0, last_spread=731, max_orders=1),
)

#: Bumped whenever the same options and seed give other rows (``gpuseg bench`` names its cached logs by it).
#: 2: the last order of champions, new and one-off customers no longer always falls on the last day.
#: 3: one-off customers buy once (they had several orders, as many as a tenth of the lines per customer made),
#:    and ``dirty`` blanks one value in that share of rows (each column was blanked in dirty/2 of them apart).
GENERATOR_VERSION = 3

SCHEMA = pa.schema([
    ("customer_id", pa.int64()),
    ("invoice", pa.int64()),
    ("invoice_date", pa.timestamp("s")),
    ("quantity", pa.int32()),
    ("unit_price", pa.float64()),
])


def _customers(n_customers: int, n_rows: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-customer plan: archetype, id, lines, orders, active window, price."""
    shares = np.array([a.share for a in ARCHETYPES])
    kind = rng.choice(len(ARCHETYPES), size=n_customers, p=shares / shares.sum())
    weight = np.array([a.lines for a in ARCHETYPES])[kind] * rng.lognormal(0.0, 0.5, n_customers)
    # Every customer gets one line; the rest are shared out by weight.
    lines = 1 + rng.multinomial(n_rows - n_customers, weight / weight.sum())
    lpo = np.array([a.lines_per_order for a in ARCHETYPES])[kind]
    orders = np.clip(np.rint(lines / (lpo * rng.uniform(0.6, 1.4, n_customers))), 1, lines).astype(np.int64)
    most = np.array([a.max_orders or np.iinfo(np.int64).max for a in ARCHETYPES], dtype=np.int64)[kind]
    orders = np.minimum(orders, most)
    first_back = np.array([a.window[0] for a in ARCHETYPES])[kind]
    last_back = np.array([a.window[1] for a in ARCHETYPES])[kind]
    spread = np.array([a.last_spread for a in ARCHETYPES])[kind]
    last = DAYS - 1 - (last_back + (rng.random(n_customers) * spread).astype(np.int64))
    first = DAYS - 1 - rng.integers(last_back, np.maximum(first_back, last_back) + 1)
    first = np.minimum(first, last)
    return {
        "kind": kind,
        "id": 100_000 + rng.permutation(n_customers).astype(np.int64),
        "lines": lines.astype(np.int64),
        "orders": orders,
        "first": first.astype(np.int64),
        "last": np.maximum(last, first).astype(np.int64),
        "price": np.array([a.price for a in ARCHETYPES])[kind] * rng.lognormal(0.0, 0.3, n_customers),
        "quantity": np.array([a.quantity for a in ARCHETYPES])[kind],
        "return_rate": np.array([a.return_rate for a in ARCHETYPES])[kind],
    }


def _block(plan: dict[str, np.ndarray], lo: int, hi: int, order_base: int,
           rng: np.random.Generator, dirty: float) -> pa.Table:
    """Rows of customers lo..hi-1 of the plan, sorted by time."""
    lines = plan["lines"][lo:hi]
    orders = plan["orders"][lo:hi]
    n = int(lines.sum())
    cust = np.repeat(np.arange(lo, hi), lines)
    # Position of each line within its customer; the first `orders` lines open
    # one order each so that no order is empty, the rest join a random one.
    starts = np.repeat(np.cumsum(lines) - lines, lines)
    pos = np.arange(n) - starts
    n_ord = orders[cust - lo]
    local = np.where(pos < n_ord, pos, (rng.random(n) * n_ord).astype(np.int64))
    order_offset = np.cumsum(orders) - orders
    order_id = order_offset[cust - lo] + local
    total_orders = int(orders.sum())
    order_customer = np.repeat(np.arange(lo, hi), orders)
    first, last = plan["first"][order_customer], plan["last"][order_customer]
    # A customer's first and last orders sit on the ends of its window.
    o_pos = np.arange(total_orders) - np.repeat(order_offset, orders)
    o_day = first + (rng.random(total_orders) * (last - first + 1)).astype(np.int64)
    o_day = np.where(o_pos == 0, last, o_day)
    o_day = np.where((o_pos == 1), first, o_day)
    o_return = rng.random(total_orders) < plan["return_rate"][order_customer]
    o_time = rng.integers(8 * 3600, 20 * 3600, total_orders)

    qty = 1 + rng.poisson(plan["quantity"][cust]).astype(np.int32)
    qty = np.where(o_return[order_id], -qty, qty).astype(np.int32)
    price = np.round(plan["price"][cust] * rng.lognormal(0.0, 0.4, n), 2)
    seconds = (np.datetime64(START, "s").astype(np.int64)
               + o_day[order_id] * 86400 + o_time[order_id])
    # A share ``dirty`` of rows loses one value: the customer id in half of them, the price in the other half.
    u = rng.random(n) if dirty else None
    table = pa.table({
        "customer_id": pa.array(plan["id"][cust], mask=(u < dirty / 2) if dirty else None),
        "invoice": pa.array(order_base + order_id, pa.int64()),
        "invoice_date": pa.array(seconds, pa.timestamp("s")),
        "quantity": pa.array(qty, pa.int32()),
        "unit_price": pa.array(price, mask=((u >= dirty / 2) & (u < dirty)) if dirty else None),
    }, schema=SCHEMA)
    return table.take(pa.array(np.argsort(seconds, kind="stable")))


_PLAN: dict[str, np.ndarray] | None = None  # the customer plan, in each worker


def _set_plan(plan: dict[str, np.ndarray] | None) -> None:
    global _PLAN
    _PLAN = plan


def _make_block(task: tuple[int, int, int, int, int, float]) -> pa.Table:
    i, lo, hi, order_base, seed, dirty = task
    assert _PLAN is not None
    return _block(_PLAN, lo, hi, order_base, np.random.default_rng([seed, i + 1]), dirty)


def iter_tables(n_rows: int, n_customers: int, seed: int = 0, dirty: float = 0.0,
                block_rows: int = 1 << 21, workers: int | None = None) -> Iterator[pa.Table]:
    """Yield the log in blocks of about ``block_rows`` rows, in order.

    Blocks depend only on the seed and their index, so ``workers`` processes
    (default: one per core, up to 8, for logs of four blocks or more) give the
    same rows as one.

    Raises
    ------
    GpusegError
        When the sizes are inconsistent.
    """
    n_rows, n_customers = _whole("--transactions", n_rows), _whole("--customers", n_customers)
    if n_customers < 1:
        raise GpusegError(f"--customers must be >= 1, got {n_customers}")
    if n_rows > MAX_ROWS:
        raise GpusegError(f"--transactions must be at most {MAX_ROWS:,}, got {n_rows:,}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed <= SEED_MAX:
        raise GpusegError(f"--seed must be an integer from 0 to {SEED_MAX}, got {seed!r}")
    seed = int(seed)
    if n_rows < n_customers:
        raise GpusegError(f"--transactions ({n_rows}) must be >= --customers ({n_customers}): "
                          "every customer has at least one line")
    if not 0 <= dirty < 1:
        raise GpusegError(f"--dirty must be in [0, 1), got {dirty}")
    plan = _customers(n_customers, n_rows, np.random.default_rng([seed, 0]))
    bounds = np.searchsorted(np.cumsum(plan["lines"]), np.arange(block_rows, n_rows, block_rows))
    edges = [0, *sorted(set(int(b) + 1 for b in bounds if b + 1 < n_customers)), n_customers]
    orders = plan["orders"]
    bases = 500_000 + np.concatenate([[0], np.cumsum([orders[lo:hi].sum() for lo, hi in zip(edges[:-1], edges[1:])])])
    tasks = [(i, lo, hi, int(bases[i]), seed, dirty) for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:]))]
    if workers is None:
        workers = min(os.cpu_count() or 1, 8) if len(tasks) >= 4 else 1
    if workers <= 1:  # the plan passed along, not through the module global: threads may generate at once
        for i, lo, hi, order_base, seed_, dirty_ in tasks:
            yield _block(plan, lo, hi, order_base, np.random.default_rng([seed_, i + 1]), dirty_)
        return
    import multiprocessing
    # forkserver: safe in a multi-threaded parent; the plan is sent once per worker.
    ctx = multiprocessing.get_context("forkserver" if hasattr(os, "fork") else "spawn")
    with ctx.Pool(workers, initializer=_set_plan, initargs=(plan,)) as pool:
        yield from pool.imap(_make_block, tasks)


def _whole(option: str, value: object) -> int:
    """A count given from Python: an integer, or a float that is a whole number (1e5, as the CLI takes it)."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, float)) \
            or (isinstance(value, float) and not value.is_integer()):
        raise GpusegError(f"{option} must be a whole number, got {value!r}")
    return int(value)


def demo_table(n_customers: int = 50_000, seed: int = 0) -> pa.Table:
    """The built-in demo log: ~10 lines per customer, a few dirty rows."""
    return pa.concat_tables(iter_tables(10 * n_customers, n_customers, seed=seed, dirty=0.004))


def write_log(path: str | os.PathLike[str], n_rows: int, n_customers: int, seed: int = 0,
              dirty: float = 0.0, on_block: Callable[[int], None] | None = None,
              workers: int | None = None) -> int:
    """Write a synthetic log to ``path`` (.csv or .parquet), block by block.

    Returns the number of rows written. The file appears only when complete.
    """
    if not str(path).strip():
        raise GpusegError("--out is empty; give the file to write, e.g. --out tx.parquet")
    path = Path(path)
    name = path.name.lower()
    if not name.endswith((".csv", ".parquet", ".pq")):
        raise GpusegError(f"unsupported output {str(path)!r}; allowed suffixes: .csv, .parquet, .pq")
    if path.exists() and not path.is_file():
        raise GpusegError(f"--out {str(path)!r} exists and is not a file; give a file name to write the log to")
    if not path.parent.is_dir():
        raise GpusegError(f"folder {str(path.parent)!r} does not exist" if not path.parent.exists() else
                          f"{str(path.parent)!r} is a file, not a folder to write {path.name!r} in")
    # Named by host and process: two runs writing the same file each write their own (one then
    # replaces the other whole), and a later run removes what a killed one left.
    sweep_stale(path.parent, f".{path.name}.partial-", min_age_s=600)
    tmp = path.with_name(f".{path.name}.partial-{owner_tag()}{threading.get_ident()}")
    written = 0
    try:
        if name.endswith(".csv"):
            writer = pacsv.CSVWriter(tmp, SCHEMA)
        else:
            writer = pq.ParquetWriter(tmp, SCHEMA, compression="snappy")
        with writer:
            for table in iter_tables(n_rows, n_customers, seed=seed, dirty=dirty, workers=workers):
                writer.write_table(table)
                written += table.num_rows
                if on_block:
                    on_block(table.num_rows)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return written
