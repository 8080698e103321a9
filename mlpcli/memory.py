"""How much memory this process may still take, so that a data set or model too large for
the machine is refused up front (exit 2, naming the key or file) instead of ending in a
MemoryError, a swap storm or the kernel's OOM killer halfway through; and running out of
GPU memory, turned into the same kind of one-line error.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from mlpcli.errors import BackendError, MlpcliError


def available_bytes() -> int:
    """The bytes this process can still allocate: the smaller of the memory the kernel
    reports available (MemAvailable) and what RLIMIT_AS / RLIMIT_DATA leave."""
    limits = []
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    limits.append(int(line.split()[1]) * 1024)
                    break
    except (OSError, ValueError):
        pass
    if not limits:
        try:
            limits.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            limits.append(1 << 62)
    # RLIMIT_AS counts the whole address space (VmSize), RLIMIT_DATA the private writable
    # memory (VmData): a read-only memory map counts against the first alone
    for kind, used in ((resource.RLIMIT_AS, "VmSize"), (resource.RLIMIT_DATA, "VmData")):
        soft, _ = resource.getrlimit(kind)
        if soft != resource.RLIM_INFINITY:
            limits.append(max(soft - _status_bytes(used), 0))
    return min(limits)


def _status_bytes(field: str) -> int:
    """A size from /proc/self/status (VmSize, VmData), or 0 where it cannot be read."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def require(nbytes: int, what: str, error: type[MlpcliError] = MlpcliError) -> None:
    """Raise `error` saying `what` needs more memory than this process can have."""
    free = available_bytes()
    if nbytes > free:
        raise error(
            f"{what} needs {size_text(nbytes)} of memory, more than the {size_text(free)} free"
        )


def size_text(n: float) -> str:
    """A byte count for people: 812 bytes, 3.6 TiB."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


@contextmanager
def on_device(backend: Any) -> Iterator[None]:
    """Turns running out of GPU memory (CuPy's OutOfMemoryError, a MemoryError) inside the
    block into a BackendError with the sizes and the way out."""
    try:
        yield
    except MemoryError as e:
        if backend.name != "cuda" or not type(e).__module__.startswith("cupy"):
            raise
        raise BackendError(_out_of_device_memory(backend, e)) from None


def _out_of_device_memory(backend: Any, e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    what = (lines[0] if lines else "").rstrip(".") or type(e).__name__
    try:
        free, total = backend.xp.cuda.runtime.memGetInfo()
        held = backend.xp.get_default_memory_pool().total_bytes()
        sizes = f"; the GPU has {size_text(free)} free of {size_text(total)}"
        sizes += f", and this run holds {size_text(held)}" if held else ""
    except Exception:  # the sizes are a courtesy: the error stands without them
        sizes = ""
    return (
        f"device cuda: out of GPU memory ({what}{sizes}); use a smaller train.batch_size or "
        "model, stream the data from the host, or train with --device cpu"
    )
