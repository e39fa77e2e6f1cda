"""Where the numbers are computed: resolve ``auto|cpu|cupy|cuml`` once.

This module owns every optional GPU import (CuPy, cuDF, cuML). Everything
else in gpuseg is written against an array namespace ``xp`` (NumPy or CuPy)
that it receives from here or finds with :func:`get_namespace`; no other
module imports cupy at module level.
"""

from __future__ import annotations

import importlib
import logging
import os
import platform
import sys
import threading
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

from .errors import GpusegError

log = logging.getLogger(__name__)

BACKEND_CHOICES = ("auto", "cpu", "cupy", "cuml")


def default_workers() -> int:
    """Threads for host work: every core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def release_freed_memory() -> bool:
    """Hand the pages of freed host memory back to the OS (glibc's ``malloc_trim``).

    Freed blocks stay in the process for reuse (the CLI asks glibc to keep
    them: :func:`gpuseg.cli._keep_freed_memory`), which spares page faults
    within a stage. Between stages they do not serve: the merge frees
    millions of batch-sized pieces and the next stages want a few arrays as
    long as all customers, so the peak RSS was the two added. Called where a
    stage has freed much. CDNOW's purchases tiled to 10⁸ rows (3.4·10⁷
    customers): peak RSS 8.5-9.6 GiB -> 6.2 GiB, in no more time.
    Returns whether there was a ``malloc_trim`` to call.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        trim = _libc().malloc_trim
    except (OSError, AttributeError):  # no glibc (musl has no malloc_trim)
        return False
    trim(0)
    return True


def _libc() -> Any:
    import ctypes
    return ctypes.CDLL("libc.so.6")


def _import(name: str) -> ModuleType:
    """Import an optional module; tests replace this to simulate failures."""
    return importlib.import_module(name)


def short_error(exc: BaseException) -> str:
    """``exc`` in one line for a report or an error message: its type and first line."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _probe_import(module: str, label: str) -> tuple[ModuleType | None, str | None]:
    try:
        return _import(module), None
    except ImportError as exc:
        return None, f"{label} is not installed ({short_error(exc)})"
    except Exception as exc:  # a broken CUDA install raises all sorts at import
        return None, f"{label} failed to import ({short_error(exc)})"


def probe_cupy() -> tuple[ModuleType | None, str | None]:
    """Return ``(cupy, None)`` when CuPy imports and sees a CUDA device, else ``(None, reason)``."""
    cp, reason = _probe_import("cupy", "CuPy")
    if cp is None:
        return None, reason
    try:
        n = cp.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return None, f"no usable CUDA device ({short_error(exc)})"
    if n < 1:
        return None, "no CUDA device found"
    return cp, None


def probe_cuml() -> tuple[ModuleType | None, str | None]:
    """Return ``(cuml, None)`` when cuML imports, else ``(None, reason)``."""
    return _probe_import("cuml", "cuML")


def probe_cudf() -> tuple[ModuleType | None, str | None]:
    """Return ``(cudf, None)`` when cuDF imports, else ``(None, reason)``."""
    return _probe_import("cudf", "cuDF")


def cpu_description() -> str:
    """A short description of the host CPU, e.g. ``'AMD EPYC (2 cores)'``."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{name} ({os.cpu_count()} cores)"


def gpu_description(cp: ModuleType) -> str:
    """Name and memory of the current CUDA device."""
    dev = cp.cuda.Device()
    props = cp.cuda.runtime.getDeviceProperties(dev.id)
    name = props["name"]
    name = name.decode() if isinstance(name, bytes) else str(name)
    total = props.get("totalGlobalMem", 0) / 2**30
    return f"{name} ({total:.0f} GiB, device {dev.id})"


@dataclass(frozen=True)
class Backend:
    """A resolved backend.

    Attributes
    ----------
    name : {"cpu", "cupy", "cuml"}
        What clusters: the NumPy Lloyd, the CuPy Lloyd, or cuML's KMeans.
    xp : module
        The array namespace the numeric core runs on (numpy or cupy).
    device : str
        Human-readable device description for reports.
    fallbacks : tuple of str
        One line per backend that ``auto`` tried and could not use, with why.
    """

    name: str
    xp: Any
    device: str
    fallbacks: tuple[str, ...] = field(default=())

    @property
    def on_gpu(self) -> bool:
        return self.name != "cpu"

    def synchronize(self) -> None:
        """Wait for queued device work; a no-op on the CPU."""
        if self.on_gpu:
            self.xp.cuda.get_current_stream().synchronize()


