"""The array-generic Lloyd step, and the step that streams host data through a device.

:func:`lloyd_partials` is one step on one block of points, written once
against the array namespace (NumPy or CuPy). :class:`ChunkedStep` owns an
(n, d) array and maps that function over row blocks, on a thread pool on the
CPU; :class:`StreamedStep` owns a host array too large for the device and
streams it through another step, block by block, every iteration.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from ..backend import bincount, default_workers, get_namespace, scatter_add, to_numpy
from .contract import Partials, Step, reduce_partials


def _prepare(centers: Any) -> tuple[Any, Any]:
    """(-2 C, ‖c‖²) for the expansion ‖x−c‖² = ‖x‖² − 2x·c + ‖c‖²."""
    return -2.0 * centers, (centers * centers).sum(axis=1)


def _nearest(X: Any, prepared: tuple[Any, Any], xp: Any) -> tuple[Any, Any]:
    """Nearest centre of each row of ``X``.

    Returns labels (int32) and ``min_j ‖c_j‖² − 2 x·c_j`` (add ‖x‖² for the
    squared distance). Ties go to the lowest index, as with ``argmin``.

    The distances are computed as a (k, m) matrix, so that each centre's row
    is contiguous: the minimum is then k−1 vectorised passes, and the label
    is the number of leading rows whose distance is not the minimum. Both are
    exact (no arithmetic on the distances), so the labels are those of
    ``argmin`` over the same values, two to three times faster than argmin
    over short rows or a running minimum over strided columns.
    """
    if xp is np:
        return _nearest_host(X, prepared)
    m2c, csq = prepared
    D = m2c @ X.T
    D += csq[:, None]
    best = D.min(axis=0)
    ahead = D[0] != best  # no minimum seen yet
    labels = ahead.astype(xp.int32)
    for j in range(1, D.shape[0] - 1):
        ahead &= D[j] != best
        labels += ahead
    return labels, best


#: Rows per piece of :func:`nearest_into`: its (k, rows) distances stay in cache.
_HOST_ROWS = 16384


class HostWork:
    """Buffers for :func:`nearest_into`, which one thread may reuse from call to call.

    Labels are counted in int8 when k < 128 (a quarter of the bytes of int32).
    """

    def __init__(self, k: int, dtype: Any, rows: int | None = None):
        rows = rows or _HOST_ROWS
        self.k, self.dtype, self.rows = k, np.dtype(dtype), rows
        self.D = np.empty((k, rows), dtype=dtype)
        self.above = np.empty((max(k - 1, 1), rows), dtype=bool)
        self.count = np.empty(rows, dtype=np.int8 if k < 128 else np.int32)


def nearest_into(X: np.ndarray, m2c: np.ndarray, csq: np.ndarray, labels: np.ndarray,
                 best: np.ndarray | None, work: HostWork) -> float:
    """:func:`_nearest` for NumPy, on cache-sized pieces of ``X`` in ``work``'s buffers.

    Writes the labels into ``labels`` (shape (m,)) and, when ``best`` is
    given, ``min_j ‖c_j‖² − 2 x·c_j`` into it; returns the sum of the latter
    (float64). ``X`` may be in either layout: over an F-ordered ``X`` the
    product X·Cᵀ reads contiguous columns, which BLAS does about twice as fast
    at small d.

    Row j of the distances becomes the running minimum of rows 0..j (k − 1
    vectorised passes), so the last row is the minimum and the label is the
    number of rows whose running minimum is still above it: one comparison of
    all rows at once and k − 2 int8 additions. Exact, so argmin's labels
    with ties to the lowest index.
    """
    m, k, rows = X.shape[0], m2c.shape[0], work.rows
    total = 0.0
    for s in range(0, m, rows):
        e = min(s + rows, m)
        w = e - s
        d, above, c = work.D[:, :w], work.above[:k - 1, :w], work.count[:w]
        np.matmul(m2c, X[s:e].T, out=d)
        d += csq[:, None]
        for j in range(1, k):
            np.minimum(d[j - 1], d[j], out=d[j])
        b = d[k - 1]
        total += float(b.sum(dtype=np.float64))
        if best is not None:
            best[s:e] = b
        if k == 1:
            labels[s:e] = 0
            continue
        np.not_equal(d[:k - 1], b, out=above)
        steps = above.view(np.int8) if c.dtype == np.int8 else above
        c[...] = steps[0]
        for j in range(1, k - 1):
            c += steps[j]
        labels[s:e] = c
    return total


def _nearest_host(X: np.ndarray, prepared: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_nearest` for NumPy: :func:`nearest_into` with buffers of its own."""
    m2c, csq = prepared
    m, k = X.shape[0], m2c.shape[0]
    labels = np.empty(m, dtype=np.int32)
    best = np.empty(m, dtype=np.result_type(X.dtype, m2c.dtype))
    nearest_into(X, m2c, csq, labels, best, HostWork(k, best.dtype, max(1, min(m, _HOST_ROWS))))
    return labels, best


