"""Cleaning: date parsing, counted drops, id coding, orders, as_of, errors."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from cli_helpers import checkout_env
from hypothesis import given, settings
from hypothesis import strategies as st

from gpuseg import cleaning
from gpuseg.backend import to_numpy
from gpuseg.cleaning import AFTER_AS_OF, clean, day_date, day_number, parse_days
from gpuseg.columns import ColumnMapping
from gpuseg.errors import GpusegError

D = day_number  # shorthand in expectations

MAP = ColumnMapping(customer="customer_id", date="date", amount="amount")
MAP_INV = ColumnMapping(customer="customer_id", date="date", invoice="invoice", amount="amount")


_XP = [np]


@pytest.fixture(autouse=True)
def cleaning_namespace(xp):
    """Every test here runs the rules in NumPy, and in CuPy (``gpu``) where a device exists."""
    _XP[0] = xp
    yield
    _XP[0] = np


def run_clean(columns: dict, mapping: ColumnMapping = MAP, **kwargs):
    """Clean one in-memory file made of ``columns``, in the namespace of the running test."""
    batch = pa.record_batch(columns)
    return clean([(Path("mem.csv"), iter([batch]))], mapping, xp=_XP[0], **kwargs)


def days(values, fmt=None):
    d, ok = parse_days(values if isinstance(values, pa.Array) else pa.array(values), fmt)
    return [int(x) if good else None for x, good in zip(d, ok)]


# -- dates -----------------------------------------------------------------------

def test_iso_text_with_and_without_time():
    got = days(["2024-03-05", "2024-03-05T10:20:30", "2024-03-05 23:59", " 2024-03-05 ",
                "2024-03-05T10:20:30+05:00"])
    assert got == [D(dt.date(2024, 3, 5))] * 5


def test_day_numbers_are_days_since_1970():
    assert days(["1970-01-01", "1970-01-02", "1969-12-31", "2000-03-01"]) == [0, 1, -1, 11017]
    assert day_date(D(dt.date(2024, 2, 29))) == dt.date(2024, 2, 29)


@pytest.mark.parametrize("text", ["2024-02-30", "2023-02-29", "2024-04-31", "2024-13-01", "2024-3-5",
                                  "2024-03-05X", "05/03/2024", "", "yesterday"])
def test_bad_iso_text_is_rejected(text):
    assert days([text]) == [None]


def test_leap_day_is_accepted():
    assert days(["2024-02-29", "2000-02-29"]) == [D(dt.date(2024, 2, 29)), D(dt.date(2000, 2, 29))]


def test_compact_text_and_integer_dates():
    expected = D(dt.date(2024, 3, 5))
    assert days(["20240305", "20241301", "20240230", "2024030"]) == [expected, None, None, None]
    assert days(pa.array([20240305, 20241301, 20240230, None], pa.int64())) == [expected, None, None, None]
    assert days(pa.array([20240305], pa.int32())) == [expected]


def test_float_yyyymmdd_as_written_by_spreadsheets():
    assert days(pa.array([20240305.0, 20240305.5, float("nan")])) == [D(dt.date(2024, 3, 5)), None, None]


def test_dates_and_naive_timestamps():
    day = D(dt.date(2024, 3, 5))
    assert days(pa.array([dt.date(2024, 3, 5)], pa.date32())) == [day]
    assert days(pa.array([dt.datetime(2024, 3, 5, 23, 59, 59)], pa.timestamp("s"))) == [day]
    assert days(pa.array([dt.datetime(2024, 3, 5, 0, 0, 1)], pa.timestamp("ns"))) == [day]
    assert days(pa.array([dt.datetime(1969, 12, 31, 12)], pa.timestamp("ms"))) == [-1]


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns", "date32", "date64"])
def test_naive_days_agree_with_arrows_cast(unit):
    """Dates and naive timestamps are divided in NumPy: the days of Arrow's cast, nulls and
    slices included, before 1970 too (floored, not truncated)."""
    per_day = {"s": 86_400, "ms": 86_400_000, "us": 86_400_000_000, "ns": 86_400_000_000_000,
               "date32": 1, "date64": 86_400_000}[unit]
    rng = np.random.default_rng(1)
    values = rng.integers(-400 * per_day, 30_000 * per_day, 1000)
    values[:4] = [-1, 0, per_day - 1, per_day]
    if unit == "date32":
        t = pa.date32()
        values = values.astype(np.int32)
    else:
        t = pa.date64() if unit == "date64" else pa.timestamp(unit)
    arr = pa.array(values, t, mask=rng.random(1000) < 0.1).slice(3, 900)
    got, valid = cleaning._date32_days(arr)
    want = [int(v) // per_day for v in values[3:903]]  # Python's // floors
    assert valid.tolist() == arr.is_valid().to_pylist()
    assert got.dtype == np.int32 and got[valid].tolist() == [w for w, ok in zip(want, valid) if ok]
    if unit != "date64":  # Arrow casts only whole days of date64
        assert got[valid].tolist() == [v for v in arr.cast(pa.date32()).view(pa.int32()).to_pylist() if v is not None]


def test_days_past_int32_are_clipped_not_wrapped():
    """10¹⁵ s is ~1.2·10¹⁰ days: Arrow's cast wraps it into int32 (a wrong, maybe plausible
    day); clipped to int32's end, it is out of range and dropped as such."""
    got, _ = cleaning._date32_days(pa.array([10**15, -10**15, 0], pa.timestamp("s")))
    assert got.tolist() == [2**31 - 1, -2**31, 0]
    assert got[0] > cleaning.LAST_DAY and got[1] < cleaning.FIRST_DAY


