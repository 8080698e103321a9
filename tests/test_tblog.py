"""Event files after a resume: every reader shows each step once, the resumed value past it.
And the graph: every registered activation and loss draws."""

from __future__ import annotations

import os
import struct
import time
import types
from pathlib import Path

import numpy as np
import pytest
import tensorboardX.event_file_writer
from tb_server import get, still_running, tensorboard
from tensorboard.backend.event_processing import event_accumulator as ea
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboardX.crc32c import crc32c
from tensorboardX.proto.event_pb2 import Event, SessionLog
from tensorboardX.record_writer import masked_crc32c
from tensorboardX.summary import scalar

from mlpcli import tblog
from mlpcli.activations import ACTIVATIONS
from mlpcli.losses import LOSSES
from mlpcli.tblog import TBLogger, graph_def, truncate_events

RESUME = 20  # the checkpoint's step
RUNS = ("plain", "same_second", "torn", "clock_back")

# What every reader must show: the first writer's values up to RESUME, the resumed one's after.
EXPECTED_SCALARS = {
    "train/loss": {s: float(1000 + s) for s in range(1, 21)}
    | {s: 2000.0 + s for s in range(21, 41)},
    "val/loss": {10: 3010.0, 20: 3020.0, 30: 4030.0, 40: 4040.0},
}
EXPECTED_HISTOGRAM_MAX = {10: 10.0, 30: 1030.0, 40: 1040.0}  # "weights": first, resumed, resumed
EXPECTED_TEXT_STEPS = [0, 21]


# --- building event files by hand ------------------------------------------------------------


def _record(event: Event) -> bytes:
    """One TFRecord, framed with tensorboardX's own (pure-Python) CRC."""
    data = event.SerializeToString()
    header = struct.pack("<Q", len(data))
    return (
        header
        + struct.pack("<I", masked_crc32c(header))
        + data
        + struct.pack("<I", masked_crc32c(data))
    )


def _events(steps) -> list[bytes]:
    """A file_version header, then a scalar at each step, as tensorboardX writes them."""
    out = [_record(Event(wall_time=1.0, file_version="brain.Event:2"))]
    out += [_record(Event(wall_time=2.0, step=s, summary=scalar("x", float(s)))) for s in steps]
    return out


def _steps_in(path: Path) -> list[int]:
    """Steps as TensorBoard's own record reader sees them."""
    return [e.step for e in EventFileLoader(str(path)).Load()]


# --- truncate_events ---------------------------------------------------------------------------


def test_crc32c_matches_tensorboardx():
    rng = np.random.default_rng(0)
    lengths = [0, 1, 7, 8, 9, 100, 4095, 4096, 4097, 8192, 9000]
    lengths += rng.integers(0, 300, 200).tolist()
    starts = np.cumsum([0, *lengths[:-1]]) + 3  # unaligned
    buf = rng.integers(0, 256, sum(lengths) + 3, dtype=np.uint8)
    got = tblog.crc32c.crc32c(buf, starts, np.array(lengths))
    raw = buf.tobytes()
    want = [crc32c(raw[a : a + n]) for a, n in zip(starts.tolist(), lengths, strict=True)]
    assert got.tolist() == want
    assert tblog.crc32c.crc32c(np.frombuffer(b"123456789", np.uint8), [0], [9]).tolist() == [
        0xE3069283
    ]


def test_steps_read_off_the_bytes_match_the_parser():
    events = [
        Event(wall_time=w, step=s)
        for s in (0, 1, 127, 128, 300, 2**31, 2**63 - 1, -1, -(2**63))
        for w in (0.0, 1.5)
    ]
    events += [
        Event(wall_time=1.0, step=7, summary=scalar("a", 1.0)),
        Event(wall_time=1.0, step=9, session_log=SessionLog(status=SessionLog.START)),
        Event(wall_time=1.0, file_version="brain.Event:2"),
    ]
    data = b"".join(_record(e) for e in events)
    starts, ends = tblog.events._valid_records(data)
    assert len(starts) == len(events)
    assert tblog.events._steps(data, starts, ends).tolist() == [e.step for e in events]


