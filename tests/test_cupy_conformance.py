"""Every array call the engine makes passes real CuPy's argument checks (13.x and 14.x).

The engine runs here on the stand-in (tests/standin_xp.py), which records each distinct
call: training with every activation, loss and optimizer, dropout, clipping,
standardization, float32 and float64 and a partial last batch; the same with the data
streamed from the host (streams, events, pinned buffers, `ndarray.set` on a stream,
validation in chunks), and a memory-mapped .npy moved to the device block by block;
evaluation; prediction; the float64 forward and backward passes of a gradient check.
tests/cupy_replay.py then replays the calls on real CuPy, in the environments
tests/cupy_envs.sh makes, standing in for the few CUDA entry points a call meets before its
work reaches the device. A call CuPy refuses fails the test; so does one that copies an
input aside before writing its output (an activation-sized temporary), or a batch copied
to the device from anything but pinned memory.

Without those environments the tests skip, unless MLPCLI_REQUIRE_CUPY=1 (as in .ci/run).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO, small_config
from standin_xp import BACKEND, encode_call, recording, xp

import mlpcli.inference
import mlpcli.train
from mlpcli import feed, inference
from mlpcli.backend import get_backend
from mlpcli.config import validate_dict
from mlpcli.data import prepare
from mlpcli.losses import as_targets
from mlpcli.model import MLP
from mlpcli.report import QuietReporter
from mlpcli.train import Run

ENVS = {"cupy13": REPO / ".venv-cupy13", "cupy14": REPO / ".venv-cupy14"}
REPLAY = REPO / "tests" / "cupy_replay.py"


def _python(env: str) -> Path:
    python = ENVS[env] / "bin" / "python"
    if not python.exists() or not (ENVS[env] / "cuda-stub" / "libcublas.so.12").exists():
        reason = f"{ENVS[env].name} is missing: make it with `bash tests/cupy_envs.sh`"
        if os.environ.get("MLPCLI_REQUIRE_CUPY") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return python


def replay(env: str, calls: list[dict], tmp_path: Path) -> list[dict]:
    """The results of replaying `calls` on the real CuPy of `env`."""
    return replay_report(env, calls, tmp_path)["results"]


def replay_report(env: str, calls: list[dict], tmp_path: Path) -> dict:
    """The report of replaying `calls` on the real CuPy of `env` (see cupy_replay.replay)."""
    python = _python(env)
    path = tmp_path / f"calls-{env}.json"
    path.write_text(json.dumps(calls), encoding="utf-8")
    done = subprocess.run(
        [str(python), str(REPLAY), "replay", str(path), str(ENVS[env] / "cuda-stub")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["cupy"].split(".")[0] == env[-2:], report["cupy"]
    assert len(report["results"]) == len(calls)
    return report


# ------------------------------------------------------------------ what the engine calls

LAYERS = {
    "relu-tanh": [
        {"units": 8, "activation": "relu", "dropout": 0.2},
        {"units": 6, "activation": "tanh"},
        {"units": 3, "activation": "softmax"},
    ],
    "leaky-linear": [
        {"units": 8, "activation": "leaky_relu"},
        {"units": 5, "activation": "linear", "dropout": 0.1},
        {"units": 3, "activation": "softmax"},
    ],
    "sigmoid-gelu": [
        {"units": 7, "activation": "sigmoid"},
        {"units": 5, "activation": "gelu"},
        {"units": 3, "activation": "softmax"},
    ],
}
BLOBS = {"source": "blobs", "options": {"n_samples": 250}, "val_split": 0.2}  # 200 = 6 x 32 + 8
TRAIN = {"epochs": 2, "batch_size": 32, "clip_grad_norm": 1.0}
WORKLOADS = {
    "adam-float32": small_config(
        data=BLOBS,
        model={"layers": LAYERS["relu-tanh"]},
        optimizer={"name": "adam", "lr": 0.01, "weight_decay": 1e-3, "amsgrad": True},
        train=TRAIN,
        logging={"every_n_steps": 2, "histograms": True},
    ),
    "sgd-float64": small_config(
        dtype="float64",
        data={**BLOBS, "standardize": False},
        model={"layers": LAYERS["leaky-linear"]},
        optimizer={"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True},
        schedule={"name": "step", "step_size": 1, "gamma": 0.5},
        train={**TRAIN, "clip_grad_norm": None},
    ),
    "rmsprop-float32": small_config(
        data=BLOBS,
        model={"layers": LAYERS["sigmoid-gelu"]},
        optimizer={"name": "rmsprop", "lr": 0.01, "centered": True, "momentum": 0.5},
        train=TRAIN,
    ),
    "adagrad-float64": small_config(
        dtype="float64",
        data={**BLOBS, "val_split": 0.0},
        model={"layers": LAYERS["sigmoid-gelu"]},
        optimizer={"name": "adagrad", "lr": 0.1, "weight_decay": 1e-3},
        train={**TRAIN, "shuffle": False},
    ),
    "adamw-bce": small_config(
        data={"source": "triangle", "options": {"n_samples": 250}, "val_split": 0.2},
        model={"layers": [*LAYERS["relu-tanh"][:2], {"units": 1, "activation": "sigmoid"}]},
        loss="binary_cross_entropy",
        optimizer={"name": "adamw", "lr": 0.01},
        train=TRAIN,
    ),
    "mse-float64": small_config(
        dtype="float64",
        data={
            "source": "linear",
            "options": {"n_samples": 250, "n_features": 3},
            "val_split": 0.2,
            "standardize_target": True,
        },
        model={"layers": [*LAYERS["sigmoid-gelu"][:2], {"units": 1, "activation": "linear"}]},
        loss="mse",
        optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.5, "dampening": 0.1},
        train=TRAIN,
    ),
}

# streamed from the host: batches of 32 (the last of 8), validation in chunks of 16 (the last
# of 2); float32 with dropout and standardization, float64 with standardized targets
STREAMED = {
    "stream-float32": {**WORKLOADS["adam-float32"], "data": {**BLOBS, "stream": True}},
    "stream-float64": {
        **WORKLOADS["mse-float64"],
        "data": {**WORKLOADS["mse-float64"]["data"], "stream": True, "standardize": True},
        "model": {"layers": [*LAYERS["relu-tanh"][:2], {"units": 1, "activation": "linear"}]},
    },
}
EVAL_CHUNK = 16


def _memmap_workload(root: Path) -> dict:
    """A .npy training set (memory-mapped), resident: it moves to the device through a
    pinned buffer of 32 rows, 230 = 7 x 32 + 6 of them."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(230, 5)).astype(np.float32)
    np.save(root / "mm-x.npy", x)
    np.save(root / "mm-y.npy", (x[:, 0] > 0).astype(np.int64))
    data = {"source": str(root / "mm-x.npy"), "target": str(root / "mm-y.npy"), "stream": False}
    layers = [*LAYERS["relu-tanh"][:2], {"units": 2, "activation": "softmax"}]
    return {
        **WORKLOADS["adam-float32"],
        "data": {**data, "val_split": 0.2},
        "model": {"layers": layers},
    }


