"""A stand-in for CuPy on machines without a GPU: NumPy arrays behind CuPy's host/device wall.

It is not a GPU and proves nothing about speed or kernels. It lets the CPU tests run
gpuseg's device branches (every ``xp is not np`` path, the staging copies, the fallback
from the fused kernel) and fail where real CuPy would refuse the code:

- a host (NumPy) array passed where CuPy takes device arrays raises ``TypeError``, as
  CuPy's kernels do, and assigning one through a basic index raises ``ValueError``;
  NumPy refuses to convert a device array implicitly (``__array__`` raises CuPy's own
  message), so host and device arrays cannot be mixed by accident;
- reductions and scalar indexing give 0-d device arrays, not Python numbers, and a
  device array has no ``__index__`` (``range(a.max())`` fails, as it does on CuPy);
- only names that CuPy 14.0.1 and 15 export exist;
  ``ufunc.at``/``reduce``/``accumulate``/``reduceat`` only where CuPy has them;
- strings, objects and datetimes cannot go to the device;
- ``bincount`` of no values fails (CuPy before 14.2 sizes its result by the maximum), and
  each call reads two values back, as CuPy's does;
- a scatter with repeated indices keeps the first value, not NumPy's last one (CuPy
  leaves the winner undefined);
- ``RawModule`` never compiles, so the fused Lloyd kernel always falls back.

Out-of-range indices raise ``IndexError`` here, as in NumPy, where CuPy wraps them
silently: an ``IndexError`` on the emulator may be a wrong answer, not a crash, on a GPU.
What the emulator cannot show: the order of CuPy's atomic sums (its weighted ``bincount``
and scatter adds), and so their last bits, and anything about kernels or speed.

Every read of device memory by the host is logged in ``reads``, so that tests can check
what a run copies back.

Put ``tests/emulator`` first on ``sys.path`` (or ``PYTHONPATH``) to import it as ``cupy``.
"""

from __future__ import annotations

import operator
import sys
import time
import types
import warnings

import numpy as _np

__version__ = "15.0.0+emulated"

#: What CuPy 14.0.1 (gpuseg's floor) and 15 both export at the top level (names NumPy 2 lacks
#: are absent here too).
_CUPY_NAMES = frozenset("""
abs absolute acos acosh add all allclose amax amin angle any append apply_along_axis apply_over_axes arange arccos
arccosh arcsin arcsinh arctan arctan2 arctanh argmax argmin argpartition argsort argwhere around array array2string
array_equal array_equiv array_repr array_split array_str asanyarray asarray asarray_chkfinite ascontiguousarray
asfortranarray asin asinh astype atan atan2 atanh atleast_1d atleast_2d atleast_3d average bartlett base_repr
binary_repr bincount bitwise_and bitwise_count bitwise_invert bitwise_left_shift bitwise_not bitwise_or
bitwise_right_shift bitwise_xor blackman bool bool_ broadcast broadcast_arrays broadcast_shapes broadcast_to byte c_
can_cast cbrt cdouble ceil choose clip column_stack common_type complex128 complex64 complexfloating compress concat
concatenate conj conjugate convolve copy copysign copyto corrcoef correlate cos cosh count_nonzero cov cross csingle
cumprod cumsum deg2rad degrees delete diag diag_indices diag_indices_from diagflat
diagonal diff digitize divide divmod dot double dsplit dstack dtype e ediff1d einsum empty empty_like equal
euler_gamma exp exp2 expand_dims expm1 extract eye fabs fill_diagonal finfo fix flatiter flatnonzero flip fliplr
flipud float16 float32 float64 float_power floating floor floor_divide fmax fmin fmod format_float_positional
format_float_scientific frexp frombuffer fromfunction fromiter fromstring full full_like gcd generic
get_printoptions gradient greater greater_equal half hamming hanning heaviside histogram histogram2d histogramdd
hsplit hstack hypot i0 identity iinfo imag index_exp indices inexact inf inner int16 int32 int64 int8 int_ intc
integer interp intersect1d intp invert isclose iscomplex iscomplexobj isfinite isfortran isin isinf isnan
isneginf isposinf isreal isrealobj isscalar issubdtype iterable ix_ kaiser kron lcm ldexp left_shift less less_equal
lexsort linspace log log10 log1p log2 logaddexp logaddexp2 logical_and logical_not logical_or logical_xor logspace
long longlong mask_indices matmul max maximum may_share_memory mean median meshgrid mgrid min
min_scalar_type minimum mintypecode mod modf moveaxis multiply nan nan_to_num nanargmax nanargmin nancumprod
nancumsum nanmax nanmean nanmedian nanmin nanprod nanstd nansum nanvar ndim ndindex negative newaxis nextafter
nonzero not_equal number ogrid ones ones_like outer packbits pad partition percentile permute_dims pi piecewise
place poly poly1d polyadd polyfit polymul polysub polyval positive pow power printoptions prod promote_types ptp put
put_along_axis putmask quantile r_ rad2deg radians ravel ravel_multi_index real real_if_close reciprocal remainder
repeat require reshape resize result_type right_shift rint roll rollaxis roots rot90 round row_stack s_ searchsorted
select set_printoptions setdiff1d setxor1d shape shares_memory short sign signbit signedinteger sin sinc single sinh
size sort sort_complex split sqrt square squeeze stack std subtract sum swapaxes take take_along_axis tan tanh
tensordot tile trace transpose trapezoid tri tril tril_indices tril_indices_from trim_zeros triu triu_indices
triu_indices_from true_divide trunc typename ubyte uint uint16 uint32 uint64 uint8 uintc uintp ulong ulonglong
union1d unique unique_all unique_counts unique_inverse unique_values unpackbits unravel_index unsignedinteger unwrap
ushort vander var vdot vectorize vsplit vstack where zeros zeros_like
""".split())