def test_tz_aware_timestamps_use_their_own_zone():
    # 03:00 UTC on Jan 2 is still Jan 1 in New York, and 07:00 on Jan 2 in Tokyo.
    instant = dt.datetime(2024, 1, 2, 3, 0, tzinfo=dt.timezone.utc)
    ny = pa.array([instant], pa.timestamp("s", tz="America/New_York"))
    tokyo = pa.array([dt.datetime(2024, 1, 1, 22, 0, tzinfo=dt.timezone.utc)], pa.timestamp("us", tz="Asia/Tokyo"))
    assert days(ny) == [D(dt.date(2024, 1, 1))]
    assert days(tokyo) == [D(dt.date(2024, 1, 2))]


def test_explicit_date_format():
    fmt = "%m/%d/%Y %H:%M"
    got = days(["03/05/2024 10:20", "12/31/2023 23:59", "3/5/2024 1:02", "2024-03-05 10:20", "13/01/2024 10:00"],
               fmt)
    assert got == [D(dt.date(2024, 3, 5)), D(dt.date(2023, 12, 31)), D(dt.date(2024, 3, 5)), None, None]


def test_explicit_date_format_rejects_impossible_days_instead_of_rolling_over():
    fmt = "%m/%d/%Y %H:%M"
    got = days(["02/30/2024 10:00", "02/29/2023 10:00", "04/31/2024 09:00", "02/29/2024 10:00",
                "03/01/2024 10:00"], fmt)
    assert got == [None, None, None, D(dt.date(2024, 2, 29)), D(dt.date(2024, 3, 1))]


def test_a_day_of_the_year_past_the_years_length_is_unparseable():
    # Arrow reads day 366 of 2023 as 2025-02-01, Python as 2024-01-01: neither is a date.
    assert days(["2023366", "2024366", "2023365", "2023001", "2022366"], "%Y%j") == \
        [None, D(dt.date(2024, 12, 31)), D(dt.date(2023, 12, 31)), D(dt.date(2023, 1, 1)), None]


def test_a_format_with_a_utc_offset_counts_days_in_the_written_zone():
    # 23:30 at -05:00 is Jan 2 in UTC and Jan 1 as written; ISO text without --date-format
    # and zoned timestamps count the written day too.
    fmt = "%Y-%m-%dT%H:%M:%S%z"
    text = ["2024-01-01T23:30:00-0500", "2024-01-02T01:30:00+03:00", "2024-01-03T12:00:00Z",
            "2024-01-01T23:30:00-05", "2024-01-01T23:30:00 +0500", "2024-02-30T01:00:00+0500", "junk",
            "2023-02-30T10:00:00-05"]  # no date, whichever way the offset is written
    assert days(text, fmt) == [D(dt.date(2024, 1, 1)), D(dt.date(2024, 1, 2)), D(dt.date(2024, 1, 3)),
                               D(dt.date(2024, 1, 1)), D(dt.date(2024, 1, 1)), None, None, None]
    assert days(text[:3]) == days(text[:3], fmt)
    # A format Python cannot compile (%z twice) leaves Arrow's reading: the UTC day, not a crash.
    assert days(["2024-01-15 23:30 -0500 -0500", "2024-01-15 12:00 +0000 +0000"], "%Y-%m-%d %H:%M %z %z") == \
        [D(dt.date(2024, 1, 16)), D(dt.date(2024, 1, 15))]
    # %z at the start, short offsets too; in the middle, Python's strptime reads the written time.
    assert days(["+0500 2024-01-01 23:30", "-0500 2024-01-02 01:30", "+0500 2024-01-01", "-05 2023-03-01 23:30",
                 "-05 2023-02-30 10:00"], "%z %Y-%m-%d %H:%M") == \
        [D(dt.date(2024, 1, 1)), D(dt.date(2024, 1, 2)), None, D(dt.date(2023, 3, 1)), None]
    assert days(["2024-01-01 +0500 23:30", "2024-01-01 -0500 23:30"], "%Y-%m-%d %z %H:%M") == \
        [D(dt.date(2024, 1, 1))] * 2


def test_date_of_other_type_is_an_error():
    with pytest.raises(GpusegError, match="--date-format"):
        parse_days(pa.array([True]), column="when")


