"""The cuML backend: ``cuml.KMeans`` fitted on the scaled features on the GPU.

Written against cuML 26.10's ``cuml.cluster.KMeans`` (n_clusters, max_iter,
tol, random_state, init, n_init, output_type; fitted ``cluster_centers_``,
``labels_``, ``inertia_``, ``n_iter_``). cuML is imported only when this
backend runs, through :mod:`gpuseg.backend`.

Tolerance: cuML hands ``tol`` unchanged to cuVS (``params.tol = kmeans.tol``
in ``cuml/cluster/kmeans.pyx``), whose Lloyd loop stops when the summed
squared centre shift is below it, an absolute limit
(``check_convergence`` in ``cpp/src/cluster/detail/kmeans_common.cuh``:
``norm_err < tol``). gpuseg's ``tol`` is relative, as scikit-learn's: the
limit is ``tol`` × the mean feature variance (:func:`~.lloyd.tolerance`). So
cuML gets that product. The same cuVS check also stops once an iteration
lowers the inertia by less than the fraction ``tol`` (``cost / prior > 1 - tol``),
which scikit-learn and gpuseg's own Lloyd do not do; on gpuseg's standardised
features the mean variance is about 1, so that second rule keeps its meaning.
"""

from __future__ import annotations

from typing import Any

from ..backend import _import
from .fit import KMeansFit
from .lloyd import tolerance


def cuml_tol(X: Any, tol: float) -> float:
    """cuML's absolute tolerance for gpuseg's relative ``tol`` on ``X`` (n, d).

    ``tol`` × the mean feature variance, the limit gpuseg's own Lloyd and
    scikit-learn put on the summed squared centre shift.
    """
    return tolerance(X, tol)


def fit_cuml(X: Any, n_clusters: int, *, n_init: int, max_iter: int, tol: float, seed: int) -> KMeansFit:
    """Fit ``cuml.KMeans`` (k-means|| seeding) on CuPy array ``X`` (n, d).

    ``tol`` is relative, as everywhere in gpuseg; cuML is given its absolute
    equivalent (:func:`cuml_tol`). cuML does not report convergence, so
    ``converged`` means it stopped before ``max_iter``.
    """
    cuml = _import("cuml")
    cp = _import("cupy")
    km = cuml.KMeans(n_clusters=n_clusters, max_iter=max_iter, tol=cuml_tol(X, tol), random_state=seed,
                     init="scalable-k-means++", n_init=n_init, output_type="cupy")
    km.fit(X)
    labels = cp.asarray(km.labels_).astype(cp.int32)
    centers = cp.asarray(km.cluster_centers_, dtype=X.dtype)
    n_iter = int(km.n_iter_)
    n_distinct = int(cp.count_nonzero(cp.bincount(labels, minlength=n_clusters)))
    return KMeansFit(centers, labels, float(km.inertia_), n_iter, n_iter < max_iter, [], n_distinct,
                     engine="cuml", engine_note=None)
