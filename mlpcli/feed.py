"""Batches for the training loop: from data kept whole on the device, or streamed from the host.

`Resident` copies the training data to the device once and gathers each batch there.
`Streaming` leaves it on the host (a memory-mapped .npy stays mapped): each batch is
gathered on the host into page-locked memory and copied to the device on a second stream
while the device computes the step before, through two buffers used in turn; validation
data takes the same way in chunks. Both give the same rows in the same order, so a run's
bits do not depend on which one feeds it (tests/test_stream.py checks this).

Data streams when `data.stream` is true, or, with `auto`, on a GPU when the training
features are a memory map or all the arrays would take more than STREAM_SHARE of the
device's free memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from mlpcli.backend import Backend

STREAM_SHARE = 0.5  # resident data may take at most this share of the device's free memory
STAGE_BYTES = 64 * 2**20  # pinned memory through which a memory map moves to the device whole

Span = tuple[int, int]  # rows lo:hi of an epoch's order


def streams(mode: str | bool, backend: Backend, x: np.ndarray, nbytes: int) -> bool:
    """Whether to stream: `mode` (data.stream) when forced, else the automatic choice."""
    if mode != "auto":
        return bool(mode)
    if backend.name == "cpu":  # host memory either way: gathering in place is cheapest
        return False
    if isinstance(x, np.memmap):  # a file, which may be larger than the device: batch by batch
        return True
    free = backend.free_bytes()
    return free is not None and nbytes > free * STREAM_SHARE


def make_feed(
    mode: str | bool,
    backend: Backend,
    x: np.ndarray,
    y: np.ndarray,
    rows: np.ndarray | None,
    x_val: np.ndarray | None,
    y_val: np.ndarray | None,
    batch_size: int,
    eval_batch: int,
    dtype: str,
) -> Resident | Streaming:
    """The feed for this data: `Streaming` or `Resident` (see `streams`).

    x (N, d) raw features; y (n,) or (n, k) targets, one per training sample; rows: the
    row of x of each training sample, or None when every row of x is one.
    """
    nbytes = sum(a.nbytes for a in (x, y, x_val, y_val) if a is not None)
    kind = Streaming if streams(mode, backend, x, nbytes) else Resident
    return kind(backend, x, y, rows, x_val, y_val, batch_size, eval_batch, dtype)


class Resident:
    """The data on the device whole; batches gathered there into reused buffers."""

    streaming = False

    def __init__(self, backend, x, y, rows, x_val, y_val, batch_size, eval_batch, dtype):
        self.backend = backend
        self.x = _to_device(backend, x)
        self.y = backend.asarray(y)
        self.rows = rows
        self.n_val = 0 if x_val is None else len(x_val)
        self.x_val = None if x_val is None else backend.asarray(x_val)
        self.y_val = None if y_val is None else backend.asarray(y_val)
        xp = backend.xp
        self._xb = xp.empty((batch_size, x.shape[1]), dtype)
        self._yb = xp.empty((batch_size, *y.shape[1:]), y.dtype)

    def batches(self, order: np.ndarray, spans: Sequence[Span]) -> Iterator[tuple[Any, Any]]:
        """(x, y) on the device for each span: training samples order[lo:hi]."""
        b = self.backend
        x_order = b.asarray(order if self.rows is None else self.rows[order])
        order = b.asarray(order)
        for lo, hi in spans:
            m = hi - lo
            xb = b.take(self.x, x_order[lo:hi], out=self._xb[:m])
            yb = b.take(self.y, order[lo:hi], out=self._yb[:m])
            yield xb, yb

    def validation(self) -> Iterator[tuple[Any, Any]]:
        """The validation data on the device: here one piece, the whole of it."""
        if self.n_val:
            yield self.x_val, self.y_val


def _to_device(backend: Backend, x: np.ndarray) -> Any:
    """x on the device. On the CPU a memory-mapped .npy stays mapped (asarray does not copy
    it); on a GPU one moves block by block through a pinned buffer of STAGE_BYTES at most,
    instead of through a staging copy of its whole size that CuPy's pinned pool would keep."""
    if backend.name == "cpu" or not isinstance(x, np.memmap) or not len(x):
        return backend.asarray(x)
    dev = backend.xp.empty(x.shape, x.dtype)
    rows = max(1, min(len(x), STAGE_BYTES // max(x[:1].nbytes, 1)))
    stage = backend.pinned_empty((rows, *x.shape[1:]), x.dtype)
    stream = backend.copy_stream()
    for lo in range(0, len(x), rows):
        m = min(rows, len(x) - lo)
        stage[:m] = x[lo : lo + m]
        backend.upload(dev[lo : lo + m], stage[:m], stream)
        stream.synchronize()  # the copy has read the stage before it is refilled
    return dev


class Streaming:
    """The data on the host; batches gathered there and copied to the device step by step."""

    streaming = True

    def __init__(self, backend, x, y, rows, x_val, y_val, batch_size, eval_batch, dtype):
        self.x, self.y, self.rows = x, y, rows  # host arrays
        self.x_val, self.y_val = x_val, y_val
        self.n_val = 0 if x_val is None else len(x_val)
        self.eval_batch = eval_batch
        columns = [((x.shape[1],), np.dtype(dtype)), (y.shape[1:], y.dtype)]
        self._train = _Stager(backend, batch_size, columns)
        self._val = None
        if self.n_val:
            val_columns = [((x_val.shape[1],), np.dtype(dtype)), (y_val.shape[1:], y_val.dtype)]
            self._val = _Stager(backend, min(eval_batch, self.n_val), val_columns)

    def batches(self, order: np.ndarray, spans: Sequence[Span]) -> Iterator[tuple[Any, Any]]:
        """(x, y) on the device for each span: training samples order[lo:hi]."""
        x_order = order if self.rows is None else self.rows[order]

        def fill(k: int, bufs: list[np.ndarray]) -> int:
            lo, hi = spans[k]
            m = hi - lo
            # mode="clip": NumPy's default ("raise") gathers through a temporary
            np.take(self.x, x_order[lo:hi], axis=0, out=bufs[0][:m], mode="clip")
            np.take(self.y, order[lo:hi], axis=0, out=bufs[1][:m], mode="clip")
            return m

        return self._train.run(len(spans), fill)

    def validation(self) -> Iterator[tuple[Any, Any]]:
        """The validation data on the device, in chunks of at most eval_batch rows."""
        if not self.n_val:
            return iter(())
        step = self.eval_batch

        def fill(k: int, bufs: list[np.ndarray]) -> int:
            lo, hi = k * step, min((k + 1) * step, self.n_val)
            bufs[0][: hi - lo] = self.x_val[lo:hi]
            bufs[1][: hi - lo] = self.y_val[lo:hi]
            return hi - lo

        return self._val.run(-(-self.n_val // step), fill)


class _Stager:
    """Two slots, each with a pinned host buffer and a device buffer per array, filled in
    turn: while the device computes with one slot, the next batch is gathered into the
    other's host buffer and copied to its device buffer on the copy stream.

    Events order the two streams and the host: `copied[s]` (the copy of slot s is done: its
    device buffer is ready and its host buffer free again) and `consumed[s]` (the step that
    read slot s's device buffer is done, so the next copy may overwrite it).
    """

    def __init__(self, backend: Backend, rows: int, columns: list[tuple[tuple, Any]]):
        self.backend = backend
        xp = backend.xp
        self.host = [[backend.pinned_empty((rows, *s), dt) for s, dt in columns] for _ in "ab"]
        self.device = [[xp.empty((rows, *s), dt) for s, dt in columns] for _ in "ab"]
        self.stream = backend.copy_stream()
        self.copied = [backend.event(), backend.event()]
        self.consumed = [backend.event(), backend.event()]

    def _stage(self, k: int, fill: Callable[[int, list[np.ndarray]], int]) -> int:
        """Gather piece k into its slot's host buffers and queue their copy; its row count."""
        s = k % 2
        self.copied[s].synchronize()  # the slot's previous copy has read its host buffers
        m = fill(k, self.host[s])
        self.stream.wait_event(self.consumed[s])  # and its previous step is done with them
        if m:
            for host, dev in zip(self.host[s], self.device[s], strict=True):
                self.backend.upload(dev[:m], host[:m], self.stream)
        self.copied[s].record(self.stream)
        return m

    def run(self, count: int, fill: Callable[[int, list[np.ndarray]], int]) -> Iterator[tuple]:
        """The `count` pieces `fill` gathers, as device arrays, each ready on the compute
        stream; piece k + 1 is copied while the caller computes with piece k."""
        compute = self.backend.compute_stream()
        m = self._stage(0, fill) if count else 0
        for k in range(count):
            s = k % 2
            compute.wait_event(self.copied[s])
            try:
                yield tuple(dev[:m] for dev in self.device[s])
            finally:  # the caller has queued all its work with this slot (or stopped)
                self.consumed[s].record(compute)
            if k + 1 < count:
                m = self._stage(k + 1, fill)
