"""Where a run is, and what it has judged so far: the best epoch and early stopping.

`Progress` is everything beside the arrays that an exact resume needs; it travels in a
checkpoint's `meta.progress` as plain JSON.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from mlpcli.errors import CheckpointError, RunError


@dataclass
class Progress:
    """Where a run is, and everything beside the arrays that an exact resume needs."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    batch: int = 0  # batches done in the current epoch (non-zero only after a mid-epoch stop)
    best: float | None = None  # best checkpoint.monitor value so far
    best_epoch: int | None = None
    stop_best: float | None = None  # early stopping's best value and epochs without gain
    stop_wait: int = 0
    stopped_early: bool = False
    # running sums of the current epoch and logging interval (host floats)
    epoch_loss: float = 0.0
    epoch_hits: int = 0
    epoch_seen: int = 0
    log_loss: float = 0.0  # of the logging interval, saved when a run stops mid-interval
    log_hits: int = 0
    log_steps: int = 0
    metrics: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_meta(cls, fields: Any, where: str) -> Progress:
        """The position stored in a checkpoint's meta.progress (`where`: the file)."""
        try:
            if not isinstance(fields, dict):
                raise TypeError("missing")
            progress = cls(**fields)
        except TypeError as e:
            raise CheckpointError(f"{where}: meta.progress is missing or damaged ({e})") from None
        for name, value in fields.items():
            kind = type(cls.__dataclass_fields__[name].default)
            if not _fits(value, kind):
                raise CheckpointError(f"{where}: meta.progress.{name} has the wrong type")
        return progress

    def as_meta(self) -> dict[str, Any]:
        return asdict(self)

    def judge(self, metrics: dict[str, float], checkpoint: Any, early_stopping: Any) -> bool:
        """Record an epoch's metrics: whether it is the best so far by checkpoint.monitor,
        and whether early stopping (a config section, or None) now ends the run."""
        self.metrics = metrics
        value = monitored(metrics, checkpoint.monitor)
        improved = self.best is None or better(value, self.best, checkpoint.mode, 0.0)
        if improved:
            self.best, self.best_epoch = value, self.epoch
        es = early_stopping
        if es is not None:
            value = monitored(metrics, es.monitor)
            if self.stop_best is None or better(value, self.stop_best, es.mode, es.min_delta):
                self.stop_best, self.stop_wait = value, 0
            else:
                self.stop_wait += 1
                self.stopped_early = self.stop_wait >= es.patience
        return improved


def _fits(value: Any, kind: type) -> bool:
    """Whether a JSON value fits a field whose default is of type `kind`."""
    if kind is bool:
        return isinstance(value, bool)
    if kind is type(None) and value is None:  # best, best_epoch, stop_best: None until set
        return True
    if kind in (int, float, type(None)):
        number = isinstance(value, int | float) and not isinstance(value, bool)
        whole = kind is not int or isinstance(value, int)
        return number and whole and math.isfinite(value) and (kind is not int or value >= 0)
    return isinstance(value, dict)  # metrics


def monitored(metrics: dict[str, float], monitor: str) -> float:
    """The monitored metric; val/ falls back to train/ when there is no validation data."""
    if monitor in metrics:
        return metrics[monitor]
    fallback = monitor.replace("val/", "train/")
    if fallback in metrics:
        return metrics[fallback]
    # the config and the data are checked for this before a run starts (train.Run)
    raise RunError(f"{monitor} was not measured this epoch (measured: {', '.join(metrics)})")


def better(value: float, best: float, mode: str, min_delta: float) -> bool:
    return value < best - min_delta if mode == "min" else value > best + min_delta
