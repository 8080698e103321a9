"""Using checkpoints without training: eval, predict, inspect."""

import csv
import io
import json

import numpy as np
from helpers import cli, small_config, write_config


def _csv(path, header, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def _fruit_run(tmp_path, capsys):
    """A 3-class classifier on a CSV with string labels."""
    rng = np.random.default_rng(0)
    centers = {"apple": (2.0, 0.0), "banana": (-2.0, 0.0), "cherry": (0.0, 2.5)}
    rows = []
    for label, (cx, cy) in centers.items():
        for x, y in rng.normal(size=(80, 2)) * 0.5 + (cx, cy):
            rows.append([round(x, 4), label, round(y, 4)])  # the target sits between features
    _csv(tmp_path / "fruit.csv", ["width", "kind", "height"], rows)
    config = small_config(
        data={"source": str(tmp_path / "fruit.csv"), "target": "kind", "val_split": 0.25},
        model={"layers": [{"units": 8, "activation": "relu"}, {"units": 3}]},
        train={"epochs": 15, "batch_size": 16},
    )
    path = write_config(tmp_path / "fruit.yaml", config)
    assert cli(capsys, "train", path, "--logdir", tmp_path / "logs", "--name", "f", "-q")[0] == 0
    return tmp_path / "logs" / "f" / "checkpoints" / "last.npz"


def test_classifier_eval_predict_inspect(tmp_path, capsys):
    last = _fruit_run(tmp_path, capsys)
    code, out, err = cli(capsys, "eval", last, "--json")
    assert code == 0 and err == ""
    metrics = json.loads(out)
    assert set(metrics) == {"loss", "n_samples", "accuracy", "f1_macro"}  # 3 classes: no auc
    assert metrics["n_samples"] == 60 and metrics["accuracy"] > 0.9
    # the same numbers the run logged for its last epoch
    meta = json.loads(cli(capsys, "inspect", last, "--json")[1])
    assert metrics["accuracy"] == meta["metrics"]["val/accuracy"]
    assert metrics["f1_macro"] == meta["metrics"]["val/f1_macro"]
    assert abs(metrics["loss"] - meta["metrics"]["val/loss"]) < 1e-6

    _csv(tmp_path / "new.csv", ["height", "width"], [[0.0, 2.0], [0.0, -2.0], [2.5, 0.0]])
    code, out, err = cli(capsys, "predict", last, tmp_path / "new.csv", "--proba")
    assert code == 0, err
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ["prediction", "proba_apple", "proba_banana", "proba_cherry"]
    assert [r[0] for r in rows[1:]] == ["apple", "banana", "cherry"]
    for r in rows[1:]:
        assert abs(sum(map(float, r[1:])) - 1) < 1e-5

    out_file = tmp_path / "pred.csv"
    code, out, _ = cli(capsys, "predict", last, tmp_path / "new.csv", "-o", out_file)
    assert code == 0 and "3 predictions" in out
    assert out_file.read_text().splitlines() == ["prediction", "apple", "banana", "cherry"]

    # eval on another labelled file, with the run's target column
    _csv(
        tmp_path / "test.csv",
        ["width", "kind", "height"],
        [[2.0, "apple", 0.0], [-2.0, "cherry", 0.0]],
    )
    code, out, _ = cli(capsys, "eval", last, "--data", tmp_path / "test.csv", "--json")
    assert code == 0
    assert json.loads(out)["accuracy"] == 0.5 and json.loads(out)["n_samples"] == 2

    assert meta["epoch"] == 15 and meta["params"]["params/0/W"] == [2, 8]
    assert meta["classes"] == ["apple", "banana", "cherry"]
    code, out, _ = cli(capsys, "inspect", last)
    assert code == 0 and "epoch 15" in out and "params/1/W" in out


def test_regression_predictions_come_back_in_original_units(tmp_path, capsys):
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, size=(300, 2))
    y = 1000.0 + 250.0 * x[:, :1] - 80.0 * x[:, 1:]  # far from zero mean / unit scale
    np.savez(tmp_path / "r.npz", x=x, y=y)
    config = small_config(
        data={"source": str(tmp_path / "r.npz"), "standardize_target": True},
        model={"layers": [{"units": 1, "activation": "linear"}]},
        loss="mse",
        optimizer={"name": "sgd", "lr": 0.1},
        schedule=None,
        train={"epochs": 40, "batch_size": 16},
    )
    path = write_config(tmp_path / "r.yaml", config)
    assert cli(capsys, "train", path, "--logdir", tmp_path / "logs", "--name", "r", "-q")[0] == 0
    last = tmp_path / "logs" / "r" / "checkpoints" / "last.npz"
    code, out, _ = cli(capsys, "eval", last, "--json")
    metrics = json.loads(out)
    assert set(metrics) == {"loss", "n_samples", "mse", "mae", "r2"}
    assert metrics["r2"] > 0.999 and metrics["mae"] < 2.0  # in the target's own units
    np.save(tmp_path / "q.npy", np.array([[0.0, 0.0], [1.0, 0.0]]))
    code, out, _ = cli(capsys, "predict", last, tmp_path / "q.npy")
    rows = out.splitlines()
    assert rows[0] == "prediction"
    assert abs(float(rows[1]) - 1000.0) < 2 and abs(float(rows[2]) - 1250.0) < 3
    code, _, err = cli(capsys, "predict", last, tmp_path / "q.npy", "--proba")
    assert code == 2 and err.startswith("error: --proba") and len(err.splitlines()) == 1


def test_binary_model_gives_both_probabilities(tmp_path, capsys):
    config = small_config(
        data={"source": "blobs", "options": {"n_samples": 200, "n_classes": 2}},
        model={"layers": [{"units": 1, "activation": "sigmoid"}]},
        loss="binary_cross_entropy",
    )
    path = write_config(tmp_path / "b.yaml", config)
    assert cli(capsys, "train", path, "--logdir", tmp_path / "logs", "--name", "b", "-q")[0] == 0
    np.save(tmp_path / "q.npy", np.zeros((4, 2)))
    code, out, _ = cli(
        capsys, "predict", tmp_path / "logs/b/checkpoints/last.npz", tmp_path / "q.npy", "--proba"
    )
    assert code == 0
    header, *rows = out.splitlines()
    assert header == "prediction,proba_0,proba_1"
    assert len(rows) == 4 and all(
        abs(float(a) + float(b) - 1) < 1e-6 for _, a, b in (r.split(",") for r in rows)
    )


def test_eval_without_validation_data_warns(tmp_path, capsys):
    data = small_config()["data"] | {"val_split": 0}
    path = write_config(tmp_path / "c.yaml", small_config(data=data))
    assert cli(capsys, "train", path, "--logdir", tmp_path / "logs", "--name", "n", "-q")[0] == 0
    code, out, err = cli(capsys, "eval", tmp_path / "logs/n/checkpoints/last.npz", "--json")
    assert code == 0
    assert err.startswith("warning:") and "training data" in err
    assert json.loads(out)["n_samples"] == 300