#: Functions that take host data and copy it to the device.
_TRANSFERS = frozenset({"array", "asarray", "asanyarray", "ascontiguousarray", "asfortranarray", "require"})
#: ufunc methods CuPy implements, by ufunc name.
_UFUNC_METHODS = {
    "at": {"add", "subtract", "maximum", "minimum", "bitwise_and", "bitwise_or", "bitwise_xor"},
    "reduce": {"add", "multiply"}, "accumulate": {"add", "multiply"}, "reduceat": {"add"},
}
#: The dtypes ``ufunc.at`` takes (cupy/_core/_routines_indexing.pyx, _scatter_op_single).
_AT_DTYPES = {
    "add": {"int32", "int64", "float16", "float32", "float64", "uint32", "uint64"},
    "subtract": {"int32", "uint32"},
    "maximum": {"int32", "int64", "float32", "float64", "uint32", "uint64"},
    "minimum": {"int32", "int64", "float32", "float64", "uint32", "uint64"},
    "bitwise_and": {"int32", "int64", "uint32", "uint64"},
    "bitwise_or": {"int32", "int64", "uint32", "uint64"},
    "bitwise_xor": {"int32", "int64", "uint32", "uint64"},
}
_NO_DEVICE_KINDS = frozenset("USOMmV")


#: Every read of device memory by the host (what waits for a real device), as (kind, bytes):
#: kind is get, item, tolist, bool, int or float. Tests may clear it.
reads: list[tuple[str, int]] = []


def _count(kind: str, nbytes: int) -> None:
    reads.append((kind, nbytes))


def _check_dtype(a: _np.ndarray) -> _np.ndarray:
    if a.dtype.kind in _NO_DEVICE_KINDS:
        raise ValueError(f"Unsupported dtype {a.dtype}")
    return a


def _host_array_error(x: object) -> TypeError:
    return TypeError(f"Unsupported type {type(x)}")


def _dev(x, allow_host: bool = False):
    """The NumPy value behind ``x`` for a device operation; host arrays refused."""
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, _np.ndarray):
        if allow_host:
            return x
        raise _host_array_error(x)
    if isinstance(x, (list, tuple)):
        return type(x)(_dev(v, allow_host) for v in x)
    if isinstance(x, dict):
        return {k: _dev(v, allow_host) for k, v in x.items()}
    return x


