"""Training end to end: the example configs, determinism, TensorBoard, checkpoints."""

import json

import numpy as np
import pytest
from helpers import CONFIGS, cli, load_last, only_run, small_config, write_config

# The quality each example config reaches as shipped (README, "Example configs").
QUALITY = {
    "triangle": ("val/accuracy", 0.95),
    "xor": ("val/accuracy", 0.95),
    "spirals": ("val/accuracy", 0.95),
    "logistic_regression": ("val/accuracy", 0.95),
    "linear_regression": ("val/loss", -0.02),  # negative: at most 0.02 (noise variance 0.01)
}


def test_every_example_config_is_covered():
    # mnist needs its data; cars is exported and trained in test_tabular.py
    shipped = {p.stem for p in CONFIGS.glob("*.yaml")} - {"mnist", "cars"}
    assert shipped == set(QUALITY)


@pytest.mark.parametrize("name", sorted(QUALITY))
def test_example_config_trains_to_its_stated_quality(name, tmp_path, capsys):
    code, out, err = cli(capsys, "train", CONFIGS / f"{name}.yaml", "--logdir", tmp_path, "-q")
    assert code == 0, err
    assert err == ""
    _, meta = load_last(only_run(tmp_path))
    metric, bound = QUALITY[name]
    value = meta["metrics"][metric]
    assert (value >= bound) if bound > 0 else (value <= -bound), (metric, value)


def test_mnist_config_validates_up_to_its_missing_data(capsys):
    code, _, err = cli(capsys, "validate", CONFIGS / "mnist.yaml")
    assert code == 2
    assert "data/mnist/train-images-idx3-ubyte.gz" in err and "not found" in err


def test_same_config_and_seed_give_the_same_bits(tmp_path, capsys):
    config = write_config(tmp_path / "c.yaml", small_config())
    for name in ("a", "b"):
        assert cli(capsys, "train", config, "--logdir", tmp_path / "logs", "--name", name)[0] == 0
    a, meta_a = load_last(tmp_path / "logs" / "a")
    b, meta_b = load_last(tmp_path / "logs" / "b")
    assert a.keys() == b.keys()
    for key in a:
        assert np.array_equal(a[key], b[key]), key
    assert meta_a["metrics"] == meta_b["metrics"]
    # and a different seed gives different weights
    assert (
        cli(capsys, "train", config, "--logdir", tmp_path / "logs", "--name", "c", "--seed", "1")[0]
        == 0
    )
    c, _ = load_last(tmp_path / "logs" / "c")
    assert not np.array_equal(a["params/0/W"], c["params/0/W"])


def test_run_folder_and_checkpoint_layout(tmp_path, capsys):
    config = write_config(tmp_path / "c.yaml", small_config())
    assert cli(capsys, "train", config, "--logdir", tmp_path / "logs", "-q")[0] == 0
    run = only_run(tmp_path / "logs")
    assert run.name.startswith("small-")
    files = {p.name for p in (run / "checkpoints").iterdir()}
    # 3 epochs, keep_last 2: epochs 2 and 3 kept; no temporary file left behind
    assert files == {"epoch-0002.npz", "epoch-0003.npz", "last.npz", "best.npz"}
    assert (run / "config.yaml").read_text().startswith("name: small")
    assert list(run.glob("events.out.tfevents.*"))

    with np.load(run / "checkpoints" / "last.npz", allow_pickle=False) as npz:
        keys = set(npz.files)
        meta = json.loads(str(npz["meta"]))
        assert npz["params/0/W"].shape == (2, 8) and npz["params/1/b"].shape == (2,)
    for i in range(2):
        for p in "Wb":
            assert {
                f"params/{i}/{p}",
                f"optim/{i}/{p}/exp_avg",
                f"optim/{i}/{p}/exp_avg_sq",
            } <= keys
    assert meta["format"] == "mlpcli-checkpoint" and meta["version"] == 1
    steps_per_epoch = 8  # ceil(240 / 32): the last, partial batch is kept
    assert (meta["epoch"], meta["step"]) == (3, 3 * steps_per_epoch)
    assert meta["config"]["schedule"]["epochs"] == 3  # resolved from train.epochs
    assert set(meta["metrics"]) == {
        *("train/loss", "train/accuracy", "val/loss", "val/accuracy"),
        *("val/f1_macro", "val/auc"),  # a binary classifier
    }
    epoch3, _ = load_last(run, "epoch-0003.npz")
    last, _ = load_last(run)
    assert np.array_equal(epoch3["params/0/W"], last["params/0/W"])


