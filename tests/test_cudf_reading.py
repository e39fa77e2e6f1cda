"""The cuDF reader (issue 12): its rules against the CPU path's.

Three layers:

- pure and array-generic parts (the date regex, ``field_days``,
  ``float_yyyymmdd_days``, the reader's arguments) on NumPy;
- ``load_cudf`` run on a pandas stand-in whose cuDF behaviour is taken from
  the 26.10 sources (``tests/cudf_standin.py``), compared with the CPU path;
- ``gpu`` tests that run the same comparisons with real cuDF on a device.
  They skip here, and a skip is not a pass: the stand-in is no substitute.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cudf_standin
from gpuseg import cudf_reading
from gpuseg.backend import to_numpy
from gpuseg.cleaning import clean, day_number, parse_days
from gpuseg.columns import ColumnMapping
from gpuseg.cudf_reading import date_pattern, float_yyyymmdd_days, load_cudf, read_options
from gpuseg.errors import GpusegError
from gpuseg.reading import iter_readers

MAP = ColumnMapping(customer="customer_id", date="date", invoice="invoice", amount="amount")
QP = ColumnMapping(customer="customer_id", date="date", quantity="qty", price="price")
FORMATS = ["%m/%d/%Y %H:%M", "%d.%m.%y %I:%M %p", "%Y%m%d", "%Y-%m-%d %H:%M:%S", "%d/%m/%Y"]


@pytest.fixture(params=["host", pytest.param("emulated", marks=pytest.mark.emulated)])
def standin(request, monkeypatch):
    """The stand-in on NumPy, and over the CuPy emulator (device arrays, as cuDF gives)."""
    cp = request.getfixturevalue("emulated_cupy") if request.param == "emulated" else None
    return cudf_standin.install(monkeypatch, cp)


def cpu_days(strings, fmt):
    d, ok = parse_days(pa.array(strings, pa.string()), fmt)
    return [int(x) if good else None for x, good in zip(d, ok)]


def device_days(strings, fmt, cudf=None, xp=np):
    """The cuDF path's text-date rule on a stand-in Series (or a real cuDF one)."""
    series = (cudf.Series.from_arrow(pa.array(strings, pa.string())) if cudf is not None
              else pd.Series(strings, dtype="str"))
    d, ok = cudf_reading._text_days(xp, series, fmt)
    d, ok = (a.get() if hasattr(a, "get") else a for a in (d, ok))
    return [int(x) if good else None for x, good in zip(d, ok)]


# Rows on which a looser or stricter reading of glibc's strptime would differ.
TRICKY = {
    "%m/%d/%Y %H:%M": ["12/1/2009 7:45", "12/01/2009 07:45", "12/1/2009  7:45", " 1/ 2/2024 1:05",
                       "2/30/2024 1:00", "2/29/2024 1:00", "2/29/2023 1:00", "1/2/0000 1:00", "1/5/0000 1:00",
                       "1/2/24 1:00", "01/02/2024 24:00", "01/02/2024 23:60", "01/02/2024 1:5",
                       "01/02/2024 1:05x", "+1/02/2024 1:05", "1/2/20245 1:05", "1/2/999 1:05",
                       "013/02/2024 1:05", "1/2/2024:05", "1/2/202412:05", "1/2/2024\v1:05", "", "x",
                       "4/31/2024 1:00", "12/31/9999 23:59"],
    "%d.%m.%y %I:%M %p": ["01.02.24 12:00 am", "01.02.24 13:00 PM", "01.02.24 0:00 PM", "01.02.24 1:00PM",
                          "01.02.24 1:00 pM", "29.02.23 1:00 AM", "29.02.00 1:00 AM", "1.2.69 1:00 am",
                          "1.2.68 1:00 am", "1.2.099 1:00 am"],
    "%Y%m%d": ["202411", "20240101", "2024011", "2024229", "20240229", "20230229", "19991231", "2024 1 5",
               "99990101", "00010101", "12341"],
    "%Y-%m-%d %H:%M:%S": ["2024-01-05 00:00:60", "2024-01-05 00:00:61", "2024-01-05 00:00:62",
                          "2024-01-05 1:2:3", "2024-01-05", "2024-01-05 10:00:00junk", "2024-1-5 1:2:3"],
    "%d/%m/%Y": ["30/02/2024", "29/02/2024", "31/04/2024", "1/1/2024", "01/13/2024", "00/01/2024"],
    "%b %d %Y": ["Feb 29 2024", "Feb 30 2024", "feb 01 2024", "Foo 01 2024"],   # parsed on the host
    None: ["2024-03-05", "2024-03-05T10:20", "2024-03-05 23:59", "2024-03-05x", "2024-02-30", "2023-02-29",
           "0000-01-01", "0999-12-31", "2024-3-5", "20240229", "20230229", "00000101", "2024-02-29 ",
           "+2024-02-29", "", "  ", "12/01/2009"],
}


