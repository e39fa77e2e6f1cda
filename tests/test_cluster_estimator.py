"""``gpuseg.KMeans`` against scikit-learn's estimator checks: no failure beyond scikit-learn's own KMeans."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.cluster import KMeans as SKKMeans
from sklearn.utils.estimator_checks import check_estimator

from gpuseg.cluster.estimator import KMeans


def _failed(estimator) -> dict[str, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(estimator, on_fail=None)
    return {r["check_name"]: str(r["exception"]).splitlines()[0] if str(r["exception"]) else ""
            for r in results if r["status"] == "failed"}


def test_no_estimator_check_fails_that_sklearns_kmeans_passes():
    ours = _failed(KMeans(n_clusters=3, random_state=0))
    theirs = _failed(SKKMeans(n_clusters=3, random_state=0))
    assert {name: why for name, why in ours.items() if name not in theirs} == {}


@pytest.mark.parametrize("X, error, message", [
    (np.ones((4, 2)) + 1j, ValueError, "Complex data not supported"),
    (np.empty((0, 3)), ValueError, r"0 sample\(s\) \(shape=\(0, 3\)\) while a minimum of 1 is required"),
    (np.empty((5, 0)), ValueError, r"0 feature\(s\) \(shape=\(5, 0\)\) while a minimum of 1 is required"),
])
def test_refusals_in_sklearns_words(X, error, message):
    with pytest.raises(error, match=message):
        KMeans(2).fit(X)


def test_sparse_input_is_refused_as_such():
    sparse = pytest.importorskip("scipy.sparse")
    X = sparse.random(20, 3, density=0.5, format="csr", random_state=0)
    for matrix in (X, sparse.csr_array(X)):
        with pytest.raises(TypeError, match="sparse input is not supported"):
            KMeans(2).fit(matrix)


def test_predict_on_1d_input_says_reshape():
    km = KMeans(2, random_state=0).fit(np.arange(20.0).reshape(10, 2))
    with pytest.raises(ValueError, match="Reshape your data"):
        km.predict(np.arange(2.0))


def test_labels_belong_to_the_kept_run_when_several_run():
    # With n_init > 1 the labels of strict convergence were the step's own buffer, overwritten by
    # the next run: labels_ disagreed with cluster_centers_ (5,005.9 against an inertia of 3.02).
    from sklearn.cluster import KMeans as SKMeans
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(c, 0.1, size=(50, 2)) for c in ([0, 0], [5, 0], [0, 5])])
    g = KMeans(3, n_init=10, random_state=0).fit(X)
    s = SKMeans(3, n_init=10, random_state=0).fit(X)
    np.testing.assert_array_equal(g.labels_, g.predict(X))
    assert ((X - g.cluster_centers_[g.labels_]) ** 2).sum() == pytest.approx(g.inertia_, rel=1e-12)
    np.testing.assert_array_equal(g.labels_, s.labels_)
    assert g.n_iter_ == s.n_iter_


def test_each_run_counts_its_first_iteration_as_all_changed():
    # A second run whose first assignment equals the first run's last labels stopped after one
    # iteration; scikit-learn starts every run from no labels and needs two.
    from gpuseg.cluster.lloyd import lloyd
    from gpuseg.cluster.steps import ChunkedStep
    X = np.array([[0.0], [0.1], [5.0], [5.1]])
    step = ChunkedStep(X, 64)
    first = lloyd(step, np.array([[0.0], [5.0]]))
    second = lloyd(step, np.array([[0.0], [5.0]]))
    assert first.n_iter == 2 and second.n_iter == 2 and second.history[0]["n_changed"] == 4


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("seed", range(6))
def test_random_init_draws_scikit_learns_rows(seed, dtype):
    # gpuseg took a permutation's first k rows; scikit-learn draws with choice(p=unit weights).
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(int(rng.integers(20, 400)), 3)).astype(dtype)
    k = int(rng.integers(2, 8))
    g = KMeans(k, init="random", n_init=1, max_iter=1, random_state=seed).fit(X)
    s = SKKMeans(k, init="random", n_init=1, max_iter=1, random_state=seed).fit(X)
    np.testing.assert_array_equal(g.labels_, s.labels_)
    assert g.inertia_ == pytest.approx(s.inertia_, rel=1e-5 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("X, init", [
    # A cluster left empty after relocation goes where the largest cluster is (it stayed at 14).
    ([[3.0], [16.0], [20.0], [25.0]], [[-23.0], [15.0], [14.0]]),
    # Every point on its centre: nothing is relocated; empty clusters join the largest one.
    ([[1.0], [1.0], [1.0], [5.0]], [[100.0], [200.0], [5.0], [1.0]]),
    # Several clusters empty at once: the farthest points in argpartition's order.
    ([[0.0], [1.0], [2.0], [10.0], [11.0], [30.0], [31.0], [50.0]], [[-90.0], [-80.0], [-70.0], [1.0], [30.0]]),
])
def test_empty_clusters_are_handled_as_scikit_learn_handles_them(X, init):
    X, init = np.array(X), np.array(init)
    s = SKKMeans(len(init), init=init, n_init=1).fit(X)
    g = KMeans(len(init), init=init, n_init=1).fit(X)
    np.testing.assert_array_equal(g.labels_, s.labels_)
    np.testing.assert_allclose(g.cluster_centers_, s.cluster_centers_, rtol=1e-12, atol=1e-12)
    assert g.n_iter_ == s.n_iter_ and g.inertia_ == pytest.approx(s.inertia_, rel=1e-12)


def test_smaller_differences_from_scikit_learn_are_gone():
    import pandas as pd
    rng = np.random.default_rng(3)
    X32 = rng.normal(size=(200, 3)).astype(np.float32)
    g = KMeans(4, random_state=0).fit(X32)
    assert g.transform(X32).dtype == np.float32 == SKKMeans(4, random_state=0).fit(X32).transform(X32).dtype
    with pytest.raises(ValueError, match="init contains NaN"):  # was accepted silently
        KMeans(2, init=np.array([[np.nan, 0, 0], [1, 1, 1]]), n_init=1).fit(X32)
    with pytest.raises(ValueError, match="copy_x must be a bool"):  # "yes" was taken as True
        KMeans(2, copy_x="yes").fit(X32)
    frame = pd.DataFrame({"a": pd.array([1, None, 3], dtype="Int64"), "b": [1.0, 2.0, 3.0]})
    with pytest.raises(ValueError, match="contains NaN"):  # was TypeError: float() argument ... 'NAType'
        KMeans(1).fit(frame)


def test_a_callable_init_is_called_as_scikit_learn_calls_it():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(300, 2)) + 10
    calls = []

    def first_rows(data, k, random_state):
        calls.append((data.mean(axis=0), k, type(random_state)))
        return data[random_state.permutation(len(data))[:k]]

    g = KMeans(3, init=first_rows, random_state=1).fit(X)
    s = SKKMeans(3, init=first_rows, random_state=1).fit(X)
    assert len(calls) == 20  # n_init "auto": 10 runs each, as scikit-learn
    np.testing.assert_allclose(calls[0][0], 0, atol=1e-12)  # the centred data
    np.testing.assert_array_equal(g.labels_, s.labels_)
    assert g.inertia_ == pytest.approx(s.inertia_, rel=1e-12)


def test_a_float32_frame_stays_float32():
    import pandas as pd
    X = np.random.default_rng(0).normal(size=(200, 3)).astype(np.float32)
    g = KMeans(3, random_state=0).fit(pd.DataFrame(X))
    assert g.cluster_centers_.dtype == np.float32 and g.transform(pd.DataFrame(X)).dtype == np.float32
    np.testing.assert_array_equal(g.labels_, KMeans(3, random_state=0).fit(X).labels_)


def _frame(rng, n=300):
    import pandas as pd
    return pd.DataFrame({"recency": rng.random(n) * 100, "monetary": rng.random(n) * 5})


def test_a_frames_column_names_are_kept_and_checked_as_scikit_learn_does(rng):
    # Columns in another order were measured against the wrong coordinates: 34% of labels kept.
    df = _frame(rng)
    km = KMeans(3, random_state=0, n_init=1).fit(df)
    sk = SKKMeans(3, random_state=0, n_init=1).fit(df)
    assert list(km.feature_names_in_) == list(sk.feature_names_in_) == ["recency", "monetary"]
    for other in (df[["monetary", "recency"]], df.rename(columns={"recency": "r"})):
        for est in (km, sk):
            with pytest.raises(ValueError, match="feature names should match"):
                est.predict(other)
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        km.predict(df.to_numpy())
    assert not hasattr(KMeans(3, n_init=1).fit(df.to_numpy()), "feature_names_in_")
    with pytest.warns(UserWarning, match="fitted without feature names"):
        KMeans(3, n_init=1).fit(df.to_numpy()).predict(df)


def test_feature_names_out_and_pandas_output_in_a_pipeline(rng):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    df = _frame(rng)
    pipe = make_pipeline(StandardScaler(), KMeans(3, random_state=0, n_init=1)).set_output(transform="pandas")
    out = pipe.fit(df).transform(df)
    assert list(out.columns) == ["kmeans0", "kmeans1", "kmeans2"]
    assert list(pipe.get_feature_names_out()) == list(
        make_pipeline(StandardScaler(), SKKMeans(3, n_init=1)).fit(df).get_feature_names_out())


def test_scikit_learns_other_arguments_are_taken_and_no_warning_at_max_iter(rng, capsys):
    X = rng.random((500, 3))
    lloyd = KMeans(4, random_state=1, n_init=1, algorithm="lloyd", verbose=0).fit(X)
    elkan = KMeans(4, random_state=1, n_init=1, algorithm="elkan").fit(X)
    np.testing.assert_array_equal(lloyd.labels_, elkan.labels_)
    with pytest.raises(ValueError, match="algorithm must be"):
        KMeans(4, algorithm="full").fit(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scikit-learn gives no warning when max_iter ends the fit
        short = KMeans(4, random_state=1, n_init=1, max_iter=1, verbose=1).fit(X)
    assert not short.converged_
    printed = capsys.readouterr().out
    assert "Iteration 0, inertia" in printed and "Stopped at max_iter=1" in printed
