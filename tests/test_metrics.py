"""Classifier and regression metrics: the functions against hand-worked values and against
scikit-learn, and what training logs with them each epoch (scalars, the confusion matrix
image, the PR curve), what `eval --json` reports, and the new metrics as monitors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import cli, load_last, small_config, user_error, write_config

from mlpcli import metrics

# ---------------------------------------------------------------- the functions


def test_confusion_and_f1_by_hand():
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 1, 0, 1, 2, 2])
    cm = metrics.confusion_matrix(y_true, y_pred, 4)
    np.testing.assert_array_equal(cm[:3, :3], [[2, 1, 0], [0, 1, 1], [0, 0, 1]])
    assert cm[3].sum() == cm[:, 3].sum() == 0
    # F1 = 2TP / (2TP + FP + FN): class 0: 4/5, class 1: 2/4, class 2: 2/3; class 3 absent
    assert metrics.f1_macro(cm) == pytest.approx((4 / 5 + 2 / 4 + 2 / 3) / 3, rel=1e-15)


def test_auc_by_hand_with_ties():
    # positives score 0.9, 0.5, 0.3; negatives 0.5, 0.1. Pairs (pos > neg): 0.9 beats both,
    # 0.5 ties 0.5 (half) and beats 0.1, 0.3 beats 0.1 only: (2 + 1.5 + 1) / 6
    y = np.array([1, 0, 1, 1, 0])
    s = np.array([0.9, 0.5, 0.5, 0.3, 0.1])
    assert metrics.roc_auc(y, s) == pytest.approx(4.5 / 6, rel=1e-15)
    assert np.isnan(metrics.roc_auc(np.ones(3), np.array([0.1, 0.2, 0.3])))


def test_regression_by_hand():
    y = np.array([[1.0], [2.0], [3.0], [4.0]])
    pred = np.array([[1.5], [2.0], [2.0], [4.0]])
    found = metrics.regression(y, pred)
    assert found["mse"] == pytest.approx((0.25 + 0 + 1 + 0) / 4)
    assert found["mae"] == pytest.approx((0.5 + 0 + 1 + 0) / 4)
    assert found["r2"] == pytest.approx(1 - 1.25 / 5.0)  # SS_tot: 2.25 + .25 + .25 + 2.25


sk = pytest.importorskip  # scikit-learn is the reference where it is installed


@pytest.mark.parametrize("seed", range(6))
def test_f1_macro_and_auc_match_sklearn(seed):
    skm = sk("sklearn.metrics")
    rng = np.random.default_rng(seed)
    n, c = int(rng.integers(5, 300)), int(rng.integers(2, 8))
    y_true = rng.integers(0, c, n)
    y_pred = np.where(rng.random(n) < 0.6, y_true, rng.integers(0, c, n))
    if seed % 2:
        y_pred[y_pred == c - 1] = 0  # a class never predicted
    cm = metrics.confusion_matrix(y_true, y_pred, c)
    np.testing.assert_array_equal(cm, skm.confusion_matrix(y_true, y_pred, labels=range(c)))
    expected = skm.f1_score(y_true, y_pred, average="macro", zero_division=0)
    assert metrics.f1_macro(cm) == pytest.approx(expected, rel=1e-12)

    labels = rng.integers(0, 2, n)
    labels[:2] = [0, 1]
    scores = rng.random(n).astype(np.float32)
    if seed % 3 == 0:
        scores = np.round(scores, 1)  # many ties
    expected = skm.roc_auc_score(labels, scores)
    assert metrics.roc_auc(labels, scores) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("k", [1, 3])
def test_regression_metrics_match_sklearn(k):
    skm = sk("sklearn.metrics")
    rng = np.random.default_rng(k)
    y = rng.normal(size=(50, k)) * 10 + 3
    pred = y + rng.normal(size=(50, k))
    found = metrics.regression(y, pred)
    assert found["mse"] == pytest.approx(skm.mean_squared_error(y, pred), rel=1e-12)
    assert found["mae"] == pytest.approx(skm.mean_absolute_error(y, pred), rel=1e-12)
    assert found["r2"] == pytest.approx(skm.r2_score(y, pred), rel=1e-12)


def test_classification_reads_each_kind_of_output():
    probs = np.array([[0.2, 0.8], [0.6, 0.4], [0.5, 0.5]])
    softmax = metrics.classification(np.array([1, 0, 1]), probs, "cross_entropy")
    sigmoid = metrics.classification(np.array([1, 0, 1]), probs[:, 1:], "binary_cross_entropy")
    np.testing.assert_array_equal(softmax["confusion"], [[1, 0], [1, 1]])  # a tie: argmax 0
    np.testing.assert_array_equal(sigmoid["confusion"], [[1, 0], [1, 1]])  # 0.5 is not > 0.5
    assert softmax["auc"] == sigmoid["auc"] == pytest.approx(1.0)
    three = metrics.classification(np.array([2, 0]), np.eye(3)[[2, 1]], "cross_entropy")
    assert "auc" not in three and three["f1_macro"] == pytest.approx((1 + 0 + 0) / 3)


# ---------------------------------------------------------------- runs


def _events(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run), size_guidance={"images": 0, "tensors": 0, "scalars": 0})
    acc.Reload()
    return acc


def _train(tmp_path, capsys, config, name="r"):
    path = write_config(tmp_path / f"{name}.yaml", config)
    code, _, err = cli(capsys, "train", path, "--logdir", tmp_path / "logs", "--name", name, "-q")
    assert code == 0, err
    return tmp_path / "logs" / name


def _val_outputs(run):
    """The validation data and the last checkpoint's outputs on it, recomputed."""
    from mlpcli import inference
    from mlpcli.data import prepare

    loaded = inference.load(run / "checkpoints" / "last.npz")
    data = prepare(loaded.config, "test")
    return data, inference.forward(loaded, data.x_val)


