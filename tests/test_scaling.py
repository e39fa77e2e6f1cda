"""Scaling: which features get log1p, standardisation, round trips."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gpuseg.backend import to_numpy
from gpuseg.errors import GpusegError
from gpuseg.scaling import SKEW_THRESHOLD, Moments, Scaler, signed_log1p, skewness


def test_skewness_worked_by_hand(xp):
    # [0,0,0,0,10]: mean 2, m2 = (4·4 + 8²)/5 = 16, m3 = (4·(-8) + 8³)/5 = 96 -> 96 / 16^1.5 = 1.5.
    assert skewness(xp.asarray([0.0, 0, 0, 0, 10])) == pytest.approx(1.5)
    # [0,0,0,10,10]: mean 4, m2 = 24, m3 = 48 -> 48 / 24^1.5.
    assert skewness(xp.asarray([0.0, 0, 0, 10, 10])) == pytest.approx(48 / 24**1.5)
    assert skewness(xp.asarray([3.0, 3.0, 3.0])) == 0.0
    assert skewness(xp.asarray([0.0, 10, 10, 10, 10])) == pytest.approx(-1.5)


def test_log1p_only_for_skewed_non_negative_features(xp, rng):
    n = 400
    skewed = rng.lognormal(0, 1.5, n)                 # skewed, >= 0
    symmetric = rng.normal(50, 5, n)                  # not skewed
    skewed_with_negative = skewed.copy()
    skewed_with_negative[0] = -1.0                    # skewed but not non-negative
    left_skewed = -skewed + skewed.max()              # >= 0 but skewed the other way
    X = np.stack([skewed, symmetric, skewed_with_negative, left_skewed], axis=1)
    assert skewness(skewed) > SKEW_THRESHOLD and skewness(skewed_with_negative) > SKEW_THRESHOLD
    sc = Scaler.fit(xp.asarray(X), ["a", "b", "c", "d"])
    assert sc.log1p == (True, False, False, False)
    assert sc.features == ("a", "b", "c", "d")


def test_log1p_follows_the_skew_threshold(xp):
    # Skewness 1.5 and 0.41 (the hand-worked cases above) on either side of 1.
    sc = Scaler.fit(xp.asarray([[0.0, 0.0], [0, 0], [0, 0], [0, 10], [10, 10]]), ["s", "t"])
    assert sc.log1p == (True, False)


def test_standardised_columns_have_mean_0_and_std_1(xp, rng):
    X = np.stack([rng.lognormal(2, 1, 300), rng.normal(-5, 3, 300), rng.integers(1, 40, 300)], axis=1)
    sc = Scaler.fit(xp.asarray(X), ["a", "b", "c"])
    Z = to_numpy(sc.transform(xp.asarray(X)))
    assert Z.dtype == np.float64 and Z.shape == X.shape
    np.testing.assert_allclose(Z.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(Z.std(axis=0), 1, rtol=1e-12)


def test_transform_worked_by_hand(xp):
    # Column [1, 3]: mean 2, population std 1 -> [-1, 1].
    sc = Scaler.fit(xp.asarray([[1.0], [3.0]]), ["x"])
    assert sc.log1p == (False,) and sc.mean == (2.0,) and sc.scale == (1.0,)
    np.testing.assert_array_equal(to_numpy(sc.transform(xp.asarray([[1.0], [3.0], [5.0]]))).ravel(), [-1, 1, 3])


def test_logged_column_is_standardised_after_the_log(xp):
    X = np.array([[0.0], [0], [0], [0], [10]])
    sc = Scaler.fit(xp.asarray(X), ["x"])
    logged = np.log1p(X[:, 0])
    assert sc.log1p == (True,)
    assert sc.mean[0] == pytest.approx(logged.mean())
    assert sc.scale[0] == pytest.approx(logged.std())


def test_zero_variance_column_gets_scale_1(xp):
    X = xp.asarray([[7.0, 1.0], [7.0, 2.0], [7.0, 3.0]])
    sc = Scaler.fit(X, ["const", "x"])
    assert sc.scale[0] == 1.0 and sc.mean[0] == 7.0 and not sc.log1p[0]
    Z = to_numpy(sc.transform(X))
    assert np.isfinite(Z).all()
    np.testing.assert_array_equal(Z[:, 0], [0, 0, 0])


def test_transform_does_not_modify_its_input(xp):
    X = xp.asarray([[0.0, 1.0], [0.0, 2.0], [0.0, 5.0], [0.0, 3.0], [50.0, 4.0]])
    before = to_numpy(X).copy()
    sc = Scaler.fit(X, ["a", "b"])
    sc.transform(X)
    np.testing.assert_array_equal(to_numpy(X), before)


def test_inverse_transform_inverts_transform(xp, rng):
    X = np.stack([rng.lognormal(3, 1.2, 200), rng.normal(0, 10, 200), np.full(200, 4.0)], axis=1)
    sc = Scaler.fit(xp.asarray(X), ["a", "b", "c"])
    assert sc.log1p[0]
    back = to_numpy(sc.inverse_transform(sc.transform(xp.asarray(X))))
    np.testing.assert_allclose(back, X, rtol=1e-10, atol=1e-10)


def test_signed_log1p_keeps_negative_values_finite(xp):
    v = to_numpy(signed_log1p(xp.asarray([-np.e + 1, 0.0, np.e - 1])))
    np.testing.assert_allclose(v, [-1, 0, 1])
    # A negative value met at scoring time in a logged column maps back exactly.
    sc = Scaler.fit(xp.asarray([[0.0], [0], [0], [0], [10]]), ["x"])
    Z = sc.transform(xp.asarray([[-3.0]]))
    assert np.isfinite(to_numpy(Z)).all()
    np.testing.assert_allclose(to_numpy(sc.inverse_transform(Z)), [[-3.0]])


def test_to_dict_from_dict_round_trip_through_json(xp, rng):
    X = np.stack([rng.lognormal(0, 1, 50), rng.normal(0, 1, 50)], axis=1)
    sc = Scaler.fit(xp.asarray(X), ["monetary", "recency_days"])
    back = Scaler.from_dict(json.loads(json.dumps(sc.to_dict())))
    assert back == sc
    np.testing.assert_array_equal(to_numpy(back.transform(xp.asarray(X))), to_numpy(sc.transform(xp.asarray(X))))


@pytest.mark.parametrize("change", [
    {"scale": [1.0, 0.0]},
    {"scale": [1.0]},
    {"log1p": [True]},
    {"mean": ["x", 1.0]},
    {"features": None},
])
def test_from_dict_rejects_broken_scalers(change):
    d = {"features": ["a", "b"], "log1p": [False, True], "mean": [0.0, 1.0], "scale": [1.0, 2.0]}
    Scaler.from_dict(d)  # the unbroken one loads
    with pytest.raises(GpusegError, match="invalid scaler"):
        Scaler.from_dict({**d, **change})


def test_from_dict_missing_key():
    with pytest.raises(GpusegError, match="invalid scaler"):
        Scaler.from_dict({"features": ["a"], "log1p": [False], "mean": [0.0]})


# -- the scaler from partial moments ------------------------------------------------

def reference_fit(X: np.ndarray) -> tuple[list[bool], list[float], list[float]]:
    """The rule written out plainly, one column at a time (how Scaler.fit was first written)."""
    logs, means, scales = [], [], []
    for j in range(X.shape[1]):
        col = X[:, j]
        c = col - col.mean()
        m2 = (c * c).mean()
        skew = (c**3).mean() / m2**1.5 if m2 > 0 else 0.0
        use_log = bool(col.min() >= 0 and skew > SKEW_THRESHOLD)
        if use_log:
            col = np.sign(col) * np.log1p(np.abs(col))
        logs.append(use_log)
        means.append(col.mean())
        scales.append(col.std() or 1.0)
    return logs, means, scales


def columns(rng, n):
    """Skewed, symmetric, negative, left-skewed, integer, constant (exact and inexact) columns."""
    skewed = rng.lognormal(3, 1.5, n)
    return np.stack([skewed, rng.normal(50, 5, n), rng.normal(-3, 2, n), skewed.max() - skewed,
                     rng.poisson(2, n).astype(float), np.full(n, 7.0), np.full(n, 0.1)], axis=1)


def test_fit_equals_the_plain_rule(xp, rng):
    X = columns(rng, 5000)
    logs, means, scales = reference_fit(X)
    sc = Scaler.fit(xp.asarray(X), [f"c{j}" for j in range(X.shape[1])])
    assert list(sc.log1p) == logs == [True, False, False, False, False, False, False]
    np.testing.assert_allclose(sc.mean[:-1], means[:-1], rtol=1e-12)
    np.testing.assert_allclose(sc.scale[:-2], scales[:-2], rtol=1e-12)
    # Constant columns: centred on their value, scale 1. The plain rule's mean of 0.1s
    # is off by an ulp and its spread is rounding noise (1e-17), not 0.
    assert sc.mean[-2:] == (7.0, 0.1) and sc.scale[-2:] == (1.0, 1.0)
    assert scales[-1] < 1e-15
    np.testing.assert_array_equal(to_numpy(sc.transform(xp.asarray(X)))[:, -2:], 0.0)


@pytest.mark.parametrize("cuts", [[2500], [1, 2, 3, 1000, 4999], [0, 0, 1700, 1700, 4000]])
def test_moments_merged_from_blocks_equal_one_block(xp, rng, cuts):
    X = columns(rng, 5000)
    X[3000, 3] = -1.0  # one block holds the negative value of a non-negative-looking column
    names = [f"c{j}" for j in range(X.shape[1])]
    blocks = np.split(X, cuts)  # empty, one-row and unequal blocks
    merged = sum((Moments.of(xp.asarray(b)) for b in blocks), Moments.empty(X.shape[1]))
    whole = Moments.of(xp.asarray(X))
    assert merged.n == whole.n == 5000
    for field in ("mean", "m2", "m3", "m2_log"):
        np.testing.assert_allclose(getattr(merged, field), getattr(whole, field), rtol=1e-12, atol=1e-9)
    np.testing.assert_array_equal(merged.min, whole.min)
    assert np.isnan(merged.mean_log[2:4]).all()  # negative values: never logged
    a, b = Scaler.from_moments(merged, names), Scaler.fit(xp.asarray(X), names)
    assert a.log1p == b.log1p and a.features == b.features
    np.testing.assert_allclose(a.mean, b.mean, rtol=1e-12)
    np.testing.assert_allclose(a.scale, b.scale, rtol=1e-12)


def test_moments_worked_by_hand():
    # [0, 0, 0, 0, 10] in two blocks: mean 2, m2 = 4·4 + 64 = 80, m3 = 4·(−8) + 512 = 480.
    m = Moments.of(np.array([[0.0], [0.0]])) + Moments.of(np.array([[0.0], [0.0], [10.0]]))
    assert m.n == 5 and m.mean[0] == 2.0
    assert m.m2[0] == pytest.approx(80) and m.m3[0] == pytest.approx(480)
    assert m.skewness()[0] == pytest.approx(1.5)
    assert m.mean_log[0] == pytest.approx(np.log(11) / 5)
    assert (m.min[0], m.max[0]) == (0.0, 10.0)
    assert Scaler.from_moments(m, ["x"]).log1p == (True,)


def test_from_moments_checks_its_input():
    with pytest.raises(ValueError, match="no rows"):
        Scaler.from_moments(Moments.empty(2), ["a", "b"])
    with pytest.raises(ValueError, match="1 feature names for moments of 2 columns"):
        Scaler.from_moments(Moments.of(np.ones((3, 2))), ["a"])
    with pytest.raises(ValueError, match="do not merge"):
        Moments.of(np.ones((3, 2))) + Moments.of(np.ones((3, 1)))


def _matrix_rule(X: np.ndarray, sc: Scaler) -> np.ndarray:
    """The transform as it was written for a matrix: copy, log the chosen columns, centre, divide."""
    out = X.copy()
    for j, use_log in enumerate(sc.log1p):
        if use_log:
            out[:, j] = np.copysign(np.log1p(np.abs(out[:, j])), out[:, j])
    return (out - np.asarray(sc.mean)) / np.asarray(sc.scale)


@pytest.mark.parametrize("workers", [1, 3])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_columns_give_the_matrix_rule_bit_for_bit(xp, rng, workers, dtype):
    """Fitting and transforming feature columns (as the pipeline does, on threads) equals the
    matrix path exactly; integer columns are taken as float64."""
    n = 3001
    ints = rng.integers(0, 400, n).astype(np.int32)
    cols_np = [ints, rng.lognormal(3, 1.2, n), rng.normal(0, 2, n), np.full(n, 7.0)]
    X = np.stack([c.astype(np.float64) for c in cols_np], axis=1)
    names = ["a", "b", "c", "d"]
    cols = [xp.asarray(c) for c in cols_np]

    moments = Moments.of_columns(cols, workers)
    reference = Moments.of(xp.asarray(X))
    for field in ("mean", "m2", "m3", "min", "max", "mean_log", "m2_log"):
        np.testing.assert_array_equal(getattr(moments, field), getattr(reference, field))
    sc = Scaler.from_moments(moments, names)
    assert sc.log1p == (False, True, False, False)

    Z = sc.transform_columns(cols, dtype, workers)
    assert Z.shape == (n, 4) and Z.dtype == np.dtype(dtype) and Z.flags.c_contiguous
    np.testing.assert_array_equal(to_numpy(Z), _matrix_rule(X, sc).astype(dtype))
    F = sc.transform_columns(cols, dtype, workers, order="F")  # the host fit's layout
    assert F.flags.f_contiguous and not F.flags.c_contiguous
    np.testing.assert_array_equal(to_numpy(F), to_numpy(Z))
    np.testing.assert_array_equal(to_numpy(sc.transform(xp.asarray(X))), _matrix_rule(X, sc))


def test_transform_columns_checks_the_number_of_columns(rng):
    sc = Scaler.fit(rng.normal(size=(50, 2)), ["a", "b"])
    with pytest.raises(ValueError, match="3 columns for a scaler of 2 features"):
        sc.transform_columns([np.zeros(5)] * 3)


def test_first_non_finite_finds_the_row_even_when_the_sum_overflows(xp):
    from gpuseg.scaling import first_non_finite
    assert first_non_finite(xp.asarray([[1.0, 2.0], [3.0, 4.0]])) is None
    assert first_non_finite(xp.asarray([1.7e308, 1.7e308])) is None  # finite values, infinite sum
    assert first_non_finite(xp.asarray([[1.0, 2.0], [3.0, np.nan], [np.inf, 0.0]])) == 1
    assert first_non_finite(xp.asarray([1.7e308, 1.7e308, -np.inf])) == 2
    assert first_non_finite(xp.asarray([1, 2, 3])) is None


def test_values_whose_squares_overflow_are_one_error_naming_the_reach_without_warnings(rng):
    # A monetary of 1e160 is finite, but its square is not: NumPy printed two RuntimeWarnings and
    # the error blamed sums that had not overflowed.
    import warnings
    X = np.column_stack([rng.random(50), rng.random(50)])
    X[7, 1] = 1e160
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(GpusegError, match=r"'monetary'.* reach 1e\+160.*squares"):
            Scaler.fit(X, ("frequency", "monetary"))
        # Cubes past float64 but squares within it: a scaler still, and no warning either.
        X[7, 1] = 1e110
        assert np.isfinite(Scaler.fit(X, ("frequency", "monetary")).scale).all()


def test_quantity_times_price_past_float64_is_a_bad_amount_without_a_warning():
    import warnings

    import pyarrow as pa

    from gpuseg.cleaning import line_amounts
    from gpuseg.columns import ColumnMapping
    batch = pa.record_batch({"q": pa.array([10.0, 2.0]), "p": pa.array([1e308, 3.5])})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = line_amounts(batch, ColumnMapping("c", "d", quantity="q", price="p"))
    assert np.isinf(got[0]) and got[1] == 7.0
