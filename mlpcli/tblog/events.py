"""Event files rewritten on resume: `truncate_events` drops every record past a step (and, if
asked, every record of one plugin's tags) from a run folder's TFRecord files, reading them
(framing, CRCs, each Event's step) with NumPy and replacing a file atomically only when
something goes. `read_scalars` and `first_wall_time` read values back. The CRCs are crc32c.py's.
"""

from __future__ import annotations

import os
import stat
import struct
import tempfile
from pathlib import Path

import numpy as np

from mlpcli.tblog.crc32c import masked_crc32c

EVENT_GLOB = "events.out.tfevents.*"
# Rewrites go to a name TensorBoard does not read, so a crash mid-rewrite leaves no half file
# that a reader would load; the next truncate_events deletes it.
_TMP_PREFIX, _TMP_SUFFIX = ".events-rewrite-", ".tmp"

# A TFRecord: uint64 length (LE), uint32 masked_crc32c(length bytes), data, uint32
# masked_crc32c(data). All integers little-endian.
_HEADER = 12  # length + its crc
_FOOTER = 4  # crc of the data


def truncate_events(run_dir: str | Path, max_step: int, drop: str | None = None) -> int:
    """Remove every event with step > `max_step` from the event files in `run_dir`, and,
    when `drop` is a tag prefix, every event with a summary value under it, whatever its step.

    Returns how many records were removed. Each file is read up to its first torn or corrupt
    record (a length running past the end, a bad CRC): what follows is dropped, uncounted, as
    TensorBoard's own reader stops there too. A file is rewritten, atomically, only if
    something goes; leftovers of a rewrite cut short are deleted.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return 0
    for tmp in run_dir.glob(f"{_TMP_PREFIX}*{_TMP_SUFFIX}"):  # left by a rewrite cut short
        tmp.unlink(missing_ok=True)
    removed = 0
    for path in sorted(run_dir.glob(EVENT_GLOB)):
        if path.is_file():
            removed += _truncate_file(path, max_step, drop)
    return removed


def _truncate_file(path: Path, max_step: int, drop: str | None) -> int:
    data = path.read_bytes()
    starts, ends = _valid_records(data)
    steps = _steps(data, starts, ends)
    keep = steps <= max_step
    if drop:
        for i, event in _events_mentioning(data, starts, ends, drop):
            if any(v.tag.startswith(drop) for v in event.summary.value):
                keep[i] = False
    intact = (int(ends[-1]) if len(ends) else 0) == len(data)  # no torn or corrupt tail
    if intact and keep.all():
        return 0
    _replace(path, _kept_bytes(data, starts, ends, keep))
    return int((~keep).sum())


def _valid_records(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) byte offsets of the records before the first torn or corrupt one."""
    n = len(data)
    starts = []
    pos = 0
    unpack = struct.Struct("<Q").unpack_from
    while pos + _HEADER + _FOOTER <= n:  # framing only; the CRCs are checked all at once below
        end = pos + _HEADER + unpack(data, pos)[0] + _FOOTER
        if end > n:  # torn by a writer killed mid-record, or a corrupt length
            break
        starts.append(pos)
        pos = end
    starts = np.array(starts, dtype=np.int64)
    buf = np.frombuffer(data, dtype=np.uint8)
    lengths = _read_u64(buf, starts).astype(np.int64)  # each < len(data): the loop checked
    ends = starts + _HEADER + lengths + _FOOTER
    len_ok = masked_crc32c(buf, starts, np.full(len(starts), 8)) == _read_u32(buf, starts + 8)
    # Test the data CRC only where the length is trusted: a bad length makes `ends` garbage.
    data_ok = np.zeros(len(starts), dtype=bool)
    data_ok[len_ok] = masked_crc32c(buf, starts[len_ok] + _HEADER, lengths[len_ok]) == _read_u32(
        buf, ends[len_ok] - _FOOTER
    )
    bad = np.flatnonzero(~(len_ok & data_ok))
    count = int(bad[0]) if len(bad) else len(starts)
    return starts[:count], ends[:count]


