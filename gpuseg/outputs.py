"""Outputs: assignments, features, segment profiles, model and report.

Everything is written into a temporary folder beside ``--out`` and moved into
place only when complete, so a failed run leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from .summary import SegmentSums

ASSIGNMENTS = "assignments.parquet"
FEATURES_FILE = "features.parquet"
SEGMENTS = "segments.csv"
MODEL = "model.json"
REPORT = "report.json"
MIGRATION = "migration.csv"


@contextmanager
def staged_output(out: Path) -> Iterator[Path]:
    """Yield a fresh temporary folder; on success its files move into ``out``.

    On an exception the temporary folder is removed (and ``out``'s parent, if
    this call created it), and ``out`` is left as it was.
    """
    out = Path(out)
    made: list[Path] = []
    parent = out.absolute().parent
    while not parent.exists():
        made.append(parent)
        parent = parent.parent
    out.absolute().parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.absolute().parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the output folder should not be
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for p in made:
            try:
                p.rmdir()
            except OSError:
                pass
        raise
    if not out.exists():
        os.replace(tmp, out)
        return
    for f in tmp.iterdir():
        target = out / f.name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(f, target)
    tmp.rmdir()


def segment_profiles(segment: Any, columns: dict[str, Any], k: int,
                     names: list[str] | None = None) -> list[dict[str, Any]]:
    """One row per segment: name, size, share, revenue share, mean of each feature.

    ``segment`` (n,) and the (n,) ``columns`` in one namespace; the rule is
    :meth:`gpuseg.summary.SegmentSums.profiles`, which the Dask path reaches
    through sums added over partitions.
    """
    return SegmentSums.of(segment, columns, k).profiles(names)


def write_parquet(path: Path, columns: dict[str, Any]) -> None:
    pq.write_table(pa.table(columns), path, compression="snappy")


def write_segments_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    pacsv.write_csv(pa.Table.from_pylist(rows), path)


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, default=_jsonable) + "\n", encoding="utf-8")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def segment_names(segment: np.ndarray, names: list[str]) -> pa.DictionaryArray:
    """The name of each row's segment, dictionary-encoded (one string per segment, not per row)."""
    return pa.DictionaryArray.from_arrays(pa.array(np.asarray(segment, dtype=np.int32)), pa.array(names, pa.string()))
