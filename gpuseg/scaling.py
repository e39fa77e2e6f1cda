"""Scaling: log1p for skewed non-negative features, then standardisation.

Which features get log1p is decided on the training data (non-negative and
skewness above :data:`SKEW_THRESHOLD`) and recorded, so that scoring applies
exactly the same transform. The log is sign-preserving (``sign(x)·log1p(|x|)``)
so a negative value met at scoring time stays finite.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .backend import get_namespace
from .errors import GpusegError

SKEW_THRESHOLD = 1.0


def signed_log1p(x: Any) -> Any:
    xp = get_namespace(x)
    return xp.sign(x) * xp.log1p(xp.abs(x))


def skewness(x: Any) -> float:
    """Sample skewness (Fisher-Pearson, biased) of a 1-D array; 0 for a constant."""
    centered = x - x.mean()
    m2 = float((centered * centered).mean())
    if m2 <= 0:
        return 0.0
    return float((centered**3).mean()) / m2**1.5


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
        """Fit on ``X`` of shape (n, len(features)), float64, any namespace."""
        logs, means, scales = [], [], []
        for j in range(X.shape[1]):
            col = X[:, j]
            use_log = bool(float(col.min()) >= 0 and skewness(col) > SKEW_THRESHOLD)
            if use_log:
                col = signed_log1p(col)
            mean = float(col.mean())
            std = float(col.std())
            logs.append(use_log)
            means.append(mean)
            scales.append(std if std > 0 else 1.0)
        return cls(tuple(features), tuple(logs), tuple(means), tuple(scales))

    def transform(self, X: Any) -> Any:
        """Scaled copy of ``X`` (n, d) in its namespace and dtype."""
        xp = get_namespace(X)
        out = xp.array(X, copy=True)
        for j, use_log in enumerate(self.log1p):
            if use_log:
                out[:, j] = signed_log1p(out[:, j])
        out -= xp.asarray(self.mean, dtype=out.dtype)
        out /= xp.asarray(self.scale, dtype=out.dtype)
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
            sc = cls(tuple(d["features"]), tuple(bool(v) for v in d["log1p"]),
                     tuple(float(v) for v in d["mean"]), tuple(float(v) for v in d["scale"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise GpusegError(f"invalid scaler in model: {exc}") from None
        n = len(sc.features)
        if not (len(sc.log1p) == len(sc.mean) == len(sc.scale) == n) or any(s <= 0 for s in sc.scale):
            raise GpusegError("invalid scaler in model: lengths differ or a scale is not positive")
        return sc
