"""What a run shows in TensorBoard beside the scalars of its loop: the config as text, its
hyperparameters, the computation graph, and pictures of what the network learned.

The loop calls these with itself (`run`: a train.Run); tensorboardX and the renderer are
imported only when a run opens its log.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mlpcli import metrics
from mlpcli.backend import to_host
from mlpcli.config import Config, to_dict, to_yaml
from mlpcli.model import standardize


def open_log(run: Any, run_dir: Path) -> Any:
    """The run's TensorBoard log: written by the first process alone; at step 0 it gets the
    config, the graph and the untrained network's pictures."""
    if run.comm.rank != 0:
        return _NoLog()
    from mlpcli.tblog import TBLogger

    tb = TBLogger(run_dir, start_step=run.progress.step)
    if run.progress.step == 0:
        tb.text("config", _markdown_yaml(to_yaml(run.config)), 0)
        if run.config.logging.graph:
            tb.graph(graph(run))
        if draws_images(run):
            log_images(run, tb)
    return tb


def log_final(run: Any, tb: Any) -> None:
    """Hyperparameters with the final metrics, for the HParams tab."""
    p = run.progress
    tb.hparams(hparams(run.config), {f"hparam/{k}": v for k, v in p.metrics.items()}, p.step)


def hparams(config: Config) -> dict[str, Any]:
    """The config's knobs as flat scalars for TensorBoard's HParams tab."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}{k}.", v)
        elif isinstance(value, bool | int | float | str):
            flat[prefix.rstrip(".")] = value
        elif value is not None:
            flat[prefix.rstrip(".")] = str(value)

    data = to_dict(config)
    for section in ("seed", "dtype", "loss", "optimizer", "schedule", "train"):
        walk(f"{section}.", data[section])
    flat["model.layers"] = " -> ".join(
        f"{la['units']} {la['activation']}"
        + (f" (dropout {la['dropout']})" if la["dropout"] else "")
        for la in data["model"]["layers"]
    )
    return flat


def graph(run: Any):
    """The model's computation graph for TensorBoard's Graphs tab."""
    from mlpcli.tblog import graph_def

    layers = run.config.model.layers
    return graph_def(
        [run.x.shape[1], *(la.units for la in layers)],
        [la.activation for la in layers],
        run.config.loss,
        dtype=run.config.dtype,
        dropouts=[la.dropout for la in layers],
    )


def draws_images(run: Any) -> bool:
    """Decision surfaces are drawn for classifiers of 2-D points."""
    return (
        run.config.logging.images_every_n_epochs > 0 and run.classification and run.x.shape[1] == 2
    )


def log_images(run: Any, tb: Any) -> None:
    """The decision surface with the training points, and the first layer's lines."""
    from mlpcli.visualize import decision_surface, hidden_units

    d = run.data
    x = d.x_train if d.train_rows is None else d.x_train[d.train_rows]
    n_classes = 2 if run.config.loss == "binary_cross_entropy" else len(d.classes)
    image, canvas = decision_surface(
        lambda points: _probabilities(run, points),
        x,
        d.y_train,
        n_classes=n_classes,
        chunk=run.batch_size,
    )
    step = run.progress.step
    tb.image("decision_surface", image, step)
    if len(run.model.layers) > 1:  # a hidden layer: the line each of its units draws
        first = run.model.layers[0]
        weights = [to_host(first.W), to_host(first.b), to_host(run.model.layers[1].W)]
        lines = hidden_units(image, canvas, *weights, d.x_mean, d.x_std)
        tb.image("hidden_units", lines, step)


def _probabilities(run: Any, points: np.ndarray) -> np.ndarray:
    """Class probabilities (m, C) for raw points (m, d), on the host."""
    xb = run.backend.asarray(points, dtype=run.config.dtype)
    if run.scale is not None:
        xb = standardize(run.xp, xb, run.scale, out=xb)
    out = to_host(run.model.forward(xb)).astype(np.float64)
    if run.config.loss == "binary_cross_entropy":
        return np.column_stack([1.0 - out[:, 0], out[:, 0]])
    return out


def log_classifier(run: Any, tb: Any, confusion: np.ndarray, outputs: np.ndarray) -> None:
    """An epoch's validation confusion matrix as an image (up to MAX_CONFUSION_CLASSES
    classes) and, for a binary model, the precision-recall curve of class 1."""
    if run.comm.rank != 0:
        return
    step = run.progress.step
    if len(confusion) <= metrics.MAX_CONFUSION_CLASSES:
        from mlpcli.visualize import confusion_image

        tb.image("val/confusion_matrix", confusion_image(confusion), step)
    loss = run.config.loss
    if metrics.is_binary(loss, outputs.shape[1]):
        tb.pr_curve("val/pr_curve", run.data.y_val, metrics.positive_scores(outputs, loss), step)


class _NoLog:
    """The TensorBoard log of the processes that do not write one."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def _markdown_yaml(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())  # a Markdown code block