# -- pure parts (NumPy) ---------------------------------------------------------------

def test_date_pattern_covers_the_usual_formats():
    p = date_pattern("%m/%d/%Y %H:%M")
    assert p.fields == ("m", "d", "Y", " ", "H", "M")
    assert p.runs == ((2, (3,), 4),)  # the year may run into the hour when the space is missing
    assert p.regex.startswith("^(") and p.regex.endswith("$")
    assert date_pattern("%Y%m%d").runs == ((0, (), 1), (1, (), 2))
    assert date_pattern("%Y.%m.%d %%").regex.count("\\.") == 2


@pytest.mark.parametrize("fmt", ["%b %d %Y", "%B %d, %Y", "%Y-%j", "%d/%m/%Y %d", "%m/%Y", "%-m/%d/%Y",
                                 "%Y1%m%d", "%d/%m/%Y %", "%d/%m/%Y %z", "%d/%m/%Y %y", "%d·%m·%Y"])
def test_formats_the_device_cannot_mirror_go_to_the_host(fmt):
    assert date_pattern(fmt) is None


@pytest.mark.parametrize("fmt", list(TRICKY))
def test_text_dates_follow_the_cpu_path(standin, fmt):
    assert device_days(TRICKY[fmt], fmt) == cpu_days(TRICKY[fmt], fmt)


def test_host_fallback_is_used_only_for_refused_rows(standin, monkeypatch):
    seen = []
    host = cudf_reading._host_text_days

    def spy(cp, text, fmt):
        seen.append(list(text))
        return host(cp, text, fmt)
    monkeypatch.setattr(cudf_reading, "_host_text_days", spy)
    rows = ["12/1/2009 7:45", "2/30/2024 1:00", "12/10/2009 17:45", "", "junk"]
    assert device_days(rows, "%m/%d/%Y %H:%M") == cpu_days(rows, "%m/%d/%Y %H:%M")
    assert seen == [["2/30/2024 1:00", "junk"]]


_NEAR_DATE = st.lists(st.sampled_from(list("0123456789/.:- ") + ["12", "31", "29", "02", "2024", "1999", "AM",
                                                                  "pm", "  ", "\t", "00", "60"]),
                      min_size=1, max_size=12).map("".join)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(fmt=st.sampled_from(FORMATS + [None]), texts=st.lists(_NEAR_DATE, min_size=1, max_size=20),
       year=st.integers(1, 9999), month=st.integers(0, 13), day=st.integers(0, 32))
def test_text_dates_follow_the_cpu_path_on_random_text(fmt, texts, year, month, day):
    with pytest.MonkeyPatch.context() as mp:
        cudf_standin.install(mp)
        real = (f"{month}/{day}/{year} 1:05", f"{day:02d}.{month:02d}.{year % 100:02d} 1:05 PM",
                f"{year:04d}{month:02d}{day:02d}", f"{year:04d}-{month:02d}-{day:02d} 10:00:00",
                f"{day}/{month}/{year}", f"{year:04d}-{month:02d}-{day:02d}")
        rows = texts + list(real)
        assert device_days(rows, fmt) == cpu_days(rows, fmt)


def test_field_days_leaves_short_runs_of_digits_to_the_host():
    # %Y%m on "202411" read by a regex: Y=2024, m=1, d=1; glibc reads m=11 and fails.
    p = date_pattern("%Y%m%d")
    value = {0: np.array([2024, 2024]), 1: np.array([1, 1]), 2: np.array([1, 15])}
    digits = {0: np.array([4, 4]), 1: np.array([1, 2]), 2: np.array([1, 2])}
    length = dict(digits)
    days, ok = cudf_reading.field_days(p, value, digits, length, np.array([True, True]))
    assert ok.tolist() == [False, True] and days[1] == day_number(dt.date(2024, 1, 15))


