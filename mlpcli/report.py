"""What a run shows on stdout: a header with the model's summary, a live bar on a terminal,
one row per epoch, a summary at the end; nothing but the run folder with --quiet. The loop
calls these hooks; none of them touches arrays.

Every line fits the terminal's width (at most PIPED_WIDTH characters when stdout is a file
or a pipe): long lines wrap between words, the epoch table wraps between columns, and only
a path longer than the whole width is left whole (a user copies it).
"""

from __future__ import annotations

import math
import textwrap
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Column

REFRESH_S = 0.1  # at most this often does a step redraw the bar
PIPED_WIDTH = 100  # the widest line written to a file or pipe
MIN_BAR = 5  # the bar keeps at least this many cells; less important fields go first
LABEL = 10  # width of the header's labels ("run", "device", ...)
SHORT = {"accuracy": "acc", "f1_macro": "f1"}  # metric names in the epoch table and the bar
BEST_MARK = "*"


# ----------------------------------------------------------------------------- numbers


def number(x: float, width: int = 10) -> str:
    """x in 4 significant digits (trailing zeros kept, so a column's values line up: 0.9500,
    1.000, 0.002315), fewer where that would be wider than `width`."""
    try:
        x = float(x)
    except (TypeError, ValueError):  # not a number (a metric left undefined): no value
        return "-"
    for digits in (4, 3, 2, 1):
        text = f"{x:#.{digits}g}"
        text = text.replace(".e", "e").rstrip(".")  # 1235. -> 1235, 1.e-05 -> 1e-05
        if len(text) <= width:
            break
    return text


def duration(seconds: float | None) -> str:
    """0.02s, 4.6s, 2m05s, 3h07m; '-' when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "-"
    if seconds < 1:
        return f"{seconds:.2f}s"
    if seconds < 59.95:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def per_second(x: float) -> str:
    """A rate in 3 significant digits with a k / M / G suffix: 94.7k."""
    for unit, scale in (("", 1.0), ("k", 1e3), ("M", 1e6)):
        text = f"{x / scale:.3g}"
        if abs(float(text)) < 1000:
            return text + unit
    return f"{x / 1e9:.3g}G"


def short(key: str) -> str:
    """A metric's name in the epoch table: val/accuracy -> val/acc."""
    head, _, name = key.rpartition("/")
    name = SHORT.get(name, name)
    return f"{head}/{name}" if head else name


def shown_path(path: Path) -> str:
    """A path as the user can type it: relative to the working folder when inside it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)


def line_width(console: Console) -> int:
    """The terminal's width; when stdout is not a terminal, at most PIPED_WIDTH."""
    width = console.width
    return width if console.is_terminal else min(width, PIPED_WIDTH)


# ----------------------------------------------------------------------------- what a run is


def loss_units(config: Any) -> str:
    """The loss and the units it is printed in (regression: standardized or the target's)."""
    if config.task != "regression":
        return config.loss
    if config.data.standardize_target:
        return (
            f"{config.loss} in standardized target units (data.standardize_target); "
            "val/mae, val/r2 and eval are in the target's own units"
        )
    return f"{config.loss} in the target's units, squared"


def model_rows(run: Any) -> tuple[list[list[str]], int]:
    """The model summary's rows (layer, output shape, activation, dropout, parameters) and
    the number of parameters, counted from the model's own arrays."""
    sizes: dict[str, int] = {}
    for name, value in run.model.params().items():  # "0/W", "0/b", ...
        layer = name.split("/")[0]
        sizes[layer] = sizes.get(layer, 0) + int(value.size)
    rows = [["input", f"(batch, {run.data.x_train.shape[1]})", "", "", ""]]
    for i, spec in enumerate(run.config.model.layers):
        dropout = f"{spec.dropout:g}" if spec.dropout else ""
        rows.append(
            [f"dense {i}", f"(batch, {spec.units})", spec.activation, dropout, f"{sizes[str(i)]:,}"]
        )
    return rows, sum(sizes.values())


