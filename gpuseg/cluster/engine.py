"""Engine choice: which :class:`~gpuseg.cluster.contract.Step` runs a fit, decided once.

``auto`` takes the fused CUDA kernel for CuPy input it supports, and the
array-generic step otherwise. The fused kernel is compiled and launched on a
few rows before it is chosen (:meth:`FusedStep.probe`), so that a failed
compile or launch (an older driver, an architecture it does not build for,
a device that refuses the launch) falls back to the array-generic step on the
same device; the reason becomes the fit's ``engine_note``, which the run
report carries. An explicit ``engine="fused"`` that cannot run is an error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backend import _import, get_namespace
from .contract import Step
from .fused import why_unsupported
from .host import host_step
from .steps import ChunkedStep, StreamedStep, chunked_step, cpu_pool, default_chunk_size

log = logging.getLogger(__name__)

ENGINES = ("auto", "generic", "fused", "streamed")

_warned: set[str] = set()  # fallback reasons already logged


@dataclass
class Engine:
    """The chosen step and how to seed it.

    ``note`` says why the step is not the first choice; ``seed_rows`` bounds
    the rows k-means++ seeds from (None: all); ``seed_xp`` is the namespace
    the seeding runs in (None: the step's).
    """

    step: Step
    note: str | None = None
    seed_rows: int | None = None
    seed_xp: Any = None


def build_fused(X: Any, n_clusters: int) -> Step:
    """The fused step over CuPy ``X``, compiled and probed on this device."""
    from .fused import FusedStep
    step = FusedStep(X, n_clusters)
    step.probe()
    return step


def _on_device(xp: Any) -> bool:
    return xp is not np


def fused_failure(exc: BaseException) -> str:
    """Why the fused step could not be built or run, in one line for reports."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"the fused kernel failed to compile or launch ({type(exc).__name__}: {first[:300]})"


def fused_or_generic(reason: str | None, fused: Callable[[], Step], generic: Callable[[], Step],
                     required: bool) -> tuple[Step, str | None]:
    """The fused step when the shape allows it and it builds, else the generic one and why.

    ``reason`` is why the shape is unsupported (None when it is supported);
    with ``required`` any reason is an error instead of a fallback.
    """
    if reason is None:
        try:
            return fused(), None
        except Exception as exc:  # any compile or launch failure: fall back, and say why
            reason = fused_failure(exc)
            if required:
                raise ValueError(f"fused Lloyd kernel cannot run: {reason}.") from exc
            if reason not in _warned:  # once a process: each fit and assignment would say it again
                _warned.add(reason)
                log.warning("k-means falls back to the array-generic step: %s", reason)
    if required:
        raise ValueError(f"fused Lloyd kernel cannot run: {reason}.")
    return generic(), reason


def make_step(X: Any, n_clusters: int, engine: str, stack: ExitStack, *, chunk_size: int | None = None,
              n_threads: int | None = None, stream_rows: int | None = None, device: Any = None) -> Engine:
    """Choose the Lloyd step for ``X`` (n, d) once; thread pools live as long as ``stack``.

    ``engine``: ``auto``, ``generic``, ``fused``, or ``streamed`` (a host
    array streamed to ``device``, default CuPy, in blocks of ``stream_rows``
    rows each iteration).
    """
    xp = get_namespace(X)
    d = X.shape[1]
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}.")
    if engine == "streamed":
        if xp is not np:
            raise ValueError("engine='streamed' takes a host (NumPy) array.")
        device = device if device is not None else _import("cupy")
        rows = stream_rows or 1 << 22
        if not _on_device(device):
            pool, chunk = cpu_pool(stack, n_threads), chunk_size or default_chunk_size(np, n_clusters, d)
            return Engine(StreamedStep(X, rows, device, lambda B: ChunkedStep(B, chunk, pool, track_labels=False),
                                       "generic"), None, rows, device)
        device_chunk = default_chunk_size(device, n_clusters, d)

        def streamed_fused() -> Step:
            build_fused(device.asarray(X[:min(rows, 2048)]), n_clusters)  # compile and probe once
            from .fused import FusedStep
            return StreamedStep(X, rows, device, lambda B: FusedStep(B, n_clusters), "fused")

        step, reason = fused_or_generic(
            why_unsupported(d, n_clusters, X.dtype), streamed_fused,
            lambda: StreamedStep(X, rows, device, lambda B: ChunkedStep(B, device_chunk, track_labels=False),
                                 "generic"),
            required=False)
        return Engine(step, None if reason is None else f"generic step on the device: {reason}", rows, device)
    if not _on_device(xp):
        if engine == "fused":
            raise ValueError("engine='fused' needs CuPy arrays on a CUDA device.")
        return Engine(host_step(X, stack, n_clusters, chunk_size, n_threads))
    if engine == "generic":
        return Engine(chunked_step(X, stack, n_clusters, chunk_size, n_threads))
    step, reason = fused_or_generic(why_unsupported(d, n_clusters, X.dtype), lambda: build_fused(X, n_clusters),
                                    lambda: chunked_step(X, stack, n_clusters, chunk_size, n_threads),
                                    required=engine == "fused")
    return Engine(step, None if reason is None else f"array-generic step: {reason}")