def _wrap(r):
    if isinstance(r, _np.ndarray):
        return ndarray(_check_dtype(r))
    if isinstance(r, _np.generic) and not isinstance(r, (_np.str_, _np.bytes_, _np.void, _np.object_)):
        return ndarray(_np.asarray(r))
    if isinstance(r, tuple):
        return tuple(_wrap(v) for v in r)
    if isinstance(r, list):
        return [_wrap(v) for v in r]
    return r


def _stable(kwargs: dict) -> dict:
    """CuPy's sorts are stable and take no other kind."""
    if kwargs.get("kind") not in (None, "stable"):
        raise ValueError(f"kind={kwargs['kind']!r} is not supported")
    return {**kwargs, "kind": "stable"}


def _function(f, name: str):
    def call(*args, **kwargs):
        if name == "bincount" and _np.ndim(_dev(args[0])):
            if len(_dev(args[0])) == 0:
                raise ValueError("zero-size array to reduction operation cupy_max which has no identity")
            # CuPy reads back whether any value is negative, and the maximum for the length
            # (cupy/_statistics/histogram.py).
            _count("bool", 1)
            _count("int", 8)
        if name in ("sort", "argsort"):
            kwargs = _stable(kwargs)
        return _wrap(f(*_dev(args), **_dev(kwargs)))
    call.__name__ = name
    return call


def _transfer(f, name: str):
    def call(obj, *args, **kwargs):
        host = isinstance(obj, _np.ndarray) or (not isinstance(obj, ndarray) and not _np.isscalar(obj)
                                                and isinstance(obj, (list, tuple)))
        a = f(_dev(obj, allow_host=True), *args, **_dev(kwargs))
        if host and name != "array" and isinstance(a, _np.ndarray) and _np.shares_memory(a, obj):
            a = a.copy()  # device memory is its own
        return _wrap(_check_dtype(_np.asarray(a)))
    call.__name__ = name
    return call


class ufunc:
    """A NumPy ufunc that takes device arrays and has only CuPy's methods."""

    def __init__(self, f: _np.ufunc):
        self._f = f
        self.__name__ = f.__name__
        self.nin, self.nout = f.nin, f.nout

    def __call__(self, *args, **kwargs):
        if set(kwargs) - {"out", "dtype", "casting"}:  # CuPy's ufuncs take no other keyword
            raise TypeError(f"Wrong arguments {kwargs}")
        if "out" in kwargs and isinstance(kwargs["out"], tuple):
            kwargs["out"] = kwargs["out"][0]
        return _wrap(self._f(*_dev(args), **_dev(kwargs)))

    def __getattr__(self, method: str):
        if method not in _UFUNC_METHODS:
            raise AttributeError(method)
        if self.__name__ not in _UFUNC_METHODS[method]:
            def unsupported(*args, **kwargs):
                raise NotImplementedError(f"`cupy_{self.__name__}.{method}` is not supported yet")
            return unsupported
        if method == "at":
            return self._at
        bound = getattr(self._f, method)
        return lambda *args, **kwargs: _wrap(bound(*_dev(args), **_dev(kwargs)))

    def _at(self, a, indices, b=None):
        if not isinstance(a, ndarray):
            raise _host_array_error(a)
        if a.dtype.name not in _AT_DTYPES[self.__name__]:  # CuPy casts the values to a's dtype, then checks
            raise TypeError(f"cupy.{self.__name__}.at only supports {', '.join(sorted(_AT_DTYPES[self.__name__]))} "
                            "as data type")
        idx = _dev(indices, allow_host=True)
        vals = _dev(b, allow_host=True)
        if isinstance(idx, _np.ndarray) and idx.dtype.kind == "b":
            idx = _np.flatnonzero(idx)
        self._f.at(a._a, idx, vals)

    def __repr__(self):
        return f"<ufunc 'cupy_{self.__name__}'>"


class _Proxy:
    """A NumPy object (namespace or generator) whose callables return device arrays."""

    def __init__(self, obj, names: frozenset | None = None):
        self._obj, self._names = obj, names

    def __getattr__(self, name: str):
        if self._names is not None and name not in self._names:
            raise AttributeError(f"module 'cupy' has no attribute {name!r}")
        value = getattr(self._obj, name)
        if callable(value) and not isinstance(value, type):
            return lambda *args, **kwargs: _wrap_object(value(*_dev(args), **_dev(kwargs)))
        return value


