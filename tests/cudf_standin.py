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
- ``.values`` gives NumPy where cuDF gives CuPy, unless the stand-in is
  installed over the CuPy emulator (``install(monkeypatch, cupy)``): then its
  frames are device frames, whose ``.values`` and ``factorize`` codes are
  device arrays, which ``.iloc`` takes as indexers, and which NumPy cannot
  read (``__array__`` raises, as cuDF's does); strings use pandas' ``str``
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


class OnDevice:
    """A pandas object (frame, series, index, accessor or indexer) held as cuDF holds its
    own: arrays that come out of it are device arrays of ``cp``, device arrays go in."""

    __slots__ = ("_obj", "_cp")

    def __init__(self, obj, cp):
        self._obj, self._cp = obj, cp

    def _in(self, x):
        if isinstance(x, OnDevice):
            return x._obj
        if isinstance(x, self._cp.ndarray):
            return x.get()
        if isinstance(x, (list, tuple)):
            return type(x)(self._in(v) for v in x)
        return x

    @staticmethod
    def _held(x) -> bool:
        return isinstance(x, (pd.Series, pd.DataFrame, pd.Index)) or type(x).__module__.startswith(
            ("pandas.core.strings", "pandas.core.indexes.accessors", "pandas.core.indexing"))

    def _out(self, x):
        if self._held(x):
            return OnDevice(x, self._cp)
        if isinstance(x, np.ndarray):  # cuDF gives CuPy arrays (factorize's codes)
            return self._cp.asarray(x)
        if isinstance(x, tuple):
            return tuple(self._out(v) for v in x)
        return x

    def _call(self, f, *args, **kwargs):
        return self._out(f(*self._in(args), **{k: self._in(v) for k, v in kwargs.items()}))

    @property
    def values(self):
        if self._obj.dtype.kind not in "biuf":
            raise NotImplementedError(f"the stand-in has no device array of {self._obj.dtype}")
        return self._cp.asarray(self._obj.to_numpy())

    def __getattr__(self, name):
        value = getattr(self._obj, name)
        if callable(value) and not isinstance(value, type) and not self._held(value):
            return lambda *args, **kwargs: self._call(value, *args, **kwargs)
        return self._out(value)

    def __array__(self, dtype=None, copy=None):
        raise TypeError("Implicit conversion to a host NumPy array via __array__ is not allowed")

    def __len__(self):
        return len(self._obj)

    def __getitem__(self, key):
        return self._call(self._obj.__getitem__, key)

    def __setitem__(self, key, value):
        self._obj[self._in(key)] = self._in(value)


def _forward(name):
    def op(self, *args):
        return self._call(getattr(self._obj, name), *args)
    return op


for _name in ("and", "or", "xor", "invert", "eq", "ne", "lt", "le", "gt", "ge", "add", "sub", "mul", "truediv",
              "neg", "abs", "rand", "ror"):
    setattr(OnDevice, f"__{_name}__", _forward(f"__{_name}__"))


def make_cudf(cp=None) -> types.SimpleNamespace:
    """A fresh stand-in module; ``calls`` records (reader, path, kwargs). With ``cp`` (the
    CuPy emulator), its frames are :class:`OnDevice`."""
    calls: list[tuple[str, str, dict]] = []

    def on_device(x):
        return OnDevice(x, cp) if cp is not None else x

    def on_host(x):
        return x._obj if isinstance(x, OnDevice) else x

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
        return on_device(df[columns] if columns is not None else df)

    def read_csv(path, usecols=None, dtype=None):
        calls.append(("read_csv", path, {"usecols": usecols, "dtype": dtype}))
        return on_device(pd.read_csv(path, usecols=usecols, dtype=dtype, keep_default_na=True))

    def concat(objs, ignore_index=False):
        objs = [on_host(o) for o in objs]
        types = {str(o.dtype) for o in objs if isinstance(o, pd.Series)}
        if len(types) > 1:
            raise TypeError(f"stand-in concat: columns of types {sorted(types)}; make them one type first")
        return on_device(pd.concat(objs, ignore_index=ignore_index))

    api = types.SimpleNamespace(types=types.SimpleNamespace(is_decimal_dtype=_is_decimal_dtype))
    return types.SimpleNamespace(read_parquet=read_parquet, read_csv=read_csv, concat=concat, api=api,
                                 Series=pd.Series, calls=calls)


def install(monkeypatch, cp=None) -> types.SimpleNamespace:
    """Make gpuseg's lazy imports give the stand-in for cudf, and NumPy for cupy, or
    ``cp`` (the CuPy emulator, installed by the caller), whose device arrays the
    stand-in's frames then give and take."""
    from gpuseg import cudf_reading

    cudf = make_cudf(cp)
    modules = {"cudf": cudf, "cupy": np if cp is None else cp}
    monkeypatch.setattr(cudf_reading, "_import", lambda name: modules[name])
    # cuDF's Series and Index have to_arrow; pandas' have not.
    monkeypatch.setattr(pd.Series, "to_arrow", lambda self: pa.array(self, from_pandas=True), raising=False)
    monkeypatch.setattr(pd.Index, "to_arrow", lambda self: pa.array(self, from_pandas=True), raising=False)
    return cudf
