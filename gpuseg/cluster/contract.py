"""The contract between the Lloyd driver and a step: :class:`Partials` and :class:`Step`.

A step owns its points, wherever and however they are stored (a NumPy array
cut into blocks for threads, a padded CuPy array for the fused kernel, host
memory streamed through a device, partitions on Dask workers). The driver
(:func:`gpuseg.cluster.lloyd.lloyd`) sees only centres of shape (k, d) and
the partial sums that come back, as FAISS's ``DatasetAssign`` does for its
clustering loop (``count``, ``dim``, ``get_subset``, ``assign_to``).

This module imports nothing else from gpuseg, so every step and the driver
can depend on it without a cycle.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass
class Partials:
    """Per-block results of one Lloyd step; blocks reduce by ``+``.

    Attributes
    ----------
    sums : array of shape (k, d), float64
        Sum of the points assigned to each cluster (or its change, with ``delta``).
    counts : array of shape (k,), float64
        Number of points assigned to each cluster (or its change, with ``delta``).
    inertia : scalar
        Sum of squared distances of the points to their nearest centre.
    n_changed : scalar or None
        Points whose label differs from the step's previous labels (all of
        them on the first call); None when the step does not keep labels.
    delta : bool
        True when ``sums`` and ``counts`` are the change since the step's
        previous call rather than the full sums.
    """

    sums: Any
    counts: Any
    inertia: Any
    n_changed: Any = None
    delta: bool = False

    def __add__(self, other: "Partials") -> "Partials":
        if self.delta != other.delta:
            raise ValueError("cannot add full partial sums to a change of partial sums")
        changed = None if self.n_changed is None or other.n_changed is None else self.n_changed + other.n_changed
        return Partials(self.sums + other.sums, self.counts + other.counts, self.inertia + other.inertia,
                        changed, self.delta)


def reduce_partials(parts: Iterable[Partials]) -> Partials:
    """The sum of one or more :class:`Partials`, in order."""
    parts = iter(parts)
    total = next(parts)
    for p in parts:
        total = total + p
    return total


@runtime_checkable
class Step(Protocol):
    """One Lloyd step over points the step owns.

    Centres passed in and returned are arrays of shape (k, ``dim()``) in the
    namespace the step names (its :attr:`xp`), in the points' dtype; a step
    that needs another layout (padding, device copies) makes it itself.
    """

    #: Short name for reports: ``generic``, ``fused``, ``streamed-fused``, ``dask``…
    name: str
    #: Array namespace of the centres and partial sums the step takes and returns.
    xp: Any

    def count(self) -> int:
        """Number of points."""
        ...

    def dim(self) -> int:
        """Number of features per point."""
        ...

    def get_subset(self, indices: np.ndarray | None) -> Any:
        """Rows ``indices`` (host integer array; None for all) as an array of shape
        (m, dim) in :attr:`xp`: for seeding and for re-seeding empty clusters."""
        ...

    def partials(self, centers: Any, delta: bool = False) -> Partials:
        """Assign every point to its nearest centre and return the partial sums.

        With ``delta=True`` the step may return only the change since its
        previous call (``Partials.delta`` says which it did); the driver
        asks for it only when it holds the sums of that previous call.
        """
        ...

    def labels(self) -> Any | None:
        """Labels of the last :meth:`partials` call (int32, shape (n,)), or None
        when the step does not keep them."""
        ...

    def restart(self) -> None:
        """Forget the labels of an earlier run: the next :meth:`partials` call counts
        every point as changed, as the first iteration of a fresh run does."""
        ...

    def assign(self, centers: Any) -> tuple[Any, Any]:
        """Labels (int32, shape (n,)) and float64 squared distances to the nearest centre."""
        ...

    def inertia(self, centers: Any) -> float:
        """Sum of squared distances of the points to ``centers``, under the labels
        of the last :meth:`partials` call when the step keeps them, else to the
        nearest centre."""
        ...