def _wrap_object(r):
    if isinstance(r, _np.random.Generator):
        return _Proxy(r)
    return _wrap(r)


class _MemoryPointer:
    def __init__(self, a: _np.ndarray):
        self.ptr = a.ctypes.data


class ndarray:
    """A device array: a NumPy array that only device operations can read."""

    __array_priority__ = 100
    __slots__ = ("_a", "__weakref__")

    def __init__(self, a: _np.ndarray):
        if not isinstance(a, _np.ndarray):  # cupy.ndarray(shape, dtype)
            a = _np.empty(a, dtype=_np.float64)
        self._a = a

    # -- the host/device wall -------------------------------------------------
    def __array__(self, dtype=None, copy=None):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. "
                        "Please use `.get()` to construct a NumPy array explicitly.")

    def __array_ufunc__(self, uf, method, *inputs, **kwargs):
        f = getattr(sys.modules[__name__], uf.__name__, None)
        if not isinstance(f, ufunc):
            return NotImplemented
        if method != "__call__":
            f = getattr(f, method)
        return f(*inputs, **kwargs)

    def __array_function__(self, func, types_, args, kwargs):
        f = getattr(sys.modules[__name__], func.__name__, None)
        if f is None or not callable(f):
            return NotImplemented
        return f(*args, **kwargs)

    def get(self, stream=None, order="C", out=None, blocking=True):
        _count("get", self._a.nbytes)
        if out is not None:
            out[...] = self._a
            return out
        return self._a.copy()

    def set(self, arr, stream=None):
        if not isinstance(arr, _np.ndarray):
            raise TypeError(f"Only numpy.ndarray can be set to cupy.ndarray, got {type(arr)}")
        if arr.shape != self._a.shape:
            raise ValueError(f"Shape mismatch. Old shape: {self._a.shape}, new shape: {arr.shape}")
        if arr.dtype != self._a.dtype:
            raise TypeError(f"{arr.dtype} array cannot be set to {self._a.dtype} array")
        self._a[...] = arr

    def item(self):
        _count("item", self._a.nbytes)
        return self._a.item()

    def tolist(self):
        _count("tolist", self._a.nbytes)
        return self._a.tolist()

    # -- attributes --------------------------------------------------------------
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    data = property(lambda self: _MemoryPointer(self._a))
    T = property(lambda self: ndarray(self._a.T))
    real = property(lambda self: ndarray(self._a.real))
    imag = property(lambda self: ndarray(self._a.imag))
    base = property(lambda self: None if self._a.base is None else ndarray(self._a.base))

    def __getattr__(self, name: str):
        if name.startswith("_") or name in ("tofile", "dump", "dumps", "tobytes", "ctypes"):
            raise AttributeError(f"'cupy.ndarray' object has no attribute {name!r}")
        method = getattr(self._a, name)
        if not callable(method):
            raise AttributeError(f"'cupy.ndarray' object has no attribute {name!r}")

        def call(*args, **kwargs):
            if name in ("sort", "argsort"):
                kwargs = _stable(kwargs)
            return _wrap(method(*_dev(args), **_dev(kwargs)))
        return call

    def astype(self, dtype, order="K", casting=None, subok=None, copy=True):
        return ndarray(_check_dtype(self._a.astype(dtype, order=order, copy=copy)))

    # -- container ---------------------------------------------------------------
    def __len__(self):
        if self._a.ndim == 0:
            raise TypeError("len() of unsized object")
        return len(self._a)

    def __iter__(self):
        if self._a.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(len(self._a)))

    def __getitem__(self, key):
        return _wrap(self._a[_dev(key, allow_host=True)])

    def __setitem__(self, key, value):
        key = _dev(key, allow_host=True)
        advanced = any(isinstance(k, (_np.ndarray, list)) for k in (key if isinstance(key, tuple) else (key,)))
        if not advanced and isinstance(value, _np.ndarray) and value.ndim > 0:
            # Basic indexing fills from a device array or a scalar only (CuPy's _scatter_op, gh-2079).
            raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
        value = _dev(value, allow_host=True)
        if (isinstance(key, _np.ndarray) and key.ndim == 1 and key.dtype.kind in "iu"
                and isinstance(value, _np.ndarray) and value.shape == key.shape):
            # Repeated indices: CuPy leaves the winner undefined; NumPy's is the last.
            self._a[key[::-1]] = value[::-1]
        else:
            self._a[key] = value

    # -- conversions -------------------------------------------------------------
    def __bool__(self):
        if self._a.size == 0:
            warnings.warn("The truth value of an empty array is ambiguous.", DeprecationWarning, stacklevel=2)
            return False
        if self._a.size > 1:
            raise ValueError("The truth value of an array with more than one element is ambiguous. "
                             "Use a.any() or a.all()")
        _count("bool", self._a.nbytes)
        return bool(self._a)

    def __int__(self):
        _count("int", self._a.nbytes)
        return int(self._a)

    def __float__(self):
        _count("float", self._a.nbytes)
        return float(self._a)

    def __complex__(self):
        return complex(self._a)

    def __repr__(self):
        return repr(self._a)

    def __str__(self):
        return str(self._a)

    def __format__(self, spec):
        return format(self._a.item() if self._a.ndim == 0 else self._a, spec)

    def __copy__(self):
        return ndarray(self._a.copy())

    def __deepcopy__(self, memo):
        return ndarray(self._a.copy())

    def __reduce__(self):
        return _from_host, (self._a.copy(),)

    __hash__ = None


