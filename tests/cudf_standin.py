"""A stand-in for the few cuDF calls gpuseg makes, on pandas, for tests without a GPU.

Its behaviour is taken from the cuDF 26.10 sources, not from running cuDF:

- ``read_parquet`` takes only keyword arguments of cuDF 26.10's signature
  (``cudf/io/parquet.py``), records them, fills a missing column with nulls
  unless ``ignore_missing_columns=False``, and restores a pandas
  ``RangeIndex`` from the file's metadata even with
  ``use_pandas_metadata=False`` (``_process_metadata``); with
  ``use_pandas_metadata=True`` index columns become the index.
- A boolean ``Series`` indexer aligns by label and raises when labels are
  missing, as cuDF's ``parse_single_row_loc_key`` does (pandas does the same).
- Timestamps come back without their time zone, as UTC instants: libcudf
  has no zoned timestamp type and ``read_parquet`` restores none
  (``_process_metadata``; ``isAdjustedToUTC`` is parsed in
  ``compact_protocol_reader.cpp`` and used nowhere else).
- ``concat`` refuses columns of differing types: cuDF 26.10 would pick a
  common type by ``find_common_type`` (NumPy promotion), which gpuseg does not
  rely on for ids; it makes them one type first.
- ``.values`` gives NumPy where cuDF gives CuPy; strings use pandas' ``str``
  dtype, whose ``str()`` is ``"str"`` as in cuDF 26.10.

It is no substitute for running cuDF: the ``gpu`` tests do that.
"""

from __future__ import annotations

import json
import types

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

# cudf.read_parquet's parameters in 26.10 (besides *args, **kwargs, which the
# cudf engine refuses unless they are its private chunking options).
READ_PARQUET_PARAMS = {
    "engine", "columns", "storage_options", "filesystem", "filters", "row_groups", "use_pandas_metadata",
    "categorical_partitions", "bytes_per_thread", "dataset_kwargs", "nrows", "skip_rows",
    "allow_mismatched_pq_schemas", "ignore_missing_columns", "case_sensitive_names",
}


def _is_decimal_dtype(dtype) -> bool:
    return isinstance(dtype, pd.ArrowDtype) and pa.types.is_decimal(dtype.pyarrow_dtype)


def _frame(table: pa.Table) -> pd.DataFrame:
    def types_mapper(t: pa.DataType):
        if pa.types.is_decimal(t):  # cuDF keeps decimals, with kind 'O'
            return pd.ArrowDtype(t)
        return None
    df = table.to_pandas(types_mapper=types_mapper, ignore_metadata=True)
    for name in df.columns:
        if isinstance(df[name].dtype, pd.DatetimeTZDtype):  # no zone in libcudf: UTC instants, naive
            df[name] = df[name].dt.tz_convert(None)
    return df


def make_cudf() -> types.SimpleNamespace:
    """A fresh stand-in module; ``calls`` records (reader, path, kwargs)."""
    calls: list[tuple[str, str, dict]] = []

    def read_parquet(path, **kwargs):
        unknown = set(kwargs) - READ_PARQUET_PARAMS
        if unknown:
            raise TypeError(f"read_parquet() got unexpected keyword arguments {sorted(unknown)}")
        calls.append(("read_parquet", path, kwargs))
        columns = kwargs.get("columns")
        pf = pq.ParquetFile(path)
        names = pf.schema_arrow.names
        missing = [c for c in columns or () if c not in names]
        if missing and not kwargs.get("ignore_missing_columns", True):
            raise RuntimeError(f"CUDF failure: column(s) {missing} not found")
        meta = json.loads((pf.schema_arrow.metadata or {}).get(b"pandas", b"{}") or b"{}")
        index_cols = [c for c in meta.get("index_columns", []) if isinstance(c, str)]
        use_meta = kwargs.get("use_pandas_metadata", True)
        wanted = [c for c in columns if c in names] if columns is not None else names
        if use_meta:
            wanted += [c for c in index_cols if c not in wanted]
        df = _frame(pf.read(columns=wanted))
        for c in missing:
            df[c] = pd.Series([None] * len(df), dtype="str")
        ranges = [c for c in meta.get("index_columns", []) if isinstance(c, dict) and c.get("kind") == "range"]
        if ranges:
            r = ranges[0]
            df.index = pd.RangeIndex(r["start"], r["start"] + len(df) * r["step"], r["step"])
        elif use_meta and index_cols:
            df = df.set_index(index_cols)
        return df[columns] if columns is not None else df

    def read_csv(path, usecols=None, dtype=None):
        calls.append(("read_csv", path, {"usecols": usecols, "dtype": dtype}))
        return pd.read_csv(path, usecols=usecols, dtype=dtype, keep_default_na=True)

    def concat(objs, ignore_index=False):
        types = {str(o.dtype) for o in objs if isinstance(o, pd.Series)}
        if len(types) > 1:
            raise TypeError(f"stand-in concat: columns of types {sorted(types)}; make them one type first")
        return pd.concat(objs, ignore_index=ignore_index)

    api = types.SimpleNamespace(types=types.SimpleNamespace(is_decimal_dtype=_is_decimal_dtype))
    return types.SimpleNamespace(read_parquet=read_parquet, read_csv=read_csv, concat=concat, api=api,
                                 Series=pd.Series, calls=calls)


def install(monkeypatch) -> types.SimpleNamespace:
    """Make gpuseg's lazy imports give the stand-in for cudf and NumPy for cupy."""
    from gpuseg import cudf_reading

    cudf = make_cudf()
    modules = {"cudf": cudf, "cupy": np}
    monkeypatch.setattr(cudf_reading, "_import", lambda name: modules[name])
    # cuDF's Series and Index have to_arrow; pandas' have not.
    monkeypatch.setattr(pd.Series, "to_arrow", lambda self: pa.array(self, from_pandas=True), raising=False)
    monkeypatch.setattr(pd.Index, "to_arrow", lambda self: pa.array(self, from_pandas=True), raising=False)
    return cudf
