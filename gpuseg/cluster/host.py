"""The CPU Lloyd step: the array-generic step's operations, tuned for NumPy.

:class:`HostStep` computes what :class:`~gpuseg.cluster.steps.ChunkedStep`
computes on the same row blocks (the same labels, the same partial sums bit
for bit), with the memory traffic of each block kept in cache. What it does
differently, each measured on one thread of a 2-core Xeon at 10⁶ × 6 float64,
k = 8, per Lloyd pass:

- It reads the points column by column. :func:`~gpuseg.cluster.fit.fit_kmeans`
  centres host data into a feature-major (F-ordered) array, and X·Cᵀ over
  contiguous columns is a GEMM of about 5 ms against 9–10 ms over rows (at
  d < 10 the GEMM is bound by how BLAS packs the points, not by arithmetic).
  The bincounts of the partial sums and the final distances read the same
  contiguous columns.
- Each thread keeps its distance matrix, masks and label buffers between
  blocks and iterations instead of allocating them per block (a fresh 1 MB
  buffer is an mmap and 256 page faults each time).
- On a thread pool, pieces and blocks are larger (:func:`piece_rows`): each
  NumPy call hands the GIL over, and with small pieces two threads were no
  faster than one.
- Σ‖x‖², needed only for the reported inertia, is one dot product per column,
  once per fit.
- The distance of each point to its centre (for the final inertia, and for
  relocating empty clusters) is summed feature by feature from contiguous
  columns, without the (m, d) gathers and temporaries of the generic step.
"""

from __future__ import annotations

import threading
from contextlib import ExitStack
from typing import Any

import numpy as np

from .contract import Partials, reduce_partials
from .steps import (
    _HOST_ROWS,
    ChunkedStep,
    HostWork,
    _prepare,
    cpu_pool,
    default_chunk_size,
    nearest_into,
)

#: Bytes per block of :func:`centre_feature_major`: a block and its transpose stay in cache.
_CENTRE_BYTES = 1 << 20


