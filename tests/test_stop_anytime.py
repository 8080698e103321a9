"""A stop at any moment (SPEC, Exit codes): SIGTERM, or two quick SIGINTs, at any point of
`mlpcli train` from the instant its handlers exist — loading data, creating the run
folder, the first step, saving, teardown — ends with 130 / 143 (or 0 when training had
already finished), one `error:` line and no traceback, and leaves either no run folder or
a resumable one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from helpers import REPO, small_config, write_config


def _catches_sigterm(pid: int) -> bool:
    """Whether process `pid` has a handler for SIGTERM (its SigCgt mask in /proc)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    except OSError:
        pass
    return False


def _train(tmp_path, signals: list[int], delay: float) -> tuple[subprocess.CompletedProcess, str]:
    config = small_config(
        data={"source": "synthetic", "options": {"n_samples": 40000, "n_features": 20}},
        model={"layers": [{"units": 32}, {"units": 10}]},
        train={"epochs": 2, "batch_size": 128},
        schedule=None,
    )
    write_config(tmp_path / "c.yaml", config)
    args = [sys.executable, "-m", "mlpcli", "train", str(tmp_path / "c.yaml")]
    args += ["--logdir", str(tmp_path / "logs"), "--name", "r", "-q"]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while not _catches_sigterm(proc.pid) and proc.poll() is None:
        assert time.monotonic() < deadline, "the handlers never appeared"
        time.sleep(0.002)
    # the handlers are in place before anything is written
    assert not (tmp_path / "logs").exists(), "a run folder was made before the handlers"
    time.sleep(delay)
    for signum in signals:
        if proc.poll() is None:
            proc.send_signal(signum)
        time.sleep(0.02)
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(args, proc.returncode, out, err), err.decode()


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.15, 0.3, 0.5, 1.0])
@pytest.mark.parametrize("kind", ["sigterm", "two-sigints"])
def test_a_stop_at_any_moment_leaves_no_folder_or_a_resumable_one(tmp_path, kind, delay):
    signals = [signal.SIGTERM] if kind == "sigterm" else [signal.SIGINT, signal.SIGINT]
    proc, err = _train(tmp_path, signals, delay)
    expected = 143 if kind == "sigterm" else 130
    assert "Traceback" not in err, err
    assert proc.returncode in (0, expected), (proc.returncode, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == (proc.returncode != 0), lines
    run = tmp_path / "logs" / "r"
    if proc.returncode == 0:  # finished before the signal came
        assert (run / "checkpoints" / "last.npz").exists()
        return
    assert lines[0].startswith("error: stopped by"), lines
    if not run.exists():
        assert "nothing was written" in lines[0]
        return
    assert (run / "checkpoints" / "last.npz").exists(), sorted(os.listdir(run))
    resumed = subprocess.run(
        [sys.executable, "-m", "mlpcli", "resume", str(run), "-q"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert resumed.returncode == 0, resumed.stderr
