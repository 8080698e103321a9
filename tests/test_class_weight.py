"""train.class_weight: per-class loss weights, Σ wᵢ lᵢ / Σ wᵢ as torch's `weight=`.

The weighted training trajectories against PyTorch are in test_torch_parity.py; here: the
loss and its delta against their definition, the resolution of `balanced` and of a
mapping of labels, every bad value, gradcheck, exact resume and eval's weighted loss.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import cli, load_last, small_config, snapshot, user_error, write_config

from mlpcli.activations import ACTIVATIONS
from mlpcli.data.weights import class_weights
from mlpcli.losses import LOSSES


def _softmax(z):
    a = np.empty_like(z)
    ACTIVATIONS["softmax"](np, z, a)
    return a


def test_weighted_cross_entropy_and_delta_by_definition():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(7, 3))
    y = np.array([0, 2, 1, 2, 2, 0, 1])
    weight = np.array([0.5, 2.0, 3.0])
    grad = np.empty_like(z)
    loss = LOSSES["cross_entropy"](np, z, _softmax(z), y, grad, weight=weight)
    w = weight[y]
    nll = -np.log(_softmax(z)[np.arange(7), y])
    assert float(loss) == pytest.approx((w * nll).sum() / w.sum(), rel=1e-14)
    onehot = np.eye(3)[y]
    expected = (_softmax(z) - onehot) * (w / w.sum())[:, None]
    np.testing.assert_allclose(grad, expected, rtol=1e-13, atol=1e-16)


def test_weighted_binary_cross_entropy_and_delta_by_definition():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(6, 1)) * 3
    y = np.array([[0.0], [1.0], [1.0], [0.0], [1.0], [1.0]])
    weight = np.array([4.0, 0.25])
    p = 1 / (1 + np.exp(-z))
    grad = np.empty_like(z)
    loss = LOSSES["binary_cross_entropy"](np, z, p, y, grad, weight=weight)
    w = np.where(y[:, 0] == 1, weight[1], weight[0])
    per = -(y * np.log(p) + (1 - y) * np.log(1 - p))[:, 0]
    assert float(loss) == pytest.approx((w * per).sum() / w.sum(), rel=1e-13)
    np.testing.assert_allclose(grad[:, 0], (p - y)[:, 0] * w / w.sum(), rtol=1e-13)


@pytest.mark.parametrize("loss", ["cross_entropy", "binary_cross_entropy"])
def test_equal_weights_give_the_unweighted_loss(loss):
    rng = np.random.default_rng(2)
    if loss == "cross_entropy":
        z, y = rng.normal(size=(9, 4)), rng.integers(0, 4, 9)
        a, weight = _softmax(z), np.full(4, 2.5)
    else:
        z, y = rng.normal(size=(9, 1)), rng.integers(0, 2, (9, 1)).astype(float)
        a, weight = 1 / (1 + np.exp(-z)), np.full(2, 2.5)
    g1, g2 = np.empty_like(z), np.empty_like(z)
    plain = LOSSES[loss](np, z, a, y, g1)
    weighted = LOSSES[loss](np, z, a, y, g2, weight=weight)
    assert float(weighted) == pytest.approx(float(plain), rel=1e-14)
    np.testing.assert_allclose(g2, g1, rtol=1e-14)


# ---------------------------------------------------------------- resolving the config


def test_balanced_is_sklearns_compute_class_weight():
    y = np.array([0, 0, 0, 0, 0, 0, 1, 1, 2, 0, 2, 2, 2])
    classes = np.array(["a", "b", "c"])
    ours = class_weights("balanced", classes, y, "c.yaml")
    # n_train / (n_classes * count_c), as SPEC and scikit-learn define it
    np.testing.assert_allclose(ours, len(y) / (3 * np.array([7, 2, 4])), rtol=1e-15)
    sklearn = pytest.importorskip("sklearn.utils.class_weight")
    np.testing.assert_allclose(
        ours, sklearn.compute_class_weight("balanced", classes=np.arange(3), y=y), rtol=1e-15
    )


def test_a_mapping_names_labels_as_the_data_spells_them():
    y = np.array([0, 1, 2, 1])
    strings = np.array(["cat", "dog", "eel"])
    np.testing.assert_array_equal(
        class_weights({"dog": 3.0}, strings, y, "c.yaml"), [1.0, 3.0, 1.0]
    )
    numbers = np.array([-1, 4, 7])
    # YAML numbers, or strings of numbers as a checkpoint's JSON config holds them
    np.testing.assert_array_equal(
        class_weights({7: 2.0, "-1": 0.5}, numbers, y, "c.yaml"), [0.5, 1.0, 2.0]
    )
    halves = np.array([0.5, 1.5])
    np.testing.assert_array_equal(class_weights({1.5: 4.0}, halves, y[:2] % 2, "c"), [1, 4])


# ---------------------------------------------------------------- runs


def _csv(path, n_per_class):
    """A CSV of two Gaussian clusters with string labels, `n_per_class` rows each."""
    rng = np.random.default_rng(3)
    lines = ["a,b,target"]
    for label, count, center in zip(("rare", "common"), n_per_class, (1.0, -1.0), strict=True):
        for x in rng.normal(size=(count, 2)) + center:
            lines.append(f"{x[0]:.5f},{x[1]:.5f},{label}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _weighted_config(tmp_path, class_weight, **changes):
    data = {"source": str(_csv(tmp_path / "d.csv", (30, 150))), "val_split": 0.25}
    base = small_config(
        dtype="float64",
        data=data,
        model={"layers": [{"units": 6, "activation": "tanh"}, {"units": 2}]},
        schedule={"name": "cosine", "warmup_epochs": 1, "epochs": 4},  # fixed: resumable
        train={"epochs": 4, "batch_size": 16, "class_weight": class_weight},
    )
    base.update(changes)
    return write_config(tmp_path / "c.yaml", base)


def test_checkpoint_keeps_the_weights_and_eval_reports_the_weighted_loss(tmp_path, capsys):
    config = _weighted_config(tmp_path, {"rare": 5.0})
    code, _, err = cli(capsys, "train", config, "--logdir", tmp_path / "logs", "--name", "r", "-q")
    assert code == 0, err
    arrays, meta = load_last(tmp_path / "logs" / "r")
    np.testing.assert_array_equal(arrays["data/classes"], ["common", "rare"])
    np.testing.assert_array_equal(arrays["data/class_weight"], [1.0, 5.0])
    code, out, err = cli(
        capsys, "eval", tmp_path / "logs" / "r" / "checkpoints" / "last.npz", "--json"
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["loss"] == pytest.approx(meta["metrics"]["val/loss"], rel=1e-12)
    assert result["f1_macro"] == meta["metrics"]["val/f1_macro"]
    assert result["auc"] == meta["metrics"]["val/auc"]
    # inspect shows them by label
    code, out, err = cli(capsys, "inspect", tmp_path / "logs" / "r", "--json")
    assert code == 0, err
    assert json.loads(out)["class_weight"] == {"common": 1.0, "rare": 5.0}
    code, out, err = cli(capsys, "inspect", tmp_path / "logs" / "r")
    assert "  weights    common 1, rare 5\n" in out


def test_weighted_val_loss_is_the_weighted_mean_over_all_validation_rows(tmp_path, capsys):
    from mlpcli import inference

    config = _weighted_config(tmp_path, "balanced")
    assert cli(capsys, "train", config, "--logdir", tmp_path / "logs", "--name", "r", "-q")[0] == 0
    last = tmp_path / "logs" / "r" / "checkpoints" / "last.npz"
    loaded = inference.load(last)
    arrays, meta = load_last(tmp_path / "logs" / "r")
    # Σ wᵢ lᵢ / Σ wᵢ over the whole validation split, from the outputs by hand
    from mlpcli.data import prepare

    data = prepare(loaded.config, "c")
    out = inference.forward(loaded, data.x_val)
    w = arrays["data/class_weight"][data.y_val]
    nll = -np.log(out[np.arange(len(out)), data.y_val])
    assert meta["metrics"]["val/loss"] == pytest.approx((w * nll).sum() / w.sum(), rel=1e-10)


def test_resume_with_class_weights_is_exact(tmp_path, capsys):
    config = _weighted_config(tmp_path, "balanced")
    logs = tmp_path / "logs"
    assert cli(capsys, "train", config, "--logdir", logs, "--name", "straight", "-q")[0] == 0
    code, _, err = cli(capsys, "train", config, "--logdir", logs, "--name", "cut", "--epochs", "2")
    assert code == 0, err
    code, _, err = cli(capsys, "resume", logs / "cut", "--epochs", "4", "--quiet")
    assert code == 0, err
    straight, meta_s = load_last(logs / "straight")
    cut, meta_c = load_last(logs / "cut")
    assert straight.keys() == cut.keys()
    for key in straight:
        assert np.array_equal(straight[key], cut[key]), key
    assert meta_s["metrics"] == meta_c["metrics"]


def test_gradcheck_checks_the_weighted_loss(tmp_path, capsys):
    config = _weighted_config(tmp_path, {"rare": 7.0, "common": 0.5})
    code, out, err = cli(capsys, "gradcheck", config)
    assert code == 0, out + err
    assert "params/0/W" in out


def test_weights_change_training(tmp_path, capsys):
    """The rare class's weight pulls the model towards it: more of it recalled."""
    logs = tmp_path / "logs"
    for name, weight in (("plain", None), ("weighted", {"rare": 20.0})):
        config = _weighted_config(tmp_path, weight)
        assert cli(capsys, "train", config, "--logdir", logs, "--name", name, "-q")[0] == 0
    plain, _ = load_last(logs / "plain")
    weighted, _ = load_last(logs / "weighted")
    assert not np.array_equal(plain["params/0/W"], weighted["params/0/W"])