def test_float_yyyymmdd_days_as_on_the_cpu_path():
    values = [20240229.0, 20230229.0, 20240101.5, np.nan, np.inf, 19991231.0, 1.0]
    d, ok = float_yyyymmdd_days(np.array(values))
    want_d, want_ok = parse_days(pa.array(values, pa.float64()))
    assert ok.tolist() == want_ok.tolist() == [True, False, False, False, False, True, False]
    assert d[ok].tolist() == want_d[want_ok].tolist()


def test_parquet_is_read_without_pandas_index_and_refuses_missing_columns():
    reader, kwargs = read_options(Path("x.parquet"), MAP)
    assert reader == "read_parquet"
    assert kwargs == {"columns": MAP.needed, "use_pandas_metadata": False, "ignore_missing_columns": False}
    assert set(kwargs) <= cudf_standin.READ_PARQUET_PARAMS
    assert read_options(Path("x.csv"), MAP)[0] == "read_csv"


# -- load_cudf on the stand-in, against the CPU path --------------------------------

def cpu_clean(files, mapping, fmt=None):
    return clean(((f, iter_readers(f, mapping)) for f in files), mapping, fmt)


def same_partition(a, b) -> bool:
    a, b = to_numpy(a), to_numpy(b)
    pairs = np.unique(np.stack([a, b]), axis=1).shape[1]
    return pairs == len(np.unique(a)) == len(np.unique(b))


def assert_same(got, want):
    assert got.rows.to_dict() == want.rows.to_dict()
    assert got.customer_ids.to_pylist() == want.customer_ids.to_pylist()
    for name in ("customer", "day"):
        np.testing.assert_array_equal(to_numpy(getattr(got, name)), to_numpy(getattr(want, name)), err_msg=name)
    np.testing.assert_allclose(to_numpy(got.amount), to_numpy(want.amount))
    assert got.n_orders == want.n_orders and same_partition(got.order, want.order)
    assert got.as_of == want.as_of


def messy_frame(n=40) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    dates = [f"{m}/{d}/2024 {h}:05" for m, d, h in zip(rng.integers(1, 13, n), rng.integers(1, 29, n),
                                                        rng.integers(0, 24, n))]
    dates[3], dates[7], dates[11] = "2/30/2024 1:00", "not a date", "12/1/2009  7:45"
    cust = [f"{c}" for c in rng.integers(1, 9, n)]
    cust[5] = None
    amount = rng.normal(20, 10, n).round(2)
    amount[9] = np.nan
    return pd.DataFrame({"customer_id": cust, "date": dates, "invoice": [f"I{i // 3}" for i in range(n)],
                         "amount": amount})


def test_pandas_index_in_parquet_does_not_misalign_masks(tmp_path, standin):
    df = messy_frame()
    df["date"] = pd.to_datetime(df["date"], format="%m/%d/%Y %H:%M", errors="coerce").fillna(pd.Timestamp(0))
    ranged, indexed = tmp_path / "ranged.parquet", tmp_path / "indexed.parquet"
    df.set_axis(pd.RangeIndex(100, 100 + len(df))).to_parquet(ranged)  # RangeIndex(start=100) in the metadata
    df.set_axis(pd.Index(np.arange(len(df))[::-1] * 7, name="row")).to_parquet(indexed)
    for path in (ranged, indexed):
        assert_same(load_cudf([path], MAP), cpu_clean([path], MAP))
    _, _, kwargs = standin.calls[-1]
    assert kwargs["ignore_missing_columns"] is False and kwargs["use_pandas_metadata"] is False


def test_a_file_lacking_a_mapped_column_is_refused_as_on_the_cpu(tmp_path, standin):
    good, bad = tmp_path / "a.parquet", tmp_path / "b.parquet"
    messy_frame().to_parquet(good)
    messy_frame().drop(columns="amount").to_parquet(bad)
    with pytest.raises(GpusegError, match="lacks column") as cpu:
        cpu_clean([good, bad], MAP)
    with pytest.raises(GpusegError, match="lacks column") as gpu:
        load_cudf([good, bad], MAP)
    assert str(gpu.value) == str(cpu.value)


def test_the_reader_itself_refuses_a_missing_column(tmp_path, standin, monkeypatch):
    # Even past the footer check (a file that changed in between), nulls are not taken for data.
    path = tmp_path / "a.parquet"
    messy_frame().drop(columns="amount").to_parquet(path)
    monkeypatch.setattr(cudf_reading, "check_columns", lambda path, mapping: None)
    with pytest.raises(RuntimeError, match="not found"):
        load_cudf([path], MAP)


