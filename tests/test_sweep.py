"""`mlpcli sweep` (SPEC, Sweeps): each trial equals `mlpcli train --set` bit for bit, with
any number of jobs; `--samples` is reproducible; a stop and `--resume` (or a `kill -9` and
`--resume`) give the uninterrupted sweep's bits; a diverging trial is recorded and the
sweep goes on; a bad grid is exit 2 before anything is written."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import REPO, cli, load_last, small_config, user_error, write_config

from mlpcli import sweep as sweeps
from mlpcli.paths import RunLock

GRID = ["--grid", "optimizer.lr=[0.01,0.1]", "--grid", "model.layers.0.units=[4,8]"]


def _arrays_equal(a: Path, b: Path, name: str = "last.npz") -> None:
    """Two runs' checkpoints hold the same parameters and optimizer state, bit for bit."""
    (x, mx), (y, my) = load_last(a, name), load_last(b, name)
    assert set(x) == set(y)
    for key in x:
        assert np.array_equal(x[key], y[key]), f"{a.name} {key} differs"
    assert (mx["epoch"], mx["step"], mx["metrics"]) == (my["epoch"], my["step"], my["metrics"])


def _results(folder: Path) -> list[dict[str, str]]:
    with open(folder / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def _sweep(*args, cwd=REPO, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mlpcli", "sweep", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        **kwargs,
    )


def _hparams_of(folder: Path):
    """What TensorBoard's HParams plugin makes of `folder`: its experiment (columns, which
    differ, metrics) and each run's session start info, read with TensorBoard's own code."""
    pytest.importorskip("tensorboard")
    from tensorboard import context
    from tensorboard.backend.event_processing.data_provider import MultiplexerDataProvider
    from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import api_pb2, backend_context, get_experiment, metadata

    mux = EventMultiplexer().AddRunsFromDirectory(str(folder)).Reload()
    provider = MultiplexerDataProvider(mux, str(folder))
    tb = base_plugin.TBContext(logdir=str(folder), multiplexer=mux, data_provider=provider)
    request = api_pb2.GetExperimentRequest(hparams_limit=1000)  # as the dashboard asks
    handler = backend_context.Context(tb)
    experiment = get_experiment.Handler(context.RequestContext(), handler, "", request).run()
    sessions = mux.PluginRunToTagToContent(metadata.PLUGIN_NAME)
    return experiment, sessions


def test_a_grid_with_two_jobs_equals_four_train_runs(tmp_path, capsys):
    config = write_config(tmp_path / "c.yaml", small_config())
    result = _sweep(config, *GRID, "--jobs", "2", "--logdir", tmp_path / "logs", "--name", "s")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    folder = tmp_path / "logs" / "s"
    assert sorted(p.name for p in folder.iterdir()) == [
        "results.csv",
        "sweep.yaml",
        "trial-000",
        "trial-001",
        "trial-002",
        "trial-003",
    ]
    plan = yaml.safe_load((folder / "sweep.yaml").read_text())
    expected = [
        ["optimizer.lr=0.01", "model.layers.0.units=4"],
        ["optimizer.lr=0.01", "model.layers.0.units=8"],
        ["optimizer.lr=0.1", "model.layers.0.units=4"],
        ["optimizer.lr=0.1", "model.layers.0.units=8"],
    ]
    assert [t["set"] for t in plan["trials"]] == expected
    assert plan["grid"] == {"optimizer.lr": [0.01, 0.1], "model.layers.0.units": [4, 8]}
    for i, sets in enumerate(expected):
        args = [x for s in sets for x in ("--set", s)]
        code, _, err = cli(
            capsys, "train", config, *args, "--logdir", tmp_path / "alone", "--name", f"r{i}", "-q"
        )
        assert code == 0, err
        _arrays_equal(folder / f"trial-{i:03d}", tmp_path / "alone" / f"r{i}")
        _arrays_equal(folder / f"trial-{i:03d}", tmp_path / "alone" / f"r{i}", "best.npz")
    # the results table: one row per trial, its overrides, status, epochs, final and best
    rows = _results(folder)
    assert list(rows[0]) == [
        "trial",
        "status",
        "optimizer.lr",
        "model.layers.0.units",
        "epochs",
        "best_epoch",
        "best_val/loss",
        "final_train/accuracy",
        "final_train/loss",
        "final_val/accuracy",
        "final_val/auc",
        "final_val/f1_macro",
        "final_val/loss",
    ]
    assert [r["trial"] for r in rows] == [f"trial-{i:03d}" for i in range(4)]
    assert {r["status"] for r in rows} == {"done"}
    assert [(r["optimizer.lr"], r["model.layers.0.units"]) for r in rows] == [
        ("0.01", "4"),
        ("0.01", "8"),
        ("0.1", "4"),
        ("0.1", "8"),
    ]
    for i, r in enumerate(rows):
        _, meta = load_last(folder / f"trial-{i:03d}")
        assert int(r["epochs"]) == meta["epoch"] == 3
        assert float(r["final_val/loss"]) == meta["metrics"]["val/loss"]
        assert float(r["best_val/loss"]) == meta["progress"]["best"]
    # the final table names the best trial by val/loss and how to predict with it
    best = min(rows, key=lambda r: float(r["best_val/loss"]))["trial"]
    assert f"predict  mlpcli predict {folder / best} INPUT.csv" in result.stdout
    # the ranking names each grid key by its last part where that is unambiguous
    header = next(line for line in result.stdout.splitlines() if line.lstrip().startswith("rank"))
    assert header.split()[-2:] == ["lr", "units"], header
    live = [line for line in result.stdout.splitlines() if line.startswith("trial-")]
    assert {line.split()[1] for line in live} == {"running", "done"}
    assert all(len(line) <= 100 for line in live)
    # TensorBoard's HParams plugin, pointed at the sweep folder: one session per trial, and
    # the two tuned knobs are the columns that differ, listed first
    experiment, sessions = _hparams_of(folder)
    assert sorted(sessions) == [f"trial-{i:03d}" for i in range(4)]
    differing = [info.name for info in experiment.hparam_infos if info.differs]
    assert sorted(differing) == ["learning_rate", "units"]
    assert [info.name for info in experiment.hparam_infos][:2] == differing
    assert {"val/loss", "val/accuracy"} <= {m.name.tag for m in experiment.metric_infos}
    # each trial is an ordinary run folder
    code, out, err = cli(capsys, "eval", folder / "trial-001", "--json")
    assert code == 0, err
    code, out, err = cli(capsys, "inspect", folder / "trial-001")
    assert code == 0 and "epoch 3" in out, err


def test_samples_are_drawn_with_the_configs_seed(tmp_path):
    grid = {"a": [1, 2, 3], "b": [0.1, 0.2], "c": ["x", "y", "z", "w"]}
    first = sweeps.plan(grid, 5, seed=0)
    assert first == sweeps.plan(grid, 5, seed=0)
    assert len({tuple(t) for t in first}) == 5
    every = sweeps.plan(grid, None, seed=0)
    assert len(every) == 24 and all(t in every for t in first)
    assert first == sorted(first, key=every.index)  # in grid order
    assert any(sweeps.plan(grid, 5, seed=s) != first for s in (1, 2, 3))
    # through the command: the trials plan() draws with the config's seed (7 here)
    config = write_config(tmp_path / "c.yaml", small_config(seed=7, train={"epochs": 1}))
    args = ["--grid", "optimizer.lr=[0.1,0.01,0.001]", "--grid", "train.batch_size=[16,32]"]
    result = _sweep(config, *args, "--samples", 2, "-j", 2, "--logdir", tmp_path, "--name", "s")
    assert result.returncode == 0, result.stderr
    trials = yaml.safe_load((tmp_path / "s" / "sweep.yaml").read_text())["trials"]
    grid = {"optimizer.lr": [0.1, 0.01, 0.001], "train.batch_size": [16, 32]}
    assert [t["set"] for t in trials] == sweeps.plan(grid, 2, seed=7)
    assert [r["status"] for r in _results(tmp_path / "s")] == ["done", "done"]


def test_a_diverging_trial_is_recorded_and_the_sweep_goes_on(tmp_path):
    config = small_config(
        data={"source": "linear", "options": {"n_samples": 200, "n_features": 3}},
        model={"layers": [{"units": 1, "activation": "linear"}]},
        loss="mse",
        # gamma 1e6: the learning rate jumps from 0.001 to 1000 after two epochs
        schedule={"name": "step", "step_size": 2, "gamma": 1.0},
        optimizer={"name": "sgd", "lr": 1e-3},
        train={"epochs": 5, "batch_size": 32},
    )
    config = write_config(tmp_path / "c.yaml", config)
    args = ["--grid", "schedule.gamma=[1e6,1.0]", "--logdir", tmp_path, "--name", "s"]
    result = _sweep(config, *args)
    assert result.returncode == 0, result.stderr
    rows = _results(tmp_path / "s")
    assert [(r["schedule.gamma"], r["status"]) for r in rows] == [
        ("1000000.0", "diverged"),
        ("1.0", "done"),
    ]
    assert rows[0]["epochs"] == "3"  # its last good checkpoint
    assert (tmp_path / "s" / "trial-000" / "checkpoints" / "last.npz").exists()
    assert "diverged" in result.stdout and "trial-001" in result.stdout
    # --resume keeps the record and has nothing left to do
    again = _sweep("--resume", tmp_path / "s")
    assert again.returncode == 0, again.stderr
    assert _results(tmp_path / "s") == rows


def test_early_stopping_ends_a_trial_as_in_train(tmp_path, capsys):
    # mode max on a falling loss: no gain in epoch 2, so patience 1 stops there
    stopping = {"monitor": "val/loss", "patience": 1, "mode": "max"}
    config = small_config(train={"epochs": 6, "batch_size": 32, "early_stopping": stopping})
    config = write_config(tmp_path / "c.yaml", config)
    result = _sweep(config, "--grid", "optimizer.lr=[0.01]", "--logdir", tmp_path)
    assert result.returncode == 0, result.stderr
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert folder.name.startswith("small-")  # the config's name and a timestamp
    (row,) = _results(folder)
    assert (row["status"], row["epochs"]) == ("done", "2")
    code, _, err = cli(capsys, "train", config, "--logdir", tmp_path / "alone", "--name", "r")
    assert code == 0, err
    _arrays_equal(folder / "trial-000", tmp_path / "alone" / "r")


def _interrupted_sweep(tmp_path: Path, name: str, kill) -> Path:
    """A sweep of four trials, two at a time, stopped by `kill(process)` once its first
    trial has saved a checkpoint."""
    config = write_config(
        tmp_path / "c.yaml",
        small_config(
            data={"source": "synthetic", "options": {"n_samples": 10000, "n_features": 20}},
            model={"layers": [{"units": 32, "dropout": 0.1}, {"units": 10}]},
            # enough epochs that a stop after the first one's checkpoint lands mid-trial
            train={"epochs": 5, "batch_size": 64},
            schedule=None,
        ),
    )
    args = [sys.executable, "-m", "mlpcli", "sweep", str(config), *GRID[:2]]
    args += ["--grid", "train.shuffle=[true,false]", "-j", "2", "--logdir", str(tmp_path)]
    proc = subprocess.Popen(
        [*args, "--name", name], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    folder = tmp_path / name
    deadline = time.monotonic() + 60
    while not any(folder.glob("trial-*/checkpoints/epoch-*.npz")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    kill(proc)
    out, err = proc.communicate(timeout=60)
    return folder, proc.returncode, out.decode(), err.decode()


def test_ctrl_c_then_resume_equals_an_uninterrupted_sweep(tmp_path):
    folder, code, out, err = _interrupted_sweep(tmp_path, "cut", lambda p: p.send_signal(2))
    assert code == 130, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: stopped by SIGINT"), err
    assert f"mlpcli sweep --resume {folder}" in lines[0]
    statuses = [r["status"] for r in _results(folder)]
    assert "stopped" in statuses and "pending" in statuses, statuses
    resumed = _sweep("--resume", folder)
    assert resumed.returncode == 0, resumed.stderr
    assert ", 2 at a time," in resumed.stdout  # as the sweep began, with -j 2
    whole = _sweep(
        tmp_path / "c.yaml",
        *GRID[:2],
        "--grid",
        "train.shuffle=[true,false]",
        "--logdir",
        tmp_path,
        "--name",
        "whole",
    )
    assert whole.returncode == 0, whole.stderr
    assert (folder / "results.csv").read_text() == (tmp_path / "whole" / "results.csv").read_text()
    for i in range(4):
        _arrays_equal(folder / f"trial-{i:03d}", tmp_path / "whole" / f"trial-{i:03d}")


def test_kill_9_of_the_sweep_leaves_every_trial_resumable(tmp_path):
    folder, code, out, err = _interrupted_sweep(tmp_path, "cut", lambda p: p.kill())
    assert code == -signal.SIGKILL
    # the trials were told to stop: each lets go of its folder with a checkpoint saved
    deadline = time.monotonic() + 60
    for trial in folder.glob("trial-*"):
        while True:
            try:
                with RunLock(trial):
                    break
            except Exception:
                assert time.monotonic() < deadline, f"{trial} is still being trained"
                time.sleep(0.05)
        assert (trial / "checkpoints" / "last.npz").exists() or not any(trial.iterdir())
    resumed = _sweep("--resume", folder)
    assert resumed.returncode == 0, resumed.stderr
    assert {r["status"] for r in _results(folder)} == {"done"}
    # the trials equal the same sweep's trials run straight through (trial 0 alone here)
    whole = _sweep(
        tmp_path / "c.yaml",
        "--grid",
        "optimizer.lr=[0.01]",
        "--grid",
        "train.shuffle=[true]",
        "--logdir",
        tmp_path,
        "--name",
        "whole",
    )
    assert whole.returncode == 0, whole.stderr
    _arrays_equal(folder / "trial-000", tmp_path / "whole" / "trial-000")


@pytest.mark.parametrize(
    ("grid", "fragments"),
    [
        (["optimizer.lrr=[0.1]"], ["--grid optimizer.lrr", "unknown key", "optimizer.lr"]),
        (["optimizer.lr=0.1"], ["--grid optimizer.lr", "YAML list"]),
        (["optimizer.lr=[]"], ["--grid optimizer.lr", "non-empty"]),
        (["optimizer.lr"], ["--grid 'optimizer.lr'", "KEY=[V1,V2,...]"]),
        (["optimizer.lr=[0.1, -1]"], ["--grid optimizer.lr", "trial-001"]),
        (["optimizer.lr=[0.1, abc]"], ["--grid optimizer.lr", "trial-001"]),
        (["optimizer.lr=[0.1", "x"], ["--grid optimizer.lr", "invalid YAML"]),
        (["optimizer.lr=[0.1]", "optimizer.lr=[0.2]"], ["--grid optimizer.lr", "twice"]),
        (["optimizer.lr=[0.1, 0.1]"], ["--grid optimizer.lr", "twice"]),
        (["model.layers.5.units=[3]"], ["--grid model.layers.5.units", "2 items"]),
        (["model.layers.1.units=[2,3]"], ["model.layers.1.units", "3 output units", "trial-001"]),
        (["logging.logdir=[a,b]"], ["--grid logging.logdir", "inside its sweep folder"]),
        ([], ["--grid", "at least one"]),
    ],
)
def test_bad_grid_input_is_exit_2_before_anything_is_written(tmp_path, capsys, grid, fragments):
    config = write_config(tmp_path / "c.yaml", small_config())
    args = [x for g in grid for x in ("--grid", g)]
    result = cli(capsys, "sweep", config, *args, "--logdir", tmp_path / "logs")
    user_error(result, *fragments)
    assert not (tmp_path / "logs").exists()


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--samples", "5"], ["--samples", "between 1 and 4", "got 5"]),
        (["--samples", "0"], ["--samples", "got 0"]),
        (["--jobs", "0"], ["--jobs", "at least 1"]),
        (["--name", "a/b"], ["--name", "without '/'"]),
    ],
)
def test_bad_options_are_exit_2(tmp_path, capsys, args, fragments):
    config = write_config(tmp_path / "c.yaml", small_config())
    result = cli(capsys, "sweep", config, *GRID, *args, "--logdir", tmp_path / "logs")
    user_error(result, *fragments)
    assert not (tmp_path / "logs").exists()


def test_bad_resume_input_is_exit_2(tmp_path, capsys):
    user_error(cli(capsys, "sweep", "--resume", tmp_path / "nope"), "not a folder")
    user_error(cli(capsys, "sweep", "--resume", tmp_path), "no sweep.yaml")
    (tmp_path / "sweep.yaml").write_text("format: mlpcli-sweep\nversion: 1\ngrid: {}\n")
    user_error(cli(capsys, "sweep", "--resume", tmp_path), "sweep.yaml", "damaged", "trials")
    (tmp_path / "sweep.yaml").write_text("[1, 2")
    user_error(cli(capsys, "sweep", "--resume", tmp_path), "sweep.yaml", "cannot read")
    for jobs in ("0", "true", "1.5", "x"):
        text = "format: mlpcli-sweep\nversion: 1\ngrid: {}\ntrials: []\nconfig: {}\n"
        (tmp_path / "sweep.yaml").write_text(text + f"jobs: {jobs}\n")
        user_error(cli(capsys, "sweep", "--resume", tmp_path), "sweep.yaml", "damaged", "jobs")
    user_error(cli(capsys, "sweep", "--resume", tmp_path, "--jobs", "0"), "--jobs", "at least 1")
    config = write_config(tmp_path / "c.yaml", small_config())
    user_error(cli(capsys, "sweep", config, "--resume", tmp_path), "--resume", "CONFIG")
    user_error(cli(capsys, "sweep"), "give a CONFIG")


def test_an_existing_sweep_folder_is_never_overwritten(tmp_path, capsys):
    config = write_config(tmp_path / "c.yaml", small_config())
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "keep.txt").write_text("mine")
    result = cli(capsys, "sweep", config, *GRID, "--logdir", tmp_path, "--name", "s")
    user_error(result, "--name", "already exists", "--resume")
    assert os.listdir(tmp_path / "s") == ["keep.txt"]


