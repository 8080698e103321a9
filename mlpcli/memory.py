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
    size, data = _used_bytes()
    for kind, used in ((resource.RLIMIT_AS, size), (resource.RLIMIT_DATA, data)):
        soft, _ = resource.getrlimit(kind)
        if soft != resource.RLIM_INFINITY:
            limits.append(max(soft - used, 0))
    return min(limits)


def _used_bytes() -> tuple[int, int]:
    """This process's virtual size (what RLIMIT_AS counts) and its data and stack (what
    RLIMIT_DATA counts, file mappings excluded), or zeros if unknown."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            fields = f.read().split()
        page = os.sysconf("SC_PAGE_SIZE")
        return int(fields[0]) * page, int(fields[5]) * page
    except (OSError, ValueError, IndexError):
        return 0, 0


def require(nbytes: int, what: str, error: type[MlpcliError] = MlpcliError) -> None:
    """Raise `error` saying `what` needs more memory than this process can have."""
    free = available_bytes()
    if nbytes > free:
        raise error(f"{what} needs {_size(nbytes)} of memory, more than the {_size(free)} free")


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"
