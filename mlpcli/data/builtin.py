"""The built-in datasets: their options and the checks of the values a config gives them,
the generators (`DATASETS`, `describe_datasets`), label noise, and `_load_builtin`, which
turns a config section naming one into a source like any file's.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlpcli import memory
from mlpcli.data._common import _close, _generated_names, _listing, _row_blocks
from mlpcli.data.dataset import _Raw, _Request
from mlpcli.errors import DataError
from mlpcli.rng import generator

# Built-in datasets: each `make(params_rng, rng, dtype, **options) -> (x, y)`.
# `params_rng` draws what defines the dataset (weights, centroids), shared by a training
# and a validation set of the same seed; `rng` draws the samples.


@dataclass(frozen=True)
class Option:
    """One option of a built-in dataset."""

    default: int | float
    help: str
    type: type  # int or float
    minimum: float | None = None
    maximum: float | None = None


@dataclass(frozen=True)
class DatasetSpec:
    """A built-in dataset: its generator, task, description and options."""

    make: Callable[..., tuple[np.ndarray, np.ndarray]]
    task: str
    description: str
    options: dict[str, Option]
    in_dtype: bool = False  # x drawn straight in the requested dtype, not in float64 and cast


TRIANGLE = np.array([(-0.8, -0.6), (0.8, -0.6), (0.0, 0.8)])  # counter-clockwise vertices
_JITTER = 0.05  # positional noise of moons and circles


def in_triangle(x: np.ndarray) -> np.ndarray:
    """Whether each point of the (n, 2) array `x` lies inside TRIANGLE (bool (n,))."""
    inside = np.ones(len(x), dtype=bool)
    for p, q in zip(TRIANGLE, np.roll(TRIANGLE, -1, axis=0), strict=True):
        # left of (or on) every edge of a counter-clockwise triangle = inside
        cross = (q[0] - p[0]) * (x[:, 1] - p[1]) - (q[1] - p[1]) * (x[:, 0] - p[0])
        inside &= cross >= 0
    return inside


def _balanced_labels(rng: np.random.Generator, n: int, n_classes: int) -> np.ndarray:
    """n labels, as equal counts per class as possible, in random order."""
    return rng.permutation(np.arange(n, dtype=np.int64) % n_classes)


def _make_triangle(params_rng, rng, dtype, *, n_samples):
    x = rng.uniform(-1.0, 1.0, size=(n_samples, 2))
    return x.astype(dtype), in_triangle(x).astype(np.int64)


def _make_xor(params_rng, rng, dtype, *, n_samples):
    x = rng.uniform(-1.0, 1.0, size=(n_samples, 2))
    y = (x[:, 0] > 0) != (x[:, 1] > 0)
    return x.astype(dtype), y.astype(np.int64)


def _make_spirals(params_rng, rng, dtype, *, n_samples, n_classes):
    y = _balanced_labels(rng, n_samples, n_classes)
    t = rng.uniform(0.0, 1.0, size=n_samples)
    radius = 0.05 + 0.95 * t
    angle = 2 * np.pi * (1.25 * t + y / n_classes)  # 1.25 turns, arms evenly rotated
    x = radius[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    x += rng.normal(0.0, 0.02, size=x.shape)
    return x.astype(dtype), y


def _make_moons(params_rng, rng, dtype, *, n_samples):
    y = _balanced_labels(rng, n_samples, 2)
    t = rng.uniform(0.0, np.pi, size=n_samples)
    upper = y == 0
    x = np.stack(
        [
            np.where(upper, np.cos(t), 1.0 - np.cos(t)) - 0.5,
            np.where(upper, np.sin(t), 0.5 - np.sin(t)) - 0.25,
        ],
        axis=1,
    )
    x += rng.normal(0.0, _JITTER, size=x.shape)
    return x.astype(dtype), y


def _make_circles(params_rng, rng, dtype, *, n_samples):
    y = _balanced_labels(rng, n_samples, 2)  # 0: outer circle, 1: inner circle
    angle = rng.uniform(0.0, 2 * np.pi, size=n_samples)
    radius = np.where(y == 0, 1.0, 0.5)
    x = radius[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    x += rng.normal(0.0, _JITTER, size=x.shape)
    return x.astype(dtype), y


def _make_blobs(params_rng, rng, dtype, *, n_samples, n_classes):
    angle = 2 * np.pi * np.arange(n_classes) / n_classes + np.pi / 2
    centers = 2.0 * np.stack([np.cos(angle), np.sin(angle)], axis=1)  # (C, 2) on a circle
    y = _balanced_labels(rng, n_samples, n_classes)
    x = centers[y] + rng.normal(0.0, 0.4, size=(n_samples, 2))
    return x.astype(dtype), y


def _make_linear(params_rng, rng, dtype, *, n_samples, n_features, noise):
    w = params_rng.normal(0.0, 1.0, size=(n_features, 1))
    b = params_rng.normal(0.0, 1.0)
    x = rng.uniform(-1.0, 1.0, size=(n_samples, n_features))
    y = x @ w + b + rng.normal(0.0, noise, size=(n_samples, 1))  # (n, 1)
    return x.astype(dtype), y


def _make_synthetic(params_rng, rng, dtype, *, n_samples, n_features, n_classes):
    # x = centroid of its class + noise of unit variance per feature; centroids lie ~6
    # noise-stds apart whatever n_features: learnable, not trivially so
    centroids = params_rng.standard_normal((n_classes, n_features)) * (
        6.0 / math.sqrt(2.0 * n_features)
    )
    width = math.sqrt(12.0)  # uniform noise on [-w/2, w/2) has variance 1
    shifted = (centroids - width / 2).astype(dtype)  # (C, d)
    y = rng.integers(0, n_classes, size=n_samples, dtype=np.int64)
    x = np.empty((n_samples, n_features), dtype=dtype)
    # drawn straight into x in the requested dtype, block by block: no float64 copy.
    # Uniform noise, as Gaussian draws are 4x slower at 600 000 x 784.
    for start, stop in _row_blocks(n_samples, n_features * x.itemsize):
        block = x[start:stop]
        rng.random(dtype=dtype, out=block)
        block *= width
        block += shifted[y[start:stop]]
    return x, y


def _n_samples(default: int) -> Option:
    return Option(default, "number of samples", int, minimum=2)


_LABEL_NOISE = Option(0.0, "fraction of labels flipped to another class", float, 0.0, 1.0)

DATASETS: dict[str, DatasetSpec] = {
    "triangle": DatasetSpec(
        _make_triangle,
        "classification",
        "points in [-1, 1]^2, label 1 inside a triangle: one hidden layer of 3 units solves it",
        {"n_samples": _n_samples(2000), "noise": _LABEL_NOISE},
    ),
    "xor": DatasetSpec(
        _make_xor,
        "classification",
        "points in [-1, 1]^2, label 1 where the two coordinates differ in sign",
        {"n_samples": _n_samples(1000), "noise": _LABEL_NOISE},
    ),
    "spirals": DatasetSpec(
        _make_spirals,
        "classification",
        "interleaved spiral arms in 2-D, one per class",
        {
            "n_samples": _n_samples(1000),
            "noise": _LABEL_NOISE,
            "n_classes": Option(2, "number of classes (spiral arms)", int, minimum=2),
        },
    ),
    "moons": DatasetSpec(
        _make_moons,
        "classification",
        "two interleaving half circles in 2-D",
        {"n_samples": _n_samples(1000), "noise": _LABEL_NOISE},
    ),
    "circles": DatasetSpec(
        _make_circles,
        "classification",
        "a small circle (label 1) inside a large one (label 0) in 2-D",
        {"n_samples": _n_samples(1000), "noise": _LABEL_NOISE},
    ),
    "blobs": DatasetSpec(
        _make_blobs,
        "classification",
        "Gaussian clusters in 2-D, one per class, centred on a circle",
        {
            "n_samples": _n_samples(1000),
            "noise": _LABEL_NOISE,
            "n_classes": Option(3, "number of classes (clusters)", int, minimum=2),
        },
    ),
    "linear": DatasetSpec(
        _make_linear,
        "regression",
        "regression y = X w + b + Gaussian noise, X uniform in [-1, 1], w and b seeded",
        {
            "n_samples": _n_samples(1000),
            "noise": Option(0.1, "standard deviation of the Gaussian noise on y", float, 0.0),
            "n_features": Option(1, "number of features", int, minimum=1),
        },
    ),
    "synthetic": DatasetSpec(
        _make_synthetic,
        "classification",
        "a large classification set for benchmarks: seeded class centroids plus unit noise",
        {
            "n_samples": _n_samples(10000),
            "noise": _LABEL_NOISE,
            "n_features": Option(20, "number of features", int, minimum=1),
            "n_classes": Option(10, "number of classes", int, minimum=2),
        },
        in_dtype=True,
    ),
}


def describe_datasets() -> list[dict]:
    """The built-in datasets, their task, description and options (for `mlpcli datasets`)."""
    return [
        {
            "name": name,
            "task": spec.task,
            "description": spec.description,
            "options": [
                {"name": o, "default": opt.default, "help": opt.help}
                for o, opt in spec.options.items()
            ],
        }
        for name, spec in DATASETS.items()
    ]


def _option_value(opt: Option, value: Any, key: str, config_file: str) -> int | float:
    """`value` checked against the type and range of `opt`."""
    if opt.type is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # 1e5 in YAML is a float
        if isinstance(value, bool) or not isinstance(value, int):
            raise DataError(f"{key}: must be an integer, got {value!r} ({config_file})")
    else:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DataError(f"{key}: must be a number, got {value!r} ({config_file})")
        value = float(value)
    low, high = opt.minimum, opt.maximum
    if (
        math.isnan(value)
        or (low is not None and value < low)
        or (high is not None and value > high)
    ):
        expected = f">= {low:g}" if high is None else f"in [{low:g}, {high:g}]"
        raise DataError(f"{key}: must be {expected}, got {value} ({config_file})")
    return value


def _dataset_options(name: str, given: Any, key: str, config_file: str) -> dict[str, Any]:
    """The options of built-in `name`: the given ones checked, the others defaulted."""
    spec = DATASETS[name]
    if given is None:
        given = {}
    if not isinstance(given, dict):
        raise DataError(f"{key}.options: must be a mapping, got {given!r} ({config_file})")
    options = {}
    for opt_name, value in given.items():
        if opt_name not in spec.options:
            raise DataError(
                f"{key}.options.{opt_name}: unknown option of dataset {name!r}"
                f"{_close(opt_name, list(spec.options))} "
                f"(options: {_listing(spec.options)}) ({config_file})"
            )
        options[opt_name] = _option_value(
            spec.options[opt_name], value, f"{key}.options.{opt_name}", config_file
        )
    for opt_name, opt in spec.options.items():
        options.setdefault(opt_name, opt.default)
    return options


def _check_memory(name: str, options: dict[str, Any], dtype: np.dtype, key: str, where: str):
    """DataError naming the largest option when the arrays of built-in `name` cannot fit."""
    n, c = options["n_samples"], options.get("n_classes", 2)
    d = options.get("n_features", 2)
    # x (n, d) in `dtype`, and unless drawn in it, the float64 draws and temporaries it is
    # cast from; int64 labels, their shuffle and noise; class centroids (C, d)
    need = n * d * dtype.itemsize + (0 if DATASETS[name].in_dtype else 2 * n * d * 8)
    need += n * 24 + c * d * (8 + dtype.itemsize)
    free = memory.available_bytes()
    if need > free:
        sizes = {o: options[o] for o in ("n_samples", "n_features", "n_classes") if o in options}
        largest = max(sizes, key=sizes.get)
        classes = f", {c} classes" if "n_classes" in options else ""
        raise DataError(
            f"{key}.options.{largest}: {name!r} with {n} samples of {d} features{classes} "
            f"needs {memory.size_text(need)} of memory, "
            f"more than the {memory.size_text(free)} free "
            f"({where})"
        )


def _flip_labels(rng: np.random.Generator, y: np.ndarray, n_classes: int, fraction: float):
    """Move round(fraction * n) labels, chosen at random, to another random class."""
    n_flip = round(fraction * len(y))
    if n_flip == 0:
        return
    idx = rng.choice(len(y), size=n_flip, replace=False)
    y[idx] = (y[idx] + rng.integers(1, n_classes, size=n_flip)) % n_classes


def _load_builtin(name: str, cfg: dict, req: _Request, role: int, key: str) -> _Raw:
    """Samples of built-in `name` for a `data` (role 0), `data.val` (1) or `--data` (2) section."""
    spec, task, config_file = DATASETS[name], req.task, req.config_file
    if spec.task != task:
        fits = "loss: mse"
        if spec.task == "classification":
            fits = "loss: cross_entropy (or binary_cross_entropy for 2 classes)"
        raise DataError(
            f"{key}.source: {name!r} is a {spec.task} dataset, it fits {fits}, not a "
            f"{task} loss ({config_file})"
        )
    options = _dataset_options(name, cfg.get("options"), key, config_file)
    for unused in ("target", "features"):
        if cfg.get(unused) is not None:
            raise DataError(
                f"{key}.{unused}: not used with built-in dataset {name!r} ({config_file})"
            )
    _check_memory(name, options, req.dtype, key, config_file)  # before anything is drawn
    params_rng = generator(req.seed, "data", 0)  # shared by training and validation sets
    rng = generator(req.seed, "data", 1, role)
    make_options = {k: v for k, v in options.items() if k != "noise" or spec.task == "regression"}
    x, y = spec.make(params_rng, rng, req.dtype, **make_options)
    classes = None
    if spec.task == "classification":
        n_classes = options.get("n_classes", 2)
        _flip_labels(rng, y, n_classes, options["noise"])
        classes = np.arange(n_classes, dtype=np.int64)
    n = options["n_samples"]
    return _Raw(x, y, _generated_names(x.shape[1]), f"{name} ({n} samples)", classes=classes)
