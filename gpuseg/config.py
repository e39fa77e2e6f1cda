"""Options of a segmentation run: one frozen dataclass, validated in one place."""

from __future__ import annotations

import datetime as dt
import math
import numbers
import os
from collections.abc import Iterable, Mapping
import re
from dataclasses import dataclass, field
from pathlib import Path

from .backend import BACKEND_CHOICES
from .cleaning import FIRST_DATE, LAST_DATE
from .columns import ROLES
from .errors import GpusegError
from .features import DEFAULT_FEATURES, FEATURES
from .outputs import check_out

DEMO_CUSTOMERS = 50_000
PRECISIONS = ("auto", "float32", "float64")


#: Seeds are NumPy's legacy seeds (scikit-learn's k-means++ draws): 32 bits.
SEED_MAX = 2**32 - 1
#: Most k-means initialisations a run takes (each is a whole fit).
MAX_N_INIT = 1000


def _int(name: str, value: object, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low \
            or (high is not None and value > high):
        span = f">= {low}" if high is None else f"from {low} to {high}"
        raise GpusegError(f"{name} must be an integer {span}, got {value!r}")


def as_inputs(inputs: object) -> tuple[str, ...]:
    """Inputs given from Python: a path (str or Path), or several; None for none."""
    if inputs is None:
        return ()
    if isinstance(inputs, (str, os.PathLike)):
        return (os.fspath(inputs),)
    items = None if isinstance(inputs, (bytes, Mapping)) or not isinstance(inputs, Iterable) else list(inputs)
    if items is None or not all(isinstance(i, (str, os.PathLike)) for i in items):
        raise GpusegError(f"inputs must be a path (str or Path) or a list of them, got {inputs!r:.80}")
    return tuple(os.fspath(i) for i in items)


def as_date(as_of: object, option: str = "--as-of") -> dt.date | None:
    """An as_of given from Python: None, a date, a datetime (its day) or YYYY-MM-DD text; checked."""
    if as_of is None:
        return None
    if isinstance(as_of, str):
        return parse_date(as_of, option)
    return check_as_of(as_of, option)  # type: ignore[arg-type]


def parse_count(text: str, option: str, low: int = 0, high: int | None = None) -> int:
    """``'100000'``, ``'1e8'`` or ``'10_000_000'`` -> int, from ``low`` to ``high``.

    Raises
    ------
    GpusegError
        For text that is no whole number in range (fractions, inf, nan, 1e400 too).
    """
    clean = text.strip().replace("_", "")
    try:
        value: float = int(clean)
    except ValueError:
        try:
            value = float(clean)
        except ValueError:
            raise GpusegError(f"{option} takes whole numbers such as 1000000 or 1e6, got {text!r}") from None
    if not math.isfinite(value) or value != int(value) or value < low or (high is not None and value > high):
        span = f"from {low:,} to {high:,}" if high is not None else f">= {low:,}"
        raise GpusegError(f"{option} must be a whole number {span}, got {text!r}")
    return int(value)


def parse_counts(text: str, option: str, low: int = 0, high: int | None = None) -> tuple[int, ...]:
    """Comma-separated :func:`parse_count` values, sorted, without repeats; at least one."""
    values = sorted({parse_count(part, option, low, high) for part in text.split(",") if part.strip()})
    if not values:
        raise GpusegError(f"{option} is empty; give numbers such as 1e5,1e6")
    return tuple(values)


def parse_features(text: str | None) -> tuple[str, ...]:
    """``"recency_days,frequency"`` -> a tuple of names (not yet validated)."""
    if text is None:
        return DEFAULT_FEATURES
    return tuple(part.strip() for part in text.split(",") if part.strip())


def parse_date(text: str, option: str = "--as-of") -> dt.date:
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text.strip()):  # fromisoformat also takes 20240601, 2024-W22-6
            raise ValueError(text)
        day = dt.date.fromisoformat(text.strip())
    except ValueError:
        raise GpusegError(f"{option} must be a date as YYYY-MM-DD, got {text!r}") from None
    return check_as_of(day, option)


def check_as_of(as_of: dt.date, option: str = "--as-of") -> dt.date:
    """``as_of`` if it can follow a usable transaction date (:data:`gpuseg.cleaning.FIRST_DATE` ..
    :data:`~gpuseg.cleaning.LAST_DATE`), else :class:`GpusegError`."""
    first, last = FIRST_DATE + dt.timedelta(days=1), LAST_DATE + dt.timedelta(days=1)
    if isinstance(as_of, dt.datetime):  # a datetime (or pandas Timestamp) names its day
        as_of = as_of.date()
    if not isinstance(as_of, dt.date):
        raise GpusegError(f"{option} must be a date (YYYY-MM-DD), got {as_of!r}")
    if not first <= as_of <= last:
        raise GpusegError(f"{option} {as_of!s} is out of range; allowed: {first} to {last}")
    return as_of


