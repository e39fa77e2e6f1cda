"""K-means: Lloyd's algorithm written once against the array namespace.

The iteration is split into a *step* that turns a block of points into
per-cluster partial sums (:class:`Partials`), and a driver (:func:`lloyd`) that
adds the partials, moves the centres and decides convergence. Chunked CPU
threads, a fused GPU kernel or a Dask reduction only swap the step; the
driver, the empty-cluster rule and the convergence test stay the same.

The semantics follow scikit-learn's ``KMeans(algorithm="lloyd")``: the same
relative tolerance, the same strict-convergence rule on unchanged labels, the
same relocation of empty clusters to the farthest points, so that both give the
same labels and inertia from the same initial centres.
"""

from __future__ import annotations

import logging
import math
import numbers
import os
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin, TransformerMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits

from .backend import get_namespace, is_device_array, to_numpy

log = logging.getLogger(__name__)

#: Above this many clusters, ``argmin`` over the distance rows beats the
#: branch-free running minimum over columns.
_RUNNING_MIN_MAX_K = 16


# -- the step: points in, partial sums out -----------------------------------

@dataclass
class Partials:
    """Per-block results of one Lloyd step; blocks reduce by ``+``.

    Attributes
    ----------
    sums : array of shape (k, d), float64
        Sum of the points assigned to each cluster.
    counts : array of shape (k,), float64
        Number of points assigned to each cluster.
    inertia : scalar
        Sum of squared distances of the points to their nearest centre.
    n_changed : scalar
        Points whose label differs from the label passed in (all of them on
        the first iteration); 0 when the step does not track labels.
    """

    sums: Any
    counts: Any
    inertia: Any
    n_changed: Any = 0

    def __add__(self, other: "Partials") -> "Partials":
        return Partials(self.sums + other.sums, self.counts + other.counts,
                        self.inertia + other.inertia, self.n_changed + other.n_changed)


def _prepare(centers: Any) -> tuple[Any, Any]:
    """(-2 Cᵀ, ‖c‖²) for the expansion ‖x−c‖² = ‖x‖² − 2x·c + ‖c‖²."""
    return -2.0 * centers.T, (centers * centers).sum(axis=1)


def _nearest(X: Any, prepared: tuple[Any, Any], xp: Any) -> tuple[Any, Any]:
    """Nearest centre of each row of ``X``.

    Returns labels (int32) and ``min_j ‖c_j‖² − 2 x·c_j`` (add ‖x‖² for the
    squared distance). Ties go to the lowest index, as with ``argmin``.
    """
    m2ct, csq = prepared
    D = X @ m2ct
    k = D.shape[1]
    if k > _RUNNING_MIN_MAX_K:
        D += csq
        labels = xp.argmin(D, axis=1).astype(xp.int32)
        best = xp.take_along_axis(D, labels[:, None].astype(xp.intp), axis=1)[:, 0]
        return labels, best
    # For few clusters a running minimum over columns is several times faster
    # than argmin over short rows; the label update is arithmetic because
    # masked copies with random masks are slow on the CPU.
    best = D[:, 0] + csq[0]
    labels = xp.zeros(X.shape[0], dtype=xp.int32)
    for j in range(1, k):
        dj = D[:, j] + csq[j]
        closer = dj < best
        xp.minimum(best, dj, out=best)
        step = xp.int32(j) - labels
        step *= closer
        labels += step
    return labels, best


def _cluster_sums(X: Any, labels: Any, k: int, xp: Any) -> tuple[Any, Any]:
    labels = labels.astype(xp.intp)  # bincount would convert it once per call
    counts = xp.bincount(labels, minlength=k).astype(xp.float64)
    sums = xp.stack([xp.bincount(labels, weights=X[:, f], minlength=k)
                     for f in range(X.shape[1])], axis=1)
    return sums, counts


