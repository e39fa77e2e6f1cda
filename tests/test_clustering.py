"""K-means: hand-worked cases, scikit-learn parity, the step/driver split, the estimator API."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.cluster import KMeans as SKKMeans
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import adjusted_rand_score

from gpuseg.backend import to_numpy
from gpuseg import KMeans
from gpuseg.cluster.contract import Partials
from gpuseg.cluster.fit import fit_kmeans, nearest
from gpuseg.cluster.init import kmeans_plusplus
from gpuseg.cluster.lloyd import lloyd, tolerance
from gpuseg.cluster import steps as steps_module
from gpuseg.cluster.steps import ChunkedStep, lloyd_partials

from cupy_like import CUPY_LIKE


def blobs(rng, n=3000, d=3, k=5, spread=1.0, dtype=np.float64):
    centers = rng.normal(0, 6, (k, d))
    X = centers[rng.integers(0, k, n)] + rng.normal(0, spread, (n, d))
    return X.astype(dtype)


def same_up_to_relabelling(a, b):
    return adjusted_rand_score(to_numpy(a), to_numpy(b)) == 1.0


# -- worked by hand -------------------------------------------------------------

def test_toy_1d_worked_by_hand(xp):
    # init 0 and 1: step 1 labels [0,1,1,1] -> centres 0, 22/3;
    # step 2 labels [0,0,1,1] -> centres 0.5, 10.5; step 3 same labels: stop.
    X = xp.asarray([[0.0], [1.0], [10.0], [11.0]])
    km = KMeans(2, init=xp.asarray([[0.0], [1.0]]), tol=0).fit(X)
    assert to_numpy(km.labels_).tolist() == [0, 0, 1, 1]
    assert km.inertia_ == 1.0
    assert km.n_iter_ == 3
    np.testing.assert_array_equal(to_numpy(km.cluster_centers_).ravel(), [0.5, 10.5])
    assert km.converged_


def test_toy_2d_worked_by_hand(xp):
    # Four points near the origin join centre (0,0) at once; their mean is (2,1),
    # each is 1² + 2² = 5 from it; (9,9) stays alone. Labels stop changing at step 2.
    X = xp.asarray([[0, 0], [0, 2], [4, 0], [4, 2], [9, 9]], dtype=xp.float64)
    km = KMeans(2, init=xp.asarray([[0.0, 0.0], [9.0, 9.0]]), tol=0).fit(X)
    assert to_numpy(km.labels_).tolist() == [0, 0, 0, 0, 1]
    assert km.inertia_ == 20.0
    assert km.n_iter_ == 2
    np.testing.assert_array_equal(to_numpy(km.cluster_centers_), [[2, 1], [9, 9]])


def test_empty_cluster_moves_to_farthest_point(xp):
    # Centre 100 attracts nothing; the point farthest from its centre (10, which
    # is 9 from centre 1) seeds it. Final centres 0, 1.5, 10; inertia 2 × 0.5².
    X = xp.asarray([[0.0], [1.0], [2.0], [10.0]])
    km = KMeans(3, init=xp.asarray([[0.0], [1.0], [100.0]]), tol=0).fit(X)
    assert to_numpy(km.labels_).tolist() == [0, 1, 1, 2]
    np.testing.assert_allclose(to_numpy(km.cluster_centers_).ravel(), [0.0, 1.5, 10.0])
    assert km.inertia_ == pytest.approx(0.5, rel=1e-12)
    assert km.n_iter_ == 2
    assert np.isfinite(to_numpy(km.cluster_centers_)).all()


# -- scikit-learn parity ------------------------------------------------------------

@pytest.mark.parametrize("k", [1, 2, 5, 20])
@pytest.mark.parametrize("d", [1, 3, 8])
def test_matches_sklearn_from_same_init(xp, rng, k, d):
    X = blobs(rng, n=2000, d=d, k=max(k, 2), spread=2.0)
    init = X[rng.choice(len(X), k, replace=False)]
    ref = SKKMeans(k, init=init, n_init=1, max_iter=300, tol=1e-4).fit(X)
    km = KMeans(k, init=xp.asarray(init), max_iter=300, tol=1e-4, chunk_size=333).fit(xp.asarray(X))
    np.testing.assert_array_equal(to_numpy(km.labels_), ref.labels_)
    assert km.inertia_ == pytest.approx(ref.inertia_, rel=1e-9)
    assert km.n_iter_ == ref.n_iter_
    np.testing.assert_allclose(to_numpy(km.cluster_centers_), ref.cluster_centers_, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_preserved_and_parity(xp, rng, dtype):
    X = blobs(rng, n=1500, d=4, k=4, dtype=dtype)
    init = X[:4].copy()
    ref = SKKMeans(4, init=init, n_init=1).fit(X)
    km = KMeans(4, init=xp.asarray(init)).fit(xp.asarray(X))
    assert km.cluster_centers_.dtype == dtype
    assert same_up_to_relabelling(km.labels_, ref.labels_)
    rel = 1e-9 if dtype == np.float64 else 1e-5
    assert km.inertia_ == pytest.approx(ref.inertia_, rel=rel)


def test_max_iter_reached_is_reported_by_converged_not_a_warning(rng):
    # scikit-learn warns of nothing when max_iter ends the fit: code that runs clean under it,
    # with warnings as errors, ran into gpuseg's warning.
    import warnings
    X = blobs(rng, n=3000, d=2, k=8, spread=4.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        km = KMeans(8, init=X[:8].copy(), max_iter=2, tol=0).fit(X)
    assert km.n_iter_ == 2
    assert not km.converged_
    ref = SKKMeans(8, init=X[:8].copy(), n_init=1, max_iter=2, tol=0).fit(X)
    np.testing.assert_array_equal(km.labels_, ref.labels_)
    assert km.inertia_ == pytest.approx(ref.inertia_, rel=1e-9)


# -- the step / driver split ---------------------------------------------------------

def test_partials_of_halves_add_up_to_the_whole(xp, rng):
    X = xp.asarray(blobs(rng, n=1001, d=3, k=4))
    C = X[:4].copy()
    whole = lloyd_partials(X, C)
    halves = lloyd_partials(X[:500], C) + lloyd_partials(X[500:], C)
    np.testing.assert_allclose(to_numpy(halves.sums), to_numpy(whole.sums), rtol=1e-12)
    np.testing.assert_array_equal(to_numpy(halves.counts), to_numpy(whole.counts))
    assert float(halves.inertia) == pytest.approx(float(whole.inertia), rel=1e-12)
    # The sums are the per-cluster sums of the nearest-centre partition.
    labels, _ = nearest(X, C)
    Xn, ln = to_numpy(X), to_numpy(labels)
    np.testing.assert_allclose(to_numpy(whole.sums), [Xn[ln == j].sum(axis=0) for j in range(4)], rtol=1e-12)


def test_delta_partials_equal_the_change_of_the_full_sums(rng):
    X = blobs(rng, n=800, d=2, k=3)
    C_old, C_new = X[:3].copy(), X[3:6].copy()
    labels = np.full(len(X), -1, dtype=np.int32)
    full_old = lloyd_partials(X, C_old, labels)
    assert int(full_old.n_changed) == len(X)
    delta = lloyd_partials(X, C_new, labels, delta=True)
    full_new = lloyd_partials(X, C_new)
    np.testing.assert_allclose(full_old.sums + delta.sums, full_new.sums, rtol=1e-12, atol=1e-9)
    np.testing.assert_array_equal(full_old.counts + delta.counts, full_new.counts)
    assert int(delta.n_changed) == int((nearest(X, C_old)[0] != nearest(X, C_new)[0]).sum())


def test_delta_partials_when_no_point_moves(xp, rng, monkeypatch):
    # The last iteration of a converging fit: the change is zero, not an error. On CuPy the
    # array-generic step (engine fallback, d > 32) runs here; CUPY_LIKE stands in for it on
    # the CPU, where CuPy before 14.2 cannot bincount no values.
    if xp is np:
        monkeypatch.setattr(steps_module, "get_namespace", lambda *a: CUPY_LIKE)
    X = xp.asarray(blobs(rng, n=600, d=3, k=3))
    C = X[:3].copy()
    labels = xp.full(X.shape[0], -1, dtype=xp.int32)
    lloyd_partials(X, C, labels)
    again = lloyd_partials(X, C, labels, delta=True)
    assert int(again.n_changed) == 0 and again.delta
    np.testing.assert_array_equal(to_numpy(again.sums), np.zeros((3, 3)))
    np.testing.assert_array_equal(to_numpy(again.counts), np.zeros(3))


@pytest.mark.slow
def test_chunk_size_and_threads_do_not_change_the_answer(rng):
    X = blobs(rng, n=5000, d=3, k=6, spread=3.0)
    init = X[:6].copy()
    base = KMeans(6, init=init, chunk_size=5000, n_threads=1).fit(X)
    for chunk, threads in [(7, 1), (64, 2), (1000, 2)]:
        km = KMeans(6, init=init, chunk_size=chunk, n_threads=threads).fit(X)
        np.testing.assert_array_equal(km.labels_, base.labels_)
        assert km.n_iter_ == base.n_iter_
        assert km.inertia_ == pytest.approx(base.inertia_, rel=1e-12)


class Recorded(ChunkedStep):
    """The same step, recording whether each call returned a delta."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.deltas = []

    def partials(self, centers, delta=False):
        part = super().partials(centers, delta)
        self.deltas.append(part.delta)
        return part