def test_binary_run_logs_f1_auc_confusion_and_pr_curve(tmp_path, capsys):
    skm = sk("sklearn.metrics")
    run = _train(tmp_path, capsys, small_config())
    acc = _events(run)
    steps = [e.step for e in acc.Scalars("val/loss")]
    assert len(steps) == 3
    for tag in ("val/f1_macro", "val/auc"):
        assert [e.step for e in acc.Scalars(tag)] == steps
    images = acc.Images("vis/confusion_matrix")
    assert [e.step for e in images] == steps
    assert images[0].encoded_image_string.startswith(b"\x89PNG")
    assert images[0].width == images[0].height  # a square grid of 2 x 2 cells
    assert [e.step for e in acc.Tensors("val/pr_curve")] == steps

    _, meta = load_last(run)
    data, out = _val_outputs(run)
    y, pred = data.y_val, out.argmax(axis=1)
    assert meta["metrics"]["val/f1_macro"] == pytest.approx(
        skm.f1_score(y, pred, average="macro"), rel=1e-12
    )
    assert meta["metrics"]["val/auc"] == pytest.approx(
        skm.roc_auc_score(y, out[:, 1]),
        rel=1e-6,  # float32 outputs, recomputed
    )
    code, text, err = cli(capsys, "eval", run, "--json")
    assert code == 0, err
    result = json.loads(text)
    assert result["f1_macro"] == meta["metrics"]["val/f1_macro"]
    assert result["auc"] == meta["metrics"]["val/auc"]


def test_sigmoid_model_has_auc_and_pr_curve(tmp_path, capsys):
    config = small_config(
        loss="binary_cross_entropy",
        model={"layers": [{"units": 6, "activation": "tanh"}, {"units": 1}]},
    )
    run = _train(tmp_path, capsys, config)
    acc = _events(run)
    assert len(acc.Scalars("val/auc")) == 3 and len(acc.Tensors("val/pr_curve")) == 3
    data, out = _val_outputs(run)
    _, meta = load_last(run)
    expected = metrics.roc_auc(data.y_val, out[:, 0])
    assert meta["metrics"]["val/auc"] == pytest.approx(expected, rel=1e-12)


