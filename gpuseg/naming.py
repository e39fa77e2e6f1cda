"""Segment names from each segment's standing on recency, frequency and monetary.

The rule, in three steps:

1. **Standing.** For recency, frequency and monetary, take the signed log1p
   of every customer's value, then the z-score of the segment's mean
   against all customers. Recency is negated, so that recent is positive.
   A standing of +1 means one standard deviation better than the average
   customer.
2. **Prototypes.** Each name has a typical standing (recency, frequency,
   monetary), listed in :data:`PROTOTYPES`. Champions, for instance, are
   recent, frequent and high-spending; Can't lose spent heavily and often
   but long ago.
3. **Matching.** Segments get names by the assignment of segments to
   prototypes with the least total squared distance (Hungarian algorithm),
   so every name is used at most once. With more than eight segments the
   prototypes repeat with a number ("Loyal 2").

The names depend on the segments' standings only, not on their ids, so they
are stable when a model is refitted and the segments come out in another
order.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: (recency, frequency, monetary) standing of each name; +1 is good (recent, often, much).
PROTOTYPES: dict[str, tuple[float, float, float]] = {
    "Champions": (1.0, 1.5, 1.5),
    "Loyal": (0.5, 1.0, 0.75),
    "Potential loyalists": (1.0, 0.25, 0.25),
    "New": (1.25, -0.75, -0.5),
    "At risk": (-0.75, 0.5, 0.5),
    "Can't lose": (-1.25, 1.25, 1.25),
    "Hibernating": (-0.5, -0.5, -0.5),
    "Lost": (-1.5, -1.0, -1.0),
}
RFM = ("recency_days", "frequency", "monetary")


def _signed_log1p(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


def standings(columns: dict[str, np.ndarray], segment: np.ndarray, k: int) -> np.ndarray:
    """(k, 3) standings of each segment on recency, frequency, monetary (step 1 above)."""
    counts = np.bincount(segment, minlength=k)
    out = np.zeros((k, 3))
    for j, name in enumerate(RFM):
        t = _signed_log1p(columns[name].astype(np.float64))
        std = t.std() or 1.0
        means = np.bincount(segment, weights=t, minlength=k) / np.maximum(counts, 1)
        out[:, j] = (means - t.mean()) / std
    out[:, 0] *= -1  # fewer days since the last purchase is better
    return out


def name_segments(columns: dict[str, np.ndarray], segment: np.ndarray, k: int) -> list[str]:
    """Unique names for segments 0..k-1 (steps 2 and 3 above).

    Parameters
    ----------
    columns : dict of name -> array of shape (n,)
        Per-customer features in original units; needs recency_days,
        frequency and monetary.
    segment : int array of shape (n,)
        Segment of each customer.
    """
    return names_from_standings(standings(columns, segment, k))


def names_from_standings(S: np.ndarray) -> list[str]:
    """Unique names for segments with (k, 3) standings ``S`` (steps 2 and 3 above)."""
    k = S.shape[0]
    names = list(PROTOTYPES)
    P = np.array([PROTOTYPES[n] for n in names])
    rounds = -(-k // len(names))
    labels = [n if r == 0 else f"{n} {r + 1}" for r in range(rounds) for n in names]
    P = np.tile(P, (rounds, 1))
    cost = ((S[:, None, :] - P[None, :, :]) ** 2).sum(axis=2)
    # Later rounds cost slightly more, so the plain names are used first.
    cost += np.repeat(np.arange(rounds), len(names))[None, :] * 1e-6
    result = [""] * k
    for r, c in enumerate(min_cost_assignment(cost)):
        result[r] = labels[c]
    return result


def min_cost_assignment(cost: np.ndarray) -> list[int]:
    """Column of each row in the one-to-one assignment of least total cost (rows <= columns).

    The Hungarian algorithm with potentials, O(rows² × columns). It serves the
    few rows and columns of segment naming without importing SciPy, whose
    import alone cost half a second of every run.
    """
    n, m = cost.shape
    if n > m:
        raise ValueError(f"need rows <= columns, got {n} x {m}")
    inf = float("inf")
    u = np.zeros(n + 1)
    v = np.zeros(m + 1)
    owner = np.zeros(m + 1, dtype=np.int64)  # owner[j]: row (1-based) matched to column j; 0 = free
    way = np.zeros(m + 1, dtype=np.int64)
    for i in range(1, n + 1):
        owner[0] = i
        j0 = 0
        minv = np.full(m + 1, inf)
        used = np.zeros(m + 1, dtype=bool)
        while True:
            used[j0] = True
            i0 = owner[j0]
            delta, j1 = inf, 0
            for j in range(1, m + 1):
                if not used[j]:
                    cur = cost[i0 - 1, j - 1] - u[i0] - v[j]
                    if cur < minv[j]:
                        minv[j], way[j] = cur, j0
                    if minv[j] < delta:
                        delta, j1 = minv[j], j
            for j in range(m + 1):
                if used[j]:
                    u[owner[j]] += delta
                    v[j] -= delta
                else:
                    minv[j] -= delta
            j0 = j1
            if owner[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            owner[j0] = owner[j1]
            j0 = j1
    col = [0] * n
    for j in range(1, m + 1):
        if owner[j]:
            col[owner[j] - 1] = j - 1
    return col


def describe(standing: Any) -> str:
    """A short reading of one segment's standing, e.g. 'recent, frequent, high spend'."""
    r, f, m = (float(v) for v in standing)

    def level(v: float, low: str, mid: str, high: str) -> str:
        return high if v > 0.5 else low if v < -0.5 else mid

    return ", ".join((level(r, "lapsed", "mid recency", "recent"),
                      level(f, "rare", "occasional", "frequent"),
                      level(m, "low spend", "mid spend", "high spend")))
