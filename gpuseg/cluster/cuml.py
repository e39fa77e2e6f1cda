"""The cuML backend: ``cuml.KMeans`` fitted on the scaled features on the GPU.

Written against cuML's documented API (``cuml.cluster.KMeans``: n_clusters,
max_iter, tol, random_state, init, n_init, output_type; fitted
``cluster_centers_``, ``labels_``, ``inertia_``, ``n_iter_``). cuML is
imported only when this backend runs, through :mod:`gpuseg.backend`.
"""

from __future__ import annotations

from typing import Any

from ..backend import _import
from .fit import KMeansFit


def fit_cuml(X: Any, n_clusters: int, *, n_init: int, max_iter: int, tol: float, seed: int) -> KMeansFit:
    """Fit ``cuml.KMeans`` (k-means|| seeding) on CuPy array ``X`` (n, d).

    ``tol`` is passed through as cuML's tolerance on the centre shift; cuML
    does not report convergence, so ``converged`` means it stopped before
    ``max_iter``.
    """
    cuml = _import("cuml")
    cp = _import("cupy")
    km = cuml.KMeans(n_clusters=n_clusters, max_iter=max_iter, tol=tol, random_state=seed,
                     init="scalable-k-means++", n_init=n_init, output_type="cupy")
    km.fit(X)
    labels = cp.asarray(km.labels_).astype(cp.int32)
    centers = cp.asarray(km.cluster_centers_, dtype=X.dtype)
    n_iter = int(km.n_iter_)
    n_distinct = int(cp.count_nonzero(cp.bincount(labels, minlength=n_clusters)))
    return KMeansFit(centers, labels, float(km.inertia_), n_iter, n_iter < max_iter, [], n_distinct,
                     engine="cuml", engine_note=None)
