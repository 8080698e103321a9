"""The training loop: mini-batch SGD-family training with logging and checkpoints.

No Typer here: `Run.fit()` can be called from Python. Output goes through a reporter
(see report.py); everything random derives from (seed, epoch, step) so that a run stopped
anywhere can be rebuilt exactly.
"""

from __future__ import annotations

import math
import signal
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from mlpcli import checkpoint as ckpt
from mlpcli.backend import Backend, get_backend, to_host
from mlpcli.config import Config, to_dict, to_yaml
from mlpcli.data import Dataset, data_digest, prepare
from mlpcli.distributed import world
from mlpcli.errors import CheckpointError, ConfigError, DataError, MlpcliError, RunError
from mlpcli.losses import as_targets, correct
from mlpcli.model import MLP, standardize
from mlpcli.optim import build_optimizer
from mlpcli.rng import generator
from mlpcli.schedules import lr_at

EVAL_BATCH = 4096  # validation batch: large, without building the whole output at once
SIGNAL_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}


class Interrupted(MlpcliError):
    """Training stopped by SIGINT / SIGTERM after saving a resumable checkpoint."""

    def __init__(self, signum: int, path: Path, step: int, epoch: int):
        super().__init__(
            f"stopped by {signal.Signals(signum).name} at step {step} (epoch {epoch}); "
            f"resume with: mlpcli resume {path}"
        )
        self.exit_code = SIGNAL_EXIT.get(signum, 130)


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


def run_folder(config: Config, name: str | None) -> Path:
    """A new run folder under logging.logdir; an existing non-empty one is an error."""
    logdir = Path(config.logging.logdir)
    if name is not None:
        path = logdir / name
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            what = "is not empty" if path.is_dir() else "is a file"
            raise MlpcliError(
                f"--name: run folder {path} already exists and {what}; "
                "choose another name or resume from its checkpoint"
            )
    else:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        path = logdir / f"{config.name}-{stamp}"
        n = 1
        while path.exists():  # two runs started in the same second
            n += 1
            path = logdir / f"{config.name}-{stamp}-{n}"
    try:
        (path / "checkpoints").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MlpcliError(f"logging.logdir: cannot create run folder {path}: {e}") from None
    return path