@settings(max_examples=150, deadline=None)
@given(y=st.integers(1900, 2100), m=st.integers(0, 13), d=st.integers(0, 32))
def test_parsing_agrees_with_the_calendar(y, m, d):
    try:
        expected = D(dt.date(y, m, d))
    except ValueError:
        expected = None
    iso = f"{y:04d}-{m:02d}-{d:02d}"
    assert days([iso, iso + "T12:00:00", iso.replace("-", "")]) == [expected] * 3
    assert days(pa.array([y * 10000 + m * 100 + d], pa.int64())) == [expected]
    assert days([f"{m:02d}/{d:02d}/{y:04d}"], "%m/%d/%Y") == [expected]


# -- drops --------------------------------------------------------------------------

def test_drop_reasons_counted_once_in_precedence_order():
    tx = run_clean({
        "customer_id": ["a", None, "", "  ", None, "b", "b", "c", "c", "d"],
        "date": ["2024-01-01", "2024-01-01", "2024-01-01", "2024-01-01", "nope",
                 "nope", "nope", "2024-01-02", "2024-01-03", "2024-01-04"],
        "amount": [1.0, 1.0, 1.0, 1.0, None, 1.0, None, None, float("inf"), 2.0],
    })
    # Rows 1-4 lack a customer (row 4 also has a bad date and amount): customer first.
    # Rows 5-6 have a bad date (row 6 also a missing amount): date second.
    assert tx.rows.dropped == {"missing_customer_id": 4, "unparseable_date": 2, "date_out_of_range": 0,
                               "bad_amount": 2}
    assert tx.rows.read == 10 and tx.rows.used == 2
    assert tx.customer_ids.to_pylist() == ["a", "d"]
    assert AFTER_AS_OF not in tx.rows.dropped
    assert tx.rows.to_dict() == {"read": 10, "used": 2, "dropped": tx.rows.dropped}


def test_returns_and_zero_amounts_are_kept():
    tx = run_clean({"customer_id": ["a", "a", "a"], "date": ["2024-01-01"] * 3, "amount": [5.0, -3.0, 0.0]})
    assert tx.rows.used == 3
    assert sorted(tx.amount.tolist()) == [-3.0, 0.0, 5.0]


def test_amount_from_quantity_times_price():
    mapping = ColumnMapping(customer="c", date="d", quantity="q", price="p")
    tx = run_clean({"c": [1, 1, 2], "d": ["2024-01-01"] * 3, "q": [2, -1, None], "p": [1.5, 4.0, 3.0]}, mapping)
    assert tx.amount.tolist() == [3.0, -4.0]
    assert tx.rows.dropped["bad_amount"] == 1


def test_non_numeric_amount_is_an_error():
    with pytest.raises(GpusegError, match="must be numeric"):
        run_clean({"customer_id": ["a"], "date": ["2024-01-01"], "amount": ["12"]})


# -- customer ids ----------------------------------------------------------------------

def test_integer_ids_stay_integers_and_are_coded_in_sorted_order():
    tx = run_clean({"customer_id": pa.array([30, 10, 20, 10], pa.int64()),
                    "date": ["2024-01-01"] * 4, "amount": [1.0] * 4})
    assert tx.customer_ids.type == pa.int64()
    assert tx.customer_ids.to_pylist() == [10, 20, 30]
    assert tx.customer.tolist() == [2, 0, 1, 0]
    assert tx.n_customers == 3


def test_text_ids_that_are_all_integers_become_integers():
    # CSV ids are read as text; "12" is coded like the number 12.
    tx = run_clean({"customer_id": ["12", "3", " 7"], "date": ["2024-01-01"] * 3, "amount": [1.0] * 3})
    assert tx.customer_ids.type == pa.int64()
    assert tx.customer_ids.to_pylist() == [3, 7, 12]


def test_leading_zero_and_text_ids_stay_strings():
    tx = run_clean({"customer_id": ["007", "7", "C-1", "007"], "date": ["2024-01-01"] * 4, "amount": [1.0] * 4})
    assert pa.types.is_string(tx.customer_ids.type)
    assert tx.customer_ids.to_pylist() == ["007", "7", "C-1"]
    assert tx.customer.tolist() == [0, 1, 2, 0]


def test_ids_of_different_types_across_files_become_text():
    files = [(Path("a.parquet"), iter([pa.record_batch({"customer_id": pa.array([5, 6], pa.int64()),
                                                          "date": ["2024-01-01"] * 2, "amount": [1.0, 1.0]})])),
             (Path("b.csv"), iter([pa.record_batch({"customer_id": ["X9"], "date": ["2024-01-02"],
                                                     "amount": [2.0]})]))]
    tx = clean(files, MAP, xp=_XP[0])
    assert tx.customer_ids.to_pylist() == ["5", "6", "X9"]
    assert tx.rows.read == 3


def test_minus_zero_text_is_not_a_canonical_integer():
    # "-0" and "0" are two ids as written; as integers they would be one id 0 twice.
    tx = run_clean({"customer_id": ["-0", "0", "5"], "date": ["2024-01-01"] * 3, "amount": [1.0] * 3})
    assert pa.types.is_string(tx.customer_ids.type)
    assert sorted(tx.customer_ids.to_pylist()) == ["-0", "0", "5"]