def cpu_backend(fallbacks: tuple[str, ...] = ()) -> Backend:
    return Backend("cpu", np, cpu_description(), fallbacks)


def resolve_backend(requested: str) -> Backend:
    """Resolve ``auto|cpu|cupy|cuml`` to a usable :class:`Backend`.

    ``auto`` tries cuml, then cupy, then cpu, recording why each step was not
    taken. An explicit GPU backend that cannot run raises :class:`GpusegError`.
    """
    if requested not in BACKEND_CHOICES:
        raise GpusegError(
            f"unknown backend {requested!r}; allowed: {', '.join(BACKEND_CHOICES)}")
    if requested == "cpu":
        return cpu_backend()

    cp, cupy_reason = probe_cupy()
    if requested in ("auto", "cuml"):
        cuml, cuml_reason = probe_cuml()
        if cuml is not None:
            if cp is not None:
                return Backend("cuml", cp, gpu_description(cp))
            cuml_reason = f"cuML is installed but cannot run: {cupy_reason}"
        if requested == "cuml":
            raise GpusegError(f"backend 'cuml' cannot run: {cuml_reason}; "
                              "install the gpuseg[cuda12] or gpuseg[cuda13] extra, or use --backend auto")
        fallbacks = [f"cuml: {cuml_reason}"]
    else:
        fallbacks = []

    if cp is not None:
        return Backend("cupy", cp, gpu_description(cp), tuple(fallbacks))
    if requested == "cupy":
        raise GpusegError(f"backend 'cupy' cannot run: {cupy_reason}; "
                          "install the gpuseg[cuda12] or gpuseg[cuda13] extra on a machine with an NVIDIA GPU, "
                          "or use --backend auto")
    fallbacks.append(f"cupy: {cupy_reason}")
    for line in fallbacks:
        log.info("backend auto: %s", line)
    return cpu_backend(tuple(fallbacks))


# -- array-namespace helpers -------------------------------------------------

def get_namespace(*arrays: Any) -> Any:
    """The array namespace (numpy or cupy) of ``arrays``, without importing CuPy."""
    cp = sys.modules.get("cupy")
    if cp is not None:
        return cp.get_array_module(*arrays)
    return np


def is_device_array(a: Any) -> bool:
    cp = sys.modules.get("cupy")
    return cp is not None and isinstance(a, cp.ndarray)


def to_numpy(a: Any) -> np.ndarray:
    """The only way back to the host: a NumPy copy (or view) of ``a``."""
    if is_device_array(a):
        return a.get()
    return np.asarray(a)


def _device_ufunc_at(ufunc: str, legacy: str, a: Any, index: Any, values: Any) -> None:
    # CuPy 14 has ufunc.at and deprecates cupyx.scatter_*; older CuPy has only the latter.
    cp = sys.modules["cupy"]
    at = getattr(getattr(cp, ufunc), "at", None)
    try:
        if at is not None:
            at(a, index, values)
            return
    except NotImplementedError:
        pass
    getattr(_import("cupyx"), legacy)(a, index, values)


def scatter_add(a: Any, index: Any, values: Any) -> None:
    """``a[index[i]] += values[i]`` for all i, in place (rows of ``a`` for 2-D ``values``).

    On a device this is one kernel of atomic adds, where ``bincount`` would first read the
    index's maximum back to the host to size its result.
    """
    if is_device_array(a):
        _device_ufunc_at("add", "scatter_add", a, index, values)
    else:
        np.add.at(a, index, values)


def scatter_min(a: Any, index: Any, values: Any) -> None:
    """``a[index[i]] = min(a[index[i]], values[i])`` for all i, in place."""
    if is_device_array(a):
        _device_ufunc_at("minimum", "scatter_min", a, index, values)
    else:
        np.minimum.at(a, index, values)