class Run:
    """One training run: model, optimizer, data on the device, and its run folder."""

    def __init__(
        self,
        config: Config,
        data: Dataset,
        reporter: Any,
        backend: Backend | None = None,
        state: tuple[dict[str, np.ndarray], dict] | None = None,
        comm: Any = None,
    ):
        self.config = config
        self.data = data
        self.run_dir = Path()
        self.reporter = reporter
        self.backend = backend or get_backend(config.device)
        xp = self.xp = self.backend.xp
        self.classification = config.task == "classification"

        init_params, where = None, "checkpoint"
        if state is not None:
            init_params = ckpt.section(state[0], "params")
        elif config.model.init_from:
            init_params = ckpt.load_params(config.model.init_from)
            where = f"model.init_from: {config.model.init_from}"
        self.model = MLP.build(
            xp, config, data.x_train.shape[1], init_params=init_params, where=where
        )
        options = config.optimizer.model_dump(exclude={"name", "lr"})
        self.optimizer = build_optimizer(config.optimizer.name, self.model.params(), xp, **options)
        self.progress = Progress()
        if state is not None:
            self.optimizer.load_state_dict(ckpt.section(state[0], "optim"))
            self.progress = _progress(state[1])

        # The data lives on the device whole (on the CPU a memory-mapped .npy stays mapped);
        # batches are gathered into reused buffers and standardized there, so the raw
        # features are never copied or rescaled as a whole.
        self.x = self.backend.asarray(data.x_train)
        self.rows = data.train_rows  # None, or the rows of x that form the training split
        y = as_targets(config.loss, data.y_train, config.dtype)
        if self.rows is not None and len(y) == len(data.x_train):
            y = y[self.rows]
        self.y = self.backend.asarray(y)
        self.x_val = self.y_val = None
        if data.x_val is not None:
            self.x_val = self.backend.asarray(data.x_val)
            self.y_val = self.backend.asarray(as_targets(config.loss, data.y_val, config.dtype))
        self.scale = None  # (mean, 1 / std) on the device
        if data.x_mean is not None:
            self.scale = (
                self.backend.asarray(data.x_mean, dtype=config.dtype),
                self.backend.asarray(1.0 / data.x_std, dtype=config.dtype),
            )
        self.n_train = data.n_train
        bs = min(config.train.batch_size, self.n_train)
        self.batch_size = bs
        self.steps_per_epoch = math.ceil(self.n_train / bs)
        self._xb = xp.empty((bs, self.x.shape[1]), config.dtype)
        self._yb = xp.empty((bs, *self.y.shape[1:]), self.y.dtype)
        dropouts = [(i, spec) for i, spec in enumerate(config.model.layers) if spec.dropout]
        # host buffers for drawing dropout masks: (layer, its rate, uniforms, keep-mask)
        self._dropout = [
            (
                i,
                spec.dropout,
                np.empty((bs, spec.units), np.float32),
                np.empty((bs, spec.units), bool),
            )
            for i, spec in dropouts
        ]
        self.data_digest = data_digest(data)
        self.comm = comm if comm is not None else world()
        if not self.comm.same_everywhere(_fingerprint(self)):
            raise RunError(
                "the MPI processes disagree on the initial weights, optimizer state or data; "
                "every process must read the same config, data and checkpoint"
            )
        self._schedule = config.schedule.model_dump() if config.schedule is not None else None
        self._stop_signal: int | None = None
        self._stop_agreed = False  # under MPI: every process saw a stop request in _log
        self.tb = None

    # ------------------------------------------------------------------ the loop

    def fit(self, run_dir: str | Path) -> Progress:
        """Train to train.epochs (or an early stop) in `run_dir`; returns the progress."""
        cfg, p = self.config, self.progress
        with self.session(run_dir):
            while p.epoch < cfg.train.epochs and not p.stopped_early:
                self.train_epoch()
            self.tb.hparams(_hparams(cfg), {f"hparam/{k}": v for k, v in p.metrics.items()}, p.step)
        self.reporter.finish(self)
        return p

    @contextmanager
    def session(self, run_dir: str | Path) -> Iterator[None]:
        """Open the run's TensorBoard log and catch SIGINT / SIGTERM while inside."""
        self.run_dir = Path(run_dir)
        # one process writes the log and the checkpoints; the others keep the same state
        self.tb = _open_tb(self.run_dir, self.progress.step) if self.comm.rank == 0 else _NoLog()
        if self.progress.step == 0:
            self.tb.text("config", _markdown_yaml(to_yaml(self.config)), 0)
            if self.config.logging.graph:
                self.tb.graph(self._graph())
            if self._draws_images():
                self._log_images()  # the untrained network, at step 0
        self.reporter.start(self)
        previous = {s: signal.signal(s, self._on_signal) for s in SIGNAL_EXIT}
        try:
            # overflow is detected where it matters (a non-finite loss), not warned about
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            self.tb.close()
            self.reporter.close()

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self._stop_signal is None:
            self._stop_signal = signum  # finish the current step, then save and stop
        # a second signal while saving changes nothing: the save is atomic and completes

    def train_epoch(self) -> None:
        """One epoch (or the rest of one), its validation and checkpoints."""
        cfg, xp, p = self.config, self.xp, self.progress
        e = p.epoch
        bs, steps = self.batch_size, self.steps_per_epoch
        if cfg.train.shuffle:
            order = generator(cfg.seed, "shuffle", e).permutation(self.n_train)
        else:
            order = np.arange(self.n_train)
        x_order = self.backend.asarray(order if self.rows is None else self.rows[order])
        order = self.backend.asarray(order)
        # Sums of the current logging interval stay on the device (no sync per step); they
        # start from what a stopped run had summed, so a resumed run logs the same bits.
        loss_sum = xp.asarray(p.log_loss, dtype=xp.float64)
        hits = xp.asarray(p.log_hits, dtype=xp.int64)
        started, first_step = time.perf_counter(), p.step
        self.reporter.epoch_start(self, e)
        shards = self.comm.size
        for b in range(p.batch, steps):
            start = b * bs
            n = min(bs, self.n_train - start)  # the global batch
            if shards > 1:  # this process's rows of it
                lo = start + n * self.comm.rank // shards
                hi = start + n * (self.comm.rank + 1) // shards
            else:
                lo, hi = start, start + n
            m = hi - lo
            xb = self.backend.take(self.x, x_order[lo:hi], out=self._xb[:m])
            if self.scale is not None:
                standardize(xp, xb, self.scale, out=xb)
            yb = self.backend.take(self.y, order[lo:hi], out=self._yb[:m])
            keep = self._keep_masks(n, p.step, lo - start, hi - start) if self._dropout else None
            if m:
                a = self.model.forward(xb, keep)
                loss = self.model.loss_and_backward(a, yb)
            else:  # a global batch smaller than the number of processes
                self.model.grad_flat[...] = 0
                loss = 0.0
            if shards > 1:
                # each process's loss is the mean over its m rows: weighted by m / n, the
                # sum over processes is the mean over the global batch, and so are the grads
                self.model.grad_flat *= m / n
                self.comm.allreduce(self.model.grad_flat, self.backend)
                loss_sum += loss * (m / n)
            else:
                loss_sum += loss
            if self.classification and m:
                hits += correct(xp, a, yb, cfg.loss)
            if cfg.train.clip_grad_norm is not None:
                self._clip(cfg.train.clip_grad_norm)
            lr = lr_at(p.step, lr=cfg.optimizer.lr, schedule=self._schedule, steps_per_epoch=steps)
            self.optimizer.step(self.model.grads(), lr)
            p.step += 1
            p.batch = b + 1
            p.log_steps += 1
            p.epoch_seen += n
            last = b == steps - 1
            if p.step % cfg.logging.every_n_steps == 0 or last or p.step == 1:
                self._log(loss_sum, hits, lr, started, first_step)
            self.reporter.step(self, b + 1)
            # under MPI the processes agree to stop at a logging step (see _log)
            if self._stopping() and not last and (shards == 1 or not p.log_steps):
                p.log_loss, p.log_hits = self._finite(float(loss_sum)), int(hits)
                self._interrupt()
        self._end_epoch()
        if self._stopping():
            self._interrupt()

    def _stopping(self) -> bool:
        """Whether to stop now: under MPI only on the request the processes agreed on in
        _log, never on a signal one process has seen since, which the others have not."""
        return self._stop_signal is not None if self.comm.size == 1 else self._stop_agreed

    def _finite(self, value: float) -> float:
        """A summed loss, checked: a non-finite sum ends the run (on every process alike)."""
        if not math.isfinite(value):
            self._diverged(value, self.progress.epoch + 1)
        return value

    def _log(self, loss_sum: Any, hits: Any, lr: float, started: float, first_step: int) -> None:
        """Log the mean training loss since the last log and the lr; zero the interval."""
        p = self.progress
        # one host sync per logging interval; under MPI, one small Allreduce of the
        # interval's sums and of the processes' stop requests
        sums = self.comm.allreduce(
            np.array([float(loss_sum), int(hits), self._stop_signal is not None], np.float64)
        )
        interval, interval_hits = self._finite(float(sums[0])), int(sums[1])
        self._stop_agreed = bool(sums[2])
        if sums[2] and self._stop_signal is None:
            self._stop_signal = signal.SIGTERM  # another process was asked to stop
        p.epoch_loss += interval
        p.epoch_hits += interval_hits
        mean = interval / p.log_steps
        self.tb.scalar("train/loss", mean, p.step)
        self.tb.scalar("lr", lr, p.step)
        for i, layer in enumerate(self.model.layers):  # of the last step, after any clipping
            norm = float(
                self.xp.sqrt(self.xp.vdot(layer.dW, layer.dW) + self.xp.vdot(layer.db, layer.db))
            )
            self.tb.scalar(f"grad_norm/layer{i}", norm, p.step)
        elapsed = time.perf_counter() - started
        rate = (p.step - first_step) * self.batch_size / elapsed if elapsed > 0 else 0.0
        self.tb.scalar("train/samples_per_sec", rate, p.step)
        self.reporter.log(self, mean, rate)
        loss_sum[...] = 0
        hits[...] = 0
        p.log_loss, p.log_hits, p.log_steps = 0.0, 0, 0

    def _end_epoch(self) -> None:
        cfg, p = self.config, self.progress
        p.epoch += 1
        p.batch = 0
        metrics = {"train/loss": p.epoch_loss / self.steps_per_epoch}
        if self.classification:
            metrics["train/accuracy"] = p.epoch_hits / p.epoch_seen
        if self.x_val is not None:
            total, hits = self.model.evaluate(self.x_val, self.y_val, EVAL_BATCH, self.scale)
            n_val = self.x_val.shape[0]
            metrics["val/loss"] = float(total) / n_val
            if not math.isfinite(metrics["val/loss"]):
                self._diverged(metrics["val/loss"], p.epoch)
            if self.classification:
                metrics["val/accuracy"] = int(hits) / n_val
        for tag in ("train/accuracy", "val/loss", "val/accuracy"):
            if tag in metrics:
                self.tb.scalar(tag, metrics[tag], p.step)
        if cfg.logging.histograms:
            for name, value in self.model.params().items():
                self.tb.histogram(f"weights/{name}", to_host(value), p.step)
            for name, value in self.model.grads().items():
                self.tb.histogram(f"grads/{name}", to_host(value), p.step)
        every = cfg.logging.images_every_n_epochs
        if self._draws_images() and (p.epoch % every == 0 or p.epoch == cfg.train.epochs):
            self._log_images()
        p.metrics = metrics
        p.epoch_loss, p.epoch_hits, p.epoch_seen = 0.0, 0, 0

        improved = self._track_best(metrics)
        es = cfg.train.early_stopping
        if es is not None:
            value = _monitored(metrics, es.monitor)
            if p.stop_best is None or _better(value, p.stop_best, es.mode, es.min_delta):
                p.stop_best, p.stop_wait = value, 0
            else:
                p.stop_wait += 1
                p.stopped_early = p.stop_wait >= es.patience
        self._save_epoch(improved)
        self.tb.flush()
        self.reporter.epoch_end(self, metrics)

    def _track_best(self, metrics: dict[str, float]) -> bool:
        p, c = self.progress, self.config.checkpoint
        value = _monitored(metrics, c.monitor)
        if p.best is None or _better(value, p.best, c.mode, 0.0):
            p.best, p.best_epoch = value, p.epoch
            return True
        return False

    # ------------------------------------------------------------------ pictures

    def _graph(self):
        """The model's computation graph for TensorBoard's Graphs tab."""
        from mlpcli.tblog import graph_def

        layers = self.config.model.layers
        return graph_def(
            [self.x.shape[1], *(la.units for la in layers)],
            [la.activation for la in layers],
            self.config.loss,
            dtype=self.config.dtype,
            dropouts=[la.dropout for la in layers],
        )

    def _draws_images(self) -> bool:
        """Decision surfaces are drawn for classifiers of 2-D points."""
        return (
            self.config.logging.images_every_n_epochs > 0
            and self.classification
            and self.x.shape[1] == 2
        )

    def _log_images(self) -> None:
        """The decision surface with the training points, and the first layer's lines."""
        from mlpcli.visualize import decision_surface, hidden_lines

        d = self.data
        x = d.x_train if d.train_rows is None else d.x_train[d.train_rows]
        n_classes = 2 if self.config.loss == "binary_cross_entropy" else len(d.classes)
        image, canvas = decision_surface(
            self._probabilities, x, d.y_train, n_classes=n_classes, chunk=self.batch_size
        )
        step = self.progress.step
        self.tb.image("decision_surface", image, step)
        if len(self.model.layers) > 1:  # a hidden layer: the line each of its units draws
            first = self.model.layers[0]
            lines = hidden_lines(
                image, canvas, to_host(first.W), to_host(first.b), d.x_mean, d.x_std
            )
            self.tb.image("hidden_units", lines, step)

    def _probabilities(self, points: np.ndarray) -> np.ndarray:
        """Class probabilities (m, C) for raw points (m, d), on the host."""
        xb = self.backend.asarray(points, dtype=self.config.dtype)
        if self.scale is not None:
            xb = standardize(self.xp, xb, self.scale, out=xb)
        out = to_host(self.model.forward(xb)).astype(np.float64)
        if self.config.loss == "binary_cross_entropy":
            return np.column_stack([1.0 - out[:, 0], out[:, 0]])
        return out

    def _keep_masks(self, n: int, step: int, lo: int = 0, hi: int | None = None) -> list:
        """Dropout keep-masks for rows lo:hi of a step's batch of n, drawn on the host from
        (seed, step): the whole batch's masks are drawn, so a shard sees the same rows."""
        rng = generator(self.config.seed, "dropout", step)
        keep: list = [None] * len(self.config.model.layers)
        for i, rate, uniform, mask in self._dropout:
            rng.random(dtype=np.float32, out=uniform[:n])
            np.greater_equal(uniform[:n], rate, out=mask[:n])
            keep[i] = self.backend.asarray(mask[lo:hi])
        return keep

    def _clip(self, max_norm: float) -> None:
        """Scale all gradients so their global L2 norm is at most max_norm (as torch)."""
        grads = list(self.model.grads().values())
        total = sum(self.xp.vdot(g, g) for g in grads) ** 0.5  # BLAS dots: no temporaries
        coef = self.xp.minimum(max_norm / (total + 1e-6), 1.0)  # stays on the device
        for g in grads:
            g *= coef

    # ------------------------------------------------------------------ saving

    def state(self) -> tuple[dict[str, np.ndarray], dict]:
        """The whole training state as flat host arrays and JSON meta."""
        arrays = ckpt.prefixed("params", {k: to_host(v) for k, v in self.model.params().items()})
        arrays.update(ckpt.prefixed("optim", self.optimizer.state_dict()))
        d = self.data
        extra = {
            "x_mean": d.x_mean,
            "x_std": d.x_std,
            "y_mean": d.y_mean,
            "y_std": d.y_std,
            "classes": d.classes,
        }
        arrays.update(ckpt.prefixed("data", {k: v for k, v in extra.items() if v is not None}))
        p = self.progress
        meta = {
            "epoch": p.epoch,
            "step": p.step,
            "config": to_dict(self.config),
            "metrics": p.metrics,
            "feature_names": list(d.feature_names),
            "data_digest": self.data_digest,
            "task": self.config.task,
            "progress": asdict(p),
        }
        return arrays, meta

    def _save_epoch(self, improved: bool) -> None:
        if self.comm.rank != 0:
            return
        c, p = self.config.checkpoint, self.progress
        folder = self.run_dir / "checkpoints"
        arrays, meta = self.state()
        targets = [folder / "last.npz"]
        if c.keep_last and p.epoch % c.every_n_epochs == 0:
            targets.insert(0, folder / f"epoch-{p.epoch:04d}.npz")
        if c.save_best and improved:
            targets.append(folder / "best.npz")
        ckpt.save_many(targets, arrays, meta)
        if c.keep_last:
            ckpt.rotate(folder, c.keep_last)

    def _interrupt(self) -> None:
        path = self.run_dir / "checkpoints" / "last.npz"
        if self.comm.rank == 0:
            ckpt.save(path, *self.state())
        self.tb.flush()
        p = self.progress
        raise Interrupted(self._stop_signal, path, p.step, p.epoch + (p.batch > 0))

    def _diverged(self, value: float, epoch: int) -> None:
        p = self.progress
        last = self.run_dir / "checkpoints" / "last.npz"
        kept = f"; the last good checkpoint is {last}" if last.exists() else ""
        raise RunError(
            f"training diverged: the loss became {value} (seen at step {p.step}, epoch {epoch})"
            f"{kept}; try a lower optimizer.lr or train.clip_grad_norm"
        )


