"""The smaller commands: init, datasets, schema, validate, and the MNIST config's shape."""

import gzip
import json
import struct
import subprocess
import sys

import numpy as np
import pytest
import yaml
from helpers import CONFIGS, REPO, cli, load_last, only_run, user_error, write_config

from mlpcli.templates import TEMPLATES


@pytest.mark.parametrize("template", TEMPLATES)
def test_init_templates_are_valid_configs(template, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = cli(capsys, "init", template, "-o", "starter.yaml")
    assert code == 0 and "starter.yaml" in out
    text = (tmp_path / "starter.yaml").read_text()
    assert text.startswith("#")  # commented
    if template == "csv":  # names a data file the user provides: make one
        (tmp_path / "data").mkdir()
        rng = np.random.default_rng(0)
        rows = ["a,b,target"] + [
            f"{x:.3f},{y:.3f},{'yes' if x > y else 'no'}" for x, y in rng.normal(size=(100, 2))
        ]
        (tmp_path / "data" / "my-data.csv").write_text("\n".join(rows) + "\n")
    code, out, err = cli(capsys, "validate", "starter.yaml")
    assert code == 0, err
    assert "# ok:" in out


def test_init_prints_to_stdout_without_output(capsys):
    code, out, _ = cli(capsys, "init")
    assert code == 0
    assert yaml.safe_load(out)["model"]["layers"]


def test_datasets_lists_every_builtin_with_options(capsys):
    code, out, _ = cli(capsys, "datasets")
    assert code == 0
    for name in ("triangle", "xor", "spirals", "moons", "circles", "blobs", "linear", "synthetic"):
        assert name in out
    assert "n_samples=" in out and "n_classes=" in out and "n_features=" in out


def test_schema_is_json_schema_of_the_config(capsys):
    code, out, _ = cli(capsys, "schema")
    assert code == 0
    schema = json.loads(out)
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert {"data", "model", "optimizer", "train"} <= set(schema["properties"])
    assert schema["additionalProperties"] is False


def test_validate_prints_the_resolved_config(capsys):
    code, out, _ = cli(capsys, "validate", CONFIGS / "triangle.yaml", "--set", "train.epochs=3")
    assert code == 0
    resolved = yaml.safe_load(out)
    assert resolved["train"]["epochs"] == 3
    assert resolved["model"]["layers"][1]["activation"] == "softmax"
    assert resolved["optimizer"]["betas"] == [0.9, 0.999]  # defaults filled in


def test_python_dash_m_and_help_list_only_working_commands():
    result = subprocess.run(
        [sys.executable, "-m", "mlpcli", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    )
    for command in ("train", "validate", "init", "datasets", "schema"):
        assert command in result.stdout


def _idx(path, array):
    """Write an IDX file: 0, 0, dtype code 0x08 (ubyte), ndim, then big-endian dims."""
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_mnist_config_trains_on_mnist_shaped_idx_files(tmp_path, capsys, monkeypatch):
    rng = np.random.default_rng(0)
    folder = tmp_path / "data" / "mnist"
    folder.mkdir(parents=True)
    for split, n in (("train", 600), ("t10k", 100)):
        labels = rng.integers(0, 10, n)
        images = rng.integers(0, 40, (n, 28, 28))
        images[np.arange(n), labels, :] = 255  # a learnable stripe: row = label
        _idx(folder / f"{split}-images-idx3-ubyte.gz", images)
        _idx(folder / f"{split}-labels-idx1-ubyte.gz", labels)
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(
        capsys, "train", CONFIGS / "mnist.yaml", "--epochs", "2", "--logdir", "logs", "-q"
    )
    assert code == 0, err
    arrays, meta = load_last(only_run(tmp_path / "logs"))
    assert arrays["params/0/W"].shape == (784, 512)
    assert meta["metrics"]["val/accuracy"] > 0.9


def test_version_prints_the_package_version(capsys):
    from mlpcli import __version__

    code, out, err = cli(capsys, "--version")
    assert (code, out, err) == (0, f"mlpcli {__version__}\n", "")


def test_a_run_folder_stands_for_its_checkpoints(tmp_path, capsys):
    """SPEC: eval, predict and inspect take a RUN_DIR's best.npz (last.npz without one);
    resume takes its last.npz."""
    logs = tmp_path / "logs"
    config = CONFIGS / "xor.yaml"
    args = ("--logdir", logs, "--name", "r", "-q", "--epochs", "2")
    assert cli(capsys, "train", config, *args)[0] == 0
    run = logs / "r"
    best = json.loads(cli(capsys, "inspect", run / "checkpoints" / "best.npz", "--json")[1])
    via_folder = json.loads(cli(capsys, "inspect", run, "--json")[1])
    assert via_folder["path"] == str(run / "checkpoints" / "best.npz")
    assert via_folder["epoch"] == best["epoch"]
    assert cli(capsys, "eval", run, "--json")[0] == 0
    (run / "checkpoints" / "best.npz").unlink()  # no best kept: the folder means last.npz
    last = json.loads(cli(capsys, "inspect", run, "--json")[1])
    assert last["path"] == str(run / "checkpoints" / "last.npz")
    code, _, err = cli(capsys, "resume", run, "--epochs", "3", "-q")
    assert code == 0, err
    assert load_last(run)[1]["epoch"] == 3
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = cli(capsys, "eval", empty)
    assert (
        code == 2 and err.startswith(f"error: {empty}: is a directory") and "Traceback" not in err
    )


@pytest.mark.parametrize(
    "override, hint",
    [
        ("optimizer.learning_rate=0.1", "optimizer.lr"),
        ("max_iter=5", "train.epochs"),
        ("hidden_layer_sizes=[8]", "model.layers"),
        ("random_state=1", "seed"),
        ("optimizer.lrr=0.1", "did you mean 'lr'"),
    ],
)
def test_keys_from_other_libraries_get_mlpclis_name(capsys, override, hint):
    code, _, err = cli(capsys, "validate", CONFIGS / "xor.yaml", "--set", override)
    assert code == 2 and err.count("\n") == 1 and hint in err, err


def test_a_config_given_for_a_checkpoint_says_so(capsys):
    code, _, err = cli(capsys, "eval", CONFIGS / "xor.yaml")
    assert code == 2 and "expected a checkpoint" in err and "a text file" in err, err


def test_a_clash_with_a_set_override_names_the_override(capsys):
    code, _, err = cli(capsys, "validate", CONFIGS / "xor.yaml", "--set", "loss=mse")
    assert code == 2 and "model.layers.1.activation" in err and "after --set loss" in err, err


def test_inspect_shows_the_inputs_and_classes_and_keeps_its_columns(tmp_path, capsys):
    args = ("--logdir", tmp_path / "logs", "--name", "r", "-q", "--epochs", "1")
    assert cli(capsys, "train", CONFIGS / "xor.yaml", *args)[0] == 0
    code, out, _ = cli(capsys, "inspect", tmp_path / "logs" / "r")
    assert code == 0
    lines = out.splitlines()
    assert "  inputs     x0, x1" in lines and "  classes    0, 1" in lines
    metrics = [line for line in lines if line.lstrip().startswith(("train/", "val/"))]
    assert len({line.rindex(" ") for line in metrics}) == 1, metrics  # values line up


def test_eval_data_faults_name_options_and_keys_that_exist(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 2))
    y = (x[:, 0] > 0).astype(int)

    def csv(name, header):
        rows = [header] + [f"{a:.4f},{b:.4f},{t}" for (a, b), t in zip(x, y, strict=True)]
        (tmp_path / name).write_text("\n".join(rows) + "\n")

    csv("d.csv", "a,b,target")
    csv("other.csv", "a,c,target")
    csv("label.csv", "a,b,label")
    np.save(tmp_path / "x.npy", x.astype(np.float32))
    np.save(tmp_path / "y.npy", y)
    np.savez(tmp_path / "d.npz", feats=x, y=y)
    base = {
        "data": {"source": "d.csv"},
        "model": {"layers": [{"units": 4}, {"units": 2, "activation": "softmax"}]},
        "loss": "cross_entropy",
        "train": {"epochs": 1},
    }
    write_config(tmp_path / "c.yaml", base)
    base["data"]["features"] = ["a", "b"]
    write_config(tmp_path / "listed.yaml", base)
    for name in ("c", "listed"):
        assert cli(capsys, "train", f"{name}.yaml", "--name", name, "-q")[0] == 0
    cases = [
        ("c", ["other.csv"], "has no column 'b' (an input column of the model)"),
        ("listed", ["other.csv"], "has no column 'b' (data.features in the checkpoint's config)"),
        ("c", ["label.csv"], "has no column 'target' (--target)"),
        ("c", ["label.csv", "--target", "lab"], "has no column 'lab' (--target)"),
        ("c", ["x.npy"], "--target: must name the label file (.npy or IDX)"),
        ("c", ["x.npy", "--target", "nope.npy"], "--target: file not found: nope.npy"),
        ("listed", ["x.npy", "--target", "y.npy"], "data.features in the checkpoint's config: "),
        ("listed", ["d.npz"], "data.features in the checkpoint's config: for an .npz file"),
        ("c", ["d.npz"], "d.npz: no feature array 'x' or 'features'; keys are: feats, y"),
        ("c", ["nothere.csv"], "error: --data: file not found: nothere.csv"),
    ]
    for run, args, fragment in cases:
        line = user_error(cli(capsys, "eval", f"logs/{run}", "--data", *args), fragment)
        assert "--data." not in line and "(set " not in line, line
    code, out, _ = cli(capsys, "eval", "logs/c", "--data", "label.csv", "--target", "label")
    assert code == 0 and "accuracy" in out
