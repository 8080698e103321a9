"""How much memory this process may still take, so that a data set or model too large for
the machine is refused up front (exit 2, naming the key or file) instead of ending in a
MemoryError, a swap storm or the kernel's OOM killer halfway through.
"""

from __future__ import annotations

import os
import resource

from mlpcli.errors import MlpcliError


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
