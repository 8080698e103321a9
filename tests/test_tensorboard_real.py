"""What TensorBoard itself shows of a folder of mlpcli runs: one run per run folder, and in the
HParams tab one session per run with its hyperparameters, its metrics (final and best), and
its end (success, failure), across a resume. Read by TensorBoard's own multiplexer and by a
real `tensorboard` server on 127.0.0.1, with both of its loaders."""

from __future__ import annotations

import os
import time
import urllib.error
from pathlib import Path

import pytest

pytest.importorskip("tensorboard")

from helpers import small_config, write_config
from tb_server import get, post, still_running, tensorboard
from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer
from tensorboard.plugins.hparams import metadata
from tensorboard.util import tensor_util

from mlpcli.board import BETTER, hparams
from mlpcli.cli import main
from mlpcli.config import load_config

START, END = metadata.SESSION_START_INFO_TAG, metadata.SESSION_END_INFO_TAG
REGRESSION = {
    "data": {"source": "linear", "options": {"n_samples": 200}, "val_split": 0.2},
    "model": {"layers": [{"units": 1, "activation": "linear"}]},
    "loss": "mse",
    "optimizer": {"name": "sgd", "lr": 0.05},
    "schedule": None,
}
# run name -> (config changes, `train` arguments, `resume` arguments, exit code of the last)
RUNS = {
    "adam-small": ({}, [], None, 0),
    "adam-big": ({}, ["--set", "optimizer.lr=0.05", "--set", "train.batch_size=16"], None, 0),
    "resumed": ({}, [], ["--epochs", "3"], 0),  # resumed from its finished end
    "regression": (REGRESSION, [], None, 0),
    "diverged": (REGRESSION, ["--epochs", "1"], ["--epochs", "2", "--set", "optimizer.lr=1e12"], 1),
}
# the hyperparameters a resume changed, beside those in the run's config.yaml
RESUMED = {"resumed": {"epochs": 3}, "diverged": {"epochs": 2, "learning_rate": 1e12}}
STATUS = {"diverged": "STATUS_FAILURE"}  # the others: STATUS_SUCCESS


def _mlpcli(*args) -> int:
    try:
        main([str(a) for a in args])
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 1
    return 0


@pytest.fixture(scope="module")
def logdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tb")
    logs = root / "logs"
    for name, (changes, args, resume, code) in RUNS.items():
        config = small_config(train={"epochs": 2, "batch_size": 32}, **changes)
        path = write_config(root / f"{name}.yaml", config)
        assert _mlpcli("train", path, "--logdir", logs, "--name", name, "-q", *args) == 0
        if resume is not None:  # the new session replaces the old one
            assert _mlpcli("resume", logs / name, "-q", *resume) == code, name
    return logs


def _hparams(logdir: Path, run: str) -> dict:
    """The hyperparameters the run last ran with."""
    return hparams(load_config(logdir / run / "config.yaml")) | RESUMED.get(run, {})


def _scalars(run: Path) -> dict[str, list[float]]:
    acc = EventAccumulator(str(run), size_guidance={"tensors": 0}).Reload()
    return {
        tag: [float(tensor_util.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)]
        for tag in acc.PluginTagToContent("scalars")
    }


def test_one_run_per_run_folder_and_one_session_each(logdir):
    mux = EventMultiplexer().AddRunsFromDirectory(str(logdir)).Reload()
    assert sorted(mux.Runs()) == sorted(RUNS)
    sessions = mux.PluginRunToTagToContent(metadata.PLUGIN_NAME)
    assert sorted(sessions) == sorted(RUNS)
    for run in RUNS:
        acc = mux.GetAccumulator(run)
        assert len(acc.Tensors(START)) == 1, run  # the resumed run's first session is gone
        assert len(acc.Tensors(END)) == 1, run
        start = metadata.parse_session_start_info_plugin_data(sessions[run][START])
        got = {k: getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}
        assert got == _hparams(logdir, run), run
    start = metadata.parse_session_start_info_plugin_data(sessions["resumed"][START])
    assert start.hparams["epochs"].number_value == 3


def test_a_lone_run_shows_the_knobs_tuned_most_first(logdir):
    """TensorBoard ticks the first five hyperparameters: with nothing differing, by name."""
    from tensorboard import context
    from tensorboard.backend.event_processing.data_provider import MultiplexerDataProvider
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import api_pb2, backend_context, get_experiment

    run = str(logdir / "adam-small")
    mux = EventMultiplexer().AddRunsFromDirectory(run).Reload()
    provider = MultiplexerDataProvider(mux, run)
    tb = base_plugin.TBContext(logdir=run, multiplexer=mux, data_provider=provider)
    request = api_pb2.GetExperimentRequest(hparams_limit=1000)  # as the dashboard asks
    handler = backend_context.Context(tb)
    experiment = get_experiment.Handler(context.RequestContext(), handler, "", request).run()
    names = [info.name for info in experiment.hparam_infos]
    assert names[:5] == ["activations", "batch_size", "dropout", "epochs", "learning_rate"]
    assert not any(info.differs for info in experiment.hparam_infos)