def test_large_whole_float_ids_meet_the_same_ids_as_integers_or_text():
    # Arrow writes 1e15 as "1e+15": the float id of 16 digits met neither the integer nor the text.
    def parquet(name, ids):
        return (Path(name), iter([pa.record_batch({"customer_id": ids, "date": ["2024-01-01"] * len(ids),
                                                   "amount": [1.0] * len(ids)})]))
    big = 1234567890123456
    tx = clean([parquet("a.parquet", pa.array([float(big), 2.0])), parquet("b.parquet", pa.array([big, 3]))],
               MAP, xp=_XP[0])
    assert tx.customer_ids.to_pylist() == [2, 3, big] and tx.n_customers == 3
    tx = clean([parquet("a.parquet", pa.array([float(big), 2.5, 1e19])), (Path("b.csv"), iter([pa.record_batch(
        {"customer_id": [str(big), "x"], "date": ["2024-01-01"] * 2, "amount": [1.0] * 2})]))], MAP, xp=_XP[0])
    assert sorted(tx.customer_ids.to_pylist()) == sorted([str(big), "2.5", "10000000000000000000", "x"])
    # Below 2**52 a float64 holds fractions: 1e15 + 0.5 is another customer than 1e15.
    tx = clean([parquet("a.parquet", pa.array([1e15, 1e15 + 0.5])), parquet("b.parquet", pa.array([1, 2]))],
               MAP, xp=_XP[0])
    assert tx.n_customers == 4 and "1000000000000000" in tx.customer_ids.to_pylist()


def test_a_file_whose_rows_are_all_dropped_has_no_say_in_the_id_type():
    # CSV integers beside Parquet text ids on rows dropped (a date out of range): integers, as the
    # CSV file alone gives; the dropped text made every id text.
    files = [(Path("a.csv"), iter([pa.record_batch({"customer_id": ["5", "6"], "date": ["2024-01-01"] * 2,
                                                     "amount": [1.0, 2.0]})])),
             (Path("b.parquet"), iter([pa.record_batch({"customer_id": ["x"], "date": ["2300-01-01"],
                                                         "amount": [1.0]})]))]
    tx = clean(files, MAP, xp=_XP[0])
    assert tx.customer_ids.type == pa.int64() and tx.customer_ids.to_pylist() == [5, 6]
    assert tx.rows.dropped["date_out_of_range"] == 1


def test_float_ids_with_nan_count_as_missing():
    tx = run_clean({"customer_id": [1.0, float("nan"), None], "date": ["2024-01-01"] * 3, "amount": [1.0] * 3})
    assert tx.rows.dropped["missing_customer_id"] == 2


def test_dictionary_encoded_columns_are_read_like_plain_ones():
    # Parquet files written from pandas categoricals come back dictionary-encoded.
    tx = run_clean({"customer_id": pa.array(["b", "", "a", "b"]).dictionary_encode(),
                    "date": pa.array(["2024-01-02", "2024-01-01", "2024-01-01", "2024-02-30"]).dictionary_encode(),
                    "amount": [1.0, 2.0, 3.0, 4.0]})
    assert tx.rows.dropped == {"missing_customer_id": 1, "unparseable_date": 1, "date_out_of_range": 0,
                               "bad_amount": 0}
    assert tx.customer_ids.to_pylist() == ["a", "b"]
    assert sorted(tx.day.tolist()) == [D(dt.date(2024, 1, 1)), D(dt.date(2024, 1, 2))]


@pytest.mark.parametrize("column, mapping", [("customer_id", MAP), ("invoice", MAP_INV)])
def test_ids_of_a_nested_type_are_an_error(column, mapping):
    cols = {"customer_id": ["a"], "date": ["2024-01-01"], "invoice": ["I1"], "amount": [1.0]}
    cols[column] = pa.array([[1]])
    with pytest.raises(GpusegError, match=f"'{column}' has type list<.*allowed: integers or text"):
        run_clean(cols, mapping)


# -- orders -------------------------------------------------------------------------------

def same_partition(a, b) -> bool:
    """Whether two code arrays group the lines the same way."""
    a, b = to_numpy(a), to_numpy(b)
    return all(np.array_equal(a == a[i], b == b[i]) for i in range(len(a)))


def test_orders_are_invoices_when_there_is_an_invoice_column():
    tx = run_clean({"customer_id": ["a", "a", "a", "b"],
                    "date": ["2024-01-01", "2024-01-02", "2024-01-01", "2024-01-01"],
                    "invoice": ["I1", "I1", "I2", "I3"], "amount": [1.0] * 4}, MAP_INV)
    # I1 spans two days but is one order; a's two invoices on one day are two orders.
    assert tx.n_orders == 3
    assert same_partition(tx.order, [0, 0, 1, 2])


def test_orders_are_customer_days_without_an_invoice_column():
    tx = run_clean({"customer_id": ["a", "a", "a", "b", "b"],
                    "date": ["2024-01-01", "2024-01-01T18:00", "2024-01-02", "2024-01-01", "2024-01-01"],
                    "amount": [1.0] * 5})
    assert tx.n_orders == 3
    assert same_partition(tx.order, [0, 0, 1, 2, 2])