def _cluster_sums(X: Any, labels: Any, k: int, xp: Any) -> tuple[Any, Any]:
    if xp is not np:  # scatter adds: CuPy's bincount waits on the device twice a call (its checks)
        counts, sums = xp.zeros(k, dtype=xp.float64), xp.zeros((k, X.shape[1]), dtype=xp.float64)
        scatter_add(counts, labels, 1.0)
        scatter_add(sums, labels, X)
        return sums, counts
    labels = labels.astype(xp.intp)  # bincount would convert it once per call
    counts = bincount(xp, labels, minlength=k).astype(xp.float64)  # no labels: a delta block where none moved
    sums = xp.stack([bincount(xp, labels, X[:, f], k) for f in range(X.shape[1])], axis=1)
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
    return Partials(sums, counts, inertia, n_changed, delta)


def default_chunk_size(xp: Any, n_clusters: int, n_features: int) -> int:
    """Rows per block: cache-sized on the CPU, a few hundred MB on a GPU."""
    width = max(n_clusters, n_features) + 4
    if xp is np:
        return int(min(65536, max(4096, 2**19 // width)))
    return int(max(2**16, 2**28 // (8 * width)))


def blocks(n: int, chunk_size: int) -> list[tuple[int, int]]:
    """(start, stop) of consecutive row blocks of at most ``chunk_size`` rows."""
    return [(s, min(s + chunk_size, n)) for s in range(0, n, chunk_size)]


class ChunkedStep:
    """The array-generic Lloyd step over an (n, d) array it holds, in row blocks.

    On the CPU the blocks run on a thread pool (NumPy releases the GIL in
    the matrix product and the elementwise loops); on a GPU they run in order
    and bound the size of the distance matrix. It keeps the labels of its
    last call, so it can return the change of the sums (``delta``) once few
    points move.
    """

    name = "generic"

    def __init__(self, X: Any, chunk_size: int, executor: Executor | None = None, track_labels: bool = True):
        self.X = X
        self.xp = get_namespace(X)
        self.chunk_size = chunk_size
        self.executor = executor
        self._labels = self.xp.full(X.shape[0], -1, dtype=self.xp.int32) if track_labels else None
        self._sq: list[Any] | None = None  # Σ‖x‖² per block: the same every iteration

    def count(self) -> int:
        return int(self.X.shape[0])

    def dim(self) -> int:
        return int(self.X.shape[1])

    def get_subset(self, indices: np.ndarray | None) -> Any:
        return self.X if indices is None else self.X[self.xp.asarray(indices)]

    def labels(self) -> Any | None:
        return self._labels

    def restart(self) -> None:
        if self._labels is not None:
            self._labels.fill(-1)

    def map(self, fn: Callable[[int, int], Any]) -> list[Any]:
        """``fn(start, stop)`` over the row blocks, on the thread pool when there is one."""
        bs = blocks(self.count(), self.chunk_size)
        if self.executor is None or len(bs) == 1:
            return [fn(s, e) for s, e in bs]
        return list(self.executor.map(lambda b: fn(*b), bs))

    def partials(self, centers: Any, delta: bool = False) -> Partials:
        X, prepared = self.X, _prepare(centers)
        if self._sq is None:
            f64 = self.xp.float64
            self._sq = self.map(lambda s, e: (X[s:e] * X[s:e]).sum(dtype=f64))
        delta = delta and self._labels is not None

        def run(s: int, e: int) -> Partials:
            lab = None if self._labels is None else self._labels[s:e]
            return lloyd_partials(X[s:e], centers, lab, prepared, delta, self._sq[s // self.chunk_size])

        return reduce_partials(self.map(run))

    def assign(self, centers: Any) -> tuple[Any, Any]:
        xp, X = self.xp, self.X
        prepared = _prepare(centers)
        labels = xp.empty(X.shape[0], dtype=xp.int32)
        sqdist = xp.empty(X.shape[0], dtype=xp.float64)

        def run(s: int, e: int) -> None:
            lab, _ = _nearest(X[s:e], prepared, xp)
            labels[s:e] = lab
            # The winner's distance computed directly, free of the expansion's cancellation.
            diff = X[s:e] - centers[lab]
            sqdist[s:e] = (diff * diff).sum(axis=1, dtype=xp.float64)

        self.map(run)
        return labels, sqdist

    def inertia(self, centers: Any) -> float:
        if self._labels is None:
            return float(self.assign(centers)[1].sum())
        X, labels, f64 = self.X, self._labels, self.xp.float64

        def run(s: int, e: int) -> Any:
            diff = X[s:e] - centers[labels[s:e]]  # computed directly (no expansion)
            return (diff * diff).sum(dtype=f64)

        return float(sum(self.map(run)))


_blas_lock = threading.Lock()
_blas_users = 0
_blas_limit: Any = None


@contextmanager
def _one_blas_thread() -> Iterator[None]:
    """BLAS limited to one thread while any fit in this process runs. The limit is process-wide:
    fits on several threads share it, and the last to end puts back what the first found (each
    restoring what it found left BLAS at one thread for good when two overlapped)."""
    global _blas_users, _blas_limit
    with _blas_lock:
        if _blas_users == 0:
            _blas_limit = threadpool_limits(limits=1, user_api="blas")
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                _blas_limit.restore_original_limits()
                _blas_limit = None


def cpu_pool(stack: ExitStack, n_threads: int | None = None) -> Executor | None:
    """A thread pool of ``n_threads`` (default every core) that lives as long as
    ``stack``, with one BLAS thread per worker: the blocks are the parallelism.
    None for one thread."""
    n = n_threads or default_workers()
    stack.enter_context(_one_blas_thread())
    return stack.enter_context(ThreadPoolExecutor(n)) if n > 1 else None


def chunked_step(X: Any, stack: ExitStack, n_clusters: int, chunk_size: int | None = None,
                 n_threads: int | None = None, track_labels: bool = True) -> ChunkedStep:
    """A :class:`ChunkedStep` over ``X``, with a thread pool on the CPU (see :func:`cpu_pool`)."""
    xp = get_namespace(X)
    executor = cpu_pool(stack, n_threads) if xp is np else None
    return ChunkedStep(X, chunk_size or default_chunk_size(xp, n_clusters, X.shape[1]), executor, track_labels)


class StreamedStep:
    """A Lloyd step over a host array too large for the device.

    Every call copies row blocks of ``X`` (host memory) to ``device`` and
    runs a step made by ``make_inner(block)`` on each: the same partial
    sums, reduced on the host. Centres and results are NumPy arrays.
    """

    xp = np

    def __init__(self, X: np.ndarray, rows: int, device: Any, make_inner: Callable[[Any], Step], name: str):
        self.X, self.rows, self.device, self.make_inner = X, rows, device, make_inner
        self.name = f"streamed-{name}"

    def count(self) -> int:
        return int(self.X.shape[0])

    def dim(self) -> int:
        return int(self.X.shape[1])

    def get_subset(self, indices: np.ndarray | None) -> np.ndarray:
        return self.X if indices is None else self.X[indices]

    def labels(self) -> None:
        return None

    def restart(self) -> None:
        pass

    def _inner(self, s: int, e: int) -> Step:
        return self.make_inner(self.device.asarray(self.X[s:e]))

    def partials(self, centers: Any, delta: bool = False) -> Partials:
        c = self.device.asarray(centers)
        total = reduce_partials(self._inner(s, e).partials(c) for s, e in blocks(self.count(), self.rows))
        return Partials(to_numpy(total.sums), to_numpy(total.counts), float(total.inertia))

    def assign(self, centers: Any) -> tuple[np.ndarray, np.ndarray]:
        c = self.device.asarray(centers)
        labels = np.empty(self.count(), dtype=np.int32)
        sqdist = np.empty(self.count(), dtype=np.float64)
        for s, e in blocks(self.count(), self.rows):
            lab, sq = self._inner(s, e).assign(c)
            labels[s:e], sqdist[s:e] = to_numpy(lab), to_numpy(sq)
        return labels, sqdist

    def inertia(self, centers: Any) -> float:
        return float(self.assign(centers)[1].sum())
