"""Shared fixtures: the array namespaces the numeric core runs on."""

from __future__ import annotations

import numpy as np
import pytest


def _cupy_with_device():
    try:
        import cupy
        if cupy.cuda.runtime.getDeviceCount() > 0:
            return cupy
    except Exception:  # not installed, or no driver/device
        return None
    return None


CUPY = _cupy_with_device()


def pytest_collection_modifyitems(config, items):
    if CUPY is not None:
        return
    skip = pytest.mark.skip(reason="needs CuPy and a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(params=["numpy", pytest.param("cupy", marks=pytest.mark.gpu)])
def xp(request):
    """NumPy always; CuPy too when a CUDA device is present (marked ``gpu``)."""
    return np if request.param == "numpy" else CUPY


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture
def cp():
    """The CuPy module, for tests that only make sense on a GPU."""
    if CUPY is None:
        pytest.skip("needs CuPy and a CUDA device")
    return CUPY
