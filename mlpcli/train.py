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
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from mlpcli import board
from mlpcli import checkpoint as ckpt
from mlpcli import metrics as measures
from mlpcli.backend import Backend, get_backend, to_host
from mlpcli.config import Config, to_dict
from mlpcli.data import Dataset, data_digest, preprocess
from mlpcli.distributed import world
from mlpcli.errors import CheckpointError, ConfigError, Interrupted, RunError
from mlpcli.feed import make_feed
from mlpcli.losses import as_targets, correct, sample_weights
from mlpcli.model import MLP, standardize
from mlpcli.optim import build_optimizer
from mlpcli.progress import Progress
from mlpcli.rng import generator
from mlpcli.schedules import lr_at
from mlpcli.stopping import StopRequest

EVAL_BATCH = 4096  # validation batch: large, without building the whole output at once


class Run:
    """One training run: model, optimizer, data on the device, and its run folder."""

    def __init__(
        self,
        config: Config,
        data: Dataset,
        reporter: Any,
        backend: Backend | None = None,
        state: ckpt.Checkpoint | None = None,
        comm: Any = None,
        stop: StopRequest | None = None,
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
            init_params, where = state.params, state.where
        elif config.model.init_from:
            init_params = ckpt.load_params(config.model.init_from)
            where = f"model.init_from: {config.model.init_from}"
        self.model = MLP.build(
            xp, config, data.x_train.shape[1], init_params=init_params, where=where
        )
        if data.class_weight is not None:  # train.class_weight, resolved against the labels
            self.model.class_weight = self.backend.asarray(data.class_weight, config.dtype)
        options = config.optimizer.model_dump(exclude={"name", "lr"})
        self.optimizer = build_optimizer(config.optimizer.name, self.model.params(), xp, **options)
        self.progress = Progress()
        if state is not None:
            try:
                self.optimizer.load_state_dict(state.optim)
            except CheckpointError as e:
                raise CheckpointError(f"{state.where}: {e}") from None
            self.progress = Progress.from_meta(state.progress, state.where)

        # Batches come from the feed: the data on the device whole, or streamed from the host
        # (data.stream; see feed.py). Either way they are gathered into reused buffers and
        # standardized there, so the raw features are never copied or rescaled as a whole.
        y = as_targets(config.loss, data.y_train, config.dtype)
        if data.train_rows is not None and len(y) == len(data.x_train):
            y = y[data.train_rows]
        y_val = self._val_out = None
        if data.x_val is not None:
            y_val = as_targets(config.loss, data.y_val, config.dtype)
            # the validation outputs, copied to the host once an epoch for the metrics
            shape = (len(data.x_val), self.model.layers[-1].fan_out)
            self._val_out = xp.empty(shape, config.dtype)
        self.n_train = data.n_train
        bs = min(config.train.batch_size, self.n_train)
        self.batch_size = bs
        self.steps_per_epoch = math.ceil(self.n_train / bs)
        self.feed = make_feed(
            config.data.stream,
            self.backend,
            data.x_train,
            y,
            data.train_rows,
            data.x_val,
            y_val,
            bs,
            EVAL_BATCH,
            config.dtype,
        )
        self.x = self.feed.x  # (N, d) raw features: on the device, or on the host if streamed
        # (mean, 1 / std) on the device, or None
        self.scale = preprocess.device_scale(self.backend, data.x_mean, data.x_std, config.dtype)
        # class weights under MPI: each shard's loss is normalized by the Σ w of the whole
        # global batch, which every process finds from the host labels (no communication)
        self._weights = None
        self.comm = comm if comm is not None else world()
        if data.class_weight is not None and self.comm.size > 1:
            self._weights = sample_weights(np, config.loss, y, data.class_weight)
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
        if not self.comm.same_everywhere(_fingerprint(self)):
            raise RunError(
                "the MPI processes disagree on the initial weights, optimizer state or data; "
                "every process must read the same config, data and checkpoint"
            )
        self._check_monitors()
        self._schedule = config.schedule.model_dump() if config.schedule is not None else None
        self.stop = stop  # SIGINT / SIGTERM, recorded; entered by the caller or by session
        self._stop_agreed = False  # under MPI: every process saw a stop request in _log
        self.tb = None

    def _check_monitors(self) -> None:
        """A monitored metric the validation data cannot define is refused before training:
        AUC needs both classes among the labels, R² targets that are not all equal."""
        d = self.data
        for section, key in (
            (self.config.checkpoint, "checkpoint.monitor"),
            (self.config.train.early_stopping, "train.early_stopping.monitor"),
        ):
            monitor = section.monitor if section is not None else None
            if d.y_val is None or monitor not in ("val/auc", "val/r2"):
                continue
            if monitor == "val/auc" and len(np.unique(d.y_val)) < 2:
                only = d.classes[int(d.y_val[0])].item()
                raise ConfigError(
                    f"{key}: val/auc needs both classes in the validation data, which holds "
                    f"class {only!r} only"
                )
            if monitor == "val/r2" and not (d.y_val != d.y_val[:1]).any():
                raise ConfigError(
                    f"{key}: val/r2 is not defined: every validation target is the same"
                )

    # ------------------------------------------------------------------ the loop

    def fit(self, run_dir: str | Path) -> Progress:
        """Train to train.epochs (or an early stop) in `run_dir`; returns the progress."""
        cfg, p = self.config, self.progress
        with self.session(run_dir):
            while p.epoch < cfg.train.epochs and not p.stopped_early:
                self.train_epoch()
            board.log_final(self, self.tb)
        self.reporter.finish(self)
        return p

    @contextmanager
    def session(self, run_dir: str | Path) -> Iterator[None]:
        """Open the run's TensorBoard log, recording SIGINT / SIGTERM while inside."""
        self.run_dir = Path(run_dir)
        with ExitStack() as stack:
            if self.stop is None:  # called from Python: catch the signals here
                self.stop = stack.enter_context(StopRequest())
            self.stop.defer()
            # one process writes the log and the checkpoints; the others keep the same state
            self.tb = board.open_log(self, self.run_dir)
            stack.callback(self.reporter.close)
            stack.callback(self.tb.close)
            self.reporter.start(self)
            # overflow is detected where it matters (a non-finite loss), not warned about
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                yield

    @property
    def _stop_signal(self) -> int | None:
        """The signal that asked this process to stop, once one has."""
        return self.stop.signum if self.stop is not None else None

    def train_epoch(self) -> None:
        """One epoch (or the rest of one), its validation and checkpoints."""
        cfg, xp, p = self.config, self.xp, self.progress
        e = p.epoch
        steps = self.steps_per_epoch
        if cfg.train.shuffle:
            order = generator(cfg.seed, "shuffle", e).permutation(self.n_train)
        else:
            order = np.arange(self.n_train)
        # Sums of the current logging interval stay on the device (no sync per step); they
        # start from what a stopped run had summed, so a resumed run logs the same bits.
        loss_sum = xp.asarray(p.log_loss, dtype=xp.float64)
        hits = xp.asarray(p.log_hits, dtype=xp.int64)
        started, first_step = time.perf_counter(), p.step
        self.reporter.epoch_start(self, e)
        shards = self.comm.size
        spans = [self._rows_of(b) for b in range(p.batch, steps)]
        batches = self.feed.batches(order, [(lo, hi) for _, _, lo, hi in spans])
        for b, (start, n, lo, hi), (xb, yb) in zip(
            range(p.batch, steps), spans, batches, strict=True
        ):
            m = hi - lo
            if self.scale is not None:
                standardize(xp, xb, self.scale, out=xb)
            keep = self._keep_masks(n, p.step, lo - start, hi - start) if self._dropout else None
            total = None  # with class weights under MPI: Σ w of the global batch
            if self._weights is not None:
                total = float(self._weights[order[start : start + n]].sum())
            if m:
                a = self.model.forward(xb, keep)
                loss = self.model.loss_and_backward(a, yb, total)
            else:  # a global batch smaller than the number of processes
                self.model.grad_flat[...] = 0
                loss = 0.0
            if total is not None:
                # each shard's loss and grads are Σ_shard wᵢ lᵢ / Σ_batch w: their sum over
                # the processes is the weighted mean over the global batch
                self.comm.allreduce(self.model.grad_flat, self.backend)
                loss_sum += loss
            elif shards > 1:
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
        done = p.epoch >= cfg.train.epochs or p.stopped_early
        if self._stopping() and not done:  # a stop as the last epoch ends changes nothing
            self._interrupt()

    def _rows_of(self, b: int) -> tuple[int, int, int, int]:
        """Batch b of an epoch: (start, n) of the global batch in the epoch's order, and
        this process's rows lo:hi of it (all of them without MPI)."""
        start = b * self.batch_size
        n = min(self.batch_size, self.n_train - start)
        shards = self.comm.size
        if shards == 1:
            return start, n, start, start + n
        lo = start + n * self.comm.rank // shards
        hi = start + n * (self.comm.rank + 1) // shards
        return start, n, lo, hi

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
            self.stop.signum = signal.SIGTERM  # another process was asked to stop
        p.epoch_loss += interval
        p.epoch_hits += interval_hits
        mean = interval / p.log_steps
        self.tb.scalar("train/loss", mean, p.step)
        self.tb.scalar("lr", lr, p.step)
        for i, layer in enumerate(self.model.layers):  # of the last step, after any clipping
            norm = float(
                self.xp.sqrt(self.xp.vdot(layer.dW, layer.dW) + self.xp.vdot(layer.db, layer.db))
            )
            self.tb.scalar(f"vitals/grad_norm/layer{i}", norm, p.step)
        elapsed = time.perf_counter() - started
        rate = (p.step - first_step) * self.batch_size / elapsed if elapsed > 0 else 0.0
        self.tb.scalar("vitals/samples_per_sec", rate, p.step)
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
        if self.feed.n_val:
            metrics.update(self._validate())
        for tag, value in metrics.items():
            if tag != "train/loss":  # logged with its interval by _log
                self.tb.scalar(tag, value, p.step)
        board.log_best(self, self.tb, metrics)
        if cfg.logging.histograms:
            for name, value in self.model.params().items():
                self.tb.histogram(f"weights/{name}", to_host(value), p.step)
            for name, value in self.model.grads().items():
                self.tb.histogram(f"weights/{name}/grad", to_host(value), p.step)
        every = cfg.logging.images_every_n_epochs
        if board.draws_images(self) and (p.epoch % every == 0 or p.epoch == cfg.train.epochs):
            board.log_images(self, self.tb)
        p.epoch_loss, p.epoch_hits, p.epoch_seen = 0.0, 0, 0
        improved = p.judge(metrics, cfg.checkpoint, cfg.train.early_stopping)
        self._save_epoch(improved)
        self.tb.flush()
        self.reporter.epoch_end(self, metrics)

    def _validate(self) -> dict[str, float]:
        """The validation metrics of an epoch: loss, accuracy, f1_macro and auc (binary),
        or mae and r2 in the target's units; the confusion matrix and PR curve to the log."""
        cfg, d, p = self.config, self.data, self.progress
        total = norm = hits = None  # device scalars, summed over the pieces the feed gives
        start = 0
        for x_val, y_val in self.feed.validation():
            end = start + x_val.shape[0]
            t, w, h = self.model.evaluate(
                x_val, y_val, EVAL_BATCH, self.scale, outputs=self._val_out[start:end]
            )
            total, norm, hits = (t, w, h) if total is None else (total + t, norm + w, hits + h)
            start = end
        found = {"val/loss": float(total) / float(norm)}
        if not math.isfinite(found["val/loss"]):
            self._diverged(found["val/loss"], p.epoch)
        outputs = to_host(self._val_out)  # one copy an epoch
        if self.classification:
            found["val/accuracy"] = int(hits) / len(outputs)
            result = measures.classification(d.y_val, outputs, cfg.loss)
            found["val/f1_macro"] = result["f1_macro"]
            if "auc" in result and math.isfinite(result["auc"]):  # both classes present
                found["val/auc"] = result["auc"]
            board.log_classifier(self, self.tb, result["confusion"], outputs)
        else:
            y_mean, y_std = d.y_mean, d.y_std
            y = preprocess.scale_targets(d.y_val.astype(np.float64), y_mean, y_std, True)
            pred = preprocess.scale_targets(outputs.astype(np.float64), y_mean, y_std, True)
            result = measures.regression(y, pred)
            found["val/mae"] = result["mae"]
            if math.isfinite(result["r2"]):  # targets not all equal
                found["val/r2"] = result["r2"]
        return found

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

    def state(self) -> ckpt.Checkpoint:
        """The whole training state as host arrays and JSON meta."""
        d, p = self.data, self.progress
        meta = {
            "epoch": p.epoch,
            "step": p.step,
            "config": to_dict(self.config),
            "metrics": p.metrics,
            "feature_names": list(d.feature_names),
            "data_digest": self.data_digest,
            "task": self.config.task,
            "progress": p.as_meta(),
        }
        return ckpt.Checkpoint(
            params={k: to_host(v) for k, v in self.model.params().items()},
            optim=self.optimizer.state_dict(),
            stats={
                **preprocess.statistics(d),
                "classes": d.classes,
                "class_weight": d.class_weight,
            },
            meta=meta,
            categories=preprocess.categories(d),
        )

    def _save_epoch(self, improved: bool) -> None:
        if self.comm.rank != 0:
            return
        c, p = self.config.checkpoint, self.progress
        folder = self.run_dir / "checkpoints"
        targets = [folder / "last.npz"]
        if c.keep_last and p.epoch % c.every_n_epochs == 0:
            targets.insert(0, folder / f"epoch-{p.epoch:04d}.npz")
        if c.save_best and improved:
            targets.append(folder / "best.npz")
        ckpt.write(targets, self.state())
        if c.keep_last:
            ckpt.rotate(folder, c.keep_last)

    def _interrupt(self) -> None:
        path = self.run_dir / "checkpoints" / "last.npz"
        if self.comm.rank == 0:
            ckpt.write([path], self.state())
        self.tb.flush()
        p = self.progress
        raise Interrupted(self._stop_signal, path, p.step, p.epoch + (p.batch > 0))

    def _diverged(self, value: float, epoch: int) -> None:
        p = self.progress
        if self.tb is not None:
            board.log_final(self, self.tb, "failure")
        last = self.run_dir / "checkpoints" / "last.npz"
        kept = f"; the last good checkpoint is {last}" if last.exists() else ""
        raise RunError(
            f"training diverged: the loss became {value} (seen at step {p.step}, epoch {epoch})"
            f"{kept}; try a lower optimizer.lr or train.clip_grad_norm"
        )


def _fingerprint(run: Run) -> int:
    """A checksum of the initial parameters, optimizer state, position and data."""
    crc = zlib.crc32(run.data_digest.encode())
    for value in (*run.model.params().values(), *run.optimizer.state_dict().values()):
        crc = zlib.crc32(np.ascontiguousarray(to_host(value)).view(np.uint8).reshape(-1), crc)
    return zlib.crc32(repr(run.progress.as_meta()).encode(), crc)
