"""Hyperparameter sweeps: one ordinary run per combination of a grid, several at a time.

A trial is exactly `mlpcli train CONFIG --set KEY=VALUE...` run as a child process of the
same Python, in `{sweep}/trial-NNN`; so it equals that command bit for bit, and is resumed,
evaluated and predicted with like any run. The sweep itself only plans, starts, watches and
records: it validates every trial's config (and data) before it writes anything, rewrites
`results.csv` atomically as trials end, and forwards SIGINT / SIGTERM to the running trials,
which stop with a resumable checkpoint. `resume` reads what the trial folders hold and
finishes exactly what is missing.

Children are told to stop (SIGTERM) when the sweep process dies, even by `kill -9` (Linux:
PR_SET_PDEATHSIG), so every trial is left with a resumable checkpoint.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mlpcli import checkpoint as ckpt
from mlpcli import paths
from mlpcli.config import load_config, parse_override, to_dict
from mlpcli.errors import CheckpointError, ConfigError, MlpcliError, RunError
from mlpcli.paths import RunLock, check_run_name

FORMAT = "mlpcli-sweep"
VERSION = 1
POLL_S = 0.1  # how often the sweep looks at its trials
MAX_TRIALS = 10_000  # a grid larger than this needs --samples
THREAD_VARS = (  # the BLAS / OpenMP thread pools a child may start
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)
DONE, DIVERGED, STOPPED, PENDING, FAILED, RUNNING = (
    "done",
    "diverged",
    "stopped",
    "pending",
    "failed",
    "running",
)
# a child's plain per-epoch line (report.Reporter.epoch_end): "epoch 3/20  train/loss 0.12 ..."


# ----------------------------------------------------------------------------- the grid


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """`--grid KEY=[V1,V2,...]` options -> {dotted key: [values]}, in the order given."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(
                f"--grid {item!r}: expected KEY=[V1,V2,...], e.g. optimizer.lr=[0.1,0.01]"
            )
        try:
            _, values = parse_override(f"{key}={text}")
        except ConfigError as e:
            raise ConfigError(str(e).replace("--set ", "--grid ", 1)) from None
        if not isinstance(values, list) or not values:
            raise ConfigError(
                f"--grid {key}: expected a non-empty YAML list of values, e.g. {key}=[V1,V2], "
                f"got {text.strip()!r}"
            )
        if key in grid:
            raise ConfigError(f"--grid {key}: given twice; list all its values in one --grid")
        if key == "logging.logdir" or key.startswith("logging.logdir."):
            raise ConfigError(f"--grid {key}: a trial's folder is always inside its sweep folder")
        texts = [yaml_value(v) for v in values]
        if len(set(texts)) != len(texts):
            raise ConfigError(f"--grid {key}: a value is listed twice in {text.strip()}")
        grid[key] = values
    if not grid:
        raise ConfigError("--grid: give at least one, e.g. --grid optimizer.lr=[0.1,0.01]")
    return grid


