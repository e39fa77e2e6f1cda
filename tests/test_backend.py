"""Backend resolution and its fallback reasons, with optional GPU libraries failing for real.

Failures are simulated at the one import hook the backend uses
(``gpuseg.backend._import``): an import that raises, or a CuPy whose device
query raises, as a machine without a driver does.
"""

from __future__ import annotations

import threading
import types

import numpy as np
import pytest

from gpuseg import backend
from gpuseg.backend import get_namespace, resolve_backend, to_numpy
from gpuseg.errors import GpusegError


def fake_imports(monkeypatch, **modules):
    """Make backend._import return or raise per module name."""
    def _import(name):
        result = modules.get(name, ImportError(f"No module named {name!r}"))
        if isinstance(result, BaseException):
            raise result
        return result
    monkeypatch.setattr(backend, "_import", _import)


def cupy_without_device(exc: BaseException) -> types.SimpleNamespace:
    def count():
        raise exc
    return types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=count)))


def test_cpu_is_always_available():
    b = resolve_backend("cpu")
    assert b.name == "cpu" and b.xp is np and not b.on_gpu
    assert b.fallbacks == ()
    assert "cores" in b.device


def test_auto_without_gpu_libraries_falls_back_to_cpu_and_says_why(monkeypatch):
    fake_imports(monkeypatch)
    b = resolve_backend("auto")
    assert b.name == "cpu"
    assert len(b.fallbacks) == 2
    assert b.fallbacks[0].startswith("cuml: cuML is not installed")
    assert b.fallbacks[1].startswith("cupy: CuPy is not installed")


def test_auto_with_cupy_but_no_device(monkeypatch):
    fake_imports(monkeypatch, cupy=cupy_without_device(RuntimeError("cudaErrorNoDevice: no CUDA-capable device")))
    b = resolve_backend("auto")
    assert b.name == "cpu"
    assert "cupy: no usable CUDA device (RuntimeError: cudaErrorNoDevice" in b.fallbacks[1]


def test_auto_with_broken_cupy_import(monkeypatch):
    fake_imports(monkeypatch, cupy=OSError("libcudart.so.12: cannot open shared object file"))
    b = resolve_backend("auto")
    assert "CuPy failed to import (OSError: libcudart.so.12" in b.fallbacks[1]


def test_cuml_installed_without_a_device(monkeypatch):
    fake_imports(monkeypatch, cuml=types.SimpleNamespace(),
                 cupy=cupy_without_device(RuntimeError("cudaErrorInsufficientDriver")))
    b = resolve_backend("auto")
    assert b.fallbacks[0].startswith("cuml: cuML is installed but cannot run: no usable CUDA device")


@pytest.mark.parametrize("requested, message", [
    ("cupy", "backend 'cupy' cannot run: CuPy is not installed"),
    ("cuml", "backend 'cuml' cannot run: cuML is not installed"),
])
def test_explicit_gpu_backend_that_cannot_run_is_an_error(monkeypatch, requested, message):
    fake_imports(monkeypatch)
    with pytest.raises(GpusegError, match=message):
        resolve_backend(requested)


def test_unknown_backend():
    with pytest.raises(GpusegError, match="unknown backend 'tpu'; allowed: auto, cpu, cupy, cuml"):
        resolve_backend("tpu")


def test_namespace_helpers_on_numpy():
    a = np.arange(3)
    assert get_namespace(a) is np
    assert to_numpy(a) is a or np.array_equal(to_numpy(a), a)
    out = np.full(3, 10)
    backend.scatter_min(out, np.array([0, 0, 2]), np.array([5, 3, 12]))
    np.testing.assert_array_equal(out, [3, 10, 10])
    backend.scatter_max(out, np.array([1, 1]), np.array([11, 30]))
    np.testing.assert_array_equal(out, [3, 30, 10])


def test_auto_on_a_gpu_machine_without_cuml(device_cp):
    b = resolve_backend("auto")
    assert b.name in ("cupy", "cuml")
    if b.name == "cupy":
        assert b.fallbacks[0].startswith("cuml: cuML is not installed")
    assert b.xp is device_cp


@pytest.mark.parametrize("n", [10, 3_000_001])
def test_host_to_device_copies_exactly(device_cp, n, monkeypatch):
    cp = device_cp
    monkeypatch.setattr(backend, "STAGING_BYTES", 1 << 20)  # several blocks, both buffers reused
    a = np.random.default_rng(n).normal(size=n)
    d = backend.host_to_device(cp, a)
    assert d.dtype == a.dtype and d.shape == a.shape
    np.testing.assert_array_equal(cp.asnumpy(d), a)


