"""``gpuseg.KMeans``: the scikit-learn-compatible face of :func:`~gpuseg.cluster.fit.fit_kmeans`.

Kept apart from the numeric core so that the pipeline and the CLI do not
pay for importing scikit-learn.
"""

from __future__ import annotations

import numbers
import warnings
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, ClusterMixin, TransformerMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted

from ..backend import get_namespace
from .fit import fit_kmeans, nearest


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}.")


class KMeans(ClassNamePrefixFeaturesOutMixin, ClusterMixin, TransformerMixin, BaseEstimator):
    """K-means clustering on NumPy or CuPy arrays, scikit-learn compatible.

    The arrays' namespace picks the device: NumPy input runs the threaded
    CPU Lloyd step, CuPy input runs on the GPU. Fitted attributes live in the
    same namespace as the input. With the same ``random_state`` and data it
    gives scikit-learn's ``KMeans(algorithm="lloyd")`` result: the seeding
    draws and the iteration are the same.

    Parameters
    ----------
    n_clusters : int, default=8
    init : {"k-means++", "random"}, callable or array of shape (n_clusters, n_features)
        A callable is called as scikit-learn calls it, ``init(X, n_clusters,
        random_state=random_state)`` on the centred ``X``, once per run.
    n_init : "auto" or int, default="auto"
        Runs with different seeds; "auto" is 1 for k-means++ and arrays, 10
        for "random" and callables. The run with the lowest inertia is kept.
    max_iter : int, default=300
    tol : float, default=1e-4
        Relative tolerance: convergence when the squared centre shift is at
        most ``tol`` times the mean feature variance.
    random_state : int, RandomState or None
    copy_x : bool, default=True
        Centre a copy of X (True) or X itself, restored afterwards (False).
    chunk_size : int or None
        Rows per block of the Lloyd step; None picks one for the device.
    n_threads : int or None
        CPU threads for NumPy input; None uses every core.
    algorithm : {"lloyd", "elkan"}, default="lloyd"
        Taken for scikit-learn's signature: both run Lloyd's iteration, whose result
        Elkan's bounds reproduce.
    verbose : int, default=0
        Above 0, each iteration's inertia is printed after the fit.

    Attributes
    ----------
    cluster_centers_ : array of shape (n_clusters, n_features)
    labels_ : int32 array of shape (n_samples,)
    inertia_ : float
        Summed in float64 for float32 data too (scikit-learn sums float32 data in float32,
        so the two may differ in the sixth or seventh digit).
    n_iter_ : int
    converged_ : bool
    history_ : list of dict
        Per-iteration ``inertia``, ``center_shift``, ``n_changed``, ``seconds``.
    n_features_in_ : int
    feature_names_in_ : array of str, shape (n_features_in_,)
        The columns' names, when ``X`` was a DataFrame whose column names are all text.
    """

    def __init__(self, n_clusters: int = 8, *, init: str | Any = "k-means++",
                 n_init: str | int = "auto", max_iter: int = 300, tol: float = 1e-4,
                 verbose: int = 0, random_state: int | np.random.RandomState | None = None,
                 copy_x: bool = True, algorithm: str = "lloyd", chunk_size: int | None = None,
                 n_threads: int | None = None):
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.verbose = verbose
        self.random_state = random_state
        self.copy_x = copy_x
        self.algorithm = algorithm
        self.chunk_size = chunk_size
        self.n_threads = n_threads

    # validation, once -------------------------------------------------------
    def _check_params(self) -> None:
        _check_int("n_clusters", self.n_clusters, 1)
        _check_int("max_iter", self.max_iter, 1)
        if not isinstance(self.tol, numbers.Real) or not self.tol >= 0:
            raise ValueError(f"tol must be a float >= 0, got {self.tol!r}.")
        if self.n_init != "auto":
            _check_int("n_init", self.n_init, 1)
        if self.chunk_size is not None:
            _check_int("chunk_size", self.chunk_size, 1)
        if self.n_threads is not None:
            _check_int("n_threads", self.n_threads, 1)
        if isinstance(self.init, str) and self.init not in ("k-means++", "random"):
            raise ValueError(f"init must be 'k-means++', 'random', a callable or an array, got {self.init!r}.")
        if not isinstance(self.copy_x, (bool, np.bool_)):
            raise ValueError(f"copy_x must be a bool, got {self.copy_x!r}.")
        if self.algorithm not in ("lloyd", "elkan"):
            raise ValueError(f"algorithm must be 'lloyd' or 'elkan', got {self.algorithm!r}.")
        _check_int("verbose", self.verbose, 0)

    def _validate_data(self, X: Any, reset: bool) -> Any:
        # scikit-learn's own wording for each refusal, which its estimator checks look for.
        if hasattr(X, "tocsr"):  # SciPy and CuPy sparse matrices and arrays
            raise TypeError("Sparse data was passed for KMeans, but dense data is required: sparse input is not "
                            "supported. Use X.toarray() to convert to a dense array.")
        self._check_feature_names(X, reset)
        if hasattr(X, "to_numpy") and hasattr(X, "columns"):  # pandas: nullable columns hold pd.NA, not NaN
            f32 = len(X.columns) and all(str(t) == "float32" for t in X.dtypes)  # stays float32, as in scikit-learn
            try:
                X = X.to_numpy(dtype=np.float32 if f32 else np.float64, na_value=np.nan)
            except (TypeError, ValueError):
                X = X.to_numpy()
        xp = get_namespace(X)
        X = xp.asarray(X)
        if X.dtype.kind == "c":
            raise ValueError("Complex data not supported.")
        if X.dtype not in (xp.float32, xp.float64):
            X = X.astype(xp.float64)
        if X.ndim != 2:
            raise ValueError(f"Expected a 2D array, got an array of shape {X.shape}. Reshape your data either "
                             "using array.reshape(-1, 1) if your data has a single feature or "
                             "array.reshape(1, -1) if it contains a single sample.")
        if X.shape[0] == 0:
            raise ValueError(f"Found array with 0 sample(s) (shape={X.shape}) while a minimum of 1 is required.")
        if X.shape[1] == 0:
            raise ValueError(f"Found array with 0 feature(s) (shape={X.shape}) while a minimum of 1 is required.")
        if not bool(xp.isfinite(X).all()):
            raise ValueError("Input X contains NaN or infinity.")
        if reset:
            self.n_features_in_ = X.shape[1]
        elif X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but KMeans is expecting "
                             f"{self.n_features_in_} features as input.")
        return xp.ascontiguousarray(X)

    def _check_feature_names(self, X: Any, reset: bool) -> None:
        """Record a DataFrame's column names (``feature_names_in_``) when fitting, and check them
        when predicting, as scikit-learn does: columns in another order would otherwise be
        measured against the wrong coordinates of the centres, without a word."""
        columns = getattr(X, "columns", None)
        names = None
        if columns is not None and len(columns) and all(isinstance(c, str) for c in columns):
            names = np.asarray(list(columns), dtype=object)
        if reset:
            if names is not None:
                self.feature_names_in_ = names
            elif hasattr(self, "feature_names_in_"):
                del self.feature_names_in_
            return
        fitted = getattr(self, "feature_names_in_", None)
        if fitted is None and names is not None:
            warnings.warn("X has feature names, but KMeans was fitted without feature names", UserWarning,
                          stacklevel=4)
        elif fitted is not None and names is None:
            warnings.warn("X does not have valid feature names, but KMeans was fitted with feature names",
                          UserWarning, stacklevel=4)
        elif fitted is not None and (len(fitted) != len(names) or not (fitted == names).all()):
            unseen = [n for n in names if n not in set(fitted)]
            missing = [n for n in fitted if n not in set(names)]
            detail = "".join(f"\n{what}:\n- " + "\n- ".join(map(str, items[:5]))
                             for what, items in (("Feature names unseen at fit time", unseen),
                                                 ("Feature names seen at fit time, yet now missing", missing))
                             if items)
            raise ValueError("The feature names should match those that were passed during fit."
                             + (detail or "\nFeature names must be in the same order as they were in fit.\n"))

    @property
    def _n_features_out(self) -> int:
        """Transform's columns (one distance per centre), for ``get_feature_names_out``."""
        return self.cluster_centers_.shape[0]

    def _n_init(self) -> int:
        if self.n_init == "auto":  # scikit-learn's: 10 runs for random and callable inits
            return 10 if callable(self.init) or isinstance(self.init, str) and self.init == "random" else 1
        if not isinstance(self.init, str) and not callable(self.init) and self.n_init != 1:
            warnings.warn(f"Explicit initial center position passed: performing only one init "
                          f"in KMeans instead of n_init={self.n_init}.", RuntimeWarning, stacklevel=3)
            return 1
        return int(self.n_init)

    # fitting ------------------------------------------------------------------
    def fit(self, X: Any, y: Any = None) -> "KMeans":
        """Compute k-means clustering of ``X`` (n_samples, n_features)."""
        self._check_params()
        X = self._validate_data(X, reset=True)
        xp = get_namespace(X)
        n, d = X.shape
        if n < self.n_clusters:
            raise ValueError(f"n_samples={n} should be >= n_clusters={self.n_clusters}.")
        init = self.init
        if not isinstance(init, str) and not callable(init):
            init = xp.asarray(init, dtype=X.dtype)
            if init.shape != (self.n_clusters, d):
                raise ValueError(f"The shape of the initial centers {tuple(init.shape)} does not match "
                                 f"the number of clusters {self.n_clusters} and features {d}.")
            if not bool(xp.isfinite(init).all()):
                raise ValueError("Input init contains NaN or infinity.")
        fit = fit_kmeans(X, self.n_clusters, init=init, n_init=self._n_init(), max_iter=self.max_iter,
                         tol=self.tol, random_state=self.random_state, copy_x=self.copy_x,
                         chunk_size=self.chunk_size, n_threads=self.n_threads)
        if fit.n_distinct < self.n_clusters:
            warnings.warn(f"Number of distinct clusters ({fit.n_distinct}) found smaller than "
                          f"n_clusters ({self.n_clusters}). Possibly due to duplicate points in X.",
                          ConvergenceWarning, stacklevel=2)
        # No warning when max_iter ends the fit (scikit-learn gives none): converged_ says it.
        if self.verbose:
            print("Initialization complete")
            for i, step in enumerate(fit.history):
                print(f"Iteration {i}, inertia {step['inertia']}.")
            print(f"Converged at iteration {fit.n_iter - 1}." if fit.converged else
                  f"Stopped at max_iter={self.max_iter}.")
        self.cluster_centers_ = fit.centers
        self.labels_ = fit.labels
        self.inertia_ = fit.inertia
        self.n_iter_ = fit.n_iter
        self.converged_ = fit.converged
        self.history_ = fit.history
        return self

    def _assign(self, X: Any) -> tuple[Any, Any]:
        check_is_fitted(self)
        X = self._validate_data(X, reset=False)
        return nearest(X, self.cluster_centers_, chunk_size=self.chunk_size, n_threads=self.n_threads)

    def predict(self, X: Any) -> Any:
        """Index of the nearest centre for each row of ``X`` (int32)."""
        return self._assign(X)[0]

    def transform(self, X: Any) -> Any:
        """Euclidean distances of ``X`` to every centre, shape (n_samples, n_clusters)."""
        check_is_fitted(self)
        X = self._validate_data(X, reset=False)
        xp = get_namespace(X)
        C = xp.asarray(self.cluster_centers_, dtype=xp.float64)
        Xf = X.astype(xp.float64)
        d = (Xf * Xf).sum(axis=1)[:, None] - 2.0 * (Xf @ C.T) + (C * C).sum(axis=1)[None, :]
        return xp.sqrt(xp.maximum(d, 0)).astype(X.dtype, copy=False)  # in X's dtype, as scikit-learn gives it

    def score(self, X: Any, y: Any = None) -> float:
        """Opposite of the inertia of ``X`` against the fitted centres."""
        return -float(self._assign(X)[1].sum())