def _steps(data: bytes, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """The `step` of each record's Event (0 where unset, as for the file_version header)."""
    buf = np.frombuffer(data, dtype=np.uint8)
    body, size = starts + _HEADER, ends - starts - _HEADER - _FOOTER
    steps, known = _steps_fast(buf, body, size)
    slow = np.flatnonzero(~known)
    if len(slow):
        from google.protobuf.message import DecodeError
        from tensorboardX.proto.event_pb2 import Event

        event, view, parsed = Event(), memoryview(data), []
        for a, n in zip(body[slow].tolist(), size[slow].tolist(), strict=True):
            try:
                event.ParseFromString(view[a : a + n])
            except DecodeError:  # a sound record that is no Event: keep it, it is not ours
                event.Clear()
            parsed.append(event.step)
        steps[slow] = parsed
    return steps


def read_scalars(run_dir: str | Path, prefix: str) -> dict[str, list[tuple[int, float]]]:
    """The scalars (`simple_value`s) whose tag starts with `prefix` in the event files of
    `run_dir`: tag -> [(step, value)] in the order written, the files read in name order
    (each up to its first torn or corrupt record, as TensorBoard reads them)."""
    found: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(Path(run_dir).glob(EVENT_GLOB)):
        if not path.is_file():
            continue
        data = path.read_bytes()
        starts, ends = _valid_records(data)
        for _, event in _events_mentioning(data, starts, ends, prefix):
            for v in event.summary.value:
                if v.tag.startswith(prefix) and v.WhichOneof("value") == "simple_value":
                    found.setdefault(v.tag, []).append((event.step, v.simple_value))
    return found


def first_wall_time(run_dir: str | Path) -> float | None:
    """When the run's log was first opened: the wall time of the first record of its first
    event file (tensorboardX's `file_version` header), or None when there is none."""
    from google.protobuf.message import DecodeError
    from tensorboardX.proto.event_pb2 import Event

    for path in sorted(Path(run_dir).glob(EVENT_GLOB)):
        data = path.read_bytes() if path.is_file() else b""
        starts, ends = _valid_records(data)
        if len(starts):
            try:
                return Event.FromString(data[starts[0] + _HEADER : ends[0] - _FOOTER]).wall_time
            except DecodeError:
                return None
    return None


def _events_mentioning(data: bytes, starts: np.ndarray, ends: np.ndarray, text: str):
    """(index, Event) of each record whose bytes hold `text`, parsed. A tag is stored as
    plain UTF-8 in a serialised Event, so the other records need no parsing."""
    from google.protobuf.message import DecodeError
    from tensorboardX.proto.event_pb2 import Event

    needle, hits = text.encode(), []
    at = data.find(needle)
    while at != -1:
        hits.append(at)
        at = data.find(needle, at + 1)
    if not hits or not len(starts):
        return
    hits = np.array(hits)
    index = np.searchsorted(starts, hits, side="right") - 1  # the record each hit lies in
    inside = (index >= 0) & (hits < ends[np.maximum(index, 0)])  # not in a torn tail
    view = memoryview(data)
    for i in np.unique(index[inside]).tolist():
        try:
            yield i, Event.FromString(view[starts[i] + _HEADER : ends[i] - _FOOTER])
        except DecodeError:  # a sound record that is no Event: not ours
            continue


def _steps_fast(buf: np.ndarray, body: np.ndarray, size: np.ndarray):
    """Steps read straight off the bytes where an Event is laid out as every writer lays it.

    Serialised in field order, an Event starts with `wall_time` (field 1, tag 0x09, 8 bytes;
    absent when 0) and then `step` (field 2, tag 0x10, a varint; absent when 0). Returns the
    steps and where they could be read this way: elsewhere (step 0, a negative step, another
    layout) the caller parses the record. ParseFromString costs ~1.5 us a record; this ~0.1.
    """
    last = len(buf) - 1
    at = np.where(buf[np.minimum(body, last)] == 0x09, 9, 0)  # where the step's tag would be
    ok = (size > at + 1) & (buf[np.minimum(body + at, last)] == 0x10)
    # A varint: 7 bits a byte, low first; the last byte has no high bit. A non-negative int64
    # takes at most 9 bytes (a negative one 10: left to the parser).
    value = np.zeros(len(body), dtype=np.uint64)
    open_ = ok.copy()  # varints still being read
    p = body + at + 1
    for k in range(9):
        if not open_.any():
            break
        overrun = open_ & (p + k >= body + size)  # malformed: left to the parser
        ok &= ~overrun
        open_ &= ~overrun
        byte = buf[np.minimum(p + k, last)]
        value[open_] |= (byte[open_] & np.uint64(0x7F)) << np.uint64(7 * k)
        open_ &= byte >= 0x80
    ok &= ~open_
    return np.where(ok, value.astype(np.int64), 0), ok


def _kept_bytes(data: bytes, starts: np.ndarray, ends: np.ndarray, keep: np.ndarray):
    """The kept records' bytes, as few slices as possible (runs of adjacent kept records)."""
    view = memoryview(data)
    flags = np.concatenate(([False], keep, [False])).astype(np.int8)
    edges = np.diff(flags)
    first = np.flatnonzero(edges == 1)  # index of the first record of each kept run
    last = np.flatnonzero(edges == -1) - 1
    return [view[a:b] for a, b in zip(starts[first].tolist(), ends[last].tolist(), strict=True)]


def _replace(path: Path, chunks) -> None:
    """Write `chunks` to a temporary file beside `path`, sync it, and rename it over `path`."""
    fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, suffix=_TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))  # mkstemp makes it 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if os.name == "posix":  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _read_u32(buf: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Little-endian uint32 at each offset in `at`."""
    b = buf[at[:, None] + np.arange(4)].astype(np.uint32)
    return b[:, 0] | b[:, 1] << 8 | b[:, 2] << 16 | b[:, 3] << 24


def _read_u64(buf: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Little-endian uint64 at each offset in `at`."""
    return _read_u32(buf, at).astype(np.uint64) | _read_u32(buf, at + 4).astype(np.uint64) << 32
