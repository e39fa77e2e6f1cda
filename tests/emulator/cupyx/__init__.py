"""cupyx's scatter functions, for the CuPy emulator (see ``tests/emulator/cupy``)."""

import cupy


def _scatter(name):
    def scatter(a, slices, value):
        cupy.ufunc(getattr(cupy._np, name)).at(a, slices, value)
    scatter.__name__ = f"scatter_{name}"
    return scatter


scatter_add = _scatter("add")
scatter_max = _scatter("maximum")
scatter_min = _scatter("minimum")
