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

    Each block of candidate distances is bounded by the current ones while
    in cache and written into one (trials, n) buffer, made once and reused
    every round; the candidates' potentials are then one full-length product
    with unit weights each, as scikit-learn sums them (sums added block by
    block round differently, which decides between candidates of equal
    potential), and the best row is copied into the current distances in
    place. No round allocates: fresh (trials, n) matrices and n-long
    temporaries each round were most of the seeding's time at 3.4·10⁷ rows,
    spent faulting in pages.

    Returns
    -------
    centers : array of shape (n_clusters, d), same namespace and dtype as X
    """
    xp = get_namespace(X)
    n = X.shape[0]
    if n_local_trials is None:
        n_local_trials = 2 + int(math.log(n_clusters))
    size = _SEED_BLOCK if xp is np else n  # one block on a device
    starts = range(0, n, size)
    # On the host float32 distances are computed as scikit-learn computes them: on chunks
    # upcast to float64 (norms too), rounded to float32 at the end. A device keeps float32
    # arithmetic (its products round otherwise anyway) and sums the running distances in
    # float64, where scikit-learn's float32 sum loses digits over many rows.
    up = X.dtype == np.float32 and xp is np
    wide = xp.float64 if up else X.dtype
    x_sq = xp.empty(n, dtype=wide)
    for lo in starts:
        block = X[lo:lo + size].astype(wide, copy=False)
        x_sq[lo:lo + size] = xp.einsum("ij,ij->i", block, block)
    threads = (n_threads or default_workers()) if n > size else 1
    ones = xp.ones((n, 1), dtype=X.dtype)  # ``d @ ones`` is scikit-learn's ``d @ sample_weight.reshape(-1, 1)``
    buf = xp.empty((max(n_local_trials, 1), n), dtype=X.dtype)
    pool = ThreadPoolExecutor(threads) if threads > 1 else None

    def each(fn: Any, items: Any) -> None:
        if pool is None:
            for i in items:
                fn(i)
        else:
            list(pool.map(fn, items))

    def distances(rows: Any, closest: Any | None) -> Any:
        """(t, n) squared distances from ``rows`` to every point (each no more than ``closest``),
        in ``buf``, in the same order of operations as scikit-learn's _euclidean_distances;
        BLAS gives the same products block by block."""
        rows = rows.astype(wide, copy=False)
        r_sq = xp.einsum("ij,ij->i", rows, rows)[:, None]
        out = buf[:rows.shape[0]]

        def one(lo: int) -> None:
            hi = min(lo + size, n)
            d = rows @ X[lo:hi].astype(wide, copy=False).T
            d *= -2
            d += r_sq
            d += x_sq[None, lo:hi]
            if up:
                out[:, lo:hi] = d
                d = out[:, lo:hi]
            xp.maximum(d, 0, out=d)
            if closest is not None:
                xp.minimum(closest[None, lo:hi], d, out=d)
            if not up:
                out[:, lo:hi] = d

        each(one, starts)
        return out

    centers = xp.empty((n_clusters, X.shape[1]), dtype=X.dtype)
    try:
        # RandomState.choice(n, p=w / w.sum()) with unit weights w in X's dtype: one uniform
        # draw against the cdf of p taken as float64.
        p = ones[:, 0] / ones.sum()
        cdf = xp.cumsum(p.astype(xp.float64))
        cdf /= cdf[-1]
        first = int(xp.searchsorted(cdf, xp.asarray(random_state.random_sample()), side="right"))
        del p, cdf
        cum = xp.empty(n, dtype=X.dtype if xp is np else xp.float64)  # each round's running sum
        centers[0] = X[first]
        d = distances(X[first:first + 1], None)
        pot = float((d @ ones[:, 0])[0])  # (1, n) @ (n,), as scikit-learn takes it
        closest = d[0].copy()
        for c in range(1, n_clusters):
            rand = random_state.uniform(size=n_local_trials) * pot
            xp.cumsum(closest, out=cum, dtype=cum.dtype)  # unit weights: scikit-learn's cumsum(weights * closest)
            cand = xp.minimum(xp.searchsorted(cum, xp.asarray(rand)), n - 1)
            d = distances(X[cand], closest)
            pots = (d @ ones)[:, 0]
            best = int(xp.argmin(pots))
            pot = float(pots[best])

            def keep(lo: int) -> None:
                closest[lo:lo + size] = d[best, lo:lo + size]

            each(keep, starts)
            centers[c] = X[int(cand[best])]
    finally:
        if pool is not None:
            pool.shutdown()
    return centers