def test_multiclass_run_has_a_confusion_matrix_and_no_auc(tmp_path, capsys):
    config = small_config(
        data={"source": "blobs", "options": {"n_samples": 300, "n_classes": 4}, "val_split": 0.2},
        model={"layers": [{"units": 8, "activation": "tanh"}, {"units": 4}]},
    )
    run = _train(tmp_path, capsys, config)
    acc = _events(run)
    assert "val/auc" not in acc.Tags()["scalars"] and "val/pr_curve" not in acc.Tags()["tensors"]
    assert len(acc.Scalars("val/f1_macro")) == 3
    image = acc.Images("vis/confusion_matrix")[-1]
    from mlpcli.visualize import confusion_image

    _, meta = load_last(run)
    data, out = _val_outputs(run)
    cm = metrics.confusion_matrix(data.y_val, out.argmax(axis=1), 4)
    assert cm.sum() == 60
    assert (image.height, image.width) == confusion_image(cm).shape[:2]


def test_too_many_classes_for_a_picture(tmp_path, capsys):
    n_classes = metrics.MAX_CONFUSION_CLASSES + 1
    config = small_config(
        data={
            "source": "synthetic",
            "options": {"n_samples": 400, "n_features": 4, "n_classes": n_classes},
            "val_split": 0.25,
        },
        model={"layers": [{"units": n_classes}]},
        train={"epochs": 1, "batch_size": 64},
    )
    acc = _events(_train(tmp_path, capsys, config))
    assert "vis/confusion_matrix" not in acc.Tags()["images"]
    assert len(acc.Scalars("val/f1_macro")) == 1


def test_regression_logs_mae_and_r2_in_original_units(tmp_path, capsys):
    skm = sk("sklearn.metrics")
    config = small_config(
        data={
            "source": "linear",
            "options": {"n_samples": 200, "noise": 0.5},
            "val_split": 0.25,
            "standardize_target": True,
        },
        model={"layers": [{"units": 1, "activation": "linear"}]},
        loss="mse",
        schedule=None,
        train={"epochs": 3, "batch_size": 32},
    )
    run = _train(tmp_path, capsys, config)
    acc = _events(run)
    assert len(acc.Scalars("val/mae")) == len(acc.Scalars("val/r2")) == 3
    assert "val/f1_macro" not in acc.Tags()["scalars"]
    _, meta = load_last(run)
    data, out = _val_outputs(run)
    y = data.y_val * data.y_std + data.y_mean  # back to the target's units
    pred = out * data.y_std + data.y_mean
    assert meta["metrics"]["val/mae"] == pytest.approx(skm.mean_absolute_error(y, pred), rel=1e-6)
    assert meta["metrics"]["val/r2"] == pytest.approx(skm.r2_score(y, pred), rel=1e-5)
    code, text, err = cli(capsys, "eval", run, "--json")
    result = json.loads(text)
    assert set(result) == {"loss", "n_samples", "mse", "mae", "r2"}
    assert result["mae"] == meta["metrics"]["val/mae"] and result["r2"] == meta["metrics"]["val/r2"]


def test_without_validation_data_there_are_no_val_tags(tmp_path, capsys):
    config = small_config(
        data={"source": "triangle", "options": {"n_samples": 200}, "val_split": 0}
    )
    acc = _events(_train(tmp_path, capsys, config))
    tags = acc.Tags()
    shown = [*tags["scalars"], *tags["images"], *tags["tensors"]]
    assert not [t for t in shown if t.startswith("val/")]


# ---------------------------------------------------------------- monitors


def test_best_by_f1_macro_keeps_the_epoch_of_the_highest(tmp_path, capsys):
    config = small_config(
        checkpoint={"monitor": "val/f1_macro", "every_n_epochs": 1, "keep_last": 5},
        train={"epochs": 5, "batch_size": 32, "early_stopping": {"monitor": "val/auc"}},
    )
    run = _train(tmp_path, capsys, config)
    _, meta = load_last(run)
    assert meta["config"]["checkpoint"]["mode"] == "max"
    assert meta["config"]["train"]["early_stopping"]["mode"] == "max"
    f1 = [e.value for e in _events(run).Scalars("val/f1_macro")]
    _, best = load_last(run, "best.npz")
    assert best["epoch"] == int(np.argmax(f1)) + 1  # the first epoch of the highest value


