"""Whole training runs against PyTorch: same init_from weights, full batch, float64.

Skipped where torch is not installed (it is never a dependency of mlpcli).
"""

import numpy as np
import pytest
from helpers import cli, load_last, write_config

torch = pytest.importorskip("torch")

OPTIMIZERS = [
    {"name": "sgd", "lr": 0.1},
    {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01},
    {"name": "sgd", "lr": 0.1, "momentum": 0.5, "dampening": 0.1},
    {"name": "adam", "lr": 0.01, "weight_decay": 0.1},
    {"name": "adam", "lr": 0.01, "amsgrad": True, "betas": [0.8, 0.9]},
    {"name": "adamw", "lr": 0.01},
    {"name": "rmsprop", "lr": 0.01, "momentum": 0.9, "centered": True, "weight_decay": 0.01},
    {"name": "adagrad", "lr": 0.1, "lr_decay": 0.01, "initial_accumulator_value": 0.1},
]
STEPS = 6
SIZES = [3, 7, 5, 4]
ACTS = ["tanh", "relu"]


def _torch_run(weights, x, y, opt, loss_name, sizes=SIZES, loss_fn=None):
    layers = []
    for i in range(len(sizes) - 1):
        lin = torch.nn.Linear(sizes[i], sizes[i + 1]).double()
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(weights[f"params/{i}/W"].T))
            lin.bias.copy_(torch.from_numpy(weights[f"params/{i}/b"]))
        layers.append(lin)
        if i < len(ACTS):
            layers.append(torch.nn.Tanh() if ACTS[i] == "tanh" else torch.nn.ReLU())
    net = torch.nn.Sequential(*layers)
    options = {k: v for k, v in opt.items() if k not in ("name", "weight_decay")}
    if "betas" in options:
        options["betas"] = tuple(options["betas"])
    weights_ = [p for n, p in net.named_parameters() if n.endswith("weight")]
    biases = [p for n, p in net.named_parameters() if n.endswith("bias")]
    default_wd = 0.01 if opt["name"] == "adamw" else 0.0
    groups = [
        {"params": weights_, "weight_decay": opt.get("weight_decay", default_wd)},
        {"params": biases, "weight_decay": 0.0},
    ]
    cls = {
        "sgd": torch.optim.SGD,
        "adam": torch.optim.Adam,
        "adamw": torch.optim.AdamW,
        "rmsprop": torch.optim.RMSprop,
        "adagrad": torch.optim.Adagrad,
    }[opt["name"]]
    optimizer = cls(groups, **options)
    xt = torch.from_numpy(x)
    yt = torch.from_numpy(y)
    if loss_fn is None:
        loss_fn = (
            torch.nn.CrossEntropyLoss() if loss_name == "cross_entropy" else torch.nn.MSELoss()
        )
    for _ in range(STEPS):
        optimizer.zero_grad()
        loss_fn(net(xt), yt).backward()
        optimizer.step()
    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    return {f"{i}/W": m.weight.detach().numpy().T for i, m in enumerate(linears)} | {
        f"{i}/b": m.bias.detach().numpy() for i, m in enumerate(linears)
    }


@pytest.mark.parametrize("opt", OPTIMIZERS, ids=lambda o: "-".join(map(str, o.values())))
@pytest.mark.parametrize("loss_name", ["cross_entropy", "mse"])
def test_training_matches_torch(opt, loss_name, tmp_path, capsys):
    rng = np.random.default_rng(0)
    n = 40
    x = rng.normal(size=(n, SIZES[0]))
    if loss_name == "cross_entropy":
        y = rng.integers(0, SIZES[-1], n)
        output = "softmax"
    else:
        y = rng.normal(size=(n, SIZES[-1]))
        output = "linear"
    np.savez(tmp_path / "data.npz", x=x, y=y)
    weights = {}
    for i in range(len(SIZES) - 1):
        weights[f"params/{i}/W"] = rng.normal(0, 0.5, (SIZES[i], SIZES[i + 1]))
        weights[f"params/{i}/b"] = rng.normal(0, 0.1, SIZES[i + 1])
    np.savez(tmp_path / "init.npz", **weights)
    layers = [{"units": u, "activation": a} for u, a in zip(SIZES[1:-1], ACTS, strict=True)]
    config = {
        "dtype": "float64",
        "data": {"source": str(tmp_path / "data.npz"), "val_split": 0, "standardize": False},
        "model": {
            "init_from": str(tmp_path / "init.npz"),
            "layers": [*layers, {"units": SIZES[-1], "activation": output}],
        },
        "loss": loss_name,
        "optimizer": opt,
        "train": {"epochs": STEPS, "batch_size": n, "shuffle": False},
    }
    path = write_config(tmp_path / "c.yaml", config)
    code, _, err = cli(capsys, "train", path, "--logdir", tmp_path / "logs", "--name", "r", "-q")
    assert code == 0, err
    ours, meta = load_last(tmp_path / "logs" / "r")
    assert meta["step"] == STEPS
    theirs = _torch_run(weights, x, y, opt, loss_name)
    for name, value in theirs.items():
        np.testing.assert_allclose(ours[f"params/{name}"], value, rtol=1e-10, atol=1e-12)


