"""Streaming batches host -> device (mlpcli/feed.py, `data.stream`).

A streamed run must give the bits of the same run with its data resident on the device —
same batches, same order — on the CPU and on the CuPy stand-in, whose own streams defer
their copies until an event is waited for, so a feeder that orders its copies wrongly
reads stale rows here and loses those bits. Also: resume mid-epoch, the automatic choice,
device memory bounded by two batch buffers, and the config key's errors.
"""

from __future__ import annotations

import copy
import signal
from pathlib import Path

import numpy as np
import pytest
import standin_xp
from helpers import assert_same_checkpoints, cli, small_config, user_error, write_config
from standin_xp import BACKEND, DeviceArray, xp

import mlpcli.runs
import mlpcli.train
from mlpcli import checkpoint, feed
from mlpcli.backend import Backend, get_backend, to_host
from mlpcli.config import validate_dict
from mlpcli.data import Dataset, prepare
from mlpcli.errors import Interrupted
from mlpcli.report import QuietReporter
from mlpcli.runs import resume
from mlpcli.train import Run

CPU = get_backend("cpu")
BACKENDS = {"cpu": CPU, "standin": BACKEND}
EVAL_BATCH = 16  # validation in several chunks, the last one partial

# 200 training rows in batches of 32: 7 steps, the last of 8 rows
TRIANGLE = {"source": "triangle", "options": {"n_samples": 250}, "val_split": 0.2}
TRAIN = {"epochs": 3, "batch_size": 32, "shuffle": True}
CONFIGS = {
    # dropout in two layers, shuffling, standardization, Adam, a schedule
    "dropout": small_config(
        data=TRIANGLE,
        model={
            "layers": [
                {"units": 8, "activation": "relu", "dropout": 0.2},
                {"units": 8, "activation": "tanh", "dropout": 0.1},
                {"units": 2, "activation": "softmax"},
            ]
        },
        train=TRAIN,
    ),
    # (n, k) float targets, standardized
    "regression": small_config(
        data={
            "source": "linear",
            "options": {"n_samples": 230, "n_features": 3},
            "val_split": 0.25,
            "standardize_target": True,
        },
        model={"layers": [{"units": 8, "activation": "tanh"}, {"units": 1}]},
        loss="mse",
        optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.5},
        schedule=None,
        train={**TRAIN, "batch_size": 24},
    ),
    # float64, in order, no validation
    "float64-no-shuffle": small_config(
        dtype="float64",
        data={**TRIANGLE, "val_split": 0.0, "standardize": False},
        model={
            "layers": [
                {"units": 8, "activation": "sigmoid"},
                {"units": 1, "activation": "sigmoid"},
            ]
        },
        loss="binary_cross_entropy",
        train={**TRAIN, "shuffle": False},
    ),
}


@pytest.fixture(autouse=True)
def _small_validation_chunks(monkeypatch):
    monkeypatch.setattr(mlpcli.train, "EVAL_BATCH", EVAL_BATCH)


def _run(raw: dict, backend: Backend, stream, reporter=None) -> Run:
    raw = copy.deepcopy(raw)
    raw["data"]["stream"] = stream
    config = validate_dict(raw, where="test config")
    return Run(config, prepare(config, "test config"), reporter or QuietReporter(), backend)


def _fit(raw: dict, backend: Backend, run_dir: Path, stream) -> Path:
    """Train `raw` in-process on `backend`; the path of its last.npz."""
    (run_dir / "checkpoints").mkdir(parents=True)
    run = _run(raw, backend, stream)
    assert run.feed.streaming is bool(stream)
    run.fit(run_dir)
    return run_dir / "checkpoints" / "last.npz"


# ------------------------------------------------------------------ the same bits


@pytest.mark.parametrize("device", sorted(BACKENDS))
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_streaming_gives_the_resident_bits(name, device, tmp_path):
    raw, backend = CONFIGS[name], BACKENDS[device]
    resident = _fit(raw, backend, tmp_path / "resident", stream=False)
    streamed = _fit(raw, backend, tmp_path / "streamed", stream=True)
    assert_same_checkpoints(resident, streamed)
    _, meta = checkpoint.load(streamed)
    assert meta["epoch"] == 3 and np.isfinite(meta["metrics"]["train/loss"])
    if raw["data"]["val_split"]:
        assert np.isfinite(meta["metrics"]["val/loss"])


