"""What a sweep shows on stdout: one line per trial (status, epoch, best metric), redrawn in
place on a terminal and printed as it changes otherwise, then a table of the trials sorted
by the monitored metric with the best trial's folder and the command to predict with it.

The sweep calls these hooks with its `Sweep` and `Trial`s; nothing here touches files.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

WIDTH = 100  # a plain line is at most this long


def _best(trial: Any) -> str:
    return "-" if trial.best is None else f"{trial.best:.4g}"


def _overrides(trial: Any) -> str:
    return " ".join(trial.sets)


def _clip(text: str, width: int = WIDTH) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


class SweepView:
    """Plain output: a header, a line whenever a trial changes, a final table."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console(highlight=False, soft_wrap=True)
        self._shown: dict[str, tuple] = {}
        self._t0 = time.perf_counter()

    def start(self, sweep: Any, jobs: int, threads: int) -> None:
        self._t0 = time.perf_counter()
        todo = sum(t.status != "done" and t.status != "diverged" for t in sweep.trials)
        self.console.print(f"sweep    {sweep.folder}")
        self.console.print(
            f"trials   {len(sweep.trials)} ({todo} to run), {jobs} at a time, "
            f"{threads} BLAS thread{'s' if threads > 1 else ''} each"
        )
        monitor = sweep.trials[0].monitor if sweep.trials else "val/loss"
        self.console.print(f"monitor  {monitor} ({sweep.config['checkpoint']['mode']})")

    def line(self, trial: Any) -> str:
        epoch = f"epoch {trial.epoch}/{trial.epochs}" if trial.epochs else "epoch -"
        text = (
            f"{trial.name}  {trial.status:<8}  {epoch:<13}  best {_best(trial):>8}  "
            f"{_overrides(trial)}"
        )
        if trial.message and trial.status in ("diverged", "failed"):
            text += f"  ({trial.message})"
        return _clip(text)

    def update(self, trial: Any) -> None:
        key = (trial.status, trial.epoch, trial.best)
        if self._shown.get(trial.name) != key:
            self._shown[trial.name] = key
            self.console.print(self.line(trial))

    def close(self) -> None:
        """Release the terminal (also after an error or interruption)."""

    def finish(self, sweep: Any, ranked: list[Any]) -> None:
        monitor = sweep.trials[0].monitor if sweep.trials else "val/loss"
        keys = list(sweep.grid)
        table = Table(title=f"{sweep.folder.name}: {len(sweep.trials)} trials", box=None)
        fixed = ("rank", "trial", "status", "epochs", f"best {monitor}")
        for column in fixed:
            table.add_column(column, justify="right")
        last = [key.rsplit(".", 1)[-1] for key in keys]
        for key, short in zip(keys, last, strict=True):  # "lr" for optimizer.lr, unless ambiguous
            plain = last.count(short) == 1 and short not in fixed
            table.add_column(short if plain else key, justify="right")
        order = ranked + [t for t in sweep.trials if t not in ranked]
        for i, t in enumerate(order):
            rank = str(i + 1) if t in ranked else "-"
            values = dict(s.split("=", 1) for s in t.sets)
            table.add_row(
                rank, t.name, t.status, str(t.epoch), _best(t), *(values[k] for k in keys)
            )
        self.console.print(table)
        took = time.perf_counter() - self._t0
        self.console.print(f"done in {took:.1f}s; results in {sweep.folder / 'results.csv'}")
        if ranked:
            best = sweep.folder / ranked[0].name
            self.console.print(f"best     {best} ({monitor} {_best(ranked[0])})")
            self.console.print(f"predict  mlpcli predict {best} INPUT.csv")
        self.console.print(f"tensorboard --logdir {sweep.folder}")


class LiveSweepView(SweepView):
    """On a terminal: the table of trials redrawn in place as they progress."""

    def __init__(self, console: Console | None = None):
        super().__init__(console)
        self._live: Live | None = None
        self._sweep: Any = None

    def start(self, sweep: Any, jobs: int, threads: int) -> None:
        super().start(sweep, jobs, threads)
        self._sweep = sweep
        self._live = Live(self._table(), console=self.console, refresh_per_second=4)
        self._live.start()

    def _table(self) -> Table:
        table = Table(box=None)
        for column in ("trial", "status", "epoch", "best", "overrides"):
            table.add_column(column)
        for t in self._sweep.trials:
            epoch = f"{t.epoch}/{t.epochs}" if t.epochs else "-"
            style = {"running": "bold", "diverged": "red", "failed": "red"}.get(t.status, "")
            table.add_row(t.name, t.status, epoch, _best(t), _overrides(t), style=style)
        return table

    def update(self, trial: Any) -> None:
        if self._live is not None:
            self._live.update(self._table())

    def close(self) -> None:
        if self._live is not None:
            self._live.update(self._table())
            self._live.stop()
            self._live = None
        if self._sweep is not None:
            for t in self._sweep.trials:
                if t.message and t.status in ("diverged", "failed"):
                    self.console.print(f"{t.name}  {t.status}: {t.message}")


def view_for(console: Console | None = None) -> SweepView:
    """The live table on a terminal, plain lines otherwise."""
    console = console or Console(highlight=False, soft_wrap=True)
    if not console.is_terminal:
        console.width = WIDTH  # the final table too, when piped
    return LiveSweepView(console) if console.is_terminal else SweepView(console)
