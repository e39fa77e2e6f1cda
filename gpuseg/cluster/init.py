"""Initial centres: k-means++, draw for draw as scikit-learn (random rows are drawn in :mod:`.fit`)."""

from __future__ import annotations

import math
import numbers
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ..backend import default_workers, get_namespace


def check_random_state(seed: Any) -> np.random.RandomState:
    """None, an int or a RandomState -> a RandomState (scikit-learn's rule)."""
    if seed is None or seed is np.random:
        return np.random.mtrand._rand
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        return np.random.RandomState(int(seed))
    if isinstance(seed, np.random.RandomState):
        return seed
    raise ValueError(f"random_state must be None, an int or a numpy RandomState, got {seed!r}.")


#: Rows per block of the seeding's distances on the host: a (trials, block) slab stays in a
#: core's cache (1.5 MB for 3 trials). Against 2^15 rows, seeding 9.9e6 and 3.37e7 rows x 3 took
#: 5-20% less (fewer calls per row); 2^17 was faster still here, but spills a 1-2 MB L2 at 4+ trials.
_SEED_BLOCK = 1 << 16


def kmeans_plusplus(X: Any, n_clusters: int, random_state: np.random.RandomState,
                    n_local_trials: int | None = None, n_threads: int | None = None) -> Any:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii), draw for draw as
    scikit-learn's ``_kmeans_plusplus`` with unit sample weights.

    Random numbers come from ``random_state`` on the host, so a seed gives
    the same draws on every backend (and the same seeds as scikit-learn on
    the same data); distances stay in ``X``'s namespace. On the host the
    distances are computed in row blocks on ``n_threads`` threads (default:
    every core), each block with the same operations, so the result does
    not depend on the thread count.

    Each round works block by block: a block's candidate distances are
    bounded by the current ones and summed into its share of each
    candidate's potential while in cache, and once the best candidate is
    known its row is copied into the current distances in place. Only
    three n-long arrays live through the rounds (norms, current distances,
    their running sum), so no round faults in fresh pages for a (trials, n)
    matrix and its temporaries.

    Returns
    -------
    centers : array of shape (n_clusters, d), same namespace and dtype as X
    """
    xp = get_namespace(X)
    n = X.shape[0]
    if n_local_trials is None:
        n_local_trials = 2 + int(math.log(n_clusters))
    x_sq = xp.einsum("ij,ij->i", X, X)
    size = _SEED_BLOCK if xp is np else n  # one block on a device
    threads = (n_threads or default_workers()) if n > size else 1
    starts = range(0, n, size)
    ones = xp.ones(min(size, n), dtype=X.dtype)  # ``d @ ones`` is scikit-learn's ``d @ sample_weight``
    closest = xp.empty(n, dtype=X.dtype)
    pool = ThreadPoolExecutor(threads) if threads > 1 else None

    def each(fn: Any, items: Any) -> list[Any]:
        return [fn(i) for i in items] if pool is None else list(pool.map(fn, items))

    def distances(rows: Any, bounded: bool) -> list[tuple[Any, Any]]:
        """Per block: (t, block) squared distances from ``rows`` (each no more than
        ``closest`` when ``bounded``) and their sums, in the same order of operations
        as scikit-learn's _euclidean_distances; BLAS gives the same products block by block."""
        r_sq = xp.einsum("ij,ij->i", rows, rows)[:, None]

        def one(lo: int) -> tuple[Any, Any]:
            hi = min(lo + size, n)
            d = rows @ X[lo:hi].T
            d *= -2
            d += r_sq
            d += x_sq[None, lo:hi]
            xp.maximum(d, 0, out=d)
            if bounded:
                xp.minimum(closest[None, lo:hi], d, out=d)
            return d, d @ ones[:hi - lo]

        return each(one, starts)

    def keep(blocks: list[tuple[Any, Any]], row: int) -> None:
        """Row ``row`` of the blocks' distances into ``closest``."""
        def one(b: int) -> None:
            d = blocks[b][0]
            closest[starts[b]:starts[b] + d.shape[1]] = d[row]

        each(one, range(len(blocks)))

    centers = xp.empty((n_clusters, X.shape[1]), dtype=X.dtype)
    try:
        # RandomState.choice(n, p=uniform): one uniform draw against the cdf. Its buffer then
        # holds each round's running sum of the current distances.
        cum = xp.full(n, 1.0 / n)
        cum = xp.cumsum(cum, out=cum) if xp is np else xp.cumsum(cum)  # NumPy accumulates in place
        cum /= cum[-1]
        first = int(xp.searchsorted(cum, xp.asarray(random_state.random_sample()), side="right"))
        centers[0] = X[first]
        blocks = distances(X[first:first + 1], bounded=False)
        keep(blocks, 0)
        pot = float(_total(blocks)[0])
        for c in range(1, n_clusters):
            rand = random_state.uniform(size=n_local_trials) * pot
            xp.cumsum(closest, dtype=xp.float64, out=cum)  # unit weights: scikit-learn's cumsum(weights * closest)
            cand = xp.minimum(xp.searchsorted(cum, xp.asarray(rand)), n - 1)
            blocks = distances(X[cand], bounded=True)
            pots = _total(blocks)
            best = int(xp.argmin(pots))
            pot = float(pots[best])
            keep(blocks, best)
            del blocks
            centers[c] = X[int(cand[best])]
    finally:
        if pool is not None:
            pool.shutdown()
    return centers


def _total(blocks: list[tuple[Any, Any]]) -> Any:
    """The blocks' potentials added in block order, whatever the threads."""
    pots = blocks[0][1]
    for _, sums in blocks[1:]:
        pots = pots + sums
    return pots
