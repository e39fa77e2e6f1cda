"""Lloyd's algorithm, written once: the driver that every step serves.

A :class:`~gpuseg.cluster.contract.Step` turns the points it owns into
per-cluster partial sums; :func:`lloyd` adds them up, moves the centres and
decides convergence. Chunked CPU threads, the fused GPU kernel, host
streaming or a Dask reduction only swap the step; the driver, the
empty-cluster rule and the convergence test stay the same.

The semantics follow scikit-learn's ``KMeans(algorithm="lloyd")``: the same
relative tolerance, the same strict-convergence rule on unchanged labels, the
same relocation of empty clusters to the farthest points, so that both give the
same labels and inertia from the same initial centres.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..backend import argsort_stable, get_namespace, to_numpy
from .contract import Step


@dataclass
class LloydResult:
    """Outcome of one Lloyd run.

    ``history`` holds one dict per iteration: ``iter``, ``inertia`` (at the
    assignment step), ``center_shift`` (squared Frobenius norm of the move),
    ``n_changed`` (0 when the step keeps no labels) and ``seconds``.
    """

    centers: Any
    labels: Any
    inertia: float
    n_iter: int
    converged: bool
    history: list[dict[str, float]] = field(default_factory=list)


def _relocate_empty(step: Step, centers_old: Any, sums: Any, counts: Any) -> None:
    """Move each empty cluster onto one of the points farthest from its centre.

    As scikit-learn 1.9 does (``_relocate_empty_clusters_dense``): the point
    leaves its old cluster's sums and seeds the empty one; the farthest points
    are taken in the order ``np.argpartition`` gives them; nothing moves when
    every point sits on its centre (more clusters than distinct points).
    Modifies ``sums`` and ``counts`` in place.
    """
    xp = get_namespace(sums)
    empty = to_numpy(xp.flatnonzero(counts == 0))
    labels, sqdist = step.assign(centers_old)
    if float(sqdist.max()) == 0:
        return
    m = len(empty)
    if xp is np:
        order = np.argpartition(sqdist, -m)[:-m - 1:-1]
    else:  # the device's own order: farthest first, lowest index on ties
        order = argsort_stable(-sqdist)[:m]
    far = to_numpy(order)
    far_labels = to_numpy(labels[order])
    rows = xp.asarray(step.get_subset(far)).astype(xp.float64)
    for j, (new_id, old_id) in enumerate(zip(empty, far_labels)):
        sums[int(old_id)] -= rows[j]
        counts[int(old_id)] -= 1
        sums[int(new_id)] = rows[j]
        counts[int(new_id)] = 1


def _average(sums: Any, counts: Any, dtype: Any) -> Any:
    """New centres: each cluster's mean; a cluster still empty goes where the largest is,
    as scikit-learn's ``_average_centers`` puts it: that cluster's mean when it comes
    before, its sum when it comes after (scikit-learn averages the clusters in order)."""
    xp = get_namespace(sums)
    new = sums / xp.maximum(counts, 1)[:, None]
    empty = to_numpy(xp.flatnonzero(counts <= 0))
    if len(empty):
        big = int(xp.argmax(counts))
        for j in empty.tolist():
            new[j] = sums[big] if j < big else new[big]
    return new.astype(dtype)


def lloyd(step: Step, centers_init: Any, *, max_iter: int = 300, tol: float = 0.0) -> LloydResult:
    """Run Lloyd's algorithm over the points ``step`` owns, from ``centers_init``.

    Parameters
    ----------
    step : Step
        Owns the (validated: finite, n >= k) points.
    centers_init : array of shape (k, step.dim())
        Initial centres, in the step's namespace and the points' dtype.
    max_iter : int
        Most iterations to run.
    tol : float
        Absolute tolerance on the squared centre shift (see :func:`tolerance`).

    Returns
    -------
    LloydResult
    """
    xp = step.xp
    step.restart()  # an earlier run's labels (n_init > 1) are no "unchanged" for this one
    centers = xp.array(centers_init, copy=True)
    dtype = centers.dtype
    history: list[dict[str, float]] = []
    strict = converged = False
    i = 0
    running: tuple[Any, Any] | None = None  # sums and counts of the step's current labels
    for i in range(max_iter):
        t0 = time.perf_counter()
        part = step.partials(centers, delta=running is not None)
        if part.delta:
            assert running is not None
            sums, counts = running[0] + part.sums, running[1] + part.counts
        else:
            sums, counts = part.sums, part.counts
        running = (sums, counts)
        if bool((counts == 0).any()):
            _relocate_empty(step, centers, sums, counts)
            running = None  # relocation moved points without relabelling them
        new = _average(sums, counts, dtype)
        shift = float(((new - centers) ** 2).sum())
        centers = new
        n_changed = part.n_changed
        history.append({"iter": i + 1, "inertia": float(part.inertia), "center_shift": shift,
                        "n_changed": 0 if n_changed is None else int(n_changed),
                        "seconds": time.perf_counter() - t0})
        if n_changed is not None and int(n_changed) == 0:
            strict = converged = True
            break
        if shift <= tol:
            converged = True
            break
    if strict:
        final_labels = xp.array(step.labels(), copy=True)  # the step's own buffer serves the next run
        inertia = step.inertia(centers)
    else:
        final_labels, sqdist = step.assign(centers)
        inertia = float(sqdist.sum())
    return LloydResult(centers, final_labels, inertia, i + 1, converged, history)


def tolerance(X: Any, tol: float, centered: bool = False) -> float:
    """scikit-learn's data-dependent tolerance: ``tol`` × mean feature variance.

    With ``centered=True`` the column means are known to be zero, and the
    variance is one dot product instead of a strided reduction per column.
    """
    if tol == 0:
        return 0.0
    xp = get_namespace(X)
    if centered:
        flat = (X.T if X.flags.f_contiguous else X).reshape(-1)  # a view in either layout
        return float(xp.dot(flat, flat)) / X.size * tol
    return float(xp.mean(xp.var(X, axis=0))) * tol