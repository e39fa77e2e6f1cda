"""`gpuseg.cluster.metrics` against scikit-learn's own scores, on real data, on NumPy and (marked gpu) CuPy.

The data are scikit-learn's bundled iris and wine measurements (standardised), labelled by the
species and by k-means at several k, plus the cases where the definitions need care: a point
alone in its cluster, a cluster of identical points, a label with no point, a silhouette sample.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.datasets import load_iris, load_wine
from sklearn.metrics import (
    adjusted_rand_score,
    calinski_harabasz_score,
    davies_bouldin_score,
    silhouette_score,
)
from sklearn.preprocessing import StandardScaler

from gpuseg.backend import to_numpy
from gpuseg.cluster.metrics import (
    adjusted_rand,
    calinski_harabasz,
    davies_bouldin,
    silhouette,
)

RTOL = 1e-9


def _labelled():
    """(name, X, labels, k): species labels and k-means labels for k = 2..6 on iris and wine."""
    cases = []
    for name, load in (("iris", load_iris), ("wine", load_wine)):
        data = load()
        X = StandardScaler().fit_transform(data.data)
        cases.append((f"{name}-species", X, data.target, int(data.target.max()) + 1))
        for k in (2, 4, 6):
            labels = KMeans(k, n_init=1, random_state=0).fit_predict(X)
            cases.append((f"{name}-k{k}", X, labels, k))
    return cases


CASES = _labelled()
IDS = [c[0] for c in CASES]


def on(xp, X, labels):
    return xp.asarray(X), xp.asarray(labels)


@pytest.mark.parametrize("name, X, labels, k", CASES, ids=IDS)
def test_silhouette_on_every_row_equals_sklearn(xp, name, X, labels, k):
    ours = silhouette(*on(xp, X, labels), k, sample_size=None, block=64)  # blocks that split the rows unevenly
    assert ours == pytest.approx(silhouette_score(X, labels), rel=RTOL)


@pytest.mark.parametrize("sample_size, seed", [(50, 0), (97, 3)])
def test_silhouette_scores_the_rows_sklearn_samples(xp, sample_size, seed):
    _, X, labels, k = CASES[IDS.index("wine-k4")]
    ours = silhouette(*on(xp, X, labels), k, sample_size=sample_size, random_state=seed)
    theirs = silhouette_score(X, labels, sample_size=sample_size, random_state=seed)
    assert ours == pytest.approx(theirs, rel=RTOL)
    # A different sample gives a different score, so the check above pins the rows scored.
    assert ours != pytest.approx(silhouette_score(X, labels, sample_size=sample_size, random_state=seed + 1),
                                 rel=RTOL)


@pytest.mark.parametrize("name, X, labels, k", CASES, ids=IDS)
def test_calinski_harabasz_and_davies_bouldin_equal_sklearn(xp, name, X, labels, k):
    Xd, ld = on(xp, X, labels)
    assert calinski_harabasz(Xd, ld, k) == pytest.approx(calinski_harabasz_score(X, labels), rel=RTOL)
    assert davies_bouldin(Xd, ld, k) == pytest.approx(davies_bouldin_score(X, labels), rel=RTOL)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float32_data_is_scored_in_float64(xp, dtype):
    _, X, labels, k = CASES[IDS.index("iris-k4")]
    X = X.astype(dtype)
    Xd, ld = on(xp, X, labels)
    X64 = X.astype(np.float64)
    assert silhouette(Xd, ld, k, sample_size=None) == pytest.approx(silhouette_score(X64, labels), rel=RTOL)
    assert calinski_harabasz(Xd, ld, k) == pytest.approx(calinski_harabasz_score(X64, labels), rel=RTOL)
    assert davies_bouldin(Xd, ld, k) == pytest.approx(davies_bouldin_score(X64, labels), rel=RTOL)


def test_a_singleton_an_empty_label_and_identical_points(xp):
    """A point alone scores 0 in the silhouette; a label without points is not a cluster; a cluster of
    identical points has no spread."""
    _, X, labels, _ = CASES[IDS.index("iris-k4")]
    X, labels = X.copy(), labels.copy()
    labels[7] = 5            # alone in cluster 5; cluster 4 stays empty (k = 6)
    X[labels == 0] = X[labels == 0][0]  # cluster 0: identical points
    Xd, ld = on(xp, X, labels)
    assert silhouette(Xd, ld, 6, sample_size=None) == pytest.approx(silhouette_score(X, labels), rel=RTOL)
    assert calinski_harabasz(Xd, ld, 6) == pytest.approx(calinski_harabasz_score(X, labels), rel=RTOL)
    assert davies_bouldin(Xd, ld, 6) == pytest.approx(davies_bouldin_score(X, labels), rel=RTOL)


@pytest.mark.parametrize("k_a, k_b", [(2, 3), (4, 4), (6, 2)])
def test_adjusted_rand_equals_sklearn(xp, k_a, k_b):
    _, X, _, _ = CASES[IDS.index("wine-species")]
    a = KMeans(k_a, n_init=1, random_state=1).fit_predict(X)
    b = KMeans(k_b, n_init=1, random_state=2).fit_predict(X)
    ours = adjusted_rand(xp.asarray(a), xp.asarray(b))
    assert ours == pytest.approx(adjusted_rand_score(a, b), rel=RTOL, abs=1e-12)
    # Relabelling does not change it; the same partition scores 1.
    assert adjusted_rand(xp.asarray((a + 1) % k_a), xp.asarray(b)) == pytest.approx(ours, rel=RTOL, abs=1e-12)
    assert adjusted_rand(xp.asarray(a), xp.asarray((a + 1) % k_a)) == 1.0


def test_metrics_stay_on_the_device_of_their_input(xp):
    _, X, labels, k = CASES[IDS.index("iris-species")]
    Xd, ld = on(xp, X, labels)
    # Floats come back, and the input is left as it was.
    before = to_numpy(Xd).copy()
    values = [silhouette(Xd, ld, k, sample_size=None), calinski_harabasz(Xd, ld, k), davies_bouldin(Xd, ld, k),
              adjusted_rand(ld, ld)]
    assert all(type(v) is float for v in values)
    np.testing.assert_array_equal(to_numpy(Xd), before)
