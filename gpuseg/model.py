"""The reusable model: features, transforms, centroids and how to read input."""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .columns import ROLES
from .errors import GpusegError
from .features import FEATURES
from .scaling import Scaler

FORMAT = "gpuseg-model"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class SegmentModel:
    """A fitted segmentation, as stored in ``model.json``.

    ``centroids`` are in the scaled feature space (what the distances use);
    ``centroids_original`` are the same points in original units.
    """

    features: tuple[str, ...]
    scaler: Scaler
    centroids: np.ndarray
    seed: int
    as_of: dt.date
    backend: str
    columns: dict[str, str | None]
    date_format: str | None
    training: dict[str, Any] = field(default_factory=dict)
    version: str = ""
    segment_names: tuple[str, ...] = ()
    #: Segments kept for their id and name only (a reference model's segments that no
    #: segment of this run matched): no customer is assigned to them.
    retired: tuple[int, ...] = ()

    def names(self) -> list[str]:
        """Segment names; "Segment i" for models saved without names."""
        if len(self.segment_names) == self.k:
            return list(self.segment_names)
        return [f"Segment {i}" for i in range(self.k)]

    @property
    def k(self) -> int:
        return int(self.centroids.shape[0])

    def assigned(self) -> np.ndarray:
        """The ids of the segments customers are assigned to (all but the retired ones)."""
        return np.setdiff1d(np.arange(self.k), np.asarray(self.retired, dtype=np.int64))

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "gpuseg_version": self.version,
            "k": self.k,
            "seed": int(self.seed),
            "as_of": self.as_of.isoformat(),
            "backend": self.backend,
            "features": list(self.features),
            "scaler": self.scaler.to_dict(),
            "centroids": self.centroids.tolist(),
            "centroids_original": self.scaler.inverse_transform(self.centroids).tolist(),
            "segment_names": self.names(),
            "retired": list(self.retired),
            "columns": dict(self.columns),
            "date_format": self.date_format,
            "training": self.training,
        }

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "SegmentModel":
        """Read and check a ``model.json``.

        Raises
        ------
        GpusegError
            When the file is missing, not JSON, of another format or version,
            or internally inconsistent.
        """
        path = Path(path)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise GpusegError(f"model file {str(path)!r} does not exist") from None
        except (OSError, UnicodeDecodeError, ValueError) as exc:  # ValueError: JSON, or a number of 4300+ digits
            raise GpusegError(f"model file {str(path)!r} is not valid JSON ({exc})") from None
        except RecursionError:
            raise GpusegError(f"model file {str(path)!r} is not a gpuseg model (JSON nested too deeply)") from None
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise GpusegError(f"{str(path)!r} is not a gpuseg model (no \"format\": \"{FORMAT}\")")
        if type(d.get("format_version")) is not int or d.get("format_version") != FORMAT_VERSION:
            raise GpusegError(f"model format version {d.get('format_version')!r} is not supported; "
                              f"this gpuseg reads version {FORMAT_VERSION}")
        for key, kind, what in (("seed", int, "a whole number"), ("segment_names", list, "a list"),
                                ("features", list, "a list"), ("columns", dict, "an object"),
                                ("k", int, "a whole number"), ("retired", list, "a list")):
            if key in d and d[key] is not None and type(d[key]) is not kind:
                raise GpusegError(f"model file {str(path)!r} is corrupted: {key} must be {what}, "
                                  f"got {d[key]!r:.60}")
        problem = _json_problem(d)
        if problem:
            raise GpusegError(f"model file {str(path)!r} is corrupted: {problem}")
        try:
            features = tuple(d["features"])
            scaler = Scaler.from_dict(d["scaler"])
            centroids = np.asarray(d["centroids"], dtype=np.float64)
            model = cls(features=features, scaler=scaler, centroids=centroids, seed=int(d["seed"]),
                        as_of=dt.date.fromisoformat(d["as_of"]), backend=str(d["backend"]),
                        columns=dict(d["columns"]), date_format=d.get("date_format"),
                        training=dict(d.get("training") or {}), version=str(d.get("gpuseg_version", "")),
                        segment_names=tuple(d.get("segment_names") or ()), retired=tuple(d.get("retired") or ()))
        except (KeyError, TypeError, ValueError) as exc:
            raise GpusegError(f"model file {str(path)!r} is corrupted: {type(exc).__name__}: {exc}") from None
        unknown = [f for f in features if f not in FEATURES]
        if unknown:
            raise GpusegError(f"model uses unknown feature {unknown[0]!r}; allowed: {', '.join(FEATURES)}")
        if scaler.features != features:
            raise GpusegError(f"model file {str(path)!r} is corrupted: scaler features differ from features")
        if (centroids.ndim != 2 or centroids.shape[1] != len(features) or centroids.shape[0] < 1
                or not all(math.isfinite(v) for v in centroids.ravel())):
            raise GpusegError(f"model file {str(path)!r} is corrupted: centroids must be a finite "
                              f"k × {len(features)} array")
        if d["k"] != centroids.shape[0]:
            raise GpusegError(f"model file {str(path)!r} is corrupted: k is {d['k']} but there are "
                              f"{centroids.shape[0]} centroids")
        if model.segment_names and len(model.segment_names) != centroids.shape[0]:
            raise GpusegError(f"model file {str(path)!r} is corrupted: {len(model.segment_names)} segment names "
                              f"for {centroids.shape[0]} centroids")
        problem = _shape_problem(model)
        if problem:
            raise GpusegError(f"model file {str(path)!r} is corrupted: {problem}")
        return model