def test_grid_values_round_trip_through_set():
    for value in [0.1, 1e-3, 1e6, 3, True, None, "relu", "a b", "1e-3", "true", [1, "2"], {"x": 1}]:
        text = sweeps.yaml_value(value)
        assert "\n" not in text
        assert sweeps.parse_override(f"k={text}") == ("k", value)


def test_resume_starts_missing_trials_from_the_unchanged_config(tmp_path, capsys):
    config = write_config(tmp_path / "c.yaml", small_config(train={"epochs": 1}))
    args = ["--grid", "optimizer.lr=[0.01,0.1]", "--logdir", tmp_path, "--name", "s"]
    assert _sweep(config, *args).returncode == 0
    before = (tmp_path / "s" / "results.csv").read_text()
    last = tmp_path / "s" / "trial-000" / "checkpoints" / "last.npz"
    kept = (last.stat().st_ino, last.stat().st_mtime_ns)
    shutil.rmtree(tmp_path / "s" / "trial-001")
    write_config(config, small_config(train={"epochs": 2}))
    line = user_error(cli(capsys, "sweep", "--resume", tmp_path / "s"), "changed since")
    assert str(config) in line
    write_config(config, small_config(train={"epochs": 1}))
    assert _sweep("--resume", tmp_path / "s").returncode == 0
    assert (tmp_path / "s" / "results.csv").read_text() == before
    assert (last.stat().st_ino, last.stat().st_mtime_ns) == kept  # a finished trial is kept