def test_removes_steps_after_max_and_counts_them(tmp_path):
    records = _events(range(1, 11))
    purge = _record(Event(wall_time=3.0, step=11, session_log=SessionLog(status=SessionLog.START)))
    path = tmp_path / "events.out.tfevents.1.host"
    path.write_bytes(b"".join(records[:6] + [purge] + records[6:]))  # the START purge at 11
    path.chmod(0o640)

    assert truncate_events(tmp_path, 5) == 6  # steps 6..10 and the purge event
    assert path.read_bytes() == b"".join(records[:6])  # header (step 0) and steps 1..5
    assert _steps_in(path) == [0, 1, 2, 3, 4, 5]
    assert path.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temp file left

    assert truncate_events(tmp_path, 0) == 5  # the header has step 0 and stays
    assert _steps_in(path) == [0]


def test_files_with_nothing_to_remove_are_not_rewritten(tmp_path):
    old = tmp_path / "events.out.tfevents.1.host.a"
    new = tmp_path / "events.out.tfevents.2.host.b"
    old.write_bytes(b"".join(_events(range(1, 21))))
    new.write_bytes(b"".join(_events(range(21, 31))))
    os.utime(old, ns=(1_000_000_000, 1_000_000_000))
    before = old.read_bytes(), old.stat()

    assert truncate_events(tmp_path, 20) == 10
    assert old.read_bytes() == before[0]
    assert (old.stat().st_mtime_ns, old.stat().st_ino) == (before[1].st_mtime_ns, before[1].st_ino)
    assert _steps_in(new) == [0]

    stat = new.stat()
    assert truncate_events(tmp_path, 20) == 0
    assert (new.stat().st_mtime_ns, new.stat().st_ino) == (stat.st_mtime_ns, stat.st_ino)


@pytest.mark.parametrize("cut", [3, 12, 20, -2])  # in the length, at its CRC, in data, data CRC
def test_torn_tail_is_dropped(tmp_path, cut):
    records = _events(range(1, 11))
    torn = _record(Event(wall_time=2.0, step=11, summary=scalar("x", 11.0)))
    path = tmp_path / "events.out.tfevents.1.host"
    path.write_bytes(b"".join(records) + torn[:cut])

    assert truncate_events(tmp_path, 8) == 2  # steps 9 and 10; the torn record is no record
    assert path.read_bytes() == b"".join(records[:9])

    path.write_bytes(b"".join(records) + torn[:cut])  # nothing to remove but the torn tail
    assert truncate_events(tmp_path, 100) == 0
    assert path.read_bytes() == b"".join(records)


def test_a_torn_first_record_leaves_an_empty_file(tmp_path):
    path = tmp_path / "events.out.tfevents.1.host"
    path.write_bytes(_events([])[0][:10])
    assert truncate_events(tmp_path, 5) == 0
    assert path.read_bytes() == b""
    assert truncate_events(tmp_path, 5) == 0  # and an empty file is left alone


@pytest.mark.parametrize("where", ["length", "length crc", "data", "data crc"])
def test_reading_stops_at_a_bad_crc(tmp_path, where):
    records = _events(range(1, 11))
    bad = bytearray(records[4])  # step 4
    offset = {"length": 0, "length crc": 9, "data": 14, "data crc": len(bad) - 1}[where]
    bad[offset] ^= 0x01
    path = tmp_path / "events.out.tfevents.1.host"
    path.write_bytes(b"".join(records[:4] + [bytes(bad)] + records[5:]))

    assert truncate_events(tmp_path, 2) == 1  # step 3; steps 5.. are past the bad record
    assert path.read_bytes() == b"".join(records[:3])