def _train(raw: dict, run_dir: Path) -> Path:
    config = validate_dict(copy.deepcopy(raw), where="test config")
    (run_dir / "checkpoints").mkdir(parents=True)
    Run(config, prepare(config, "test config"), QuietReporter(), backend=BACKEND).fit(run_dir)
    return run_dir / "checkpoints" / "last.npz"


def _gradcheck_passes(raw: dict) -> None:
    """What `mlpcli gradcheck` computes, on the device: float64 forward, backward, loss."""
    config = validate_dict({**copy.deepcopy(raw), "dtype": "float64"}, where="test config")
    data = prepare(config, "test config")
    model = MLP.build(xp, config, data.x_train.shape[1])
    x = xp.asarray(np.asarray(data.x_train[:8], dtype=np.float64))
    y = xp.asarray(as_targets(config.loss, data.y_train[:8], "float64"))
    model.loss_and_backward(model.forward(x), y)
    float(model.loss_value(x, y))


@pytest.fixture(scope="module")
def engine_calls(tmp_path_factory) -> list[dict]:
    """Each distinct call the engine makes on the device in every workload."""
    root = tmp_path_factory.mktemp("workloads")
    features = np.random.default_rng(0).normal(size=(40, 2))
    np.save(root / "x.npy", features)
    with recording() as calls, pytest.MonkeyPatch.context() as mp:
        mp.setattr(
            mlpcli.inference,
            "get_backend",
            lambda device="auto": BACKEND if device == "cuda" else get_backend(device),
        )
        for name, raw in WORKLOADS.items():
            last = _train(raw, root / name)
            if name in ("adam-float32", "adamw-bce", "mse-float64"):
                loaded = inference.load(last, device="cuda")
                inference.evaluate(loaded)
                if raw["loss"] != "mse":
                    inference.predict(loaded, str(root / "x.npy"), proba=True)
            _gradcheck_passes(raw)
        mp.setattr(mlpcli.train, "EVAL_BATCH", EVAL_CHUNK)
        for name, raw in STREAMED.items():
            _train(raw, root / name)
        mp.setattr(feed, "STAGE_BYTES", 32 * 5 * 4)
        _train(_memmap_workload(root), root / "memmap")
    assert len(calls) > 100
    return calls


