"""A complete k-means fit and nearest-centre assignment: the engine behind
:class:`gpuseg.KMeans`, the pipeline, choose-k and scoring."""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backend import get_namespace, to_numpy
from .engine import Engine, make_step
from .host import centre_feature_major
from .init import check_random_state, kmeans_plusplus
from .lloyd import LloydResult, lloyd, tolerance


@dataclass
class KMeansFit:
    """The best of ``n_init`` Lloyd runs, in the input's namespace and units.

    ``engine`` says which step ran (``generic``, ``fused``, ``streamed-fused``,
    ``streamed-generic``, ``cuml`` or ``dask``) and ``engine_note`` why, when it
    is not the first choice.
    """

    centers: Any
    labels: Any
    inertia: float
    n_iter: int
    converged: bool
    history: list[dict[str, float]]
    n_distinct: int
    engine: str = "generic"
    engine_note: str | None = None


def fit_kmeans(X: Any, n_clusters: int, *, init: str | Any = "k-means++", n_init: int = 1,
               max_iter: int = 300, tol: float = 1e-4, random_state: Any = None, copy_x: bool = True,
               chunk_size: int | None = None, n_threads: int | None = None, engine: str = "auto",
               stream_rows: int | None = None, device: Any = None) -> KMeansFit:
    """Fit k-means to validated data.

    Assumes ``X`` is a C- or F-contiguous, finite float array of shape (n, d) with
    n >= n_clusters, and ``init`` (when an array) of shape (n_clusters, d):
    callers validate. ``tol`` is relative (see :func:`~gpuseg.cluster.lloyd.tolerance`).

    ``engine``: ``auto`` (the fused CUDA step for supported CuPy input, else
    the array-generic step), ``generic``, ``fused``, or ``streamed`` (a host
    array streamed to ``device``, default CuPy, in blocks of ``stream_rows``
    rows each iteration; k-means++ then seeds from a sample of that many rows).
    """
    xp = get_namespace(X)
    random_state = check_random_state(random_state)
    init_array = None if isinstance(init, str) or callable(init) else xp.asarray(init, dtype=X.dtype)
    # Centre the data for accurate distances, as scikit-learn does.
    X_in = X
    X, mean, restore = _centred(X, copy_x, feature_major=xp is np and engine in ("auto", "generic"))
    best: LloydResult | None = None
    try:
        with ExitStack() as stack:
            eng = make_step(X, n_clusters, engine, stack, chunk_size=chunk_size, n_threads=n_threads,
                            stream_rows=stream_rows, device=device)
            # After make_step, which pins BLAS to one thread on the host: a threaded dot here
            # would leave OpenBLAS's idle threads spinning (~0.1 s) beside the step's own.
            abs_tol = tolerance(X, tol, centered=True)
            step = eng.step
            for _ in range(n_init):
                if init_array is not None:
                    centers = init_array - mean
                elif callable(init):  # scikit-learn's contract: init(X, k, random_state) on the centred X
                    centers = xp.asarray(init(X, n_clusters, random_state=random_state), dtype=X.dtype)
                    if centers.shape != (n_clusters, X.shape[1]):
                        raise ValueError(f"The shape of the initial centers {tuple(centers.shape)} does not match "
                                         f"the number of clusters {n_clusters} and features {X.shape[1]}.")
                elif init == "k-means++":
                    centers = _seed(eng, n_clusters, random_state, n_threads)
                else:  # random rows, drawn as scikit-learn's init="random" draws them (unit weights)
                    weight = np.ones(step.count(), dtype=X.dtype)
                    rows = random_state.choice(step.count(), size=n_clusters, replace=False, p=weight / weight.sum())
                    centers = step.get_subset(rows).copy()
                run = lloyd(step, step.xp.asarray(centers), max_iter=max_iter, tol=abs_tol)
                if best is None or (run.inertia < best.inertia
                                    and not _same_clustering(run.labels, best.labels)):
                    best = run
            name, note = step.name, eng.note
            del step, eng
    finally:
        if restore:
            X_in += mean
    assert best is not None
    lxp = get_namespace(best.labels)
    n_distinct = int(lxp.count_nonzero(lxp.bincount(best.labels, minlength=n_clusters)))
    centers = best.centers + mean.astype(best.centers.dtype)
    return KMeansFit(centers, best.labels, best.inertia, best.n_iter, best.converged, best.history,
                     n_distinct, name, note)


def _seed(eng: Engine, k: int, random_state: np.random.RandomState, n_threads: int | None = None) -> Any:
    """k-means++ seeds from the step's points, or from a random sample of
    ``eng.seed_rows`` of them (a streamed step seeds on the device)."""
    step = eng.step
    n = step.count()
    rows = None
    if eng.seed_rows is not None and n > eng.seed_rows:
        rows = np.sort(random_state.choice(n, size=eng.seed_rows, replace=False))
    on = eng.seed_xp if eng.seed_xp is not None else step.xp
    centers = kmeans_plusplus(on.asarray(step.get_subset(rows)), k, random_state, n_threads=n_threads)
    if on is step.xp:
        return centers
    return to_numpy(centers) if step.xp is np else step.xp.asarray(centers)


def nearest(X: Any, centers: Any, chunk_size: int | None = None, n_threads: int | None = None,
            engine: str = "auto", stream_rows: int | None = None, device: Any = None) -> tuple[Any, Any]:
    """Nearest centre of each row of ``X`` and the squared distance to it.

    Parameters
    ----------
    X : array of shape (n, d)
    centers : array of shape (k, d), same namespace as X
    engine : str
        As for :func:`fit_kmeans`.

    Returns
    -------
    labels : int32 array of shape (n,)
    sqdist : float64 array of shape (n,)
    """
    xp = get_namespace(X)
    centers = xp.asarray(centers, dtype=X.dtype)
    with ExitStack() as stack:
        step = make_step(X, centers.shape[0], engine, stack, chunk_size=chunk_size, n_threads=n_threads,
                         stream_rows=stream_rows, device=device).step
        return step.assign(centers)


def _centred(X: Any, copy_x: bool, feature_major: bool) -> tuple[Any, Any, bool]:
    """``X - mean``, ``mean`` (``X.mean(axis=0)``), and whether the first is ``X``
    itself, centred in place (to restore afterwards).

    With ``copy_x`` the copy keeps ``X``'s layout, except that for the host
    step (``feature_major``) a C-ordered ``X`` is copied into F order (see
    :func:`~gpuseg.cluster.host.centre_feature_major`): that step reads the
    points column by column, and X·Cᵀ over contiguous columns is a GEMM about
    twice as fast as over rows at d < 10. Without ``copy_x``, ``X`` is centred
    in place in whatever layout it has: no copy, as asked, so an F-ordered
    ``X`` is the fast one there.
    """
    if copy_x and feature_major and X.flags.c_contiguous and not X.flags.f_contiguous:
        return *centre_feature_major(X), False  # NumPy's mean, sooner
    mean = X.mean(axis=0)
    if copy_x:
        return X - mean, mean, False
    X -= mean
    return X, mean, True


def _same_clustering(a: Any, b: Any) -> bool:
    """True when two labelings are equal up to a permutation of the labels."""
    a, b = to_numpy(a), to_numpy(b)
    pairs = np.unique(np.stack([a, b]), axis=1)
    return pairs.shape[1] == np.unique(a).shape[0] == np.unique(b).shape[0]