def test_lines_without_an_invoice_fall_back_to_customer_days():
    tx = run_clean({"customer_id": ["a", "a", "a", "a"],
                    "date": ["2024-01-01", "2024-01-01", "2024-01-01", "2024-01-02"],
                    "invoice": ["I1", None, "", None], "amount": [1.0] * 4}, MAP_INV)
    assert tx.n_orders == 3
    assert same_partition(tx.order, [0, 1, 1, 2])
    assert sorted(set(tx.order.tolist())) == [0, 1, 2]


def test_invoice_shared_by_two_customers_is_split():
    tx = run_clean({"customer_id": ["a", "b", "a", "b"], "date": ["2024-01-01"] * 4,
                    "invoice": ["I1", "I1", "I1", "I2"], "amount": [1.0] * 4}, MAP_INV)
    assert tx.n_orders == 3
    assert same_partition(tx.order, [0, 1, 0, 2])
    # Every order belongs to one customer.
    for o in set(tx.order.tolist()):
        assert len(set(tx.customer[tx.order == o].tolist())) == 1
    assert sorted(set(tx.order.tolist())) == list(range(tx.n_orders))


def test_integer_invoices_from_text():
    tx = run_clean({"customer_id": ["a", "a", "b"], "date": ["2024-01-01", "2024-01-05", "2024-01-01"],
                    "invoice": ["536365", "536365", "536366"], "amount": [1.0] * 3}, MAP_INV)
    assert tx.n_orders == 2
    assert same_partition(tx.order, [0, 0, 1])


# -- as_of --------------------------------------------------------------------------------

def test_default_as_of_is_the_day_after_the_last_used_row():
    tx = run_clean({"customer_id": ["a", "a", "b", None],
                    "date": ["2024-01-01", "2024-01-10", "2024-02-01", "2024-05-01"],
                    "amount": [1.0, 1.0, None, 1.0]})
    # The Feb 1 row has no amount and the May 1 row no customer: neither is used.
    assert tx.as_of == D(dt.date(2024, 1, 11))
    assert "after_as_of" not in tx.rows.dropped


def test_explicit_as_of_drops_rows_on_or_after_it():
    tx = run_clean({"customer_id": ["a", "a", "a", "b", None],
                    "date": ["2024-01-01", "2024-01-09", "2024-01-10", "2024-03-01", "2024-03-01"],
                    "amount": [1.0] * 5}, as_of=dt.date(2024, 1, 10))
    assert tx.as_of == D(dt.date(2024, 1, 10))
    assert tx.rows.dropped == {"missing_customer_id": 1, "unparseable_date": 0, "date_out_of_range": 0,
                               "bad_amount": 0, "after_as_of": 2}
    assert tx.rows.used == 2
    assert tx.customer_ids.to_pylist() == ["a"]
    assert tx.day.max() < tx.as_of


# -- errors --------------------------------------------------------------------------------

def test_no_rows_at_all():
    empty = pa.record_batch({"customer_id": pa.array([], pa.string()), "date": pa.array([], pa.string()),
                             "amount": pa.array([], pa.float64())})
    with pytest.raises(GpusegError, match="no data rows"):
        clean([(Path("a.csv"), iter([empty]))], MAP, xp=_XP[0])
    with pytest.raises(GpusegError, match="no data rows"):
        clean([], MAP)


def test_all_rows_dropped_lists_the_reasons():
    with pytest.raises(GpusegError) as info:
        run_clean({"customer_id": [None, "a", "b"], "date": ["2024-01-01"] * 3, "amount": [1.0, None, None]})
    msg = str(info.value)
    assert "all 3 rows were dropped" in msg
    assert "missing_customer_id: 1" in msg and "bad_amount: 2" in msg


def test_all_rows_after_as_of():
    with pytest.raises(GpusegError, match="after_as_of: 2"):
        run_clean({"customer_id": ["a", "b"], "date": ["2024-01-01"] * 2, "amount": [1.0, 1.0]},
                  as_of=dt.date(2023, 6, 1))


def test_no_parseable_date_suggests_date_format():
    with pytest.raises(GpusegError) as info:
        run_clean({"customer_id": ["a", "b", None], "date": ["12/01/2010 08:26", "12/01/2010 09:00", "x"],
                   "amount": [1.0] * 3})
    msg = str(info.value)
    assert "--date-format" in msg and "'12/01/2010 08:26'" in msg and "'date'" in msg


def test_no_date_matching_the_given_format():
    with pytest.raises(GpusegError, match="does not match --date-format '%d.%m.%Y'"):
        run_clean({"customer_id": ["a"], "date": ["2024-01-01"], "amount": [1.0]}, date_format="%d.%m.%Y")


def test_some_unparseable_dates_are_only_counted():
    tx = run_clean({"customer_id": ["a", "b"], "date": ["2024-01-01", "01/02/2024"], "amount": [1.0, 1.0]})
    assert tx.rows.dropped["unparseable_date"] == 1
    assert tx.rows.used == 1


