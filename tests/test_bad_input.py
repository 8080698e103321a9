"""Bad input: each mistake is exit 2 with one `error:` line naming the file and the key or
line at fault, never a traceback, and costs no data (no run folder, no file changed).

The CLI runs in-process through `mlpcli.cli.main`, the console entry point, which turns
user errors into that one line (Typer's `CliRunner` would bypass it). Every test runs in
its own `tmp_path`, which is also the working directory and holds the log folder, so a
snapshot of that folder before and after a command shows anything written or lost.
"""

from __future__ import annotations

import io
import subprocess
import sys
import traceback
import warnings
from pathlib import Path

import numpy as np
import pytest
from helpers import python_default_warnings, snapshot, user_error

from mlpcli import cli

CONFIG = "mycfg.yaml"

# Line numbers below refer to this text: 4 source, 8/9 the layers, 13 lr, 15 epochs, ...
BASE = """\
name: bad
seed: 0
data:
  source: triangle
  options: {n_samples: 200}
model:
  layers:
    - {units: 4, activation: relu}
    - {units: 2, activation: softmax}
loss: cross_entropy
optimizer:
  name: adam
  lr: 0.01
train:
  epochs: 1
  batch_size: 64
"""

LAYERS = """\
  layers:
    - {units: 4, activation: relu}
    - {units: 2, activation: softmax}
"""

# 2 features, 2 classes, 10 rows: header on line 1, data rows on lines 2 to 11
CSV_ROWS = [
    "a,b,target",
    "0.1,0.2,0",
    "0.3,0.1,1",
    "0.5,0.9,0",
    "0.7,0.4,1",
    "0.2,0.8,0",
    "0.9,0.3,1",
    "0.4,0.6,0",
    "0.6,0.5,1",
    "0.8,0.7,0",
    "0.0,1.0,1",
]


class Payload:
    """Unpickling this object creates `path`: proof that a data file was unpickled."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (io.open, (self.path, "w"))


def run_cli(capsys, *args) -> tuple[int, str, str]:
    """Run `mlpcli ARGS` in-process: (exit code, stdout, stderr) as a terminal would see them.

    An exception escaping `main` becomes exit 1 with its traceback on stderr, as in a real
    process; Python warnings are printed to stderr, as a real process would print them.
    """
    capsys.readouterr()
    tb = ""
    with warnings.catch_warnings(record=True) as caught:
        python_default_warnings()
        try:
            cli.main([str(a) for a in args])
        except SystemExit as e:
            code = e.code
        except BaseException:  # a crash is what these tests look for
            code, tb = 1, traceback.format_exc()
        else:
            code = 0
    out, err = capsys.readouterr()
    for w in caught:
        err += warnings.formatwarning(w.message, w.category, w.filename, w.lineno)
    if code is None:
        code = 0
    elif not isinstance(code, int):  # sys.exit("message") prints it and exits 1
        err, code = err + f"{code}\n", 1
    return code, out, err + tb


def error_line(result: tuple[int, str, str], *fragments: str) -> str:
    """Check the contract for a user's error; returns the `error:` line."""
    return user_error(result, *fragments)


class Workspace:
    """A working directory holding a config, data files and the log folder `logs/`."""

    def __init__(self, root: Path, capsys):
        self.root = root
        self.capsys = capsys
        self.logdir = root / "logs"

    def write(self, name: str, text: str) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    def config(self, *edits: tuple[str, str], text: str = BASE, name: str = CONFIG) -> str:
        """Write BASE (or `text`) with each (old, new) replaced once; returns the name."""
        for old, new in edits:
            assert text.count(old) == 1, f"edit {old!r} must match exactly once"
            text = text.replace(old, new)
        self.write(name, text)
        return name

    def csv(self, rows: list[str], name: str = "train.csv") -> str:
        self.write(name, "\n".join(rows) + "\n")
        return name

    def run(self, *args) -> tuple[int, str, str]:
        return run_cli(self.capsys, *args)

    def train(self, *args) -> tuple[int, str, str]:
        return self.run("train", *args, "--logdir", self.logdir)

    def fails(self, *args, expect: tuple[str, ...] = ()) -> str:
        """Run `mlpcli ARGS` (`train` gets --logdir): a user's error that changes no file."""
        before = snapshot(self.root)
        result = self.train(*args[1:]) if args[0] == "train" else self.run(*args)
        line = error_line(result, *expect)
        after = snapshot(self.root)
        lost = sorted(k for k in before if k not in after)
        changed = sorted(k for k in before if k in after and before[k] != after[k])
        added = sorted(k for k in after if k not in before)
        assert not (lost or changed or added), f"lost {lost}, changed {changed}, added {added}"
        return line


