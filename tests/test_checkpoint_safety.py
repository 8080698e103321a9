"""Untrusted checkpoints: whatever file `inspect`, `eval` or `resume` is given, it is exit 2
with one `error:` line naming the file, never a traceback, never unpickled; and `kill -9`
at any moment of training leaves checkpoints that load and resume.

One real checkpoint is trained once for the module; every bad file is made from it or
from scratch in a temporary folder.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import time
import traceback
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers import cli, small_config, snapshot, user_error, write_config

from mlpcli import checkpoint, inference
from mlpcli.checkpoint import check_params
from mlpcli.cli import main
from mlpcli.errors import CheckpointError, MlpcliError
from mlpcli.model import param_shapes

COMMANDS = ("inspect", "eval", "predict", "resume")


# ---------------------------------------------------------------------- helpers


def run(capsys, *args) -> tuple[int, str, str]:
    """`cli()`, with an escaping exception turned into exit 1 and its traceback on stderr."""
    try:
        return cli(capsys, *args)
    except Exception:
        out = capsys.readouterr()
        return 1, out.out, out.err + traceback.format_exc()


def command_args(command: str, path: Path) -> list:
    """`mlpcli COMMAND` on checkpoint `path`: each command that reads a checkpoint."""
    if command == "resume":
        return ["resume", path, "--epochs", "5", "-q"]
    if command == "predict":  # a valid input beside the run folder
        features = path.parent.parent.parent / "features.npy"
        if not features.exists():
            np.save(features, np.array([[0.1, 0.2], [0.5, 0.4]]))
        return ["predict", path, features]
    return [command, path]


def assert_user_error(result: tuple[int, str, str], path: Path, *fragments: str) -> str:
    """Exit 2, one `error:` line on stderr naming `path` (and `fragments`), no traceback."""
    return user_error(result, str(path), *fragments, warnings_ok=True)


class Payload:
    """Unpickling this object creates `marker`: proof that a checkpoint was unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def pickled_array(marker: Path) -> np.ndarray:
    a = np.empty((), dtype=object)
    a[()] = Payload(marker)
    return a


def write_pickled(folder: Path, marker: Path, real: Path) -> dict[str, Path]:
    """Two pickled checkpoints in `folder`: a real one with an extra object array, and one
    whose `meta` itself is pickled."""
    arrays, meta = checkpoint.load(real)
    extra = folder / "pickled-extra.npz"
    meta_json = np.array(json.dumps(meta))
    np.savez(extra, **arrays, meta=meta_json, evil=pickled_array(marker), allow_pickle=True)
    as_meta = folder / "pickled-meta.npz"
    np.savez(as_meta, **arrays, meta=pickled_array(marker), allow_pickle=True)
    return {"pickled-extra": extra, "pickled-meta": as_meta}


def compare_loaded(arrays, meta, want_arrays, want_meta) -> str | None:
    """What differs between a load and the original, or None."""
    if sorted(arrays) != sorted(want_arrays):
        return f"keys differ: {sorted(set(arrays) ^ set(want_arrays))}"
    for key, want in want_arrays.items():
        got = arrays[key]
        if got.dtype != want.dtype or got.shape != want.shape or not np.array_equal(got, want):
            return f"array {key} differs"
    if meta != want_meta:
        return "meta differs"
    return None


def loaders(real: Path) -> dict:
    """Every way mlpcli reads a checkpoint: name -> f(path) -> (arrays, meta) it took."""
    config = inference.load(real).config
    shapes = param_shapes(config, checkpoint.load(real)[0]["params/0/W"].shape[0])

    def init_from(path: Path) -> tuple[dict, None]:
        """What `train` takes from `model.init_from`: load_params, then the shape check."""
        params = checkpoint.load_params(path)
        check_params(params, shapes, f"model.init_from: {path}")
        return checkpoint.prefixed("params", params), None

    def via_inference(path: Path) -> tuple[dict, dict]:
        loaded = inference.load(path)
        return loaded.arrays, loaded.meta

    return {
        "checkpoint.load": checkpoint.load,
        "inference.load": via_inference,
        "init_from": init_from,
    }


def central_directory(data: bytes) -> int:
    """Offset of the first central directory entry (from the end record)."""
    eocd = len(data) - 22
    assert data[eocd : eocd + 4] == b"PK\x05\x06"
    return int.from_bytes(data[eocd + 16 : eocd + 20], "little")


# ---------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def real(tmp_path_factory) -> Path:
    """A real 2-epoch checkpoint: logs/r/checkpoints/last.npz."""
    root = tmp_path_factory.mktemp("real")
    cfg = write_config(root / "small.yaml", small_config(train={"epochs": 2, "batch_size": 32}))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(["train", str(cfg), "--logdir", str(root / "logs"), "--name", "r", "-q"])
        except SystemExit as e:
            assert e.code in (0, None), err.getvalue()
    path = root / "logs" / "r" / "checkpoints" / "last.npz"
    assert checkpoint.load(path)[1]["epoch"] == 2
    return path