def _operand(x):
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, _np.ndarray):
        raise _host_array_error(x)
    return x


def _binary(op, reflected: bool = False):
    def method(self, other):
        if not isinstance(other, (ndarray, _np.ndarray, _np.generic, int, float, bool, complex)):
            return NotImplemented
        o = _operand(other)
        return _wrap(op(o, self._a) if reflected else op(self._a, o))
    return method


def _inplace(op):
    def method(self, other):
        op(self._a, _operand(other))
        return self
    return method


for _name in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "and", "or", "xor", "lshift", "rshift",
              "matmul"):
    _op = getattr(operator, _name if _name not in ("and", "or") else _name + "_")
    setattr(ndarray, f"__{_name}__", _binary(_op))
    setattr(ndarray, f"__r{_name}__", _binary(_op, reflected=True))
    setattr(ndarray, f"__i{_name}__", _inplace(getattr(operator, f"i{_name}")))
for _name in ("lt", "le", "eq", "ne", "gt", "ge"):
    setattr(ndarray, f"__{_name}__", _binary(getattr(operator, _name)))
def _unary(op):
    return lambda self: _wrap(op(self._a))


for _name in ("neg", "pos", "abs", "invert"):
    setattr(ndarray, f"__{_name}__", _unary(getattr(operator, _name)))
ndarray.__divmod__ = _binary(divmod)


def _from_host(a: _np.ndarray) -> ndarray:
    return ndarray(_check_dtype(a))


def asnumpy(a, stream=None, order="C", out=None, blocking=True):
    if isinstance(a, ndarray):
        return a.get(out=out)
    return _np.asarray(a, order=order)


def get_array_module(*args):
    for a in args:
        if isinstance(a, ndarray):
            return sys.modules[__name__]
    return _np


def is_available() -> bool:
    return True


def from_dlpack(obj):
    return ndarray(_np.from_dlpack(obj).copy())


# -- memory pools, streams, devices --------------------------------------------------------

class _MemoryPool:
    def used_bytes(self) -> int:
        return 0

    def total_bytes(self) -> int:
        return 0

    def free_bytes(self) -> int:
        return 0

    def free_all_blocks(self, stream=None) -> None:
        pass

    def set_limit(self, size=None, fraction=None) -> None:
        pass

    def get_limit(self) -> int:
        return 0

    def n_free_blocks(self) -> int:
        return 0


_POOL, _PINNED_POOL = _MemoryPool(), _MemoryPool()


def get_default_memory_pool() -> _MemoryPool:
    return _POOL


def get_default_pinned_memory_pool() -> _MemoryPool:
    return _PINNED_POOL


