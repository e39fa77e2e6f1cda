"""Device memory planning for the k-means fit: on the device, or streamed.

Before fitting on a GPU, the planner estimates the bytes the fit needs (the
centred, padded working copy of the data, the k-means++ distance rows, the
label and distance vectors) against the free device memory. When it does
not fit, the data stay in host memory and every Lloyd iteration streams them
through the device in blocks (:class:`gpuseg.cluster.steps.StreamedStep`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

#: Share of the free device memory a plan may use; the rest is left for the
#: allocator's rounding and for other users of the device.
HEADROOM = 0.85


def _padded(d: int, itemsize: int) -> int:
    w = 16 // itemsize
    return -(-d // w) * w


def fit_bytes(n: int, d: int, k: int, itemsize: int = 4) -> int:
    """Peak device bytes of an in-memory fit of n points, d features, k clusters.

    Working copy (n × ld) + the larger of: k-means++ (trials × n distances,
    closest distances, norms, unit weights, a float64 cumsum and cdf) and the
    final assignment (int32 labels, distances, a float64 copy) + partials.
    """
    ld = _padded(d, itemsize)
    trials = 2 + int(math.log(max(k, 1)))
    data = n * ld * itemsize
    seeding = n * (trials * itemsize + 3 * itemsize + 2 * 8)
    assign = n * (4 + itemsize + 8)
    partials = -(-n // 8192) * (k * (d + 1) + 1) * 8
    return data + max(seeding, assign) + partials


def row_bytes(d: int, itemsize: int = 4) -> int:
    """Device bytes per streamed row: data, label, distance and its float64 copy."""
    return _padded(d, itemsize) * itemsize + 4 + itemsize + 8


@dataclass(frozen=True)
class MemoryPlan:
    """What the planner decided, for the report."""

    mode: str                 # "device" or "streamed"
    bytes_needed: int
    bytes_free: int
    stream_rows: int | None   # rows per streamed block
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


def plan_fit(n: int, d: int, k: int, dtype: object, bytes_free: int) -> MemoryPlan:
    """Fit on the device if its estimate fits in ``HEADROOM`` of ``bytes_free``,
    else stream blocks sized to a quarter of the free memory (two in flight
    plus the seeding sample)."""
    itemsize = np.dtype(dtype).itemsize
    need = fit_bytes(n, d, k, itemsize)
    budget = int(bytes_free * HEADROOM)
    if need <= budget:
        return MemoryPlan("device", need, bytes_free, None,
                          f"fit needs {need / 2**30:.2f} GiB of {bytes_free / 2**30:.2f} GiB free")
    per_row = max(row_bytes(d, itemsize), fit_bytes(1, d, k, itemsize))
    rows = max(1, budget // 4 // per_row)
    return MemoryPlan("streamed", need, bytes_free, int(rows),
                      f"fit needs {need / 2**30:.2f} GiB but {bytes_free / 2**30:.2f} GiB are free: "
                      f"streaming blocks of {rows:,} rows from host memory each iteration")


def device_free_bytes(cp: object) -> int:
    """Free device memory, counting what CuPy's pool holds but does not use."""
    free, _total = cp.cuda.runtime.memGetInfo()  # type: ignore[attr-defined]
    return int(free + cp.get_default_memory_pool().free_bytes())  # type: ignore[attr-defined]
