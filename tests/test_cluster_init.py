"""k-means++ seeding: scikit-learn's draws, whatever the number of threads."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import kmeans_plusplus as sklearn_kmeans_plusplus

from gpuseg.backend import to_numpy
from gpuseg.cluster import init
from gpuseg.cluster.init import kmeans_plusplus


@pytest.mark.parametrize("n_threads", [1, 2, 5])
def test_seeds_equal_scikit_learns_in_blocks_on_threads(xp, rng, monkeypatch, n_threads):
    """Rows are split into blocks (made small here so that there are many, with a ragged
    last one); the seeds are scikit-learn's exactly, as with one block."""
    monkeypatch.setattr(init, "_SEED_BLOCK", 1000)
    X = rng.normal(size=(10_301, 7)) * rng.uniform(0.5, 3, 7)
    want, _ = sklearn_kmeans_plusplus(X, 6, random_state=np.random.RandomState(11))
    got = kmeans_plusplus(xp.asarray(X), 6, np.random.RandomState(11), n_threads=n_threads)
    np.testing.assert_array_equal(to_numpy(got), want)


def test_candidates_of_equal_potential_are_decided_as_scikit_learn_decides(xp, monkeypatch):
    """Copies of the vertices of a far cube: every vertex, as a candidate, has the same
    potential in exact arithmetic, so the summation order alone picks the seed. Potentials
    summed block by block picked other vertices than scikit-learn for some seeds; one
    full-length product over the blocks' distances, as scikit-learn takes it, picks the same."""
    monkeypatch.setattr(init, "_SEED_BLOCK", 1000)
    rng = np.random.default_rng(3)
    X = rng.normal(size=(20_000, 3))
    cube = np.array([[a, b, c] for a in (-1, 1) for b in (-1, 1) for c in (-1, 1)], float) + [1000.0, 700.0, 400.0]
    X[rng.choice(len(X), size=8 * 200, replace=False)] = np.repeat(cube, 200, axis=0)
    for seed in range(30):
        want, _ = sklearn_kmeans_plusplus(X, 2, random_state=np.random.RandomState(seed))
        got = kmeans_plusplus(xp.asarray(X), 2, np.random.RandomState(seed), n_threads=2)
        np.testing.assert_array_equal(to_numpy(got), want, err_msg=f"seed {seed}")


@pytest.mark.parametrize("seed", [22, 31, 32, 40])
def test_float32_seeds_are_scikit_learns(seed):
    # scikit-learn computes float32 distances on chunks upcast to float64 and sums the potentials
    # in float32; gpuseg computed them in float32 and summed in float64: other seeds, then
    # other clusterings (93% of labels differed at seed 31).
    from sklearn.cluster._kmeans import _kmeans_plusplus
    from sklearn.utils.extmath import row_norms
    from gpuseg.cluster.init import kmeans_plusplus
    rng = np.random.default_rng(seed)
    n, d, k = int(rng.integers(100, 30000)), int(rng.integers(1, 10)), int(rng.integers(2, 30))
    X = ((rng.normal(size=(k, d)) * 3)[rng.integers(0, k, n)] + rng.normal(size=(n, d))).astype(np.float32)
    X -= X.mean(axis=0)
    want, _ = _kmeans_plusplus(X, k, x_squared_norms=row_norms(X, squared=True),
                               random_state=np.random.RandomState(seed), sample_weight=np.ones(n, np.float32))
    for threads in (1, 2):
        np.testing.assert_array_equal(kmeans_plusplus(X, k, np.random.RandomState(seed), n_threads=threads), want)