@pytest.fixture
def ws(tmp_path, monkeypatch, capsys) -> Workspace:
    monkeypatch.chdir(tmp_path)
    return Workspace(tmp_path, capsys)


def data_config(ws: Workspace, source: str, *extra: str) -> str:
    """BASE reading `source` (a file) instead of the built-in dataset; `extra` data keys."""
    block = "".join(f"  {line}\n" for line in extra)
    return ws.config(
        ("  source: triangle\n  options: {n_samples: 200}\n", f"  source: {source}\n{block}")
    )


# --------------------------------------------------------------------------- the baseline


def test_the_base_config_trains(ws):
    """The config every case breaks is valid: the failures below are the edits' doing."""
    ws.config()
    code, out, err = ws.train(CONFIG)
    assert code == 0, err
    assert "Traceback" not in out + err
    runs = list(ws.logdir.iterdir())
    assert len(runs) == 1 and (runs[0] / "config.yaml").is_file()


def test_the_base_csv_trains(ws):
    ws.csv(CSV_ROWS)
    data_config(ws, "train.csv")
    code, out, err = ws.train(CONFIG)
    assert code == 0, err


@pytest.mark.parametrize("where", ["file", "set"])
def test_1e_minus_3_is_a_number(ws, where):
    if where == "file":
        ws.config(("  lr: 0.01", "  lr: 1e-3"))
        code, out, err = ws.run("validate", CONFIG)
    else:
        ws.config()
        code, out, err = ws.run("validate", CONFIG, "--set", "optimizer.lr=1e-3")
    assert code == 0, err
    assert "lr: 0.001" in out


