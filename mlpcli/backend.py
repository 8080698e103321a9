"""The array module of a run: NumPy on the CPU, CuPy on an NVIDIA GPU.

This is the only module that imports CuPy. The math receives `backend.xp` once per run
and never imports numpy or cupy itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from mlpcli.errors import BackendError

DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class Backend:
    """Where a run computes: `xp` is numpy or cupy."""

    name: str  # "cpu" or "cuda"
    xp: ModuleType
    description: str

    def asarray(self, a: Any, dtype: Any = None) -> Any:
        """A host (or device) array as a contiguous array of this backend."""
        return self.xp.ascontiguousarray(self.xp.asarray(a, dtype=dtype))

    def take(self, a: Any, rows: Any, out: Any) -> Any:
        """out[i] = a[rows[i]]: gathers a batch into a reused buffer."""
        if self.name == "cpu":  # NumPy's default mode ("raise") copies through a temporary
            return self.xp.take(a, rows, axis=0, out=out, mode="clip")
        return self.xp.take(a, rows, axis=0, out=out)

    def synchronize(self) -> None:
        """Wait for queued device work (a no-op on the CPU)."""
        if self.name == "cuda":
            self.xp.cuda.get_current_stream().synchronize()

    # ------------------------------------------------------------------ streaming
    # What mlpcli/feed.py needs to copy batches host -> device on a second stream while the
    # current stream computes. On the CPU the copies are plain copies, done when called,
    # and the streams and events are `_HOST_QUEUE`, whose waits have nothing to wait for.

    def free_bytes(self) -> int | None:
        """Device memory this process may still take: what the driver reports free plus
        what CuPy's memory pool holds unused; None on the CPU (the data is in host memory)."""
        if self.name == "cpu":
            return None
        free, _total = self.xp.cuda.runtime.memGetInfo()
        return int(free) + int(self.xp.get_default_memory_pool().free_bytes())

    def pinned_empty(self, shape: tuple, dtype: Any) -> np.ndarray:
        """A host array in page-locked memory, from which a copy to the device can run
        asynchronously (ordinary memory on the CPU)."""
        if self.name == "cpu":
            return np.empty(shape, dtype)
        dtype = np.dtype(dtype)
        nbytes = max(math.prod(shape) * dtype.itemsize, 1)
        return np.ndarray(shape, dtype, buffer=self.xp.cuda.alloc_pinned_memory(nbytes))

    def compute_stream(self) -> Any:
        """The stream the math runs on: CuPy's current stream."""
        return _HOST_QUEUE if self.name == "cpu" else self.xp.cuda.get_current_stream()

    def copy_stream(self) -> Any:
        """A second stream for host -> device copies. Non-blocking: the legacy default
        stream would otherwise serialize with it; events alone order the two."""
        return _HOST_QUEUE if self.name == "cpu" else self.xp.cuda.Stream(non_blocking=True)

    def event(self) -> Any:
        """A CUDA event (record on a stream; wait for it on another stream, or the host)."""
        return _HOST_QUEUE if self.name == "cpu" else self.xp.cuda.Event(disable_timing=True)

    def upload(self, dst: Any, src: np.ndarray, stream: Any) -> None:
        """dst[...] = src, a host array, queued on `stream`: asynchronous from pinned memory.
        `dst` must be C-contiguous (a leading slice of a buffer is)."""
        if self.name == "cpu":
            np.copyto(dst, src)
        else:
            dst.set(src, stream=stream)


class _HostQueue:
    """The CPU's stream and event: NumPy's work is finished when its call returns."""

    def record(self, stream: Any = None) -> None:
        pass

    def wait_event(self, event: Any) -> None:
        pass

    def synchronize(self) -> None:
        pass


_HOST_QUEUE = _HostQueue()


def to_host(a: Any) -> np.ndarray:
    """A NumPy copy-or-view of a NumPy or CuPy array."""
    get = getattr(a, "get", None)
    return get() if callable(get) else np.asarray(a)


def _cuda() -> Backend | str:
    """The CUDA backend, or a sentence saying why it cannot be used."""
    try:
        import cupy
    except ImportError:
        return 'CuPy is not installed (pip install "mlpcli[gpu]")'
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CUDA driver missing or broken
        return f"CuPy found no usable CUDA driver ({e})"
    if count == 0:
        return "CuPy found no CUDA device"
    props = cupy.cuda.runtime.getDeviceProperties(0)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    return Backend("cuda", cupy, f"cuda ({name})")


def get_backend(device: str = "auto") -> Backend:
    """The backend for `device` ("auto", "cpu" or "cuda")."""
    if device not in DEVICES:
        raise BackendError(f"--device: must be one of {', '.join(DEVICES)}, got {device!r}")
    if device != "cpu":
        cuda = _cuda()
        if isinstance(cuda, Backend):
            return cuda
        if device == "cuda":
            raise BackendError(f"device cuda: {cuda}")
    return Backend("cpu", np, "cpu (NumPy)")