class FullSumsOnly(Recorded):
    """The same step, declining deltas: it returns full sums every time."""

    def partials(self, centers, delta=False):
        return super().partials(centers, delta=False)


def test_running_sums_equal_recomputed_sums(rng):
    X = blobs(rng, n=4000, d=3, k=7, spread=3.0)
    init = X[:7].copy()
    a_step, b_step = Recorded(X, 512), FullSumsOnly(X, 512)
    a = lloyd(a_step, init, tol=0)
    b = lloyd(b_step, init, tol=0)
    assert a_step.deltas[0] is False and all(a_step.deltas[1:]) and len(a_step.deltas) > 2
    assert not any(b_step.deltas)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.n_iter == b.n_iter
    np.testing.assert_allclose(a.centers, b.centers, rtol=1e-12)


def test_history_records_each_iteration(rng):
    X = blobs(rng, n=2000, d=2, k=4)
    km = KMeans(4, init=X[:4].copy(), tol=0).fit(X)
    assert [h["iter"] for h in km.history_] == list(range(1, km.n_iter_ + 1))
    assert km.history_[0]["n_changed"] == len(X)
    assert km.history_[-1]["n_changed"] == 0  # strict convergence
    inertias = [h["inertia"] for h in km.history_]
    assert all(b <= a * (1 + 1e-12) for a, b in zip(inertias, inertias[1:]))  # Lloyd never goes up
    assert inertias[-1] == pytest.approx(km.inertia_, rel=1e-9)


