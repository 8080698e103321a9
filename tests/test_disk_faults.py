"""File-system faults while training (a full disk, a read-only folder): one `error:` line
naming the path, exit 2, no traceback, no hang, and every checkpoint saved before still
loads."""

from __future__ import annotations

import errno
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from helpers import REPO, cli, small_config, user_error, write_config

from mlpcli import checkpoint


@pytest.fixture
def config(tmp_path):
    return write_config(tmp_path / "c.yaml", small_config(train={"epochs": 3, "batch_size": 32}))


def test_a_full_disk_while_saving_a_checkpoint(tmp_path, capsys, monkeypatch, config):
    real = np.savez
    calls = {"n": 0}

    def savez(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the second epoch's checkpoint
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(np, "savez", savez)
    result = cli(capsys, "train", config, "--logdir", tmp_path / "logs", "--name", "r", "-q")
    folder = tmp_path / "logs" / "r" / "checkpoints"
    user_error(result, str(folder), "No space left on device")
    _, meta = checkpoint.load(folder / "last.npz")  # the first epoch's, whole
    assert meta["epoch"] == 1
    assert not list(folder.glob(".*.tmp"))


_WRITER_FAILS = """
import errno, sys
from tensorboardX import record_writer
from mlpcli.cli import main
real, count = record_writer.RecordWriter.write, [0]
def write(self, data):
    count[0] += 1
    if count[0] > 40:
        raise OSError(errno.EROFS, "Read-only file system")
    return real(self, data)
record_writer.RecordWriter.write = write
main(sys.argv[1:])
"""


def test_the_event_writer_thread_failing_is_one_line_not_a_hang(tmp_path, config):
    args = [sys.executable, "-c", textwrap.dedent(_WRITER_FAILS), "train", str(config)]
    args += ["--logdir", str(tmp_path / "logs"), "--name", "r", "-q"]
    args += ["--set", "logging.every_n_steps=1", "--set", "train.epochs=30"]
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=120)
    user_error((proc.returncode, proc.stdout, proc.stderr), str(tmp_path / "logs" / "r"))
    assert "Read-only file system" in proc.stderr
    for path in (tmp_path / "logs" / "r" / "checkpoints").glob("*.npz"):
        checkpoint.load(path)


def test_a_real_full_file_system(tmp_path, config):
    """On a 256 KiB tmpfs, where this machine lets us mount one."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], capture_output=True
    )
    if mount.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        args = [sys.executable, "-m", "mlpcli", "train", str(config), "--logdir", str(disk)]
        args += ["--name", "r", "-q", "--set", "logging.every_n_steps=1"]
        args += ["--set", "logging.histograms=true", "--set", "train.epochs=400"]
        proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=120)
        user_error((proc.returncode, proc.stdout, proc.stderr), str(disk / "r"), "No space left")
        for path in (disk / "r" / "checkpoints").glob("*.npz"):
            checkpoint.load(path)
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)