def lloyd_partials(X: Any, centers: Any, labels: Any | None = None,
                   prepared: tuple[Any, Any] | None = None, delta: bool = False) -> Partials:
    """One Lloyd step on one block of points.

    Parameters
    ----------
    X : array of shape (m, d)
        A block of points (any namespace; float32 or float64).
    centers : array of shape (k, d)
        Current centres, same namespace and dtype as ``X``.
    labels : int32 array of shape (m,), optional
        Labels from the previous step, overwritten with the new ones; the
        number that changed is returned in ``n_changed``.
    prepared : tuple, optional
        ``_prepare(centers)``, to share it between blocks.
    delta : bool
        With ``labels``: return the *change* in sums and counts caused by the
        points that changed cluster, instead of the full sums. After the first
        iterations few points move, so this skips most of the scatter work.

    Returns
    -------
    Partials
        The block's per-cluster sums and counts (or their change), and its
        inertia against ``centers``.
    """
    xp = get_namespace(X)
    k = centers.shape[0]
    prepared = _prepare(centers) if prepared is None else prepared
    new, best = _nearest(X, prepared, xp)
    inertia = best.sum(dtype=xp.float64) + (X * X).sum(dtype=xp.float64)
    if labels is None:
        return Partials(*_cluster_sums(X, new, k, xp), inertia)
    changed = labels != new
    n_changed = xp.count_nonzero(changed)
    if delta:
        idx = xp.flatnonzero(changed)
        moved = X[idx]
        sums_in, counts_in = _cluster_sums(moved, new[idx], k, xp)
        sums_out, counts_out = _cluster_sums(moved, labels[idx], k, xp)
        sums, counts = sums_in - sums_out, counts_in - counts_out
    else:
        sums, counts = _cluster_sums(X, new, k, xp)
    labels[...] = new
    return Partials(sums, counts, inertia, n_changed)


