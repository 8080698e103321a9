"""Containment (SPEC, Run folder): run names are one plain folder name, nothing is written
outside the run folder but the one `--output` file, that file is never an input nor inside
a run folder, links are not followed out of a run folder, and one process trains a run
folder at a time. Each case: exit 2, one `error:` line, and no file anywhere changed."""

from __future__ import annotations

import os

import numpy as np
import pytest
from helpers import cli, small_config, snapshot, user_error, write_config

from mlpcli.paths import RunLock


@pytest.fixture
def ws(tmp_path, monkeypatch):
    """A workspace that is also the working directory: a config and a 2-epoch run r."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "logs").mkdir()
    write_config(tmp_path / "c.yaml", small_config(train={"epochs": 2, "batch_size": 64}))
    return tmp_path


def _train_r(ws, capsys):
    args = ("train", "c.yaml", "--logdir", "logs", "--name", "r", "-q")
    assert cli(capsys, *args)[0] == 0
    np.save(ws / "x.npy", np.array([[0.1, 0.2], [0.5, -0.4]]))
    return ws / "logs" / "r"


@pytest.mark.parametrize(
    "name", ["", ".", "..", "../escape", "a/b", "/tmp/absolute", "tab\there", "x" * 300]
)
def test_a_run_name_is_one_plain_folder_name(ws, capsys, name):
    before = snapshot(ws)
    user_error(cli(capsys, "train", "c.yaml", "--logdir", "logs", "--name", name), "--name")
    assert snapshot(ws) == before
    assert not os.path.exists("/tmp/absolute") or name != "/tmp/absolute"


@pytest.mark.parametrize("name", ["../x", "a/b", "..", ""])
def test_the_config_name_is_checked_like_a_run_name(ws, capsys, name):
    write_config(ws / "bad.yaml", small_config(name=name))
    before = snapshot(ws)
    user_error(cli(capsys, "train", "bad.yaml", "--logdir", "logs"), "bad.yaml", "name")
    assert snapshot(ws) == before


@pytest.mark.parametrize("target", ["checkpoint", "input", "in-run", "other-run-file"])
def test_predict_never_writes_over_its_inputs_or_into_a_run_folder(ws, capsys, target):
    run = _train_r(ws, capsys)
    last = run / "checkpoints" / "last.npz"
    output = {
        "checkpoint": last,
        "input": ws / "x.npy",
        "in-run": run / "predictions.csv",
        "other-run-file": run / "config.yaml",
    }[target]
    before = snapshot(ws)
    args = ("predict", last, "x.npy", "--output", output)
    user_error(cli(capsys, *args, "--force"), "--output", str(output))
    assert snapshot(ws) == before


def test_predict_replaces_an_existing_file_only_with_force(ws, capsys):
    run = _train_r(ws, capsys)
    (ws / "out.csv").write_text("keep me\n")
    before = snapshot(ws)
    args = ("predict", run, "x.npy", "--output", "out.csv")
    user_error(cli(capsys, *args), "--output", "out.csv", "--force")
    assert snapshot(ws) == before
    assert cli(capsys, *args, "--force")[0] == 0
    assert (ws / "out.csv").read_text().startswith("prediction\n")
    assert not list(ws.glob(".out.csv.*.tmp"))


def test_output_into_a_missing_folder_is_one_line(ws, capsys):
    run = _train_r(ws, capsys)
    before = snapshot(ws)
    user_error(cli(capsys, "predict", run, "x.npy", "-o", "nowhere/p.csv"), "nowhere")
    user_error(cli(capsys, "init", "-o", "nowhere/c.yaml"), "nowhere")
    assert snapshot(ws) == before


def test_resume_refuses_a_checkpoint_that_links_into_another_run(ws, capsys):
    other = _train_r(ws, capsys)
    args = ("train", "c.yaml", "--logdir", "logs", "--name", "mine", "-q")
    assert cli(capsys, *args)[0] == 0
    mine = ws / "logs" / "mine" / "checkpoints" / "last.npz"
    mine.unlink()
    mine.symlink_to(other / "checkpoints" / "last.npz")
    before = snapshot(ws)
    user_error(cli(capsys, "resume", mine, "--epochs", "3", "-q"), str(mine), "symbolic link")
    assert snapshot(ws) == before


def test_one_process_at_a_time_trains_a_run_folder(ws, capsys):
    run = _train_r(ws, capsys)
    before = snapshot(ws)
    with RunLock(run):  # as another process's resume would hold it
        line = user_error(cli(capsys, "resume", run, "--epochs", "3", "-q"), str(run))
        assert "in use" in line
    assert snapshot(ws) == before
    code, _, err = cli(capsys, "resume", run, "--epochs", "3", "-q")  # released: goes on
    assert code == 0, err