def _progress(meta: dict) -> Progress:
    """The trainer's position stored in a checkpoint's meta."""
    fields = meta.get("progress")
    try:
        if not isinstance(fields, dict):
            raise TypeError("missing")
        return Progress(**fields)
    except TypeError as e:
        raise CheckpointError(f"meta.progress is missing or damaged ({e})") from None


# Keys `resume --set` may change: none of them changes the model, its data or the meaning
# of a step. Anything else (model, loss, data, seed, dtype, batch size...) is refused.
RESUMABLE = (
    "name",
    "device",
    "train.epochs",
    "train.shuffle",
    "train.clip_grad_norm",
    "train.early_stopping",
    "logging",
    "checkpoint",
    "optimizer",
    "schedule",
)


def resume_config(
    meta: dict, where: str, overrides: list[str] | None, epochs: int | None, device: str | None
) -> Config:
    """The checkpoint's config with the allowed overrides of `mlpcli resume` applied."""
    from mlpcli.config import parse_override
    from mlpcli.inference import checkpoint_config

    for item in overrides or []:
        key, _ = parse_override(item)
        if key.startswith("optimizer.name") or not any(
            key == allowed or key.startswith(allowed + ".") for allowed in RESUMABLE
        ):
            raise ConfigError(
                f"--set {key}: cannot change when resuming (it changes the model, its data or "
                "its optimizer state); start a new run with `mlpcli train` instead"
            )
    config = checkpoint_config(
        meta,
        where,
        overrides=overrides,
        options={"train.epochs": ("--epochs", epochs), "device": ("--device", device)},
    )
    done = int(meta.get("epoch", 0))
    if config.train.epochs <= done:
        flag = "--epochs" if epochs is not None else "train.epochs"
        raise ConfigError(
            f"{flag}: the checkpoint has {done} epochs done; give a larger total to go on "
            f"(e.g. --epochs {done + config.train.epochs if epochs is None else done + 1})"
        )
    return config