def yaml_value(value: Any) -> str:
    """`value` as the YAML text a `--set` takes, reading back as the same value (a string
    such as "1e-3", which mlpcli's YAML 1.2 reading takes for a number, is quoted)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=math.inf, sort_keys=False)
    text = text.strip()
    if text.endswith("\n..."):
        text = text[: -len("\n...")]
    elif text.endswith("..."):
        text = text[:-3].rstrip()
    if _reads_back(text, value):
        return text
    text = json.dumps(value)  # JSON is YAML, and quotes every string
    if _reads_back(text, value):
        return text
    raise ConfigError(f"--grid: the value {value!r} cannot be passed on as --set KEY=VALUE")


def _reads_back(text: str, value: Any) -> bool:
    try:
        _, back = parse_override(f"k={text}")
    except ConfigError:
        return False
    return "\n" not in text and back == value and type(back) is type(value)


def plan(grid: dict[str, list[Any]], samples: int | None, seed: int) -> list[list[str]]:
    """Each trial's `--set` overrides: the grid's Cartesian product (the last key varying
    fastest), or `samples` distinct combinations of it drawn with `seed`, in grid order."""
    sizes = [len(v) for v in grid.values()]
    total = math.prod(sizes)
    if samples is None:
        if total > MAX_TRIALS:
            raise ConfigError(
                f"--grid: {total:,} combinations; at most {MAX_TRIALS:,} run without "
                "--samples N (draw N of them)"
            )
        indices: list[int] = list(range(total))
    else:
        if samples < 1 or samples > min(total, MAX_TRIALS):
            raise ConfigError(
                f"--samples: must be between 1 and {min(total, MAX_TRIALS):,} "
                f"(the grid has {total:,} combination{'s' * (total != 1)}), got {samples}"
            )
        from mlpcli.rng import generator

        drawn = generator(seed, "sweep").choice(total, size=samples, replace=False)
        indices = sorted(int(i) for i in drawn)
    trials = []
    for index in indices:
        sets = []
        for key, values in reversed(grid.items()):  # mixed radix, last key fastest
            index, i = divmod(index, len(values))
            sets.append(f"{key}={yaml_value(values[i])}")
        trials.append(sets[::-1])
    return trials


# ----------------------------------------------------------------------------- the sweep


@dataclass
class Trial:
    """One trial: its folder name, overrides and what is known of it."""

    name: str
    sets: list[str]
    status: str = PENDING
    epoch: int = 0
    epochs: int = 0
    best: float | None = None  # the best monitored value so far (its last.npz)
    monitor: str = "val/loss"
    mode: str = "min"
    row: dict[str, Any] = field(default_factory=dict)  # its results.csv row, from checkpoints
    message: str = ""


@dataclass
class Sweep:
    """A sweep folder and its plan (sweep.yaml)."""

    folder: Path
    config_file: Path
    cwd: Path
    config: dict  # the base config, resolved (logging.logdir: the sweep folder)
    grid: dict[str, list[Any]]
    samples: int | None
    trials: list[Trial]
    jobs: int = 1  # trials at a time, as started; --resume keeps it unless given

    def __post_init__(self) -> None:
        cp = self.config.get("checkpoint") or {}
        for t in self.trials:  # what the live view follows, until a checkpoint says
            t.monitor, t.mode = cp.get("monitor", "val/loss"), cp.get("mode", "min")

    def document(self) -> dict:
        return {
            "format": FORMAT,
            "version": VERSION,
            "config_file": str(self.config_file),
            "cwd": str(self.cwd),
            "grid": self.grid,
            "samples": self.samples,
            "jobs": self.jobs,
            "trials": [{"name": t.name, "set": t.sets} for t in self.trials],
            "config": self.config,
        }


def start(
    config_path: str | Path,
    grid_items: list[str],
    view: Any,
    *,
    samples: int | None = None,
    jobs: int = 1,
    logdir: str | None = None,
    name: str | None = None,
) -> Sweep:
    """Plan a new sweep, check every trial, then make its folder and run it."""
    from mlpcli.stopping import StopRequest

    if name is not None:
        check_run_name(name, "--name")
    if jobs < 1:
        raise MlpcliError(f"--jobs: must be at least 1, got {jobs}")
    with StopRequest(deferred=False) as stop:  # a signal stops at once: nothing written yet
        config_path = Path(os.path.abspath(config_path))
        options = {"logging.logdir": ("--logdir", logdir)}
        base = load_config(config_path, None, options)
        grid = parse_grid(grid_items)
        trial_sets = plan(grid, samples, base.seed)
        width = max(3, len(str(len(trial_sets) - 1)))
        trials = [Trial(f"trial-{i:0{width}d}", sets) for i, sets in enumerate(trial_sets)]
        _check_trials(config_path, trials)
        stop.defer()  # from here on a stop leaves a sweep that --resume finishes
        folder = _new_folder(Path(base.logging.logdir), base.name, name)
        with RunLock(folder):
            base.logging.logdir = str(folder)
            sweep = Sweep(
                folder, config_path, Path.cwd(), to_dict(base), grid, samples, trials, jobs
            )
            text = yaml.safe_dump(sweep.document(), sort_keys=False, width=100)
            paths.write_text(folder / "sweep.yaml", text, "--logdir")
            write_results(sweep)
            _run(sweep, jobs, view, stop)
    return sweep


def resume(folder: str | Path, view: Any, *, jobs: int | None = None) -> Sweep:
    """Finish the sweep in `folder`: finished trials are kept, stopped ones resumed
    exactly, pending ones started; `jobs` at a time (default: as the sweep started)."""
    from mlpcli.stopping import StopRequest

    if jobs is not None and jobs < 1:
        raise MlpcliError(f"--jobs: must be at least 1, got {jobs}")
    with StopRequest(deferred=False) as stop:
        sweep = read_sweep(Path(folder))
        jobs = sweep.jobs if jobs is None else jobs
        with RunLock(sweep.folder):
            for stale in sweep.folder.glob(".trial-*.out"):  # of a sweep killed with -9
                stale.unlink(missing_ok=True)
            judge_all(sweep)
            if any(t.status == PENDING for t in sweep.trials):
                _check_config_unchanged(sweep)
            stop.defer()
            write_results(sweep)
            _run(sweep, jobs, view, stop)
    return sweep


def _check_trials(config_path: Path, trials: list[Trial]) -> None:
    """Resolve every trial's config and load each distinct data set and device once, so a
    bad grid key or value is refused before anything is written."""
    from mlpcli.backend import get_backend
    from mlpcli.data import prepare

    seen_data: set[str] = set()
    seen_devices: set[str] = set()
    for trial in trials:
        try:
            config = load_config(config_path, trial.sets)
            key = repr((to_dict(config)["data"], config.seed, config.dtype, config.task))
            key += repr([(la.units, la.activation) for la in config.model.layers][-1:])
            key += config.loss
            if key not in seen_data:
                seen_data.add(key)
                prepare(config, str(config_path))
            if config.device not in seen_devices:
                seen_devices.add(config.device)
                get_backend(config.device)
        except MlpcliError as e:
            message = str(e).replace("--set ", "--grid ")
            raise type(e)(f"{message} (in trial {trial.name}: {' '.join(trial.sets)})") from None


def _new_folder(logdir: Path, prefix: str, name: str | None) -> Path:
    """A new, empty sweep folder under logdir (default name: the config's name and a
    timestamp); an existing non-empty one is an error."""
    taken = "finish it with: mlpcli sweep --resume {path}"
    path = paths.new_folder(logdir, prefix, name, "sweep folder", taken)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MlpcliError(f"logging.logdir: cannot create sweep folder {path}: {e}") from None
    return path


def read_sweep(folder: Path) -> Sweep:
    """The plan in `folder`/sweep.yaml, checked: every fault names the file."""
    where = folder / "sweep.yaml"
    if not folder.is_dir():
        raise MlpcliError(f"--resume: {folder} is not a folder")
    try:
        doc = yaml.safe_load(where.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MlpcliError(
            f"--resume: {folder} holds no sweep.yaml; is it a sweep folder?"
        ) from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise MlpcliError(f"{where}: cannot read: {' '.join(str(e).split())}") from None
    try:
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError(f"not an mlpcli sweep file (format: {FORMAT})")
        if doc.get("version") != VERSION:
            raise ValueError(f"version {doc.get('version')!r}, this mlpcli reads {VERSION}")
        grid = doc["grid"]
        if not isinstance(grid, dict) or not all(isinstance(v, list) for v in grid.values()):
            raise ValueError("grid: expected a mapping of keys to lists")
        trials = []
        for i, t in enumerate(doc["trials"]):
            name, sets = t["name"], t["set"]
            if paths.run_name_problem(name) or not name.startswith("trial-"):
                raise ValueError(f"trials.{i}.name: not a trial folder name: {name!r}")
            if not isinstance(sets, list) or not all(isinstance(s, str) for s in sets):
                raise ValueError(f"trials.{i}.set: expected a list of KEY=VALUE strings")
            trials.append(Trial(name, sets))
        if not isinstance(doc["config"], dict):
            raise ValueError("config: expected a mapping")
        jobs = doc.get("jobs", 1)  # absent from the sweep files of mlpcli 0.1.0
        if not isinstance(jobs, int) or isinstance(jobs, bool) or not 1 <= jobs <= 4096:
            raise ValueError(f"jobs: expected a whole number from 1 to 4096, got {jobs!r}")
        return Sweep(
            folder,
            Path(str(doc["config_file"])),
            Path(str(doc["cwd"])),
            doc["config"],
            grid,
            doc.get("samples"),
            trials,
            jobs,
        )
    except (KeyError, TypeError, ValueError) as e:
        what = f"missing {e}" if isinstance(e, KeyError) else str(e)
        raise MlpcliError(f"{where}: damaged sweep file ({what})") from None


def _check_config_unchanged(sweep: Sweep) -> None:
    """New trials start from the config file again: it must still be the one planned."""
    options = {"logging.logdir": ("--logdir", str(sweep.folder))}
    try:
        now = to_dict(load_config(sweep.config_file, None, options))
    except ConfigError as e:
        raise ConfigError(f"{e} (the config of sweep {sweep.folder})") from None
    if now != sweep.config:
        raise ConfigError(
            f"{sweep.config_file}: changed since sweep {sweep.folder} started; its trials must "
            "all come from the same config: restore it, or start a new sweep"
        )


def _recorded_statuses(folder: Path) -> dict[str, str]:
    """trial -> status, as results.csv last recorded them (empty when unreadable)."""
    try:
        with open(folder / "results.csv", newline="", encoding="utf-8") as f:
            return {row["trial"]: row["status"] for row in csv.DictReader(f)}
    except (OSError, KeyError, csv.Error, UnicodeDecodeError):
        return {}


def judge_all(sweep: Sweep) -> None:
    """Every trial's status from its folder; a trial results.csv records as diverged stays
    so (resumed, it would diverge again at the same step)."""
    statuses = _recorded_statuses(sweep.folder)
    for trial in sweep.trials:
        judge(sweep, trial)
        if trial.status != DONE and statuses.get(trial.name) == DIVERGED:
            trial.status = DIVERGED


def judge(sweep: Sweep, trial: Trial) -> None:
    """A trial's status and results.csv row from its folder: done, stopped or pending."""
    folder = sweep.folder / trial.name
    last = folder / "checkpoints" / "last.npz"
    if not last.is_file():
        trial.status, trial.row = PENDING, {}
        return
    try:
        state = ckpt.read(last)
    except CheckpointError:  # only ever written atomically: not ours to repair
        raise
    config = state.meta.get("config") or {}
    progress = state.progress or {}
    train = config.get("train") or {}
    cp = config.get("checkpoint") or {}
    trial.epoch = state.epoch
    trial.epochs = int(train.get("epochs") or 0)
    trial.monitor, trial.mode = cp.get("monitor", "val/loss"), cp.get("mode", "min")
    finished = state.epoch >= trial.epochs or bool(progress.get("stopped_early"))
    trial.status = DONE if finished and not progress.get("batch") else STOPPED
    metrics = state.meta.get("metrics") or {}
    row: dict[str, Any] = {"epochs": state.epoch, "best_epoch": progress.get("best_epoch")}
    trial.best = progress.get("best")
    row[f"best_{trial.monitor}"] = trial.best
    es = train.get("early_stopping")
    if isinstance(es, dict) and es.get("monitor") and es["monitor"] != trial.monitor:
        row[f"best_{es['monitor']}"] = progress.get("stop_best")
    for key, value in metrics.items():
        row[f"final_{key}"] = value
    trial.row = row