@pytest.fixture(scope="module")
def engine_results(engine_calls, tmp_path_factory):
    """The engine's calls replayed on each CuPy (once per environment)."""
    done: dict[str, list[dict]] = {}

    def results(env: str) -> list[dict]:
        if env not in done:
            done[env] = replay(env, engine_calls, tmp_path_factory.mktemp(env))
        return done[env]

    return results


# ------------------------------------------------------------------ the engine passes


@pytest.mark.parametrize("env", sorted(ENVS))
def test_every_engine_call_passes_cupys_checks(env, engine_calls, engine_results):
    results = engine_results(env)
    refused = [
        f"{r['error']}\n    in {json.dumps(call)[:600]}"
        for call, r in zip(engine_calls, results, strict=True)
        if r["error"]
    ]
    assert not refused, f"{len(refused)} calls refused by CuPy:\n" + "\n".join(refused[:10])
    reached = {what for r in results for what in r["reached"]}
    assert {"kernel", "cublas", "memcpy"} <= reached, reached  # the replay got to the device
    # only views and uninitialized buffers need no device work; anything else that reached
    # nothing went somewhere the stand-ins cannot see
    views = {"ndarray.__getitem__", "ndarray.reshape", "ndarray.T", "xp.ascontiguousarray"}
    views |= {"xp.empty", "xp.empty_like"}
    views |= {"xp.cuda.get_current_stream", "xp.get_default_memory_pool"}  # host objects
    views |= {"MemoryPool.free_bytes"}  # counted on the host
    unseen = {c["call"] for c, r in zip(engine_calls, results, strict=True) if not r["reached"]}
    assert unseen <= views, unseen - views
    strays = [r for r in results for what in r["reached"] if what.startswith("unraisable")]
    assert not strays, strays
    # matrix products run on cuBLAS, elementwise work as kernels
    for call, r in zip(engine_calls, results, strict=True):
        if call["call"] in ("xp.matmul", "xp.vdot") and call["args"][0]["dtype"] in ("<f4", "<f8"):
            assert r["reached"], (call, r)


STREAMING_CALLS = {
    # what each of the feed's calls must reach on the way to the device
    "xp.cuda.Stream": "streamCreate",
    "xp.cuda.Event": "eventCreate",
    "xp.cuda.alloc_pinned_memory": "hostAlloc",
    "Event.record": "eventRecord",
    "Event.synchronize": "eventSynchronize",
    "Stream.wait_event": "streamWaitEvent",
    "Stream.synchronize": "streamSynchronize",
    "xp.cuda.runtime.memGetInfo": "runtime",
    # the batch copies: asynchronous, from pinned memory, on the copy stream
    "ndarray.set": "memcpyAsync host-to-device from pinned memory on a stream of its own",
}