def test_tolerance_matches_sklearn_definition(rng):
    X = blobs(rng, n=500, d=3, k=2)
    assert tolerance(X, 1e-4) == pytest.approx(np.mean(np.var(X, axis=0)) * 1e-4, rel=1e-12)
    Xc = X - X.mean(axis=0)
    assert tolerance(Xc, 1e-4, centered=True) == pytest.approx(tolerance(Xc, 1e-4), rel=1e-9)
    assert tolerance(X, 0) == 0


# -- initialisation -----------------------------------------------------------------

def test_kmeans_plusplus_is_deterministic_and_spread(xp, rng):
    X = xp.asarray(blobs(rng, n=3000, d=2, k=5, spread=0.3))
    a = kmeans_plusplus(X, 5, np.random.RandomState(7))
    b = kmeans_plusplus(X, 5, np.random.RandomState(7))
    np.testing.assert_array_equal(to_numpy(a), to_numpy(b))
    rows = {tuple(r) for r in to_numpy(X).tolist()}
    assert all(tuple(c) in rows for c in to_numpy(a).tolist())  # seeds are data points
    # With five tight, far-apart blobs, k-means++ puts one seed in each blob.
    labels, _ = nearest(X, a)
    assert len(np.unique(to_numpy(labels))) == 5
    assert not np.array_equal(to_numpy(a), to_numpy(kmeans_plusplus(X, 5, np.random.RandomState(8))))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_same_seed_same_result_as_sklearn(xp, rng, seed):
    # The k-means++ draws follow scikit-learn's, so the whole fit agrees.
    X = blobs(rng, n=4000, d=3, k=6, spread=2.5)
    ref = SKKMeans(6, random_state=seed).fit(X)
    km = KMeans(6, random_state=seed).fit(xp.asarray(X))
    np.testing.assert_array_equal(to_numpy(km.labels_), ref.labels_)
    assert km.n_iter_ == ref.n_iter_
    assert km.inertia_ == pytest.approx(ref.inertia_, rel=1e-9)
    again = KMeans(6, random_state=seed).fit(xp.asarray(X))
    np.testing.assert_array_equal(to_numpy(again.labels_), to_numpy(km.labels_))


def test_n_init_keeps_the_best_run(rng):
    X = blobs(rng, n=3000, d=2, k=8, spread=3.0)
    best = KMeans(8, random_state=5, n_init=6).fit(X)
    state = np.random.RandomState(5)
    singles = [KMeans(8, random_state=state, n_init=1).fit(X).inertia_ for _ in range(6)]
    assert best.inertia_ == pytest.approx(min(singles), rel=1e-12)
    ref = SKKMeans(8, random_state=5, n_init=6).fit(X)
    assert best.inertia_ == pytest.approx(ref.inertia_, rel=1e-9)


