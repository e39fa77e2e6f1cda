"""The back half every front-end shares: per-segment sums, what follows from them, and the report.

A run ends with a label per customer. Everything written about the segments
— the revenue order of their ids, their names, ``segments.csv``, the
model's training summary — follows from a few sums per segment, kept in
:class:`SegmentSums`. The sums add up: one process builds them once from
all its labels (on the device, when the labels are there, copying back only
k rows), the Dask path builds them per partition and adds them. So every
front-end that ends with the same labels writes the same segments, up to
the rounding of sums taken in another order (about 1e-15 relative).

The report of a segment run is built by :func:`segment_report` from the
fields every front-end has, plus the front-end's own (``memory_plan``,
``scheduler``, ...) passed as keywords; :func:`run_report` is the part
common to every command that reads transactions (``segment``, ``score``).
"""

from __future__ import annotations

import datetime as dt
import functools
import operator
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import __version__
from .backend import default_workers, get_namespace, to_numpy
from .cleaning import RowCounts, day_date
from .model import SegmentModel
from .naming import RFM, names_from_standings, rfm_sums, standings_from_sums

if TYPE_CHECKING:
    from .cluster.fit import KMeansFit
    from .config import SegmentConfig

#: The feature whose per-segment mean orders the segment ids (highest first).
REVENUE = "monetary"


@dataclass
class SegmentResult:
    """What a segment run produced, whichever front-end ran it.

    Attributes
    ----------
    out : Path
        The output folder.
    report : dict
        What ``report.json`` holds.
    profiles : list of dict
        The rows of ``segments.csv`` (:meth:`SegmentSums.profiles`).
    model : SegmentModel
        What ``model.json`` holds.
    """

    out: Path
    report: dict[str, Any]
    profiles: list[dict[str, Any]]
    model: SegmentModel


#: Customers per block when the host sums segments on the thread pool: a fixed size,
#: so that the sums do not depend on the number of threads.
_SUM_BLOCK = 1 << 20


