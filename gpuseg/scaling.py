"""Scaling: log1p for skewed non-negative features, then standardisation.

Which features get log1p is decided on the training data (non-negative and
skewness above :data:`SKEW_THRESHOLD`) and recorded, so that scoring applies
exactly the same transform. The log is sign-preserving (``sign(x)·log1p(|x|)``)
so a negative value met at scoring time stays finite.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from .backend import get_namespace, to_numpy
from .errors import GpusegError

SKEW_THRESHOLD = 1.0


def signed_log1p(x: Any) -> Any:
    """``sign(x)·log1p(|x|)`` elementwise, in ``x``'s namespace."""
    xp = get_namespace(x)
    out = xp.abs(x) if x.dtype.kind == "f" else xp.abs(x.astype(xp.float64))
    xp.log1p(out, out=out)
    return xp.copysign(out, x, out=out)  # equal to sign(x)·log1p(|x|), in one buffer


def first_non_finite(X: Any) -> int | None:
    """Row of the first non-finite value of ``X`` (n, d) or (n,), in any namespace; None when all are finite.

    One reduction where ``X`` lives; only a count and, when there is one, a
    row index come back to the host.
    """
    xp = get_namespace(X)
    if X.dtype.kind != "f":
        return None
    # One pass for the usual answer: a NaN or an infinity makes the sum non-finite (finite
    # values whose sum overflows only send the search below).
    with np.errstate(over="ignore", invalid="ignore"):  # that is what the sum is for
        if bool(xp.isfinite(X.sum())):
            return None
    ok = xp.isfinite(X)
    if ok.ndim > 1:
        ok = ok.all(axis=1)
    if int(xp.count_nonzero(ok)) == ok.shape[0]:
        return None
    return int(xp.argmin(ok))


def skewness(x: Any) -> float:
    """Sample skewness (Fisher-Pearson, biased) of a 1-D array; 0 for a constant."""
    return float(Moments.of(x.reshape(-1, 1)).skewness()[0])


def _column_moments(col: Any, xp: Any) -> Any:
    """(7,) array: mean, m2, m3, min, max, mean of log1p, m2 of log1p of one column (see Moments)."""
    n = col.shape[0]
    col = xp.ascontiguousarray(col, dtype=xp.float64)  # one gather, then every pass runs at unit stride
    low, high = col.min(), col.max()
    with np.errstate(over="ignore", invalid="ignore"):  # huge values overflow m2, m3: Scaler.from_moments says so
        mean = col.sum() / n
        c = col - mean
        c2 = c * c
        m2 = c2.sum()
        c2 *= c
        m3 = c2.sum()
    del c, c2
    if float(low) >= 0:  # log1p equals the signed log1p here, without the sign and abs passes
        lg = xp.log1p(col)
        mean_log = lg.sum() / n
        lg -= mean_log
        lg *= lg
        m2_log = lg.sum()
        del lg
    else:
        mean_log = m2_log = xp.asarray(np.nan)
    return xp.stack([mean, m2, m3, low, high, mean_log, m2_log])


