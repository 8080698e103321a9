"""A stand-in for CuPy on machines without a GPU: NumPy behind a CuPy-like wall.

`xp` offers the part of CuPy's API that mlpcli's math uses, and its arrays (`DeviceArray`)
refuse to become NumPy arrays implicitly, as `cupy.ndarray` does. A stray `numpy` call in
the math, which on a GPU would fail or silently copy to the host, therefore fails a
CPU-only test. Underneath is plain NumPy, so a run on `BACKEND` gives the same bits as a
run on the CPU backend.

The wall: `np.asarray(dev)`, NumPy ufuncs and array functions on a `DeviceArray`, a NumPy
array mixed into device arithmetic, indexing or an `xp` function, all raise TypeError.
The only doors are `xp.asarray` (host -> device, a copy) and `.get()` (device -> host, a
copy); `float()`, `int()` and `bool()` of a 0-d array work (in CuPy: a sync).

It refuses what CuPy refuses where the engine could trip on it, and takes the keywords
CuPy takes (`order=`, `shape=`) where it once refused them: keywords CuPy's ufuncs and
reductions lack (`where=`, `initial=`), `take` with a `mode` or into an `out` of another
dtype, `out=` buffers of the wrong shape or an unsafe cast. And `recording()` logs every call
made through it (function, argument shapes, dtypes, strides and which arrays share memory),
so that tests/cupy_replay.py can replay the same calls on real CuPy.
"""

from __future__ import annotations

import contextlib
import json
import operator
from types import SimpleNamespace
from typing import Any

import numpy as np

from mlpcli.backend import Backend

_SCALARS = (bool, int, float, complex, np.generic)  # what CuPy takes as a scalar operand

_IMPLICIT = (
    "implicit conversion to a NumPy array is not allowed. "
    "Please use `.get()` to construct a NumPy array explicitly."
)


def _refuse(obj: Any, where: str) -> TypeError:
    kind = f"{type(obj).__module__}.{type(obj).__qualname__}"
    hint = " (a host array: move it with xp.asarray first)" if isinstance(obj, np.ndarray) else ""
    return TypeError(f"{where}: unsupported type {kind}{hint}")


def _operand(x: Any, where: str = "operand") -> Any:
    """The NumPy array behind a device array, or a scalar; anything else is refused."""
    if isinstance(x, DeviceArray):
        return x._a
    if isinstance(x, _SCALARS):
        return x
    raise _refuse(x, where)


def _device(x: Any, where: str) -> np.ndarray:
    """The NumPy array behind a device array; scalars and host arrays are refused."""
    if isinstance(x, DeviceArray):
        return x._a
    raise _refuse(x, where)


def _out(out: Any, where: str) -> np.ndarray | None:
    return None if out is None else _device(out, f"{where}(out=)")


def _index(key: Any) -> Any:
    """An index with device arrays unwrapped; host arrays are refused (a per-step copy)."""
    if isinstance(key, tuple):
        return tuple(_index(k) for k in key)
    if isinstance(key, DeviceArray):
        return key._a
    if isinstance(key, np.ndarray):
        raise _refuse(key, "index")
    return key  # int, slice, Ellipsis, None


def _wrap(result: Any) -> DeviceArray:
    """A NumPy result as a device array; NumPy scalars become 0-d arrays, as in CuPy."""
    return DeviceArray(np.asarray(result))


def _binary(op):
    def method(self, other):
        return _wrap(op(self._a, _operand(other)))

    return method


def _reflected(op):
    def method(self, other):
        return _wrap(op(_operand(other), self._a))

    return method


def _inplace(op):
    def method(self, other):
        op(self._a, _operand(other))  # in place on the NumPy array (a view writes through)
        return self

    return method


def _unary(op):
    def method(self):
        return _wrap(op(self._a))

    return method


# the keywords cupy.ndarray's reductions take (NumPy's also take where=, initial=)
_REDUCTION_KEYWORDS = {
    "sum": ("axis", "dtype", "keepdims"),
    "mean": ("axis", "dtype", "keepdims"),
    "max": ("axis", "keepdims"),
    "min": ("axis", "keepdims"),
    "argmax": ("axis", "dtype", "keepdims"),
    "argmin": ("axis", "dtype", "keepdims"),
}


