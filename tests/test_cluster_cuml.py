"""The cuML backend's glue (issue 12, item 5): cuML gets gpuseg's tolerance in its own, absolute terms.

cuML (libcuml, libraft, libcuvs: over 1 GB) has not run for these tests; the
stand-in below records what gpuseg passes to ``cuml.KMeans``, and the ``gpu``
test runs real cuML where it is installed (it skips here: not a pass).
"""

from __future__ import annotations

import types

import numpy as np
import pytest

from gpuseg.cluster import cuml as cuml_backend
from gpuseg.cluster.fit import fit_kmeans
from gpuseg.cluster.lloyd import tolerance


class RecordingKMeans:
    """Stands in for cuml.KMeans: keeps its arguments, 'fits' every point to cluster 0 or 1."""

    made: list[dict] = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        RecordingKMeans.made.append(kwargs)

    def fit(self, X):
        self.labels_ = (X[:, 0] > X[:, 0].mean()).astype(np.int32)
        self.cluster_centers_ = np.stack([X[self.labels_ == c].mean(axis=0) for c in (0, 1)])
        self.inertia_, self.n_iter_ = 1.0, 3
        return self


@pytest.fixture
def fake_cuml(monkeypatch):
    RecordingKMeans.made = []
    modules = {"cuml": types.SimpleNamespace(KMeans=RecordingKMeans), "cupy": np}
    monkeypatch.setattr(cuml_backend, "_import", lambda name: modules[name])
    return RecordingKMeans


def test_cuml_tol_is_tol_times_the_mean_feature_variance():
    X = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 6.0], [2.0, 6.0]])  # variances 1 and 9
    assert cuml_backend.cuml_tol(X, 1e-4) == pytest.approx(5e-4)
    assert cuml_backend.cuml_tol(X, 0.0) == 0.0


def test_fit_cuml_passes_the_absolute_tolerance(fake_cuml, rng):
    X = rng.normal(size=(500, 3)) * np.array([1.0, 3.0, 10.0])  # mean variance about 36.7
    fit = cuml_backend.fit_cuml(X, 2, n_init=1, max_iter=50, tol=1e-4, seed=0)
    (kwargs,) = fake_cuml.made
    assert kwargs["tol"] == pytest.approx(1e-4 * X.var(axis=0).mean(), rel=1e-12)
    assert kwargs["tol"] != 1e-4
    assert {k: kwargs[k] for k in ("n_clusters", "max_iter", "random_state", "n_init")} == \
        {"n_clusters": 2, "max_iter": 50, "random_state": 0, "n_init": 1}
    assert fit.engine == "cuml" and fit.converged and fit.n_distinct == 2


def test_the_absolute_tolerance_stops_where_gpuseg_lloyd_stops(rng):
    # gpuseg's CPU fit stops when the summed squared centre shift is at most tolerance(X, tol);
    # cuML stops when the same shift is below the number it is given. Replay the CPU fit's
    # history under cuVS's rule with cuml_tol: the same iteration stops it.
    X = np.concatenate([rng.normal(0, 1, (300, 2)), rng.normal(4, 2, (300, 2))]) * np.array([1.0, 50.0])
    fit = fit_kmeans(X, 3, max_iter=300, tol=1e-3, random_state=0)
    assert fit.converged and fit.history[-1]["n_changed"] > 0  # stopped by the tolerance
    shifts = [h["center_shift"] for h in fit.history]
    limit = cuml_backend.cuml_tol(X, 1e-3)
    assert [s < limit for s in shifts] == [False] * (len(shifts) - 1) + [True]
    # Passed through unscaled, as before, 1e-3 would not have stopped cuML there.
    assert not any(s < 1e-3 for s in shifts)


@pytest.mark.gpu
def test_real_cuml_is_given_the_absolute_tolerance(cp, monkeypatch):
    cuml = pytest.importorskip("cuml")
    seen = []

    class Spy(cuml.KMeans):
        def __init__(self, **kwargs):
            seen.append(kwargs["tol"])
            super().__init__(**kwargs)
    monkeypatch.setattr(cuml, "KMeans", Spy)
    X = cp.asarray(np.random.default_rng(3).normal(size=(2000, 3)) * np.array([1.0, 3.0, 10.0]))
    fit = cuml_backend.fit_cuml(X, 4, n_init=1, max_iter=100, tol=1e-4, seed=0)
    assert seen == [pytest.approx(tolerance(X, 1e-4))]
    assert fit.engine == "cuml" and fit.labels.shape == (2000,)