def scatter_max(a: Any, index: Any, values: Any) -> None:
    """``a[index[i]] = max(a[index[i]], values[i])`` for all i, in place."""
    if is_device_array(a):
        _device_ufunc_at("maximum", "scatter_max", a, index, values)
    else:
        np.maximum.at(a, index, values)


def bincount(xp: Any, x: Any, weights: Any = None, minlength: int = 0) -> Any:
    """``xp.bincount(x, weights, minlength)``, an empty ``x`` included.

    CuPy before 14.2 takes the maximum of ``x`` for the length, which fails
    on no values; then the result is NumPy's (and CuPy 14.2's): ``minlength``
    int64 zeros, with weights or without.
    """
    if xp is not np and x.shape[0] == 0:
        return xp.zeros(minlength, dtype=xp.int64)
    return xp.bincount(x, weights=weights, minlength=minlength)


def argsort_stable(a: Any) -> Any:
    """Stable argsort in ``a``'s namespace (CuPy's sort is always stable)."""
    if is_device_array(a):
        return a.argsort()
    return np.argsort(a, kind="stable")


#: Bytes per pinned staging buffer for host-to-device copies.
STAGING_BYTES = 64 << 20

_thread_staging = threading.local()


def _after_current_stream(cp: ModuleType, stream: Any) -> None:
    # ``out`` comes from the current stream's memory pool, which reuses memory freed while
    # work queued on that stream (on the legacy default stream, any thread's) may still read
    # it: safe on that stream, not on ours. The copy waits for that work.
    stream.wait_event(cp.cuda.get_current_stream().record())


def batch_to_device(cp: ModuleType, a: np.ndarray) -> Any:
    """Copy one batch's host array to the device through this thread's pinned buffer.

    Batches are decoded and copied on several threads at once, so each thread
    stages through its own pinned buffer and stream (pageable copies ran at
    about 1.5 GB/s on a lent H200); its copy overlaps the other threads' decoding.
    """
    a = np.ascontiguousarray(a)
    out = cp.empty(a.shape, dtype=a.dtype)
    if a.nbytes == 0:
        return out
    buf = getattr(_thread_staging, "buffer", None)
    if buf is None or buf.nbytes < a.nbytes:
        size = max(a.nbytes, 16 << 20)
        buf = np.frombuffer(cp.cuda.alloc_pinned_memory(size), dtype=np.uint8, count=size)
        _thread_staging.buffer, _thread_staging.stream = buf, cp.cuda.Stream(non_blocking=True)
    staged = buf[:a.nbytes].view(a.dtype).reshape(a.shape)
    staged[...] = a
    _after_current_stream(cp, _thread_staging.stream)
    out.set(staged, stream=_thread_staging.stream)
    _thread_staging.stream.synchronize()  # the buffer is reused by this thread's next copy
    return out


def host_to_device(cp: ModuleType, a: np.ndarray) -> Any:
    """Copy a host array to the device through two pinned staging buffers.

    Copies from pageable memory go through a small driver buffer and ran at
    about 1.5 GB/s on a lent H200; staging through pinned memory lets the
    host copy of one block overlap the DMA of the previous one.
    """
    a = np.ascontiguousarray(a)
    out = cp.empty(a.shape, dtype=a.dtype)
    nbytes = a.nbytes
    if nbytes <= STAGING_BYTES // 16:
        out.set(a)
        return out
    src = a.reshape(-1).view(np.uint8)
    dst = out.reshape(-1).view(cp.uint8)
    size = min(STAGING_BYTES, nbytes)
    buffers = [np.frombuffer(cp.cuda.alloc_pinned_memory(size), dtype=np.uint8, count=size) for _ in range(2)]
    stream = cp.cuda.Stream(non_blocking=True)
    _after_current_stream(cp, stream)
    done = [None, None]
    for i, off in enumerate(range(0, nbytes, size)):
        b = i % 2
        if done[b] is not None:
            done[b].synchronize()  # the DMA that last read this buffer has finished
        m = min(size, nbytes - off)
        buffers[b][:m] = src[off:off + m]
        dst[off:off + m].set(buffers[b][:m], stream=stream)
        done[b] = stream.record()
    stream.synchronize()
    return out