def test_messy_csv_with_a_date_format(tmp_path, standin):
    path = tmp_path / "messy.csv"
    messy_frame().to_csv(path, index=False)
    fmt = "%m/%d/%Y %H:%M"
    got, want = load_cudf([path], MAP, fmt), cpu_clean([path], MAP, fmt)
    assert_same(got, want)
    assert want.rows.dropped == {"missing_customer_id": 1, "unparseable_date": 2, "date_out_of_range": 0,
                                 "bad_amount": 1}


def test_month_names_are_parsed_on_the_host(tmp_path, standin):
    path = tmp_path / "names.csv"
    df = messy_frame()
    df["date"] = ["Feb 30 2024" if i == 2 else f"Mar {1 + i % 28:02d} 2024" for i in range(len(df))]
    df.to_csv(path, index=False)
    assert_same(load_cudf([path], MAP, "%b %d %Y"), cpu_clean([path], MAP, "%b %d %Y"))


def test_floating_yyyymmdd_dates(tmp_path, standin):
    path = tmp_path / "dec.parquet"
    table = pa.table({"customer_id": pa.array([1, 2, 2, 3, 4], pa.int64()),
                      "date": pa.array([20240105.0, 20240230.0, 20240301.0, np.nan, 20241231.0]),
                      "qty": pa.array([2, 1, None, 3, 1], pa.int32()),
                      "price": pa.array([1.25, 3.50, 2.00, 1.00, 9.99])})
    pq.write_table(table, path)
    got, want = load_cudf([path], QP), cpu_clean([path], QP)
    assert_same(got, want)
    assert want.rows.dropped == {"missing_customer_id": 0, "unparseable_date": 2, "date_out_of_range": 0,
                                 "bad_amount": 1}


def test_dates_that_may_have_day_and_month_exchanged_are_left_to_the_host(tmp_path, standin):
    # The host reader counts the text dates that read with %d and %m exchanged (cleaning._transposed);
    # this reader would have kept the days up to the 12th exchanged without a word.
    import datetime as dt
    path = tmp_path / "dm.csv"
    pd.DataFrame({"customer_id": [i % 9 for i in range(60)],
                  "date": [f"{dt.date(2024, 1, 1) + dt.timedelta(days=i):%d/%m/%Y}" for i in range(60)],
                  "amount": [10.0] * 60}).to_csv(path, index=False)
    mapping = ColumnMapping(customer="customer_id", date="date", amount="amount")
    with pytest.raises(cudf_reading.CudfUnsupported, match="10% of the dates"):
        load_cudf([path], mapping, "%m/%d/%Y")
    with pytest.raises(GpusegError, match="day and month exchanged"):
        cpu_clean([path], mapping, "%m/%d/%Y")
    assert_same(load_cudf([path], mapping, "%d/%m/%Y"), cpu_clean([path], mapping, "%d/%m/%Y"))


def test_decimal_amounts_are_left_to_the_host(tmp_path, standin):
    # The CPU path reads a decimal as the nearest float64; a cast (Arrow's, and so the stand-in's)
    # is one unit in the last place off for 0.35, 9.99, ...: the host reads such files.
    from decimal import Decimal
    path = tmp_path / "dec.parquet"
    pq.write_table(pa.table({"customer_id": [1, 2], "date": ["2024-01-05", "2024-01-06"], "qty": [1, 2],
                             "price": pa.array([Decimal("0.35"), Decimal("9.99")], pa.decimal128(9, 2))}), path)
    with pytest.raises(cudf_reading.CudfUnsupported, match="decimal column 'price'"):
        load_cudf([path], QP)
    assert cpu_clean([path], QP).amount.tolist() == [0.35, 2 * 9.99]


def test_files_that_type_columns_differently(tmp_path, standin):
    # Text dates and float64 amounts in a CSV, timestamps and float32 amounts in a Parquet file.
    a, b = tmp_path / "a.csv", tmp_path / "b.parquet"
    messy_frame().to_csv(a, index=False)
    df = messy_frame().iloc[:10]
    pq.write_table(pa.table({"customer_id": pa.array(df["customer_id"], pa.string()),
                             "date": pa.array(pd.to_datetime(df["date"], format="%m/%d/%Y %H:%M", errors="coerce")),
                             "invoice": pa.array(df["invoice"]),
                             "amount": pa.array(df["amount"], pa.float32())}), b)
    fmt = "%m/%d/%Y %H:%M"
    assert_same(load_cudf([a, b], MAP, fmt), cpu_clean([a, b], MAP, fmt))