def _check_keywords(where: str, kwargs: dict, allowed: tuple) -> None:
    extra = sorted(set(kwargs) - set(allowed))
    if extra:
        raise TypeError(f"{where}() got unexpected keyword arguments {extra} (CuPy has none)")


def _reduction(name: str):
    def method(self, *args, out=None, **kwargs):
        _check_keywords(name, kwargs, _REDUCTION_KEYWORDS[name])
        result = getattr(self._a, name)(*args, out=_out(out, name), **kwargs)
        return out if out is not None else _wrap(result)

    method.__name__ = name
    return method


class DeviceArray:
    """An array "on the device": a NumPy array that NumPy itself may not touch."""

    __slots__ = ("_a",)
    __array_ufunc__ = None  # np.add(dev, 1), host + dev: NumPy defers, then refuses
    __hash__ = None  # mutable, compared element-wise: unhashable like cupy.ndarray

    def __init__(self, a: np.ndarray):
        if not isinstance(a, np.ndarray):
            raise TypeError(f"DeviceArray wraps a numpy.ndarray, got {type(a).__name__}")
        self._a = a

    # ------------------------------------------------------------------ the wall

    def __array__(self, dtype=None, copy=None):
        raise TypeError(_IMPLICIT)

    def __array_function__(self, func, types, args, kwargs):
        raise TypeError(
            f"numpy.{func.__name__} was given a device array; use xp.{func.__name__}, "
            "or .get() for an explicit copy to the host"
        )

    def get(self) -> np.ndarray:
        """The explicit device -> host copy (what `mlpcli.backend.to_host` calls)."""
        return self._a.copy()

    def _scalar(self, kind: type) -> Any:
        if self._a.ndim != 0:
            raise TypeError(f"only 0-d device arrays convert to {kind.__name__}")
        return kind(self._a)

    def __float__(self) -> float:
        return self._scalar(float)

    def __int__(self) -> int:
        return self._scalar(int)

    def __bool__(self) -> bool:
        return self._scalar(bool)

    def item(self) -> Any:
        return self._a.item()

    def __repr__(self) -> str:
        return f"DeviceArray({self._a!r})"

    # ------------------------------------------------------------------ attributes

    shape = property(lambda self: self._a.shape)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    dtype = property(lambda self: self._a.dtype)
    nbytes = property(lambda self: self._a.nbytes)
    T = property(lambda self: DeviceArray(self._a.T))

    def __len__(self) -> int:
        return len(self._a)

    def reshape(self, *shape: Any, order: str = "C") -> DeviceArray:
        return DeviceArray(self._a.reshape(*shape, order=order))

    def astype(
        self, dtype: Any, order: str = "K", casting: Any = None, subok: Any = None, copy=True
    ) -> DeviceArray:
        if subok is not None or casting is not None:
            raise TypeError("astype: casting and subok are not supported (as in CuPy)")
        a = self._a.astype(dtype, order=order, copy=copy)
        return self if a is self._a else DeviceArray(a)

    def copy(self) -> DeviceArray:
        return DeviceArray(self._a.copy())

    def fill(self, value: Any) -> None:
        self._a.fill(_operand(value, "fill"))

    sum = _reduction("sum")
    mean = _reduction("mean")
    max = _reduction("max")
    min = _reduction("min")
    argmax = _reduction("argmax")
    argmin = _reduction("argmin")

    # ------------------------------------------------------------------ indexing

    def __getitem__(self, key: Any) -> DeviceArray:
        return _wrap(self._a[_index(key)])  # basic indexing: a view of the same memory

    def __setitem__(self, key: Any, value: Any) -> None:
        self._a[_index(key)] = _operand(value, "assignment")

    # ------------------------------------------------------------------ operators

    __add__ = _binary(operator.add)
    __radd__ = _reflected(operator.add)
    __iadd__ = _inplace(operator.iadd)
    __sub__ = _binary(operator.sub)
    __rsub__ = _reflected(operator.sub)
    __isub__ = _inplace(operator.isub)
    __mul__ = _binary(operator.mul)
    __rmul__ = _reflected(operator.mul)
    __imul__ = _inplace(operator.imul)
    __truediv__ = _binary(operator.truediv)
    __rtruediv__ = _reflected(operator.truediv)
    __itruediv__ = _inplace(operator.itruediv)
    __pow__ = _binary(operator.pow)
    __rpow__ = _reflected(operator.pow)
    __ipow__ = _inplace(operator.ipow)
    __matmul__, __rmatmul__ = _binary(operator.matmul), _reflected(operator.matmul)
    __eq__, __ne__ = _binary(operator.eq), _binary(operator.ne)
    __lt__, __le__ = _binary(operator.lt), _binary(operator.le)
    __gt__, __ge__ = _binary(operator.gt), _binary(operator.ge)
    __and__, __or__ = _binary(operator.and_), _binary(operator.or_)
    __neg__, __pos__, __abs__ = _unary(operator.neg), _unary(operator.pos), _unary(abs)