@dataclass(frozen=True, eq=False)
class Moments:
    """Per-column moments of a block of rows, mergeable with ``+``.

    What :meth:`Scaler.from_moments` needs, in a form that adds up: each
    block (one array, a Dask partition, a streamed batch) is summarised by
    :meth:`of`, and summaries of disjoint blocks merge with Chan, Golub and
    LeVeque's pairwise update (Pébay's for the third moment), so a merge is
    as accurate as one pass over the union (about 1e-16 relative on the
    scaler). For one block, means and spreads are the centred sums per column
    that the one-array fit has always used, bit for bit; cubes are ``c·c·c``
    rather than ``c**3`` (libm's ``pow`` cost 20 times more), which moves the
    skewness by rounding only.

    Attributes
    ----------
    n : int
        Rows summarised.
    mean, m2, m3 : float64 arrays of shape (d,)
        Column means and the sums of squared and cubed deviations from them.
    min, max : float64 arrays of shape (d,)
        ``+inf`` and ``-inf`` for no rows.
    mean_log, m2_log : float64 arrays of shape (d,)
        Mean and sum of squared deviations of ``log1p`` of the column; NaN
        where the block has a negative value, because such a column is never
        logged (NaN then carries through every merge).
    """

    n: int
    mean: np.ndarray
    m2: np.ndarray
    m3: np.ndarray
    min: np.ndarray
    max: np.ndarray
    mean_log: np.ndarray
    m2_log: np.ndarray

    @classmethod
    def empty(cls, d: int) -> "Moments":
        """The moments of no rows of ``d`` columns: the identity of ``+``."""
        zero = np.zeros(d)
        return cls(0, zero, zero, zero, np.full(d, np.inf), np.full(d, -np.inf), zero, zero)

    @classmethod
    def of(cls, X: Any) -> "Moments":
        """Moments of the rows of ``X``, shape (n, d), any namespace; results on the host."""
        n, d = X.shape
        if n == 0:
            return cls.empty(d)
        return cls.of_columns([X[:, j] for j in range(d)])

    @classmethod
    def of_columns(cls, columns: Sequence[Any], workers: int = 1) -> "Moments":
        """Moments of columns of equal length (1-D, any numeric dtype, one namespace), as
        the rows they form; results on the host.

        Each column is reduced on its own, with NumPy's pairwise summation (a
        reduction over axis 0 of a C-ordered matrix adds row after row instead,
        less accurately), on ``workers`` threads on the host (NumPy releases
        the GIL).
        """
        n = int(columns[0].shape[0]) if columns else 0
        if n == 0:
            return cls.empty(len(columns))
        xp = get_namespace(*columns)
        if xp is np and workers > 1 and len(columns) > 1:
            with ThreadPoolExecutor(min(workers, len(columns))) as pool:
                per_column = list(pool.map(lambda c: _column_moments(c, xp), columns))
        else:
            per_column = [_column_moments(c, xp) for c in columns]
        v = to_numpy(xp.stack(per_column, axis=1))  # one copy back from the device
        return cls(n, *(v[i].copy() for i in range(7)))

    def __add__(self, other: "Moments") -> "Moments":
        if not isinstance(other, Moments):
            return NotImplemented
        if self.mean.shape != other.mean.shape:
            raise ValueError(f"moments of {self.mean.shape[0]} and {other.mean.shape[0]} columns do not merge")
        if other.n == 0:
            return self
        if self.n == 0:
            return other
        na, nb = float(self.n), float(other.n)
        n = na + nb
        delta = other.mean - self.mean
        m2 = self.m2 + other.m2 + delta * delta * (na * nb / n)
        m3 = (self.m3 + other.m3 + delta ** 3 * (na * nb * (na - nb) / (n * n))
              + 3.0 * delta * (na * other.m2 - nb * self.m2) / n)
        delta_log = other.mean_log - self.mean_log
        return Moments(self.n + other.n, self.mean + delta * (nb / n), m2, m3,
                       np.minimum(self.min, other.min), np.maximum(self.max, other.max),
                       self.mean_log + delta_log * (nb / n),
                       self.m2_log + other.m2_log + delta_log * delta_log * (na * nb / n))

    def constant(self) -> np.ndarray:
        """(d,) bool: the column holds one value (decided on min and max, free of rounding)."""
        return self.min == self.max

    def skewness(self) -> np.ndarray:
        """(d,) sample skewness (Fisher-Pearson, biased); 0 for a constant column."""
        n = max(self.n, 1)
        m2, m3 = self.m2 / n, self.m3 / n
        spread = (m2 > 0) & ~self.constant()
        out = np.zeros(m2.shape)
        with np.errstate(over="ignore", invalid="ignore"):  # overflowing moments: NaN or ±inf, never a log
            out[spread] = m3[spread] / m2[spread] ** 1.5
        return out