@pytest.mark.parametrize("device", sorted(BACKENDS))
def test_a_memory_mapped_npy_split_by_rows_streams_with_the_resident_bits(device, tmp_path):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(230, 5)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", (x[:, 0] - x[:, 2] > 0).astype(np.int64))
    data = {"source": str(tmp_path / "x.npy"), "target": str(tmp_path / "y.npy")}
    raw = {**CONFIGS["dropout"], "data": {**data, "val_split": 0.3}}
    streamed = _run(raw, BACKENDS[device], True)
    assert isinstance(streamed.x, np.memmap) and streamed.data.train_rows is not None
    assert_same_checkpoints(
        _fit(raw, BACKENDS[device], tmp_path / "resident", stream=False),
        _fit(raw, BACKENDS[device], tmp_path / "streamed", stream=True),
    )


def test_the_standin_defers_a_streams_copies_until_they_are_waited_for():
    """What makes the tests above able to fail: on the stand-in, as on a GPU, a copy on a
    second stream has not happened before its event is waited for, and reads its source
    when it runs."""
    stream, done = xp.cuda.Stream(non_blocking=True), xp.cuda.Event()
    host, dev = np.ones(3, np.float32), xp.zeros(3, xp.float32)
    dev.set(host, stream=stream)
    done.record(stream)
    assert not done.done and dev.get().tolist() == [0, 0, 0]
    host[...] = 2.0
    xp.cuda.get_current_stream().wait_event(done)
    assert done.done and dev.get().tolist() == [2, 2, 2]


