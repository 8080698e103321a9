"""Hostile configs and checkpoints (SPEC: Resource bounds, Promises): bombs, deep nesting,
odd keys, huge or non-finite numbers, models too large for memory, checkpoints whose meta
or arrays lie. Each is exit 2 with one `error:` line naming the file and key, quickly, and
no file changes."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
from helpers import cli, small_config, snapshot, user_error, write_config

from mlpcli import checkpoint


@pytest.fixture
def ws(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_config(tmp_path / "c.yaml", small_config(train={"epochs": 2, "batch_size": 64}))
    return tmp_path


def _refused(capsys, ws, *args, fragments=()):
    before = snapshot(ws)
    started = time.perf_counter()
    line = user_error(cli(capsys, *args), *fragments)
    assert time.perf_counter() - started < 5, "took too long to refuse"
    assert snapshot(ws) == before
    return line


def test_a_billion_laughs_config_is_refused_quickly(ws, capsys):
    rows = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        rows.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    (ws / "bomb.yaml").write_text("\n".join(rows) + "\n")
    _refused(capsys, ws, "validate", "bomb.yaml", fragments=("bomb.yaml", "aliases"))


@pytest.mark.parametrize("depth", [60, 5000])
def test_deeply_nested_yaml_is_refused(ws, capsys, depth):
    (ws / "deep.yaml").write_text("data: " + "[" * depth + "]" * depth + "\n")
    _refused(capsys, ws, "validate", "deep.yaml", fragments=("deep.yaml", "nested too deeply"))


def test_a_list_as_a_mapping_key_is_one_line(ws, capsys):
    (ws / "keys.yaml").write_text("? [1, 2]\n: 3\n")
    _refused(capsys, ws, "validate", "keys.yaml", fragments=("keys.yaml line 1", "plain value"))


def test_a_config_that_is_not_a_regular_file_is_refused(ws, capsys):
    os.symlink("/dev/zero", ws / "zero.yaml")
    _refused(capsys, ws, "train", "zero.yaml", fragments=("zero.yaml", "not a regular file"))
    os.mkfifo(ws / "pipe.yaml")
    _refused(capsys, ws, "validate", "pipe.yaml", fragments=("pipe.yaml", "not a regular file"))


@pytest.mark.parametrize(
    "override, key",
    [
        ("seed=10000000000000000000000000000", "seed"),
        ("train.epochs=99999999999999", "train.epochs"),
        ("train.batch_size=-1", "train.batch_size"),
        ("optimizer.lr=.inf", "optimizer.lr"),
        ("optimizer.lr=.nan", "optimizer.lr"),
        ("train.clip_grad_norm=.inf", "train.clip_grad_norm"),
        ("model.layers.0.units=4294967296", "model.layers.0.units"),
    ],
)
def test_numbers_out_of_range_or_not_finite_are_config_errors(ws, capsys, override, key):
    line = _refused(capsys, ws, "train", "c.yaml", "--set", override, fragments=(key,))
    assert "diverged" not in line


def test_a_model_too_large_for_memory_is_refused_naming_the_layer(ws, capsys):
    _refused(
        capsys,
        ws,
        "train",
        "c.yaml",
        "--set",
        "model.layers.0.units=300000000",
        fragments=("model.layers.0.units", "memory"),
    )


# ---------------------------------------------------------------------- checkpoints


@pytest.fixture
def run(ws, capsys):
    assert cli(capsys, "train", "c.yaml", "--logdir", "logs", "--name", "r", "-q")[0] == 0
    np.save(ws / "x.npy", np.array([[0.1, 0.2], [0.5, -0.4]]))
    return ws / "logs" / "r"


def _rewrite(path, change_arrays=None, change_meta=None):
    """A copy of checkpoint `path` beside it with its arrays or meta changed."""
    arrays, meta = checkpoint.load(path)
    if change_arrays:
        change_arrays(arrays)
    if change_meta:
        change_meta(meta)
    out = path.with_name("bad.npz")
    np.savez(out, **arrays, meta=np.array(json.dumps(meta)))
    return out


META_CHANGES = {
    "epoch-text": lambda m: m.update(epoch="three"),
    "epoch-negative": lambda m: m.update(epoch=-4),
    "step-huge": lambda m: m.update(step=2**70),
    "config-list": lambda m: m.update(config=[1, 2]),
    "metrics-text": lambda m: m.update(metrics={"val/loss": "low"}),
    "features-numbers": lambda m: m.update(feature_names=[1, 2]),
    "progress-text": lambda m: m["progress"].update(step="x"),
    "progress-missing": lambda m: m.pop("progress"),
    "no-epoch": lambda m: m.pop("epoch"),
}


def _nan_weight(a):
    a["params/0/W"] = a["params/0/W"].copy()
    a["params/0/W"][0, 0] = np.nan


ARRAY_CHANGES = {
    "nan-weight": _nan_weight,
    "inf-mean": lambda a: a.update({"data/x_mean": np.array([np.inf, 0.0])}),
    "zero-std": lambda a: a.update({"data/x_std": np.array([0.0, 1.0])}),
    "short-mean": lambda a: a.update({"data/x_mean": np.array([0.0])}),
    "no-classes": lambda a: a.pop("data/classes"),
    "text-weights": lambda a: a.update({"params/0/b": np.array(["a"] * 8)}),
    "optim-shape": lambda a: a.update({"optim/0/W/exp_avg": np.zeros((3, 3))}),
}


@pytest.mark.parametrize("command", ["resume", "eval", "predict", "inspect"])
@pytest.mark.parametrize("case", sorted(META_CHANGES) + sorted(ARRAY_CHANGES))
def test_a_checkpoint_that_lies_is_one_error_line_naming_it(run, capsys, ws, command, case):
    last = run / "checkpoints" / "last.npz"
    if case in META_CHANGES:
        bad = _rewrite(last, change_meta=META_CHANGES[case])
    else:
        bad = _rewrite(last, change_arrays=ARRAY_CHANGES[case])
    if command != "resume" and case in ("optim-shape", "progress-text", "progress-missing"):
        pytest.skip("only resume reads the optimizer state and the trainer's position")
    args = {
        "resume": ("resume", bad, "--epochs", "5", "-q"),
        "eval": ("eval", bad, "--json"),
        "predict": ("predict", bad, "x.npy"),
        "inspect": ("inspect", bad, "--json"),
    }[command]
    _refused(capsys, ws, *args, fragments=(str(bad),))


def test_init_from_with_a_nan_weight_names_the_file(run, capsys, ws):
    bad = _rewrite(run / "checkpoints" / "last.npz", change_arrays=_nan_weight)
    line = _refused(
        capsys, ws, "train", "c.yaml", "--set", f"model.init_from={bad}", fragments=(str(bad),)
    )
    assert "NaN" in line and "diverged" not in line


def test_a_checkpoint_member_that_claims_a_huge_array_is_refused(run, capsys, ws):
    """An .npy header inside the archive claiming 10^12 values is caught before numpy
    allocates them."""
    import io
    import zipfile

    last = run / "checkpoints" / "last.npz"
    bad = last.with_name("forged.npz")
    with zipfile.ZipFile(last) as src, zipfile.ZipFile(bad, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "params/0/W.npy":
                head = io.BytesIO()
                np.lib.format.write_array_header_1_0(
                    head, {"descr": "<f4", "fortran_order": False, "shape": (10**6, 10**6)}
                )
                data = head.getvalue() + b"\0" * 64
            dst.writestr(info, data)
    for args in (("eval", bad, "--json"), ("resume", bad, "--epochs", "5", "-q")):
        _refused(capsys, ws, *args, fragments=(str(bad), "params/0/W"))


def test_a_checkpoint_that_is_a_pipe_is_refused(run, capsys, ws):
    fifo = run / "checkpoints" / "pipe.npz"
    os.mkfifo(fifo)
    _refused(capsys, ws, "inspect", fifo, fragments=(str(fifo), "not a regular file"))


def test_a_newline_in_a_key_stays_on_one_error_line(ws, capsys):
    line = _refused(capsys, ws, "validate", "c.yaml", "--set", "optim\nizer.lr=3")
    assert "optim\\nizer" in line


def test_eval_json_stays_json_when_a_metric_is_not_finite(run, capsys, ws):
    """Finite weights so large that the outputs overflow: the loss is NaN or inf, and
    `eval --json` prints null for it rather than the NaN that JSON has no word for."""

    def huge(a):
        for key in ("params/0/W", "params/1/W"):
            a[key] = np.full_like(a[key], 3e38)  # the largest float32s: z overflows

    bad = _rewrite(run / "checkpoints" / "last.npz", change_arrays=huge)
    code, out, err = cli(capsys, "eval", bad, "--json")
    assert code == 0, err
    metrics = json.loads(out, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
    assert metrics["loss"] is None and metrics["n_samples"] > 0


def test_predict_refuses_outputs_that_overflow(run, capsys, ws):
    def huge(a):
        for key in ("params/0/W", "params/1/W"):
            a[key] = np.full_like(a[key], 3e38)

    bad = _rewrite(run / "checkpoints" / "last.npz", change_arrays=huge)
    _refused(capsys, ws, "predict", bad, "x.npy", fragments=(str(bad), "not finite"))