# -- estimator API -----------------------------------------------------------------

def test_sklearn_estimator_api(rng):
    X = blobs(rng, n=600, d=3, k=3)
    km = KMeans(3, random_state=0, max_iter=50)
    assert km.get_params()["max_iter"] == 50
    km.set_params(max_iter=100)
    assert clone(km).get_params()["max_iter"] == 100
    labels = km.fit_predict(X)
    np.testing.assert_array_equal(labels, km.labels_)
    np.testing.assert_array_equal(km.predict(X), km.labels_)
    D = km.transform(X)
    assert D.shape == (600, 3)
    np.testing.assert_array_equal(D.argmin(axis=1), km.labels_)
    np.testing.assert_allclose(D[np.arange(600), km.labels_] ** 2, ((X - km.cluster_centers_[km.labels_]) ** 2).sum(1),
                               rtol=1e-8, atol=1e-9)
    assert km.score(X) == pytest.approx(-km.inertia_, rel=1e-9)
    assert km.n_features_in_ == 3


@pytest.mark.parametrize("params, X_shape, message", [
    ({"n_clusters": 8}, (3, 2), r"n_samples=3 should be >= n_clusters=8\."),
    ({"n_clusters": 0}, (10, 2), r"n_clusters must be an int >= 1, got 0\."),
    ({"n_clusters": 2, "max_iter": 0}, (10, 2), r"max_iter must be an int >= 1, got 0\."),
    ({"n_clusters": 2, "tol": -1.0}, (10, 2), r"tol must be a float >= 0"),
    ({"n_clusters": 2, "init": "kmeans"}, (10, 2), r"init must be 'k-means\+\+', 'random', a callable or an array"),
    ({"n_clusters": 2, "init": np.zeros((3, 2))}, (10, 2), r"shape of the initial centers \(3, 2\)"),
])
def test_bad_parameters_say_what_is_allowed(params, X_shape, message):
    X = np.random.default_rng(0).normal(size=X_shape)
    with pytest.raises(ValueError, match=message):
        KMeans(**params).fit(X)