@dataclass(frozen=True)
class SegmentConfig:
    """Everything :func:`gpuseg.segment` needs to know.

    ``inputs`` empty means the built-in demo data. ``columns`` maps a role
    (customer, date, invoice, amount, quantity, price) to a column name, for
    the roles that should not be auto-detected. ``precision`` of the k-means
    data: ``auto`` is float32 on a GPU and float64 on the CPU.
    """

    inputs: tuple[str, ...] = ()
    out: Path = Path("segments")
    k: int = 5
    features: tuple[str, ...] = DEFAULT_FEATURES
    backend: str = "auto"
    columns: dict[str, str] = field(default_factory=dict)
    date_format: str | None = None
    as_of: dt.date | None = None
    max_iter: int = 300
    tol: float = 1e-4
    n_init: int = 1
    seed: int = 0
    precision: str = "auto"
    reference_model: Path | None = None
    demo_customers: int = DEMO_CUSTOMERS

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", as_inputs(self.inputs))
        if not isinstance(self.out, (str, os.PathLike)):
            raise GpusegError(f"out must be a folder path (str or Path), got {self.out!r:.80}")
        check_out(self.out, self.inputs, {"--reference-model": self.reference_model})
        object.__setattr__(self, "as_of", as_date(self.as_of))
        object.__setattr__(self, "out", Path(os.fspath(self.out)))
        # From Python, "recency_days,frequency" as the CLI takes it (a tuple of its letters otherwise),
        # None for the default, names trimmed as the CLI trims them.
        features = self.features
        if features is None or isinstance(features, str):
            features = parse_features(features)
        else:
            features = None if isinstance(features, Mapping) or not isinstance(features, Iterable) \
                else list(features)
            if features is None or not all(isinstance(f, str) for f in features):
                raise GpusegError(f"features must be a list of feature names or a comma-separated string, "
                                  f"got {self.features!r:.80}")
        object.__setattr__(self, "features", tuple(f.strip() for f in features))
        columns = {} if self.columns is None else self.columns
        if not isinstance(columns, Mapping) or not all(c is None or isinstance(c, str) for c in columns.values()):
            raise GpusegError(f"columns must be a dict of role -> column name, got {self.columns!r:.80}")
        object.__setattr__(self, "columns", {role: col for role, col in columns.items() if col is not None})
        if self.date_format is not None and not isinstance(self.date_format, str):
            raise GpusegError(f"date_format must be a strptime format (text) or None, got {self.date_format!r:.80}")
        if self.reference_model is not None:
            object.__setattr__(self, "reference_model", Path(self.reference_model))
            if not self.reference_model.is_file():
                raise GpusegError(f"--reference-model {str(self.reference_model)!r} does not exist")
        for name, option, low, high in (("k", "--k", 1, None), ("max_iter", "--max-iter", 1, None),
                                        ("n_init", "--n-init", 1, MAX_N_INIT), ("seed", "--seed", 0, SEED_MAX),
                                        ("demo_customers", "demo_customers", 1, None)):
            _int(option, getattr(self, name), low, high)
            object.__setattr__(self, name, int(getattr(self, name)))  # NumPy integers too: JSON writes ints
        if isinstance(self.tol, bool) or not isinstance(self.tol, numbers.Real) or not 0 <= self.tol < float("inf"):
            raise GpusegError(f"--tol must be a finite number >= 0, got {self.tol!r}")
        if self.precision not in PRECISIONS:
            raise GpusegError(f"unknown precision {self.precision!r}; allowed: {', '.join(PRECISIONS)}")
        if self.backend not in BACKEND_CHOICES:
            raise GpusegError(f"unknown backend {self.backend!r}; allowed: {', '.join(BACKEND_CHOICES)}")
        if not self.features:
            raise GpusegError(f"--features is empty; allowed: {', '.join(FEATURES)}")
        unknown = [f for f in self.features if f not in FEATURES]
        if unknown:
            raise GpusegError(f"unknown feature {unknown[0]!r}; allowed: {', '.join(FEATURES)}")
        if len(set(self.features)) != len(self.features):
            raise GpusegError(f"--features names a feature twice: {','.join(self.features)}")
        bad_roles = set(self.columns) - set(ROLES)
        if bad_roles:
            raise GpusegError(f"unknown column role {sorted(bad_roles)[0]!r}; allowed: {', '.join(ROLES)}")
        if self.date_format is not None and "%" not in self.date_format:
            raise GpusegError(f"--date-format {self.date_format!r} has no strptime codes; "
                              "write it like '%m/%d/%Y %H:%M'")