# ----------------------------------------------------------------------------- results.csv


def write_results(sweep: Sweep) -> None:
    """results.csv, rewritten atomically: one row per trial, in trial order."""
    keys = list(sweep.grid)
    extra: list[str] = []
    for t in sweep.trials:
        extra += [k for k in t.row if k not in extra]
    fixed = [k for k in ("epochs", "best_epoch") if k in extra]
    best = [k for k in extra if k.startswith("best_") and k != "best_epoch"]
    final = [k for k in extra if k.startswith("final_")]
    columns = ["trial", "status", *keys, *fixed, *best, *final]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n")
    writer.writeheader()
    for t in sweep.trials:
        values = dict(parse_override(s) for s in t.sets)
        row = {"trial": t.name, "status": t.status if t.status != RUNNING else STOPPED}
        row.update({k: yaml_value(values[k]) for k in keys})
        row.update({k: ("" if v is None else _number(v)) for k, v in t.row.items()})
        writer.writerow(row)
    paths.write_text(sweep.folder / "results.csv", buffer.getvalue(), "results.csv")


def _number(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


# ----------------------------------------------------------------------------- running


def threads_per_trial(jobs: int) -> int:
    """BLAS threads per child, so that jobs × threads ≤ the cores this process may use."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // jobs)


def _child_setup(parent: int) -> Callable[[], None]:
    """Run in each child before it starts: SIGTERM it when the sweep process dies (even by
    `kill -9`), so it saves a resumable checkpoint instead of training on unwatched."""

    def setup() -> None:
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            PR_SET_PDEATHSIG = 1
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        except (OSError, AttributeError):  # not Linux: children outlive a killed sweep
            return
        if os.getppid() != parent:  # the sweep died before the line above
            os.kill(os.getpid(), signal.SIGTERM)

    return setup


class _Child:
    """A running trial: its process, and the file its output goes to.

    The output goes to a hidden file in the sweep folder, not a pipe: a pipe breaks when
    the sweep process dies, and a child printing into a broken pipe would die before it
    saved its checkpoint. The file is read as it grows and removed once the child ends.
    """

    def __init__(self, trial: Trial, args: list[str], env: dict, sweep: Sweep):
        self.trial = trial
        self.output = sweep.folder / f".{trial.name}.out"
        self.lines: list[str] = []
        self._partial = ""
        self.seen: int | None = None  # the mtime of last.npz when last followed
        with open(self.output, "w", encoding="utf-8") as sink:
            self.proc = subprocess.Popen(
                args,
                cwd=sweep.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a terminal's Ctrl-C reaches the sweep, which forwards it
                preexec_fn=_child_setup(os.getpid()),
            )
        # read across many polls, closed by close()
        self._source = open(self.output, encoding="utf-8", errors="replace")  # noqa: SIM115

    def read(self) -> list[str]:
        """The whole lines the child has printed since the last call."""
        text = self._partial + self._source.read()
        *lines, self._partial = text.split("\n")
        self.lines += lines
        return lines

    def close(self) -> list[str]:
        """The last lines; the output file is removed."""
        lines = self.read()
        if self._partial:
            lines.append(self._partial)
            self.lines.append(self._partial)
            self._partial = ""
        self._source.close()
        self.output.unlink(missing_ok=True)
        return lines

    def error_line(self) -> str:
        errors = [line for line in self.lines if line.startswith("error:")]
        if errors:
            return errors[-1][len("error: ") :]
        return next((line for line in reversed(self.lines) if line.strip()), "")


def _command(sweep: Sweep, trial: Trial) -> list[str]:
    """The child's command line: train a new trial, or resume a stopped one."""
    base = [sys.executable, "-m", "mlpcli"]
    folder = sweep.folder / trial.name
    if trial.status == STOPPED:
        return [*base, "resume", str(folder)]
    args = [*base, "train", str(sweep.config_file)]
    for s in trial.sets:
        args += ["--set", s]
    return [*args, "--logdir", str(sweep.folder), "--name", trial.name]


def _clear_unstarted(sweep: Sweep, trial: Trial) -> None:
    """A trial folder left without a checkpoint (killed before its first save) holds
    nothing to keep: it is made anew by its `train`."""
    import shutil

    folder = sweep.folder / trial.name
    if folder.is_symlink():
        raise MlpcliError(f"{folder}: is a symbolic link; a trial folder is a real folder")
    if folder.is_dir():
        with RunLock(folder):  # not while some process still trains in it
            shutil.rmtree(folder)


def _run(sweep: Sweep, jobs: int, view: Any, stop: Any) -> None:
    """Run every unfinished trial, `jobs` at a time; on a signal stop them all."""
    todo = [t for t in sweep.trials if t.status in (PENDING, STOPPED, FAILED)]
    env = dict(os.environ)
    threads = threads_per_trial(min(jobs, max(1, len(todo))))
    env.update({var: str(threads) for var in THREAD_VARS})
    env["PYTHONUNBUFFERED"] = "1"  # each epoch's line as it happens
    running: list[_Child] = []
    forwarded: int | None = None
    view.start(sweep, jobs=jobs, threads=threads)
    try:
        while todo or running:
            while todo and len(running) < jobs and stop.signum is None:
                trial = todo.pop(0)
                if trial.status != STOPPED:
                    _clear_unstarted(sweep, trial)
                args = _command(sweep, trial)
                trial.status, trial.message = RUNNING, ""
                running.append(_Child(trial, args, env, sweep))
                view.update(trial)
            if stop.signum is not None and forwarded is None:
                forwarded = stop.signum
                todo = []
                for child in running:
                    if child.proc.poll() is None:
                        child.proc.send_signal(stop.signum)
            time.sleep(POLL_S)
            for child in running:
                child.read()
                _follow(sweep, child, view)
            for child in [c for c in running if c.proc.poll() is not None]:
                running.remove(child)
                child.close()  # what it printed last, for error_line
                _finished(sweep, child, forwarded is not None)
                write_results(sweep)
                view.update(child.trial)
    finally:
        for child in running:  # an unexpected fault here: leave no trial unwatched
            if child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        for child in running:
            child.proc.wait()
            child.close()
        view.close()
    if forwarded is not None:
        unfinished = [t for t in sweep.trials if t.status in (STOPPED, PENDING)]
        error = MlpcliError(
            f"stopped by {signal.Signals(forwarded).name}: {len(unfinished)} of "
            f"{len(sweep.trials)} trials unfinished; finish with: "
            f"mlpcli sweep --resume {sweep.folder}"
        )
        error.exit_code = 128 + int(forwarded)
        raise error
    view.finish(sweep, ranked(sweep))
    failed = [t for t in sweep.trials if t.status == FAILED]
    if failed:
        raise RunError(
            f"{len(failed)} of {len(sweep.trials)} trials failed ({failed[0].name}: "
            f"{failed[0].message}); once the cause is fixed, finish them with: "
            f"mlpcli sweep --resume {sweep.folder}"
        )


def _follow(sweep: Sweep, child: _Child, view: Any) -> None:
    """Follow a running trial through the meta record of its `last.npz`, which it writes
    (atomically) at every epoch's end: the epoch and the best monitored value so far."""
    last = sweep.folder / child.trial.name / "checkpoints" / "last.npz"
    try:
        stamp = last.stat().st_mtime_ns
    except OSError:  # not written yet
        return
    if stamp == child.seen:
        return
    child.seen = stamp
    try:
        meta = ckpt.read_meta(last)
    except CheckpointError:  # judged when the trial ends
        return
    trial, progress = child.trial, meta.get("progress") or {}
    trial.epoch = int(meta.get("epoch") or 0)
    epochs = ((meta.get("config") or {}).get("train") or {}).get("epochs")
    trial.epochs = int(epochs or trial.epochs)
    if isinstance(progress.get("best"), (int, float)):
        trial.best = float(progress["best"])
    view.update(trial)


def _finished(sweep: Sweep, child: _Child, stopping: bool) -> None:
    """Record how a trial's process ended."""
    trial, code = child.trial, child.proc.returncode
    judge(sweep, trial)  # done / stopped / pending, from what its folder holds
    message = child.error_line()
    if code == 0:
        trial.message = ""
    elif code == 1 and "training diverged" in message:
        trial.status, trial.message = DIVERGED, message
    elif code in (130, 143, -signal.SIGINT, -signal.SIGTERM):
        trial.message = "stopped" if trial.status == STOPPED else ""
    else:
        trial.status, trial.message = FAILED, message or f"exit code {code}"
    if trial.status == DONE and code not in (0, 130, 143):
        trial.status, trial.message = FAILED, message or f"exit code {code}"


# ----------------------------------------------------------------------------- results


def ranked(sweep: Sweep) -> list[Trial]:
    """The trials with a best value, best first by the base config's checkpoint.monitor."""
    cp = sweep.config.get("checkpoint", {})
    mode = cp.get("mode", "min")
    scored = [t for t in sweep.trials if t.best is not None and t.status != PENDING]
    scored = [t for t in scored if t.status != DIVERGED and math.isfinite(t.best)]
    return sorted(scored, key=lambda t: t.best if mode == "min" else -t.best)