@pytest.mark.parametrize(
    "changes, fragments",
    [
        (
            {"checkpoint": {"monitor": "val/mae"}},
            ["checkpoint.monitor: mae is for regression"],
        ),
        (
            {
                "data": {"source": "blobs", "options": {"n_samples": 90}},
                "model": {"layers": [{"units": 3}]},
                "checkpoint": {"monitor": "val/auc"},
            },
            ["checkpoint.monitor: auc is for binary models; this one has 3 classes"],
        ),
        (
            {
                "data": {"source": "triangle", "val_split": 0},
                "train": {"early_stopping": {"monitor": "val/f1_macro"}},
            },
            ["train.early_stopping.monitor: f1_macro is measured on validation data"],
        ),
        (
            {
                "data": {"source": "linear", "options": {"n_samples": 50}},
                "model": {"layers": [{"units": 1, "activation": "linear"}]},
                "loss": "mse",
                "checkpoint": {"monitor": "val/f1_macro"},
            },
            ["checkpoint.monitor: f1_macro is for classification"],
        ),
    ],
    ids=["mae-on-classifier", "auc-on-3-classes", "f1-without-val", "f1-on-regression"],
)
def test_a_monitor_the_run_cannot_measure_is_refused(tmp_path, capsys, changes, fragments):
    path = write_config(tmp_path / "m.yaml", small_config(**changes))
    user_error(cli(capsys, "validate", path), "m.yaml", *fragments)
    user_error(cli(capsys, "train", path, "--logdir", tmp_path / "logs"), *fragments)
    assert not (tmp_path / "logs").exists()


def test_auc_monitor_needs_both_classes_in_the_validation_data(tmp_path, capsys):
    x = np.random.default_rng(0).normal(size=(40, 2))
    np.savez(tmp_path / "t.npz", x=x, y=np.arange(40) % 2)
    np.savez(tmp_path / "v.npz", x=x[:5], y=np.ones(5, dtype=int))
    config = small_config(
        data={"source": str(tmp_path / "t.npz"), "val": {"source": str(tmp_path / "v.npz")}},
        checkpoint={"monitor": "val/auc"},
    )
    path = write_config(tmp_path / "a.yaml", config)
    result = cli(capsys, "train", path, "--logdir", tmp_path / "logs")
    user_error(result, "checkpoint.monitor: val/auc needs both classes", "class 1 only")
    assert not (tmp_path / "logs").exists()


def test_the_readme_commands_of_this_section_run(tmp_path, capsys):
    import shlex
    from pathlib import Path

    from helpers import REPO

    text = (REPO / "README.md").read_text()
    section = text.split("## Imbalanced classes and metrics", 1)[1].split("\n## ", 1)[0]
    commands = [line for line in section.splitlines() if line.startswith("mlpcli ")]
    assert len(commands) == 3
    for i, line in enumerate(commands):
        args = [*shlex.split(line)[1:], "--logdir", str(tmp_path), "--name", f"r{i}", "-q"]
        args = [str(REPO / a) if a.startswith("configs/") else a for a in args]
        code, _, err = cli(capsys, *args)
        assert code == 0, (line, err)
        assert Path(tmp_path / f"r{i}" / "checkpoints" / "last.npz").is_file()


def test_confusion_image_shades_each_cell_by_its_share_of_the_row():
    from mlpcli.visualize import PALETTE, confusion_image

    image = confusion_image(np.array([[4, 0], [1, 1]]))
    height, width, _ = image.shape
    assert height == width and image.dtype == np.uint8
    cell = (width - 1 - 20) // 2  # one-digit labels: a 20-pixel margin
    corners = {(i, j): image[20 + i * cell + 2, 20 + j * cell + 2] for i in (0, 1) for j in (0, 1)}
    np.testing.assert_array_equal(corners[0, 0], PALETTE[0])  # all of row 0
    np.testing.assert_array_equal(corners[0, 1], [255, 255, 255])  # none of it
    np.testing.assert_array_equal(corners[1, 0], corners[1, 1])  # half each
    assert 0 < corners[1, 0][0] < 255
    # the count is written in the cell's middle, in ink that differs from the cell
    middle = image[20 + cell // 2 - 5 : 20 + cell // 2 + 5, 20 + cell // 2 - 3 : 20 + cell // 2 + 3]
    assert (middle != PALETTE[0]).any(axis=-1).any()