def test_a_trial_that_fails_otherwise_is_recorded_and_the_sweep_exits_1(tmp_path):
    rows = ["x0,x1,target"] + [f"{i % 7},{i % 5},{i % 2}" for i in range(60)]
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    config = small_config(data={"source": str(tmp_path / "d.csv")}, train={"epochs": 1})
    config = write_config(tmp_path / "c.yaml", config)
    args = ["--grid", "optimizer.lr=[0.01,0.1]", "--logdir", tmp_path, "--name", "s"]
    assert _sweep(config, *args).returncode == 0
    shutil.rmtree(tmp_path / "s" / "trial-001")
    (tmp_path / "d.csv").unlink()  # the pending trial's train cannot read its data now
    result = _sweep("--resume", tmp_path / "s")
    assert result.returncode == 1, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: 1 of 2 trials failed (trial-001: ") and "d.csv" in line
    assert f"mlpcli sweep --resume {tmp_path / 's'}" in line
    assert [r["status"] for r in _results(tmp_path / "s")] == ["done", "failed"]
    assert not list((tmp_path / "s").glob(".trial-*"))  # the output files are gone


def test_sigterm_stops_the_sweep_with_143_and_every_trial_resumable(tmp_path):
    folder, code, out, err = _interrupted_sweep(tmp_path, "t", lambda p: p.send_signal(15))
    assert code == 143, err
    (line,) = err.splitlines()
    assert line.startswith("error: stopped by SIGTERM") and "--resume" in line
    for row in _results(folder):
        last = folder / row["trial"] / "checkpoints" / "last.npz"
        assert row["status"] in ("done", "stopped", "pending"), row
        assert last.exists() == (row["status"] != "pending"), row
