"""Exact resume: straight vs stopped-and-resumed runs, compared bit for bit."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import REPO, cli, load_last, small_config, write_config

from mlpcli import checkpoint
from mlpcli.config import load_config
from mlpcli.data import prepare
from mlpcli.errors import Interrupted
from mlpcli.report import QuietReporter
from mlpcli.runs import resume, run_folder
from mlpcli.train import Run

# Shuffling, dropout, Adam, a schedule with warmup and early stopping, all in play.
TRAIN = {
    "epochs": 6,
    "batch_size": 32,
    "shuffle": True,
    "early_stopping": {"monitor": "val/loss", "patience": 3},
}


def _config(tmp_path, **changes):
    return write_config(tmp_path / "c.yaml", small_config(train=TRAIN, **changes))


def _assert_same_state(a_run, b_run):
    a, meta_a = load_last(a_run)
    b, meta_b = load_last(b_run)
    assert a.keys() == b.keys()
    for key in a:
        assert np.array_equal(a[key], b[key]), key
    assert (meta_a["epoch"], meta_a["step"]) == (meta_b["epoch"], meta_b["step"])
    assert meta_a["metrics"] == meta_b["metrics"]
    assert meta_a["progress"] == meta_b["progress"]


def _scalars(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run))
    acc.Reload()
    tags = set(acc.Tags()["scalars"]) - {"vitals/samples_per_sec"}  # wall-clock: differs
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in tags}


def test_resume_from_an_epoch_checkpoint_is_bit_exact(tmp_path, capsys):
    config = _config(tmp_path)
    logs = tmp_path / "logs"
    assert cli(capsys, "train", config, "--logdir", logs, "--name", "straight", "-q")[0] == 0
    # stop after epoch 2 of the same 6-epoch schedule, then go on
    code, _, err = cli(
        capsys,
        "train",
        config,
        "--logdir",
        logs,
        "--name",
        "split",
        "-q",
        "--epochs",
        "2",
        "--set",
        "schedule.epochs=6",
    )
    assert code == 0, err
    code, _, err = cli(
        capsys, "resume", logs / "split" / "checkpoints" / "epoch-0002.npz", "--epochs", "6", "-q"
    )
    assert code == 0, err
    _assert_same_state(logs / "straight", logs / "split")
    # TensorBoard: every tag shows each step once, with the straight run's values
    assert _scalars(logs / "split") == _scalars(logs / "straight")


class _Stopper(QuietReporter):
    """Sends the process a signal when the run reaches a given step."""

    def __init__(self, at_step, signum=signal.SIGINT, twice=False):
        super().__init__()
        self.at_step, self.signum, self.twice = at_step, signum, twice

    def step(self, run, batch):
        if run.progress.step == self.at_step:
            os.kill(os.getpid(), self.signum)
            if self.twice:
                os.kill(os.getpid(), self.signum)  # a second Ctrl-C changes nothing

    def finish(self, run):
        pass


@pytest.mark.parametrize(
    "signum, code, at_step",
    [(signal.SIGINT, 130, 11), (signal.SIGTERM, 143, 20), (signal.SIGINT, 130, 16)],
)
def test_stop_by_signal_mid_epoch_then_resume_is_bit_exact(tmp_path, capsys, signum, code, at_step):
    config_path = _config(tmp_path)
    logs = tmp_path / "logs"
    assert cli(capsys, "train", config_path, "--logdir", logs, "--name", "straight", "-q")[0] == 0

    config = load_config(config_path, options={"logging.logdir": ("--logdir", str(logs))})
    run = Run(config, prepare(config, "c.yaml"), _Stopper(at_step, signum, twice=True))
    with pytest.raises(Interrupted) as stopped:
        run.fit(run_folder(config, "stopped"))
    assert stopped.value.exit_code == code
    _, meta = load_last(logs / "stopped")
    assert meta["step"] == at_step  # stopped right after the step it was in
    steps_per_epoch = 8  # 240 training samples, batch 32
    assert meta["progress"]["batch"] == at_step % steps_per_epoch  # mid-epoch (or at its end)
    resume(logs / "stopped" / "checkpoints" / "last.npz", QuietReporter())
    _assert_same_state(logs / "straight", logs / "stopped")
    assert _scalars(logs / "stopped") == _scalars(logs / "straight")


def test_sigint_in_a_real_process_exits_130_and_resumes_exactly(tmp_path, capsys):
    data = {
        "source": "synthetic",
        "options": {"n_samples": 20000, "n_features": 20},
        "val_split": 0.1,
    }
    model = {
        "layers": [
            {"units": 32, "activation": "relu", "dropout": 0.2},
            {"units": 10, "activation": "softmax"},
        ]
    }
    train = {"epochs": 3, "batch_size": 16}
    config = write_config(tmp_path / "c.yaml", small_config(data=data, model=model, train=train))
    logs = tmp_path / "logs"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlpcli",
            "train",
            str(config),
            "--logdir",
            str(logs),
            "--name",
            "stopped",
            "-q",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = logs / "stopped" / "checkpoints" / "epoch-0001.npz"
        deadline = time.monotonic() + 60
        while not first.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert err.startswith("error: ") and "resume" in err and len(err.splitlines()) == 1
    assert "Traceback" not in out + err
    code, _, err = cli(capsys, "resume", logs / "stopped" / "checkpoints" / "last.npz", "-q")
    assert code == 0, err
    assert cli(capsys, "train", config, "--logdir", logs, "--name", "straight", "-q")[0] == 0
    _assert_same_state(logs / "straight", logs / "stopped")


def test_a_second_signal_while_saving_changes_nothing(tmp_path, monkeypatch):
    config = load_config(_config(tmp_path), options={"logging.logdir": ("--logdir", str(tmp_path))})
    real = checkpoint.save_many

    def save_with_signals(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # arrives while the checkpoint is being saved
        real(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(checkpoint, "save_many", save_with_signals)
    run = Run(config, prepare(config, "c.yaml"), QuietReporter())
    with pytest.raises(Interrupted):
        run.fit(run_folder(config, "r"))
    arrays, meta = checkpoint.load(tmp_path / "r" / "checkpoints" / "last.npz")
    assert meta["epoch"] == 1 and meta["progress"]["batch"] == 0  # stopped after epoch 1
    assert not list((tmp_path / "r" / "checkpoints").glob(".*.tmp"))


def test_resume_refuses_changes_to_the_model_and_data(tmp_path, capsys):
    config = _config(tmp_path)
    logs = tmp_path / "logs"
    assert (
        cli(capsys, "train", config, "--logdir", logs, "--name", "r", "-q", "--epochs", "1")[0] == 0
    )
    last = logs / "r" / "checkpoints" / "last.npz"
    before = last.read_bytes()
    for key, value in [
        ("model.layers.0.units", "4"),
        ("model.layers.0.activation", "relu"),
        ("seed", "3"),
        ("data.options.n_samples", "100"),
        ("optimizer.name", "sgd"),
        ("train.batch_size", "8"),
        ("dtype", "float64"),
    ]:
        code, out, err = cli(capsys, "resume", last, "--epochs", "3", "--set", f"{key}={value}")
        assert code == 2, (key, err)
        assert err.startswith(f"error: --set {key}") and "cannot change" in err, err
        assert len(err.splitlines()) == 1 and "Traceback" not in out + err
    code, _, err = cli(capsys, "resume", last, "--epochs", "1")
    assert code == 2 and "--epochs" in err and "1 epochs done" in err
    code, _, err = cli(capsys, "resume", last)
    assert code == 2 and "train.epochs" in err
    assert last.read_bytes() == before  # refused resumes touch nothing
    # what does not change the model is fine
    code, _, err = cli(
        capsys,
        "resume",
        last,
        "--epochs",
        "2",
        "-q",
        "--set",
        "optimizer.lr=0.001",
        "--set",
        "logging.every_n_steps=2",
    )
    assert code == 0, err
    _, meta = load_last(logs / "r")
    assert meta["epoch"] == 2 and meta["config"]["optimizer"]["lr"] == 0.001


def test_resume_needs_the_same_data(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    np.savez("d.npz", x=rng.normal(size=(100, 2)), y=rng.integers(0, 2, 100))
    data = {"source": "d.npz"}
    config = write_config(tmp_path / "c.yaml", small_config(data=data))
    assert cli(capsys, "train", config, "--logdir", "logs", "--name", "r", "-q")[0] == 0
    np.savez("d.npz", x=rng.normal(size=(100, 2)), y=rng.integers(0, 2, 100))
    code, _, err = cli(capsys, "resume", "logs/r/checkpoints/last.npz", "--epochs", "5")
    assert code == 2 and "not the data this checkpoint was trained on" in err


def test_resume_needs_a_run_folder(tmp_path, capsys):
    config = _config(tmp_path)
    assert (
        cli(
            capsys,
            "train",
            config,
            "--logdir",
            tmp_path / "logs",
            "--name",
            "r",
            "-q",
            "--epochs",
            "1",
        )[0]
        == 0
    )
    loose = tmp_path / "loose.npz"
    loose.write_bytes((tmp_path / "logs" / "r" / "checkpoints" / "last.npz").read_bytes())
    code, _, err = cli(capsys, "resume", loose, "--epochs", "3")
    assert code == 2 and "checkpoints/" in err