class _Event:
    """Records the host clock: the emulator's work is done when it is queued."""

    done = True

    def __init__(self, block: bool = False, disable_timing: bool = False, interprocess: bool = False):
        self.time = time.perf_counter()

    def record(self, stream=None) -> None:
        self.time = time.perf_counter()

    def synchronize(self) -> None:
        pass


class _Stream:
    def __init__(self, null: bool = False, non_blocking: bool = False, ptds: bool = False, priority=None):
        self.null, self.ptr = null, 0

    def synchronize(self) -> None:
        pass

    def record(self, event=None) -> _Event:
        event = event or _Event()
        event.record()
        return event

    def wait_event(self, event) -> None:
        pass

    def use(self) -> _Stream:
        return self

    def __enter__(self) -> _Stream:
        return self

    def __exit__(self, *exc) -> None:
        pass


_NULL_STREAM = _Stream(null=True)
_MEMORY = (24 << 30, 32 << 30)  # free, total


class _Device:
    compute_capability = "80"
    attributes = {"MultiProcessorCount": 8, "MaxSharedMemoryPerBlockOptin": 166912}

    def __init__(self, device=None):
        self.id = 0 if device is None else int(device)

    def synchronize(self) -> None:
        pass

    def use(self) -> _Device:
        return self

    @property
    def mem_info(self) -> tuple[int, int]:
        return _MEMORY

    def __enter__(self) -> _Device:
        return self

    def __exit__(self, *exc) -> None:
        pass


class CompileException(Exception):
    pass


class CUDARuntimeError(RuntimeError):
    pass


class RawModule:
    """Never compiles: the emulator runs no CUDA."""

    compiles = 0  # how often gpuseg asked for a compile

    def __init__(self, code: str | None = None, path: str | None = None, options=(), **kwargs):
        self.code = code

    def compile(self, log_stream=None):
        type(self).compiles += 1
        raise CompileException("the CuPy emulator compiles no CUDA")

    def get_function(self, name: str):
        self.compile()


class RawKernel(RawModule):
    pass


def _alloc_pinned_memory(size: int) -> bytearray:
    return bytearray(size)


_runtime = types.SimpleNamespace(
    getDeviceCount=lambda: 1,
    getDeviceProperties=lambda device: {"name": b"CuPy emulator (NumPy on the CPU)", "totalGlobalMem": _MEMORY[1],
                                        "major": 8, "minor": 0, "multiProcessorCount": 8},
    memGetInfo=lambda: _MEMORY,
    CUDARuntimeError=CUDARuntimeError,
)
cuda = types.SimpleNamespace(
    Device=_Device, Stream=_Stream, Event=_Event, runtime=_runtime,
    get_current_stream=lambda device=None: _NULL_STREAM,
    alloc_pinned_memory=_alloc_pinned_memory,
    get_elapsed_time=lambda start, end: (end.time - start.time) * 1e3,
    compiler=types.SimpleNamespace(CompileException=CompileException),
    is_available=lambda: True,
)
random = _Proxy(_np.random, frozenset({"default_rng", "seed", "rand", "randn", "randint", "random", "normal",
                                       "uniform", "permutation", "choice"}))
linalg = _Proxy(_np.linalg)


def _host(x):
    if isinstance(x, ndarray):
        return x.get()
    if isinstance(x, (list, tuple)):
        return type(x)(_host(v) for v in x)
    return x


def _on_host(f):
    return lambda *args, **kwargs: f(*_host(args), **{k: _host(v) for k, v in kwargs.items()})


testing = types.SimpleNamespace(**{
    name: _on_host(getattr(_np.testing, name))
    for name in ("assert_array_equal", "assert_allclose", "assert_array_almost_equal", "assert_array_less",
                 "assert_equal")})


def __getattr__(name: str):
    if name not in _CUPY_NAMES or not hasattr(_np, name):
        raise AttributeError(f"module 'cupy' has no attribute {name!r}")
    obj = getattr(_np, name)
    if isinstance(obj, _np.ufunc):
        value = ufunc(obj)
    elif isinstance(obj, type) or not callable(obj):
        value = obj
    elif name in _TRANSFERS:
        value = _transfer(obj, name)
    else:
        value = _function(obj, name)
    globals()[name] = value  # looked up once
    return value