def test_leftovers_of_an_interrupted_rewrite_are_deleted(tmp_path):
    leftovers = [tmp_path / ".events-rewrite-abc123.tmp", tmp_path / ".events-rewrite-.tmp"]
    others = [tmp_path / "config.yaml", tmp_path / "events-notes.tmp"]
    nested = tmp_path / "sub" / "events.out.tfevents.1.host"  # only files directly in run_dir
    nested.parent.mkdir()
    for p in leftovers + others:
        p.write_bytes(b"partial")
    nested.write_bytes(b"".join(_events(range(1, 5))))

    assert truncate_events(tmp_path, 1) == 0
    assert not any(p.exists() for p in leftovers)
    assert all(p.read_bytes() == b"partial" for p in others)
    assert _steps_in(nested) == [0, 1, 2, 3, 4]


def _tagged(step: int, tag: str, **metadata) -> bytes:
    """A record of one summary value carrying only metadata, as the HParams plugin's are."""
    from tensorboardX.proto.summary_pb2 import Summary, SummaryMetadata

    value = Summary.Value(tag=tag, metadata=SummaryMetadata(**metadata))
    return _record(Event(wall_time=2.0, step=step, summary=Summary(value=[value])))


def test_dropping_a_tag_prefix_removes_those_events_whatever_their_step(tmp_path):
    records = _events(range(1, 6))
    start = _tagged(0, "_hparams_/session_start_info")
    end = _tagged(5, "_hparams_/session_end_info")
    mention = _tagged(4, "notes", display_name="_hparams_/ in a name is no tag")
    path = tmp_path / "events.out.tfevents.1.host"
    path.write_bytes(b"".join(records[:1] + [start] + records[1:] + [mention, end]))

    assert truncate_events(tmp_path, 100, drop="_hparams_/") == 2
    assert path.read_bytes() == b"".join(records + [mention])
    assert truncate_events(tmp_path, 100, drop="_hparams_/") == 0  # and nothing more goes
    assert truncate_events(tmp_path, 3, drop="_hparams_/") == 3  # steps 4, 5 and `mention`


def test_scalars_and_the_first_wall_time_are_read_back(tmp_path):
    from tensorboardX.proto.summary_pb2 import Summary

    def value(step, tag, v):
        summary = Summary(value=[Summary.Value(tag=tag, simple_value=v)])
        return _record(Event(wall_time=5.0 + step, step=step, summary=summary))

    assert tblog.first_wall_time(tmp_path) is None and tblog.read_scalars(tmp_path, "v") == {}
    first = [value(1, "val/loss", 0.5), value(1, "train/loss", 9.0), value(2, "val/loss", 0.25)]
    (tmp_path / "events.out.tfevents.1.host").write_bytes(b"".join(_events([]) + first))
    later = value(3, "val/accuracy", 0.75) + value(4, "val/loss", 0.125)[:20]  # a torn tail
    (tmp_path / "events.out.tfevents.2.host").write_bytes(later)

    assert tblog.read_scalars(tmp_path, "val/") == {
        "val/loss": [(1, 0.5), (2, 0.25)],
        "val/accuracy": [(3, 0.75)],
    }
    assert tblog.first_wall_time(tmp_path) == 1.0  # the first file's header


def test_a_missing_or_empty_folder_is_fine(tmp_path):
    assert truncate_events(tmp_path / "nope", 3) == 0
    assert truncate_events(tmp_path, 3) == 0


# --- a resumed run, read back by every reader --------------------------------------------------


def _first_attempt(run: Path) -> None:
    """Logs to step 30; the checkpoint it will be resumed from is at step RESUME."""
    tb = TBLogger(run)
    tb.text("notes", "first attempt", 0)
    for s in range(1, 31):
        tb.scalar("train/loss", 1000 + s, s)
        if s % 10 == 0:
            tb.scalar("val/loss", 3000 + s, s)
        if s in (10, 30):
            tb.histogram("weights", np.linspace(0.0, s, 8), s)
    tb.close()


def _resumed(run: Path) -> None:
    tb = TBLogger(run, start_step=RESUME)
    tb.text("notes", "resumed", 21)
    for s in range(21, 41):
        tb.scalar("train/loss", 2000 + s, s)
        if s % 10 == 0:
            tb.scalar("val/loss", 4000 + s, s)
            tb.histogram("weights", np.linspace(0.0, 1000 + s, 8), s)
    tb.close()


