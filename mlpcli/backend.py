"""The array module of a run: NumPy on the CPU, CuPy on an NVIDIA GPU.

This is the only module that imports CuPy. The math receives `backend.xp` once per run
and never imports numpy or cupy itself.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from mlpcli.errors import BackendError

DEVICES = ("auto", "cpu", "cuda")
_WARNED: set[str] = set()  # the reasons `auto` has already warned of in this process


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


@dataclass(frozen=True)
class NoCuda:
    """Why CUDA cannot be used; `has_gpu` when a GPU is there but unusable (`auto` warns)."""

    reason: str
    has_gpu: bool = False


def _cuda() -> Backend | NoCuda:
    """The CUDA backend, proven usable, or why it cannot be used."""
    try:
        import cupy
    except ImportError:
        return NoCuda('CuPy is not installed (pip install "mlpcli[gpu]")')
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CUDA driver missing or broken
        return NoCuda(f"CuPy found no usable CUDA driver ({_first_line(e)})")
    if count == 0:
        return NoCuda("CuPy found no CUDA device")
    props = cupy.cuda.runtime.getDeviceProperties(0)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    fault = _probe(cupy)
    if fault is not None:
        return NoCuda(f"the GPU ({name}) cannot be used: {fault}", has_gpu=True)
    return Backend("cuda", cupy, f"cuda ({name})")


def _probe(cupy: Any) -> str | None:
    """None when the GPU multiplies on cuBLAS and runs a kernel compiled by NVRTC; else what
    is missing. A CuPy wheel on a machine with a driver but no CUDA Toolkit has neither
    library, and would fail only at the first matrix product, deep into a run."""
    missing, errors = [], []
    for library, load in (
        ("cuBLAS", lambda: cupy.cuda.device.get_cublas_handle()),
        ("NVRTC", lambda: cupy.cuda.nvrtc.getVersion()),
    ):
        try:
            load()
        except Exception as e:
            missing.append(library)
            errors.append(_first_line(e))
    if missing:
        version = getattr(cupy, "__version__", "?")
        if version.split(".")[0].isdigit() and int(version.split(".")[0]) >= 14:
            fix = 'pip install "cupy-cuda12x[ctk]", or install the CUDA Toolkit 12'
        else:
            fix = (
                "install the CUDA Toolkit 12 with its lib64 on LD_LIBRARY_PATH, or "
                'CuPy 14 with its libraries: pip install "cupy-cuda12x[ctk]>=14"'
            )
        return f"CuPy {version} cannot load {' nor '.join(missing)} ({errors[0]}); {fix}"
    try:
        x = cupy.arange(1, 5, dtype=cupy.float32)  # 1 2 3 4
        got = float(cupy.matmul(x, x)) + float((x * x).sum())  # cuBLAS, then kernels
    except Exception as e:
        return f"a test computation failed on it ({_first_line(e)})"
    if got != 60.0:
        return f"a test computation on it gave {got} instead of 60"
    return None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    line = text[0] if text else type(e).__name__
    return line if len(line) <= 160 else line[:157] + "..."


def get_backend(device: str = "auto") -> Backend:
    """The backend for `device` ("auto", "cpu" or "cuda"). `auto` takes a GPU that works and
    otherwise the CPU, with a `warning:` line on stderr when a GPU is there but unusable."""
    if device not in DEVICES:
        raise BackendError(f"--device: must be one of {', '.join(DEVICES)}, got {device!r}")
    if device != "cpu":
        cuda = _cuda()
        if isinstance(cuda, Backend):
            return cuda
        if device == "cuda":
            raise BackendError(f"device cuda: {cuda.reason}")
        if cuda.has_gpu and cuda.reason not in _WARNED:  # once a process (a sweep's trials)
            _WARNED.add(cuda.reason)
            print(f"warning: device auto: {cuda.reason}; running on the CPU", file=sys.stderr)
    return Backend("cpu", np, "cpu (NumPy)")