def _feed_batches(kind, backend: Backend, epochs: int = 2) -> list[tuple]:
    """Every batch (host copies) of `epochs` shuffled epochs of a feed of kind `kind`:
    200 rows of 3 features, a training split by rows, batches of 32 (the last of 8)."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(260, 3)).astype(np.float32)
    rows = np.sort(rng.permutation(260)[:200])
    y = rng.integers(0, 4, 200)
    f = kind(backend, x, y, rows, x[:30], y[:30], 32, EVAL_BATCH, "float32")
    spans = [(lo, min(lo + 32, 200)) for lo in range(0, 200, 32)]
    got = []  # copies: on the CPU to_host gives a view of the reused buffer
    for e in range(epochs):
        order = np.random.default_rng(e).permutation(200)
        got += [(to_host(xb).copy(), to_host(yb).copy()) for xb, yb in f.batches(order, spans)]
    # validation: one piece or several chunks, joined
    pieces = [(to_host(xv).copy(), to_host(yv).copy()) for xv, yv in f.validation()]
    got.append(tuple(np.concatenate(part) for part in zip(*pieces, strict=True)))
    return got


def _same_batches(a: list[tuple], b: list[tuple]) -> bool:
    if len(a) != len(b):
        return False
    pairs = zip(a, b, strict=True)
    return all(np.array_equal(xa, xb) and np.array_equal(ya, yb) for (xa, ya), (xb, yb) in pairs)


@pytest.mark.parametrize("device", sorted(BACKENDS))
def test_the_streaming_feed_gives_the_resident_feeds_batches(device):
    resident = _feed_batches(feed.Resident, BACKENDS[device])
    assert len(resident) == 2 * 7 + 1 and resident[6][0].shape == (8, 3)
    assert _same_batches(resident, _feed_batches(feed.Streaming, BACKENDS[device]))


def test_a_feed_that_does_not_wait_for_its_copies_gets_other_batches(monkeypatch):
    resident = _feed_batches(feed.Resident, BACKEND)
    monkeypatch.setattr(standin_xp._Stream, "wait_event", lambda self, event: None)
    assert not _same_batches(resident, _feed_batches(feed.Streaming, BACKEND))


# ------------------------------------------------------------------ resume


class _StopAt(QuietReporter):
    """Asks the run to stop (SIGINT) once it reaches a given step."""

    def __init__(self, at_step: int):
        super().__init__()
        self.at_step = at_step

    def step(self, run, batch):
        if run.progress.step == self.at_step:
            run.stop.signum = signal.SIGINT

    def finish(self, run):
        pass


@pytest.fixture
def standin_for_cuda(monkeypatch):
    def fake(device: str = "auto") -> Backend:
        return BACKEND if device == "cuda" else get_backend(device)

    monkeypatch.setattr(mlpcli.runs, "get_backend", fake)


@pytest.mark.parametrize("resume_on", ["cuda", "cpu"])
def test_a_streamed_run_stopped_mid_epoch_resumes_exactly(resume_on, tmp_path, standin_for_cuda):
    raw = copy.deepcopy(CONFIGS["dropout"])
    raw["train"]["epochs"] = 3
    raw["schedule"]["epochs"] = 3
    straight = _fit(raw, CPU, tmp_path / "straight", stream=False)

    run_dir = tmp_path / "stopped"
    (run_dir / "checkpoints").mkdir(parents=True)
    run = _run(raw, BACKEND, True, reporter=_StopAt(10))  # step 3 of the second epoch
    with pytest.raises(Interrupted):
        run.fit(run_dir)
    last = run_dir / "checkpoints" / "last.npz"
    _, meta = checkpoint.load(last)
    assert (meta["step"], meta["progress"]["batch"]) == (10, 3)
    # on the stand-in it streams again; on the CPU resident, as data.stream allows
    resume(last, QuietReporter(), device=resume_on, overrides=["data.stream=auto"])
    assert_same_checkpoints(straight, last)


def test_two_mpi_processes_stream_with_the_bits_of_resident_data(tmp_path):
    """Each process streams its own rows of every batch (one shard of the last is empty)."""
    import test_mpi  # skips this test where MPI is not installed

    runs = {}
    for stream in (False, True):
        config = test_mpi._config(tmp_path, test_mpi.TINY)
        code, _, err = test_mpi.mlpcli(
            "train", config, "--logdir", tmp_path, "--name", f"s{stream}", "-q",
            "--set", f"data.stream={str(stream).lower()}",
        )  # fmt: skip
        assert code == 0, err
        runs[stream] = tmp_path / f"s{stream}" / "checkpoints" / "last.npz"
    assert_same_checkpoints(runs[False], runs[True])


# ------------------------------------------------------------------ the choice


def test_the_automatic_choice(monkeypatch):
    host = np.zeros((100, 4), np.float32)
    assert not feed.streams("auto", CPU, host, 10**15)  # the CPU: resident unless forced
    assert feed.streams(True, CPU, host, 0)
    assert not feed.streams(False, BACKEND, host, 10**15)
    monkeypatch.setattr(standin_xp, "DEVICE_FREE", 1000)
    assert not feed.streams("auto", BACKEND, host, 500)  # half the free memory at most
    assert feed.streams("auto", BACKEND, host, 501)


def test_a_memory_map_or_data_too_large_for_the_device_streams_by_itself(tmp_path, monkeypatch):
    raw = CONFIGS["dropout"]
    assert not _run(raw, BACKEND, "auto").feed.streaming
    assert not _run(raw, CPU, "auto").feed.streaming
    monkeypatch.setattr(standin_xp, "DEVICE_FREE", 4096)  # less than the data
    assert _run(raw, BACKEND, "auto").feed.streaming
    assert not _run(raw, CPU, "auto").feed.streaming
    monkeypatch.undo()
    np.save(tmp_path / "x.npy", np.ones((40, 2), np.float32))
    np.save(tmp_path / "y.npy", np.arange(40) % 2)
    data = {"source": str(tmp_path / "x.npy"), "target": str(tmp_path / "y.npy")}
    assert _run({**raw, "data": data}, BACKEND, "auto").feed.streaming


# ------------------------------------------------------------------ memory


def test_a_resident_memory_map_moves_to_the_device_in_blocks(tmp_path, monkeypatch):
    """data.stream: false on a GPU copies a memory map whole, through one small pinned
    buffer rather than a staging copy of the file's size."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(230, 5)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", (x[:, 1] > 0).astype(np.int64))
    data = {"source": str(tmp_path / "x.npy"), "target": str(tmp_path / "y.npy")}
    raw = {**CONFIGS["dropout"], "data": {**data, "val_split": 0.3}}
    monkeypatch.setattr(feed, "STAGE_BYTES", 10 * 5 * 4)  # 10 rows a block: 23 blocks
    del standin_xp.PINNED[:]
    run = _run(raw, BACKEND, False)
    assert isinstance(run.x, DeviceArray) and np.array_equal(run.x.get(), x)
    assert standin_xp.PINNED == [10 * 5 * 4]
    assert_same_checkpoints(
        _fit(raw, CPU, tmp_path / "cpu", stream=False),
        _fit(raw, BACKEND, tmp_path / "resident", stream=False),
    )


