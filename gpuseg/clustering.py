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
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from .backend import _import, argsort_stable, get_namespace, to_numpy

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
                   prepared: tuple[Any, Any] | None = None, delta: bool = False,
                   x_sq: Any | None = None) -> Partials:
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
    x_sq : scalar, optional
        Sum of the squared norms of the block's points, when already known.
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
    if x_sq is None:
        x_sq = (X * X).sum(dtype=xp.float64)
    inertia = best.sum(dtype=xp.float64) + x_sq
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
        self._sq_of: Any = None  # the array whose per-block squared norms are cached
        self._sq: list[Any] = []

    def map(self, fn: Callable[[int, int], Any], n: int) -> list[Any]:
        blocks = _blocks(n, self.chunk_size)
        if self.executor is None or len(blocks) == 1:
            return [fn(s, e) for s, e in blocks]
        return list(self.executor.map(lambda b: fn(*b), blocks))

    def __call__(self, X: Any, centers: Any, labels: Any | None, delta: bool = False) -> Partials:
        prepared = _prepare(centers)
        if self._sq_of is not X:
            # Σ‖x‖² per block is the same every iteration: compute it once per data set.
            f64 = get_namespace(X).float64
            self._sq = self.map(lambda s, e: (X[s:e] * X[s:e]).sum(dtype=f64), X.shape[0])
            self._sq_of = X

        def run(s: int, e: int) -> Partials:
            lab = None if labels is None else labels[s:e]
            return lloyd_partials(X[s:e], centers, lab, prepared, delta, self._sq[s // self.chunk_size])

        return _reduce(self.map(run, X.shape[0]))

    def assign(self, X: Any, centers: Any) -> tuple[Any, Any]:
        """Labels and squared distances to the nearest centre."""
        xp = get_namespace(X)
        prepared = _prepare(centers)
        labels = xp.empty(X.shape[0], dtype=xp.int32)
        sqdist = xp.empty(X.shape[0], dtype=xp.float64)

        def run(s: int, e: int) -> None:
            lab, _ = _nearest(X[s:e], prepared, xp)
            labels[s:e] = lab
            # The winner's distance computed directly, free of the expansion's cancellation.
            diff = X[s:e] - centers[lab]
            sqdist[s:e] = (diff * diff).sum(axis=1, dtype=xp.float64)

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
    order = argsort_stable(-sqdist)[:n_empty]
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
        inertia = step.inertia(X, centers, labels)
    else:
        final_labels, sqdist = step.assign(X, centers)
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
        flat = X.reshape(-1)
        return float(xp.dot(flat, flat)) / X.size * tol
    return float(xp.mean(xp.var(X, axis=0))) * tol


# -- initialisation -----------------------------------------------------------

def kmeans_plusplus(X: Any, n_clusters: int, random_state: np.random.RandomState,
                    n_local_trials: int | None = None) -> Any:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii), draw for draw as
    scikit-learn's ``_kmeans_plusplus`` with unit sample weights.

    Random numbers come from ``random_state`` on the host, so a seed gives
    the same draws on every backend (and the same seeds as scikit-learn on
    the same data); distances stay in ``X``'s namespace.

    Returns
    -------
    centers : array of shape (n_clusters, d), same namespace and dtype as X
    """
    xp = get_namespace(X)
    n = X.shape[0]
    if n_local_trials is None:
        n_local_trials = 2 + int(math.log(n_clusters))
    x_sq = xp.einsum("ij,ij->i", X, X)
    weights = xp.ones(n, dtype=X.dtype)

    def sqdist_to(rows: Any) -> Any:
        # (t, n) squared distances from the candidate rows to every point,
        # in the same order of operations as scikit-learn's _euclidean_distances.
        d = rows @ X.T
        d *= -2
        d += xp.einsum("ij,ij->i", rows, rows)[:, None]
        d += x_sq[None, :]
        return xp.maximum(d, 0, out=d)

    centers = xp.empty((n_clusters, X.shape[1]), dtype=X.dtype)
    # RandomState.choice(n, p=uniform): one uniform draw against the cdf.
    cdf = xp.cumsum(xp.full(n, 1.0 / n))
    cdf /= cdf[-1]
    first = int(xp.searchsorted(cdf, xp.asarray(random_state.random_sample()), side="right"))
    del cdf
    centers[0] = X[first]
    closest = sqdist_to(X[first:first + 1])[0]
    pot = float(closest @ weights)
    for c in range(1, n_clusters):
        rand = random_state.uniform(size=n_local_trials) * pot
        cum = xp.cumsum(weights * closest, dtype=xp.float64)
        cand = xp.minimum(xp.searchsorted(cum, xp.asarray(rand)), n - 1)
        d = sqdist_to(X[cand])
        xp.minimum(closest[None, :], d, out=d)
        pots = d @ weights
        best = int(xp.argmin(pots))
        pot = float(pots[best])
        closest = d[best]
        centers[c] = X[int(cand[best])]
    return centers


def _random_init(X: Any, n_clusters: int, random_state: np.random.RandomState) -> Any:
    idx = random_state.permutation(X.shape[0])[:n_clusters]
    xp = get_namespace(X)
    return X[xp.asarray(idx)].copy()


# -- a complete fit ----------------------------------------------------------

def check_random_state(seed: Any) -> np.random.RandomState:
    """None, an int or a RandomState -> a RandomState (scikit-learn's rule)."""
    if seed is None or seed is np.random:
        return np.random.mtrand._rand
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        return np.random.RandomState(int(seed))
    if isinstance(seed, np.random.RandomState):
        return seed
    raise ValueError(f"random_state must be None, an int or a numpy RandomState, got {seed!r}.")


@dataclass
class KMeansFit:
    """The best of ``n_init`` Lloyd runs, in the input's namespace and units.

    ``engine`` says which step ran (``generic``, ``fused``, ``streamed-fused``
    or ``streamed-generic``) and ``engine_note`` why, when it is not the
    first choice.
    """

    centers: Any
    labels: Any
    inertia: float
    n_iter: int
    converged: bool
    history: list[dict[str, float]]
    n_distinct: int
    engine: str = "generic"
    engine_note: str | None = None


ENGINES = ("auto", "generic", "fused", "streamed")


class StreamedStep:
    """A Lloyd step over a host array too large for the device.

    Every call streams row blocks of ``X`` (host memory) to ``device`` and
    runs ``inner`` on each: the same partial sums, reduced on the host.
    """

    tracks_labels = False
    supports_delta = False

    def __init__(self, inner: Any, rows: int, device: Any):
        self.inner, self.rows, self.device = inner, rows, device
        self.name = f"streamed-{getattr(inner, 'name', 'generic')}"

    def __call__(self, X: Any, centers: Any, labels: Any = None, delta: bool = False) -> Partials:
        c = self.device.asarray(centers)
        parts = (self.inner(self.device.asarray(X[s:e]), c, None) for s, e in _blocks(X.shape[0], self.rows))
        total = _reduce(parts)
        return Partials(to_numpy(total.sums), to_numpy(total.counts), float(total.inertia), 0)

    def assign(self, X: Any, centers: Any) -> tuple[np.ndarray, np.ndarray]:
        c = self.device.asarray(centers)
        labels = np.empty(X.shape[0], dtype=np.int32)
        sqdist = np.empty(X.shape[0], dtype=np.float64)
        for s, e in _blocks(X.shape[0], self.rows):
            lab, sq = self.inner.assign(self.device.asarray(X[s:e]), c)
            labels[s:e], sqdist[s:e] = to_numpy(lab), to_numpy(sq)
        return labels, sqdist

    def inertia(self, X: Any, centers: Any, labels: Any) -> float:
        return float(self.assign(X, centers)[1].sum())


def _make_step(X: Any, k: int, engine: str, stack: ExitStack, chunk_size: int | None,
               n_threads: int | None, stream_rows: int | None, device: Any) -> tuple[Any, Any, str | None]:
    """Choose the Lloyd step once: returns (step, X in the step's layout, note)."""
    xp = get_namespace(X)
    d = X.shape[1]
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}.")
    if engine == "streamed":
        if xp is not np:
            raise ValueError("engine='streamed' takes a host (NumPy) array.")
        device = device if device is not None else _import("cupy")
        rows = stream_rows or 1 << 22
        if device is np:
            return StreamedStep(chunked_step(np, k, d, stack, chunk_size, n_threads), rows, np), X, None
        from .fused_lloyd import FusedStep, pad_rows, padded_width, why_unsupported
        reason = why_unsupported(d, k, X.dtype)
        if reason is None:
            inner = FusedStep(d, k, X.dtype)
            return StreamedStep(inner, rows, device), pad_rows(X, padded_width(d, X.dtype)), None
        inner = ChunkedStep(default_chunk_size(device, k, d))
        return StreamedStep(inner, rows, device), X, f"generic step on the device: {reason}"
    if xp is np:
        if engine == "fused":
            raise ValueError("engine='fused' needs CuPy arrays on a CUDA device.")
        return chunked_step(xp, k, d, stack, chunk_size, n_threads), X, None
    if engine in ("auto", "fused"):
        from .fused_lloyd import FusedStep, pad_rows, padded_width, why_unsupported
        reason = why_unsupported(d, k, X.dtype)
        if reason is None:
            return FusedStep(d, k, X.dtype), pad_rows(X, padded_width(d, X.dtype)), None
        if engine == "fused":
            raise ValueError(f"fused Lloyd kernel cannot run: {reason}.")
        return chunked_step(xp, k, d, stack, chunk_size, n_threads), X, f"array-generic step: {reason}"
    return chunked_step(xp, k, d, stack, chunk_size, n_threads), X, None


def fit_kmeans(X: Any, n_clusters: int, *, init: str | Any = "k-means++", n_init: int = 1,
               max_iter: int = 300, tol: float = 1e-4, random_state: Any = None, copy_x: bool = True,
               chunk_size: int | None = None, n_threads: int | None = None, engine: str = "auto",
               stream_rows: int | None = None, device: Any = None) -> KMeansFit:
    """Fit k-means to validated data; the engine behind :class:`gpuseg.KMeans`.

    Assumes ``X`` is a C-contiguous, finite float array of shape (n, d) with
    n >= n_clusters, and ``init`` (when an array) of shape (n_clusters, d):
    callers validate. ``tol`` is relative (see :func:`tolerance`).

    ``engine``: ``auto`` (the fused CUDA step for supported CuPy input, else
    the array-generic step), ``generic``, ``fused``, or ``streamed`` (a host
    array streamed to ``device``, default CuPy, in blocks of ``stream_rows``
    rows each iteration; k-means++ then seeds from a sample of that many rows).
    """
    xp = get_namespace(X)
    random_state = check_random_state(random_state)
    d = X.shape[1]
    init_array = None if isinstance(init, str) else xp.asarray(init, dtype=X.dtype)
    # Centre the data for accurate distances, as scikit-learn does.
    mean = X.mean(axis=0)
    X = X - mean if copy_x else _subtract_inplace(X, mean)
    best: LloydResult | None = None
    try:
        abs_tol = tolerance(X, tol, centered=True)
        with ExitStack() as stack:
            step, Xw, note = _make_step(X, n_clusters, engine, stack, chunk_size, n_threads, stream_rows, device)
            ld = Xw.shape[1]
            for _ in range(n_init):
                if init_array is not None:
                    centers = init_array - mean
                elif init == "k-means++":
                    centers = _seed(Xw, n_clusters, random_state, step)
                else:
                    centers = _random_init(Xw, n_clusters, random_state)
                if centers.shape[1] != ld:
                    centers = _pad_centers(centers, ld)
                run = lloyd(Xw, centers, max_iter=max_iter, tol=abs_tol, step=step)
                if best is None or (run.inertia < best.inertia
                                    and not _same_clustering(run.labels, best.labels)):
                    best = run
            del Xw
    finally:
        if not copy_x:
            X += mean
    assert best is not None
    lxp = get_namespace(best.labels)
    n_distinct = int(lxp.count_nonzero(lxp.bincount(best.labels, minlength=n_clusters)))
    centers = best.centers[:, :d] + mean.astype(best.centers.dtype)
    return KMeansFit(centers, best.labels, best.inertia, best.n_iter, best.converged, best.history,
                     n_distinct, getattr(step, "name", "generic"), note)


def _seed(X: Any, k: int, random_state: np.random.RandomState, step: Any) -> Any:
    """k-means++ seeds; a streamed step seeds from a random sample on the device."""
    if not isinstance(step, StreamedStep):
        return kmeans_plusplus(X, k, random_state)
    n = X.shape[0]
    rows = np.sort(random_state.choice(n, size=min(n, step.rows), replace=False)) if n > step.rows else slice(None)
    return to_numpy(kmeans_plusplus(step.device.asarray(X[rows]), k, random_state))


def _pad_centers(centers: Any, ld: int) -> Any:
    xp = get_namespace(centers)
    out = xp.zeros((centers.shape[0], ld), dtype=centers.dtype)
    out[:, :centers.shape[1]] = centers
    return out


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


def nearest(X: Any, centers: Any, chunk_size: int | None = None, n_threads: int | None = None,
            engine: str = "auto", stream_rows: int | None = None, device: Any = None) -> tuple[Any, Any]:
    """Nearest centre of each row of ``X`` and the squared distance to it.

    Parameters
    ----------
    X : array of shape (n, d)
    centers : array of shape (k, d), same namespace as X
    engine : str
        As for :func:`fit_kmeans`.

    Returns
    -------
    labels : int32 array of shape (n,)
    sqdist : float64 array of shape (n,)
    """
    xp = get_namespace(X)
    centers = xp.asarray(centers, dtype=X.dtype)
    with ExitStack() as stack:
        step, Xw, _ = _make_step(X, centers.shape[0], engine, stack, chunk_size, n_threads, stream_rows, device)
        if Xw.shape[1] != centers.shape[1]:
            centers = _pad_centers(centers, Xw.shape[1])
        return step.assign(Xw, centers)


def _subtract_inplace(X: Any, mean: Any) -> Any:
    X -= mean
    return X


def _same_clustering(a: Any, b: Any) -> bool:
    """True when two labelings are equal up to a permutation of the labels."""
    a, b = to_numpy(a), to_numpy(b)
    pairs = np.unique(np.stack([a, b]), axis=1)
    return pairs.shape[1] == np.unique(a).shape[0] == np.unique(b).shape[0]