def test_digit_text_ids_from_parquet_stay_text(tmp_path):
    import pyarrow.parquet as pq

    from gpuseg.columns import resolve_columns
    from gpuseg.reading import file_pieces, iter_batches, iter_readers, read_piece
    path = tmp_path / "ids.parquet"
    pq.write_table(pa.table({"customer_id": ["123", "45", "123"], "date": ["2024-01-02"] * 3,
                             "amount": [1.0, 2.0, 3.0]}), path)
    mapping = resolve_columns(["customer_id", "date", "amount"])
    tx = clean([(path, iter_batches(path, mapping))], mapping, xp=_XP[0])
    assert tx.customer_ids.type == pa.string()
    assert tx.customer_ids.to_pylist() == ["123", "45"]


# -- dates out of range (issue 11) ------------------------------------------------------------

def test_dates_out_of_range_are_dropped_and_counted():
    # Text, timestamps beyond the nanosecond range, sentinels: each kind, at the edges too.
    tx = run_clean({"customer_id": ["a", "b", "c", "d", "e", "f", "g"],
                    "date": ["2024-01-05", "2500-01-01", "9999-12-31", "0001-01-01", "1899-12-31", "1900-01-01",
                             "2262-04-11"],
                    "amount": [1.0, 2.0, 3.0, 4.0, 5.0, float("nan"), 7.0]})
    assert tx.rows.dropped == {"missing_customer_id": 0, "unparseable_date": 0, "date_out_of_range": 4,
                               "bad_amount": 1}
    assert tx.customer_ids.to_pylist() == ["a", "g"]
    assert tx.as_of == D(dt.date(2262, 4, 12))


def test_timestamps_and_yyyymmdd_out_of_range():
    ts = pa.array([dt.datetime(2024, 5, 1), dt.datetime(2600, 1, 1)], pa.timestamp("us"))
    tx = run_clean({"customer_id": [1, 2], "date": ts, "amount": [1.0, 1.0]})
    assert tx.rows.dropped["date_out_of_range"] == 1 and tx.as_of == D(dt.date(2024, 5, 2))
    tx = run_clean({"customer_id": [1, 2], "date": [20240501, 30000101], "amount": [1.0, 1.0]})
    assert tx.rows.dropped["date_out_of_range"] == 1 and tx.as_of == D(dt.date(2024, 5, 2))


def test_int96_timestamps_past_the_nanosecond_range_are_out_of_range_not_wrapped(tmp_path):
    # Spark and Impala write INT96; read as nanoseconds, 2500-06-01 would wrap to 1915.
    import pyarrow.parquet as pq

    from gpuseg.reading import file_pieces, iter_batches, iter_readers, read_piece
    ts = pa.array([dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 2), dt.datetime(2500, 6, 1),
                   dt.datetime(1000, 1, 1)], pa.timestamp("us"))
    path = tmp_path / "int96.parquet"
    pq.write_table(pa.table({"customer_id": [1, 2, 3, 4], "date": ts, "amount": [1.0, 2.0, 3.0, 4.0]}), path,
                   use_deprecated_int96_timestamps=True)
    assert pq.ParquetFile(path).schema.column(1).physical_type == "INT96"
    tx = clean([(path, iter_batches(path, MAP))], MAP, xp=_XP[0])
    assert tx.rows.dropped["date_out_of_range"] == 2
    assert tx.customer_ids.to_pylist() == [1, 2] and tx.as_of == D(dt.date(2024, 1, 3))
    # Every reader: row groups on the pool (segment), pieces (Dask), batches (score).
    read = [r() for r in iter_readers(path, MAP)] + [b for p in file_pieces(path, MAP) for b in read_piece(p, MAP)] + \
        list(iter_batches(path, MAP, batch_rows=2))
    for batch in read:
        assert batch.column("date").type == pa.timestamp("us")
    assert pa.concat_arrays([b.column("date") for b in read]).to_pylist() == ts.to_pylist() * 3


def test_only_dates_out_of_range_is_no_usable_rows():
    with pytest.raises(GpusegError, match="date_out_of_range: 2"):
        run_clean({"customer_id": ["a", "b"], "date": ["2500-01-01", "9999-12-31"], "amount": [1.0, 2.0]})


def _clean_in_fresh_interpreter(tmp_path, prelude: str, workers: int = 2) -> subprocess.CompletedProcess:
    """Clean a 4-row-group Parquet file on ``workers`` threads in a new interpreter, after ``prelude``."""
    import pyarrow.parquet as pq
    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"customer_id": list(range(100)), "date": ["2024-01-02"] * 100,
                             "amount": [1.5] * 100}), path, row_group_size=25)
    code = prelude + f"""
from pathlib import Path
from gpuseg.cleaning import Cleaner
from gpuseg.columns import ColumnMapping
from gpuseg.reading import iter_readers
mapping = ColumnMapping(customer="customer_id", date="date", amount="amount")
path = Path({str(path)!r})
kept = list(Cleaner(mapping).map(((path, r) for r in iter_readers(path, mapping)), workers={workers}))
assert len(kept) == 4 and sum(len(k.day) for k in kept) == 100, kept
"""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=checkout_env())


