"""Stand-ins for CuPy on the CPU: a NumPy namespace that refuses what CuPy refuses, so that
code paths taken only when ``xp`` is not NumPy run on the CPU too (patch a module's
``get_namespace`` to return it); the whole-module emulator is tests/emulator."""

from __future__ import annotations

import numpy as np


class CupyLike:
    """NumPy, except where CuPy 13 and 14 differ from it.

    ``bincount`` of no values fails: CuPy before 14.2 sizes its result from
    the maximum of its input.
    """

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def bincount(x, weights=None, minlength=0):
        if x.shape[0] == 0:
            raise ValueError("zero-size array to reduction operation cupy_max which has no identity")
        return np.bincount(x, weights=weights, minlength=minlength)


CUPY_LIKE = CupyLike()


def is_emulator(cp) -> bool:
    """Whether ``cp`` is the CuPy emulator of tests/emulator (see there) rather than CuPy."""
    return getattr(cp, "__version__", "").endswith("+emulated")