@dataclass(frozen=True, eq=False)
class SegmentSums:
    """Sums per segment over a set of customers; ``a + b`` sums the union of two disjoint sets.

    Build with :meth:`of`. All arrays are small NumPy arrays on the host.

    Attributes
    ----------
    columns : tuple of str
        Names of the summed feature columns, in profile order.
    counts : int64 array of shape (k,)
        Customers per segment.
    sums : float64 array of shape (k, d)
        Per-segment sums of each column, in original units.
    rfm_sums, rfm_m2 : float64 arrays of shape (k, 3), or None
        For naming (:func:`gpuseg.naming.rfm_sums`): sums of the signed
        log1p of recency, frequency and monetary, and squared deviations
        from the segment's mean. None when those columns were not given.
    distance_sums : float64 array of shape (k,), or None
        Per-segment sums of the distance to the segment's centre; None when
        no distances were given.
    """

    columns: tuple[str, ...]
    counts: np.ndarray
    sums: np.ndarray
    rfm_sums: np.ndarray | None = None
    rfm_m2: np.ndarray | None = None
    distance_sums: np.ndarray | None = None

    @classmethod
    def of(cls, labels: Any, columns: Mapping[str, Any], k: int, distance: Any = None,
           workers: int | None = None) -> "SegmentSums":
        """Sums of one block of customers, computed in the namespace of ``labels``.

        On the host, more than :data:`_SUM_BLOCK` customers are summed in blocks of
        that many on ``workers`` threads (default: every core) and the blocks' sums
        added in order, so the result does not depend on the thread count.

        Parameters
        ----------
        labels : int array of shape (n,)
            Segment of each customer, in 0..k-1.
        columns : mapping of name -> array of shape (n,)
            Per-customer features in original units, in the namespace of
            ``labels``. With recency_days, frequency and monetary among
            them, the sums for naming are kept too.
        k : int
            Number of segments.
        distance : float array of shape (n,), optional
            Distance of each customer to its segment's centre.
        """
        n = labels.shape[0]
        if get_namespace(labels) is np and n > _SUM_BLOCK:
            def block(lo: int) -> "SegmentSums":
                hi = lo + _SUM_BLOCK
                return cls._of(labels[lo:hi], {name: col[lo:hi] for name, col in columns.items()}, k,
                               None if distance is None else distance[lo:hi])

            starts = range(0, n, _SUM_BLOCK)
            threads = min(workers or default_workers(), len(starts))
            if threads == 1:
                return functools.reduce(operator.add, map(block, starts))
            with ThreadPoolExecutor(threads) as pool:
                return functools.reduce(operator.add, pool.map(block, starts))
        return cls._of(labels, columns, k, distance)

    @classmethod
    def _of(cls, labels: Any, columns: Mapping[str, Any], k: int, distance: Any = None) -> "SegmentSums":
        if labels.shape[0] == 0:  # an empty partition; CuPy's bincount takes the max of its input
            labels, distance = np.empty(0, np.int64), None if distance is None else np.empty(0)
            columns = {name: np.empty(0) for name in columns}
        xp = get_namespace(labels)
        labels = labels.astype(xp.intp, copy=False)  # NumPy's bincount would cast it on every call
        counts = xp.bincount(labels, minlength=k)
        if counts.shape[0] != k:
            raise ValueError(f"labels reach {counts.shape[0] - 1}, outside 0..{k - 1}")
        parts = [counts.astype(xp.float64)[:, None]]
        parts += [xp.bincount(labels, weights=col.astype(xp.float64, copy=False), minlength=k)[:, None]
                  for col in columns.values()]
        named = all(name in columns for name in RFM)
        if named:
            parts += list(rfm_sums(columns, labels, k)[1:])
        if distance is not None:
            parts.append(xp.bincount(labels, weights=distance.astype(xp.float64, copy=False), minlength=k)[:, None])
        table = to_numpy(xp.concatenate(parts, axis=1))  # the one copy back: k rows
        d = len(columns)
        return cls(tuple(columns), table[:, 0].round().astype(np.int64), table[:, 1:1 + d].copy(),
                   table[:, 1 + d:4 + d].copy() if named else None,
                   table[:, 4 + d:7 + d].copy() if named else None,
                   table[:, -1].copy() if distance is not None else None)

    @property
    def k(self) -> int:
        return int(self.counts.shape[0])

    @property
    def n(self) -> int:
        """Customers summed."""
        return int(self.counts.sum())

    def __add__(self, other: "SegmentSums") -> "SegmentSums":
        if not isinstance(other, SegmentSums):
            return NotImplemented
        if self.columns != other.columns or self.k != other.k:
            raise ValueError(f"sums of {self.k} segments over {self.columns} and of {other.k} segments over "
                             f"{other.columns} do not add")
        if (self.rfm_sums is None) != (other.rfm_sums is None) or \
                (self.distance_sums is None) != (other.distance_sums is None):
            raise ValueError("sums with and without the naming or distance sums do not add")
        rfm_sums = rfm_m2 = None
        if self.rfm_sums is not None:
            # Squared deviations from each side's segment mean, merged (Chan et al.).
            na, nb = self.counts.astype(np.float64), other.counts.astype(np.float64)
            delta = other.rfm_sums / np.maximum(nb, 1)[:, None] - self.rfm_sums / np.maximum(na, 1)[:, None]
            weight = na * nb / np.maximum(na + nb, 1)
            rfm_sums = self.rfm_sums + other.rfm_sums
            rfm_m2 = self.rfm_m2 + other.rfm_m2 + delta * delta * weight[:, None]
        distance = None if self.distance_sums is None else self.distance_sums + other.distance_sums
        return SegmentSums(self.columns, self.counts + other.counts, self.sums + other.sums, rfm_sums, rfm_m2,
                           distance)

    def relabel(self, new_ids: Any, k: int | None = None) -> "SegmentSums":
        """The same sums under new segment ids: segment ``i`` becomes ``new_ids[i]``.

        Parameters
        ----------
        new_ids : int array of shape (self.k,)
            Distinct ids in 0..k-1; ids no segment maps to are empty.
            ``relabel(rank)`` with ``rank = argsort(revenue_order())``
            puts the sums in revenue order.
        k : int, optional
            Segments afterwards; ``self.k`` when not given.
        """
        new_ids = np.asarray(new_ids, dtype=np.int64)
        k = self.k if k is None else k
        if new_ids.shape != (self.k,) or len(set(new_ids.tolist())) != self.k or \
                (self.k and not 0 <= new_ids.min() <= new_ids.max() < k):
            raise ValueError(f"new_ids must be {self.k} distinct ids in 0..{k - 1}, got {new_ids.tolist()}")

        def move(a: np.ndarray | None) -> np.ndarray | None:
            if a is None:
                return None
            out = np.zeros((k,) + a.shape[1:], dtype=a.dtype)
            out[new_ids] = a
            return out

        return SegmentSums(self.columns, move(self.counts), move(self.sums), move(self.rfm_sums),
                           move(self.rfm_m2), move(self.distance_sums))

    def _column(self, name: str) -> np.ndarray:
        try:
            return self.sums[:, self.columns.index(name)]
        except ValueError:
            raise ValueError(f"no {name!r} among the summed columns {self.columns}") from None

    def revenue_order(self) -> np.ndarray:
        """(k,) int64 permutation: the segment with the highest mean monetary first, ties in id order."""
        means = self._column(REVENUE) / np.maximum(self.counts, 1)
        return np.argsort(-means, kind="stable")

    def means(self) -> np.ndarray:
        """(k, d) per-segment means of the columns; NaN for an empty segment."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.counts[:, None] > 0, self.sums / self.counts[:, None], np.nan)

    def standings(self) -> np.ndarray:
        """(k, 3) standings on recency, frequency and monetary (:mod:`gpuseg.naming`, step 1)."""
        if self.rfm_sums is None:
            raise ValueError(f"naming needs {', '.join(RFM)} among the summed columns, got {self.columns}")
        return standings_from_sums(self.counts, self.rfm_sums, self.rfm_m2)

    def names(self) -> list[str]:
        """Unique segment names (:mod:`gpuseg.naming`)."""
        return names_from_standings(self.standings())

    def profiles(self, names: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """The rows of ``segments.csv``: one per segment.

        Each row has segment, name (``Segment i`` without ``names``),
        n_customers, share (of customers), revenue_share (of the summed
        monetary; None when that is not positive: returns outweigh purchases,
        and a share of it has no meaning) and ``mean_<column>`` for every
        summed column (None for an empty segment).
        """
        n = max(self.n, 1)
        revenue = self._column(REVENUE)
        total = float(revenue.sum())
        means = self.means()
        rows = []
        for s in range(self.k):
            row: dict[str, Any] = {"segment": s, "name": names[s] if names else f"Segment {s}",
                                   "n_customers": int(self.counts[s]), "share": float(self.counts[s] / n),
                                   "revenue_share": float(revenue[s] / total) if total > 0 else None}
            for j, name in enumerate(self.columns):
                # An empty segment (a reference segment no customer joined) has no mean: null, not NaN.
                row[f"mean_{name}"] = float(means[s, j]) if self.counts[s] else None
            rows.append(row)
        return rows

    def mean_distances(self) -> np.ndarray:
        """(k,) mean distance to the centre per segment; 0 for an empty segment."""
        if self.distance_sums is None:
            raise ValueError("no distances were summed")
        return self.distance_sums / np.maximum(self.counts, 1)

    def training(self) -> dict[str, Any]:
        """The model's ``training`` summary, which ``score`` compares new data against
        (an empty segment's mean distance is null: it has none)."""
        per_segment = self.mean_distances()  # raises without distances
        n = max(self.n, 1)
        return {"n_customers": self.n, "segment_shares": (self.counts / n).tolist(),
                "mean_distance": float(self.distance_sums.sum() / n),
                "segment_mean_distance": [float(d) if c else None for d, c in zip(per_segment, self.counts,
                                                                                   strict=True)]}


def fit_warnings(fit: "KMeansFit", k: int, max_iter: int) -> list[str]:
    """What a user should know about a k-means fit: not converged, or fewer segments than asked."""
    notes = []
    if not fit.converged:
        notes.append(f"k-means did not converge within --max-iter {max_iter} iterations")
    if fit.n_distinct < k:
        notes.append(f"only {fit.n_distinct} distinct segments found for --k {k} "
                     "(duplicate feature rows); some segments are empty")
    return notes


def run_report(*, inputs: Sequence[str], columns: Mapping[str, str | None], date_format: str | None,
               as_of: int, backend: str, device: str, fallbacks: Sequence[str], rows: RowCounts,
               timings: Mapping[str, float], **extra: Any) -> dict[str, Any]:
    """The report fields of every command that reads transactions, then the front-end's ``extra``.

    Parameters
    ----------
    inputs : sequence of str
        The input files (as read).
    columns : mapping of role -> column name
    as_of : int
        The as_of day number (:func:`gpuseg.cleaning.day_number`).
    backend, device : str
        Backend name and a description of the device that ran it.
    rows : RowCounts
        What happened to the input rows.
    timings : mapping of stage -> seconds
        Usually ``timer.as_dict()``; written last.
    **extra
        Front-end fields, after the common ones; a name of a common field is
        an error, so that no front-end quietly redefines one.
    """
    head = {"gpuseg_version": __version__,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "inputs": [str(i) for i in inputs], "columns": dict(columns), "date_format": date_format,
            "as_of": day_date(as_of).isoformat(), "backend": backend, "device": device,
            "fallbacks": list(fallbacks), "rows": rows.to_dict()}
    return _join(head, extra, {"timings": dict(timings)})


def segment_report(config: "SegmentConfig", fit: "KMeansFit", *, inputs: Sequence[str],
                   columns: Mapping[str, str | None], as_of: int, backend: str, device: str,
                   fallbacks: Sequence[str], rows: RowCounts, n_customers: int, customers_without_purchase: int,
                   warnings: Sequence[str], timings: Mapping[str, float], n_init: int | None = None,
                   **extra: Any) -> dict[str, Any]:
    """``report.json`` of a segment run: :func:`run_report`'s fields, the fit's, then ``extra``.

    ``config`` gives date_format, features, k and seed; ``fit`` gives the
    engine, iterations, inertia and convergence. ``n_init`` is the number of
    initialisations actually run (``config.n_init`` when not given).
    """
    fields = {"n_customers": int(n_customers), "customers_without_purchase": int(customers_without_purchase),
              "features": list(config.features), "k": config.k,
              "n_init": config.n_init if n_init is None else n_init, "seed": config.seed,
              "engine": fit.engine, "engine_note": fit.engine_note, "n_iter": int(fit.n_iter),
              "inertia": float(fit.inertia), "converged": bool(fit.converged), "warnings": list(warnings),
              "iterations": fit.history}
    report = run_report(inputs=inputs, columns=columns, date_format=config.date_format, as_of=as_of,
                        backend=backend, device=device, fallbacks=fallbacks, rows=rows, timings=timings)
    timings_field = report.pop("timings")
    return _join(_join(report, fields, {}), extra, {"timings": timings_field})


def _join(head: dict[str, Any], extra: Mapping[str, Any], tail: dict[str, Any]) -> dict[str, Any]:
    clash = sorted(set(extra) & (set(head) | set(tail)))
    if clash:
        raise ValueError(f"extra report fields {clash} repeat common ones")
    return {**head, **extra, **tail}