@pytest.fixture(scope="module")
def bad(real, tmp_path_factory) -> dict[str, Path]:
    """Bad checkpoints, all inside a run folder's checkpoints/ (so `resume` could run)."""
    folder = tmp_path_factory.mktemp("bad") / "run" / "checkpoints"
    folder.mkdir(parents=True)
    arrays, meta = checkpoint.load(real)
    files = {name: folder / f"{name}.npz" for name in ("missing", "empty", "directory")}
    files["empty"].write_bytes(b"")
    files["directory"].mkdir()

    files["text"] = folder / "text.npz"
    files["text"].write_text("epoch: 3\nthis is not a checkpoint\n")

    files["bare-npy"] = folder / "bare.npz"
    with open(files["bare-npy"], "wb") as f:  # np.save(path) would append `.npy`
        np.save(f, np.arange(6.0).reshape(2, 3))

    files["foreign-npz"] = folder / "foreign.npz"
    np.savez(files["foreign-npz"], x=np.zeros((4, 2)), y=np.arange(4))

    files["other-format"] = folder / "other-format.npz"
    other = {**meta, "format": "keras-weights"}
    np.savez(files["other-format"], **arrays, meta=np.array(json.dumps(other)))

    files["newer-version"] = folder / "newer-version.npz"
    newer = {**meta, "version": meta["version"] + 1}
    np.savez(files["newer-version"], **arrays, meta=np.array(json.dumps(newer)))
    return files


BAD = (
    "missing",
    "empty",
    "directory",
    "text",
    "bare-npy",
    "foreign-npz",
    "other-format",
    "newer-version",
)


# ---------------------------------------------------------------------- bad files


def test_the_real_checkpoint_works(real, capsys):
    """Guard: every command used below accepts the real checkpoint."""
    assert run(capsys, "inspect", real)[0] == 0
    assert run(capsys, "eval", real, "--json")[0] == 0
    assert run(capsys, *command_args("predict", real))[0] == 0


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", BAD)
def test_bad_checkpoint_is_one_error_line(bad, case, command, capsys):
    path = bad[case]
    run_dir = path.parent.parent
    before = snapshot(run_dir)
    assert_user_error(run(capsys, *command_args(command, path)), path)
    assert snapshot(run_dir) == before, "a failed command changed the run folder"


# ---------------------------------------------------------------------- pickles


@pytest.fixture(scope="module")
def pickled(real, tmp_path_factory) -> tuple[dict[str, Path], Path]:
    folder = tmp_path_factory.mktemp("pickled") / "run" / "checkpoints"
    folder.mkdir(parents=True)
    marker = folder.parent.parent / "UNPICKLED"
    return write_pickled(folder, marker, real), marker


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", ("pickled-extra", "pickled-meta"))
def test_pickled_checkpoint_is_never_unpickled(pickled, case, command, capsys):
    files, marker = pickled
    path = files[case]
    line = assert_user_error(run(capsys, *command_args(command, path)), path)
    assert "pickled" in line, line
    assert not marker.exists(), f"`mlpcli {command}` unpickled {path}"


@pytest.mark.parametrize("case", ("pickled-extra", "pickled-meta"))
def test_pickled_checkpoint_is_refused_by_the_loaders(pickled, case, real):
    files, marker = pickled
    with pytest.raises(CheckpointError, match="pickled"):
        checkpoint.load(files[case])
    with pytest.raises(CheckpointError, match="pickled"):
        inference.load(files[case])
    # model.init_from reads only params/: it may refuse the file or take those arrays
    want = checkpoint.section(checkpoint.load(real)[0], "params")
    try:
        params = checkpoint.load_params(files[case])
    except CheckpointError as e:
        assert "pickled" in str(e), e
    else:
        assert compare_loaded(params, None, want, None) is None
    assert not marker.exists()


# ---------------------------------------------------------------------- truncation


def truncation_offsets(size: int) -> list[int]:
    """About 40 cut points: the very start, the zip headers, evenly spread, the very end."""
    picked = {0, 1, 2, 3, 4, 5, 10, 29, 30, 31, 64, 100, 128}
    picked |= {int(x) for x in np.linspace(150, size - 30, 18)}
    picked |= {size - k for k in (1, 2, 4, 10, 21, 22, 23, 40)}
    return sorted(o for o in picked if 0 <= o < size)