def describe_model(run: Any) -> str:
    sizes = [run.data.x_train.shape[1], *(layer.units for layer in run.config.model.layers)]
    return f"{'-'.join(map(str, sizes))} MLP, {model_rows(run)[1]:,} parameters"


def columns(rows: list[list[str]], right: set[int], sep: str = "  ") -> list[str]:
    """Rows of cells as aligned text lines (columns in `right` right-aligned)."""
    widths = [max(len(row[j]) for row in rows) for j in range(len(rows[0]))]
    return [
        sep.join(
            cell.rjust(w) if j in right else cell.ljust(w)
            for j, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]


class EpochTable:
    """The epoch rows: fixed columns, a header, and rows that wrap between columns when the
    whole row is wider than the line (continuation lines indented past the epoch)."""

    def __init__(self, headers: list[str], widths: list[int], width: int):
        self.headers, self.widths = headers, widths
        self.sep = "  "
        if self._length(self.sep) > width:
            self.sep = " "
        # greedy packing of the columns after the first into lines of at most `width`;
        # a continuation line starts under the first column
        self.lines: list[list[int]] = [[0]]
        used = widths[0]
        for j in range(1, len(widths)):
            need = len(self.sep) + widths[j]
            if used + need > width and len(self.lines[-1]) > (len(self.lines) == 1):
                self.lines.append([])
                used = widths[0]
            self.lines[-1].append(j)
            used += need

    def _length(self, sep: str) -> int:
        return sum(self.widths) + len(sep) * (len(self.widths) - 1)

    def render(self, cells: list[str]) -> list[str]:
        out = []
        for k, line in enumerate(self.lines):
            parts = [cells[j].rjust(self.widths[j]) for j in line]
            if k:
                parts.insert(0, " " * self.widths[0])
            out.append(self.sep.join(parts).rstrip())
        return out


# ----------------------------------------------------------------------------- reporters


class Reporter:
    """Plain output: a header and the model's summary, one row per epoch, a summary."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console(highlight=False, soft_wrap=True)
        self._t0 = time.perf_counter()
        self._epoch_t0 = self._t0
        self._step0 = 0
        self._rate = 0.0
        self._running: dict[str, float] = {}  # the current epoch's mean loss and accuracy
        self._table: EpochTable | None = None
        self._table_key: Any = None
        self._train_s = 0.0  # seconds spent in training steps (validation, saving excluded)
        self._samples = 0  # training samples seen by this process's run
        self._seen0 = 0

    # -- output

    @property
    def width(self) -> int:
        return line_width(self.console)

    def say(self, text: str) -> None:
        """One line of plain text (no markup, no emoji codes), exactly as given."""
        self.console.print(text, markup=False, emoji=False, highlight=False, soft_wrap=True)

    def field(self, label: str, text: str) -> None:
        """A header line `label  text`, wrapped between words to the line's width; a word
        too long to sit beside the label (a path) gets a line of its own, whole."""
        room = max(self.width - LABEL, 20)
        lines = textwrap.wrap(text, room, break_long_words=False, break_on_hyphens=False)
        lines = lines or [""]
        if len(lines[0]) > room:
            self.say(label)
        for k, line in enumerate(lines):
            if len(line) > room:
                self.say(line)
            else:
                self.say(f"{label if k == 0 else '':<{LABEL}}{line}")

    # -- the loop's hooks

    def start(self, run: Any) -> None:
        d, c, p = run.data, run.config, run.progress
        n_val = 0 if d.x_val is None else d.x_val.shape[0]
        resumed = f" (resuming at epoch {p.epoch + 1})" if p.step else ""
        self.field("run", shown_path(run.run_dir) + resumed)
        procs = f", {run.comm.description}" if run.comm.size > 1 else ""
        self.field("device", f"{run.backend.description}, {c.dtype}{procs}")
        self.field("data", f"{d.source}: {d.n_train} train, {n_val} validation")
        self.field("loss", loss_units(c))
        self.field("optimizer", f"{c.optimizer.name}, lr {c.optimizer.lr:g}")
        cp = c.checkpoint
        if cp.save_best:
            self.field(
                "best.npz", f"by {cp.monitor} ({cp.mode}); epochs that improve it: {BEST_MARK}"
            )
        rows, total = model_rows(run)
        header = ["layer", "output shape", "activation", "dropout", "parameters"]
        self.say("")
        for line in columns([header, *rows], right={4}):
            self.say(line)
        bytes_ = total * (8 if c.dtype == "float64" else 4)
        self.say(f"total: {total:,} parameters ({_size(bytes_)} as {c.dtype})")
        self.say("")
        self._t0 = time.perf_counter()
        self._step0 = p.step

    def epoch_start(self, run: Any, epoch: int) -> None:
        self._epoch_t0 = time.perf_counter()
        self._seen0 = run.progress.epoch_seen
        self._running = self._running_means(run) if run.progress.batch else {}

    def step(self, run: Any, batch: int) -> None:
        if batch == run.steps_per_epoch:  # the epoch's training is done; validation follows
            self._train_s += time.perf_counter() - self._epoch_t0
            self._samples += run.progress.epoch_seen - self._seen0

    def log(self, run: Any, loss: float, rate: float) -> None:
        self._rate = rate
        self._running = self._running_means(run)

    @staticmethod
    def _running_means(run: Any) -> dict[str, float]:
        """The mean loss (and accuracy) of the current epoch's steps so far."""
        p = run.progress
        means = {"loss": p.epoch_loss / max(p.batch, 1)}
        if run.classification and p.epoch_seen:
            means["acc"] = p.epoch_hits / p.epoch_seen
        return means

    def eta(self, run: Any) -> float | None:
        """Seconds left in the whole run, at the pace this process has kept since it started
        (validation and checkpoints included); None before the first step."""
        p = run.progress
        done = p.step - self._step0
        elapsed = time.perf_counter() - self._t0
        if done <= 0 or elapsed <= 0:
            return None
        return (run.config.train.epochs * run.steps_per_epoch - p.step) * elapsed / done

    def epoch_end(self, run: Any, metrics: dict[str, float]) -> None:
        p, c = run.progress, run.config
        seconds = time.perf_counter() - self._epoch_t0
        epochs = c.train.epochs
        marks = c.checkpoint.save_best
        key = (tuple(metrics), epochs, marks, self.width)
        if key != self._table_key:  # the first epoch, or new metrics, or a resized terminal
            self._table_key = key
            span = len(f"{epochs}/{epochs}")
            headers = ["epoch", *map(short, metrics), "time", "eta"]
            widths = [max(5, span), *(max(len(short(k)), 7) for k in metrics), 6, 6]
            if marks:
                headers.append("best")
                widths.append(4)
            self._table = EpochTable(headers, widths, self.width)
            for line in self._table.render(headers):
                self.say(line)
        table = self._table
        cells = [f"{p.epoch}/{epochs}"]
        cells += [number(v, w) for v, w in zip(metrics.values(), table.widths[1:], strict=False)]
        left = None if p.epoch >= epochs or p.stopped_early else self.eta(run)
        cells += [duration(seconds), duration(left) if left is not None else "-"]
        if marks:  # best.npz was written with this epoch
            cells.append(BEST_MARK if p.best_epoch == p.epoch else "")
        for line in table.render(cells):
            self.say(line)

    def close(self) -> None:
        """Release the terminal (also after an error or interruption)."""

    def finish(self, run: Any) -> None:
        p, c = run.progress, run.config
        self.say("")
        self.say(f"{run.run_dir.name}: {p.epoch} epochs, {p.step} steps")
        rows = [["metric", "final"]]
        rows += [[key, number(value)] for key, value in p.metrics.items()]
        if p.best is not None:
            rows.append(
                [f"best {c.checkpoint.monitor}", f"{number(p.best)} (epoch {p.best_epoch})"]
            )
        for line in columns(rows, right={1}):
            self.say(line)
        if c.task == "regression":
            self.field("", f"losses: {loss_units(c)}")
        if p.stopped_early:
            self.say(
                f"stopped early after epoch {p.epoch} (no gain in {c.train.early_stopping.monitor})"
            )
        took = time.perf_counter() - self._t0
        rate = f" ({per_second(self._samples / self._train_s)} samples/s)" if self._train_s else ""
        self.field(
            "time",
            f"{duration(took)} in all: training steps {duration(self._train_s)}{rate}; "
            f"validation, logging and checkpoints {duration(max(took - self._train_s, 0.0))}",
        )
        self.field("saved in", shown_path(run.run_dir / "checkpoints"))
        self.say(f"tensorboard --logdir {shown_path(run.run_dir.parent)}")


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.3g} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return f"{n:.3g} GiB"


