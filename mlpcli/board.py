"""What a run shows in TensorBoard beside the scalars of its loop: the config as text, its
HParams session (hyperparameters, the best value of each validation metric, the end status),
the computation graph, and pictures of what the network learned.

Tag names decide TensorBoard's layout: Time Series groups tags by their first component and
orders the groups by name, opening the first two. The contract tags put `lr`, `train` and `val`
first; everything else here and in train.py sorts after `val`: `vis/` (images), `vitals/`
(gradient norms, throughput), `weights/` (histograms).

The loop calls these with itself (`run`: a train.Run); tensorboardX and the renderer are
imported only when a run opens its log.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np

from mlpcli import metrics
from mlpcli.backend import to_host
from mlpcli.config import Config, to_dict, to_yaml
from mlpcli.errors import MlpcliError
from mlpcli.model import standardize

# The validation metrics whose best value so far is logged (as `val/{name}_best`, each epoch),
# and which way is better. A metric missing here gets no `_best` tag.
BETTER = {
    "loss": "min",
    "mse": "min",
    "mae": "min",
    "accuracy": "max",
    "f1_macro": "max",
    "auc": "max",
    "r2": "max",
}
BEST_SUFFIX = "_best"


class RunLog:
    """The run's TensorBoard log: a TBLogger (its methods are this object's) and the best value
    so far of each validation metric, as logged (float32)."""

    def __init__(self, tb: Any, best: dict[str, float]):
        self.tb = tb
        self.best = best

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tb, name)


def open_log(run: Any, run_dir: Path) -> RunLog:
    """The run's TensorBoard log: written by the first process alone. At step 0 it gets the
    config, the graph and the untrained network's pictures; at every start, resumes too, the
    HParams session with the run's hyperparameters as they are now."""
    if run.comm.rank != 0:
        return RunLog(_NoLog(), {})
    from mlpcli.tblog import TBLogger, first_wall_time

    step = run.progress.step
    tb = TBLogger(run_dir, start_step=step)
    if step == 0:
        tb.text("config", _markdown_yaml(to_yaml(run.config)), 0)
        if run.config.logging.graph:
            tb.graph(graph(run))
        if draws_images(run):
            log_images(run, tb)
    tb.session_start(hparams(run.config), step, start_time=first_wall_time(run_dir) or 0.0)
    return RunLog(tb, _best_so_far(run_dir) if step else {})


def log_best(run: Any, log: RunLog, metrics: dict[str, float]) -> None:
    """After each epoch: `val/{name}_best`, the best value of each validation metric so far
    (the last one is what the HParams tab shows beside the final `val/{name}`)."""
    for tag, value in metrics.items():
        way = BETTER.get(tag.removeprefix("val/")) if tag.startswith("val/") else None
        if way is None:
            continue
        value = float(np.float32(value))  # as logged: a resumed run's best is read back
        best = log.best.get(tag)
        if best is None or (value < best if way == "min" else value > best):
            log.best[tag] = best = value
        log.scalar(tag + BEST_SUFFIX, best, run.progress.step)


def log_final(run: Any, log: RunLog, status: str = "success") -> None:
    """The end of the run's HParams session: "success" (trained to the end or stopped early)
    or "failure" (diverged). A run stopped by a signal has no end: it is to be resumed."""
    if status == "failure":  # the divergence is the error to report, not a failed write
        with contextlib.suppress(MlpcliError):
            log.session_end(status, run.progress.step)
    else:
        log.session_end(status, run.progress.step)


def _best_so_far(run_dir: Path) -> dict[str, float]:
    """The best value of each validation metric in the run's event files (which opening the
    log has cut back to the resumed step), as log_best would have kept it."""
    from mlpcli.tblog import read_scalars

    best: dict[str, float] = {}
    for tag, points in read_scalars(run_dir, "val/").items():
        way = BETTER.get(tag.removeprefix("val/"))
        if way is not None and points:
            values = [v for _, v in points]
            best[tag] = min(values) if way == "min" else max(values)
    return best


def hparams(config: Config) -> dict[str, Any]:
    """The config's knobs as flat values (str, bool, number) for TensorBoard's HParams tab.

    TensorBoard lists first the columns whose values differ between the runs it shows, the
    rest by name, and ticks the first five. So what is tuned most has a short name that sorts
    first: `activations`, `batch_size`, `dropout` (per layer, as `units`: `16-16-2`), `epochs`,
    `learning_rate` (optimizer.lr; the HParams tab also lists every scalar as a metric, and the
    metric `lr` is the last step's); then `optimizer`, `schedule`, `units`, `weight_decay`.
    Every other knob follows under a dotted name that sorts after these: `optimizer.betas`,
    `schedule.gamma`, `train.shuffle`, `model.init`, `model.loss`, `model.dtype`, `seed`, and
    the data as `source` (data.source), `source.noise` (its options), `source.val_split`, ...
    Unset (null) keys are left out.
    """
    data = to_dict(config)
    optimizer = dict(data["optimizer"])
    schedule = dict(data["schedule"] or {"name": "none"})
    train = dict(data["train"])
    model = dict(data["model"])
    layers = model.pop("layers")
    source = dict(data["data"])
    flat: dict[str, Any] = {
        "activations": "-".join(la["activation"] for la in layers),
        "batch_size": train.pop("batch_size"),
        "dropout": "-".join(f"{la['dropout']:g}" for la in layers),
        "epochs": train.pop("epochs"),
        "learning_rate": optimizer.pop("lr"),  # `lr` is the scalar of the lr at each step
        "optimizer": optimizer.pop("name"),
        "schedule": schedule.pop("name"),
        "units": "-".join(str(la["units"]) for la in layers),
        "weight_decay": optimizer.pop("weight_decay", 0.0),
        "source": source.pop("source"),
    }

    def walk(name: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{name}.{k}", v)
        elif isinstance(value, list | tuple):
            flat[name] = ",".join(str(v) for v in value)
        elif value is not None:
            flat[name] = value if isinstance(value, bool | int | float | str) else str(value)

    walk("optimizer", optimizer)
    walk("schedule", schedule)
    walk("train", train)
    walk("model", {**model, "loss": data["loss"], "dtype": data["dtype"]})
    walk("seed", data["seed"])
    options = source.pop("options", None) or {}
    walk("source", {**options, **source})  # a dataset's options, then the other data keys
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
    tb.image("vis/decision_surface", image, step)
    if len(run.model.layers) > 1:  # a hidden layer: the line each of its units draws
        first = run.model.layers[0]
        weights = [to_host(first.W), to_host(first.b), to_host(run.model.layers[1].W)]
        lines = hidden_units(image, canvas, *weights, d.x_mean, d.x_std)
        tb.image("vis/hidden_units", lines, step)


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

        tb.image("vis/confusion_matrix", confusion_image(confusion), step)
    loss = run.config.loss
    if metrics.is_binary(loss, outputs.shape[1]):
        tb.pr_curve("val/pr_curve", run.data.y_val, metrics.positive_scores(outputs, loss), step)


class _NoLog:
    """The TensorBoard log of the processes that do not write one."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def _markdown_yaml(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())  # a Markdown code block