@pytest.mark.parametrize("env", sorted(ENVS))
def test_the_streaming_calls_reach_the_cuda_runtime(env, engine_calls, engine_results):
    """Streams and events made with the feed's flags, waits on both streams, pinned buffers,
    and each batch's copy: every one recorded and replayed to its CUDA runtime call."""
    results = engine_results(env)
    seen = {c["call"] for c in engine_calls}
    assert set(STREAMING_CALLS) | {"MemoryPool.free_bytes"} <= seen, set(STREAMING_CALLS) - seen
    for call, r in zip(engine_calls, results, strict=True):
        if call["call"] in STREAMING_CALLS:
            assert STREAMING_CALLS[call["call"]] in r["reached"], (call, r)
    sets = [c for c in engine_calls if c["call"] == "ndarray.set"]
    hosts = {(c["args"][1]["dtype"], tuple(c["args"][1]["host"])) for c in sets}
    assert {("<f4", (8, 2)), ("<f8", (8, 3)), ("<f8", (8, 1))} <= hosts  # last batches
    assert {("<f4", (2, 2)), ("<f4", (6, 5))} <= hosts  # last validation chunk, memmap block
    assert all(c["args"][1]["pinned"] for c in sets)
    waits = {c["args"][0]["stream"] == "current" for c in engine_calls if "wait" in c["call"]}
    assert waits == {True, False}  # the compute stream and the copy stream both wait
    streams = [c["kwargs"] for c in engine_calls if c["call"] == "xp.cuda.Stream"]
    assert streams == [{"non_blocking": True}]


@pytest.mark.parametrize("env", sorted(ENVS))
def test_pinned_buffers_are_writable_c_ordered_pinned_memory(env, tmp_path):
    """Backend.pinned_empty on real CuPy: NumPy arrays over CuPy's pinned memory, which the
    feed gathers batches into (np.take(out=)) and copies from asynchronously."""
    made = replay_report(env, [], tmp_path)["pinned_empty"]
    assert [(m["shape"], m["dtype"]) for m in made] == [
        ([5, 3], "<f4"),
        ([7], "<i8"),
        ([0, 4], "<f8"),
    ]
    for m in made:
        assert m["writeable"] and m["c_contiguous"] and m["pinned"], m


@pytest.mark.parametrize("env", sorted(ENVS))
def test_calls_into_out_buffers_allocate_nothing(env, engine_calls, engine_results):
    """A call writing into `out=` (or in place) makes no temporary: no input is copied aside
    because it is another view of the output's memory."""
    results = engine_results(env)
    allocating = [
        (call["call"], r["allocated"], json.dumps(call)[:400])
        for call, r in zip(engine_calls, results, strict=True)
        if ("out" in call["kwargs"] or call["call"].startswith("ndarray.__i")) and r["allocated"]
    ]
    assert not allocating, allocating[:5]


# ------------------------------------------------------------------ the check can fail


def _bad_calls() -> dict[str, dict]:
    a = xp.empty((4, 3), xp.float32)
    w = xp.empty((3, 2), xp.float32)
    buf = xp.empty((4, 3), xp.float32)
    z = xp.zeros(30, xp.float32)
    return {
        "matmul into a wrong-shaped out": encode_call(
            "xp.matmul", (a, w), {"out": xp.empty((4, 3), xp.float32)}
        ),
        "take with mode='clip'": encode_call(
            "xp.take", (a, xp.arange(2)), {"axis": 0, "out": xp.empty((2, 3)), "mode": "clip"}
        ),
        "take into an out of another dtype": encode_call(
            "xp.take", (a, xp.arange(2)), {"axis": 0, "out": xp.empty((2, 3), xp.float64)}
        ),
        "an unsafe cast into out": encode_call(
            "xp.add", (a, 1.5), {"out": xp.empty((4, 3), xp.int32)}
        ),
        "a ufunc with where=": encode_call("xp.maximum", (a, 0.0), {"out": a, "where": a}),
        "a reduction with initial=": encode_call("ndarray.max", (a,), {"initial": 0.0}),
        "the bias gradient as a 1-D GEMV": encode_call(
            "xp.matmul", (xp.ones(4, xp.float32), a), {"out": z[3:6]}
        ),
        "an activation on two views of one buffer": encode_call(
            "xp.maximum", (buf[:2], 0.0), {"out": buf[:2]}
        ),
        **_bad_streaming_calls(),
    }


