"""Data parallelism over MPI, end to end: `mpiexec -n 2 mlpcli ...` in subprocesses.

Every launch has a timeout and, should it run out, the whole process tree (mpiexec, its
proxy and the ranks, which Hydra puts in sessions of their own) is killed, so a hung job
fails its test instead of hanging CI.
"""

import contextlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO, load_last, only_run, small_config, write_config

from mlpcli import checkpoint

MPIEXEC = Path(sys.executable).parent / "mpiexec"  # the launcher of the venv's MPICH wheel
if importlib.util.find_spec("mpi4py") is None:  # found, not imported: MPI stays uninitialized
    pytest.skip('mpi4py is not installed (pip install -e ".[mpi]")', allow_module_level=True)
if not os.access(MPIEXEC, os.X_OK):
    pytest.skip(f"no MPI launcher at {MPIEXEC} (the mpich wheel)", allow_module_level=True)

TIMEOUT = 60  # seconds any one launch may take; each takes one to a few
# Variables of an MPI launcher: a test's own runs must not look launched by one.
LAUNCHER_PREFIXES = ("PMI_", "PMIX_", "OMPI_", "MPI_LOCALNRANKS", "HYDRA_", "I_MPI_")

# 320 samples, 64 for validation: 256 training rows, which a global batch of 17 (odd) cuts
# into 15 batches and a last one of 1 row, so one process's shard of it is empty.
TINY = {
    "dtype": "float64",
    "data": {"source": "triangle", "options": {"n_samples": 320}, "val_split": 0.2},
    "optimizer": {"name": "adam", "lr": 0.01},
    "schedule": {"name": "cosine", "warmup_epochs": 1, "epochs": 4},
    "train": {"epochs": 4, "batch_size": 17, "shuffle": True},
}
# About 0.7 s an epoch on 2 processes: long enough to be stopped mid-epoch.
LONG = {
    "dtype": "float64",
    "data": {
        "source": "synthetic",
        "options": {"n_samples": 60000, "n_features": 20},
        "val_split": 0.1,
    },
    "model": {
        "layers": [
            {"units": 32, "activation": "relu", "dropout": 0.2},
            {"units": 10, "activation": "softmax"},
        ]
    },
    "train": {"epochs": 2, "batch_size": 16, "shuffle": True},
    # few logging steps: few moments where a stop request can fall between two processes'
    # stop checks (see test_a_stop_request_..._still_stops_the_job)
    "logging": {"every_n_steps": 500},
}
LONG_STEPS = 3375  # an epoch: 54 000 training samples, batch 16


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(LAUNCHER_PREFIXES)}
    # 2 processes share the 2 cores of CI: one BLAS thread each
    env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def _command(args, procs: int, python_args=("-m", "mlpcli")) -> list[str]:
    command = [sys.executable, *python_args, *map(str, args)]
    return [str(MPIEXEC), "-n", str(procs), *command] if procs > 1 else command


def _start(*args, procs: int = 2, python_args=("-m", "mlpcli")) -> subprocess.Popen:
    return subprocess.Popen(
        _command(args, procs, python_args),
        cwd=REPO,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(process: subprocess.Popen, timeout: float = TIMEOUT) -> tuple[int, str, str]:
    """Wait for a launch: (exit code, stdout, stderr); past the timeout, kill it and fail."""
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_job(process)
        out, err = process.communicate()
        pytest.fail(f"still running after {timeout} s, killed; stderr:\n{err}")
    return process.returncode, out, err


def mlpcli(*args, procs: int = 2, timeout: float = TIMEOUT) -> tuple[int, str, str]:
    """`mpiexec -n PROCS python -m mlpcli ARGS` (no mpiexec for 1): (code, stdout, stderr)."""
    return _finish(_start(*args, procs=procs), timeout)


def _children() -> dict[int, list[int]]:
    """Every process's children, from /proc."""
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # gone meanwhile
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])  # after "(comm) state"
            tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _descendants(pid: int) -> list[int]:
    tree, found, todo = _children(), [], [pid]
    while todo:
        kids = tree.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def _kill_job(process: subprocess.Popen) -> None:
    """Kill the ranks, so that Hydra reaps them and ends; then whatever is left."""
    tree = _children()
    family = _descendants(process.pid)
    for pid in [p for p in family if p not in tree] or [process.pid]:  # the leaves
        with contextlib.suppress(ProcessLookupError):  # gone meanwhile
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)
    for pid in [process.pid, *family]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _ranks(mpiexec: int) -> dict[int, int]:
    """{MPI rank: pid} of a job's processes (Hydra starts them with PMI_RANK set)."""
    ranks = {}
    for pid in _descendants(mpiexec):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for item in env:
            if item.startswith(b"PMI_RANK="):
                ranks[int(item.split(b"=")[1])] = pid
    return ranks


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            _kill_job(process)
            _, err = process.communicate()
            pytest.fail(f"{path} never appeared (exit code {process.returncode}): {err}")
        time.sleep(0.01)


