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