# ---------------------------------------------------------------------- the module "xp"


def asarray(a: Any, dtype: Any = None, order: Any = None) -> DeviceArray:
    """Host -> device (a copy); a device array comes back as it is (cast if dtype differs)."""
    if isinstance(a, DeviceArray):
        if dtype is None and order in (None, "K", "A"):
            return a
        return DeviceArray(np.asarray(a._a, dtype=dtype, order=order))
    return DeviceArray(np.array(a, dtype=dtype, order=order))  # a copy, like a cudaMemcpy


def ascontiguousarray(a: Any, dtype: Any = None) -> DeviceArray:
    """A C-contiguous device array; as in CuPy, `a` must already be on the device."""
    src = _device(a, "ascontiguousarray")
    dst = src.astype(dtype if dtype is not None else src.dtype, copy=False)
    if not dst.flags.c_contiguous:
        dst = dst.copy(order="C")  # keeps 0-d arrays 0-d (np.ascontiguousarray would not)
    return a if dst is src else DeviceArray(dst)


def _creation(f):
    def create(shape: Any, dtype: Any = float, order: str = "C") -> DeviceArray:
        return DeviceArray(f(shape, dtype=dtype, order=order))

    create.__name__ = f.__name__
    return create


def _like(f):
    def create(
        a: Any, dtype: Any = None, order: str = "K", subok: Any = None, shape: Any = None
    ) -> DeviceArray:
        if subok is not None:
            raise TypeError(f"{f.__name__}: subok is not supported (as in CuPy)")
        return DeviceArray(f(_device(a, f.__name__), dtype=dtype, order=order, shape=shape))

    create.__name__ = f.__name__
    return create


def arange(*args: Any, dtype: Any = None) -> DeviceArray:
    for x in args:
        _operand(x, "arange")
    return DeviceArray(np.arange(*args, dtype=dtype))


def take(a: Any, indices: Any, axis: Any = None, out: Any = None) -> DeviceArray:
    """cupy.take: no `mode` argument (out-of-range indices wrap on a GPU, unchecked), and an
    `out` of the source's dtype ("Output dtype mismatch" otherwise)."""
    idx = indices if isinstance(indices, int) else _device(indices, "take(indices)")
    src, dst = _device(a, "take"), _out(out, "take")
    if dst is not None and dst.dtype != src.dtype:
        raise TypeError(f"take: Output dtype mismatch ({src.dtype} into {dst.dtype})")
    result = np.take(src, idx, axis=axis, out=dst)
    return out if out is not None else _wrap(result)


def copyto(dst: Any, src: Any, casting: str = "same_kind", where: Any = None) -> None:
    np.copyto(
        _device(dst, "copyto(dst)"),
        _operand(src, "copyto(src)"),
        casting=casting,
        where=True if where is None else _device(where, "copyto(where)"),
    )


def vdot(a: Any, b: Any) -> DeviceArray:
    return _wrap(np.vdot(_device(a, "vdot"), _device(b, "vdot")))


def where(condition: Any, x: Any, y: Any) -> DeviceArray:
    return _wrap(np.where(_device(condition, "where"), _operand(x, "where"), _operand(y, "where")))


def _sum(a: Any, axis: Any = None, dtype: Any = None, out: Any = None, keepdims: bool = False):
    _device(a, "sum")
    return a.sum(axis=axis, dtype=dtype, out=out, keepdims=keepdims)