def default_chunk_size(xp: Any, n_clusters: int, n_features: int) -> int:
    """Rows per block: cache-sized on the CPU, a few hundred MB on a GPU."""
    width = max(n_clusters, n_features) + 4
    if xp is np:
        return int(min(65536, max(4096, 2**19 // width)))
    return int(max(2**16, 2**28 // (8 * width)))


def _blocks(n: int, chunk_size: int) -> list[tuple[int, int]]:
    return [(s, min(s + chunk_size, n)) for s in range(0, n, chunk_size)]


class ChunkedStep:
    """The array-generic Lloyd step, mapped over row blocks.

    On the CPU the blocks run on a thread pool (NumPy releases the GIL in
    the matrix product and the elementwise loops); on a GPU they run in order
    and bound the size of the distance matrix.
    """

    tracks_labels = True
    supports_delta = True
    name = "generic"

    def __init__(self, chunk_size: int, executor: Executor | None = None):
        self.chunk_size = chunk_size
        self.executor = executor

    def map(self, fn: Callable[[int, int], Any], n: int) -> list[Any]:
        blocks = _blocks(n, self.chunk_size)
        if self.executor is None or len(blocks) == 1:
            return [fn(s, e) for s, e in blocks]
        return list(self.executor.map(lambda b: fn(*b), blocks))

    def __call__(self, X: Any, centers: Any, labels: Any | None, delta: bool = False) -> Partials:
        prepared = _prepare(centers)

        def run(s: int, e: int) -> Partials:
            lab = None if labels is None else labels[s:e]
            return lloyd_partials(X[s:e], centers, lab, prepared, delta)

        return _reduce(self.map(run, X.shape[0]))

    def assign(self, X: Any, centers: Any) -> tuple[Any, Any]:
        """Labels and squared distances to the nearest centre."""
        xp = get_namespace(X)
        prepared = _prepare(centers)
        labels = xp.empty(X.shape[0], dtype=xp.int32)
        sqdist = xp.empty(X.shape[0], dtype=xp.float64)

        def run(s: int, e: int) -> None:
            lab, best = _nearest(X[s:e], prepared, xp)
            labels[s:e] = lab
            d = best + (X[s:e] * X[s:e]).sum(axis=1)
            sqdist[s:e] = xp.maximum(d, 0)

        self.map(run, X.shape[0])
        return labels, sqdist

    def inertia(self, X: Any, centers: Any, labels: Any) -> float:
        """Sum of squared distances computed directly (no expansion)."""
        def run(s: int, e: int) -> Any:
            diff = X[s:e] - centers[labels[s:e]]
            return (diff * diff).sum(dtype=get_namespace(X).float64)

        return float(sum(self.map(run, X.shape[0])))


def _reduce(parts: Iterable[Partials]) -> Partials:
    parts = iter(parts)
    total = next(parts)
    for p in parts:
        total = total + p
    return total


# -- the driver -----------------------------------------------------------

@dataclass
class LloydResult:
    """Outcome of one Lloyd run.

    ``history`` holds one dict per iteration: ``iter``, ``inertia`` (at the
    assignment step), ``center_shift`` (squared Frobenius norm of the move),
    ``n_changed`` and ``seconds``.
    """

    centers: Any
    labels: Any
    inertia: float
    n_iter: int
    converged: bool
    history: list[dict[str, float]] = field(default_factory=list)


def _relocate_empty(X: Any, centers_old: Any, sums: Any, counts: Any,
                    step: ChunkedStep | Any) -> None:
    """Move each empty cluster onto one of the points farthest from its centre.

    As scikit-learn does: the point leaves its old cluster's sums and seeds
    the empty one. Modifies ``sums`` and ``counts`` in place.
    """
    xp = get_namespace(X)
    empty = to_numpy(xp.flatnonzero(counts == 0))
    n_empty = len(empty)
    labels, sqdist = step.assign(X, centers_old)
    # Top n_empty distances overall, farthest first, lowest index on ties.
    order = xp.argsort(-sqdist, kind="stable")[:n_empty]
    far = to_numpy(order)
    far_labels = to_numpy(labels[order])
    for new_id, idx, old_id in zip(empty, far, far_labels):
        x = X[int(idx)].astype(xp.float64)
        sums[int(old_id)] -= x
        counts[int(old_id)] -= 1
        sums[int(new_id)] = x
        counts[int(new_id)] = 1


def lloyd(X: Any, centers_init: Any, *, max_iter: int = 300, tol: float = 0.0,
          step: Any | None = None) -> LloydResult:
    """Run Lloyd's algorithm from ``centers_init``.

    Parameters
    ----------
    X : array of shape (n, d), float32 or float64
        Points, already validated (finite, n >= k).
    centers_init : array of shape (k, d)
        Initial centres, same namespace and dtype as ``X``.
    max_iter : int
        Most iterations to run.
    tol : float
        Absolute tolerance on the squared centre shift (see :func:`tolerance`).
    step : callable, optional
        ``step(X, centers, labels, delta=False) -> Partials`` over all of
        ``X``, with ``assign`` and ``inertia`` methods and ``tracks_labels``
        and ``supports_delta`` flags; defaults to :class:`ChunkedStep`. A step
        that supports deltas is asked for them once the running sums are known.

    Returns
    -------
    LloydResult
    """
    xp = get_namespace(X)
    if step is None:
        step = ChunkedStep(default_chunk_size(xp, centers_init.shape[0], X.shape[1]))
    n = X.shape[0]
    centers = xp.array(centers_init, dtype=X.dtype, copy=True)
    labels = xp.full(n, -1, dtype=xp.int32) if step.tracks_labels else None
    history: list[dict[str, float]] = []
    strict = converged = False
    i = 0
    running: tuple[Any, Any] | None = None  # sums and counts of the current labels
    for i in range(max_iter):
        t0 = time.perf_counter()
        if running is None:
            part = step(X, centers, labels)
            sums, counts = part.sums, part.counts
        else:
            part = step(X, centers, labels, delta=True)
            sums, counts = running[0] + part.sums, running[1] + part.counts
        if bool((counts == 0).any()):
            _relocate_empty(X, centers, sums, counts, step)
            running = None  # relocation moved points without relabelling them
        elif labels is not None and getattr(step, "supports_delta", False):
            running = (sums, counts)
        filled = (counts > 0)[:, None]
        new = xp.where(filled, sums / xp.maximum(counts, 1)[:, None], centers).astype(X.dtype)
        shift = float(((new - centers) ** 2).sum())
        centers = new
        n_changed = int(part.n_changed)
        history.append({"iter": i + 1, "inertia": float(part.inertia), "center_shift": shift,
                        "n_changed": n_changed, "seconds": time.perf_counter() - t0})
        if labels is not None and n_changed == 0:
            strict = converged = True
            break
        if shift <= tol:
            converged = True
            break
    if strict:
        final_labels = labels
    else:
        final_labels, _ = step.assign(X, centers)
    inertia = step.inertia(X, centers, final_labels)
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
        flat = X.reshape(-1)
        return float(xp.dot(flat, flat)) / X.size * tol
    return float(xp.mean(xp.var(X, axis=0))) * tol


# -- initialisation -----------------------------------------------------------

def kmeans_plusplus(X: Any, n_clusters: int, random_state: np.random.RandomState,
                    n_local_trials: int | None = None,
                    chunk_size: int | None = None) -> Any:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii), as scikit-learn does it.

    Random numbers come from ``random_state`` on the host, so a seed gives
    the same draws on every backend; distances stay in ``X``'s namespace.

    Returns
    -------
    centers : array of shape (n_clusters, d), same namespace and dtype as X
    """
    xp = get_namespace(X)
    n = X.shape[0]
    if n_local_trials is None:
        n_local_trials = 2 + int(math.log(n_clusters))
    x_sq = (X * X).sum(axis=1, dtype=xp.float64)

    def sqdist_to(rows: Any) -> Any:
        # (t, n) squared distances from the candidate rows to every point,
        # products in X's dtype, sums in float64.
        d = (rows @ X.T).astype(xp.float64)
        d *= -2.0
        d += (rows.astype(xp.float64) ** 2).sum(axis=1)[:, None]
        d += x_sq[None, :]
        return xp.maximum(d, 0, out=d)

    centers = xp.empty((n_clusters, X.shape[1]), dtype=X.dtype)
    first = int(random_state.randint(n))
    centers[0] = X[first]
    closest = sqdist_to(X[first:first + 1])[0]
    pot = float(closest.sum())
    for c in range(1, n_clusters):
        rand = random_state.uniform(size=n_local_trials) * pot
        cum = xp.cumsum(closest)
        cand = xp.searchsorted(cum, xp.asarray(rand))
        cand = xp.minimum(cand, n - 1)
        d = sqdist_to(X[cand])
        xp.minimum(d, closest[None, :], out=d)
        pots = d.sum(axis=1)
        best = int(xp.argmin(pots))
        pot = float(pots[best])
        closest = d[best]
        centers[c] = X[int(cand[best])]
    return centers


def _random_init(X: Any, n_clusters: int, random_state: np.random.RandomState) -> Any:
    idx = random_state.permutation(X.shape[0])[:n_clusters]
    xp = get_namespace(X)
    return X[xp.asarray(idx)].copy()


# -- the estimator -----------------------------------------------------------

def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}.")


class KMeans(ClusterMixin, TransformerMixin, BaseEstimator):
    """K-means clustering on NumPy or CuPy arrays, scikit-learn compatible.

    The arrays' namespace picks the device: NumPy input runs the threaded
    CPU Lloyd step, CuPy input runs on the GPU. Fitted attributes live in the
    same namespace as the input.

    Parameters
    ----------
    n_clusters : int, default=8
    init : {"k-means++", "random"} or array of shape (n_clusters, n_features)
    n_init : "auto" or int, default="auto"
        Runs with different seeds; "auto" is 1 for k-means++ and arrays, 10
        for "random". The run with the lowest inertia is kept.
    max_iter : int, default=300
    tol : float, default=1e-4
        Relative tolerance: convergence when the squared centre shift is at
        most ``tol`` times the mean feature variance.
    random_state : int, RandomState or None
    copy_x : bool, default=True
        Centre a copy of X (True) or X itself, restored afterwards (False).
    chunk_size : int or None
        Rows per block of the Lloyd step; None picks one for the device.
    n_threads : int or None
        CPU threads for NumPy input; None uses every core.

    Attributes
    ----------
    cluster_centers_ : array of shape (n_clusters, n_features)
    labels_ : int32 array of shape (n_samples,)
    inertia_ : float
    n_iter_ : int
    converged_ : bool
    history_ : list of dict
        Per-iteration ``inertia``, ``center_shift``, ``n_changed``, ``seconds``.
    n_features_in_ : int
    """

    def __init__(self, n_clusters: int = 8, *, init: str | Any = "k-means++",
                 n_init: str | int = "auto", max_iter: int = 300, tol: float = 1e-4,
                 random_state: int | np.random.RandomState | None = None, copy_x: bool = True,
                 chunk_size: int | None = None, n_threads: int | None = None):
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.copy_x = copy_x
        self.chunk_size = chunk_size
        self.n_threads = n_threads

    # validation, once -------------------------------------------------------
    def _check_params(self) -> None:
        _check_int("n_clusters", self.n_clusters, 1)
        _check_int("max_iter", self.max_iter, 1)
        if not isinstance(self.tol, numbers.Real) or not self.tol >= 0:
            raise ValueError(f"tol must be a float >= 0, got {self.tol!r}.")
        if self.n_init != "auto":
            _check_int("n_init", self.n_init, 1)
        if self.chunk_size is not None:
            _check_int("chunk_size", self.chunk_size, 1)
        if self.n_threads is not None:
            _check_int("n_threads", self.n_threads, 1)
        if isinstance(self.init, str) and self.init not in ("k-means++", "random"):
            raise ValueError(f"init must be 'k-means++', 'random' or an array, got {self.init!r}.")

    def _validate_data(self, X: Any, reset: bool) -> Any:
        xp = get_namespace(X)
        X = xp.asarray(X)
        if X.dtype not in (xp.float32, xp.float64):
            X = X.astype(xp.float64)
        if X.ndim != 2:
            raise ValueError(f"Expected a 2D array, got an array of shape {X.shape}.")
        if X.shape[0] == 0 or X.shape[1] == 0:
            raise ValueError(f"Found array with shape {X.shape}; at least one sample and one feature are required.")
        if not bool(xp.isfinite(X).all()):
            raise ValueError("Input X contains NaN or infinity.")
        if reset:
            self.n_features_in_ = X.shape[1]
        elif X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but KMeans is expecting "
                             f"{self.n_features_in_} features as input.")
        return xp.ascontiguousarray(X)

    def _n_init(self) -> int:
        array_init = not isinstance(self.init, str)
        if self.n_init == "auto":
            return 10 if isinstance(self.init, str) and self.init == "random" else 1
        if array_init and self.n_init != 1:
            warnings.warn(f"Explicit initial center position passed: performing only one init "
                          f"in KMeans instead of n_init={self.n_init}.", RuntimeWarning, stacklevel=3)
            return 1
        return int(self.n_init)

    def _step(self, xp: Any, d: int, stack: ExitStack) -> ChunkedStep:
        return chunked_step(xp, self.n_clusters, d, stack, self.chunk_size, self.n_threads)

    # fitting ------------------------------------------------------------------
    def fit(self, X: Any, y: Any = None) -> "KMeans":
        """Compute k-means clustering of ``X`` (n_samples, n_features)."""
        self._check_params()
        X = self._validate_data(X, reset=True)
        xp = get_namespace(X)
        n, d = X.shape
        if n < self.n_clusters:
            raise ValueError(f"n_samples={n} should be >= n_clusters={self.n_clusters}.")
        n_init = self._n_init()
        random_state = check_random_state(self.random_state)

        init = None
        if not isinstance(self.init, str):
            init = xp.asarray(self.init, dtype=X.dtype)
            if init.shape != (self.n_clusters, d):
                raise ValueError(f"The shape of the initial centers {tuple(init.shape)} does not match "
                                 f"the number of clusters {self.n_clusters} and features {d}.")

        # Centre the data for accurate distances, as scikit-learn does.
        mean = X.mean(axis=0)
        X = X - mean if self.copy_x else _subtract_inplace(X, mean)
        abs_tol = tolerance(X, self.tol, centered=True)
        best: LloydResult | None = None
        try:
            with ExitStack() as stack:
                step = self._step(xp, d, stack)
                for _ in range(n_init):
                    if init is not None:
                        centers = init - mean
                    elif self.init == "k-means++":
                        centers = kmeans_plusplus(X, self.n_clusters, random_state)
                    else:
                        centers = _random_init(X, self.n_clusters, random_state)
                    run = lloyd(X, centers, max_iter=self.max_iter, tol=abs_tol, step=step)
                    if best is None or (run.inertia < best.inertia
                                        and not _same_clustering(run.labels, best.labels)):
                        best = run
        finally:
            if not self.copy_x:
                X += mean
        assert best is not None
        distinct = int(xp.count_nonzero(xp.bincount(best.labels, minlength=self.n_clusters)))
        if distinct < self.n_clusters:
            warnings.warn(f"Number of distinct clusters ({distinct}) found smaller than "
                          f"n_clusters ({self.n_clusters}). Possibly due to duplicate points in X.",
                          ConvergenceWarning, stacklevel=2)
        self.cluster_centers_ = best.centers + mean.astype(best.centers.dtype)
        self.labels_ = best.labels
        self.inertia_ = best.inertia
        self.n_iter_ = best.n_iter
        self.converged_ = best.converged
        self.history_ = best.history
        if not best.converged:
            warnings.warn(f"KMeans did not converge within max_iter={self.max_iter} iterations.",
                          ConvergenceWarning, stacklevel=2)
        return self

    def _assign(self, X: Any) -> tuple[Any, Any]:
        check_is_fitted(self)
        X = self._validate_data(X, reset=False)
        return nearest(X, self.cluster_centers_, chunk_size=self.chunk_size, n_threads=self.n_threads)

    def predict(self, X: Any) -> Any:
        """Index of the nearest centre for each row of ``X`` (int32)."""
        return self._assign(X)[0]

    def transform(self, X: Any) -> Any:
        """Euclidean distances of ``X`` to every centre, shape (n_samples, n_clusters)."""
        check_is_fitted(self)
        X = self._validate_data(X, reset=False)
        xp = get_namespace(X)
        C = xp.asarray(self.cluster_centers_, dtype=xp.float64)
        Xf = X.astype(xp.float64)
        d = (Xf * Xf).sum(axis=1)[:, None] - 2.0 * (Xf @ C.T) + (C * C).sum(axis=1)[None, :]
        return xp.sqrt(xp.maximum(d, 0))

    def score(self, X: Any, y: Any = None) -> float:
        """Opposite of the inertia of ``X`` against the fitted centres."""
        return -float(self._assign(X)[1].sum())


def chunked_step(xp: Any, k: int, d: int, stack: ExitStack, chunk_size: int | None = None,
                 n_threads: int | None = None) -> ChunkedStep:
    """A :class:`ChunkedStep` for ``xp``, with a thread pool on the CPU that
    lives as long as ``stack``."""
    executor = None
    if xp is np:
        n = n_threads or os.cpu_count() or 1
        # One BLAS thread per worker: the blocks are the parallelism.
        stack.enter_context(threadpool_limits(limits=1, user_api="blas"))
        if n > 1:
            executor = stack.enter_context(ThreadPoolExecutor(n))
    return ChunkedStep(chunk_size or default_chunk_size(xp, k, d), executor)


def nearest(X: Any, centers: Any, chunk_size: int | None = None,
            n_threads: int | None = None) -> tuple[Any, Any]:
    """Nearest centre of each row of ``X`` and the squared distance to it.

    Parameters
    ----------
    X : array of shape (n, d)
    centers : array of shape (k, d), same namespace as X

    Returns
    -------
    labels : int32 array of shape (n,)
    sqdist : float64 array of shape (n,)
    """
    xp = get_namespace(X)
    centers = xp.asarray(centers, dtype=X.dtype)
    with ExitStack() as stack:
        return chunked_step(xp, centers.shape[0], X.shape[1], stack, chunk_size, n_threads).assign(X, centers)


def _subtract_inplace(X: Any, mean: Any) -> Any:
    X -= mean
    return X


def _same_clustering(a: Any, b: Any) -> bool:
    """True when two labelings are equal up to a permutation of the labels."""
    a, b = to_numpy(a), to_numpy(b)
    pairs = np.unique(np.stack([a, b]), axis=1)
    return pairs.shape[1] == np.unique(a).shape[0] == np.unique(b).shape[0]