def test_streaming_holds_two_batches_on_the_device_not_the_data(tmp_path, monkeypatch):
    n, d, bs = 3000, 50, 32
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", rng.normal(size=(n, d)).astype(np.float32))
    np.save(tmp_path / "y.npy", rng.integers(0, 2, n))
    data = {"source": str(tmp_path / "x.npy"), "target": str(tmp_path / "y.npy")}
    raw = small_config(
        data={**data, "val_split": 0.1},
        model={"layers": [{"units": 16, "activation": "relu"}, {"units": 2}]},
        train={"epochs": 1, "batch_size": bs},
    )
    allocated: list[tuple] = []  # every array that owns device memory: (shape, bytes)
    wrap = DeviceArray.__init__

    def counting_init(self, a):
        wrap(self, a)
        if isinstance(a, np.ndarray) and a.base is None:
            allocated.append((a.shape, a.nbytes))

    monkeypatch.setattr(DeviceArray, "__init__", counting_init)
    del standin_xp.PINNED[:]
    _fit(raw, BACKEND, tmp_path / "streamed", stream=True)
    largest = max(nbytes for _, nbytes in allocated)
    assert largest <= EVAL_BATCH * d * 8, sorted(allocated, key=lambda s: -s[1])[:5]
    # two slots of pinned staging, for the features and labels of a batch and of a chunk
    assert sorted(standin_xp.PINNED) == sorted(
        [bs * d * 4, bs * 8] * 2 + [EVAL_BATCH * d * 4, EVAL_BATCH * 8] * 2
    )
    features = [s for s, _ in allocated if s == (bs, d)]
    assert len(features) == 3  # the two batch buffers, and the first layer's dx

    allocated.clear()  # the probe sees the data when it is resident
    _fit(raw, BACKEND, tmp_path / "resident", stream=False)
    assert max(nbytes for _, nbytes in allocated) >= n * d * 4


# ------------------------------------------------------------------ the config key


@pytest.mark.parametrize("value", ["sometimes", "1", "null", "'true'"])
def test_a_bad_data_stream_is_a_one_line_error(value, tmp_path, capsys):
    path = write_config(tmp_path / "c.yaml", small_config())
    result = cli(capsys, "validate", path, "--set", f"data.stream={value}")
    user_error(result, "data.stream", "must be auto, true or false")
    raw = small_config()
    raw["data"]["stream"] = "always"
    result = cli(capsys, "train", write_config(tmp_path / "d.yaml", raw), "--logdir", tmp_path)
    user_error(result, "d.yaml", "data.stream", "must be auto, true or false", "line")
    assert not any(tmp_path.glob("small-*"))  # no run folder made


def test_a_warm_streamed_step_allocates_no_batch_sized_array(tmp_path):
    """As tests/test_lean.py for resident data, on the CPU (the stand-in copies each step's
    dropout masks to its "device" in host memory, as CuPy does to the GPU): gathering and
    copying a streamed batch reuse their buffers, and allocate no more than a resident step."""
    import test_lean

    rng = np.random.default_rng(0)
    batch, d = test_lean.BATCH, 300
    x = rng.standard_normal((25 * batch, d), dtype=np.float32)  # a batch: 75 KiB
    y = rng.integers(0, 10, len(x))
    grown = {}
    for stream in (False, True):
        config = validate_dict(
            {
                "data": {"source": "synthetic", "stream": stream},
                "model": {
                    "layers": [
                        {"units": test_lean.WIDTH, "activation": "relu", "dropout": 0.2},
                        {"units": 10, "activation": "softmax"},
                    ]
                },
                "train": {"epochs": 3, "batch_size": batch},
                "logging": {"logdir": str(tmp_path), "every_n_steps": 5},
                "checkpoint": {"every_n_epochs": 100, "keep_last": 0, "save_best": False},
            }
        )
        data = Dataset(x_train=x, y_train=y, classes=np.arange(10), x_mean=np.zeros(d),
                       x_std=np.ones(d))  # fmt: skip
        reporter = test_lean._Measure()
        run = Run(config, data, reporter, CPU)
        assert run.feed.streaming is stream
        (tmp_path / f"{stream}" / "checkpoints").mkdir(parents=True)
        run.fit(tmp_path / f"{stream}")
        grown[stream] = (reporter.peak - reporter.base, reporter.current - reporter.base)
    peak, kept = grown[True]
    assert peak < batch * d * 4 and peak <= grown[False][0] + 4096, grown
    assert kept < 16 * 1024, grown  # and nothing accumulates
