"""The fused CUDA Lloyd step (``kernels/lloyd.cu``), driven from CuPy.

One kernel launch per iteration reads every point once and returns per-block
float64 partial sums; :func:`gpuseg.cluster.lloyd.lloyd` reduces them like any
other :class:`~gpuseg.cluster.contract.Partials`. A second kernel writes labels and
exact squared distances when they are needed (final assignment, empty-cluster
relocation, scoring).

The data are laid out as rows of ``ld`` values, ``ld`` the feature count
rounded up to a 16-byte vector (4 float32 or 2 float64), padding zero; the
kernels are compiled once per process for each dtype and bound on ``ld``
(4, 8, 16, 32), never for a particular n, d or k. :class:`FusedStep` keeps
that layout to itself: the driver passes and gets back (k, d) centres.

The warp's largest label group is found with ``__reduce_max_sync`` on
sm_80 and newer, with a shuffle tree below (sm_75: T4); the variant follows
the device's compute capability (:func:`kernel_variant`).

CuPy is imported through :mod:`gpuseg.backend` only when a step is built.
"""

from __future__ import annotations

import functools
import importlib.resources
from typing import Any

import numpy as np

from ..backend import _import, get_namespace, short_error
from .contract import Partials

MAXD_BOUNDS = (4, 8, 16, 32)
BLOCK = 256
#: Points per block of the step kernel: partial sums stay short in float32
#: (at most this many points per block) and the float64 partials stay ~1% of
#: the data read.
POINTS_PER_BLOCK = 8192
#: Shared memory a block may use without opting in to more.
SMEM_LIMIT = 48 * 1024
_VECTOR = {np.dtype(np.float32): 4, np.dtype(np.float64): 2}
_NAME = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}


#: Kernel variants: the warp reduction of ``__reduce_max_sync`` (sm_80+), or shuffles (any sm_70+).
VARIANTS = ("redux", "shuffle")
#: Architectures the kernels must compile for (tests compile each with nvcc).
ARCHS = ("sm_75", "sm_80", "sm_86", "sm_89", "sm_90")


def kernel_source() -> str:
    """The CUDA source of the fused kernels."""
    return importlib.resources.files("gpuseg.cluster").joinpath("kernels/lloyd.cu").read_text(encoding="utf-8")


def kernel_variant(compute_capability: int) -> str:
    """The variant for a device of ``compute_capability`` (major*10+minor, e.g. 75 or 90)."""
    return "redux" if compute_capability >= 80 else "shuffle"


def compile_options(variant: str) -> tuple[str, ...]:
    """Compiler options that select ``variant`` (one of :data:`VARIANTS`)."""
    if variant not in VARIANTS:
        raise ValueError(f"kernel variant must be one of {', '.join(VARIANTS)}, got {variant!r}.")
    return ("-std=c++17", f"-DGPUSEG_REDUX={int(variant == 'redux')}")


class KernelCompileError(RuntimeError):
    """The fused kernel's source did not compile for this device (remembered, not retried)."""


@functools.lru_cache(maxsize=None)
def _compiled(device_id: int, variant: str) -> tuple[Any, str | None]:
    # One compiled module per device and variant, as cupyx memoizes per device. A compiler's
    # refusal is remembered as well: CuPy compiles on the first kernel lookup and does not
    # remember a failure, so each step built after one would run the compiler again. Other
    # errors (out of memory, the driver) are raised and not remembered: they may pass.
    cp = _import("cupy")
    module = cp.RawModule(code=kernel_source(), options=compile_options(variant))
    try:
        module.compile()
    except Exception as exc:
        if type(exc).__name__ not in ("CompileException", "NVRTCError"):
            raise
        return None, short_error(exc)
    return module, None


def _module(device_id: int, variant: str) -> Any:
    """The kernels compiled for ``device_id`` and ``variant``; a :class:`KernelCompileError`
    each time where they did not compile."""
    module, error = _compiled(device_id, variant)
    if error is not None:
        raise KernelCompileError(error)
    return module