def centre_feature_major(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``X − mean`` as a new F-ordered array, and the mean, from an ``X`` (n, d) that is
    C-ordered and not also F-ordered (n > 1 and d > 1).

    The mean is ``X.mean(axis=0)`` bit for bit: NumPy's mean over the rows of
    a C-ordered array adds the rows in order, and so does this, column by
    column, as a running sum over each block that starts from the previous
    block's total. The centred points are then those of ``X - X.mean(axis=0)``
    (and scikit-learn's), in two passes over the data: a copy that transposes
    each block in cache while summing it, and the subtraction in place. The
    mean alone, NumPy's way, takes longer than both (a loop over 10⁶ rows of
    6 values).
    """
    n, d = X.shape
    rows = max(1, _CENTRE_BYTES // (X.itemsize * d))
    out = np.empty((n, d), dtype=X.dtype, order="F")
    running = np.empty(min(n, rows), dtype=X.dtype)
    total = np.zeros(d, dtype=X.dtype)
    for s in range(0, n, rows):
        e = min(s + rows, n)
        block, r = out[s:e], running[:e - s]
        block[...] = X[s:e]
        for f in range(d):
            np.copyto(r, block[:, f])
            r[0] += total[f]
            np.cumsum(r, out=r)
            total[f] = r[-1]
    # NumPy divides by the count as an intp, which takes a float32 sum through float64.
    mean = (total / np.intp(n)).astype(X.dtype)
    out -= mean
    return out, mean


#: Rows per block of a step on a thread pool, when the caller gives no chunk size.
_POOL_BLOCK_ROWS = 1 << 17


def piece_rows(k: int, itemsize: int, pooled: bool) -> int:
    """Rows per piece of :func:`~gpuseg.cluster.steps.nearest_into` for one thread of a step.

    Alone, a thread does best with pieces whose (k, rows) distances stay in L2
    (16,384 rows). On a pool, every NumPy call (about 2k + 6 per piece) hands
    the GIL to the other thread and back, so pieces are made up to four times
    larger (up to 4 MiB of distances): at the benchmark shapes (10⁶ × 6, k = 8
    and 10⁶ × 3, k = 5) two threads then take 0.85–0.9× one thread's time
    instead of 1.0–1.3×, though each piece spills L2.
    """
    if not pooled:
        return _HOST_ROWS
    return max(_HOST_ROWS, min(4 * _HOST_ROWS, (1 << 22) // (itemsize * k)))


class _Buffers(HostWork):
    """One thread's reusable buffers: the piece buffers of :func:`nearest_into`,
    plus the labels, change mask and distance column of one row block."""

    def __init__(self, k: int, dtype: Any, block: int, rows: int):
        super().__init__(k, dtype, min(rows, block))
        self.block = block
        self.labels = np.empty(block, dtype=np.int32)
        self.changed = np.empty(block, dtype=bool)
        self.column = np.empty(block, dtype=dtype)


def _sums(X: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-cluster sums of the rows of ``X`` (any layout) and their counts, as
    the generic step's ``_cluster_sums`` computes them (one bincount per column)."""
    labels = labels.astype(np.intp)  # bincount would convert it once per call
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    sums = np.empty((k, X.shape[1]), dtype=np.float64)
    for f in range(X.shape[1]):
        sums[:, f] = np.bincount(labels, weights=X[:, f], minlength=k)
    return sums, counts


def _moved_sums(X: np.ndarray, idx: np.ndarray, new: np.ndarray, old: np.ndarray,
                k: int) -> tuple[np.ndarray, np.ndarray]:
    """Change of the sums and counts when rows ``idx`` of ``X`` move from ``old`` to ``new`` labels."""
    to, frm = new[idx].astype(np.intp), old[idx].astype(np.intp)
    counts = (np.bincount(to, minlength=k) - np.bincount(frm, minlength=k)).astype(np.float64)
    sums = np.empty((k, X.shape[1]), dtype=np.float64)
    for f in range(X.shape[1]):
        moved = X[:, f].take(idx)
        sums[:, f] = np.bincount(to, weights=moved, minlength=k) - np.bincount(frm, weights=moved, minlength=k)
    return sums, counts


def _sqdist_into(X: np.ndarray, centers_t: np.ndarray, labels: np.ndarray, out: np.ndarray,
                 column: np.ndarray) -> None:
    """``out[i] = ‖X[i] − c_labels[i]‖²`` in float64, computed directly (no expansion),
    feature by feature from ``X``'s columns; ``centers_t`` is the (d, k) transpose of the centres."""
    for f in range(X.shape[1]):
        np.take(centers_t[f], labels, out=column, mode="clip")  # labels are valid: clip skips the check
        np.subtract(X[:, f], column, out=column)
        np.multiply(column, column, out=column)
        if f == 0:
            out[...] = column
        else:
            out += column


class HostStep(ChunkedStep):
    """The Lloyd step over a NumPy array, on a thread pool of row blocks.

    It takes any layout; an F-ordered ``X`` (what :func:`fit_kmeans` gives
    it) is the fast one. Reports itself as ``generic``: it is the generic
    step's arithmetic, arranged for the CPU.
    """

    def __init__(self, X: np.ndarray, chunk_size: int, executor: Any = None, track_labels: bool = True):
        super().__init__(X, chunk_size, executor, track_labels)
        self._local = threading.local()
        self._x_sq: float | None = None

    def _buffers(self, k: int, dtype: Any) -> _Buffers:
        buf = getattr(self._local, "buf", None)
        if buf is None or buf.k != k or buf.dtype != dtype:
            block = min(self.chunk_size, self.count())
            rows = piece_rows(k, np.dtype(dtype).itemsize, self.executor is not None)
            buf = self._local.buf = _Buffers(k, dtype, block, rows)
        return buf

    def _sum_of_squares(self) -> float:
        if self._x_sq is None:
            f64 = np.float64
            cols = (self.X[:, f] for f in range(self.dim()))
            self._x_sq = float(sum(np.dot(c, c) if c.dtype == f64 and c.flags.contiguous
                                   else np.square(c, dtype=f64).sum() for c in cols))
        return self._x_sq

    def partials(self, centers: Any, delta: bool = False) -> Partials:
        X, k = self.X, centers.shape[0]
        m2c, csq = _prepare(centers)
        delta = delta and self._labels is not None

        def run(s: int, e: int) -> Partials:
            buf = self._buffers(k, m2c.dtype)
            new = buf.labels[:e - s]
            inertia = nearest_into(X[s:e], m2c, csq, new, None, buf)
            if self._labels is None:
                return Partials(*_sums(X[s:e], new, k), inertia)
            old = self._labels[s:e]
            changed = np.not_equal(old, new, out=buf.changed[:e - s])
            n_changed = int(np.count_nonzero(changed))
            if delta:
                sums, counts = _moved_sums(X[s:e], np.flatnonzero(changed), new, old, k)
            else:
                sums, counts = _sums(X[s:e], new, k)
            old[...] = new
            return Partials(sums, counts, inertia, n_changed, delta)

        total = reduce_partials(self.map(run))
        total.inertia += self._sum_of_squares()
        return total

    def assign(self, centers: Any) -> tuple[np.ndarray, np.ndarray]:
        X, k = self.X, centers.shape[0]
        m2c, csq = _prepare(centers)
        centers_t = np.ascontiguousarray(centers.T)
        labels = np.empty(X.shape[0], dtype=np.int32)
        sqdist = np.empty(X.shape[0], dtype=np.float64)

        def run(s: int, e: int) -> None:
            buf = self._buffers(k, m2c.dtype)
            nearest_into(X[s:e], m2c, csq, labels[s:e], None, buf)
            _sqdist_into(X[s:e], centers_t, labels[s:e], sqdist[s:e], buf.column[:e - s])

        self.map(run)
        return labels, sqdist

    def inertia(self, centers: Any) -> float:
        if self._labels is None:
            return float(self.assign(centers)[1].sum())
        X, labels, k = self.X, self._labels, centers.shape[0]
        centers_t = np.ascontiguousarray(centers.T)

        def run(s: int, e: int) -> float:
            buf = self._buffers(k, centers.dtype)
            sq = np.empty(e - s, dtype=np.float64)
            _sqdist_into(X[s:e], centers_t, labels[s:e], sq, buf.column[:e - s])
            return float(sq.sum())

        return float(sum(self.map(run)))


def host_step(X: np.ndarray, stack: ExitStack, n_clusters: int, chunk_size: int | None = None,
              n_threads: int | None = None, track_labels: bool = True) -> HostStep:
    """A :class:`HostStep` over ``X`` on a thread pool that lives as long as ``stack``
    (see :func:`~gpuseg.cluster.steps.cpu_pool`); on a pool, blocks default to
    :data:`_POOL_BLOCK_ROWS` rows, room for a few of its larger pieces (see :func:`piece_rows`)."""
    pool = cpu_pool(stack, n_threads)
    chunk = chunk_size or default_chunk_size(np, n_clusters, X.shape[1])
    if pool is not None and not chunk_size:
        chunk = max(chunk, _POOL_BLOCK_ROWS)
    return HostStep(X, chunk, pool, track_labels)