def test_the_bad_date_example_names_its_file(tmp_path, standin):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    pd.DataFrame({"customer_id": [1, 2], "date": ["x", "y"], "amount": [1.0, 2.0]}).to_csv(a, index=False)
    pd.DataFrame({"customer_id": [1], "date": ["z"], "amount": [1.0]}).to_csv(b, index=False)
    mapping = ColumnMapping(customer="customer_id", date="date", amount="amount")
    with pytest.raises(GpusegError, match="'x' in") as err:
        load_cudf([a, b], mapping)
    assert str(a) in str(err.value)


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_datetime_columns_give_floor_days(standin, unit):
    # (cuDF keeps a null timestamp's int64 as null, filled with 0; pandas refuses NaT there.)
    s = pd.Series(pd.to_datetime(["1969-12-31 23:59:59", "1970-01-01 00:00:00", "2024-02-29 12:00:00"]))
    days, ok = cudf_reading._days(standin, np, s.astype(f"datetime64[{unit}]"), None)
    assert days.tolist() == [-1, 0, day_number(dt.date(2024, 2, 29))] and ok.all()


def test_a_format_opening_with_white_space(standin):
    rows = ["  1/2/2024", "1/2/2024", "x"]
    assert device_days(rows, " %m/%d/%Y") == cpu_days(rows, " %m/%d/%Y")


# -- time zones: days in the timestamp's own zone, as on the CPU path ----------------

ZONES = ["America/New_York", "Europe/London", "Europe/Dublin", "Australia/Lord_Howe", "Asia/Kathmandu",
         "America/St_Johns", "Pacific/Apia", "Africa/Casablanca", "Europe/Amsterdam", "+05:30", "-09:30", "UTC"]


def _transitions(zone):
    """Exact UTC transition seconds from the TZif file (the stdlib's pure-Python zoneinfo)."""
    try:
        from zoneinfo._zoneinfo import ZoneInfo as PyZoneInfo
        return np.array(PyZoneInfo.no_cache(zone)._trans_utc, dtype=np.int64)
    except (ImportError, AttributeError, KeyError, ValueError):  # a fixed offset, or no such attribute
        return np.empty(0, dtype=np.int64)


def arrow_days(seconds, zone, unit="s"):
    """The CPU path's days of UTC instants in ``zone``."""
    scale = cudf_reading._PER_SECOND[unit]
    d, ok = parse_days(pa.array(np.asarray(seconds) * scale, pa.timestamp(unit, zone)))
    assert ok.all()
    return d


@pytest.mark.parametrize("zone", ZONES)
def test_local_days_follow_arrow_at_every_transition(zone):
    lo, hi = cudf_reading._ZONE_WINDOW
    rng = np.random.default_rng(3)
    t = _transitions(zone)
    t = t[(t > lo + 1) & (t < hi - 1)]
    near = (t[:, None] + np.array([-86_401, -3_601, -1, 0, 1, 3_599, 86_399])).ravel()
    seconds = np.sort(np.concatenate([near, rng.integers(lo, hi, 2000), [lo, hi]]))
    seconds = seconds[(seconds >= lo) & (seconds <= hi)]
    days = cudf_reading.local_days(seconds, "s", np.ones(len(seconds), bool), zone)
    np.testing.assert_array_equal(days, arrow_days(seconds, zone))


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_local_days_in_every_unit_and_at_the_last_nanosecond(unit):
    # +14:00 on 2262-04-11 23:47:16.854775807, int64's last nanosecond: the offset added
    # to the count in ns would pass int64's range.
    per = cudf_reading._PER_SECOND[unit]
    last = np.iinfo(np.int64).max // 1_000_000_000
    seconds = np.array([-2_208_988_800, -1, 0, 1_709_251_199, last])
    raw = seconds * per + (per - 1)  # the last tick of each second
    if unit == "ns":
        raw[-1] = np.iinfo(np.int64).max
    days = cudf_reading.local_days(raw, unit, np.ones(len(raw), bool), "+14:00")
    want = np.floor_divide(seconds + 14 * 3600, 86_400)
    np.testing.assert_array_equal(days, want)
    assert want[-1] == day_number(dt.date(2262, 4, 12))