def _ufunc(f: np.ufunc):
    """A NumPy ufunc behind the wall: device arrays and scalars in, a device array out."""

    def call(*args: Any, out: Any = None, **kwargs: Any) -> DeviceArray:
        _check_keywords(f.__name__, kwargs, _UFUNC_KEYWORDS)
        result = f(*(_operand(x, f.__name__) for x in args), out=_out(out, f.__name__), **kwargs)
        return out if out is not None else _wrap(result)

    call.__name__ = f.__name__
    return call


_UFUNC_KEYWORDS = ("dtype", "casting")  # with out=: what cupy.ufunc.__call__ takes

_UFUNCS = (
    *("add", "subtract", "multiply", "divide", "true_divide", "power", "negative", "matmul"),
    *("maximum", "minimum", "greater", "greater_equal", "less", "less_equal", "equal"),
    *("not_equal", "logical_and", "logical_or"),
    *("sqrt", "square", "exp", "log", "log1p", "expm1", "abs", "tanh", "sign"),
)


class _Stream:
    def synchronize(self) -> None:
        pass  # NumPy has already finished


xp = SimpleNamespace(
    __name__="standin_xp.xp",
    ndarray=DeviceArray,
    float16=np.float16,
    float32=np.float32,
    float64=np.float64,
    int32=np.int32,
    int64=np.int64,
    bool_=np.bool_,
    asarray=asarray,
    ascontiguousarray=ascontiguousarray,
    empty=_creation(np.empty),
    zeros=_creation(np.zeros),
    ones=_creation(np.ones),
    empty_like=_like(np.empty_like),
    zeros_like=_like(np.zeros_like),
    ones_like=_like(np.ones_like),
    arange=arange,
    take=take,
    copyto=copyto,
    vdot=vdot,
    where=where,
    sum=_sum,
    cuda=SimpleNamespace(get_current_stream=_Stream),
    **{name: _ufunc(getattr(np, name)) for name in _UFUNCS},
)
xp.get_array_module = lambda *arrays: xp


# ---------------------------------------------------------------------- recording the calls

_RECORD: dict | None = None  # while recording: canonical call -> the call, in first-seen order
_DEPTH = [0]  # calls made from inside a recorded call are not recorded themselves


@contextlib.contextmanager
def recording():
    """Record each distinct call made through the stand-in inside the block; yields the list
    (filled as the block runs) of calls in tests/cupy_replay.py's format."""
    global _RECORD
    outer, _RECORD = _RECORD, {}
    calls: list[dict] = []
    try:
        yield calls
    finally:
        calls.extend(_RECORD.values())
        _RECORD = outer


def _root(a: np.ndarray) -> np.ndarray:
    """The array that owns the memory `a` views (a memory map's first ndarray)."""
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def _pinned(a: np.ndarray) -> bool:
    """Whether host array `a` views memory from `alloc_pinned_memory`."""
    owner = _root(a).base
    if isinstance(owner, memoryview):  # NumPy 1 keeps the memoryview, NumPy 2 its owner
        owner = owner.obj
    return isinstance(owner, _PinnedBytes)


def encode(value: Any, buffers: dict) -> Any:
    """An argument as JSON: device arrays by buffer (numbered in order of appearance within
    one call, so that calls differing only in which buffer they use compare equal), offset,
    shape, dtype and strides, and which arguments are one and the same array object (CuPy
    copies an input that shares memory with `out` unless it *is* `out`); host arrays by shape,
    dtype, strides and whether they are pinned; streams and events by the flags they were
    made with (or as the current stream); scalars by value and type."""
    if isinstance(value, DeviceArray):
        a = value._a
        root = _root(a)
        key = id(root)
        if key not in buffers:
            buffers[key] = (len(buffers) - (None in buffers), root.nbytes)
        objects = buffers.setdefault(None, {})  # array objects, apart from the buffers
        objects.setdefault(id(value), len(objects))
        number, nbytes = buffers[key]
        offset = a.__array_interface__["data"][0] - root.__array_interface__["data"][0]
        return {
            "object": objects[id(value)],
            "device": number,
            "nbytes": nbytes,
            "offset": offset,
            "shape": list(a.shape),
            "strides": list(a.strides),
            "dtype": a.dtype.str,
        }
    if isinstance(value, np.ndarray):  # layout, and whether it is in page-locked memory
        return {
            "host": list(value.shape),
            "dtype": value.dtype.str,
            "strides": list(value.strides),
            "pinned": _pinned(value),
        }
    if isinstance(value, (Stream, _Stream)):
        return {"stream": value._flags if isinstance(value, Stream) else "current"}
    if isinstance(value, Event):
        return {"event": value._flags}
    if isinstance(value, _MemoryPool):
        return {"memory_pool": "default"}
    if isinstance(value, np.generic):
        return {"scalar": value.item(), "dtype": value.dtype.str}
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return {
            "tuple" if isinstance(value, tuple) else "list": [encode(v, buffers) for v in value]
        }
    if isinstance(value, slice):
        return {"slice": [value.start, value.stop, value.step]}
    if value is Ellipsis:
        return {"ellipsis": True}
    if isinstance(value, (type, np.dtype)):
        return {"type": np.dtype(value).str}
    raise TypeError(f"cannot record an argument of type {type(value).__name__}")


