"""Using a checkpoint without training: evaluate, predict, inspect."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlpcli import checkpoint as ckpt
from mlpcli import metrics as measures
from mlpcli.backend import Backend, get_backend, to_host
from mlpcli.config import Config, to_dict
from mlpcli.data import load_labeled, preprocess, read_inputs
from mlpcli.errors import CheckpointError, DataError, MlpcliError
from mlpcli.losses import as_targets
from mlpcli.model import MLP, standardize

BATCH = 4096  # rows per forward pass: bounded memory for any input size


@dataclass
class Loaded:
    """A checkpoint read back, its config, and the model built from them."""

    state: ckpt.Checkpoint
    config: Config
    model: MLP
    backend: Backend

    @property
    def path(self) -> Path:
        return self.state.path

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        """Every array of the file but `meta`, by its key."""
        return ckpt.pack(self.state)

    @property
    def meta(self) -> dict[str, Any]:
        return self.state.meta

    def data(self, name: str) -> np.ndarray | None:
        """A stored data statistic ("x_mean", ...) or the class labels ("classes")."""
        return self.state.stats.get(name)

    @property
    def classes(self) -> np.ndarray | None:
        return self.data("classes")

    @property
    def feature_names(self) -> list[str]:
        return self.state.feature_names

    @property
    def encoding(self) -> preprocess.Encoding | None:
        """How CSV columns become the model's inputs (categories, missing cells), if stored."""
        return preprocess.stored_encoding(self.state)


def load(path: str | Path, device: str = "cpu") -> Loaded:
    """Read a checkpoint (or a run folder's best) and rebuild its model on `device`."""
    state = ckpt.read(ckpt.in_run_folder(path))
    config = state.config()
    ckpt.check_against(state, config)
    n_features = state.n_features
    backend = get_backend(device)
    model = MLP.build(backend.xp, config, n_features, init_params=state.params, where=state.where)
    if "class_weight" in state.stats:  # the run's loss weights, so eval's loss is its loss
        model.class_weight = backend.asarray(state.stats["class_weight"], config.dtype)
    return Loaded(state, config, model, backend)


def _scale(loaded: Loaded) -> tuple | None:
    """The stored feature standardization as (mean, 1 / std) device arrays, or None."""
    mean, std = loaded.data("x_mean"), loaded.data("x_std")
    return preprocess.device_scale(loaded.backend, mean, std, loaded.config.dtype)


# Overflow shows in the results (non-finite outputs, a NaN loss), never as stray warnings.
_QUIET = np.errstate(over="ignore", invalid="ignore", divide="ignore")


@_QUIET
def forward(loaded: Loaded, x: np.ndarray) -> np.ndarray:
    """Model outputs (host, float64) for raw features x, in batches of bounded memory."""
    scale = _scale(loaded)
    outs = []
    for s in range(0, x.shape[0], BATCH):
        xb = loaded.backend.asarray(x[s : s + BATCH], loaded.config.dtype)
        if scale is not None:
            xb = standardize(loaded.backend.xp, xb, scale, out=xb)
        outs.append(to_host(loaded.model.forward(xb)).astype(np.float64))
    if not outs:
        return np.zeros((0, loaded.model.layers[-1].fan_out))
    return np.concatenate(outs)


def _scale_y(loaded: Loaded, y: np.ndarray, inverse: bool) -> np.ndarray:
    """Regression targets to (or, inverse, from) the model's standardized scale."""
    return preprocess.scale_targets(y, loaded.data("y_mean"), loaded.data("y_std"), inverse)


@_QUIET
def evaluate(loaded: Loaded, source: str | None = None, target: str | None = None) -> dict:
    """Metrics on the run's validation data (or training data without one), or `source`."""
    from mlpcli.data import prepare

    cfg = loaded.config
    warning = None
    unseen: dict[str, int] = {}
    if source is None:  # the run's own data, re-read and encoded as the checkpoint says
        data = prepare(cfg, f"{loaded.path} (meta.config)", loaded.encoding)
        unseen = data.unseen
        if data.x_val is not None:
            x, y, which = data.x_val, data.y_val, "validation data"
        else:
            rows = data.train_rows
            x = data.x_train if rows is None else data.x_train[rows]
            y, which = data.y_train, "training data"
            warning = "the run has no validation data; these metrics are on its training data"
    else:
        spec = {"source": source, "target": target or cfg.data.target, "options": {}}
        if cfg.data.features is not None:
            spec["features"] = cfg.data.features
        try:
            x, y, unseen = load_labeled(
                spec,
                task=cfg.task,
                seed=cfg.seed,
                dtype=cfg.dtype,
                classes=loaded.classes,
                feature_names=loaded.feature_names,
                encoding=loaded.encoding,
            )
        except DataError as e:
            raise DataError(_eval_names(str(e), cfg)) from None
        if cfg.task == "regression":
            y = _scale_y(loaded, y, inverse=False).astype(x.dtype)
        which = source
    unseen_text = preprocess.unseen_warning(unseen, which)
    if unseen_text:
        warning = f"{warning}; {unseen_text}" if warning else unseen_text
    n = int(x.shape[0])
    if n == 0:
        raise MlpcliError(f"eval: {which} has no samples")
    xp_y = loaded.backend.asarray(as_targets(cfg.loss, y, cfg.dtype))
    outputs = loaded.backend.xp.empty((n, loaded.model.layers[-1].fan_out), cfg.dtype)
    # the training loss (weighted as in training), computed as in training
    total, norm, hits = loaded.model.evaluate(
        loaded.backend.asarray(x, cfg.dtype), xp_y, BATCH, _scale(loaded), outputs=outputs
    )
    metrics: dict[str, Any] = {"loss": float(total) / float(norm), "n_samples": n}
    out = to_host(outputs).astype(np.float64)
    if cfg.task == "classification":
        metrics["accuracy"] = int(hits) / n
        found = measures.classification(y, out, cfg.loss)
        metrics["f1_macro"] = found["f1_macro"]
        if "auc" in found:
            metrics["auc"] = found["auc"]
    else:  # errors in the target's original units
        pred = _scale_y(loaded, out, inverse=True)
        y_true = _scale_y(loaded, y.astype(np.float64), inverse=True)
        metrics.update(measures.regression(y_true, pred))
    return {"data": which, "metrics": metrics, "warning": warning}