def test_offsets_outside_the_accepted_dates_keep_rows_outside():
    zone = "America/New_York"
    lo, hi = cudf_reading._ZONE_WINDOW
    seconds = np.array([lo - 10 * 86_400, lo - 1, hi + 1, hi + 10 * 86_400, 0])
    days = cudf_reading.local_days(seconds, "s", np.ones(5, bool), zone)
    from gpuseg.cleaning import FIRST_DAY, LAST_DAY
    assert (days[:2] < FIRST_DAY).all() and (days[2:4] > LAST_DAY).all() and days[4] == -1


def test_zone_offsets_is_a_short_table():
    starts, offsets = cudf_reading.zone_offsets("Europe/London", 1_700_000_000, 1_700_000_000 + 365 * 86_400)
    assert starts[0] == 1_700_000_000 and len(starts) == 3  # one spring, one autumn change
    assert offsets.tolist() == [0, 3600, 0]


def tz_frame(zone, n=48):
    # Local times either side of midnight, where the UTC day differs from the local one.
    local = pd.date_range("2024-03-09 22:00", periods=n, freq="37min")
    cust = [f"C{i % 7}" for i in range(n)]
    return pd.DataFrame({"customer_id": cust, "date": local.tz_localize(zone, nonexistent="shift_forward"), "invoice": [f"I{i // 2}" for i in
                                                                                           range(n)],
                         "amount": np.linspace(-5, 40, n).round(2)})


def test_the_standin_reads_zoned_timestamps_as_cudf_does(tmp_path, standin):
    path = tmp_path / "tz.parquet"
    tz_frame("Asia/Tokyo").to_parquet(path)
    got = standin.read_parquet(str(path), **read_options(path, MAP)[1])["date"]
    assert got.dtype.kind == "M" and getattr(got.dtype, "tz", None) is None  # no zone: UTC instants
    assert got.iloc[0] == pd.Timestamp("2024-03-09 13:00")


@pytest.mark.parametrize("zone", ["America/New_York", "Asia/Tokyo", "Australia/Lord_Howe", "+05:30"])
def test_zoned_timestamps_give_days_in_their_zone(tmp_path, standin, zone):
    path = tmp_path / "tz.parquet"
    df = tz_frame(zone)
    df.to_parquet(path)
    got, want = load_cudf([path], MAP), cpu_clean([path], MAP)
    assert_same(got, want)
    utc_days = (df["date"].dt.tz_convert("UTC").dt.tz_localize(None).values.astype("datetime64[D]")
                .astype(np.int64))
    assert (utc_days != np.asarray(want.day)).any()  # the test would see the zone ignored


def test_files_in_different_zones_and_naive_timestamps(tmp_path, standin):
    a, b, c = tmp_path / "a.parquet", tmp_path / "b.parquet", tmp_path / "c.parquet"
    tz_frame("America/Los_Angeles").to_parquet(a)
    tz_frame("Asia/Kolkata").to_parquet(b)
    tz_frame("UTC").assign(date=lambda d: d["date"].dt.tz_localize(None)).to_parquet(c)
    assert_same(load_cudf([a, b, c], MAP), cpu_clean([a, b, c], MAP))


def test_a_zoned_column_from_cudf_itself_is_taken_in_its_zone(standin):
    s = tz_frame("America/New_York")["date"]
    days, ok = cudf_reading._days(standin, np, s, None)
    want, want_ok = parse_days(pa.array(s))
    np.testing.assert_array_equal(days, want)
    assert ok.all() and want_ok.all()


# -- ids typed differently across files, as on the CPU path ---------------------------

def id_file(tmp_path, name, ids, invoices=None):
    n = len(ids)
    table = pa.table({"customer_id": ids, "date": [f"2024-01-{1 + i % 9:02d}" for i in range(n)],
                      "invoice": invoices if invoices is not None else pa.array([f"I{name}{i // 2}" for i in range(n)]),
                      "amount": [1.0 + i for i in range(n)]})
    path = tmp_path / name
    if name.endswith(".csv"):
        table.to_pandas().to_csv(path, index=False)
    else:
        pq.write_table(table, path)
    return path


ID_FILES = {
    "int.parquet": pa.array([12, 7, 3, 12], pa.int64()),
    "int32.parquet": pa.array([12, 5, 5, 40], pa.int32()),
    "text.parquet": pa.array(["12", "007", " 3", "x"]),
    "int.csv": pa.array(["12", "7", " 5", "12"]),
    "text.csv": pa.array(["12", "007", "5", "y"]),
}