# Class weights: torch's CrossEntropyLoss(weight=w) is Σ wᵢ lᵢ / Σ wᵢ; BCELoss(weight=) is
# not (it rescales, then takes the plain mean), so the weighted BCE is written out.
WEIGHTED = {
    "cross_entropy": {0: 0.5, 2: 3.0},  # classes 1 and 3 keep weight 1
    "binary_cross_entropy": "balanced",
}


def _write_run(tmp_path, x, y, sizes, output, loss_name, opt, class_weight):
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "data.npz", x=x, y=y)
    weights = {}
    for i in range(len(sizes) - 1):
        weights[f"params/{i}/W"] = rng.normal(0, 0.5, (sizes[i], sizes[i + 1]))
        weights[f"params/{i}/b"] = rng.normal(0, 0.1, sizes[i + 1])
    np.savez(tmp_path / "init.npz", **weights)
    layers = [{"units": u, "activation": a} for u, a in zip(sizes[1:-1], ACTS, strict=True)]
    config = {
        "dtype": "float64",
        "data": {"source": str(tmp_path / "data.npz"), "val_split": 0, "standardize": False},
        "model": {
            "init_from": str(tmp_path / "init.npz"),
            "layers": [*layers, {"units": sizes[-1], "activation": output}],
        },
        "loss": loss_name,
        "optimizer": opt,
        "train": {
            "epochs": STEPS,
            "batch_size": len(x),
            "shuffle": False,
            "class_weight": class_weight,
        },
    }
    return weights, write_config(tmp_path / "c.yaml", config)


@pytest.mark.parametrize("opt", OPTIMIZERS, ids=lambda o: "-".join(map(str, o.values())))
@pytest.mark.parametrize("loss_name", ["cross_entropy", "binary_cross_entropy"])
def test_weighted_training_matches_torch(opt, loss_name, tmp_path, capsys):
    rng = np.random.default_rng(2)
    n = 40
    x = rng.normal(size=(n, SIZES[0]))
    if loss_name == "cross_entropy":
        sizes, output = SIZES, "softmax"
        y = rng.integers(0, SIZES[-1], n)
        w = np.array([0.5, 1.0, 3.0, 1.0])
        loss_fn = torch.nn.CrossEntropyLoss(weight=torch.from_numpy(w))
        plain_fn = torch.nn.CrossEntropyLoss()
        target = y
    else:
        sizes, output = [*SIZES[:-1], 1], "sigmoid"
        y = (rng.random(n) < 0.25).astype(np.int64)  # imbalanced
        counts = np.bincount(y, minlength=2)
        w_class = n / (2 * counts)  # balanced
        w = torch.from_numpy(w_class[y]).reshape(-1, 1)

        def loss_fn(logits, target):
            p = torch.sigmoid(logits)
            per = torch.nn.functional.binary_cross_entropy(p, target, reduction="none")
            return (w * per).sum() / w.sum()

        def plain_fn(logits, target):
            return torch.nn.functional.binary_cross_entropy(torch.sigmoid(logits), target)

        target = y.astype(np.float64).reshape(-1, 1)
    weights, path = _write_run(tmp_path, x, y, sizes, output, loss_name, opt, WEIGHTED[loss_name])
    code, _, err = cli(capsys, "train", path, "--logdir", tmp_path / "logs", "--name", "r", "-q")
    assert code == 0, err
    ours, meta = load_last(tmp_path / "logs" / "r")
    assert meta["step"] == STEPS
    theirs = _torch_run(weights, x, target, opt, loss_name, sizes=sizes, loss_fn=loss_fn)
    for name, value in theirs.items():
        np.testing.assert_allclose(ours[f"params/{name}"], value, rtol=1e-10, atol=1e-12)
    # and the weights made a difference: unweighted training ends elsewhere
    plain = _torch_run(weights, x, target, opt, loss_name, sizes=sizes, loss_fn=plain_fn)
    assert not np.allclose(ours["params/0/W"], plain["0/W"], rtol=1e-6, atol=0)
