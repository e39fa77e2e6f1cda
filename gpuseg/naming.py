"""Segment names from each segment's standing on recency, frequency and monetary.

The rule, in three steps:

1. **Standing.** For recency, frequency and monetary, take the signed log1p
   of every customer's value, then the z-score of the segment's mean
   against all customers. Recency is negated, so that recent is positive.
   A standing of +1 means one standard deviation better than the average
   customer; a measure without spread gives every segment standing 0.
2. **Prototypes.** Each name has a typical standing (recency, frequency,
   monetary), listed in :data:`PROTOTYPES`. Champions, for instance, are
   recent, frequent and high-spending; Can't lose spent heavily and often
   but long ago.
3. **Matching.** Segments get names by the assignment of segments to
   prototypes with the least total squared distance (Hungarian algorithm),
   so every name is used at most once. With more than eight segments the
   prototypes repeat with a number ("Loyal 2"); of the segments matched to
   one prototype, the closest gets the plain name.

The names depend on the segments' standings only, not on their ids, so they
are stable when a model is refitted and the segments come out in another
order.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .backend import get_namespace, to_numpy
from .scaling import signed_log1p

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


#: A spread of the logged values below this share of their mean's size is rounding
#: noise (a constant column summed in floating point), not a spread to stand on.
_NOISE = 1e-12


def rfm_sums(columns: dict[str, Any], segment: Any, k: int) -> tuple[Any, Any, Any]:
    """Per-segment sums for step 1, in the namespace of ``segment``; they add up across blocks.

    Parameters
    ----------
    columns : dict of name -> array of shape (n,)
        Needs recency_days, frequency and monetary, in original units.
    segment : int array of shape (n,)
        Segment of each customer, in 0..k-1.

    Returns
    -------
    counts : int array of shape (k,)
    sums : float64 array of shape (k, 3)
        Sum of the signed log1p of recency, frequency and monetary.
    m2 : float64 array of shape (k, 3)
        Sum of squared deviations of those from the segment's mean (what
        the spread over all customers is merged from, without cancellation).
    """
    xp = get_namespace(segment)
    segment = segment.astype(xp.intp, copy=False)  # NumPy's bincount would cast it on every call
    counts = xp.bincount(segment, minlength=k)
    sums, m2 = [], []
    for name in RFM:
        t = signed_log1p(columns[name].astype(xp.float64, copy=False))
        s = xp.bincount(segment, weights=t, minlength=k)
        t -= (s / xp.maximum(counts, 1))[segment]
        t *= t
        sums.append(s)
        m2.append(xp.bincount(segment, weights=t, minlength=k))
    return counts, xp.stack(sums, axis=1), xp.stack(m2, axis=1)


def standings_from_sums(counts: np.ndarray, sums: np.ndarray, m2: np.ndarray) -> np.ndarray:
    """(k, 3) standings (step 1 above) from the sums of :func:`rfm_sums`, reduced over any blocks.

    A segment's standing is the z-score of its mean against all customers;
    the mean and spread over all customers are merged from the segments'
    (Chan et al.). An empty segment stands at the mean of 0; a constant
    column gives every segment standing 0.
    """
    counts = np.asarray(counts, dtype=np.float64)
    sums, m2 = np.asarray(sums, dtype=np.float64), np.asarray(m2, dtype=np.float64)
    n = max(counts.sum(), 1.0)
    means = sums / np.maximum(counts, 1)[:, None]
    mean = sums.sum(axis=0) / n
    spread = m2.sum(axis=0) + (counts[:, None] * (means - mean) ** 2).sum(axis=0)
    std = np.sqrt(spread / n)
    std[std <= _NOISE * np.maximum(np.abs(mean), 1.0)] = np.inf  # no spread: standing 0
    out = (means - mean) / std
    out[:, 0] *= -1  # fewer days since the last purchase is better
    return out


def standings(columns: dict[str, Any], segment: Any, k: int) -> np.ndarray:
    """(k, 3) standings of each segment on recency, frequency, monetary (step 1 above).

    ``columns`` and ``segment`` as for :func:`rfm_sums`, any namespace; the
    result is on the host.
    """
    return standings_from_sums(*(to_numpy(a) for a in rfm_sums(columns, segment, k)))


def name_segments(columns: dict[str, Any], segment: Any, k: int) -> list[str]:
    """Unique names for segments 0..k-1 (steps 1 to 3 above).

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
    distance = ((S[:, None, :] - P[None, :, :]) ** 2).sum(axis=2)  # (k, prototypes)
    cost = np.tile(distance, (1, rounds))
    # Later rounds cost slightly more, so the plain names are used first.
    cost += np.repeat(np.arange(rounds), len(names))[None, :] * 1e-6
    cols = min_cost_assignment(cost)
    # Copies of one prototype differ only by that penalty, so which of its segments got
    # the plain name was an exact tie, settled by rounding (and could differ between two
    # sums of the same numbers). It goes to the segment closest to the prototype.
    for p in range(len(names)):
        rows = [r for r, c in enumerate(cols) if c % len(names) == p]
        if len(rows) > 1:
            used = sorted(cols[r] for r in rows)
            for r, c in zip(sorted(rows, key=lambda r: (distance[r, p], r)), used):
                cols[r] = c
    return [labels[c] for c in cols]


def min_cost_assignment(cost: np.ndarray) -> list[int]:
    """Column of each row in the one-to-one assignment of least total cost (rows <= columns).

    The Hungarian algorithm with potentials, O(rows² × columns). It serves the
    few rows and columns of segment naming without importing SciPy, whose
    import alone cost half a second of every run.
    """
    n, m = cost.shape
    if n > m:
        raise ValueError(f"need rows <= columns, got {n} x {m}")
    # The search below ends only when some reduced cost reaches the minimum; a NaN
    # compares false with everything, so it would never end.
    if not np.isfinite(cost).all():
        raise ValueError("min_cost_assignment needs finite costs")
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