@dataclass(frozen=True)
class Scaler:
    """Per-feature transform: optional signed log1p, then (x − mean) / scale.

    Attributes
    ----------
    features : tuple of str
    log1p : tuple of bool
    mean, scale : tuple of float
        Of the (logged) training values; a zero spread is stored as scale 1.
    """

    features: tuple[str, ...]
    log1p: tuple[bool, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]

    @classmethod
    def fit(cls, X: Any, features: tuple[str, ...] | list[str]) -> "Scaler":
        """Fit on ``X`` of shape (n, len(features)), float64, any namespace.

        The moments of ``X`` as one block, then :meth:`from_moments`: the
        same rule as for moments reduced from partitions or batches.
        """
        return cls.from_moments(Moments.of(X), features)

    @classmethod
    def from_moments(cls, moments: Moments, features: tuple[str, ...] | list[str]) -> "Scaler":
        """The scaler of the rows that ``moments`` summarise (merged from any number of blocks).

        A column gets the signed log1p when it is non-negative and its
        skewness is above :data:`SKEW_THRESHOLD`; it is then centred and
        scaled by the mean and population standard deviation of the logged
        (or raw) values. A constant column is centred on its value with
        scale 1.

        Parameters
        ----------
        moments : Moments
            Of d columns, at least one row.
        features : sequence of str, length d
        """
        features = tuple(features)
        if len(features) != moments.mean.shape[0]:
            raise ValueError(f"{len(features)} feature names for moments of {moments.mean.shape[0]} columns")
        if moments.n == 0:
            raise ValueError("cannot fit a scaler on no rows")
        n = moments.n
        skew = moments.skewness()
        constant = moments.constant()
        logs, means, scales = [], [], []
        for j in range(len(features)):
            use_log = bool(moments.min[j] >= 0 and skew[j] > SKEW_THRESHOLD)
            if constant[j]:
                # Its value exactly: a mean summed in floating point can be off by an ulp,
                # and a spread of rounding noise is no spread.
                mean, std = float(moments.min[j]), 0.0
            elif use_log:
                mean, std = float(moments.mean_log[j]), math.sqrt(float(moments.m2_log[j] / n))
            else:
                mean, std = float(moments.mean[j]), math.sqrt(float(moments.m2[j] / n))
            if not (math.isfinite(mean) and math.isfinite(std)):
                # Finite values whose sums, or the sums of their squares or cubes, overflow: no
                # standardisation of them is meaningful (nor the skewness that decides the log).
                reach = max(abs(float(moments.min[j])), abs(float(moments.max[j])))
                raise GpusegError(f"feature {features[j]!r} cannot be scaled: its values reach {reach:.3g}, and "
                                  "their sum or the sums of their squares or cubes pass float64's range (about "
                                  "1.8e308); check the amount column")
            logs.append(use_log)
            means.append(mean)
            scales.append(std if std > 0 else 1.0)
        return cls(features, tuple(logs), tuple(means), tuple(scales))

    def transform(self, X: Any) -> Any:
        """Scaled copy of ``X`` (n, d) in its namespace and dtype."""
        return self.transform_columns([X[:, j] for j in range(X.shape[1])], X.dtype)

    def transform_columns(self, columns: Sequence[Any], dtype: Any = None, workers: int = 1,
                          order: str = "C") -> Any:
        """The scaled matrix of ``columns`` (one 1-D array per feature, in ``features``
        order), shape (n, d), in their namespace.

        Each column is transformed at unit stride in ``work`` precision (the
        columns' common float type, float64 for integers) and stored once
        into its column of the result of ``dtype`` (default: the work
        precision), C- or F-ordered (``order``; the host's Lloyd step reads
        points column by column); on the host, columns run on ``workers`` threads.
        """
        if len(columns) != len(self.features):
            raise ValueError(f"{len(columns)} columns for a scaler of {len(self.features)} features")
        xp = get_namespace(*columns)
        n = int(columns[0].shape[0])
        work = xp.result_type(*[c.dtype for c in columns], xp.float32) if \
            all(c.dtype.kind == "f" for c in columns) else xp.float64
        out = xp.empty((n, len(columns)), dtype=dtype or work, order=order)

        def one(j: int) -> None:
            col = xp.array(columns[j], dtype=work, copy=True)
            if self.log1p[j]:
                col = signed_log1p(col)
            col -= xp.asarray(self.mean[j], dtype=work)
            col /= xp.asarray(self.scale[j], dtype=work)
            out[:, j] = col

        if xp is np and workers > 1 and len(columns) > 1:
            with ThreadPoolExecutor(min(workers, len(columns))) as pool:
                list(pool.map(one, range(len(columns))))
        else:
            for j in range(len(columns)):
                one(j)
        return out

    def inverse_transform(self, Z: Any) -> Any:
        """Original units of scaled rows, e.g. the centroids."""
        xp = get_namespace(Z)
        out = Z * xp.asarray(self.scale, dtype=Z.dtype) + xp.asarray(self.mean, dtype=Z.dtype)
        for j, use_log in enumerate(self.log1p):
            if use_log:
                col = out[:, j]
                out[:, j] = xp.sign(col) * xp.expm1(xp.abs(col))
        return out

    def to_dict(self) -> dict:
        return {"features": list(self.features), "log1p": list(self.log1p),
                "mean": list(self.mean), "scale": list(self.scale)}

    @classmethod
    def from_dict(cls, d: dict) -> "Scaler":
        try:
            if not all(isinstance(v, bool) for v in d["log1p"]):  # bool("no") is True
                raise ValueError(f"log1p must be true or false per feature, got {d['log1p']!r:.60}")
            for key in ("mean", "scale"):  # float("1") and float(True) would pass
                if not isinstance(d[key], list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                           for v in d[key]):
                    raise ValueError(f"{key} must be a list of numbers, got {d[key]!r:.60}")
            sc = cls(tuple(d["features"]), tuple(bool(v) for v in d["log1p"]),
                     tuple(float(v) for v in d["mean"]), tuple(float(v) for v in d["scale"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise GpusegError(f"invalid scaler in model: {exc}") from None
        n = len(sc.features)
        if not (len(sc.log1p) == len(sc.mean) == len(sc.scale) == n) or any(s <= 0 for s in sc.scale):
            raise GpusegError("invalid scaler in model: lengths differ or a scale is not positive")
        if not all(math.isfinite(v) for v in sc.mean + sc.scale):
            raise GpusegError("invalid scaler in model: a mean or scale is not finite")
        return sc