def _bad_streaming_calls() -> dict[str, dict]:
    """Copies to the device that CuPy refuses, or takes without the pinned memory that makes
    them asynchronous; streams and events with keywords CuPy lacks."""
    pinned = BACKEND.pinned_empty((4, 3), np.float32)
    copier = xp.cuda.Stream(non_blocking=True)
    on = {"stream": copier}
    return {
        "set from a host array of the wrong shape": encode_call(
            "ndarray.set", (xp.empty((4, 3), xp.float32), pinned[:3]), on
        ),
        "set from a host array of another dtype": encode_call(
            "ndarray.set", (xp.empty((4, 3), xp.float64), pinned), on
        ),
        "set into a non-contiguous device array": encode_call(
            "ndarray.set", (xp.empty((4, 3), xp.float32)[:, :2], pinned[:, :2]), on
        ),
        "a stream with a keyword CuPy lacks": encode_call("xp.cuda.Stream", (), {"blocking": 0}),
        "an event with a keyword CuPy lacks": encode_call("xp.cuda.Event", (), {"timing": 0}),
        # accepted, but through ordinary memory: CuPy copies a non-contiguous source first
        "set from a non-contiguous pinned array": encode_call(
            "ndarray.set", (xp.empty((4, 2), xp.float32), pinned[:, :2]), on
        ),
        "set from ordinary memory": encode_call(
            "ndarray.set", (xp.empty((4, 3), xp.float32), np.ones((4, 3), np.float32)), on
        ),
    }


def _column_major_feed_calls() -> list[dict]:
    """The calls of a streaming feed whose pinned buffers are column-major: the stand-in
    gives the right batches (its copies take any layout), but on CuPy each batch of features
    would be copied through ordinary memory first."""
    pinned_empty = type(BACKEND).pinned_empty

    def column_major(self, shape: tuple, dtype) -> np.ndarray:
        return pinned_empty(self, shape[::-1], dtype).T

    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(40, 3)).astype(np.float32), rng.integers(0, 2, 40)
    spans = [(0, 16), (16, 32), (32, 40)]
    with pytest.MonkeyPatch.context() as mp, recording() as calls:
        mp.setattr(type(BACKEND), "pinned_empty", column_major)
        f = feed.Streaming(BACKEND, x, y, None, None, None, 16, 16, "float32")
        got = [(xb.get(), yb.get()) for xb, yb in f.batches(np.arange(40), spans)]
    assert all(np.array_equal(xb, x[lo:hi]) for (xb, _), (lo, hi) in zip(got, spans, strict=True))
    return [c for c in calls if c["call"] == "ndarray.set"]


@pytest.mark.parametrize("env", sorted(ENVS))
def test_the_replay_catches_what_cupy_refuses(env, tmp_path):
    bad = _bad_calls()
    feed_calls = _column_major_feed_calls()
    done = replay(env, list(bad.values()) + feed_calls, tmp_path)
    results = dict(zip(bad, done, strict=False))
    refused = [*list(bad)[:6], *list(_bad_streaming_calls())[:5]]
    for what in refused:
        assert results[what]["error"], f"{what} passed on {env}: {results[what]}"
    pinned = STREAMING_CALLS["ndarray.set"]
    for what in ("set from a non-contiguous pinned array", "set from ordinary memory"):
        r = results[what]
        assert r["error"] is None and pinned not in r["reached"], (what, r)
        assert (
            "memcpyAsync host-to-device from pageable memory on a stream of its own" in r["reached"]
        ), (what, r)
    # the column-major feed: its feature copies fail test_the_streaming_calls_reach_...
    through_pageable = [
        c["args"][1]["dtype"]
        for c, r in zip(feed_calls, done[len(bad) :], strict=True)
        if r["error"] is None and pinned not in r["reached"]
    ]
    assert through_pageable and set(through_pageable) == {"<f4"}, through_pageable
    gemv = results["the bias gradient as a 1-D GEMV"]
    if env == "cupy13":  # what model.py used to do on every backward step
        assert "axes don't match array" in gemv["error"], gemv
    else:  # CuPy 14 accepts it
        assert gemv["error"] is None and gemv["reached"] == ["cublas"], gemv
    aliased = results["an activation on two views of one buffer"]
    assert aliased["error"] is None and aliased["allocated"] == 2 * 3 * 4, aliased