def _config(tmp_path: Path, base: dict, **changes) -> Path:
    return write_config(tmp_path / "c.yaml", small_config(**{**base, **changes}))


def _assert_close(run_a: Path, run_b: Path, exact: bool = False) -> None:
    """Same checkpoint keys, epoch, step and trainer state; arrays within 1e-10 relative
    (or bit for bit), as are the metrics."""
    a, meta_a = load_last(run_a)
    b, meta_b = load_last(run_b)
    assert a.keys() == b.keys()
    for key in a:
        if exact or a[key].dtype.kind != "f":
            assert np.array_equal(a[key], b[key]), key
        else:
            np.testing.assert_allclose(b[key], a[key], rtol=1e-10, atol=1e-13, err_msg=key)
    assert (meta_a["epoch"], meta_a["step"]) == (meta_b["epoch"], meta_b["step"])
    pa, pb = meta_a["progress"], meta_b["progress"]
    assert pb == (pa if exact else _approx(pa))


def _approx(value):
    """`value` with its floats, also nested in dicts, compared to 1e-10 relative."""
    if isinstance(value, dict):
        return {k: _approx(v) for k, v in value.items()}
    return pytest.approx(value, rel=1e-10, abs=1e-13) if isinstance(value, float) else value


def _scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run))
    acc.Reload()
    tags = set(acc.Tags()["scalars"]) - {"vitals/samples_per_sec"}  # wall-clock: differs
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in tags}


def _assert_same_scalars(run_a: Path, run_b: Path, exact: bool = False) -> None:
    """Each tag shows the same steps, each once, with values within 1e-10 relative."""
    a, b = _scalars(run_a), _scalars(run_b)
    assert a.keys() == b.keys()
    for tag in a:
        steps = [step for step, _ in b[tag]]
        assert len(steps) == len(set(steps)), f"{tag}: a step logged twice: {steps}"
        assert steps == [step for step, _ in a[tag]], tag
        values_a, values_b = [v for _, v in a[tag]], [v for _, v in b[tag]]
        # TensorBoard stores scalars as float32
        assert values_b == (values_a if exact else pytest.approx(values_a, rel=1e-6)), tag


