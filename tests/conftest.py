"""Shared fixtures: the array namespaces the numeric core runs on."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from cupy_like import is_emulator


def _cupy_with_device():
    try:
        import cupy
        if is_emulator(cupy):  # tests/emulator on PYTHONPATH (a dry run): not a device
            sys.modules.pop("cupy", None)
            sys.modules.pop("cupyx", None)
            return None
        if cupy.cuda.runtime.getDeviceCount() > 0:
            return cupy
    except Exception:  # not installed, or no driver/device
        return None
    return None


CUPY = _cupy_with_device()


def _load_emulator():
    """The CuPy emulator (``tests/emulator``), imported without leaving it importable as ``cupy``."""
    path = str(Path(__file__).parent / "emulator")
    saved = {name: sys.modules.pop(name) for name in ("cupy", "cupyx") if name in sys.modules}
    sys.path.insert(0, path)
    try:
        import cupy
        import cupyx
        assert is_emulator(cupy), cupy
        return cupy, cupyx
    finally:
        sys.path.remove(path)
        sys.modules.pop("cupy", None)
        sys.modules.pop("cupyx", None)
        sys.modules.update(saved)


EMULATOR = _load_emulator() if CUPY is None else None


def pytest_collection_modifyitems(config, items):
    if CUPY is not None:
        skip = pytest.mark.skip(reason="the CuPy emulator stands in only where there is no CUDA device")
        marker = "emulated"
    else:
        skip = pytest.mark.skip(reason="needs CuPy and a CUDA device")
        marker = "gpu"
    for item in items:
        if marker in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def emulated_cupy(monkeypatch):
    """The CuPy emulator installed as ``cupy`` and ``cupyx`` for one test (NumPy behind
    CuPy's host/device wall; not a GPU). Skipped where a real CUDA device is present."""
    if EMULATOR is None:
        pytest.skip("the CuPy emulator stands in only where there is no CUDA device")
    monkeypatch.setitem(sys.modules, "cupy", EMULATOR[0])
    monkeypatch.setitem(sys.modules, "cupyx", EMULATOR[1])
    return EMULATOR[0]


@pytest.fixture(params=[pytest.param("cupy", marks=pytest.mark.gpu),
                        pytest.param("emulated", marks=pytest.mark.emulated)])
def device_cp(request):
    """CuPy on a CUDA device (marked ``gpu``), else the CuPy emulator (marked ``emulated``):
    for tests of gpuseg's device code rather than of its CUDA kernels. Tell them apart
    with :func:`is_emulator` (the emulator's fused kernel never compiles)."""
    if request.param == "cupy":
        return CUPY
    return request.getfixturevalue("emulated_cupy")


@pytest.fixture(params=["numpy", pytest.param("cupy", marks=pytest.mark.gpu),
                        pytest.param("emulated", marks=pytest.mark.emulated)])
def xp(request):
    """NumPy always; CuPy when a CUDA device is present (marked ``gpu``), else the CuPy
    emulator (marked ``emulated``), which runs the device branches on the CPU."""
    if request.param == "numpy":
        return np
    if request.param == "cupy":
        return CUPY
    return request.getfixturevalue("emulated_cupy")


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture
def cp():
    """The CuPy module, for tests that only make sense on a GPU."""
    if CUPY is None:
        pytest.skip("needs CuPy and a CUDA device")
    return CUPY