def test_the_standin_refuses_them_too():
    """What CuPy refuses above, the stand-in refuses, so a CPU-only test run sees it."""
    a = xp.empty((4, 3), xp.float32)
    refused = {
        "matmul out": lambda: xp.matmul(a, xp.empty((3, 2)), out=xp.empty((4, 3))),
        "take mode": lambda: xp.take(a, xp.arange(2), axis=0, out=xp.empty((2, 3)), mode="clip"),
        "take dtype": lambda: xp.take(a, xp.arange(2), axis=0, out=xp.empty((2, 3))),
        "unsafe cast": lambda: xp.add(a, 1.5, out=xp.empty((4, 3), xp.int32)),
        "where=": lambda: xp.maximum(a, 0.0, out=a, where=a),
        "initial=": lambda: a.max(initial=0.0),
        "sum where=": lambda: a.sum(axis=0, where=a > 0),
        "astype casting=": lambda: a.astype(xp.float64, casting="safe"),
    }
    for what, attempt in refused.items():
        with pytest.raises((TypeError, ValueError)):
            attempt()
            pytest.fail(f"{what} was not refused")


def test_recording_keeps_shapes_strides_and_aliasing():
    buf = xp.empty((4, 3), xp.float32)
    view = buf[1:3]
    with recording() as calls:
        xp.add(view, 1.0, out=view)
        xp.multiply(buf.T, buf.T, out=xp.empty((3, 4), xp.float32))
        xp.add(view, 1.0, out=view)  # the same call again: recorded once
    assert [c["call"] for c in calls] == ["xp.add", "ndarray.T", "xp.empty", "xp.multiply"]
    add = next(c for c in calls if c["call"] == "xp.add")
    arg, out = add["args"][0], add["kwargs"]["out"]
    assert arg == out and arg["object"] == 0  # one and the same array object
    assert (arg["offset"], arg["shape"], arg["strides"], arg["nbytes"]) == (12, [2, 3], [12, 4], 48)
    mul = next(c for c in calls if c["call"] == "xp.multiply")
    assert mul["args"][0]["strides"] == [4, 12] and mul["args"][0]["device"] == 0
    assert mul["kwargs"]["out"]["device"] == 1
    assert sys.modules["standin_xp"]._RECORD is None  # recording ended with the block


# ------------------------------------------------------------------ choosing the device

CLI_CONFIG = {
    "data": {"source": "triangle", "options": {"n_samples": 200}},
    "model": {
        "layers": [{"units": 4, "activation": "relu"}, {"units": 2, "activation": "softmax"}]
    },
    "train": {"epochs": 1, "batch_size": 32},
}


def mlpcli_on(env: str, mode: str, tmp_path: Path, *args: str, **environ: str):
    """`mlpcli train` on real CuPy with a stand-in GPU (cupy_replay.run_mlpcli's modes):
    (exit code, stdout, stderr, the log folder)."""
    python = _python(env)
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps(CLI_CONFIG), encoding="utf-8")
    logs = tmp_path / "logs"
    done = subprocess.run(
        [str(python), str(REPLAY), "mlpcli", mode, str(ENVS[env] / "cuda-stub")]
        + ["train", str(config), "--logdir", str(logs), "--name", "r", "--quiet", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **environ},
    )
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    return done.returncode, done.stdout, done.stderr, logs


def _error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize("env", sorted(ENVS))
def test_cuda_without_cublas_and_nvrtc_is_one_error_before_anything_is_written(env, tmp_path):
    code, _, err, logs = mlpcli_on(env, "no-libraries", tmp_path, "--device", "cuda")
    line = _error_line(err)
    assert code == 2 and not logs.exists()
    assert "error: device cuda: the GPU (Stand-in GPU) cannot be used: CuPy 1" in line
    assert "cannot load cuBLAS nor NVRTC (" in line and "libcublas" in line
    assert 'pip install "cupy-cuda12x[ctk]' in line
    if env == "cupy13":
        assert "CUDA Toolkit 12 with its lib64 on LD_LIBRARY_PATH" in line


