"""Initial centres: k-means++, draw for draw as scikit-learn (random rows are drawn in :mod:`.fit`)."""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from ..backend import get_namespace


def check_random_state(seed: Any) -> np.random.RandomState:
    """None, an int or a RandomState -> a RandomState (scikit-learn's rule)."""
    if seed is None or seed is np.random:
        return np.random.mtrand._rand
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        return np.random.RandomState(int(seed))
    if isinstance(seed, np.random.RandomState):
        return seed
    raise ValueError(f"random_state must be None, an int or a numpy RandomState, got {seed!r}.")


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