def test_pandas_is_imported_before_the_pool_not_by_a_worker(tmp_path):
    """pyarrow imports pandas (when installed) on its first conversion; the pool starts that
    import on a thread of its own, so no worker stalls the others mid-batch with it."""
    pytest.importorskip("pandas")
    done = _clean_in_fresh_interpreter(tmp_path, """
import sys, threading
importers = []
class Spy:
    def find_spec(self, name, path=None, target=None):
        if name == "pandas":
            importers.append(threading.current_thread().name)
sys.meta_path.insert(0, Spy())
import atexit
atexit.register(lambda: print(importers, "pandas" in sys.modules))
""")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['gpuseg-pandas-import'] True"


@pytest.mark.parametrize("workers", [1, 2])
def test_a_one_job_process_never_imports_pandas(tmp_path, workers):
    """The gpuseg command's process (one job) tells pyarrow that pandas is absent instead of
    importing it: the batches clean without pandas ever loaded, and afterwards pandas still
    imports, and pyarrow's pandas interop still works (it imports pandas when called)."""
    pytest.importorskip("pandas")
    done = _clean_in_fresh_interpreter(tmp_path, """
import atexit, sys
import gpuseg.cleaning
gpuseg.cleaning.one_job_process()
def after():
    loaded = "pandas" in sys.modules
    import pyarrow as pa
    frame = pa.table({"a": [1, 2]}).to_pandas()
    print(loaded, type(frame).__name__, int(frame["a"].sum()))
atexit.register(after)
""", workers)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False DataFrame 3"


def test_the_gpuseg_command_runs_without_pandas(tmp_path):
    """End to end through the console entry point: no pandas loaded, the same outputs as a
    process that imports it."""
    pytest.importorskip("pandas")
    import pyarrow.parquet as pq
    path = tmp_path / "x.parquet"
    rng = np.random.default_rng(3)
    pq.write_table(pa.table({"customer_id": rng.integers(0, 300, 5000), "date": ["2024-01-02", "2024-03-05"] * 2500,
                             "amount": np.round(rng.normal(20, 9, 5000), 2)}), path, row_group_size=1000)
    outputs = {}
    for label, prelude in (("command", ""), ("with pandas", "import pandas\n")):
        out = tmp_path / label.replace(" ", "_")
        code = prelude + f"""
import atexit, sys
atexit.register(lambda: print("pandas" in sys.modules))
sys.argv = ["gpuseg", "segment", {str(path)!r}, "--backend", "cpu", "-q", "--k", "3", "--out", {str(out)!r}]
from gpuseg.cli import main
main()
"""
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                              env=checkout_env(), check=False)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == ("False" if label == "command" else "True")
        outputs[label] = [(out / name).read_bytes() for name in ("features.parquet", "assignments.parquet",
                                                                   "segments.csv")]
    assert outputs["command"] == outputs["with pandas"]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_broken_pandas_does_not_stop_the_run(tmp_path, workers):
    """A pandas that fails to import (not with ImportError) leaves pyarrow without pandas, as if
    none were installed; the run goes on, with no traceback."""
    done = _clean_in_fresh_interpreter(tmp_path, """
import sys, importlib.abc, importlib.util
class Broken(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        return importlib.util.spec_from_loader(name, self) if name == "pandas" else None
    def create_module(self, spec):
        return None
    def exec_module(self, module):
        raise RuntimeError("a broken pandas")
sys.meta_path.insert(0, Broken())
""", workers)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr



@pytest.mark.parametrize("block", [1, 7, 29, 64, 10_000])
@pytest.mark.parametrize("newline, last", [("\n", "\n"), ("\r\n", "\r\n"), ("\n", "")])
def test_csv_pieces_hold_every_line_once(tmp_path, monkeypatch, block, newline, last):
    # --scheduler reads a CSV file as byte ranges, each the lines that start in it.
    from gpuseg import reading
    monkeypatch.setattr(reading, "CSV_BLOCK_BYTES", block)
    m = ColumnMapping(customer="customer_id", date="date", amount="amount")
    lines = ["\ufeffcustomer_id,date,amount"] + [f"{i % 13},2024-01-{1 + i % 28:02d},{i}.5" for i in range(57)]
    path = tmp_path / "log.csv"
    path.write_text(newline.join(lines) + last, encoding="utf-8")
    pieces = reading.file_pieces(path, m)
    assert len(pieces) == -(-path.stat().st_size // block)
    got = pa.Table.from_batches([b for p in pieces for b in reading.read_piece(p, m)])
    whole = pa.Table.from_batches(list(reading.iter_batches(path, m)))
    assert got.equals(whole.select(got.column_names))
    assert got.column("amount").to_pylist() == [i + 0.5 for i in range(57)]


def test_parquet_pieces_are_runs_of_row_groups(tmp_path, monkeypatch):
    import pyarrow.parquet as pq
    from gpuseg import reading
    monkeypatch.setattr(reading, "TASK_ROWS", 25)
    m = ColumnMapping(customer="customer_id", date="date", amount="amount")
    table = pa.table({"customer_id": np.arange(100) % 9, "date": ["2024-01-02"] * 100, "amount": np.arange(100.0)})
    pq.write_table(table, tmp_path / "log.parquet", row_group_size=10)
    pieces = reading.file_pieces(tmp_path / "log.parquet", m)
    assert [p.row_groups for p in pieces] == [(0, 1, 2), (3, 4, 5), (6, 7, 8), (9,)]
    got = pa.Table.from_batches([b for p in pieces for b in reading.read_piece(p, m)])
    assert got.column("amount").to_pylist() == table.column("amount").to_pylist()


@pytest.mark.parametrize("layout", ["cr", "blank_lines_first", "long_line", "quoted_break"])
def test_csv_pieces_of_awkward_files(tmp_path, monkeypatch, layout):
    # CR-only files gave no rows (the whole file looked like a header line), blank lines before the
    # header made a blank "header", a 2 MB line passed Arrow's default 1 MiB block, and a quoted
    # line break cut in two gave rows that were never in the file.
    from gpuseg import reading
    m = ColumnMapping(customer="customer_id", date="date", amount="amount")
    head, rows = "customer_id,date,amount,note", [f"{i % 7},2024-01-{1 + i % 28:02d},{i}.5,a" for i in range(60)]
    text = {"cr": "\r".join([head] + rows) + "\r",
            "blank_lines_first": "\n\r\n" + "\n".join([head] + rows) + "\n",
            "long_line": "\n".join([head] + rows[:30] + [rows[30][:-1] + "z" * 2_200_000] + rows[31:]) + "\n",
            "quoted_break": "\n".join([head] + [r[:-1] + '"see\n9,2024-06-01,5000,x"' if i % 10 == 3 else r
                                               for i, r in enumerate(rows)]) + "\n"}[layout]
    path = tmp_path / "log.csv"
    path.write_text(text, newline="")
    monkeypatch.setattr(reading, "CSV_BLOCK_BYTES", 1_000_000 if layout == "long_line" else 57)
    pieces = reading.file_pieces(path, m)
    if layout == "quoted_break":
        with pytest.raises(GpusegError, match="unpaired quote character"):
            [b for p in pieces for b in reading.read_piece(p, m)]
        return
    got = pa.Table.from_batches([b for p in pieces for b in reading.read_piece(p, m)])
    assert got.num_rows == 60 and got.column("amount").to_pylist() == [i + 0.5 for i in range(60)]


def test_csv_pieces_read_a_stray_quote_and_cut_crlf_files_at_the_sample_edge(tmp_path, monkeypatch):
    # A quote inside an unquoted field (12" PIZZA TRAY) opens nothing for Arrow, but the check for
    # quoted line breaks refused it; a CRLF file whose 1 MiB sample ended between \r and \n was read whole.
    from gpuseg import reading
    m = ColumnMapping(customer="customer_id", date="date", amount="amount")
    rows = [f"{i % 7},2024-01-{1 + i % 28:02d},{i}.5,12\" PIZZA TRAY" if i % 5 == 0 else
            f"{i % 7},2024-01-{1 + i % 28:02d},{i}.5,\"a, b\"" for i in range(60)]
    path = tmp_path / "log.csv"
    path.write_text("customer_id,date,amount,note\n" + "\n".join(rows) + "\n")
    monkeypatch.setattr(reading, "CSV_BLOCK_BYTES", 57)
    got = sum(b.num_rows for p in reading.file_pieces(path, m) for b in reading.read_piece(p, m))
    assert got == 60
    crlf = tmp_path / "crlf.csv"
    head = b"customer_id,date,amount\r\n"
    line = b"1,2024-01-02,3.5\r\n"
    first = (1 << 20) + 1 - len(head)  # the first row's \r is the sample's last byte, its \n the next
    zeros = first - len(b"9,2024-01-02,") - len(b".5") - 2
    crlf.write_bytes(head + b"9,2024-01-02," + b"0" * zeros + b".5\r\n" + line * 10)
    assert crlf.read_bytes()[(1 << 20) - 1:(1 << 20) + 1] == b"\r\n"
    assert reading._splits_at_newlines(crlf)


def test_quoted_line_breaks_are_found_by_arrows_quoting_rules():
    # Counting a line's quotes missed a break after an inch mark (made-up rows) and refused an inch
    # mark beside a quoted field (which Arrow reads).
    from gpuseg.reading import _quoted_line_break
    assert _quoted_line_break(b'0,2024-01-01,0.5,12" TRAY,"line one\n100,2024-02-01,999.5,x,y"\n')
    assert not _quoted_line_break(b'1,2024-01-02,3.5,12" PIZZA TRAY,"red, large"\n')
    assert not _quoted_line_break(b'1,"""x""",2\n1,"a, b",2\r\n1,x"\n')
    assert _quoted_line_break(b'1,"a""\nb",2\n') and _quoted_line_break(b'x,"ok",y\n1,"open')