def test_truncated_checkpoint_is_a_checkpoint_error(real, tmp_path):
    data = real.read_bytes()
    offsets = truncation_offsets(len(data))
    assert len(offsets) >= 35
    readers, failures = loaders(real), []
    for offset in offsets:
        path = tmp_path / f"cut-{offset}.npz"
        path.write_bytes(data[:offset])
        for name, loader in readers.items():
            try:
                loader(path)
            except CheckpointError as e:
                if str(path) not in str(e):
                    failures.append(f"cut at {offset}: {name}: does not name the file: {e}")
            except Exception as e:
                failures.append(f"cut at {offset}: {name}: {type(e).__name__}: {e}")
            else:
                failures.append(f"cut at {offset}: {name}: loaded without error")
    assert not failures, f"{len(failures)} of {len(offsets)} truncations:\n" + "\n".join(failures)


def test_truncated_checkpoint_through_the_cli(real, tmp_path, capsys):
    data = real.read_bytes()
    for offset in (0, 1, 4, 30, len(data) // 2, len(data) - 22, len(data) - 1):
        path = tmp_path / f"cut-{offset}.npz"
        path.write_bytes(data[:offset])
        assert_user_error(run(capsys, "inspect", path), path)


# ---------------------------------------------------------------------- byte flips


def flip_offsets(data: bytes, n: int = 200, seed: int = 1234) -> list[int]:
    """`n` seeded offsets, plus every byte of the zip structures numpy's reader trusts:
    the first member's local header, its central directory entry, the end record."""
    rng = random.Random(seed)
    picked = set(rng.sample(range(len(data)), n))
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        first = z.infolist()[0]
        local = 30 + len(first.filename.encode()) + len(first.extra)
        picked |= set(range(first.header_offset, first.header_offset + local))
    central = central_directory(data)
    picked |= set(range(central, central + 46)) | set(range(len(data) - 22, len(data)))
    return sorted(picked)


def test_flipped_byte_is_an_error_or_harmless(real, tmp_path):
    data = real.read_bytes()
    arrays, meta = checkpoint.load(real)
    params = {k: v for k, v in arrays.items() if k.startswith("params/")}
    want = {"checkpoint.load": (arrays, meta), "inference.load": (arrays, meta)}
    want["init_from"] = (params, None)
    offsets = flip_offsets(data)
    path = tmp_path / "flipped.npz"
    readers, failures, refused = loaders(real), [], 0
    for offset in offsets:
        damaged = bytearray(data)
        damaged[offset] ^= 0xFF
        path.write_bytes(bytes(damaged))
        for name, loader in readers.items():
            try:
                diff = compare_loaded(*loader(path), *want[name])
            except MlpcliError as e:
                refused += 1
                if e.exit_code != 2:
                    failures.append(f"offset {offset}: {name}: exit code {e.exit_code}: {e}")
            except Exception as e:
                failures.append(f"offset {offset}: {name}: {type(e).__name__}: {e}")
            else:
                if diff:
                    failures.append(f"offset {offset}: {name} loaded silently: {diff}")
    assert refused > 0
    assert not failures, f"{len(failures)} failures over {len(offsets)} offsets:\n" + "\n".join(
        failures
    )


# fields of the first central directory entry that zipfile refuses with NotImplementedError
CENTRAL_FIELDS = {"version-needed": 6, "flag-bits": 8, "compression-method": 10}


@pytest.mark.parametrize("damage", ["truncated", *CENTRAL_FIELDS])
def test_damaged_init_from_is_one_error_line(real, tmp_path, capsys, damage):
    data = bytearray(real.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    else:
        data[central_directory(data) + CENTRAL_FIELDS[damage]] ^= 0xFF
    path = tmp_path / "init.npz"
    path.write_bytes(bytes(data))
    cfg = write_config(tmp_path / "small.yaml", small_config())
    result = run(
        capsys,
        "train",
        cfg,
        "--logdir",
        tmp_path / "logs",
        "-q",
        "--set",
        f"model.init_from={path}",
    )
    assert_user_error(result, path)
    assert not (tmp_path / "logs").exists() or not any((tmp_path / "logs").iterdir())


# ---------------------------------------------------------------------- kill -9

KILL_ROUNDS = 15  # kills wanted
KILL_BUDGET_S = 10.0  # no new round starts after this
PARALLEL = 3  # trainings killed per round (their start-up dominates)


def kill_config(folder: Path) -> Path:
    layers = [{"units": 4, "activation": "tanh"}, {"units": 2, "activation": "softmax"}]
    return write_config(
        folder / "kill.yaml",
        small_config(
            model={"layers": layers},
            train={"epochs": 100000, "batch_size": 64},
            logging={"every_n_steps": 10},
            checkpoint={"every_n_epochs": 1, "keep_last": 2},
        ),
    )


def start_training(cfg: Path, logdir: Path, name: str) -> tuple[subprocess.Popen, Path]:
    log = logdir.parent / f"{name}.stderr"
    command = [sys.executable, "-m", "mlpcli", "train", str(cfg)]
    command += ["--logdir", str(logdir), "--name", name, "-q"]
    with open(log, "wb") as stderr:
        proc = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            cwd=cfg.parent,
            start_new_session=True,  # its own process group, killed whole
        )
    return proc, log


def kill_group(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def kill_round(cfg: Path, logdir: Path, names: list[str], rng: random.Random) -> list[Path]:
    """Start one training per name; SIGKILL each a random 0.05-0.4 s after its last.npz
    first appears. Returns their checkpoint folders."""
    procs = {name: start_training(cfg, logdir, name) for name in names}
    try:
        kill_at: dict[str, float] = {}
        deadline = time.monotonic() + 60
        while len(kill_at) < len(names) or any(p.poll() is None for p, _ in procs.values()):
            now = time.monotonic()
            assert now < deadline, "training never wrote last.npz"
            for name, (proc, log) in procs.items():
                if proc.poll() is not None:
                    assert name in kill_at, f"{name} exited {proc.returncode}: {log.read_text()}"
                    continue
                if name not in kill_at:
                    if (logdir / name / "checkpoints" / "last.npz").exists():
                        kill_at[name] = now + rng.uniform(0.05, 0.4)
                elif now >= kill_at[name]:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)
            time.sleep(0.005)
    finally:
        for proc, _ in procs.values():
            kill_group(proc)
    for proc, log in procs.values():
        assert proc.returncode == -signal.SIGKILL, log.read_text()
    return [logdir / name / "checkpoints" for name in names]


def assert_all_load(folder: Path) -> int:
    """Every checkpoint in `folder` loads; returns last.npz's epoch."""
    for path in sorted(folder.glob("*.npz")):
        checkpoint.load(path)
    return checkpoint.load(folder / "last.npz")[1]["epoch"]


def test_kill_9_during_training_leaves_checkpoints_that_load_and_resume(tmp_path, capsys):
    cfg = kill_config(tmp_path)
    logdir = tmp_path / "logs"
    rng = random.Random(99)
    started = time.monotonic()
    folders: list[Path] = []
    while len(folders) < KILL_ROUNDS and time.monotonic() - started < KILL_BUDGET_S:
        names = [f"r{len(folders) + i:02d}" for i in range(PARALLEL)]
        for folder in kill_round(cfg, logdir, names, rng):
            folders.append(folder)
            epoch = assert_all_load(folder)
            assert epoch >= 1
            # leftovers of a save cut short, made by hand: truncated, empty, garbage
            last = (folder / "last.npz").read_bytes()
            (folder / ".last.npz.123.abcd1234.tmp").write_bytes(last[: len(last) // 2])
            (folder / ".best.npz.123.abcd1234.tmp").write_bytes(b"")
            (folder / f".epoch-{epoch + 1:04d}.npz.1.00000000.tmp").write_bytes(b"PK\x03\x04")
            leftovers = sorted(folder.glob(".*.tmp"))

            result = run(capsys, "resume", folder / "last.npz", "--epochs", epoch + 1, "-q")
            assert result[0] == 0, result
            assert assert_all_load(folder) == epoch + 1
            assert (folder / f"epoch-{epoch + 1:04d}.npz").exists()
            # the leftovers are never taken for checkpoints, nor break a later resume
            assert not [p for p in folder.glob("*.npz") if p.name.startswith(".")]
            assert set(folder.glob(".*.tmp")) <= set(leftovers)
    assert len(folders) >= 4, f"only {len(folders)} kills in {KILL_BUDGET_S} s"

    last = folders[-1] / "last.npz"
    epoch = checkpoint.load(last)[1]["epoch"]
    (folders[-1] / ".last.npz.7.deadbeef.tmp").write_bytes(b"\0" * 100)
    result = run(capsys, "resume", last, "--epochs", epoch + 2, "-q")
    assert result[0] == 0, result
    assert assert_all_load(folders[-1]) == epoch + 2


# ---------------------------------------------------------------------- last: the control


def test_the_pickle_payload_would_run(real, tmp_path):
    """Control, run last in its own folder: with pickles allowed, numpy does run the payload,
    so the tests above that find no marker mean something."""
    folder = tmp_path / "control"
    folder.mkdir()
    for case, path in write_pickled(folder, folder / "marker", real).items():
        marker = folder / "marker"
        assert not marker.exists()
        with np.load(path, allow_pickle=True) as npz:
            npz["evil" if case == "pickled-extra" else "meta"]
        assert marker.exists(), case
        marker.unlink()