def _event_files(run: Path) -> list[Path]:
    return sorted(run.glob(tblog.EVENT_GLOB))


@pytest.fixture(scope="module")
def logdir(tmp_path_factory) -> Path:
    """Runs resumed from step RESUME: plain, in the same second, over a torn tail, and with
    a clock that stepped back an hour between the two attempts."""
    root = tmp_path_factory.mktemp("logdir")
    for name in RUNS:
        run = root / name
        if name == "same_second":
            # tensorboardX names a file by the second it opens it in: freeze that clock.
            frozen = types.SimpleNamespace(time=lambda: 1.7e9)
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(tensorboardX.event_file_writer, "time", frozen)
                _first_attempt(run)
                _resumed(run)
            first, second = _event_files(run)  # both there, in the order they were written
            assert first.name.split(".")[3] == second.name.split(".")[3] == "1700000000"
            assert _steps_in(second)[-1] == 40
        elif name == "clock_back":
            with pytest.MonkeyPatch.context() as mp:
                later = types.SimpleNamespace(time=lambda: 1.7e9 + 3600)
                mp.setattr(tensorboardX.event_file_writer, "time", later)
                _first_attempt(run)
                mp.setattr(
                    tensorboardX.event_file_writer,
                    "time",
                    types.SimpleNamespace(time=lambda: 1.7e9),
                )
                _resumed(run)
            first, second = _event_files(run)  # in name order, the resumed file still last
            assert _steps_in(second)[-1] == 40 and _steps_in(first)[-1] <= RESUME
        else:
            _first_attempt(run)
            if name == "torn":  # killed halfway through writing a record
                with _event_files(run)[0].open("ab") as f:
                    f.write(_record(Event(wall_time=9.0, step=31, summary=scalar("x", 0.0)))[:30])
            _resumed(run)
        assert len(_event_files(run)) == 2
    return root


def _check_scalars(run: str, tag: str, steps: list[int], values: list[float]) -> None:
    assert len(steps) == len(set(steps)), f"{run} {tag}: repeated steps {sorted(steps)}"
    assert dict(zip(steps, values, strict=True)) == EXPECTED_SCALARS[tag], f"{run} {tag}"


@pytest.mark.parametrize("run", RUNS)
def test_event_accumulator(logdir, run):
    acc = ea.EventAccumulator(
        str(logdir / run), size_guidance={ea.SCALARS: 0, ea.HISTOGRAMS: 0, ea.TENSORS: 0}
    ).Reload()
    for tag in EXPECTED_SCALARS:
        events = acc.Scalars(tag)
        _check_scalars(run, tag, [e.step for e in events], [e.value for e in events])
    hist = {e.step: e.histogram_value.max for e in acc.Histograms("weights")}
    assert hist == EXPECTED_HISTOGRAM_MAX
    assert [e.step for e in acc.Tensors("notes/text_summary")] == EXPECTED_TEXT_STEPS


@pytest.mark.filterwarnings("ignore:The inplace keyword")  # tbparse on pandas 3
@pytest.mark.parametrize("run", RUNS)
def test_tbparse(logdir, run):
    from tbparse import SummaryReader

    df = SummaryReader(str(logdir / run)).scalars
    assert set(df["tag"]) == set(EXPECTED_SCALARS)
    for tag, group in df.groupby("tag"):
        _check_scalars(run, tag, group["step"].tolist(), group["value"].tolist())


# --- the TensorBoard server, legacy and fast (Rust data server) loaders ------------------------

TIMEOUT = 30.0


def _server_data(base: str) -> dict:
    data = {}
    for run in RUNS:
        for tag in EXPECTED_SCALARS:
            data[run, tag] = get(base, "/data/plugin/scalars/scalars", run=run, tag=tag)
        data[run, "weights"] = get(
            base, "/data/plugin/histograms/histograms", run=run, tag="weights"
        )
    return data