@pytest.mark.parametrize("env", sorted(ENVS))
def test_cuda_without_nvrtc_names_nvrtc_alone(env, tmp_path):
    code, _, err, logs = mlpcli_on(env, "no-nvrtc", tmp_path, "--device", "cuda")
    line = _error_line(err)
    assert code == 2 and not logs.exists()
    assert "cannot load NVRTC (" in line and "cuBLAS" not in line and "libnvrtc.so" in line


@pytest.mark.parametrize("env", sorted(ENVS))
def test_auto_falls_back_to_the_cpu_with_one_warning(env, tmp_path):
    code, _, err, logs = mlpcli_on(env, "no-libraries", tmp_path, "--device", "auto")
    assert code == 0, err
    (line,) = err.strip().splitlines()
    assert line.startswith("warning: device auto: the GPU (Stand-in GPU) cannot be used: ")
    assert line.endswith("; running on the CPU") and "cuBLAS nor NVRTC" in line
    assert (logs / "r" / "checkpoints" / "last.npz").is_file()


@pytest.mark.parametrize("env", sorted(ENVS))
def test_data_too_large_for_the_gpu_is_one_error_before_anything_is_written(env, tmp_path):
    # 160 training rows of 2 float32 features: 1,280 bytes, the one allocation this large
    code, _, err, logs = mlpcli_on(
        env, "oom-data", tmp_path, "--device", "cuda", MLPCLI_OOM_BYTES="1280"
    )
    line = _error_line(err)
    assert code == 2 and not logs.exists()
    assert line.startswith("error: device cuda: out of GPU memory (Out of memory allocating 1,280")
    assert "the GPU has 3.0 GiB free of 16.0 GiB" in line
    assert "smaller train.batch_size" in line and "stream the data" in line
    assert line.endswith("or train with --device cpu")


@pytest.mark.parametrize("env", sorted(ENVS))
def test_out_of_gpu_memory_in_training_leaves_no_run_folder(env, tmp_path):
    code, _, err, logs = mlpcli_on(env, "oom-fit", tmp_path, "--device", "cuda")
    line = _error_line(err)
    assert code == 2
    assert "out of GPU memory" in line and "--device cpu" in line
    assert line.endswith(f"nothing had been saved, so run folder {logs / 'r'} was removed")
    assert not (logs / "r").exists()


def _good_calls() -> dict[str, tuple]:
    """Calls CuPy accepts that the stand-in once refused (keywords it lacked)."""
    a = xp.zeros((4, 3), xp.float32)
    return {
        "empty with order=": ("xp.empty", ((2, 3), xp.float32), {"order": "C"}),
        "zeros with order=": ("xp.zeros", ((2, 3),), {"dtype": xp.float64, "order": "F"}),
        "empty_like with shape=": ("xp.empty_like", (a,), {"shape": (6,), "order": "C"}),
        "zeros_like with dtype=": ("xp.zeros_like", (a,), {"dtype": xp.float64}),
        "reshape with order=": ("ndarray.reshape", (a, (3, 4)), {"order": "C"}),
        "astype with order=": ("ndarray.astype", (a, xp.float64), {"order": "C", "copy": True}),
        "asarray with order=": ("xp.asarray", (a,), {"dtype": xp.float64, "order": "C"}),
        "asarray of a host array": ("xp.asarray", (np.ones((2, 2)),), {"dtype": xp.float32}),
    }


@pytest.mark.parametrize("env", sorted(ENVS))
def test_the_standin_accepts_what_cupy_accepts(env, tmp_path):
    good = _good_calls()
    for name, args, kwargs in good.values():  # the stand-in runs each
        kind, attr = name.split(".")
        target = getattr(xp, attr) if kind == "xp" else getattr(args[0], attr)
        target(*(args if kind == "xp" else args[1:]), **kwargs)
    calls = [encode_call(*call) for call in good.values()]
    for what, r in zip(good, replay(env, calls, tmp_path), strict=True):
        assert r["error"] is None, (what, r)
