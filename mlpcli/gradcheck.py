"""Backprop against central finite differences: the check behind `mlpcli gradcheck`.

For a parameter entry p, the numerical derivative is (L(p + eps) - L(p - eps)) / 2 eps,
with an error of order eps² for smooth losses; in float64 with eps = 1e-6 it agrees with a
correct backprop to about 1e-9 relative, so a relative error above ~1e-6 means a bug.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from mlpcli.checkpoint import load_params, param_key
from mlpcli.model import MLP

TOLERANCE = 1e-6


@dataclass
class ParamCheck:
    """How far backprop's gradient of one parameter is from the numerical one."""

    name: str
    shape: tuple[int, ...]
    checked: int  # entries compared (all, or a seeded sample of a large parameter)
    max_abs: float  # max |analytic - numeric| over the checked entries
    rel: float  # ||analytic - numeric|| / (||analytic|| + ||numeric||)
    worst: tuple[int, ...]  # index of the largest absolute difference

    def passed(self, tol: float = TOLERANCE) -> bool:
        return self.rel <= tol


def numeric_gradient(model: MLP, x: Any, y: Any, p: Any, eps: float, entries) -> np.ndarray:
    """dL/dp at the flat `entries` of parameter p, by central differences."""
    flat = p.reshape(-1)  # a view: writes go into the parameter
    grad = np.empty(len(entries))
    for k, i in enumerate(entries):
        keep = float(flat[i])
        flat[i] = keep + eps
        up = float(model.loss_value(x, y))
        flat[i] = keep - eps
        down = float(model.loss_value(x, y))
        flat[i] = keep
        grad[k] = (up - down) / (2 * eps)
    return grad


def check_gradients(
    model: MLP, x: Any, y: Any, eps: float = 1e-6, max_entries: int | None = None, seed: int = 0
) -> list[ParamCheck]:
    """Compare every parameter's backprop gradient with central differences (use float64).

    With `max_entries`, a larger parameter is checked at that many entries drawn at random.
    """
    a = model.forward(x)
    model.loss_and_backward(a, y)
    rng = np.random.default_rng(seed)
    results = []
    for name, g in model.grads().items():
        analytic_all = np.array(g, dtype=np.float64).reshape(-1)
        p = model.params()[name]
        entries = np.arange(analytic_all.size)
        if max_entries is not None and analytic_all.size > max_entries:
            entries = np.sort(rng.choice(analytic_all.size, max_entries, replace=False))
        analytic = analytic_all[entries]
        numeric = numeric_gradient(model, x, y, p, eps, entries)
        diff = np.abs(analytic - numeric)
        scale = np.linalg.norm(analytic) + np.linalg.norm(numeric)
        rel = float(np.linalg.norm(diff) / scale) if scale > 0 else 0.0
        worst = tuple(int(i) for i in np.unravel_index(entries[np.argmax(diff)], p.shape))
        results.append(
            ParamCheck(name, tuple(p.shape), len(entries), float(diff.max()), rel, worst)
        )
    return results


def check_config(
    config: Any, data: Any, samples: int = 8, eps: float = 1e-6, max_entries: int = 64
) -> list[ParamCheck]:
    """Gradient check of a config's model in float64 on its first `samples` training rows.

    The model starts from the config's initialization (or `model.init_from`); dropout is off;
    the loss is weighted by `train.class_weight` as in training.
    """
    from mlpcli.data import apply_standardization
    from mlpcli.losses import as_targets

    rows = np.arange(min(samples, data.n_train))
    x_rows = rows if data.train_rows is None else data.train_rows[rows]
    x = apply_standardization(
        np.asarray(data.x_train[x_rows], dtype=np.float64), data.x_mean, data.x_std
    )
    y = as_targets(config.loss, data.y_train[rows], "float64")
    if config.task == "regression":
        y = np.asarray(y, dtype=np.float64)
    init = load_params(config.model.init_from) if config.model.init_from else None
    model = MLP.build(
        np,
        config.model_copy(update={"dtype": "float64"}),
        x.shape[1],
        init_params=init,
        where=f"model.init_from: {config.model.init_from}",
    )
    if data.class_weight is not None:
        model.class_weight = np.asarray(data.class_weight, dtype=np.float64)
    results = check_gradients(model, x, y, eps=eps, max_entries=max_entries)
    return [replace(r, name=param_key(r.name)) for r in results]  # named as in a checkpoint