def test_bad_data_is_refused(rng):
    X = blobs(rng, n=50, d=2, k=2)
    X[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinity"):
        KMeans(2).fit(X)
    km = KMeans(2, random_state=0).fit(blobs(rng, n=50, d=2, k=2))
    with pytest.raises(ValueError, match="X has 3 features, but KMeans is expecting 2"):
        km.predict(np.zeros((4, 3)))


def test_explicit_init_with_n_init_warns_and_runs_once(rng):
    X = blobs(rng, n=200, d=2, k=2)
    with pytest.warns(RuntimeWarning, match="performing only one init"):
        KMeans(2, init=X[:2].copy(), n_init=5).fit(X)


def test_duplicate_points_warn_about_fewer_distinct_clusters():
    X = np.zeros((10, 2))
    with pytest.warns(ConvergenceWarning, match="distinct clusters"):
        KMeans(3, random_state=0).fit(X)


def test_copy_x_false_restores_the_data(rng):
    X = blobs(rng, n=300, d=2, k=2)
    before = X.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        KMeans(2, random_state=0, copy_x=False).fit(X)
    np.testing.assert_allclose(X, before, rtol=0, atol=1e-12)


def test_host_fit_centres_into_a_feature_major_array(rng):
    # The host step reads columns: with copy_x a C-ordered X is copied into F order; without,
    # X is centred in place in its own layout (no copy), and put back afterwards.
    from gpuseg.cluster.fit import _centred
    X = blobs(rng, n=500, d=3, k=3)
    Xc, mean, restore = _centred(X, True, feature_major=True)
    assert Xc.flags.f_contiguous and not np.shares_memory(Xc, X) and not restore
    np.testing.assert_array_equal(mean, X.mean(axis=0))
    np.testing.assert_array_equal(Xc, X - X.mean(axis=0))
    Xc, mean, restore = _centred(X, True, feature_major=False)  # a device step: C order
    assert Xc.flags.c_contiguous and not np.shares_memory(Xc, X) and not restore
    for order in ("C", "F"):
        Y = np.array(X, order=order)
        Yc, mean, restore = _centred(Y, False, feature_major=True)
        assert Yc is Y and restore
        np.testing.assert_array_equal(Y, X - mean)


@pytest.mark.parametrize("copy_x", [True, False])
def test_layout_of_x_does_not_change_the_fit(rng, copy_x):
    X = blobs(rng, n=3000, d=4, k=5, spread=2.0)
    init = X[:5].copy()
    XF = np.asfortranarray(X)
    before = X.copy()
    a = fit_kmeans(X, 5, init=init, copy_x=copy_x)
    b = fit_kmeans(XF, 5, init=init, copy_x=copy_x)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.n_iter == b.n_iter and a.n_iter > 2
    np.testing.assert_allclose(a.centers, b.centers, rtol=1e-12)
    assert a.inertia == pytest.approx(b.inertia, rel=1e-12)
    for Y in (X, XF):  # untouched, or put back
        np.testing.assert_allclose(Y, before, rtol=0, atol=0 if copy_x else 1e-12)
    assert tolerance(XF - XF.mean(axis=0), 1e-4, centered=True) == pytest.approx(
        tolerance(X - X.mean(axis=0), 1e-4, centered=True), rel=1e-12)


def test_partials_reduce_associatively():
    a = Partials(np.ones((2, 2)), np.array([1.0, 2.0]), 3.0, 1)
    b = Partials(np.full((2, 2), 2.0), np.array([0.0, 1.0]), 1.5, 2)
    s = a + b
    np.testing.assert_array_equal(s.sums, np.full((2, 2), 3.0))
    np.testing.assert_array_equal(s.counts, [1.0, 3.0])
    assert (s.inertia, s.n_changed) == (4.5, 3)


def test_streamed_engine_on_numpy_equals_the_in_memory_fit(rng):
    # The same per-block partial sums, streamed in blocks through a "device" (here NumPy).
    X = blobs(rng, n=5000, d=3, k=5, spread=2.5)
    init = X[:5].copy()
    a = fit_kmeans(X, 5, init=init, tol=1e-8)
    b = fit_kmeans(X, 5, init=init, tol=1e-8, engine="streamed", stream_rows=777, device=np)
    assert b.engine == "streamed-generic"
    np.testing.assert_array_equal(a.labels, b.labels)
    assert b.inertia == pytest.approx(a.inertia, rel=1e-12)
    np.testing.assert_allclose(a.centers, b.centers, rtol=1e-12)


def test_unknown_engine_is_refused(rng):
    with pytest.raises(ValueError, match="engine must be one of auto, generic, fused, streamed"):
        fit_kmeans(blobs(rng, n=50, d=2, k=2), 2, engine="turbo")


@pytest.mark.parametrize("n, k", [(2_000, 1), (2_000, 2), (2_000, 5), (2_000, 8), (2_000, 16), (2_000, 17),
                                  (2_000, 40), (40_003, 7), (40_003, 130)])  # past one cache-sized piece; k >= 128
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nearest_is_argmin_with_ties_to_the_lowest_index(xp, n, k, dtype):
    from gpuseg.cluster.steps import _nearest, _prepare
    rng = np.random.default_rng(k)
    X = rng.integers(-3, 4, (n, 3)).astype(dtype)  # small integers: many exact ties
    C = rng.integers(-3, 4, (k, 3)).astype(dtype)
    if k > 1:
        C[k // 2] = C[0]  # two identical centres: every point nearer them ties
    X, C = xp.asarray(X), xp.asarray(C)
    labels, best = _nearest(X, _prepare(C), xp)
    D = to_numpy((C * C).sum(axis=1)[None, :] - 2.0 * (X @ C.T))
    assert labels.dtype == xp.int32 and best.dtype == dtype
    np.testing.assert_array_equal(to_numpy(labels), D.argmin(axis=1))
    np.testing.assert_array_equal(to_numpy(best), D.min(axis=1))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cluster_sums_equal_bincount_and_read_nothing_back_on_the_device(xp, rng, dtype):
    # CuPy's bincount reads the labels back twice a call (a sign check and the maximum), d + 1
    # calls per block per iteration of the generic step: the device adds with scatters instead.
    X = rng.normal(size=(5_000, 3)).astype(dtype)
    labels = rng.integers(0, 6, 5_000).astype(np.int32)
    labels[labels == 4] = 5  # a cluster with no point
    want_sums = np.stack([np.bincount(labels, X[:, f].astype(np.float64), 6) for f in range(3)], axis=1)
    reads = getattr(xp, "reads", None)  # the CuPy emulator logs the host's reads
    if reads is not None:
        reads.clear()
    sums, counts = steps_module._cluster_sums(xp.asarray(X), xp.asarray(labels), 6, xp)
    if reads is not None:
        assert reads == []
    assert sums.dtype == np.float64 and counts.dtype == np.float64
    np.testing.assert_allclose(to_numpy(sums), want_sums, rtol=1e-12, atol=1e-9)
    assert to_numpy(counts).tolist() == np.bincount(labels, minlength=6).tolist()