def _steps_served(data: dict | None) -> dict:
    """Steps per run and tag: what a failure message shows."""
    return {f"{run} {tag}": [p[1] for p in points] for (run, tag), points in (data or {}).items()}


def _complete(data: dict) -> bool:
    want = {tag: len(steps) for tag, steps in EXPECTED_SCALARS.items()}
    want["weights"] = len(EXPECTED_HISTOGRAM_MAX)
    return all(len(points) >= want[tag] for (_, tag), points in data.items())


def _wait_for_data(proc, base: str, log: Path, load_fast: str) -> dict:
    """Polls until every run's data is in, or has stopped changing for 3 s; fails after 30 s."""
    deadline, data, error, since = time.monotonic() + TIMEOUT, None, None, None
    while time.monotonic() < deadline:
        still_running(proc, log, load_fast)
        try:
            new, error = _server_data(base), None
        except OSError as e:  # not listening yet, or a run not loaded yet
            new, error = None, e
        if new is not None:
            if _complete(new):
                time.sleep(1.5)  # one more reload: anything still to come would come now
                return _server_data(base)
            if new != data:
                since = time.monotonic()
            elif time.monotonic() - since > 3.0:  # settled, short of the expected: compare
                return new
            data = new
        time.sleep(0.3)
    pytest.fail(
        f"tensorboard --load_fast={load_fast} served no complete data in {TIMEOUT:.0f} s"
        f" (last error: {error!r}; steps served: {_steps_served(data)});"
        f" its log:\n{log.read_text(errors='replace')[-2000:]}"
    )


@pytest.mark.skipif(os.name != "posix", reason="kills the server by process group")
@pytest.mark.parametrize("load_fast", ["false", "true"])
def test_tensorboard_server(logdir, load_fast, tmp_path):
    log = tmp_path / "tensorboard.log"
    with tensorboard(logdir, load_fast, log) as (proc, base):
        data = _wait_for_data(proc, base, log, load_fast)
        provider = get(base, "/data/environment")["debug"]["data_provider"]

    # The fast loader is the Rust data server, spoken to over gRPC.
    assert ("Grpc" in provider) == (load_fast == "true"), provider
    for run in RUNS:
        for tag in EXPECTED_SCALARS:
            points = data[run, tag]  # [wall_time, step, value]
            _check_scalars(run, tag, [p[1] for p in points], [p[2] for p in points])
        hist = {p[1]: max(bucket[1] for bucket in p[2]) for p in data[run, "weights"]}
        assert hist == EXPECTED_HISTOGRAM_MAX, f"{run} weights ({load_fast=})"


# --- the graph: op names drawn from the registries' names ---------------------------------------


@pytest.mark.parametrize("loss", sorted(LOSSES))
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_graph_draws_every_registered_activation_and_loss(activation, loss):
    hidden = "relu" if activation == "softmax" else activation  # softmax: output layer only
    g = graph_def([2, 4, 3], [hidden, activation], loss)
    # input, 5 nodes a layer (W, b, MatMul, BiasAdd, activation), loss/labels, the loss op
    assert len(g.node) == 13 and g.node[-1].name.startswith("loss/")
    for op in (g.node[5].op, g.node[10].op, g.node[12].op):
        assert op.isidentifier() and op[0].isupper(), op


def test_a_name_added_to_a_registry_draws_as_its_camel_case(monkeypatch):
    monkeypatch.setitem(ACTIVATIONS, "swish", ACTIVATIONS["linear"])
    monkeypatch.setitem(ACTIVATIONS, "hard_swish", ACTIVATIONS["linear"])
    monkeypatch.setitem(LOSSES, "huber", LOSSES["mse"])
    g = graph_def([2, 4, 3], ["swish", "hard_swish"], "huber")
    ops = {n.name: n.op for n in g.node}
    assert ops["layer0/Swish"] == "Swish"
    assert ops["layer1/HardSwish"] == "HardSwish"
    assert ops["loss/Huber"] == "Huber"