class RichReporter(Reporter):
    """A live bar per epoch on a terminal: steps, the epoch's running loss and accuracy,
    the whole run's elapsed time and time left, training samples per second."""

    def __init__(self, console: Console | None = None):
        super().__init__(console)
        self._bar: Progress | None = None
        self._bar_column: BarColumn | None = None
        self._task: Any = None
        self._last_draw = 0.0
        self._left = ""

    def epoch_start(self, run: Any, epoch: int) -> None:
        super().epoch_start(run, epoch)
        self._left = f"epoch {epoch + 1}/{run.config.train.epochs}"
        self._bar_column = BarColumn(bar_width=MIN_BAR)
        self._bar = Progress(
            TextColumn(self._left, markup=False, table_column=Column(no_wrap=True)),
            self._bar_column,
            TextColumn(
                "{task.fields[right]}",
                markup=False,
                table_column=Column(no_wrap=True, overflow="ellipsis"),
            ),
            console=self.console,
            transient=True,
        )
        self._bar.start()
        self._task = self._bar.add_task("train", total=run.steps_per_epoch, right="")
        self._draw(run, run.progress.batch)

    def step(self, run: Any, batch: int) -> None:
        super().step(run, batch)
        now = time.perf_counter()
        if now - self._last_draw >= REFRESH_S or batch == run.steps_per_epoch:
            self._last_draw = now
            self._draw(run, batch)

    def _draw(self, run: Any, batch: int) -> None:
        """Fit the fields right of the bar to the width, the least important dropped first."""
        steps = run.steps_per_epoch
        running = "  ".join(f"{k} {number(v, 8)}" for k, v in self._running.items())
        elapsed = time.perf_counter() - self._t0
        fields = [
            f"{batch:>{len(str(steps))}}/{steps}",
            running or "loss -",
            f"elapsed {duration(elapsed)} eta {duration(self.eta(run))}",
            f"{per_second(self._rate)} train samples/s" if self._rate else "",
        ]
        fields = [f for f in fields if f]
        room = self.width - len(self._left) - MIN_BAR - 3  # the grid's padding: one per gap
        while len(fields) > 2 and len("  ".join(fields)) > room:
            fields.pop()
        right = "  ".join(fields)
        self._bar_column.bar_width = max(MIN_BAR, self.width - len(self._left) - len(right) - 3)
        self._bar.update(self._task, completed=batch, right=right)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def epoch_end(self, run: Any, metrics: dict[str, float]) -> None:
        self.close()
        super().epoch_end(run, metrics)


class QuietReporter(Reporter):
    """--quiet: nothing but the run folder."""

    def start(self, run: Any) -> None:
        pass

    def epoch_end(self, run: Any, metrics: dict[str, float]) -> None:
        pass

    def finish(self, run: Any) -> None:
        self.console.print(str(run.run_dir))


class SilentReporter(QuietReporter):
    """The processes of a data-parallel run other than the first: nothing at all."""

    def finish(self, run: Any) -> None:
        pass


def reporter_for(quiet: bool) -> Reporter:
    """The output of this process: the first of an MPI job alone speaks."""
    from mlpcli.distributed import world

    console = Console(highlight=False, soft_wrap=True)
    if world().rank != 0:
        return SilentReporter(console)
    if quiet:
        return QuietReporter(console)
    return RichReporter(console) if console.is_terminal else Reporter(console)
