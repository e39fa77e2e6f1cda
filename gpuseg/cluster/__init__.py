"""K-means for gpuseg: Lloyd's algorithm written once, behind one Step contract.

========================  =====================================================
``contract``              :class:`Partials` and the :class:`Step` protocol
``lloyd``                 the driver: iterate, relocate empty clusters, converge
``steps``                 the array-generic step (NumPy threads, CuPy), streaming
``host``                  the CPU step: the generic step's arithmetic, laid out for NumPy
``fused``, ``kernels/``   the fused CUDA step and its kernels
``engine``                which step runs, chosen once, with every fallback's reason
``init``                  k-means++ seeding
``fit``                   a complete fit (:func:`fit_kmeans`) and :func:`nearest`
``cuml``                  cuML's ``KMeans`` as a backend
``estimator``             :class:`gpuseg.KMeans` (imports scikit-learn)
``metrics``               silhouette, Calinski-Harabasz, Davies-Bouldin, ARI
========================  =====================================================

Imports flow one way: ``contract`` <- ``steps`` <- ``host``, ``fused`` <- ``engine`` <-
``fit`` <- ``cuml``, ``estimator``; ``lloyd`` and ``init`` sit beside them.
Nothing here imports CuPy, cuML or scikit-learn until it is used.
"""

from .contract import Partials, Step
from .fit import KMeansFit, fit_kmeans, nearest

__all__ = ["KMeansFit", "Partials", "Step", "fit_kmeans", "nearest"]
