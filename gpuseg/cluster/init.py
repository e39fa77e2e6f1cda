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


#: Rows per block of the seeding's distances on the host: a (trials, block) slab stays in cache.
_SEED_BLOCK = 1 << 15


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
    threads = (n_threads or default_workers()) if xp is np and n > _SEED_BLOCK else 1

    def sqdist_to(rows: Any, closest: Any | None = None) -> Any:
        # (t, n) squared distances from the candidate rows to every point (each no more
        # than ``closest``), in the same order of operations as scikit-learn's
        # _euclidean_distances; BLAS gives the same products block by block.
        r_sq = xp.einsum("ij,ij->i", rows, rows)[:, None]

        def block(lo: int, hi: int) -> Any:
            d = rows @ X[lo:hi].T
            d *= -2
            d += r_sq
            d += x_sq[None, lo:hi]
            xp.maximum(d, 0, out=d)
            if closest is not None:
                xp.minimum(closest[None, lo:hi], d, out=d)
            return d

        if threads == 1:
            return block(0, n)
        out = xp.empty((rows.shape[0], n), dtype=X.dtype)

        def into(lo: int) -> None:
            hi = min(lo + _SEED_BLOCK, n)
            out[:, lo:hi] = block(lo, hi)

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(into, range(0, n, _SEED_BLOCK)))
        return out

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
        d = sqdist_to(X[cand], closest)
        pots = d @ weights
        best = int(xp.argmin(pots))
        pot = float(pots[best])
        closest = d[best]
        centers[c] = X[int(cand[best])]
    return centers