def _checkpoint_files(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").iterdir())


# ---------------------------------------------------------------- same result as 1 process


def test_two_processes_train_as_one_to_1e_10(tmp_path):
    config = _config(tmp_path, TINY)
    code, out, err = mlpcli("train", config, "--logdir", tmp_path / "one", "-q", procs=1)
    assert code == 0, err
    code, out, err = mlpcli("train", config, "--logdir", tmp_path / "two", "--name", "r", "-q")
    assert code == 0, err
    assert "Traceback" not in err
    one, two = only_run(tmp_path / "one"), only_run(tmp_path / "two")  # no second run folder
    assert out.splitlines() == [str(two)]  # the first process alone speaks

    _assert_close(one, two)
    _, meta = load_last(two)
    assert (meta["epoch"], meta["step"]) == (4, 4 * 16)  # 15 batches of 17, one of 1
    # rank 0 alone writes the log and the checkpoints: one set of each
    assert _checkpoint_files(two) == _checkpoint_files(one)
    assert len(list(two.glob("events.out.tfevents.*"))) == 1
    assert len(list(two.rglob("events.out.tfevents.*"))) == len(
        list(one.rglob("events.out.tfevents.*"))
    )
    _assert_same_scalars(one, two)


@pytest.mark.parametrize("class_weight", ["balanced", {1: 4.0}])
def test_class_weights_under_two_processes_train_as_one(tmp_path, class_weight):
    """Each shard's weighted loss is normalized by the Σ w of the global batch (its empty
    shard too), so the sum over the processes is the weighted mean of the whole batch."""
    train = {**TINY["train"], "class_weight": class_weight}
    config = _config(tmp_path, TINY, train=train)
    code, _, err = mlpcli("train", config, "--logdir", tmp_path / "one", "-q", procs=1)
    assert code == 0, err
    code, _, err = mlpcli("train", config, "--logdir", tmp_path / "two", "-q")
    assert code == 0, err
    one, two = only_run(tmp_path / "one"), only_run(tmp_path / "two")
    _assert_close(one, two)
    _assert_same_scalars(one, two)
    a, _ = load_last(one)
    assert a["data/class_weight"].shape == (2,) and (a["data/class_weight"] != 1).any()


# ---------------------------------------------------------------- failures end the job


@pytest.mark.parametrize("rank", [0, 1])
def test_a_killed_process_ends_the_job_promptly(tmp_path, rank):
    """Killed mid-run, either process leaves the other waiting in an Allreduce: Hydra must
    end the job; rank 0 may be killed while it writes a checkpoint, which stays whole."""
    config = _config(tmp_path, LONG)
    process = _start("train", config, "--logdir", tmp_path, "--name", "r", "-q")
    _wait_for(tmp_path / "r" / "checkpoints" / "epoch-0001.npz", process)
    ranks = _ranks(process.pid)
    assert sorted(ranks) == [0, 1], ranks
    os.kill(ranks[rank], signal.SIGKILL)
    killed = time.monotonic()
    code, _, _ = _finish(process, timeout=30)
    assert code != 0
    assert time.monotonic() - killed < 30
    assert not [pid for pid in ranks.values() if _running(pid)]  # nothing of the job is left
    _, meta = checkpoint.load(tmp_path / "r" / "checkpoints" / "last.npz")
    assert meta["epoch"] >= 1


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error: ")]


def _bad_config(tmp_path: Path) -> Path:
    return write_config(tmp_path / "bad.yaml", {**small_config(), "bogus": 1})


def _taken_name(tmp_path: Path) -> Path:
    """A run folder that exists and is not empty: only rank 0, which creates the folder
    while rank 1 waits for its name, meets that error."""
    (tmp_path / "r").mkdir(exist_ok=True)
    (tmp_path / "r" / "keep.txt").write_text("mine")
    return _config(tmp_path, TINY)


def test_a_config_error_under_mpi_exits_2_at_once(tmp_path):
    started = time.monotonic()
    code, out, err = mlpcli("train", _bad_config(tmp_path), "--logdir", tmp_path, timeout=30)
    assert code == 2
    assert time.monotonic() - started < 30
    assert all("bogus: unknown key" in line for line in _error_lines(err)), err
    assert len(_error_lines(err)) <= 1  # the first process alone speaks
    assert "Traceback" not in out + err
    assert [p.name for p in tmp_path.iterdir()] == ["bad.yaml"]  # no run folder


def test_an_error_in_the_first_process_alone_ends_the_job(tmp_path):
    config = _taken_name(tmp_path)
    started = time.monotonic()
    code, out, err = mlpcli("train", config, "--logdir", tmp_path, "--name", "r", timeout=30)
    assert code == 2
    assert time.monotonic() - started < 30
    assert all("already exists" in line for line in _error_lines(err)), err
    assert len(_error_lines(err)) <= 1
    assert "Traceback" not in out + err
    assert [p.name for p in (tmp_path / "r").iterdir()] == ["keep.txt"]


# The first process is the slower one to meet an error that every process meets (it read
# its data later, say): the other fails first.
_SLOW_FIRST_PROCESS = """
import sys, time
from mlpcli.distributed import world

if world().rank == 0:
    time.sleep(0.5)
from mlpcli.cli import main

main(sys.argv[1:])
"""


def test_an_error_every_process_meets_is_printed_when_another_fails_first(tmp_path):
    config = _bad_config(tmp_path)
    process = _start("train", config, "--logdir", tmp_path, python_args=("-c", _SLOW_FIRST_PROCESS))
    code, out, err = _finish(process, timeout=30)
    assert code == 2
    assert len(_error_lines(err)) == 1 and "bogus: unknown key" in err, err
    assert "Traceback" not in out + err


# ---------------------------------------------------------------- resume


def test_resume_under_mpi_and_on_one_process(tmp_path):
    config = _config(tmp_path, TINY)
    logs = tmp_path / "logs"
    code, _, err = mlpcli("train", config, "--logdir", logs, "--name", "straight", "-q")
    assert code == 0, err
    code, out, err = mlpcli("train", config, "--logdir", logs, "--name", "split", "--epochs", "2")
    assert code == 0, err
    assert "2 MPI processes" in out  # the header names the job
    shutil.copytree(logs / "split", logs / "split-on-1")

    last = logs / "split" / "checkpoints" / "last.npz"
    code, _, err = mlpcli("resume", last, "--epochs", "4", "-q")
    assert code == 0, err
    # the same 2 processes: the same sums in the same order, so the same bits
    _assert_close(logs / "straight", logs / "split", exact=True)
    _assert_same_scalars(logs / "straight", logs / "split", exact=True)

    last = logs / "split-on-1" / "checkpoints" / "last.npz"
    code, _, err = mlpcli("resume", last, "--epochs", "4", "-q", procs=1)
    assert code == 0, err
    _assert_close(logs / "straight", logs / "split-on-1")
    _assert_same_scalars(logs / "straight", logs / "split-on-1")


# ---------------------------------------------------------------- signals


def test_sigint_to_mpiexec_stops_every_process_and_resumes_exactly(tmp_path):
    """Hydra forwards a first Ctrl-C (SIGINT) to the processes; they agree on a step, rank
    0 saves it, and every process exits 130, which mpiexec returns."""
    config = _config(tmp_path, LONG)
    process = _start("train", config, "--logdir", tmp_path, "--name", "stopped", "-q")
    _wait_for(tmp_path / "stopped" / "checkpoints" / "epoch-0001.npz", process)
    time.sleep(0.25)  # well into epoch 2, away from its first and last steps
    process.send_signal(signal.SIGINT)
    code, out, err = _finish(process, timeout=30)
    assert code == 130, out + err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "stopped by SIGINT" in errors[0] and "resume" in errors[0], err
    assert "Traceback" not in out + err
    _, meta = load_last(tmp_path / "stopped")
    assert meta["epoch"] == 1 and 0 < meta["progress"]["batch"] < LONG_STEPS  # mid-epoch
    assert meta["step"] == LONG_STEPS + meta["progress"]["batch"]
    assert meta["step"] % LONG["logging"]["every_n_steps"] == 0  # at a logging step

    last = tmp_path / "stopped" / "checkpoints" / "last.npz"
    code, _, err = mlpcli("resume", last, "-q")
    assert code == 0, err
    code, _, err = mlpcli("train", config, "--logdir", tmp_path, "--name", "straight", "-q")
    assert code == 0, err
    _assert_close(tmp_path / "straight", tmp_path / "stopped", exact=True)
    _assert_same_scalars(tmp_path / "straight", tmp_path / "stopped", exact=True)


# Ctrl-C reaches both processes while rank 0 is still saving epoch 1's checkpoint and rank
# 1, which saves nothing, already waits in epoch 2's first Allreduce.
_SIGINT_WHILE_SAVING = """
import os, signal, sys, time
import mlpcli.report
from mlpcli.cli import main
from mlpcli.distributed import world

pids = world().comm.allgather(os.getpid())

class Late(mlpcli.report.QuietReporter):
    def epoch_end(self, run, metrics):  # rank 0: after its checkpoint, before its stop check
        if world().rank == 0 and run.progress.epoch == 1:
            time.sleep(0.2)  # rank 1 is blocked in the next step's Allreduce by now
            for pid in reversed(pids):
                os.kill(pid, signal.SIGINT)

mlpcli.report.reporter_for = lambda quiet: Late()
main(sys.argv[1:])
"""


def test_a_stop_request_between_two_processes_stop_checks_still_stops_the_job(tmp_path):
    config = _config(tmp_path, TINY, logging={"every_n_steps": 3})
    process = _start(
        "train",
        config,
        "--logdir",
        tmp_path,
        "--name",
        "r",
        python_args=("-c", _SIGINT_WHILE_SAVING),
    )
    code, _, err = _finish(process, timeout=8)  # about a second when it works
    assert code == 130, err
    _, meta = load_last(tmp_path / "r")
    assert meta["step"] == 18  # the first logging step both see it at (epochs of 16 steps)


# ---------------------------------------------------------------- no launcher, no MPI


def test_without_a_launcher_there_is_one_process_and_no_mpi4py(tmp_path):
    config = _config(tmp_path, TINY, train={**TINY["train"], "epochs": 1})
    code = (
        "import sys\n"
        "from mlpcli.cli import main\n"
        "from mlpcli.distributed import world\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "w = world()\n"
        "print(type(w).__name__, w.size, w.rank, 'mpi4py' in sys.modules)"
    )
    process = _start("train", config, "--logdir", tmp_path, "-q", procs=1, python_args=("-c", code))
    status, out, err = _finish(process)
    assert status == 0, err
    assert out.splitlines()[-1] == "Single 1 0 False"


def test_tabular_csv_under_mpi_equals_one_process(tmp_path):
    """Every process fits the same encoding (categories, fills) on the same training rows."""
    rng = np.random.default_rng(0)
    rows = ["a,island,b,target"]
    for i in range(120):
        a = "" if i % 7 == 0 else f"{rng.normal():.4f}"
        island = ["Biscoe", "Dream", "Torgersen", ""][i % 4]
        rows.append(f"{a},{island},{rng.normal():.4f},{'xy'[i % 3 == 0]}")
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    data = {"source": str(tmp_path / "t.csv"), "missing": "mean", "val_split": 0.25}
    config = _config(tmp_path, TINY, data=data)
    code, _, err = mlpcli("train", config, "--logdir", tmp_path / "one", "-q", procs=1)
    assert code == 0, err
    code, _, err = mlpcli("train", config, "--logdir", tmp_path / "two", "-q")
    assert code == 0, err
    one, two = only_run(tmp_path / "one"), only_run(tmp_path / "two")
    _assert_close(one, two)
    arrays, _ = load_last(two)
    assert arrays["data/categories/1"].tolist() == ["", "Biscoe", "Dream", "Torgersen"]
