"""Synchronous data parallelism over MPI: `mpiexec -n K mlpcli train config.yaml`.

Every rank holds the whole model and the whole (seeded, identical) data order; each
computes the gradient of its shard of every global batch, the shards' gradients are
summed in place with one buffer-based Allreduce of the model's flat gradient buffer, and
every rank applies the same update. mpi4py is imported only when the process was started
by an MPI launcher, so a plain `mlpcli train` never touches it.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import numpy as np

from mlpcli.backend import to_host
from mlpcli.errors import BackendError

# Variables MPI launchers set for each process: MPICH/Hydra and Intel MPI (PMI_*), Open MPI
# (OMPI_*), and Slurm's srun with a PMI plugin (PMI_SIZE as well).
_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS", "PMIX_SIZE")


class Single:
    """One process: every collective is a no-op."""

    rank = 0
    size = 1
    description = "1 process"

    def allreduce(self, buf: Any, backend: Any = None) -> Any:
        """Sum the contiguous array `buf` over all ranks, in place (here: nothing to add)."""
        return buf

    def broadcast_text(self, text: str | None) -> str:
        return text or ""

    def same_everywhere(self, value: int) -> bool:
        return True

    def abort(self, code: int) -> None:
        pass


class MPIComm(Single):
    """MPI.COMM_WORLD through mpi4py, with buffer-based (never pickled) collectives."""

    def __init__(self) -> None:
        try:
            from mpi4py import MPI
        except ImportError:
            raise BackendError(
                "started by an MPI launcher, but mpi4py is not installed "
                '(pip install "mlpcli[mpi]")'
            ) from None
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.description = f"{self.size} MPI processes ({MPI.Get_library_version().split()[0]})"

    def allreduce(self, buf: Any, backend: Any = None) -> Any:
        """Sum a contiguous array over all ranks in place; device arrays go via the host."""
        if isinstance(buf, np.ndarray):
            self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
            return buf
        host = np.ascontiguousarray(to_host(buf))
        self.comm.Allreduce(self.MPI.IN_PLACE, host, op=self.MPI.SUM)
        buf[...] = backend.asarray(host)
        return buf

    def broadcast_text(self, text: str | None) -> str:
        """Rank 0's string on every rank (length, then UTF-8 bytes)."""
        data = np.frombuffer((text or "").encode(), dtype=np.uint8)
        n = np.array([data.size], dtype=np.int64)
        self.comm.Bcast(n, root=0)
        out = np.empty(int(n[0]), dtype=np.uint8)
        if self.rank == 0:
            out[...] = data
        self.comm.Bcast(out, root=0)
        return out.tobytes().decode()

    def same_everywhere(self, value: int) -> bool:
        """Whether an integer (a checksum) is equal on every rank."""
        lo = np.array([value], dtype=np.int64)
        hi = lo.copy()
        self.comm.Allreduce(self.MPI.IN_PLACE, lo, op=self.MPI.MIN)
        self.comm.Allreduce(self.MPI.IN_PLACE, hi, op=self.MPI.MAX)
        return bool(lo[0] == hi[0])

    def abort(self, code: int) -> None:
        """End every rank of the job now (a rank that failed must not leave others waiting)."""
        self.comm.Abort(code)


def launched_by_mpi() -> bool:
    """Whether an MPI launcher started this process as one of several."""
    for name in _SIZE_VARIABLES:
        try:
            if int(os.environ.get(name, "1")) > 1:
                return True
        except ValueError:
            continue
    return False


_WORLD: Single | None = None


def world() -> Single:
    """The processes of this job: MPI's world under a launcher, else one process."""
    global _WORLD
    if _WORLD is None:
        _WORLD = MPIComm() if launched_by_mpi() else Single()
    return _WORLD


def first_process() -> bool:
    """False in the processes of an MPI job but the first, which stay silent."""
    return not launched_by_mpi() or world().rank == 0


ABORT_GRACE_S = 2.0
ABORT_FLUSH_S = 0.2


def end_job(code: int, error: BaseException | None = None, message: str = "") -> None:
    """Under MPI, a failing process ends the whole job, so no other one waits forever."""
    if not (launched_by_mpi() and world().size > 1):
        return
    if world().rank != 0:
        # An error every process meets is reported by the first, whose abort ends this
        # one during the wait; an abort from here would cut its message off. Only an
        # error of this process alone gets past the wait, and says so.
        time.sleep(ABORT_GRACE_S)
        if message:
            print(f"error: process {world().rank}: {message}", file=sys.stderr)
    if error is not None:
        import traceback

        traceback.print_exception(error)
    sys.stderr.flush()
    time.sleep(ABORT_FLUSH_S)  # Hydra forwards output through a pipe; abort kills it
    world().abort(code)