def _eval_names(message: str, config: Config) -> str:
    """A fault of `eval --data` in the names a user has: the data is read like a config's
    `data` section keyed `--data`, but only `--data` and `--target` are options; the
    features are the model's (its config's `data.features`, or its input columns)."""
    features = (
        "data.features in the checkpoint's config"
        if config.data.features is not None
        else "an input column of the model"
    )
    for key, name in (
        (" (set --data.features)", ""),  # the model's features cannot be renamed here
        ("--data.features", features),
        ("--data.target", "--target"),
        ("--data.source", "--data"),
    ):
        message = message.replace(key, name)
    if message.startswith("--data: "):  # it already says where
        message = message.removesuffix(" (--data)")
    return message


def predict(
    loaded: Loaded, path: str, proba: bool, warn: Any = None
) -> tuple[list[str], list[np.ndarray]]:
    """Column names and columns of predictions for the features in `path`; `warn` (a
    callable) receives the warning about categories the model never saw, if any."""
    cfg = loaded.config
    if proba and cfg.task != "classification":
        raise MlpcliError("--proba: only for classification models; this one is a regression")
    x, unseen = read_inputs(
        path,
        feature_names=loaded.feature_names or None,
        encoding=loaded.encoding,
        dtype=cfg.dtype,
    )
    unseen_text = preprocess.unseen_warning(unseen, path)
    if unseen_text and warn is not None:
        warn(unseen_text)
    out = forward(loaded, x)
    bad = int((~np.isfinite(out)).any(axis=1).sum())
    if bad:
        raise CheckpointError(
            f"{loaded.path}: the model's outputs are not finite for {bad} of {len(out)} rows "
            "(its weights overflow); no predictions were written"
        )
    if cfg.task == "regression":
        pred = _scale_y(loaded, out, inverse=True)
        names = (
            ["prediction"]
            if pred.shape[1] == 1
            else [f"prediction_{i}" for i in range(pred.shape[1])]
        )
        return names, [pred[:, i] for i in range(pred.shape[1])]
    classes = loaded.classes
    if cfg.loss == "binary_cross_entropy":
        probs = np.column_stack([1.0 - out[:, 0], out[:, 0]])
    else:
        probs = out
    columns: list[np.ndarray] = [classes[probs.argmax(axis=1)]]
    names = ["prediction"]
    if proba:
        names += [f"proba_{c}" for c in classes.tolist()]
        columns += [probs[:, i] for i in range(probs.shape[1])]
    return names, columns


def write_csv(names: list[str], columns: list[np.ndarray], stream: Any) -> None:
    """A CSV with a header row; floats with full precision (repr)."""
    import csv

    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(names)
    for row in zip(*[c.tolist() for c in columns], strict=True):
        writer.writerow(row)


def summary(loaded: Loaded) -> dict:
    """What `inspect --json` prints."""
    meta = loaded.meta
    params, arrays = ckpt.shapes(loaded.state)
    return {
        "path": str(loaded.path),
        "format": meta.get("format"),
        "version": meta.get("version"),
        "epoch": meta.get("epoch"),
        "step": meta.get("step"),
        "metrics": meta.get("metrics", {}),
        "config": to_dict(loaded.config),
        "params": params,
        "arrays": arrays,
        "task": loaded.config.task,
        "classes": loaded.classes.tolist() if loaded.classes is not None else None,
        "feature_names": loaded.feature_names,
        "categories": _categories(loaded),
        "fill": _fill(loaded),
        "class_weight": _class_weight(loaded),
    }


def _class_weight(loaded: Loaded) -> dict[str, float] | None:
    """train.class_weight as resolved against the training labels: label -> weight."""
    weights = loaded.data("class_weight")
    if weights is None or loaded.classes is None:
        return None
    return {str(c): float(w) for c, w in zip(loaded.classes.tolist(), weights, strict=True)}


def _categories(loaded: Loaded) -> dict[str, list[str]]:
    """Each categorical input column's vocabulary ("" is the missing category)."""
    names = loaded.feature_names
    return {names[j]: v.tolist() for j, v in sorted(loaded.state.categories.items())}


def _fill(loaded: Loaded) -> dict[str, float] | None:
    """What a missing cell of each numeric input column becomes; None: an error."""
    fill = loaded.data("fill")
    if fill is None:
        return None
    names, categorical = loaded.feature_names, loaded.state.categories
    return {names[j]: float(v) for j, v in enumerate(fill) if j not in categorical}
