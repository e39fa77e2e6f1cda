"""Segment names: the documented rule, worked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from gpuseg.naming import PROTOTYPES, describe, name_segments, names_from_standings, standings


def rfm(recency, frequency, monetary):
    return {"recency_days": np.asarray(recency, float), "frequency": np.asarray(frequency, float),
            "monetary": np.asarray(monetary, float)}


def test_standings_worked_by_hand():
    # Two customers per segment; frequency 0 and e-1 give log1p values 0 and 1.
    e1 = np.e - 1
    cols = rfm([0, 0, e1, e1], [e1, e1, 0, 0], [0, 0, 0, 0])
    seg = np.array([0, 0, 1, 1])
    S = standings(cols, seg, 2)
    # log1p recency: [0,0,1,1] -> mean .5, std .5; segment 0 is one std below, negated -> +1.
    np.testing.assert_allclose(S[:, 0], [1.0, -1.0])
    np.testing.assert_allclose(S[:, 1], [1.0, -1.0])
    np.testing.assert_allclose(S[:, 2], [0.0, 0.0])  # constant: no standing


def test_names_follow_the_prototypes_and_are_unique():
    rng = np.random.default_rng(0)
    # Customers built at each prototype's standing: each segment gets its own name back.
    names = list(PROTOTYPES)
    cols = {"recency_days": [], "frequency": [], "monetary": []}
    seg = []
    for i, name in enumerate(names):
        r, f, m = PROTOTYPES[name]
        n = 50
        cols["recency_days"] += list(np.expm1(3 - r + rng.normal(0, 0.05, n)))
        cols["frequency"] += list(np.expm1(2 + f + rng.normal(0, 0.05, n)))
        cols["monetary"] += list(np.expm1(5 + m + rng.normal(0, 0.05, n)))
        seg += [i] * n
    got = name_segments({k: np.array(v) for k, v in cols.items()}, np.array(seg), len(names))
    assert got == names


def test_more_than_eight_segments_get_numbered_names():
    rng = np.random.default_rng(1)
    cols = rfm(rng.uniform(1, 500, 1000), rng.integers(1, 30, 1000), rng.uniform(5, 5000, 1000))
    seg = rng.integers(0, 11, 1000)
    got = name_segments(cols, seg, 11)
    assert len(set(got)) == 11
    numbered = [n for n in got if n[-1].isdigit()]
    assert len(numbered) >= 3
    # A numbered name is used only after its plain name.
    assert all(n.rsplit(" ", 1)[0] in got for n in numbered)


def test_names_do_not_depend_on_segment_ids():
    rng = np.random.default_rng(2)
    cols = rfm(rng.uniform(1, 500, 600), rng.integers(1, 30, 600), rng.uniform(5, 5000, 600))
    seg = np.digitize(cols["monetary"], [1000, 3000])  # three segments by spend
    perm = np.array([2, 0, 1])
    a = name_segments(cols, seg, 3)
    b = name_segments(cols, perm[seg], 3)
    assert [b[perm[i]] for i in range(3)] == a


@pytest.mark.parametrize("standing, text", [((1, 1, 1), "recent, frequent, high spend"),
                                            ((-1, 0, -1), "lapsed, occasional, low spend")])
def test_describe(standing, text):
    assert describe(standing) == text


@pytest.mark.parametrize("shape", [(1, 1), (3, 8), (8, 8), (5, 16), (11, 16)])
def test_min_cost_assignment_matches_scipy(shape):
    from scipy.optimize import linear_sum_assignment

    from gpuseg.naming import min_cost_assignment
    rng = np.random.default_rng(shape[0] * 100 + shape[1])
    for _ in range(20):
        cost = rng.random(shape) * 10
        cols = min_cost_assignment(cost)
        assert len(set(cols)) == shape[0]
        rows, ref = linear_sum_assignment(cost)
        assert cost[np.arange(shape[0]), cols].sum() == pytest.approx(cost[rows, ref].sum(), rel=1e-12)


def plain_standings(cols, seg, k):
    """Step 1 written out plainly on all customers at once."""
    out = np.zeros((k, 3))
    counts = np.bincount(seg, minlength=k)
    for j, name in enumerate(("recency_days", "frequency", "monetary")):
        t = np.sign(cols[name]) * np.log1p(np.abs(cols[name]))
        out[:, j] = (np.bincount(seg, t, k) / np.maximum(counts, 1) - t.mean()) / t.std()
    out[:, 0] *= -1
    return out


def test_standings_from_segment_sums_equal_the_plain_rule(xp, rng):
    cols = rfm(rng.exponential(60, 5000).round(), rng.poisson(2, 5000) + 1, rng.lognormal(5, 1.2, 5000))
    seg = rng.integers(0, 6, 5000)
    seg[seg == 4] = 5  # segment 4 empty
    got = standings({k: xp.asarray(v) for k, v in cols.items()}, xp.asarray(seg), 6)
    np.testing.assert_allclose(got, plain_standings(cols, seg, 6), rtol=1e-12, atol=1e-12)


def test_a_constant_measure_gives_standing_zero():
    # 0.1 per customer: its mean is off by an ulp and its spread is rounding noise,
    # which the plain z-score turns into standings of +-20.
    rng = np.random.default_rng(3)
    cols = rfm(rng.uniform(1, 300, 1000), rng.integers(1, 9, 1000), np.full(1000, 0.1))
    seg = rng.integers(0, 3, 1000)
    assert np.abs(plain_standings(cols, seg, 3)[:, 2]).max() > 1
    np.testing.assert_array_equal(standings(cols, seg, 3)[:, 2], 0.0)


def test_the_closest_segment_of_a_prototype_gets_the_plain_name():
    # Nine segments: eight at the prototypes, and a second one near "Lost", farther than the first.
    S = np.array(list(PROTOTYPES.values()) + [[-1.6, -1.0, -1.0]])
    S[7] += 0.05
    names = names_from_standings(S)
    assert names[:7] == list(PROTOTYPES)[:7]
    assert (names[7], names[8]) == ("Lost", "Lost 2")
    S[8] = [-1.5, -1.0, -1.0]  # now the ninth is on the prototype: it takes the plain name
    assert names_from_standings(S)[7:] == ["Lost 2", "Lost"]
    # Rounding-sized changes and the order of the segments do not move the names.
    perm = np.random.default_rng(0).permutation(9)
    shaken = names_from_standings(S[perm] * (1 + 1e-14))
    assert [shaken[i] for i in np.argsort(perm)] == names_from_standings(S)