@pytest.mark.parametrize("names, kind", [
    (["int.parquet", "text.parquet"], pa.string()),   # integers compared as text
    (["int.parquet", "int.csv"], pa.int64()),          # CSV text that is all integers: integers
    (["int.parquet", "text.csv"], pa.string()),
    (["text.parquet", "int.csv"], pa.string()),        # Parquet text stays text
    (["int32.parquet", "int.parquet", "int.csv"], pa.int64()),
    (["int.csv", "text.csv"], pa.string()),
])
def test_ids_typed_differently_across_files(tmp_path, standin, names, kind):
    files = [id_file(tmp_path, n, ID_FILES[n]) for n in names]
    got, want = load_cudf(files, MAP), cpu_clean(files, MAP)
    assert want.customer_ids.type == kind
    assert_same(got, want)


def test_invoices_typed_differently_across_files(tmp_path, standin):
    a = id_file(tmp_path, "a.parquet", pa.array(["1", "2", "3", "4"]), pa.array([10, 10, 11, 12], pa.int64()))
    b = id_file(tmp_path, "b.csv", pa.array(["1", "2", "2", "4"]), pa.array(["10", "10", "13", "012"]))
    assert_same(load_cudf([a, b], MAP), cpu_clean([a, b], MAP))


def test_common_ids_rules():
    common = cudf_reading.common_ids
    i32, i64 = pd.Series([1, 2], dtype="int32"), pd.Series([3], dtype="int64")
    text, obj = pd.Series(["007", "x"], dtype="str"), pd.Series(["a"], dtype=object)
    assert [str(c.dtype) for c in common([i32, i64], "customer")] == ["int64", "int64"]
    assert [c.tolist() for c in common([i64, text], "customer")] == [["3"], ["007", "x"]]
    assert len({str(c.dtype) for c in common([text, obj], "customer")}) == 1
    assert common([text], "customer")[0] is text
    for other in (pd.Series([1.5]), pd.Series([1], dtype="uint64")):
        with pytest.raises(cudf_reading.CudfUnsupported, match="invoice ids of types"):
            common([i64, other], "invoice")


def test_decimal_ids_are_left_to_the_host(tmp_path, standin):
    from decimal import Decimal
    path = id_file(tmp_path, "dec.parquet", pa.array([Decimal(12), Decimal(7), None, Decimal(12)], pa.decimal128(10, 0)))
    with pytest.raises(cudf_reading.CudfUnsupported, match="decimal customer ids"):
        load_cudf([path], MAP)


@pytest.mark.parametrize("other", ["int.parquet", "int.csv"])
def test_float_ids_mixed_with_others_are_left_to_the_host(tmp_path, standin, other):
    floats = id_file(tmp_path, "float.parquet", pa.array([12.0, 7.5, 3.0, 12.0]))
    files = [floats, id_file(tmp_path, other, ID_FILES[other])]
    with pytest.raises(cudf_reading.CudfUnsupported, match=r"customer ids of types .*float64.* across files"):
        load_cudf(files, MAP)


def test_int96_timestamps_are_left_to_the_host(tmp_path, standin):
    # cuDF reads INT96 as nanoseconds, where 2500-06-01 wraps to 1915; the host reads microseconds.
    ts = pa.array([dt.datetime(2024, 1, 1), dt.datetime(2500, 6, 1)], pa.timestamp("us"))
    path = tmp_path / "int96.parquet"
    table = pa.table({"customer_id": [1, 2], "date": ts, "invoice": [10, 11], "amount": [1.0, 2.0]})
    pq.write_table(table, path, use_deprecated_int96_timestamps=True)
    plain = tmp_path / "plain.parquet"
    pq.write_table(table, plain)
    assert cudf_reading.stored_as_int96(path, "date") and not cudf_reading.stored_as_int96(plain, "date")
    assert not cudf_reading.stored_as_int96(path, "customer_id")
    with pytest.raises(cudf_reading.CudfUnsupported, match="INT96"):
        load_cudf([path], MAP)


# -- real cuDF on a device (skipped without one; not covered by the stand-in tests) ---------

@pytest.fixture
def real_cudf(cp):
    return pytest.importorskip("cudf")