def test_tensorboard_tags_and_steps(tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = write_config(tmp_path / "c.yaml", small_config())
    assert cli(capsys, "train", config, "--logdir", tmp_path / "logs", "-q")[0] == 0
    acc = EventAccumulator(str(only_run(tmp_path / "logs")))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "lr", "val/loss", "train/accuracy", "val/accuracy"} <= tags
    for tag in tags:
        steps = [e.step for e in acc.Scalars(tag)]
        assert steps == sorted(set(steps)), (tag, steps)  # strictly increasing
    # every_n_steps 3, 8 steps an epoch: step 1, every 3rd step, and each epoch's last step
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 3, 6, 8, 9, 12, 15, 16, 18, 21, 24]
    assert [e.step for e in acc.Scalars("val/loss")] == [8, 16, 24]
    lrs = [e.value for e in acc.Scalars("lr")]
    assert lrs[0] < lrs[2] and lrs[-1] < lrs[3]  # warmup, then cosine decay
    assert "config/text_summary" in acc.Tags()["tensors"]


def test_no_validation_split_monitors_training_loss(tmp_path, capsys):
    data = small_config()["data"] | {"val_split": 0}
    config = write_config(tmp_path / "c.yaml", small_config(data=data))
    assert cli(capsys, "train", config, "--logdir", tmp_path / "logs", "-q")[0] == 0
    run = only_run(tmp_path / "logs")
    _, meta = load_last(run, "best.npz")
    assert set(meta["metrics"]) == {"train/loss", "train/accuracy"}
    assert meta["progress"]["best"] == min(meta["metrics"]["train/loss"], meta["progress"]["best"])


def test_early_stopping_stops_and_says_so(tmp_path, capsys):
    train = {
        "epochs": 50,
        "batch_size": 32,
        "early_stopping": {"monitor": "val/loss", "patience": 1, "min_delta": 10.0},
    }
    config = write_config(tmp_path / "c.yaml", small_config(train=train))
    code, out, _ = cli(capsys, "train", config, "--logdir", tmp_path / "logs")
    assert code == 0
    _, meta = load_last(only_run(tmp_path / "logs"))
    assert meta["epoch"] == 2  # epoch 2 cannot beat epoch 1 by 10
    assert "stopped early" in out


def test_plain_output_has_one_line_per_epoch(tmp_path, capsys):
    config = write_config(tmp_path / "c.yaml", small_config())
    code, out, err = cli(capsys, "train", config, "--logdir", tmp_path / "logs")
    assert code == 0 and err == ""
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("epoch "))
    assert "val/acc" in lines[header]
    assert [line.split()[0] for line in lines[header + 1 : header + 4]] == ["1/3", "2/3", "3/3"]
    assert not lines[header + 4].strip()


def test_divergence_stops_with_exit_1_and_keeps_a_good_checkpoint(tmp_path, capsys):
    data = {"source": "linear", "options": {"n_samples": 200, "n_features": 3}}
    model = {"layers": [{"units": 1, "activation": "linear"}]}
    # the learning rate jumps from 0.001 to 1000 after two epochs: SGD on MSE explodes
    schedule = {"name": "step", "step_size": 2, "gamma": 1e6}
    config = write_config(
        tmp_path / "c.yaml",
        small_config(
            data=data,
            model=model,
            loss="mse",
            schedule=schedule,
            optimizer={"name": "sgd", "lr": 1e-3},
            train={"epochs": 6, "batch_size": 32},
        ),
    )
    code, out, err = cli(capsys, "train", config, "--logdir", tmp_path / "logs", "--name", "d")
    assert code == 1
    assert err.startswith("error: training diverged") and len(err.splitlines()) == 1
    assert "Traceback" not in out + err
    arrays, meta = load_last(tmp_path / "logs" / "d")
    # epoch 3 ends with huge but finite values; the loss overflows to inf in epoch 4
    assert meta["epoch"] == 3
    assert "epoch 4)" in err
    assert all(np.all(np.isfinite(a)) for a in arrays.values() if a.dtype.kind == "f")