def test_best_is_the_running_best_of_each_validation_metric(logdir):
    for run in RUNS:
        scalars = _scalars(logdir / run)
        val = {tag for tag in scalars if tag.startswith("val/")} - {
            tag for tag in scalars if tag.endswith("_best")
        }
        classifier = run not in ("regression", "diverged")
        if classifier:  # binary: auc too
            assert val == {"val/loss", "val/accuracy", "val/f1_macro", "val/auc"}, run
        else:
            assert val == {"val/loss", "val/mae", "val/r2"}, run
        for tag in val:
            pick = min if BETTER[tag.removeprefix("val/")] == "min" else max
            running = [pick(scalars[tag][: i + 1]) for i in range(len(scalars[tag]))]
            assert scalars[tag + "_best"] == running, (run, tag)
    assert len(_scalars(logdir / "resumed")["val/loss_best"]) == 3  # epochs 1, 2, then 3


def _post_until(base: str, route: str, body: dict, ready, proc, log: Path, load_fast: str):
    """POSTs until `ready(answer)`; skips when the fast loader cannot run here."""
    deadline, answer, error = time.monotonic() + 30, None, None
    while time.monotonic() < deadline:
        still_running(proc, log, load_fast)
        try:
            answer, error = post(base, route, body), None
            if ready(answer):
                return answer
        except (OSError, urllib.error.HTTPError) as e:  # not listening, or not loaded yet
            error = e
        time.sleep(0.3)
    pytest.fail(f"{route}: no complete answer in 30 s (last {answer!r}, error {error!r})")


@pytest.mark.skipif(os.name != "posix", reason="kills the server by process group")
@pytest.mark.parametrize("load_fast", ["false", "true"])
def test_hparams_plugin_of_a_real_tensorboard(logdir, load_fast, tmp_path):
    log = tmp_path / "tensorboard.log"
    configs = {run: _hparams(logdir, run) for run in RUNS}
    with tensorboard(logdir, load_fast, log) as (proc, base):
        # the request bodies the HParams dashboard sends
        experiment = _post_until(
            base,
            "/data/plugin/hparams/experiment",
            {"experimentName": "", "hparamsLimit": 1000},
            lambda e: len(e.get("metricInfos", [])) > 0,
            proc,
            log,
            load_fast,
        )
        statuses = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]
        request = {"experimentName": "", "allowedStatuses": statuses, "colParams": []}
        request |= {"startIndex": 0, "sliceSize": 100}
        groups = _post_until(
            base,
            "/data/plugin/hparams/session_groups",
            request,
            lambda g: len(g.get("sessionGroups", [])) == len(RUNS),
            proc,
            log,
            load_fast,
        )["sessionGroups"]
        runs = get(base, "/data/runs")
        provider = get(base, "/data/environment")["debug"]["data_provider"]

    assert ("Grpc" in provider) == (load_fast == "true"), provider  # the Rust data server
    assert sorted(runs) == sorted(RUNS)  # no `hparams` child runs
    infos = experiment["hparamInfos"]
    names = [info["name"] for info in infos]
    assert sorted(names) == sorted({name for hp in configs.values() for name in hp})
    for info in infos:  # `differs` is TensorBoard's own finding, across every run
        values = {str(hp[info["name"]]) for hp in configs.values() if info["name"] in hp}
        assert info.get("differs", False) == (len(values) > 1), info
    differing = {info["name"] for info in infos if info.get("differs")}
    assert {"learning_rate", "batch_size", "epochs"} <= differing
    differ = sum(1 for info in infos if info.get("differs"))
    assert all(info.get("differs") for info in infos[:differ])  # listed first, then by name
    assert names[differ:] == sorted(names[differ:])

    metrics = {m["name"]["tag"] for m in experiment["metricInfos"]}
    wanted = {"val/loss", "val/loss_best", "val/accuracy", "val/accuracy_best"}
    assert wanted <= metrics
    assert all(m["name"].get("group", "") == "" for m in experiment["metricInfos"])

    assert sorted(g["name"] for g in groups) == sorted(RUNS)
    for group in groups:
        run = group["name"]
        (session,) = group["sessions"]
        assert session["status"] == STATUS.get(run, "STATUS_SUCCESS"), run
        assert group["hparams"] == configs[run], run
        values = {m["name"]["tag"]: m["value"] for m in session["metricValues"]}
        scalars = _scalars(logdir / run)
        for tag in wanted & set(scalars):
            assert values[tag] == pytest.approx(scalars[tag][-1], rel=1e-6), (run, tag)
        assert values["val/loss_best"] == pytest.approx(min(scalars["val/loss"]), rel=1e-6)
        if run.startswith("adam") or run == "resumed":
            assert values["val/accuracy_best"] == max(scalars["val/accuracy"])
        else:
            assert "val/accuracy" not in values