@pytest.mark.gpu
@pytest.mark.parametrize("fmt", list(TRICKY))
def test_cudf_text_dates_follow_the_cpu_path(real_cudf, cp, fmt):
    assert device_days(TRICKY[fmt], fmt, real_cudf, cp) == cpu_days(TRICKY[fmt], fmt)


@pytest.mark.gpu
def test_cudf_loads_as_the_cpu_path(tmp_path, real_cudf):
    df = messy_frame(400)
    fmt = "%m/%d/%Y %H:%M"
    csv, ranged = tmp_path / "messy.csv", tmp_path / "ranged.parquet"
    df.to_csv(csv, index=False)
    assert_same(_to_host(load_cudf([csv], MAP, fmt)), cpu_clean([csv], MAP, fmt))
    df.set_axis(pd.RangeIndex(100, 100 + len(df))).to_parquet(ranged)
    assert_same(_to_host(load_cudf([ranged], MAP, fmt)), cpu_clean([ranged], MAP, fmt))
    assert_same(_to_host(load_cudf([csv, ranged], MAP, fmt)), cpu_clean([csv, ranged], MAP, fmt))
    iso = tmp_path / "iso.csv"
    df.assign(date=pd.to_datetime(df["date"], format=fmt, errors="coerce").dt.strftime("%Y-%m-%d %H:%M")
              ).to_csv(iso, index=False)
    assert_same(_to_host(load_cudf([iso], MAP)), cpu_clean([iso], MAP))


@pytest.mark.gpu
def test_cudf_refuses_a_missing_column_in_the_reader(tmp_path, real_cudf):
    path = tmp_path / "a.parquet"
    messy_frame().drop(columns="amount").to_parquet(path)
    reader, kwargs = read_options(path, MAP)
    with pytest.raises(Exception):
        getattr(real_cudf, reader)(str(path), **kwargs)


@pytest.mark.gpu
def test_cudf_floating_dates_and_decimal_amounts(tmp_path, real_cudf):
    from decimal import Decimal
    path = tmp_path / "dec.parquet"
    pq.write_table(pa.table({"customer_id": [1, 2, 2, 3], "date": [20240105.0, 20240230.0, 20240301.0, None],
                             "qty": pa.array([2, 1, None, 3], pa.int64()), "price": [1.25] * 4}), path)
    assert_same(_to_host(load_cudf([path], QP)), cpu_clean([path], QP))
    pq.write_table(pa.table({"customer_id": [1], "date": [20240105.0],
                             "qty": pa.array([Decimal("2")], pa.decimal128(9, 0)), "price": [1.25]}), path)
    with pytest.raises(cudf_reading.CudfUnsupported, match="decimal column 'qty'"):
        load_cudf([path], QP)


def _named_zone_or_offset():
    """A zone with daylight saving where the machine has a time-zone database, else a fixed offset."""
    try:
        pa.array([0], pa.timestamp("s", "America/New_York")).cast(pa.date32())
        pd.Timestamp(0).tz_localize("America/New_York")
        return "America/New_York"
    except Exception:  # noqa: BLE001 - no tz database (tzdata) on the machine
        return "+05:30"


@pytest.mark.gpu
def test_cudf_zoned_timestamps_give_days_in_their_zone(tmp_path, real_cudf):
    zone = _named_zone_or_offset()
    path = tmp_path / "tz.parquet"
    tz_frame(zone, 400).to_parquet(path)
    read = real_cudf.read_parquet(str(path), **read_options(path, MAP)[1])["date"]
    print(f"cudf.read_parquet gives a {zone} timestamp column as {read.dtype}")
    assert_same(_to_host(load_cudf([path], MAP)), cpu_clean([path], MAP))
    # The stand-in's premise: no zone, UTC instants (the reader handles a zoned dtype too).
    assert getattr(read.dtype, "tz", None) is None


@pytest.mark.gpu
@pytest.mark.parametrize("names", [["int.parquet", "text.parquet"], ["int.parquet", "int.csv"],
                                   ["int32.parquet", "int.parquet", "int.csv"], ["text.parquet", "int.csv"]])
def test_cudf_ids_typed_differently_across_files(tmp_path, real_cudf, names):
    files = [id_file(tmp_path, n, ID_FILES[n]) for n in names]
    assert_same(_to_host(load_cudf(files, MAP)), cpu_clean(files, MAP))


def _to_host(tx):
    for name in ("customer", "day", "amount", "order"):
        a = getattr(tx, name)
        setattr(tx, name, a.get() if hasattr(a, "get") else a)
    return tx