# ---------------------------------------------------------------- bad values


@pytest.mark.parametrize(
    "value, fragments",
    [
        ({"lion": 2.0}, ["train.class_weight.lion", "no class 'lion'", "'common', 'rare'"]),
        ({"rare": 0}, ["train.class_weight.rare: must be a number > 0, got 0"]),
        ({"rare": -1.5}, ["train.class_weight.rare: must be a number > 0, got -1.5"]),
        ({"rare": "heavy"}, ["train.class_weight.rare: must be a number > 0, got 'heavy'"]),
        ({"rare": True}, ["train.class_weight.rare: must be a number > 0, got True"]),
        ({"rare": [1, 2]}, ["train.class_weight.rare: must be a number > 0, got [1, 2]"]),
        ({"": 2.0}, ["train.class_weight: a label is a number or a string, got ''"]),
        ("balance", ["train.class_weight: must be balanced", "did you mean 'balanced'"]),
        (3, ["train.class_weight: must be balanced or a mapping", "got 3"]),
        ([1.0, 2.0], ["train.class_weight: must be balanced or a mapping"]),
    ],
    ids=[
        *("unknown", "zero", "negative", "string", "bool", "list", "empty-label", "typo"),
        *("number", "list-of"),
    ],
)
def test_bad_class_weight_is_one_line_exit_2(tmp_path, capsys, monkeypatch, value, fragments):
    monkeypatch.chdir(tmp_path)
    config = _weighted_config(tmp_path, value)
    before = snapshot(tmp_path)
    user_error(cli(capsys, "train", config, "--logdir", "logs"), "c.yaml", *fragments)
    user_error(cli(capsys, "validate", config), "c.yaml", *fragments)
    assert snapshot(tmp_path) == before  # no run folder