def padded_width(d: int, dtype: Any) -> int:
    """Row length of the padded layout for ``d`` features."""
    w = _VECTOR[np.dtype(dtype)]
    return -(-d // w) * w


def _bound(ld: int) -> int | None:
    return next((b for b in MAXD_BOUNDS if ld <= b), None)


def _smem(k: int, d: int, maxd: int, itemsize: int, copies: int) -> int:
    head = (k * maxd + k + copies * k * (d + 1)) * itemsize
    return ((head + 15) & ~15) + BLOCK * 8


def why_unsupported(n_features: int, n_clusters: int, dtype: Any) -> str | None:
    """None when the fused kernels handle this shape and dtype, else the reason."""
    dt = np.dtype(dtype)
    if dt not in _VECTOR:
        return f"dtype {dt} (the fused kernel takes float32 or float64)"
    ld = padded_width(n_features, dt)
    maxd = _bound(ld)
    if maxd is None:
        return f"d={n_features} features (the fused kernel takes at most {MAXD_BOUNDS[-1]})"
    if _smem(n_clusters, n_features, maxd, dt.itemsize, 1) > SMEM_LIMIT:
        return f"k={n_clusters} with d={n_features} ({dt}) does not fit the kernel's shared memory"
    return None


def pad_rows(X: Any, ld: int) -> Any:
    """``X`` (n, d) as a C-contiguous (n, ld) array, padding columns zero."""
    xp = get_namespace(X)
    n, d = X.shape
    if d == ld and X.flags.c_contiguous:
        return X
    out = xp.zeros((n, ld), dtype=X.dtype)
    out[:, :d] = X
    return out


class FusedStep:
    """A :class:`~gpuseg.cluster.contract.Step` over a CuPy array, by the fused kernels.

    Holds the points in the padded (n, ld) layout (a copy only when ``d`` is
    not a whole number of 16-byte vectors); centres come in and sums go out
    as (k, d), so the layout never leaves this class. Compiling happens here,
    on the first step of each dtype on each device; :meth:`probe` launches
    both kernels on a few rows so that a failure shows before the fit.

    Parameters
    ----------
    X : CuPy array of shape (n, d), float32 or float64, C-contiguous
    n_clusters : int
    points_per_block : int, optional
        Points per block of the step kernel; by default enough blocks to fill
        the device several times over.
    mode : int
        0 warp-aggregated sums (default), 1 one shared atomic per value,
        2 no sums (assignment only): the last two exist for benchmarks.
    variant : str, optional
        ``redux`` or ``shuffle``; by default :func:`kernel_variant` of the device.
    staged : bool
        A candidate (not the default, not yet measured): the staged kernel, which
        sums each label's points in the same order as mode 0 but reads the peers'
        points from shared memory with vector loads instead of shuffles. Raises
        ValueError where its staging rows do not fit the shared memory.
    """

    name = "fused"

    def __init__(self, X: Any, n_clusters: int, *, points_per_block: int | None = None, mode: int = 0,
                 variant: str | None = None, staged: bool = False):
        n, d = X.shape
        dt = np.dtype(X.dtype)
        reason = why_unsupported(d, n_clusters, dt)
        if reason is not None:
            raise ValueError(f"fused Lloyd kernel cannot run: {reason}")
        self.cp = self.xp = _import("cupy")
        self.n_features, self.n_clusters, self.dtype = d, n_clusters, dt
        self.points_per_block, self.mode = points_per_block, mode
        self.ld = padded_width(d, dt)
        self.maxd = _bound(self.ld)
        self.X = X
        self.Xp = pad_rows(X, self.ld)
        dev = self.cp.cuda.Device()
        self.variant = variant or kernel_variant(int(dev.compute_capability))
        module = _module(dev.id, self.variant)
        suffix = f"{_NAME[dt]}_d{self.maxd}"
        self.staged = staged
        if staged and mode == 1:
            raise ValueError("the staged kernel has no per-value atomic mode (mode=1)")
        self._step = module.get_function(f"lloyd_step_{'staged_' if staged else ''}{suffix}")
        self._assign = module.get_function(f"assign_{suffix}")
        k = n_clusters
        # As many private accumulator copies (one per warp at most) as fit.
        per_copy = k * (d + 1) * dt.itemsize
        stage = BLOCK * (self.maxd + _VECTOR[dt]) * dt.itemsize if staged else 0  # one row per thread
        fixed = _smem(k, d, self.maxd, dt.itemsize, 0) + stage
        if staged and fixed + per_copy > SMEM_LIMIT:
            raise ValueError(f"the staged kernel's rows do not fit the shared memory with k={k}, d={d} ({dt})")
        self.copies = int(max(1, min(BLOCK // 32, (SMEM_LIMIT - fixed) // per_copy)))
        self.smem_step = _smem(k, d, self.maxd, dt.itemsize, self.copies) + stage
        self.smem_assign = (k * self.maxd + k) * dt.itemsize
        self.n_sm = dev.attributes["MultiProcessorCount"]
        self._check(self.Xp)

    # -- the Step contract --------------------------------------------------
    def count(self) -> int:
        return int(self.X.shape[0])

    def dim(self) -> int:
        return self.n_features

    def get_subset(self, indices: np.ndarray | None) -> Any:
        return self.X if indices is None else self.X[self.cp.asarray(indices)]

    def labels(self) -> None:
        return None

    def restart(self) -> None:
        pass

    def partials(self, centers: Any, delta: bool = False) -> Partials:
        return self._run_step(self.Xp, centers)

    def assign(self, centers: Any) -> tuple[Any, Any]:
        """Labels (int32) and squared distances (float64) to the nearest centre."""
        return self._run_assign(self.Xp, centers)

    def inertia(self, centers: Any) -> float:
        """Sum of squared distances of the points to their nearest centre."""
        return float(self.assign(centers)[1].sum())

    def probe(self, rows: int = 2 * BLOCK) -> None:
        """Launch both kernels on the first ``rows`` points and wait for them:
        raises here, not in the middle of a fit, when the device cannot run them."""
        head = self.Xp[:max(1, min(rows, self.count()))]
        centers = self.cp.zeros((self.n_clusters, self.n_features), dtype=self.dtype)
        self._run_step(head, centers)
        self._run_assign(head, centers)
        self.cp.cuda.Device().synchronize()

    # -- launches -------------------------------------------------------------
    def _centres(self, centers: Any) -> tuple[Any, Any]:
        cp = self.cp
        c = cp.zeros((self.n_clusters, self.maxd), dtype=self.dtype)
        c[:, :centers.shape[1]] = centers
        return cp.ascontiguousarray(-2 * c), cp.ascontiguousarray((c * c).sum(axis=1))

    def _check(self, X: Any) -> None:
        # Host-side checks before launch: layout and dtype the kernel assumes.
        if X.ndim != 2 or X.shape[1] != self.ld or X.dtype != self.dtype or not X.flags.c_contiguous:
            raise ValueError(f"fused step expects C-contiguous {self.dtype} rows of {self.ld} values, "
                             f"got {X.dtype} of shape {X.shape}")

    def _run_step(self, Xp: Any, centers: Any) -> Partials:
        cp = self.cp
        n = Xp.shape[0]
        k, d = self.n_clusters, self.n_features
        cm2, csq = self._centres(centers)
        per_block = self.points_per_block or self._points_per_block(n)
        grid = -(-n // per_block)
        width = k * (d + 1) + 1
        partials = cp.empty((grid, width), dtype=cp.float64)
        self._step((grid,), (BLOCK,), (Xp, np.int64(n), np.int32(d), np.int32(self.ld), cm2, csq, np.int32(k),
                                       np.int32(self.copies), np.int64(per_block), np.int32(self.mode),
                                       partials),
                   shared_mem=self.smem_step)
        total = partials.sum(axis=0)
        acc = total[:-1].reshape(k, d + 1)
        return Partials(cp.ascontiguousarray(acc[:, :d]), acc[:, d].copy(), total[-1])

    def _points_per_block(self, n: int) -> int:
        # Enough blocks to fill every multiprocessor several times over, and
        # at most POINTS_PER_BLOCK points each, in whole blocks of threads.
        per = -(-n // (self.n_sm * 8))
        per = -(-per // BLOCK) * BLOCK
        return int(min(POINTS_PER_BLOCK, max(BLOCK, per)))

    def _run_assign(self, Xp: Any, centers: Any) -> tuple[Any, Any]:
        cp = self.cp
        n = Xp.shape[0]
        cm2, csq = self._centres(centers)
        labels = cp.empty(n, dtype=cp.int32)
        sqdist = cp.empty(n, dtype=self.dtype)
        grid = int(min(-(-n // BLOCK), self.n_sm * 32)) or 1
        self._assign((grid,), (BLOCK,), (Xp, np.int64(n), np.int32(self.ld), cm2, csq, np.int32(self.n_clusters),
                                         labels, sqdist), shared_mem=self.smem_assign)
        return labels, sqdist.astype(cp.float64)
