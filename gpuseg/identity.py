"""Stable segment identities across refreshes: match a new fit to a reference model.

A monthly refresh refits the segments; ``--reference-model`` maps each new
segment to the reference segment whose centroid is nearest, by the one-to-one
assignment with the least total squared distance (Hungarian algorithm),
measured in the new run's scaled feature space. Matched segments keep the
reference's id and name; a migration table counts, for customers present in
both runs, how many moved from each old segment to each new one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import GpusegError
from .model import SegmentModel
from .naming import min_cost_assignment
from .scaling import Scaler


def match_reference(reference: SegmentModel, scaler: Scaler, centroids: np.ndarray) -> np.ndarray:
    """For each new segment (rows of ``centroids``, scaled), the reference segment it continues, or -1."""
    if tuple(reference.features) != tuple(scaler.features):
        raise GpusegError(f"the reference model uses features {','.join(reference.features)} but this run uses "
                          f"{','.join(scaler.features)}; use the same --features")
    with np.errstate(over="ignore", invalid="ignore"):
        old = scaler.transform(reference.scaler.inverse_transform(reference.centroids))
        cost = ((centroids[:, None, :] - old[None, :, :]) ** 2).sum(axis=2)
    if not np.isfinite(cost).all():
        raise GpusegError("the reference model's centroids are too far from this run's to compare (their "
                          "distances are not finite numbers); give a reference model of data like this run's")
    match = np.full(centroids.shape[0], -1, dtype=np.int64)
    if cost.shape[0] <= cost.shape[1]:
        match[:] = min_cost_assignment(cost)
    else:  # more new segments than old: assign the old ones to new rows instead
        for old_id, new_id in enumerate(min_cost_assignment(cost.T)):
            match[new_id] = old_id
    return match


def new_ids(match: np.ndarray, k_old: int) -> np.ndarray:
    """New id of each new segment: the reference id when matched, else the next unused id."""
    ids = match.copy()
    free = iter(i for i in range(max(k_old, len(match)) + len(match)) if i not in set(match[match >= 0].tolist()))
    for j in np.flatnonzero(ids < 0):
        ids[j] = next(free)
    return ids


def migration(reference_dir: Path, customer_ids: pa.Array, segment: np.ndarray, old_names: list[str],
              new_names: list[str]) -> list[dict] | None:
    """Counts of customers present in both runs by (old segment, new segment); None without old assignments
    (``assignments.parquet`` beside the reference model, or a Dask run's ``assignments/`` folder)."""
    path = Path(reference_dir) / "assignments.parquet"
    if not path.exists() and (Path(reference_dir) / "assignments").is_dir():
        path = Path(reference_dir) / "assignments"
    if not path.exists():
        return None
    try:
        old = pq.read_table(path, columns=["customer_id", "segment"])
    except (pa.ArrowException, OSError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise GpusegError(f"cannot read the reference run's {str(path)!r} for migration.csv ({first}); it must be "
                          "the assignments.parquet that gpuseg segment wrote beside the reference model") from None
    new = pa.table({"customer_id": customer_ids, "new_segment": pa.array(segment, pa.int32())})
    if old.schema.field("customer_id").type != new.schema.field("customer_id").type:
        # Ids of different types meet as text, each written as read: the integer 7 is "7",
        # which the text ids "007" and "0007" are not (casting text to integers made all three 7).
        old = old.set_column(0, "customer_id", _as_text(old.column("customer_id")))
        new = new.set_column(0, "customer_id", _as_text(new.column("customer_id")))
    both = new.join(old.rename_columns(["customer_id", "old_segment"]), keys="customer_id", join_type="inner")
    if both.num_rows == 0:
        return []
    o = both.column("old_segment").to_numpy(zero_copy_only=False)
    n = both.column("new_segment").to_numpy()
    if o.dtype.kind not in "iu" or o.min() < 0 or o.max() >= len(old_names):
        raise GpusegError(f"the reference run's {str(path)!r} has segments outside 0..{len(old_names) - 1}, "
                          "the reference model's; it must be the assignments.parquet written with that model")
    ko, kn = int(o.max()) + 1, int(n.max()) + 1
    table = np.bincount(o.astype(np.int64) * kn + n, minlength=ko * kn).reshape(ko, kn)
    rows = []
    for i, j in zip(*np.nonzero(table)):
        rows.append({"old_segment": int(i), "old_name": old_names[i] if i < len(old_names) else "",
                     "new_segment": int(j), "new_name": new_names[j] if j < len(new_names) else "",
                     "customers": int(table[i, j])})
    return rows


def _as_text(ids: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """Ids as text: integers in decimal; whole floats as integers (7.0 is "7"); text as is."""
    t = ids.type
    if pa.types.is_dictionary(t):
        ids, t = ids.cast(t.value_type), t.value_type
    if pa.types.is_floating(t):  # as coding writes float ids as text (1e15 is "1000000000000000")
        from .coding import to_unified
        ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
        return to_unified(ids, pa.string()).cast(pa.large_string())
    return ids.cast(pa.large_string())