def test_class_weight_on_regression_is_refused(tmp_path, capsys):
    config = small_config(
        data={"source": "linear", "options": {"n_samples": 100}},
        model={"layers": [{"units": 1, "activation": "linear"}]},
        loss="mse",
        train={"class_weight": "balanced"},
    )
    path = write_config(tmp_path / "r.yaml", config)
    user_error(cli(capsys, "validate", path), "r.yaml", "train.class_weight", "classification")


def test_one_class_named_twice_is_refused(tmp_path, capsys):
    config = small_config(train={"class_weight": {1: 2.0, "1": 3.0}})
    path = write_config(tmp_path / "t.yaml", config)
    user_error(cli(capsys, "validate", path), "t.yaml", "train.class_weight.1", "second time")


def test_balanced_needs_every_class_in_the_training_split(tmp_path, capsys):
    from mlpcli.rng import generator

    # 20 rows, one of class 2, placed where the seeded split sends it to validation
    y = np.array([0, 1] * 10)
    y[generator(0, "split").permutation(20)[0]] = 2
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(0).normal(size=(20, 2)), y=y)
    config = small_config(
        data={"source": str(tmp_path / "d.npz"), "val_split": 0.25},
        model={"layers": [{"units": 3}]},
        train={"class_weight": "balanced"},
    )
    path = write_config(tmp_path / "t.yaml", config)
    user_error(cli(capsys, "validate", path), "t.yaml", "train.class_weight", "class 2")


def test_resume_cannot_change_class_weight(tmp_path, capsys):
    config = _weighted_config(tmp_path, "balanced")
    assert cli(capsys, "train", config, "--logdir", tmp_path / "logs", "--name", "r", "-q")[0] == 0
    result = cli(
        capsys,
        "resume",
        tmp_path / "logs" / "r",
        "--epochs",
        "5",
        "--set",
        "train.class_weight=null",
    )
    user_error(result, "train.class_weight")


def test_a_checkpoint_without_its_class_weight_is_refused(tmp_path, capsys):
    from mlpcli import checkpoint

    config = _weighted_config(tmp_path, "balanced")
    assert cli(capsys, "train", config, "--logdir", tmp_path / "logs", "--name", "r", "-q")[0] == 0
    last = tmp_path / "logs" / "r" / "checkpoints" / "last.npz"
    arrays, meta = checkpoint.load(last)
    bad = tmp_path / "bad.npz"
    checkpoint.save(bad, {k: v for k, v in arrays.items() if k != "data/class_weight"}, meta)
    user_error(cli(capsys, "eval", bad, "--json"), "bad.npz", "data/class_weight is missing")
    arrays["data/class_weight"] = np.array([1.0, -2.0])
    checkpoint.save(bad, arrays, meta)
    user_error(cli(capsys, "eval", bad, "--json"), "bad.npz", "data/class_weight")
