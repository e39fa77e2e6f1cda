"""Cluster quality metrics, written against the array namespace (NumPy or CuPy).

Definitions follow scikit-learn's (``silhouette_score``, ``calinski_harabasz_score``,
``davies_bouldin_score``, ``adjusted_rand_score``), and the tests hold them
to it; here they run on the device that holds the data.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import get_namespace


def _cluster_means(X: Any, labels: Any, k: int) -> tuple[Any, Any]:
    xp = get_namespace(X)
    labels = labels.astype(xp.intp)
    counts = xp.bincount(labels, minlength=k).astype(xp.float64)
    sums = xp.stack([xp.bincount(labels, weights=X[:, f], minlength=k) for f in range(X.shape[1])], axis=1)
    return sums / xp.maximum(counts, 1)[:, None], counts


def silhouette(X: Any, labels: Any, k: int, sample_size: int | None = 5000,
               random_state: int = 0, block: int = 1024) -> float:
    """Mean silhouette coefficient, on a random sample of at most ``sample_size`` rows.

    The sample is ``RandomState(random_state).permutation(n)[:sample_size]``,
    as scikit-learn draws it, so both score the same rows. Distances are
    computed in row blocks of the sample (memory ``block × sample_size``).
    A point alone in its cluster scores 0.
    """
    xp = get_namespace(X)
    n = X.shape[0]
    if sample_size is not None and sample_size < n:
        idx = np.random.RandomState(random_state).permutation(n)[:sample_size]
        X, labels = X[xp.asarray(idx)], labels[xp.asarray(idx)]
    X = X.astype(xp.float64)
    labels = labels.astype(xp.intp)
    m = X.shape[0]
    onehot = (labels[:, None] == xp.arange(k)[None, :]).astype(xp.float64)  # (m, k)
    counts = onehot.sum(axis=0)
    sq = (X * X).sum(axis=1)
    scores = xp.empty(m, dtype=xp.float64)
    for s in range(0, m, block):
        e = min(s + block, m)
        d2 = sq[s:e, None] - 2.0 * (X[s:e] @ X.T) + sq[None, :]
        D = xp.sqrt(xp.maximum(d2, 0))
        D[xp.arange(e - s), xp.arange(s, e)] = 0.0  # exact zero to itself
        per_cluster = D @ onehot  # (b, k): sum of distances to each cluster
        own = labels[s:e]
        own_count = counts[own]
        a = per_cluster[xp.arange(e - s), own] / xp.maximum(own_count - 1, 1)
        mean_other = per_cluster / xp.maximum(counts, 1)[None, :]
        mean_other[xp.arange(e - s), own] = xp.inf
        mean_other[:, counts == 0] = xp.inf
        b = mean_other.min(axis=1)
        sil = (b - a) / xp.maximum(a, b)
        scores[s:e] = xp.where(own_count > 1, xp.nan_to_num(sil), 0.0)
    return float(scores.mean())


def calinski_harabasz(X: Any, labels: Any, k: int) -> float:
    """Between-cluster over within-cluster dispersion, scaled by their degrees of freedom."""
    xp = get_namespace(X)
    X = X.astype(xp.float64)
    n = X.shape[0]
    means, counts = _cluster_means(X, labels, k)
    overall = X.mean(axis=0)
    extra = float((counts * ((means - overall) ** 2).sum(axis=1)).sum())
    diff = X - means[labels.astype(xp.intp)]
    intra = float((diff * diff).sum())
    n_labels = int((counts > 0).sum())
    if intra == 0:
        return 1.0
    return extra * (n - n_labels) / (intra * (n_labels - 1))


def davies_bouldin(X: Any, labels: Any, k: int) -> float:
    """Mean over clusters of the worst ratio of within-cluster spread to centroid separation."""
    xp = get_namespace(X)
    X = X.astype(xp.float64)
    means, counts = _cluster_means(X, labels, k)
    lab = labels.astype(xp.intp)
    dist = xp.sqrt(((X - means[lab]) ** 2).sum(axis=1))
    spread = xp.bincount(lab, weights=dist, minlength=k) / xp.maximum(counts, 1)
    present = counts > 0
    means, spread = means[present], spread[present]
    c2 = (means * means).sum(axis=1)
    sep = xp.sqrt(xp.maximum(c2[:, None] - 2 * means @ means.T + c2[None, :], 0))
    if float(spread.max()) == 0 or float(sep.max()) == 0:
        return 0.0
    sep[sep == 0] = xp.inf
    ratio = (spread[:, None] + spread[None, :]) / sep
    ratio[xp.arange(ratio.shape[0]), xp.arange(ratio.shape[0])] = -xp.inf
    return float(ratio.max(axis=1).mean())


def adjusted_rand(a: Any, b: Any) -> float:
    """Adjusted Rand index of two labelings (Hubert & Arabie), from their contingency table."""
    xp = get_namespace(a)
    a = a.astype(xp.int64)
    b = b.astype(xp.int64)
    n = a.shape[0]
    ka, kb = int(a.max()) + 1, int(b.max()) + 1
    table = xp.bincount(a * kb + b, minlength=ka * kb).astype(xp.float64)

    def pairs(x: Any) -> float:
        return float((x * (x - 1) / 2).sum())

    sum_comb = pairs(table)
    sum_a = pairs(xp.bincount(a, minlength=ka).astype(xp.float64))
    sum_b = pairs(xp.bincount(b, minlength=kb).astype(xp.float64))
    total = n * (n - 1) / 2
    expected = sum_a * sum_b / total if total else 0.0
    maximum = (sum_a + sum_b) / 2
    if maximum == expected:
        return 1.0
    return (sum_comb - expected) / (maximum - expected)
