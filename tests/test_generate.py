"""Synthetic logs: deterministic, exact sizes, every customer present, safe writes."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from gpuseg.errors import GpusegError
from gpuseg.generate import ARCHETYPES, DAYS, SCHEMA, START, demo_table, iter_tables, write_log


def concat(n_rows, n_customers, **kw):
    return pa.concat_tables(iter_tables(n_rows, n_customers, **kw))


def test_same_seed_same_log_other_seed_other_log():
    a, b, c = concat(600, 60, seed=7), concat(600, 60, seed=7), concat(600, 60, seed=8)
    assert a.equals(b)
    assert not a.equals(c)


@pytest.mark.parametrize("n_rows, n_customers, block_rows", [(50, 50, 1 << 21), (1000, 7, 1 << 21),
                                                              (3000, 200, 256)])
def test_row_count_exact_and_every_customer_present(n_rows, n_customers, block_rows):
    tables = list(iter_tables(n_rows, n_customers, seed=1, block_rows=block_rows))
    t = pa.concat_tables(tables)
    assert t.schema == SCHEMA
    assert t.num_rows == n_rows
    ids = t["customer_id"].to_numpy()
    assert len(np.unique(ids)) == n_customers
    if block_rows == 256:
        assert len(tables) > 1
        # Blocks hold whole customers.
        per_block = [set(x["customer_id"].to_pylist()) for x in tables]
        assert sum(len(s) for s in per_block) == n_customers


def test_values_are_plausible():
    t = concat(4000, 300, seed=2)
    days = (t["invoice_date"].cast(pa.date32()).cast(pa.int32()).to_numpy()
            - (START - dt.date(1970, 1, 1)).days)
    assert days.min() >= 0 and days.max() <= DAYS - 1
    qty = t["quantity"].to_numpy()
    assert (qty != 0).all() and (qty < 0).any() and (qty > 0).mean() > 0.8
    assert (t["unit_price"].to_numpy() > 0).all()
    assert t["customer_id"].null_count == 0 and t["unit_price"].null_count == 0
    # An invoice belongs to one customer and one moment.
    groups = t.group_by("invoice").aggregate([("customer_id", "count_distinct"), ("invoice_date", "count_distinct")])
    assert set(groups["customer_id_count_distinct"].to_pylist()) == {1}
    assert set(groups["invoice_date_count_distinct"].to_pylist()) == {1}
    assert abs(sum(a.share for a in ARCHETYPES) - 1) < 1e-12


@pytest.mark.parametrize("dirty", [0.2, 0.6])
def test_dirty_rows_lose_ids_or_prices(dirty):
    # The share asked for loses one value each (each column was blanked in dirty/2 of the rows
    # apart, so 0.6 gave 0.51 of rows and some lost both).
    n = 20_000
    t = concat(n, 100, seed=3, dirty=dirty)
    no_id, no_price = t["customer_id"].is_null().to_numpy(zero_copy_only=False), \
        t["unit_price"].is_null().to_numpy(zero_copy_only=False)
    assert not (no_id & no_price).any()
    sd = (dirty * (1 - dirty) / n) ** 0.5
    assert abs((no_id | no_price).mean() - dirty) < 5 * sd
    assert abs(no_id.mean() - dirty / 2) < 5 * sd


def test_demo_table_has_ten_lines_per_customer_and_a_few_dirty_rows():
    t = demo_table(1000)
    assert t.num_rows == 10_000
    assert len(np.unique(t["customer_id"].drop_null().to_numpy())) > 990
    assert 0 < t["customer_id"].null_count + t["unit_price"].null_count < 100
    assert demo_table(1000).equals(t)


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".pq"])
def test_write_log_files(tmp_path, suffix):
    path = tmp_path / f"tx{suffix}"
    assert write_log(path, 800, 90, seed=5) == 800
    t = pacsv.read_csv(path) if suffix == ".csv" else pq.read_table(path)
    assert t.num_rows == 800
    assert t.column_names == SCHEMA.names
    assert len(set(t["customer_id"].to_pylist())) == 90
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_write_log_is_deterministic_on_disk(tmp_path):
    for name in ("a.parquet", "b.parquet", "c.csv", "d.csv"):
        write_log(tmp_path / name, 500, 40, seed=11)
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    assert (tmp_path / "c.csv").read_bytes() == (tmp_path / "d.csv").read_bytes()
    # Parquet has no second unit: timestamps come back as milliseconds.
    assert pq.read_table(tmp_path / "a.parquet").cast(SCHEMA).equals(concat(500, 40, seed=11))


def test_csv_and_parquet_hold_the_same_rows(tmp_path):
    write_log(tmp_path / "t.csv", 300, 30, seed=4)
    write_log(tmp_path / "t.parquet", 300, 30, seed=4)
    c = pacsv.read_csv(tmp_path / "t.csv", convert_options=pacsv.ConvertOptions(column_types=SCHEMA))
    assert c.equals(pq.read_table(tmp_path / "t.parquet").cast(SCHEMA))


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_no_partial_file_remains_on_error(tmp_path, suffix):
    path = tmp_path / f"tx{suffix}"
    seen = []

    def boom(rows):
        seen.append(rows)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_log(path, 2000, 100, on_block=boom)
    assert seen  # the failure came after rows were written
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_an_existing_file(tmp_path):
    path = tmp_path / "tx.parquet"
    write_log(path, 100, 10, seed=1)
    before = path.read_bytes()

    def boom(rows):
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_log(path, 200, 10, seed=2, on_block=boom)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["tx.parquet"]


@pytest.mark.parametrize("n_rows, n_customers, dirty, match", [
    (10, 0, 0.0, "--customers must be >= 1"),
    (10, -5, 0.0, "--customers must be >= 1"),
    (9, 10, 0.0, r"--transactions \(9\) must be >= --customers \(10\)"),
    (10, 5, 1.0, r"--dirty must be in \[0, 1\)"),
    (10, 5, -0.1, r"--dirty must be in \[0, 1\)"),
])
def test_bad_sizes_raise(tmp_path, n_rows, n_customers, dirty, match):
    with pytest.raises(GpusegError, match=match):
        write_log(tmp_path / "tx.csv", n_rows, n_customers, dirty=dirty)
    assert list(tmp_path.iterdir()) == []


def test_bad_output_paths(tmp_path):
    with pytest.raises(GpusegError, match="allowed suffixes"):
        write_log(tmp_path / "tx.json", 10, 5)
    with pytest.raises(GpusegError, match="does not exist"):
        write_log(tmp_path / "missing" / "tx.csv", 10, 5)
    assert list(tmp_path.iterdir()) == []


def test_worker_processes_give_the_same_rows():
    from gpuseg.generate import iter_tables
    one = pa.concat_tables(iter_tables(60_000, 3_000, seed=4, block_rows=10_000, workers=1))
    many = pa.concat_tables(iter_tables(60_000, 3_000, seed=4, block_rows=10_000, workers=3))
    assert one.num_rows == 60_000
    assert one.equals(many)


def test_planted_last_orders_spread_over_each_archetypes_window():
    # The last order of champions, new and one-off customers fell on the last day, always: one-off
    # buyers (a quarter of customers) looked new, and "New" took 42% of a segmentation.
    t = concat(200_000, 20_000, seed=0)
    day = (t.column("invoice_date").to_numpy().astype("datetime64[D]") - np.datetime64(START)).astype(np.int64)
    last = np.full(t.column("customer_id").to_numpy().max() + 1, -1)
    np.maximum.at(last, t.column("customer_id").to_numpy(), day)
    recency = DAYS - last[last >= 0]  # 1 = the last day
    assert np.mean(recency == 1) < 0.05
    assert np.mean(recency > 365) > 0.15  # one-off and hibernating customers, a year and more ago
    for a in ARCHETYPES:
        assert a.last_spread >= 1 and a.window[1] + a.last_spread <= DAYS


@pytest.mark.parametrize("n_rows, n_customers", [(20_000, 2_000), (200_000, 2_000)])
def test_one_off_customers_buy_once(n_rows, n_customers):
    # They had a median of 10 orders at 100 lines per customer, and 1.6 at 10: every archetype's
    # lines, and so its orders, grew with the log's lines per customer.
    from gpuseg.generate import _customers
    plan = _customers(n_customers, n_rows, np.random.default_rng([5, 0]))  # as iter_tables plans seed 5
    one_off = [i for i, a in enumerate(ARCHETYPES) if a.name == "one_off"][0]
    ids = set(plan["id"][plan["kind"] == one_off].tolist())
    t = concat(n_rows, n_customers, seed=5)
    per = t.group_by("customer_id").aggregate([("invoice", "count_distinct"), ("quantity", "min")]).to_pydict()
    orders = {c: n for c, n, q in zip(per["customer_id"], per["invoice_count_distinct"], per["quantity_min"])
              if c in ids and q > 0}
    assert len(orders) == len(ids) > 0.2 * n_customers  # every one a purchase, none a return
    assert set(orders.values()) == {1}
    others = [n for c, n in zip(per["customer_id"], per["invoice_count_distinct"]) if c not in ids]
    assert np.median(others) > 1


def test_the_closing_line_gives_a_small_dirty_share_as_asked(tmp_path):
    from typer.testing import CliRunner

    from gpuseg.cli import app
    result = CliRunner().invoke(app, ["generate", "--transactions", "2000", "--customers", "100", "--dirty",
                                      "0.0004", "--out", str(tmp_path / "tx.parquet")])
    assert result.exit_code == 0 and "(0.04% of rows" in " ".join(result.output.split())  # was 0.0%


def test_generate_cli_defaults_and_numbers_out_of_reach(tmp_path, monkeypatch):
    from typer.testing import CliRunner
    from gpuseg.cli import app
    import gpuseg.generate as generate
    calls = []
    monkeypatch.setattr(generate, "write_log", lambda path, n, m, **kw: calls.append((n, m)) or n)
    # Typer hands the default (an int) to the parser: a TypeError traceback whenever one was left out.
    result = CliRunner().invoke(app, ["generate", "--out", str(tmp_path / "t.parquet"), "-q"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(app, ["generate", "--customers", "1e3", "--out", str(tmp_path / "t.parquet"), "-q"])
    assert result.exit_code == 0, result.output
    assert calls == [(1_000_000, 100_000), (1_000_000, 1000)]
    for bad in ("1e400", "inf", "nan", "1.5", "-3", "x"):  # 1e400 and inf were OverflowError tracebacks
        result = CliRunner().invoke(app, ["generate", "--transactions", bad, "--out", str(tmp_path / "u.parquet")])
        assert result.exit_code == 2 and "Traceback" not in result.output and "whole number" in result.output


def test_an_output_that_is_a_folder_is_refused_before_any_row_is_made(tmp_path):
    (tmp_path / "d.parquet").mkdir()
    with pytest.raises(GpusegError, match="exists and is not a file"):  # was "Is a directory: .d.parquet.partial"
        write_log(tmp_path / "d.parquet", 10**5, 10)


def test_two_writers_of_one_file_each_write_their_own_and_a_dead_ones_partial_is_swept(tmp_path):
    # Both wrote .tx.parquet.partial: the file one renamed into place was the other's, half written.
    import os
    import socket
    from concurrent.futures import ThreadPoolExecutor
    path = tmp_path / "tx.parquet"
    with ThreadPoolExecutor(2) as pool:
        counts = list(pool.map(lambda seed: write_log(path, 200_000, 20_000, seed=seed, workers=1), [1, 2]))
    assert counts == [200_000, 200_000]
    table = pq.read_table(path)  # one writer's whole file (was: "Couldn't deserialize thrift")
    assert table.num_rows == 200_000
    written = table.cast(SCHEMA)  # Parquet keeps seconds as milliseconds
    assert written.equals(concat(200_000, 20_000, seed=1)) or written.equals(concat(200_000, 20_000, seed=2))
    dead = tmp_path / f".tx.parquet.partial-{socket.gethostname().replace('-', '_')}-{2**22 + os.getpid()}-7"
    dead.write_bytes(b"left by a killed run")
    fresh = tmp_path / f".tx.parquet.partial-{socket.gethostname().replace('-', '_')}-{2**22 + os.getpid() + 1}-7"
    fresh.write_bytes(b"being written, maybe by another PID namespace's run")
    os.utime(dead, (0, 0))  # untouched for a long time
    write_log(path, 1000, 100)
    assert fresh.exists()
    fresh.unlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tx.parquet"]