def run_folder_of(checkpoint: Path) -> Path:
    """The run folder a checkpoint belongs to (the folder above `checkpoints/`)."""
    checkpoint = Path(checkpoint).resolve()
    if checkpoint.parent.name != "checkpoints":
        raise CheckpointError(
            f"{checkpoint}: not inside a run folder's checkpoints/ folder, so there is no run "
            "to continue; copy it to RUN/checkpoints/ first"
        )
    return checkpoint.parent.parent


def resume(
    path: str | Path,
    reporter: Any,
    *,
    epochs: int | None = None,
    overrides: list[str] | None = None,
    device: str | None = None,
) -> Progress:
    """Continue the run of checkpoint `path` in its own run folder, exactly."""
    path = Path(path)
    arrays, meta = ckpt.load(path)
    run_dir = run_folder_of(path)
    config = resume_config(meta, str(path), overrides, epochs, device)
    backend = get_backend(config.device)
    data = prepare(config, f"{path} (meta.config)")
    if meta.get("data_digest") not in (None, data_digest(data)):
        raise DataError(
            f"data: {data.source} is not the data this checkpoint was trained on "
            f"({meta.get('data_digest')}, now {data_digest(data)}); exact resume needs the "
            "same data"
        )
    run = Run(config, data, reporter, backend, state=(arrays, meta))
    run.progress.stopped_early = False  # asked to go on: early stopping judges anew
    return run.fit(run_dir)


def _hparams(config: Config) -> dict[str, Any]:
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


def _fingerprint(run: Run) -> int:
    """A checksum of the initial parameters, optimizer state, position and data."""
    crc = zlib.crc32(run.data_digest.encode())
    for value in (*run.model.params().values(), *run.optimizer.state_dict().values()):
        crc = zlib.crc32(np.ascontiguousarray(to_host(value)).view(np.uint8).reshape(-1), crc)
    return zlib.crc32(repr(asdict(run.progress)).encode(), crc)


class _NoLog:
    """The TensorBoard logger of the processes that do not write one."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def _monitored(metrics: dict[str, float], monitor: str) -> float:
    """The monitored metric; val/ falls back to train/ when there is no validation data."""
    if monitor in metrics:
        return metrics[monitor]
    return metrics[monitor.replace("val/", "train/")]


def _better(value: float, best: float, mode: str, min_delta: float) -> bool:
    return value < best - min_delta if mode == "min" else value > best + min_delta


def _markdown_yaml(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())  # a Markdown code block


def _open_tb(run_dir: Path, step: int):
    from mlpcli.tblog import TBLogger

    return TBLogger(run_dir, start_step=step)