def _json_problem(d: dict[str, Any]) -> str | None:
    """What in a parsed ``model.json`` has the wrong JSON type (Python would convert it quietly), or None."""
    if "k" not in d:
        return "k is missing"
    if not d.get("features"):
        return "features must name at least one feature"
    for key in ("scaler", "centroids", "seed", "as_of", "backend", "columns"):
        if key not in d:
            return f"{key} is missing"
    rows = d.get("centroids")
    if not isinstance(rows, list) or not all(isinstance(r, list) and all(_number(v) for v in r) for r in rows):
        return "centroids must be a list of rows of finite numbers"
    d_features = len(d["features"]) if isinstance(d["features"], list) else None
    if d_features is not None and any(len(r) != d_features for r in rows):
        return f"centroids must be rows of {d_features} numbers (one per feature)"
    if not isinstance(d["columns"], dict):
        return f"columns must be an object of role -> column name, got {d['columns']!r:.60}"
    if not isinstance(d["as_of"], str):
        return f"as_of must be a date written YYYY-MM-DD, got {d['as_of']!r:.60}"
    try:
        dt.date.fromisoformat(d["as_of"])
    except ValueError:
        return f"as_of must be a date written YYYY-MM-DD, got {d['as_of']!r:.60}"
    if not all(isinstance(n, str) for n in d.get("segment_names") or ()):
        return "segment_names must be text"
    retired = d.get("retired") or []
    if not all(type(i) is int and 0 <= i < len(rows) for i in retired) or len(set(retired)) != len(retired) \
            or len(retired) >= len(rows):
        return f"retired must list distinct segment ids below k ({len(rows)}), not all of them"
    return None


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _shape_problem(model: SegmentModel) -> str | None:
    """What makes a parsed model unusable (a wrong type or length), or None."""
    first, last = dt.date(1900, 1, 2), dt.date(2262, 4, 12)  # the days as_of can be (gpuseg.config.check_as_of)
    if not first <= model.as_of <= last:
        return f"as_of {model.as_of} is out of range ({first} to {last})"
    if model.date_format is not None and not isinstance(model.date_format, str):
        return f"date_format must be text or null, got {model.date_format!r}"
    unknown = sorted(set(model.columns) - set(ROLES))
    if unknown:
        return f"columns has unknown role {unknown[0]!r}; roles are {', '.join(ROLES)}"
    bad = [role for role, col in model.columns.items() if col is not None and not isinstance(col, str)]
    if bad:
        return f"column of {bad[0]!r} must be text or null"
    if any(not name.isprintable() for name in model.segment_names):  # escape sequences would reach the terminal
        return "segment_names must be printable text"
    if not all(isinstance(f, str) for f in model.features):
        return "features must be names"
    t = model.training
    for key in ("segment_shares", "segment_mean_distance"):
        nullable = key == "segment_mean_distance"  # an empty segment has no mean distance
        values = t.get(key)
        if values is not None and (not isinstance(values, list) or len(values) != model.k
                                   or not all((_number(v) and v >= 0) or (nullable and v is None) for v in values)):
            return (f"training.{key} must be {model.k} numbers of 0 or more, one per segment"
                    + (" (null for an empty segment)" if nullable else ""))
    for key in ("mean_distance", "n_customers"):
        if t.get(key) is not None and not _number(t[key]):
            return f"training.{key} must be a number"
    return None