def encode_call(name: str, args: tuple, kwargs: dict) -> dict:
    """One call in the replay format: {"call": name, "args": [...], "kwargs": {...}}."""
    buffers: dict = {}
    return {
        "call": name,
        "args": [encode(a, buffers) for a in args],
        "kwargs": {k: encode(v, buffers) for k, v in kwargs.items()},
    }


def _recorded(name: str, f):
    def call(*args: Any, **kwargs: Any) -> Any:
        if _RECORD is not None and _DEPTH[0] == 0:
            entry = encode_call(name, args, kwargs)
            _RECORD.setdefault(json.dumps(entry, sort_keys=True), entry)
        _DEPTH[0] += 1
        try:
            return f(*args, **kwargs)
        finally:
            _DEPTH[0] -= 1

    call.__name__ = getattr(f, "__name__", name)
    return call


for _name, _f in list(vars(xp).items()):
    if callable(_f) and not isinstance(_f, type) and _name != "get_array_module":
        setattr(xp, _name, _recorded(f"xp.{_name}", _f))
for _name, _f in list(vars(DeviceArray).items()):
    if callable(_f) and _name not in ("__init__", "__array__", "__array_function__", "__repr__"):
        setattr(DeviceArray, _name, _recorded(f"ndarray.{_name}", _f))
DeviceArray.T = property(_recorded("ndarray.T", lambda self: DeviceArray(self._a.T)))

BACKEND = Backend("cuda", xp, "stand-in GPU (NumPy behind a CuPy-like wall)")


# ---------------------------------------------------------------------- streaming
# What mlpcli/feed.py uses to stream batches, after CuPy's API: `cuda.Stream`,
# `cuda.Event`, `cuda.alloc_pinned_memory`, `ndarray.set(arr, stream=)`,
# `cuda.runtime.memGetInfo` and `get_default_memory_pool().free_bytes()`.
#
# Recorded like the array calls (the flags of streams and events, the layout of host arrays
# and whether they are pinned), so tests/cupy_replay.py replays them on real CuPy too.
#
# The current stream runs everything at once (NumPy underneath). A `Stream` of one's own
# defers what is queued on it — a copy reads its host source only when it runs — until
# an event recorded after it is waited for (by the host, or by a stream, which here
# means at once) or the stream is synchronized. A feeder that reads a device buffer
# before waiting for its copy, or refills a pinned buffer before its copy ran, therefore
# sees the wrong rows and loses the CPU's bits.

DEVICE_FREE = 16 * 2**30  # what memGetInfo reports free; tests lower it
DEVICE_TOTAL = 16 * 2**30
PINNED: list[int] = []  # the size of each alloc_pinned_memory, in order


class Stream:
    """cupy.cuda.Stream: work queued on it runs when something waits for it."""

    def __init__(self, null: bool = False, non_blocking: bool = False, ptds: bool = False):
        self._flags = {"null": null, "non_blocking": non_blocking, "ptds": ptds}
        self.non_blocking = non_blocking
        self._queue: list = []  # deferred work, oldest first
        self._ran = 0  # how many queued items have run
        self._queued = 0

    def _enqueue(self, work) -> None:
        self._queue.append(work)
        self._queued += 1

    def _run_until(self, mark: int) -> None:
        while self._ran < mark:
            self._queue.pop(0)()
            self._ran += 1

    def synchronize(self) -> None:
        self._run_until(self._queued)

    def wait_event(self, event: Event) -> None:
        event.synchronize()  # the work behind the event runs before anything queued later

    def record(self, event: Event | None = None) -> Event:
        event = event if event is not None else Event()
        event.record(self)
        return event