def test_batch_to_device_copies_exactly_from_several_threads(device_cp):
    cp = device_cp
    from concurrent.futures import ThreadPoolExecutor
    arrays = [np.random.default_rng(i).normal(size=n) for i, n in enumerate([0, 7, 1 << 21, 5 << 20, 3])]
    arrays += [np.arange(1 << 20, dtype=np.int32), np.ones(1000, dtype=bool)]

    def copy(a):
        junk = cp.arange(a.size + 1) * 2  # device work queued and freed just before the copy
        del junk
        return backend.batch_to_device(cp, a)

    with ThreadPoolExecutor(4) as pool:
        for a, d in zip(arrays * 3, pool.map(copy, arrays * 3)):
            assert d.dtype == a.dtype and d.shape == a.shape
            np.testing.assert_array_equal(cp.asnumpy(d), a)


class _StreamLog:
    """The parts of CuPy that the staged copies use, over NumPy, logging the stream operations."""

    def __init__(self):
        self.log = []
        log = self.log

        class Event:
            def __init__(self, stream):
                self.stream = stream

            def synchronize(self):
                log.append(("synchronize", self.stream))

        class Stream:
            def __init__(self, non_blocking=False, name="copy"):
                self.name = name

            def record(self):
                log.append(("record", self.name))
                return Event(self.name)

            def wait_event(self, event):
                log.append(("wait", self.name, event.stream))

            def synchronize(self):
                log.append(("synchronize", self.name))

        class DeviceArray(np.ndarray):
            def set(self, a, stream=None):
                log.append(("copy", None if stream is None else stream.name))
                self[...] = a

        current = Stream(name="current")
        self.uint8 = np.uint8
        self.empty = lambda shape, dtype: np.empty(shape, dtype).view(DeviceArray)
        self.cuda = types.SimpleNamespace(Stream=Stream, get_current_stream=lambda: current,
                                          alloc_pinned_memory=bytearray)


@pytest.mark.parametrize("copy", ["batch_to_device", "host_to_device"])
def test_staged_copies_wait_for_the_work_queued_on_the_current_stream(monkeypatch, copy):
    # The copy's target comes from the current stream's memory pool, which hands out memory that
    # kernels queued there may still read: the copy stream must wait for them before it writes.
    monkeypatch.setattr(backend, "_thread_staging", threading.local())
    monkeypatch.setattr(backend, "STAGING_BYTES", 1 << 16)  # host_to_device: several blocks
    cp = _StreamLog()
    a = np.random.default_rng(1).normal(size=30_000)
    d = getattr(backend, copy)(cp, a)
    np.testing.assert_array_equal(np.asarray(d), a)
    copies = [i for i, entry in enumerate(cp.log) if entry == ("copy", "copy")]
    assert copies and cp.log.index(("wait", "copy", "current")) < copies[0]


def test_release_freed_memory_calls_glibc_and_skips_without_it(monkeypatch):
    from gpuseg import backend
    calls = []

    class Libc:
        def malloc_trim(self, pad):
            calls.append(pad)

    monkeypatch.setattr(backend, "_libc", lambda: Libc())
    monkeypatch.setattr(backend.sys, "platform", "linux")
    assert backend.release_freed_memory() is True and calls == [0]
    monkeypatch.setattr(backend, "_libc", lambda: object())  # a libc without malloc_trim (musl)
    assert backend.release_freed_memory() is False
    monkeypatch.setattr(backend.sys, "platform", "darwin")
    assert backend.release_freed_memory() is False and calls == [0]


def test_ingest_releases_freed_memory_after_the_merge_and_the_features(monkeypatch):
    import datetime as dt
    from pathlib import Path

    import pyarrow as pa

    from gpuseg import ingest as ingest_module
    from gpuseg.columns import ColumnMapping
    stages = []
    monkeypatch.setattr(ingest_module, "release_freed_memory", lambda: stages.append(timer.current) or True)

    class Timer:
        current = None

        def stage(self, name):
            import contextlib
            self.current = name
            return contextlib.nullcontext()

    timer = Timer()
    batch = pa.record_batch({"c": [1, 2, 1], "d": [dt.date(2024, 1, i) for i in (1, 2, 3)], "a": [1.0, 2.0, 3.0]})
    ingest_module.ingest([(Path("x.parquet"), batch)], ColumnMapping(customer="c", date="d", amount="a"),
                         timer=timer)
    assert stages == ["clean", "features"]


@pytest.mark.parametrize("weighted", [False, True])
def test_bincount_of_no_values_is_numpys(xp, weighted):
    # CuPy before 14.2 fails on no values; the stand-in result was float64 sums where NumPy gives int64.
    x, w = np.empty(0, dtype=np.intp), np.empty(0) if weighted else None
    want = np.bincount(x, weights=w, minlength=3)
    got = backend.bincount(xp, xp.asarray(x), weights=None if w is None else xp.asarray(w), minlength=3)
    assert got.dtype == want.dtype
    assert backend.to_numpy(got).tolist() == [0, 0, 0]