def test_a_real_process_prints_one_line(ws):
    """The same contract end to end, through the interpreter (no in-process capture)."""
    ws.config(("  lr: 0.01\n", "  lr: -0.1\n"))
    proc = subprocess.run(
        [sys.executable, "-m", "mlpcli", "train", CONFIG, "--logdir", str(ws.logdir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    error_line((proc.returncode, proc.stdout, proc.stderr), CONFIG, "optimizer.lr", "line 13")
    assert not ws.logdir.exists()


# --------------------------------------------------------------------------- the YAML file

COMMANDS = ["train", "validate"]


@pytest.mark.parametrize("command", COMMANDS)
def test_malformed_yaml_names_its_line(ws, command):
    ws.config(("  source: triangle\n", "  source: triangle: x\n"))
    ws.fails(command, CONFIG, expect=(CONFIG, "line 4", "invalid YAML"))


@pytest.mark.parametrize(
    ("edit", "line"),
    [
        (("  lr: 0.01\n", "\tlr: 0.01\n"), "line 13"),
        (("  epochs: 1\n", "  epochs: [1\n"), "line 16"),
        (("    - {units: 4, activation: relu}\n", "    - {units: 4, activation: relu\n"), "line 9"),
        (("  batch_size: 64\n", " batch_size: 64\n"), "line 16"),
    ],
    ids=["tab", "open-bracket", "open-brace", "bad-indent"],
)
def test_malformed_yaml_variants(ws, edit, line):
    ws.config(edit)
    ws.fails("train", CONFIG, expect=(CONFIG, line, "invalid YAML"))


def test_duplicate_key_names_both_lines(ws):
    ws.config(("  lr: 0.01\n", "  lr: 0.01\n  lr: 0.02\n"))
    ws.fails("train", CONFIG, expect=(CONFIG, "line 14", "duplicate key 'lr'", "line 13"))


@pytest.mark.parametrize("text", ["", "# nothing but a comment\n", "\n\n"])
def test_empty_config(ws, text):
    ws.write(CONFIG, text)
    ws.fails("train", CONFIG, expect=(CONFIG, "empty"))


def test_top_level_list(ws):
    ws.write(CONFIG, "- data\n- model\n")
    ws.fails("train", CONFIG, expect=(CONFIG, "mapping"))


def test_top_level_scalar(ws):
    ws.write(CONFIG, "just words\n")
    ws.fails("train", CONFIG, expect=(CONFIG, "mapping"))


@pytest.mark.parametrize("command", COMMANDS)
def test_missing_config_file(ws, command):
    ws.fails(command, "nothere.yaml", expect=("nothere.yaml", "not found"))


def test_directory_as_config(ws):
    (ws.root / "confdir").mkdir()
    ws.fails("train", "confdir", expect=("confdir", "directory"))


def test_config_not_utf8(ws):
    (ws.root / CONFIG).write_bytes(b"name: \xff\xfe\n")
    ws.fails("train", CONFIG, expect=(CONFIG,))


# --------------------------------------------------------------------------- unknown keys


def test_unknown_top_level_key(ws):
    ws.config(("optimizer:\n", "optimiser:\n"))
    ws.fails("train", CONFIG, expect=(CONFIG, "optimiser", "did you mean 'optimizer'", "line 11"))


@pytest.mark.parametrize("command", COMMANDS)
def test_unknown_nested_key(ws, command):
    ws.config(("  lr: 0.01\n", "  lr: 0.01\n  lrr: 0.1\n"))
    ws.fails(command, CONFIG, expect=(CONFIG, "optimizer.lrr", "did you mean 'lr'", "line 14"))


def test_misspelt_required_key(ws):
    """`lrr` instead of `lr`: the typo is named, with the key it was meant to be."""
    ws.config(("  lr: 0.01\n", "  lrr: 0.1\n"))
    ws.fails("train", CONFIG, expect=(CONFIG, "optimizer.lrr", "did you mean 'lr'", "line 13"))


def test_unknown_key_in_a_layer(ws):
    ws.config(("{units: 4, activation: relu}", "{units: 4, activation: relu, dropuot: 0.1}"))
    line = ws.fails("train", CONFIG, expect=(CONFIG, "model.layers.0.dropuot", "line 8"))
    assert "did you mean 'dropout'" in line


def test_unknown_key_in_train(ws):
    ws.config(("  epochs: 1\n", "  epochs: 1\n  epoch: 3\n"))
    ws.fails("train", CONFIG, expect=(CONFIG, "train.epoch", "did you mean 'epochs'", "line 16"))


# --------------------------------------------------------------------------- wrong types


@pytest.mark.parametrize(
    ("edit", "expect"),
    [
        (("  epochs: 1\n", "  epochs: ten\n"), ("train.epochs", "'ten'", "line 15")),
        (("  epochs: 1\n", "  epochs: 1.5\n"), ("train.epochs", "1.5", "line 15")),
        (("  batch_size: 64\n", "  batch_size: 64\n  shuffle: 3\n"), ("train.shuffle", "line 17")),
        ((LAYERS, "  layers: 5\n"), ("model.layers", "line 7")),
        ((LAYERS, "  layers: []\n"), ("model.layers", "line 7")),
        (("  lr: 0.01\n", "  lr: fast\n"), ("optimizer.lr", "'fast'", "line 13")),
        (("seed: 0\n", "seed: zero\n"), ("seed", "'zero'", "line 2")),
        (("{units: 4, activation: relu}", "{units: four}"), ("model.layers.0.units", "line 8")),
        (("loss: cross_entropy\n", "loss: 3\n"), ("loss", "line 10")),
    ],
    ids=[
        "epochs-ten",
        "epochs-float",
        "shuffle-3",
        "layers-5",
        "layers-empty",
        "lr-fast",
        "seed-zero",
        "units-four",
        "loss-3",
    ],
)
def test_wrong_type(ws, edit, expect):
    ws.config(edit)
    ws.fails("train", CONFIG, expect=(CONFIG, *expect))


def test_data_options_wrong_type(ws):
    ws.config(("{n_samples: 200}", "{n_samples: many}"))
    ws.fails("train", CONFIG, expect=(CONFIG, "data.options.n_samples", "'many'"))


def test_unknown_dataset_option(ws):
    ws.config(("{n_samples: 200}", "{n_sample: 200}"))
    ws.fails("train", CONFIG, expect=(CONFIG, "data.options.n_sample", "did you mean 'n_samples'"))


# --------------------------------------------------------------------------- out of range


@pytest.mark.parametrize("command", COMMANDS)
def test_negative_learning_rate(ws, command):
    ws.config(("  lr: 0.01\n", "  lr: -0.1\n"))
    ws.fails(command, CONFIG, expect=(CONFIG, "optimizer.lr", "greater than 0", "-0.1", "line 13"))


@pytest.mark.parametrize(
    ("edit", "expect"),
    [
        (("  batch_size: 64\n", "  batch_size: 0\n"), ("train.batch_size", "0", "line 16")),
        (("  epochs: 1\n", "  epochs: -3\n"), ("train.epochs", "-3", "line 15")),
        (
            ("  options: {n_samples: 200}\n", "  options: {n_samples: 200}\n  val_split: 1.5\n"),
            ("data.val_split", "1.5", "line 6"),
        ),
        (
            ("{units: 4, activation: relu}", "{units: 4, activation: relu, dropout: 1.0}"),
            ("model.layers.0.dropout", "1.0", "line 8"),
        ),
        (
            ("{units: 4, activation: relu}", "{units: 0, activation: relu}"),
            ("model.layers.0.units", "line 8"),
        ),
        (("seed: 0\n", "seed: -1\n"), ("seed", "-1", "line 2")),
        (("{n_samples: 200}", "{n_samples: 200, noise: 2}"), ("data.options.noise", "2")),
    ],
    ids=[
        "batch_size-0",
        "epochs-neg",
        "val_split-1.5",
        "dropout-1",
        "units-0",
        "seed-neg",
        "noise-2",
    ],
)
def test_out_of_range(ws, edit, expect):
    ws.config(edit)
    ws.fails("train", CONFIG, expect=(CONFIG, *expect))


# --------------------------------------------------------------------------- unknown names


@pytest.mark.parametrize(
    ("edit", "expect"),
    [
        (
            ("activation: relu}", "activation: rleu}"),
            ("model.layers.0.activation", "'rleu'", "did you mean 'relu'", "line 8"),
        ),
        (
            ("loss: cross_entropy\n", "loss: crossentropy\n"),
            ("loss", "'crossentropy'", "did you mean 'cross_entropy'", "line 10"),
        ),
        (
            ("  name: adam\n", "  name: adm\n"),
            ("optimizer.name", "'adm'", "did you mean 'adam'", "line 12"),
        ),
        (
            ("  layers:\n", "  init: he_norml\n  layers:\n"),
            ("model.init", "'he_norml'", "did you mean 'he_normal'", "line 7"),
        ),
        (
            ("  source: triangle\n", "  source: triangel\n"),
            ("data.source", "triangel", "did you mean", "'triangle'"),
        ),
        (
            ("  source: triangle\n  options: {n_samples: 200}\n", "  source: triangel\n"),
            ("data.source", "triangel", "did you mean", "'triangle'"),
        ),
        (
            ("  epochs: 1\n", "  epochs: 1\n  early_stopping: {monitor: val/acc}\n"),
            ("train.early_stopping.monitor", "did you mean 'val/accuracy'", "line 16"),
        ),
        (
            ("train:\n", "schedule: {name: cosin}\ntrain:\n"),
            ("schedule", "'cosin'", "did you mean 'cosine'", "line 14"),
        ),
        (("seed: 0\n", "seed: 0\ndevice: gpu\n"), ("device", "'gpu'", "line 3")),
        (("seed: 0\n", "seed: 0\ndtype: float16\n"), ("dtype", "'float16'", "line 3")),
    ],
    ids=[
        "activation",
        "loss",
        "optimizer",
        "init",
        "dataset",
        "dataset-no-options",
        "monitor",
        "schedule",
        "device",
        "dtype",
    ],
)
def test_unknown_name(ws, edit, expect):
    ws.config(edit)
    ws.fails("train", CONFIG, expect=(CONFIG, *expect))


# --------------------------------------------------------------------------- missing keys


def test_missing_model(ws):
    ws.config(("model:\n" + LAYERS, ""))
    line = ws.fails("train", CONFIG, expect=(CONFIG, "missing"))
    assert "model" in line.replace(CONFIG, "")


def test_missing_data_source(ws):
    ws.config(("  source: triangle\n", ""))
    ws.fails("train", CONFIG, expect=(CONFIG, "data.source", "missing"))


def test_missing_learning_rate(ws):
    ws.config(("  lr: 0.01\n", ""))
    ws.fails("train", CONFIG, expect=(CONFIG, "optimizer.lr", "missing"))


def test_missing_optimizer_name(ws):
    ws.config(("  name: adam\n", ""))
    ws.fails("train", CONFIG, expect=(CONFIG, "optimizer", "name"))


def test_missing_units(ws):
    ws.config(("{units: 4, activation: relu}", "{activation: relu}"))
    ws.fails("train", CONFIG, expect=(CONFIG, "model.layers.0.units", "missing", "line 8"))


# --------------------------------------------------------------------------- cross-field


@pytest.mark.parametrize(
    ("edit", "expect"),
    [
        (
            ("{units: 2, activation: softmax}", "{units: 2, activation: sigmoid}"),
            ("model.layers.1.activation", "cross_entropy", "softmax", "sigmoid", "line 9"),
        ),
        (
            ("{units: 4, activation: relu}", "{units: 4, activation: softmax}"),
            ("model.layers.0.activation", "softmax", "line 8"),
        ),
        (
            ("{units: 2, activation: softmax}", "{units: 2, activation: softmax, dropout: 0.5}"),
            ("model.layers.1.dropout", "line 9"),
        ),
        (
            ("  lr: 0.01\n", "  lr: 0.01\n  momentum: 0.9\n"),
            ("optimizer.momentum", "unknown key", "line 14"),
        ),
    ],
    ids=["ce-sigmoid", "hidden-softmax", "output-dropout", "adam-momentum"],
)
def test_cross_field(ws, edit, expect):
    ws.config(edit)
    ws.fails("train", CONFIG, expect=(CONFIG, *expect))


def test_accuracy_monitor_for_regression(ws):
    ws.config(
        ("loss: cross_entropy\n", "loss: mse\ncheckpoint: {monitor: val/accuracy}\n"),
        ("{units: 2, activation: softmax}", "{units: 1, activation: linear}"),
    )
    ws.fails("train", CONFIG, expect=(CONFIG, "checkpoint.monitor", "regression", "line 11"))


def test_bce_with_two_output_units(ws):
    ws.config(
        ("loss: cross_entropy\n", "loss: binary_cross_entropy\n"),
        ("{units: 2, activation: softmax}", "{units: 2, activation: sigmoid}"),
    )
    ws.fails("train", CONFIG, expect=(CONFIG, "model.layers.1.units", "1 output unit", "line 9"))


@pytest.mark.parametrize("command", COMMANDS)
def test_output_units_do_not_match_the_classes(ws, command):
    ws.config(("{units: 2, activation: softmax}", "{units: 3, activation: softmax}"))
    ws.fails(command, CONFIG, expect=(CONFIG, "model.layers.1.units", "3", "2 classes"))


def test_bce_with_three_classes(ws):
    ws.config(
        (
            "  source: triangle\n  options: {n_samples: 200}\n",
            "  source: blobs\n  options: {n_samples: 200, n_classes: 3}\n",
        ),
        ("loss: cross_entropy\n", "loss: binary_cross_entropy\n"),
        ("{units: 2, activation: softmax}", "{units: 1, activation: sigmoid}"),
    )
    ws.fails("train", CONFIG, expect=(CONFIG, "binary_cross_entropy", "3"))


def test_regression_dataset_with_a_classification_loss(ws):
    ws.config(("  source: triangle\n  options: {n_samples: 200}\n", "  source: linear\n"))
    ws.fails("train", CONFIG, expect=(CONFIG, "data.source", "'linear'", "regression"))


def test_nesterov_without_momentum(ws):
    ws.config(("  name: adam\n  lr: 0.01\n", "  name: sgd\n  lr: 0.01\n  nesterov: true\n"))
    line = ws.fails("train", CONFIG, expect=(CONFIG, "nesterov", "momentum", "optimizer.nesterov"))
    assert "optimizer.sgd" not in line  # a pydantic union label, not a key of the file


def test_val_split_with_a_val_source(ws):
    ws.csv(CSV_ROWS)
    data_config(ws, "train.csv", "val_split: 0.3", "val: {source: train.csv}")
    ws.fails("train", CONFIG, expect=(CONFIG, "data.val_split", "line 5"))


def test_validation_csv_non_numeric_cell(ws):
    ws.csv(CSV_ROWS)
    rows = list(CSV_ROWS)
    rows[8] = "0.6,0.5x,1"  # line 9
    ws.csv(rows, name="val.csv")
    data_config(ws, "train.csv", "val: {source: val.csv}")
    ws.fails("train", CONFIG, expect=("val.csv", "line 9", "'b'", "0.5x"))


# --------------------------------------------------------------------------- data files


@pytest.mark.parametrize("command", COMMANDS)
def test_missing_data_file(ws, command):
    data_config(ws, "data/nothere.csv")
    ws.fails(command, CONFIG, expect=(CONFIG, "data.source", "data/nothere.csv", "not found"))


def test_data_source_is_a_directory(ws):
    (ws.root / "datadir").mkdir()
    data_config(ws, "datadir")
    ws.fails("train", CONFIG, expect=(CONFIG, "data.source", "datadir", "directory"))


@pytest.mark.parametrize("command", COMMANDS)
def test_csv_non_numeric_cell(ws, command):
    rows = list(CSV_ROWS)
    rows[3] = "0.5,abc,0"  # line 4 (the header is line 1)
    ws.csv(rows)
    data_config(ws, "train.csv")
    ws.fails(command, CONFIG, expect=("train.csv", "line 4", "'b'", "abc"))


@pytest.mark.parametrize("cell", ["nan", "NaN", "inf", "-inf"])
def test_csv_nan_cell(ws, cell):
    rows = list(CSV_ROWS)
    rows[2] = f"{cell},0.1,1"  # line 3
    ws.csv(rows)
    data_config(ws, "train.csv")
    ws.fails("train", CONFIG, expect=("train.csv", "line 3", "'a'"))


def test_csv_empty_cell(ws):
    rows = list(CSV_ROWS)
    rows[6] = "0.2,,0"  # line 7
    ws.csv(rows)
    data_config(ws, "train.csv")
    ws.fails("train", CONFIG, expect=("train.csv", "line 7", "'b'"))


def test_csv_nan_label(ws):
    rows = list(CSV_ROWS)
    rows[5] = "0.7,0.4,nan"  # line 6
    ws.csv(rows)
    data_config(ws, "train.csv")
    ws.fails("train", CONFIG, expect=("train.csv", "line 6", "'target'"))


@pytest.mark.parametrize("row", ["0.7,1", "0.7,0.4,1,9"], ids=["too-few", "too-many"])
def test_csv_wrong_number_of_fields(ws, row):
    rows = list(CSV_ROWS)
    rows[4] = row  # line 5
    ws.csv(rows)
    data_config(ws, "train.csv")
    ws.fails("train", CONFIG, expect=("train.csv", "line 5"))


def test_csv_missing_target_column(ws):
    ws.csv(["a,b,label", *CSV_ROWS[1:]])
    data_config(ws, "train.csv")
    ws.fails("train", CONFIG, expect=("train.csv", "'target'", "a, b, label"))


def test_csv_named_target_missing(ws):
    ws.csv(CSV_ROWS)
    data_config(ws, "train.csv", "target: labels")
    ws.fails("train", CONFIG, expect=("train.csv", "'labels'", "data.target", "a, b, target"))


def test_csv_missing_feature_column(ws):
    ws.csv(CSV_ROWS)
    data_config(ws, "train.csv", "features: [a, c]")
    ws.fails("train", CONFIG, expect=("train.csv", "'c'", "data.features"))


@pytest.mark.parametrize("text", ["", "a,b,target\n"], ids=["empty", "header-only"])
def test_csv_without_rows(ws, text):
    ws.write("train.csv", text)
    data_config(ws, "train.csv")
    ws.fails("train", CONFIG, expect=("train.csv",))


def test_npz_label_count_differs(ws):
    np.savez(ws.root / "bad.npz", x=np.zeros((10, 2)), y=np.arange(9) % 2)
    data_config(ws, "bad.npz")
    ws.fails("train", CONFIG, expect=("bad.npz", "9 labels", "10 samples"))


def test_npz_missing_key(ws):
    np.savez(ws.root / "bad.npz", x=np.zeros((10, 2)), labels=np.arange(10) % 2)
    data_config(ws, "bad.npz")
    ws.fails("train", CONFIG, expect=("bad.npz", "data.target", "labels"))


def test_npz_nan_feature(ws):
    x = np.zeros((10, 2))
    x[3, 1] = np.nan
    np.savez(ws.root / "bad.npz", x=x, y=np.arange(10) % 2)
    data_config(ws, "bad.npz")
    ws.fails("train", CONFIG, expect=("bad.npz", "sample 3", "feature 1"))


def test_npy_without_target(ws):
    np.save(ws.root / "x.npy", np.zeros((10, 2)))
    data_config(ws, "x.npy")
    ws.fails("train", CONFIG, expect=(CONFIG, "data.target", "x.npy"))


def test_npy_label_count_differs(ws):
    np.save(ws.root / "x.npy", np.zeros((10, 2)))
    np.save(ws.root / "y.npy", np.arange(8) % 2)
    data_config(ws, "x.npy", "target: y.npy")
    ws.fails("train", CONFIG, expect=("y.npy", "8 labels", "10 samples"))


def test_not_a_data_file(ws):
    ws.write("data.npz", "this is text, not a zip archive\n")
    data_config(ws, "data.npz")
    ws.fails("train", CONFIG, expect=("data.npz",))


def test_truncated_npz(ws):
    np.savez(ws.root / "full.npz", x=np.zeros((100, 2)), y=np.arange(100) % 2)
    blob = (ws.root / "full.npz").read_bytes()
    (ws.root / "cut.npz").write_bytes(blob[: len(blob) // 2])
    data_config(ws, "cut.npz")
    ws.fails("train", CONFIG, expect=("cut.npz",))


def _pickled_npz(path: Path, marker: Path, *, key: str = "x") -> None:
    """An .npz whose `key` array is pickled objects; unpickling it creates `marker`."""
    arrays = {"x": np.zeros((10, 2)), "y": np.arange(10) % 2}
    arrays[key] = np.array([Payload(str(marker))] * 10, dtype=object)
    np.savez(path, **arrays)


def test_the_pickle_payload_works(tmp_path):
    """Guard for the test below: loading the file with pickles allowed does create the marker."""
    marker = tmp_path / "marker"
    _pickled_npz(tmp_path / "evil.npz", marker)
    with np.load(tmp_path / "evil.npz", allow_pickle=True) as z:
        z["x"]
    assert marker.exists()


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("key", ["x", "y"])
def test_pickled_npz_is_never_unpickled(ws, command, key):
    marker = ws.root / "UNPICKLED"
    _pickled_npz(ws.root / "evil.npz", marker, key=key)
    data_config(ws, "evil.npz")
    line = ws.fails(command, CONFIG, expect=("evil.npz",))
    assert not marker.exists()
    assert "pickle" in line.lower()


def test_pickled_init_from_is_never_unpickled(ws):
    marker = ws.root / "UNPICKLED"
    np.savez(
        ws.root / "evil.npz", **{"params/0/W": np.array([Payload(str(marker))] * 8, dtype=object)}
    )
    ws.config(("  layers:\n", "  init_from: evil.npz\n  layers:\n"))
    ws.fails("train", CONFIG, expect=("evil.npz",))
    assert not marker.exists()


# --------------------------------------------------------------------------- --set


@pytest.mark.parametrize("command", COMMANDS)
def test_set_unknown_key(ws, command):
    ws.config()
    ws.fails(
        command,
        CONFIG,
        "--set",
        "optimizer.lrr=0.1",
        expect=("--set optimizer.lrr", "did you mean 'lr'"),
    )


def test_set_unknown_top_level_key(ws):
    ws.config()
    ws.fails(
        "train",
        CONFIG,
        "--set",
        "optimiser.lr=0.1",
        expect=("--set optimiser.lr", "did you mean 'optimizer'"),
    )


def test_set_without_equals(ws):
    ws.config()
    ws.fails("train", CONFIG, "--set", "optimizer.lr", expect=("--set", "optimizer.lr", "="))


def test_set_with_empty_key(ws):
    ws.config()
    ws.fails("train", CONFIG, "--set", "=3", expect=("--set",))


def test_set_list_index_out_of_range(ws):
    ws.config()
    ws.fails(
        "train",
        CONFIG,
        "--set",
        "model.layers.7.units=3",
        expect=("--set model.layers.7.units", "2"),
    )


def test_set_list_index_not_a_number(ws):
    ws.config()
    ws.fails(
        "train",
        CONFIG,
        "--set",
        "model.layers.first.units=3",
        expect=("--set model.layers.first.units",),
    )


@pytest.mark.parametrize("command", COMMANDS)
def test_set_bad_value(ws, command):
    ws.config()
    ws.fails(
        command,
        CONFIG,
        "--set",
        "optimizer.lr=-1",
        expect=("--set optimizer.lr", "greater than 0", "-1"),
    )


def test_set_bad_yaml_value(ws):
    ws.config()
    ws.fails("train", CONFIG, "--set", "train.epochs=[1", expect=("--set train.epochs",))


def test_set_into_a_scalar(ws):
    ws.config()
    ws.fails("train", CONFIG, "--set", "loss.name=mse", expect=("--set loss.name",))


def test_set_unknown_key_in_a_layer(ws):
    ws.config()
    ws.fails(
        "train",
        CONFIG,
        "--set",
        "model.layers.0.unit=8",
        expect=("--set model.layers.0.unit", "did you mean 'units'"),
    )


# --------------------------------------------------------------------------- model.init_from


def _init_from(ws: Workspace, arrays: dict[str, np.ndarray]) -> str:
    np.savez(ws.root / "init.npz", **arrays)
    return ws.config(("  layers:\n", "  init_from: init.npz\n  layers:\n"))


GOOD_PARAMS = {
    "params/0/W": np.zeros((2, 4), np.float32),
    "params/0/b": np.zeros(4, np.float32),
    "params/1/W": np.zeros((4, 2), np.float32),
    "params/1/b": np.zeros(2, np.float32),
}


def test_init_from_good_params_trains(ws):
    """Guard for the cases below: the right shapes are accepted."""
    _init_from(ws, GOOD_PARAMS)
    code, out, err = ws.train(CONFIG)
    assert code == 0, err


def test_init_from_missing_file(ws):
    ws.config(("  layers:\n", "  init_from: nothere.npz\n  layers:\n"))
    ws.fails("train", CONFIG, expect=("model.init_from", "nothere.npz", "not found"))


def test_init_from_wrong_shape(ws):
    _init_from(ws, {**GOOD_PARAMS, "params/0/W": np.zeros((3, 4), np.float32)})
    ws.fails("train", CONFIG, expect=("model.init_from", "init.npz", "layer 0", "(3, 4)", "(2, 4)"))


def test_init_from_missing_layer(ws):
    params = {k: v for k, v in GOOD_PARAMS.items() if not k.startswith("params/1/")}
    _init_from(ws, params)
    ws.fails("train", CONFIG, expect=("model.init_from", "init.npz", "params/1/W"))


def test_init_from_not_an_npz(ws):
    ws.write("init.npz", "not a zip\n")
    ws.config(("  layers:\n", "  init_from: init.npz\n  layers:\n"))
    ws.fails("train", CONFIG, expect=("init.npz",))


# --------------------------------------------------------------------------- CLI arguments


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (("--bogus",), ("--bogus",)),
        (("--epochs", "abc"), ("--epochs", "integer")),
        (("--epochs", "0"), ("--epochs",)),
        (("--seed", "x"), ("--seed", "integer")),
        (("--device", "tpu"), ("--device", "'tpu'")),
    ],
    ids=["unknown-option", "epochs-abc", "epochs-0", "seed-x", "device-tpu"],
)
def test_bad_train_arguments(ws, args, expect):
    ws.config()
    ws.fails("train", CONFIG, *args, expect=expect)


def test_option_without_its_value(ws):
    ws.config()
    before = snapshot(ws.root)
    error_line(ws.run("train", CONFIG, "--logdir", ws.logdir, "--epochs"), "--epochs")
    assert snapshot(ws.root) == before


def test_unknown_command(ws):
    ws.fails("trian", expect=("trian",))


def test_train_without_config(ws):
    ws.fails("validate", expect=("argument", "config"))


# --------------------------------------------------------------------------- no data lost


def test_existing_run_folder_is_not_overwritten(ws):
    ws.config()
    keep = ws.logdir / "run1" / "notes.txt"
    keep.parent.mkdir(parents=True)
    keep.write_bytes(b"precious\x00bytes\n")
    ws.fails("train", CONFIG, "--name", "run1", expect=("--name", "run1", "exists"))
    assert keep.read_bytes() == b"precious\x00bytes\n"
    assert sorted(p.name for p in keep.parent.iterdir()) == ["notes.txt"]


def test_existing_file_as_run_folder(ws):
    ws.config()
    ws.logdir.mkdir()
    (ws.logdir / "run1").write_bytes(b"a file\n")
    ws.fails("train", CONFIG, "--name", "run1", expect=("run1",))


def test_logdir_is_a_file(ws):
    ws.config()
    ws.write("notadir", "keep me\n")
    before = snapshot(ws.root)
    result = ws.run("train", CONFIG, "--logdir", "notadir")
    error_line(result, "notadir")
    assert snapshot(ws.root) == before


def test_empty_existing_run_folder_is_used(ws):
    ws.config()
    (ws.logdir / "run1").mkdir(parents=True)
    code, out, err = ws.train(CONFIG, "--name", "run1")
    assert code == 0, err
    assert (ws.logdir / "run1" / "config.yaml").is_file()


def test_init_refuses_to_overwrite(ws):
    ws.write("existing.yaml", "# mine\n")
    ws.fails("init", "-o", "existing.yaml", expect=("existing.yaml", "exists"))
    assert (ws.root / "existing.yaml").read_text() == "# mine\n"


def test_init_unknown_template(ws):
    ws.fails("init", "clasification", "-o", "new.yaml", expect=("'clasification'",))
    assert not (ws.root / "new.yaml").exists()


def test_init_writes_a_new_file(ws):
    """Guard: `init -o` works on a new file, so refusing to overwrite is the only error."""
    code, out, err = ws.run("init", "-o", "new.yaml")
    assert code == 0, err
    assert (ws.root / "new.yaml").is_file()