class Event:
    """cupy.cuda.Event: marks a point of a stream's queue."""

    def __init__(self, block: bool = False, disable_timing: bool = False, interprocess=False):
        self._flags = {
            "block": block,
            "disable_timing": disable_timing,
            "interprocess": interprocess,
        }
        self._stream: Stream | None = None
        self._mark = 0

    def record(self, stream: Any = None) -> None:
        if isinstance(stream, Stream):
            self._stream, self._mark = stream, stream._queued
        else:  # the current stream: its work is already done
            self._stream = None

    def synchronize(self) -> None:
        if self._stream is not None:
            self._stream._run_until(self._mark)

    @property
    def done(self) -> bool:
        return self._stream is None or self._stream._ran >= self._mark


def _wait_event(self, event: Event) -> None:
    event.synchronize()


_Stream.wait_event = _wait_event  # the current stream waits by running the work now
_Stream.record = Stream.record


class _PinnedBytes(bytearray):
    """The memory behind `alloc_pinned_memory` (a type of its own: recording tells a pinned
    host array from another)."""


def alloc_pinned_memory(size: int) -> memoryview:
    """Page-locked host memory: here ordinary memory, counted in PINNED."""
    PINNED.append(size)
    return memoryview(_PinnedBytes(size))


def _set(self: DeviceArray, arr: Any, stream: Any = None) -> None:
    """ndarray.set: host -> device copy of a same-shape, same-dtype host array."""
    if not isinstance(arr, np.ndarray):
        raise TypeError("Only numpy.ndarray can be set to cupy.ndarray")
    if self.dtype != arr.dtype:
        raise TypeError(f"{arr.dtype} array cannot be set to {self.dtype} array")
    if self.shape != arr.shape:
        raise ValueError(f"Shape mismatch. Old shape: {self.shape}, new shape: {arr.shape}")
    if not self._a.flags.c_contiguous:
        raise RuntimeError("Cannot set to non-contiguous array")

    def copy() -> None:
        np.copyto(self._a, arr)

    if isinstance(stream, Stream):
        stream._enqueue(copy)
    else:
        copy()


class _MemoryPool:
    """cupy.get_default_memory_pool(): nothing cached here (NumPy allocates)."""

    def free_bytes(self) -> int:
        return 0

    def used_bytes(self) -> int:
        return 0

    def total_bytes(self) -> int:
        return 0

    def free_all_blocks(self) -> None:
        pass


def _mem_get_info() -> tuple[int, int]:
    return DEVICE_FREE, DEVICE_TOTAL


for _cls, _prefix in ((Stream, "Stream"), (_Stream, "Stream"), (Event, "Event")):
    for _name in ("record", "synchronize", "wait_event"):
        if _name in vars(_cls):
            setattr(_cls, _name, _recorded(f"{_prefix}.{_name}", vars(_cls)[_name]))
Event.done = property(_recorded("Event.done", vars(Event)["done"].fget))
_MemoryPool.free_bytes = _recorded("MemoryPool.free_bytes", _MemoryPool.free_bytes)
DeviceArray.set = _recorded("ndarray.set", _set)

xp.cuda.Stream = _recorded("xp.cuda.Stream", Stream)
xp.cuda.Event = _recorded("xp.cuda.Event", Event)
xp.cuda.get_current_stream = _recorded("xp.cuda.get_current_stream", _Stream)
xp.cuda.alloc_pinned_memory = _recorded("xp.cuda.alloc_pinned_memory", alloc_pinned_memory)
if not hasattr(xp.cuda, "runtime"):  # added to, not replaced, where the stand-in has one
    xp.cuda.runtime = SimpleNamespace()
xp.cuda.runtime.memGetInfo = _recorded("xp.cuda.runtime.memGetInfo", _mem_get_info)
if not hasattr(xp, "get_default_memory_pool"):
    xp.get_default_memory_pool = _recorded("xp.get_default_memory_pool", _MemoryPool)
