"""Fuzzing every input surface of the command line with Hypothesis: configs, `--set`
overrides, run names, data files, checkpoints and `--output` / `-o` targets.

Each test draws a `Case` (files to write into a fresh workspace, then `mlpcli ARGS`), runs
it, and checks the promises of SPEC.md that hold for *any* input, good or bad:

- the exit code is 0 or 2, or 1 for a diverging run whose `error:` line says "diverged"
  (and for a `gradcheck` that finds a disagreement), never anything else;
- no `Traceback` on stdout or stderr; stderr holds at most one line starting `error:`
  (exactly one when the command fails) and every other line starts `warning:`;
- no file or folder outside the run folder (and the one `--output` file) is created,
  changed or removed: a snapshot of the whole workspace (path -> size, mtime_ns, sha256,
  or a link's target) is taken before and compared after; a failed command (exit 2)
  changes nothing at all, a read-only command (`inspect`, `eval`, `predict` to stdout,
  `validate`, `gradcheck`) changes nothing, and a checkpoint given as input never changes;
- `eval --json` / `inspect --json` print strict JSON, and `predict` prints no NaN;
- where SPEC.md fixes the outcome (a run name that is not one plain path component, an
  `--output` onto an input, into a run folder, or onto an existing file without
  `--force`), that outcome;
- bounded time and memory: in `test_resource_bounds` the command runs in a subprocess
  under RLIMIT_AS = 1.5 GiB and a 20 s wall clock; a kill, a timeout or a MemoryError is a
  failure. The in-process tests get the same bounds as a safety net (RLIMIT_AS at the
  process's size + 1.5 GiB, SIGALRM after 20 s), so a runaway case fails instead of
  taking the machine down.

Values that ask for legitimately long work (many epochs, millions of samples) are left
out: the time bound is about bad input, not about big requests.

CI runs a fixed, derandomized set of examples per test, about two minutes on two cores,
without shrinking (each drawn case is already one or a few mutations of a valid input).
A longer soak, randomized and with shrinking, for local use:

    MLPCLI_FUZZ_EXAMPLES=2000 .venv/bin/python -m pytest -q -p no:cacheprovider tests/test_fuzz.py

(add `--hypothesis-seed=N` to replay a soak's seed).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import gzip
import hashlib
import io
import json
import logging
import math
import os
import pathlib
import resource
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import traceback
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from helpers import python_default_warnings
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from mlpcli.cli import main

# ----------------------------------------------------------------------------- settings

SOAK = int(os.environ.get("MLPCLI_FUZZ_EXAMPLES", "0") or 0)

settings.register_profile(
    "mlpcli-fuzz-ci",
    derandomize=True,
    database=None,
    deadline=None,
    phases=(Phase.explicit, Phase.generate),
    suppress_health_check=list(HealthCheck),
    print_blob=False,
)
settings.register_profile(
    "mlpcli-fuzz-soak",
    derandomize=False,
    database=None,
    deadline=None,
    phases=(Phase.explicit, Phase.generate, Phase.shrink),
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)
PROFILE = settings.get_profile("mlpcli-fuzz-soak" if SOAK else "mlpcli-fuzz-ci")


def fuzz_settings(ci_examples: int) -> settings:
    """The module's profile with this test's number of examples (all of the soak's)."""
    return settings(PROFILE, max_examples=SOAK or ci_examples)


MEMORY_LIMIT = 1536 << 20  # RLIMIT_AS of a subprocess; in-process, on top of pytest's own
WALL_S = 20.0  # seconds a command may run

WS = "@WS@"  # stands for the workspace's absolute path in a Case's args and file contents

# ----------------------------------------------------------------------------- the base

BASE: dict[str, Any] = {
    "name": "fz",
    "seed": 0,
    "data": {"source": "triangle", "options": {"n_samples": 48}, "val_split": 0.25},
    "model": {
        "layers": [
            {"units": 4, "activation": "tanh"},
            {"units": 2, "activation": "softmax"},
        ]
    },
    "loss": "cross_entropy",
    "optimizer": {"name": "adam", "lr": 0.01},
    "train": {"epochs": 2, "batch_size": 16},
    "logging": {"every_n_steps": 2},
    "checkpoint": {"every_n_epochs": 1, "keep_last": 2},
}

BASE_RUN = "logs/base"  # the trained run a Case may ask for, copied into its workspace
FEATURES_CSV = b"x0,x1\n0.1,0.2\n0.5,0.4\n0.9,0.1\n"


def base_yaml(config: dict | None = None) -> bytes:
    return yaml.safe_dump(BASE if config is None else config, sort_keys=False).encode()


# ----------------------------------------------------------------------------- cases


@dataclasses.dataclass
class Case:
    """One generated command: what to put in a fresh workspace, then `mlpcli ARGS`.

    Paths are relative to the workspace; `@WS@` in args and file contents stands for its
    absolute path. `files` values are bytes or a `Lazy` (a big input built once)."""

    args: list[str]
    files: dict[str, Any] = dataclasses.field(default_factory=dict)
    base_run: bool = False  # copy the trained run to logs/base first
    remove: list[str] = dataclasses.field(default_factory=list)  # removed after the copy
    links: dict[str, str] = dataclasses.field(default_factory=dict)  # path -> target
    hardlinks: dict[str, str] = dataclasses.field(default_factory=dict)  # path -> existing
    dirs: list[str] = dataclasses.field(default_factory=list)
    externalize: list[str] = dataclasses.field(default_factory=list)  # globs: moved, linked
    expect: int | None = None  # the exit code SPEC.md fixes for this input, if it does
    why: str = ""  # ... and why
    output: str | None = None  # the file `--output` / `-o` may write
    checkpoint_edits: list = dataclasses.field(default_factory=list)  # applied to the base's

    def __repr__(self) -> str:
        shown = {}
        for name, content in self.files.items():
            if isinstance(content, bytes) and len(content) > 600:
                shown[name] = content[:300] + b"..." + content[-100:]
            else:
                shown[name] = content
        parts = [f"args={self.args!r}"]
        if self.base_run:
            parts.append("base_run=True")
        for key in ("remove", "links", "hardlinks", "dirs", "externalize", "checkpoint_edits"):
            if getattr(self, key):
                parts.append(f"{key}={getattr(self, key)!r}")
        if shown:
            parts.append(f"files={shown!r}")
        if self.expect is not None:
            parts.append(f"expect={self.expect} ({self.why})")
        return "Case(" + ", ".join(parts) + ")"


@dataclasses.dataclass(frozen=True)
class Lazy:
    """A big input, built once per session by name (see `LAZY`)."""

    name: str

    def __repr__(self) -> str:
        return f"Lazy({self.name!r})"


# ----------------------------------------------------------------------------- workspace


def materialize(case: Case, root: Path, base_run: Path | None) -> None:
    """Build the case's workspace in the empty folder `root`."""
    (root / "logs").mkdir()
    if case.base_run:
        assert base_run is not None
        shutil.copytree(base_run, root / BASE_RUN, symlinks=True)
        if case.checkpoint_edits:
            data = apply_checkpoint_edits(
                (root / BASE_RUN / "checkpoints" / "last.npz").read_bytes(),
                case.checkpoint_edits,
                root,
            )
            for name in ("last.npz", "best.npz"):
                (root / BASE_RUN / "checkpoints" / name).write_bytes(data)
    for name in case.remove:
        path = root / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    for name in case.dirs:
        (root / name).mkdir(parents=True, exist_ok=True)
    for pattern in case.externalize:  # moved to elsewhere/, a link left in its place
        for i, path in enumerate(sorted(root.glob(pattern))):
            moved = root / "elsewhere" / f"{i}-{path.name}"
            moved.parent.mkdir(parents=True, exist_ok=True)
            path.rename(moved)
            path.symlink_to(moved)
    for name, content in case.files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Lazy):
            content = LAZY[content.name](base_run)
        path.write_bytes(content.replace(WS.encode(), str(root).encode()))
    for name, target in case.hardlinks.items():
        os.link(root / target, root / name)
    for name, target in case.links.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target.replace(WS, str(root)), path)


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path in the folder holding workspace `root` (links not followed), relative to
    `root`: a file's (size, mtime_ns, sha256), a link's target, or a folder's existence.
    The workspace sits one level down so that a write just outside it shows too."""
    entries: dict[str, tuple] = {}
    for folder, dirnames, filenames in os.walk(root.parent):
        for name in dirnames + filenames:
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, root)
            if rel == ".":
                continue
            st_ = os.lstat(path)
            if stat.S_ISLNK(st_.st_mode):
                entries[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st_.st_mode):
                entries[rel] = ("dir",)
            elif stat.S_ISREG(st_.st_mode):
                digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
                entries[rel] = ("file", st_.st_size, st_.st_mtime_ns, digest)
            else:
                entries[rel] = ("other", stat.S_IFMT(st_.st_mode))
    return entries


@pytest.fixture(scope="module")
def workspaces(tmp_path_factory):
    """Makes a fresh workspace per example (each removed after its example)."""
    parent = tmp_path_factory.mktemp("fuzz")

    @contextlib.contextmanager
    def fresh():
        jail = Path(tempfile.mkdtemp(dir=parent))
        root = jail / "ws"
        root.mkdir()
        try:
            yield root
        finally:
            shutil.rmtree(jail, ignore_errors=True)

    return fresh


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    """A real 2-epoch run of BASE: logs/base with checkpoints last, best, epoch-000N."""
    root = tmp_path_factory.mktemp("base")
    (root / "base.yaml").write_bytes(base_yaml())
    result = run_inprocess(["train", "base.yaml", "--logdir", "logs", "--name", "base", "-q"], root)
    assert result.code == 0 and result.crash is None, result
    run = root / BASE_RUN
    assert (run / "checkpoints" / "last.npz").is_file()
    return run


# ----------------------------------------------------------------------------- running


@dataclasses.dataclass
class Result:
    code: int
    out: str
    err: str
    crash: str | None = None  # an escaped exception, a kill or a timeout
    seconds: float = 0.0


class Overtime(BaseException):
    """Raised in the process by SIGALRM when an in-process command runs past WALL_S."""


def _virtual_size() -> int:
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


@contextlib.contextmanager
def bounded():
    """The subprocess's bounds, in this process: MEMORY_LIMIT more bytes of address space,
    and Overtime after WALL_S seconds."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _virtual_size() + MEMORY_LIMIT
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)

    def alarm(signum, frame):
        raise Overtime(f"ran past {WALL_S:g} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    signal.setitimer(signal.ITIMER_REAL, WALL_S)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        signal.signal(signal.SIGALRM, previous)


def run_inprocess(args: list[str], cwd: Path) -> Result:
    """`mlpcli ARGS` through the console entry point, in `cwd`, as a terminal would show it:
    Python warnings and library log records (WARNING and up) land on stderr, an escaping
    exception is exit 1 with its traceback."""
    import time

    out, err = io.StringIO(), io.StringIO()
    code, crash = 0, None
    handler = logging.StreamHandler(err)  # what logging's last resort prints
    handler.setLevel(logging.WARNING)
    old_cwd = os.getcwd()
    os.chdir(cwd)
    logging.getLogger().addHandler(handler)
    started = time.monotonic()
    try:
        with (
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
            warnings.catch_warnings(record=True) as caught,
        ):
            python_default_warnings()
            try:
                with bounded():
                    main(list(args))
            except SystemExit as e:
                if e.code is None:
                    code = 0
                elif isinstance(e.code, int):
                    code = e.code
                else:
                    print(e.code, file=sys.stderr)
                    code = 1
            except Overtime as e:
                code, crash = -1, f"timeout: {e}"
            except KeyboardInterrupt:
                raise
            except BaseException:  # a crash is what these tests look for
                code, crash = 1, traceback.format_exc()
    finally:
        logging.getLogger().removeHandler(handler)
        os.chdir(old_cwd)
    text = err.getvalue()
    for w in caught:
        text += warnings.formatwarning(w.message, w.category, w.filename, w.lineno)
    if crash and not crash.startswith("timeout"):
        text += crash
    return Result(code, out.getvalue(), text, crash, time.monotonic() - started)


def _limit_memory() -> None:  # runs in the child, before exec
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def run_subprocess(args: list[str], cwd: Path) -> Result:
    """`python -m mlpcli ARGS` in `cwd` under RLIMIT_AS = MEMORY_LIMIT and WALL_S."""
    import time

    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlpcli", *args],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=_limit_memory,
        start_new_session=True,  # its own process group, killed whole
    )
    crash = None
    try:
        out, err = proc.communicate(timeout=WALL_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        crash = f"timeout: ran past {WALL_S:g} s"
    code = proc.returncode
    if crash is None and code < 0:
        crash = f"killed by {signal.Signals(-code).name}"
    return Result(
        code,
        out.decode("utf-8", "replace"),
        err.decode("utf-8", "replace"),
        crash,
        time.monotonic() - started,
    )


# ----------------------------------------------------------------------------- promises


def _describe(before: tuple | None, after: tuple | None) -> str:
    if before is None:
        return "created"
    if after is None:
        return "removed"
    return "changed"


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder + os.sep)


def _norm(path: str, root: Path) -> str:
    """`path` (as given on the command line) relative to the workspace, links not followed."""
    full = os.path.normpath(os.path.join(root, path.replace(WS, str(root))))
    return os.path.relpath(full, root)


def _resume_run_folder(args: list[str], root: Path, before: dict) -> str | None:
    """The run folder `resume ARG` may write to, as spelled on the command line."""
    target = _norm(args[1], root)
    if before.get(target) == ("dir",):
        return target
    parent = os.path.dirname(target)
    if os.path.basename(parent) == "checkpoints":
        return os.path.dirname(parent)
    return None


def command_run_folder(case: Case, root: Path, before: dict, after: dict) -> str | None:
    """The one run folder this command may write in: train's new folder in logs/, or the
    run folder of the checkpoint resume continues."""
    if case.args[0] in ("train", "sweep"):  # a sweep's folder holds its trials' run folders
        new_runs = [
            p
            for p in after
            if os.path.dirname(p) == "logs"
            and after[p] == ("dir",)
            and (p not in before or (not _has_children(before, p) and _has_children(after, p)))
        ]  # a new folder, or an empty one that now holds the run
        return new_runs[0] if len(new_runs) == 1 else None
    if case.args[0] == "resume":
        return _resume_run_folder(case.args, root, before)
    return None


def file_problems(case: Case, result: Result, root: Path, before: dict, after: dict):
    """Writes outside the run folder and the --output file; data lost; a failed command
    (exit 2) that changed anything."""
    changed = [p for p in sorted(set(before) | set(after)) if before.get(p) != after.get(p)]
    run = command_run_folder(case, root, before, after)
    out = _norm(case.output, root) if case.output is not None and result.code == 0 else None
    inside, problems, reported = [], [], set()
    for path in changed:
        if run is not None and _within(path, run):
            inside.append(path)
            continue
        if out is not None and (path == out or (_within(out, path) and path not in before)):
            continue  # the output file, and folders made to hold it
        what = _describe(before.get(path), after.get(path))
        if what == "created" and os.path.dirname(path) in reported:
            reported.add(path)  # inside a new folder already reported
            continue
        reported.add(path)
        problems.append(f"{'write outside' if what == 'created' else 'data loss'}: {what} {path}")
    if result.code == 2 and inside:
        lost = [p for p in inside if p in before]
        if lost:
            what = _describe(before.get(lost[0]), after.get(lost[0]))
            problems.append(f"data loss: exit 2, yet {what} {lost[0]} ({len(lost)} paths)")
        else:
            problems.append(f"exit 2, yet created {inside[0]} ({len(inside)} paths)")
    return problems


def _has_children(entries: dict, folder: str) -> bool:
    return any(p.startswith(folder + os.sep) for p in entries)


def _error_lines(err: str) -> tuple[list[str], list[str]]:
    """(error: lines, lines that are neither error: nor warning:) of stderr, split as a
    terminal and Python's universal newlines split it."""
    lines = err.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    lines = [line for line in lines if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    stray = [line for line in lines if not line.startswith(("error:", "warning:"))]
    return errors, stray


def _last_traceback_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    at = max(i for i, line in enumerate(lines) if "Traceback" in line)
    tail = [line for line in lines[at:] if not line.startswith((" ", "Traceback"))]
    return tail[-1] if tail else lines[-1]


def _strict_json(text: str) -> Any:
    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def broken_promises(case: Case, result: Result, root: Path, before: dict, after: dict):
    """Every promise this command broke, one line each."""
    problems = []
    command = case.args[0]
    text = result.out + result.err
    errors, stray = _error_lines(result.err)
    if result.crash and result.crash.startswith(("timeout", "killed")):
        problems.append(f"unbounded: {result.crash}")
    if "Traceback" in text:
        problems.append(f"traceback: {_last_traceback_line(text)}")
    elif "MemoryError" in result.out + "\n".join(stray):  # not a clean refusal
        problems.append("unbounded: MemoryError")
    diverged = result.code == 1 and any("diverged" in line for line in errors)
    disagrees = (
        command == "gradcheck"
        and result.code == 1
        and any("disagrees with finite differences" in line for line in errors)
    )
    if result.code not in (0, 2) and not (diverged or disagrees) and not result.crash:
        problems.append(f"exit code {result.code}: {errors[-1] if errors else result.err[-200:]}")
    if len(errors) > 1:
        problems.append(f"{len(errors)} error: lines: {errors[:3]}")
    if stray and "Traceback" not in text:
        problems.append(f"stderr line that is neither error: nor warning: {stray[0][:200]!r}")
    if result.code not in (0, -1) and not errors and not result.crash:
        problems.append(f"exit code {result.code} without an error: line")
    if result.code == 0 and errors:
        problems.append(f"exit 0 with an error: line: {errors[0][:200]}")
    if case.expect is not None and result.code != case.expect and not result.crash:
        problems.append(
            f"exit code {result.code}, expected {case.expect} ({case.why}): "
            + (errors[0][:200] if errors else result.out[-200:].strip())
        )
    if result.code == 0 and "--json" in case.args:
        try:
            if not isinstance(_strict_json(result.out), dict):
                problems.append("--json did not print a JSON object")
        except ValueError as e:
            problems.append(f"--json printed invalid JSON ({e}): {result.out[:200]!r}")
    if result.code == 0 and command == "predict" and case.output is None:
        cells = {c.strip().lower() for line in result.out.splitlines()[1:] for c in line.split(",")}
        bad = cells & {"nan", "inf", "-inf", "+inf"}
        if bad:
            problems.append(f"predict printed {sorted(bad)}")
    return problems + file_problems(case, result, root, before, after)


def check(case: Case, workspaces, base_run: Path | None, *, subprocess_: bool = False):
    """Run the case in a fresh workspace and assert every promise."""
    with workspaces() as root:
        materialize(case, root, base_run)
        args = [a.replace(WS, str(root)) for a in case.args]
        before = snapshot(root)
        result = (run_subprocess if subprocess_ else run_inprocess)(args, root)
        after = snapshot(root)
        problems = broken_promises(case, result, root, before, after)
        assert not problems, (
            "\n".join(problems)
            + f"\ncase: {case!r}\nexit code: {result.code}"
            + f"\nstdout: {result.out[-1500:]}\nstderr: {result.err[-3000:]}"
        )


# ----------------------------------------------------------------------------- values


@dataclasses.dataclass(frozen=True)
class Raw:
    """YAML text put into a generated document as it is (tags, aliases, odd scalars)."""

    text: str


def alias_bomb(width: int, depth: int) -> Raw:
    """width ** depth leaves from a few hundred bytes of YAML ("billion laughs")."""
    levels = [f"&l0 [{', '.join(['lol'] * width)}]"]
    for i in range(1, depth):
        levels.append(f"&l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    return Raw("[" + ", ".join(levels) + "]")


def deep_nesting(depth: int, mapping: bool) -> Raw:
    if mapping:
        return Raw("{a: " * depth + "1" + "}" * depth)
    return Raw("[" * depth + "]" * depth)


ODD_SCALARS = [
    ".inf", "-.inf", ".nan", ".NaN", "1e999", "-1e999", "1e-3", "1E3", "0x1F", "0o17",
    "0b101", "1_000", "+1", "-0", "4.9e-324", "1e-400", "~", "null", "yes", "on", "off",
    "2001-12-14", "2001-12-14T21:59:43Z", "!!float abc", "!!int abc", "!!int 0b102",
    "!!bool maybe", "!!timestamp x", "!!binary aGVsbG8=", "!!set {a, b}", "!!str 1",
    "!!python/object/apply:os.system [echo hi]", "!!python/name:os.system",
    "!!map [1]", "!custom x", "!<tag:yaml.org,2002:int> 12",
    "!!int 99999999999999999999999999999999999", "{[1, 2]: 3}", "{{a: 1}: 2}",
    "[&x a, *x]", "*undefined", "&a [*a]", "&m {a: *m}", "{a: 1, a: 2}", '"\\x00"',
    '"a\\nb"', '"\\u202e\\u0301"', "'", "[", "{", "]", "}", '"unterminated', "- 1",
    "a: b", "? x", "| x", "> x", "%x", "@x", "`x",
]  # fmt: skip

ODD_STRINGS = [
    "", " ", "abc", "1e-3", "0x10", "NaN", "inf", "null", "yes", "\n", "a\nb", "a\rb",
    "\t", "é", "\u00e9\u0301", "🙂", "\u202e", "\u200b", "\ufeff", "x" * 5000, "\x00",
    "a\x00b", "../x", "a/b", ".", "~", "-", "--help", "%s%n", "{}", "$HOME", "*",
]  # fmt: skip

ODD_VALUES = [
    None, True, False, 0, -1, 1, 2, 3, 10**100, -(10**100), 2**31, 2**63, 2**64,
    -(2**63) - 1, 0.5, -0.5, 1e-320, 1e308, -1e308, math.inf, -math.inf, math.nan,
    [], {}, [1], [[]], [None], {"a": 1}, {"": None}, [1, "a"], {"units": 2},
]  # fmt: skip

TIME_KEYS = {"epochs", "n_samples", "n_features"}  # values here set how long a run takes


def _asks_for_long_work(path: tuple, value: Any) -> bool:
    """A value that is valid and makes the run legitimately long: left out (see above)."""
    if not path or path[-1] not in TIME_KEYS:
        return False
    if isinstance(value, Raw):
        try:
            value = yaml.safe_load(value.text)
        except Exception:
            return False
    if isinstance(value, str):
        try:
            value = float(value.replace("_", ""))
        except ValueError:
            return False
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        return False
    if path[-1] == "epochs":
        return value > 20
    return 2000 < value < 10**11  # huge counts must be refused up front (memory)


# Generated text never holds "/": an absolute path in a value that names a folder could
# reach outside the test's folder (run names are fuzzed on their own, in a jail).
NO_SLASH = st.characters(blacklist_categories=("Cs",), blacklist_characters="/")


def odd_values() -> st.SearchStrategy:
    return st.one_of(
        st.sampled_from(ODD_VALUES),
        st.sampled_from(ODD_STRINGS),
        st.sampled_from(ODD_SCALARS).map(Raw),
        st.integers(),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(NO_SLASH, max_size=12),
        st.builds(alias_bomb, st.integers(2, 6), st.integers(2, 6)),
        st.builds(deep_nesting, st.sampled_from([30, 300, 3000]), st.booleans()),
    )


def values_for(path: tuple) -> st.SearchStrategy:
    return odd_values().filter(lambda v: not _asks_for_long_work(path, v))


def _layer_paths(i: int) -> list[tuple]:
    return [("model", "layers", i, k) for k in ("units", "activation", "dropout")]


CONFIG_PATHS: list[tuple] = [
    ("name",), ("seed",), ("device",), ("dtype",), ("loss",),
    ("data",), ("data", "source"), ("data", "options"), ("data", "options", "n_samples"),
    ("data", "options", "noise"), ("data", "options", "n_classes"),
    ("data", "options", "n_features"), ("data", "target"), ("data", "features"),
    ("data", "val_split"), ("data", "val"), ("data", "standardize"),
    ("data", "standardize_target"), ("data", "categorical"), ("data", "missing"),
    ("data", "stream"),
    ("model",), ("model", "layers"), ("model", "layers", 0), ("model", "layers", 1),
    ("model", "layers", 2), ("model", "init"), ("model", "init_from"),
    *_layer_paths(0), *_layer_paths(1),
    ("optimizer",), ("optimizer", "name"), ("optimizer", "lr"), ("optimizer", "momentum"),
    ("optimizer", "betas"), ("optimizer", "betas", 0), ("optimizer", "eps"),
    ("optimizer", "weight_decay"), ("optimizer", "nesterov"),
    ("schedule",), ("schedule", "name"), ("schedule", "warmup_epochs"),
    ("schedule", "gamma"), ("schedule", "step_size"), ("schedule", "epochs"),
    ("train",), ("train", "epochs"), ("train", "batch_size"), ("train", "shuffle"),
    ("train", "clip_grad_norm"), ("train", "class_weight"), ("train", "early_stopping"),
    ("train", "early_stopping", "patience"), ("train", "early_stopping", "monitor"),
    ("logging",), ("logging", "every_n_steps"), ("logging", "histograms"),
    ("checkpoint",), ("checkpoint", "every_n_epochs"), ("checkpoint", "keep_last"),
    ("checkpoint", "save_best"), ("checkpoint", "monitor"), ("checkpoint", "mode"),
]  # fmt: skip

ODD_KEYS = [
    "unknown", "nmae", "lr", "layers", "", " ", "a.b", "é", "x" * 300, "\n", "__class__",
    1, 0, -1, 1.5, None, True, Raw("[1, 2]"), Raw("{a: 1}"), Raw("!!binary aGk="),
    Raw("2001-12-14"), Raw(".nan"), Raw("*undefined"),
]  # fmt: skip


def _set_path(config: Any, path: tuple, value: Any) -> Any:
    """`config` with `path` set (made where missing); a whole new value for path ()."""
    if not path:
        return value
    node = config
    for key in path[:-1]:
        if isinstance(node, dict):
            node = node.setdefault(key, {})
        elif isinstance(node, list) and isinstance(key, int) and key < len(node):
            node = node[key]
        else:
            return config
    key = path[-1]
    if isinstance(node, dict):
        node[key] = value
    elif isinstance(node, list) and isinstance(key, int):
        if key < len(node):
            node[key] = value
        else:
            node.append(value)
    return config


def _del_path(config: Any, path: tuple) -> Any:
    node = config
    for key in path[:-1]:
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            return config
    with contextlib.suppress(KeyError, IndexError, TypeError):
        del node[path[-1]]
    return config


def dump_yaml(document: Any) -> str:
    """YAML text of `document`, with each `Raw` in it put in as it is."""
    raws: list[str] = []

    def swap(node: Any) -> Any:
        if isinstance(node, Raw):
            raws.append(node.text)
            return f"RAWTOKEN{len(raws) - 1}X"
        if isinstance(node, dict):
            return {swap(k): swap(v) for k, v in node.items()}
        if isinstance(node, list):
            return [swap(v) for v in node]
        return node

    text = yaml.safe_dump(swap(document), sort_keys=False, allow_unicode=True, width=10**6)
    for i in reversed(range(len(raws))):  # RAWTOKEN1X before RAWTOKEN10X's prefix
        text = text.replace(f"RAWTOKEN{i}X", raws[i])
    return text


@st.composite
def config_edit(draw) -> tuple:
    kind = draw(st.sampled_from(["set", "set", "set", "delete", "unknown key", "odd key"]))
    path = draw(st.sampled_from(CONFIG_PATHS))
    if kind == "set":
        return ("set", path, draw(values_for(path)))
    if kind == "delete":
        return ("delete", path)
    parent = path[:-1] if draw(st.booleans()) else path
    key = draw(st.sampled_from(ODD_KEYS) if kind == "odd key" else st.text(NO_SLASH, max_size=8))
    return ("set", (*parent, key), draw(values_for(())))


TEXT_EDITS = ["truncate", "insert", "flip", "bom", "utf-16", "latin-1", "crlf", "cr", "tabs",
              "second document", "directive", "replace"]  # fmt: skip
WHOLE_TEXTS = [b"", b"\n", b"# only a comment\n", b"[]", b"42", b"~", b"- a\n", b"'x'",
               b"\x00\x01\x02", b"\xff\xfe\xfd", b"name: [unclosed\n", b"---\n---\n",
               b":", b"key: value: other", b"\ta: 1\n", b"a: 1\n  b: 2\n"]  # fmt: skip


def apply_text_edit(data: bytes, edit: tuple) -> bytes:
    kind = edit[0]
    at = int(edit[1] * len(data)) if len(edit) > 1 and isinstance(edit[1], float) else 0
    if kind == "truncate":
        return data[:at]
    if kind == "insert":
        return data[:at] + edit[2] + data[at:]
    if kind == "flip":
        if not data:
            return data
        at = min(at, len(data) - 1)
        return data[:at] + bytes([data[at] ^ edit[2]]) + data[at + 1 :]
    if kind == "bom":
        return b"\xef\xbb\xbf" + data
    if kind in ("utf-16", "latin-1"):
        return data.decode("utf-8", "replace").encode(kind, "replace")
    if kind == "crlf":
        return data.replace(b"\n", b"\r\n")
    if kind == "cr":
        return data.replace(b"\n", b"\r")
    if kind == "tabs":
        return data.replace(b"  ", b"\t")
    if kind == "second document":
        return data + b"---\nname: second\n"
    if kind == "directive":
        return edit[2] + data
    if kind == "replace":
        return edit[2]
    raise AssertionError(kind)


@st.composite
def text_edit(draw) -> tuple:
    kind = draw(st.sampled_from(TEXT_EDITS))
    frac = draw(st.floats(0, 1))
    if kind == "insert":
        return (kind, frac, draw(st.binary(min_size=1, max_size=6)))
    if kind == "flip":
        return (kind, frac, draw(st.integers(1, 255)))
    if kind == "directive":
        return (
            kind,
            0.0,
            draw(
                st.sampled_from(
                    [
                        b"%YAML 1.1\n---\n",
                        b"%YAML 9.9\n---\n",
                        b"%TAG ! tag:x,2000:\n---\n",
                        b"%FOO\n---\n",
                    ]
                )
            ),
        )
    if kind == "replace":
        return (kind, 0.0, draw(st.sampled_from(WHOLE_TEXTS)))
    return (kind, frac)


@st.composite
def config_texts(draw) -> tuple[bytes, list]:
    """A YAML config: BASE with a few edits to its values and keys, then maybe to its text."""
    config = copy.deepcopy(BASE)
    edits = draw(st.lists(config_edit(), min_size=1, max_size=3))
    for edit in edits:
        if edit[0] == "set":
            config = _set_path(config, edit[1], edit[2])
        else:
            config = _del_path(config, edit[1])
    data = dump_yaml(config).encode("utf-8", "surrogatepass")
    text_edits = draw(st.lists(text_edit(), max_size=1)) if draw(st.integers(0, 4)) == 0 else []
    for edit in text_edits:
        data = apply_text_edit(data, edit)
    return data, edits + text_edits


# ----------------------------------------------------------------------------- commands

TRAIN = ["--logdir", "logs", "-q"]


ODD_INTS = ["-1", "0", "1", "x", "1.5", "", "1e3", str(10**100), str(2**64), "-0", " 2"]
OPTIONS = {  # command -> option -> values (no value that asks for a long run)
    "train": {
        "--seed": ODD_INTS,
        "--epochs": ["-1", "0", "1", "x", "1.5", "", "1e0", " 2"],
        "--device": ["cpu", "cuda", "auto", "tpu", "", "CPU", "cuda:99"],
    },
    "resume": {"--epochs": ["-1", "0", "2", "3", "x", ""], "--device": ["cpu", "cuda", "tpu"]},
    "gradcheck": {
        "--samples": ["0", "-1", "1", str(10**100)],
        "--eps": ["0", "-1", "nan", "inf", "1e-300", "1"],
        "--max-entries": ["0", "1", str(10**100)],
        "--tol": ["nan", "-1", "inf", "0"],
    },
}


def command_options(draw, command: str) -> list[str]:
    """Now and then, one of the command's own options with an odd value."""
    options = OPTIONS.get(command)
    if not options or draw(st.integers(0, 3)) > 0:
        return []
    option = draw(st.sampled_from(sorted(options)))
    return [f"{option}={draw(st.sampled_from(options[option]))}"]


def config_command(draw, config: str = "cfg.yaml", base_run: bool = False) -> list[str]:
    commands = ["validate", "train", "train", "gradcheck"]
    if base_run:
        commands.append("resume")
    command = draw(st.sampled_from(commands))
    if command == "train":  # the config's name is test_run_names's business
        args = ["train", config, *TRAIN, "--name=run"]
    elif command == "resume":
        args = ["resume", BASE_RUN, "--epochs=3", "-q"]
    else:
        args = [command, config]
    return args + command_options(draw, command)


# ----------------------------------------------------------------------------- 1. configs


@fuzz_settings(150)
@given(data=st.data())
def test_configs(data, workspaces):
    """Any config text: validate / train / gradcheck keep every promise."""
    text, edits = data.draw(config_texts(), label="config")
    args = config_command(data.draw)
    check(Case(args, files={"cfg.yaml": text}), workspaces, None)


# ----------------------------------------------------------------------------- 2. --set

SET_KEYS = [".".join(str(k) for k in path) for path in CONFIG_PATHS] + [
    "", ".", "..", "a..b", ".seed", "seed.", "seed.x", "name\n", " seed", "seed ", "x" * 500,
    "__class__", "model.__dict__", "model.layers.5.units", "model.layers.-1.units",
    "model.layers.x.units", "model.layers.99999999999999999999.units", "model.layers.1e3.units",
    "model.layers.0.units.x", "data.options.n_samples.0", "optimizer.betas.5", "é", "unknown",
]  # fmt: skip


def _yaml_value(value: Any) -> str:
    if isinstance(value, Raw):
        return value.text
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=10**6)
    return text.removesuffix("\n...\n").rstrip("\n")


@st.composite
def set_items(draw) -> str:
    key = draw(st.sampled_from(SET_KEYS))
    path = tuple(key.split("."))
    shape = draw(st.sampled_from(["k=v", "k=v", "k=v", "k", "k==v", "=v", "k=", "k=v=w"]))
    value = _yaml_value(draw(values_for(path)))
    if _asks_for_long_work(path, Raw(value)):
        value = "1"
    return {"k=v": f"{key}={value}", "k": key, "k==v": f"{key}=={value}", "=v": f"={value}",
            "k=": f"{key}=", "k=v=w": f"{key}={value}={value}"}[shape]  # fmt: skip


@fuzz_settings(100)
@given(data=st.data())
def test_set_overrides(data, workspaces, base_run):
    """Any `--set KEY=VALUE`: validate / train / gradcheck / resume keep every promise."""
    items = data.draw(st.lists(set_items(), min_size=1, max_size=3), label="--set")
    args = config_command(data.draw, base_run=True)
    for item in items:
        args += ["--set", item]
    case = Case(args, files={"cfg.yaml": base_yaml()}, base_run=args[0] == "resume")
    check(case, workspaces, base_run)


# ----------------------------------------------------------------------------- sweep grids

GRID_KEYS = ["nope", "", "optimizer", "model.layers.9.units", "a..b", "seed", "optimizer.lr"]
PLAIN_VALUES = [0.01, 0.1, 1, 2, "relu", "tanh", True, None, "adam"]  # often valid somewhere


GOOD_GRIDS = {  # values a trial takes: the sweep must then run, and 1e30 diverges
    "optimizer.lr": ["0.01", "0.1", "1e30"], "model.layers.0.units": ["2", "3"],
    "train.batch_size": ["8", "16"], "seed": ["0", "1"], "train.shuffle": ["true", "false"],
    "model.layers.0.activation": ["relu", "tanh", "gelu"],
}  # fmt: skip


@st.composite
def grid_items(draw) -> str:
    if draw(st.booleans()):  # a grid that runs
        key = draw(st.sampled_from(sorted(GOOD_GRIDS)))
        values = draw(st.lists(st.sampled_from(GOOD_GRIDS[key]), min_size=1, max_size=2))
        return f"{key}=[{', '.join(values)}]"
    key = draw(st.sampled_from(SET_KEYS + GRID_KEYS))
    path = tuple(key.split("."))
    value = st.one_of(st.sampled_from(PLAIN_VALUES), values_for(path))
    values = [_yaml_value(v) for v in draw(st.lists(value, min_size=1, max_size=2))]
    values = ["1" if _asks_for_long_work(path, Raw(v)) else v for v in values]
    text = {
        "list": "[" + ", ".join(values) + "]",
        "scalar": values[0],
        "empty": "[]",
        "twice": f"[{values[0]}, {values[0]}]",
        "open": "[" + values[0],
        "nested": f"[[{values[0]}]]",
    }[
        draw(
            st.sampled_from(  # fmt: skip
                ["list", "list", "list", "scalar", "empty", "twice", "open", "nested"]
            )
        )
    ]
    shape = draw(st.sampled_from(["k=v", "k=v", "k=v", "k", "=v", "k=v=w"]))
    return {"k=v": f"{key}={text}", "k": key, "=v": f"={text}", "k=v=w": f"{key}={text}={text}"}[
        shape
    ]


@fuzz_settings(30)
@given(data=st.data())
def test_sweep_grids(data, workspaces):
    """Any `--grid`, `--samples` and `--jobs`: a sweep folder in logs/ with its trials, or
    exit 2 having written nothing; trials that diverge are recorded (exit 0)."""
    items = data.draw(st.lists(grid_items(), min_size=1, max_size=2), label="--grid")
    config = copy.deepcopy(BASE)
    config["train"]["epochs"] = 1
    args = ["sweep", "cfg.yaml", *TRAIN[:2], "--jobs", data.draw(st.sampled_from(["1", "2"]))]
    for item in items:
        args += ["--grid", item]
    if data.draw(st.integers(0, 3)) == 0:
        args += ["--samples", data.draw(st.sampled_from(ODD_INTS))]
    check(Case(args, files={"cfg.yaml": base_yaml(config)}), workspaces, None)


# ----------------------------------------------------------------------------- 3. run names

ODD_NAMES = [
    "", ".", "..", "../x", "../../x", "a/b", "a/../b", f"{WS}/", f"{WS}//x", f"{WS}/outside",
    f"{WS}/logs/abs", "./x", "x/", "x/.", "a\\b", "~", "~/x", "-x", "--x", " ", "x ",
    " x", ".hidden", "...", "x" * 255, "x" * 256, "é" * 200, "a\nb", "a\tb", "\u202eabc",
    "\u200b", "🙂", "con", "nul", "*", "?", "$HOME", "`id`", "taken", "file", "emptydir",
    "link", "link/x", "taken/x", "file/x",
]  # fmt: skip


def forbidden_name(name: str) -> bool:
    """A run name that is not one plain path component (SPEC: Containment)."""
    return name in ("", ".", "..") or "/" in name or name.startswith(WS)


@st.composite
def run_names(draw) -> str:
    return draw(
        st.one_of(
            st.sampled_from(ODD_NAMES),
            st.text(
                st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                max_size=40,
            ).filter(lambda n: not n.startswith("/") and n.count("..") <= 2),
        )
    )  # the workspace's jail holds whatever "../../x" reaches


@fuzz_settings(50)
@given(data=st.data())
def test_run_names(data, workspaces):
    """Any `--name` or config `name`: the run folder is a new direct child of the log
    folder, or the command fails with exit 2 having written nothing."""
    where = data.draw(st.sampled_from(["--name", "config", "both"]), label="where")
    name = data.draw(run_names(), label="name")
    config = copy.deepcopy(BASE)
    config["train"]["epochs"] = 1
    args = ["train", "cfg.yaml", *TRAIN]
    if where in ("config", "both"):
        config["name"] = name
    if where in ("--name", "both"):
        args.append(f"--name={name}")
    case = Case(
        args,
        files={
            "cfg.yaml": dump_yaml(config).encode("utf-8"),
            "logs/taken/config.yaml": b"name: taken\n",
            "logs/file": b"not a folder\n",
            "outside/keep.txt": b"keep\n",
        },
        dirs=["logs/emptydir", "outside/empty"],
        links={"logs/link": f"{WS}/outside/empty"},
    )
    if forbidden_name(name):
        case.expect, case.why = 2, f"run name {name!r} is not one plain path component"
    elif where != "config" and name in ("taken", "file"):
        case.expect, case.why = 2, "an existing non-empty run folder is never overwritten"
    check(case, workspaces, None)


# ----------------------------------------------------------------------------- 4. data files


def npy_bytes(array: np.ndarray, header: str | None = None, version: tuple = (1, 0)) -> bytes:
    """An .npy file of `array`; `header` replaces its header dict's text."""
    buf = io.BytesIO()
    np.lib.format.write_array(buf, array, allow_pickle=True)
    data = buf.getvalue()
    if header is None and version == (1, 0):
        return data
    hlen = struct.unpack("<H", data[8:10])[0]
    body = data[10 + hlen :]
    text = header if header is not None else data[10 : 10 + hlen].decode("latin-1").strip()
    text = text + " " * ((64 - (len(text) + 11) % 64) % 64) + "\n"
    raw = text.encode("latin-1", "replace")
    length = struct.pack("<H", len(raw)) if version[0] == 1 else struct.pack("<I", len(raw))
    return b"\x93NUMPY" + bytes(version) + length + raw + body


class _Touch:
    """Unpickling this object creates `marker`: proof that a file was unpickled."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def pickled(n: int) -> np.ndarray:
    a = np.empty((n,), dtype=object)
    for i in range(n):
        a[i] = _Touch(f"{WS}/UNPICKLED")
    return a


NPY_HEADERS = [
    "{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000, 2), }",
    "{'descr': '<f8', 'fortran_order': False, 'shape': (100000000000000000000000, 2), }",
    "{'descr': '<f8', 'fortran_order': False, 'shape': (-1, 2), }",
    "{'descr': '<f8', 'fortran_order': False, 'shape': (N, 2), }",
    "{'descr': '<f8', 'fortran_order': False, 'shape': (N + 1, 2), }",
    "{'descr': '<f8', 'fortran_order': False, 'shape': (0, 2), }",
    "{'descr': '<f8', 'fortran_order': False, 'shape': (2, N), }",
    "{'descr': '<f8', 'fortran_order': False, 'shape': (N, 2, 1, 1, 1, 1, 1, 1, 1, 1), }",
    "{'descr': '<f8', 'fortran_order': True, 'shape': (N, 2), }",
    "{'descr': '<f8', 'fortran_order': 'yes', 'shape': (N, 2), }",
    "{'descr': 'zz', 'fortran_order': False, 'shape': (N, 2), }",
    "{'descr': '|O', 'fortran_order': False, 'shape': (N, 2), }",
    "{'descr': '<U1000000000', 'fortran_order': False, 'shape': (N, 2), }",
    "{'descr': [('a', '<f8'), ('b', '<f8')], 'fortran_order': False, 'shape': (N,), }",
    "{'descr': '<f8', 'shape': (N, 2), }",
    "{'descr': '<f8', 'fortran_order': False, 'shape': (N, 2), 'extra': 1, }",
    "{'descr': '<f8', 'fortran_order': False, 'shape': [N, 2], }",
    "{'descr': '<f8', 'fortran_order': False, 'shape': (N, 2.5), }",
    "{'descr': '<f8', 'fortran_order': False, 'shape': __import__('os').getpid(), }",
    "not a dict",
    "",
]
ARRAY_DTYPES = ["int64", "int8", "uint8", "float16", "float32", "complex128", "bool", "<U3",
                "S3", "datetime64[s]", "V8", "object", ">f8"]  # fmt: skip


def _cast(a: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "object":
        return pickled(a.shape[0]) if a.ndim else pickled(1).reshape(())
    if dtype == "V8":
        return np.zeros(a.shape, dtype="V8")
    if dtype == "datetime64[s]":
        return a.astype("int64").astype("datetime64[s]")
    if dtype in ("<U3", "S3"):
        return a.astype(str).astype(dtype)
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return a.astype(dtype)
    except (ValueError, TypeError, OverflowError):  # e.g. meta's text as float
        return np.zeros(a.shape, dtype=dtype)


@st.composite
def array_edit(draw, which: str) -> tuple:
    kind = draw(st.sampled_from(["dtype", "shape", "header", "version", "truncate", "flip",
                                 "nonfinite", "huge"]))  # fmt: skip
    if kind == "dtype":
        return (kind, which, draw(st.sampled_from(ARRAY_DTYPES)))
    if kind == "shape":
        return (kind, which, draw(st.sampled_from(["flat", "T", "3d", "empty", "scalar", "col"])))
    if kind == "header":
        return (kind, which, draw(st.sampled_from(NPY_HEADERS)))
    if kind == "version":
        return (kind, which, draw(st.sampled_from([(2, 0), (3, 0), (0, 0), (9, 9), (1, 7)])))
    if kind in ("truncate", "flip"):
        return (kind, which, draw(st.floats(0, 1)))
    if kind == "huge":
        return (kind, which, draw(st.sampled_from([1e308, -1e308, 1e38, 3.5e38, 2.0**64])))
    return (kind, which, draw(st.sampled_from([math.nan, math.inf, -math.inf])))


def edit_array(array: np.ndarray, edits: list[tuple]) -> bytes:
    """An .npy file of `array` with the array edits of that member applied."""
    header, version = None, (1, 0)
    for edit in edits:
        kind, value = edit[0], edit[2]
        if kind == "dtype":
            array = _cast(array, value)
        elif kind == "shape":
            array = {
                "flat": lambda a: a.reshape(-1),
                "T": lambda a: a.T,
                "3d": lambda a: a.reshape(a.shape[0], -1, 1),
                "empty": lambda a: a[:0],
                "scalar": lambda a: np.asarray(a.reshape(-1)[0] if a.size else 0),
                "col": lambda a: a.reshape(-1, 1),
            }[value](array)
        elif kind in ("nonfinite", "huge") and array.dtype.kind == "f":
            array = array.astype("float64")
            array.reshape(-1)[: max(1, array.size // 3)] = value
        elif kind == "header":
            header = value.replace("N", str(array.shape[0] if array.ndim else 1))
        elif kind == "version":
            version = value
    data = npy_bytes(array, header, version)
    for edit in edits:
        if edit[0] == "truncate":
            data = data[: int(edit[2] * len(data))]
        elif edit[0] == "flip" and data:
            at = min(int(edit[2] * len(data)), len(data) - 1)
            data = data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]
    return data


ODD_CELLS = ["", " ", "abc", "NA", "nan", "NaN", "inf", "-inf", "1e999", "-1e999", "1" * 400,
             "0x1F", " 1 ", '"1,5"', '"', "é", "\x00", "1e-3", "+1", "--1", "∞", "1_0",
             "１", "True", "[1]", "\t"]  # fmt: skip
CSV_EDITS = ["cell", "cell", "drop cell", "extra cell", "header", "blank line", "crlf", "cr",
             "bom", "bytes", "truncate", "empty", "only header", "quote", "columns", "target",
             "long line", "text column", "text column"]  # fmt: skip
# the words of a categorical column; "" is an empty (missing) cell
WORDS = ["Biscoe", "Dream", "Torgersen", "", "NA", "b", "B", "é", "1", " x", "x "]
# data.categorical / data.missing of a CSV config (None: the key left out)
CATEGORICAL = [None, None, "auto", [], ["x0"], ["x1"], ["x0", "x1"], ["target"], ["nope"],
               ["x0", "x0"], "x0", 3]  # fmt: skip
MISSING = [None, None, "error", "mean", "median", "zero", "drop", ""]
CSV_HEADERS = ["x0,x0,target", "x0,,target", "x0,x1", "x0,x1,target,target", " x0 , x1 ,target",
               "", "x0;x1;target", "é,🙂,target", '"x0,x1",target', "x0,x1,Target"]  # fmt: skip
TARGETS = ["one class", "three", "strings", "floats", "empty", "negative", "huge"]


@st.composite
def csv_edit(draw) -> tuple:
    kind = draw(st.sampled_from(CSV_EDITS))
    row, col = draw(st.integers(0, 40)), draw(st.integers(0, 2))
    if kind == "cell":
        return (kind, row, col, draw(st.one_of(st.sampled_from(ODD_CELLS), st.text(max_size=6))))
    if kind == "extra cell":
        return (kind, row, draw(st.sampled_from(ODD_CELLS)))
    if kind == "header":
        return (kind, draw(st.sampled_from(CSV_HEADERS)))
    if kind == "bytes":
        return (kind, draw(st.floats(0, 1)), draw(st.binary(min_size=1, max_size=4)))
    if kind == "truncate":
        return (kind, draw(st.floats(0, 1)))
    if kind == "columns":
        return (kind, draw(st.sampled_from([0, 1, 50, 2000])))
    if kind == "target":
        return (kind, draw(st.sampled_from(TARGETS)))
    if kind == "text column":  # a column of words, some cells perhaps left as numbers
        words = draw(st.lists(st.sampled_from(WORDS), min_size=1, max_size=4))
        return (kind, draw(st.integers(0, 1)), words, draw(st.integers(0, 3)))
    return (kind, row)


def csv_bytes(x: np.ndarray, y: np.ndarray, edits: list[tuple]) -> bytes:
    header = "x0,x1,target"
    rows = [[f"{a:.4f}", f"{b:.4f}", str(int(c))] for (a, b), c in zip(x, y, strict=True)]
    tail: list = []
    for edit in edits:
        kind = edit[0]
        r = edit[1] % len(rows) if rows and isinstance(edit[1], int) else 0
        if kind == "cell" and rows and rows[r]:
            rows[r][edit[2] % len(rows[r])] = edit[3]
        elif kind == "drop cell" and rows and rows[r]:
            rows[r].pop()
        elif kind == "extra cell" and rows:
            rows[r].append(edit[2])
        elif kind == "header":
            header = edit[1]
        elif kind == "blank line" and rows:
            rows.insert(r, [])
        elif kind == "quote" and rows and rows[r]:
            rows[r][0] = '"' + rows[r][0]
        elif kind == "columns":
            header = ",".join([f"c{i}" for i in range(edit[1])] + ["target"])
            rows = [[f"{i % 7}" for i in range(edit[1])] + [row[-1] if row else "0"]
                    for row in rows]  # fmt: skip
        elif kind == "target":
            labels = {"one class": lambda i: "1", "three": lambda i: str(i % 3),
                      "strings": lambda i: "ab"[i % 2] * (1 + i % 2),
                      "floats": lambda i: f"{i / 3:.3f}", "empty": lambda i: "",
                      "negative": lambda i: str(-(i % 2)),
                      "huge": lambda i: str(10**30 * (i % 2))}[edit[1]]  # fmt: skip
            for i, row in enumerate(rows):
                if row:
                    row[-1] = labels(i)
        elif kind == "text column":  # words; numbers > 0: every (numbers + 3)th keeps its number
            _, col, words, numbers = edit
            for i, row in enumerate(rows):
                if len(row) > col and (numbers == 0 or i % (numbers + 3)):
                    row[col] = words[i % len(words)]
        elif kind == "empty":
            header, rows = "", []
        elif kind == "only header":
            rows = []
        elif kind == "long line":
            rows.append(["1" * 100_000, "2", "0"])
        else:
            tail.append(edit)
    data = ("\n".join([header, *(",".join(row) for row in rows)]) + "\n").encode("utf-8")
    for edit in tail:
        kind = edit[0]
        if kind == "crlf":
            data = data.replace(b"\n", b"\r\n")
        elif kind == "cr":
            data = data.replace(b"\n", b"\r")
        elif kind == "bom":
            data = b"\xef\xbb\xbf" + data
        elif kind == "bytes":
            at = int(edit[1] * len(data))
            data = data[:at] + edit[2] + data[at:]
        elif kind == "truncate":
            data = data[: int(edit[1] * len(data))]
    return data


IDX_CODES = {"ubyte": 0x08, "byte": 0x09, "short": 0x0B, "int": 0x0C, "float": 0x0D,
             "double": 0x0E}  # fmt: skip


def idx_bytes(a: np.ndarray, code: int = 0x08) -> bytes:
    dims = b"".join(struct.pack(">I", d) for d in a.shape)
    dtype = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
    return bytes([0, 0, code, a.ndim]) + dims + a.astype(dtype).tobytes()


@st.composite
def idx_edit(draw, which: str) -> tuple:
    kind = draw(st.sampled_from(["magic", "code", "ndim", "dim", "truncate", "extra", "dtype"]))
    if kind == "magic":
        return (kind, which, draw(st.sampled_from([b"\x00\x01", b"\x01\x00", b"\xff\xff"])))
    if kind == "code":
        return (kind, which, draw(st.sampled_from([0x00, 0x07, 0x0A, 0x0F, 0xFF])))
    if kind == "ndim":
        return (kind, which, draw(st.sampled_from([0, 1, 3, 4, 255])))
    if kind == "dim":
        value = draw(st.sampled_from([0, 1, 3, 2**31 - 1, 2**32 - 1, 10**6]))
        return (kind, which, draw(st.integers(0, 2)), value)
    if kind == "dtype":
        return (kind, which, draw(st.sampled_from(sorted(IDX_CODES))))
    if kind == "extra":
        return (kind, which, draw(st.binary(min_size=1, max_size=64)))
    return (kind, which, draw(st.floats(0, 1)))


def edit_idx(a: np.ndarray, edits: list[tuple]) -> bytes:
    code = 0x08
    for edit in edits:
        if edit[0] == "dtype":
            code = IDX_CODES[edit[2]]
    data = bytearray(idx_bytes(a, code))
    for edit in sorted(edits, key=lambda e: e[0] in ("truncate", "extra")):  # header first
        kind = edit[0]
        if kind == "magic":
            data[0:2] = edit[2]
        elif kind == "code":
            data[2] = edit[2]
        elif kind == "ndim":
            data[3] = edit[2]
        elif kind == "dim":
            at = 4 + 4 * edit[2]
            if at + 4 <= len(data):
                data[at : at + 4] = struct.pack(">I", edit[3])
        elif kind == "truncate":
            data = data[: int(edit[2] * len(data))]
        elif kind == "extra":
            data += edit[2]
    return bytes(data)


def zip_bytes(members: dict[str, bytes], compressed: bool = False) -> bytes:
    buf = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names are one of the edits
        with zipfile.ZipFile(buf, "w", method) as z:
            for name, data in members.items():
                z.writestr(name.split("#")[0], data)
    return buf.getvalue()


@st.composite
def npz_edit(draw) -> tuple:
    kind = draw(st.sampled_from(["member", "member", "drop", "rename", "duplicate",
                                 "garbage member", "compressed", "zip flip", "zip truncate",
                                 "extra member"]))  # fmt: skip
    which = draw(st.sampled_from(["x", "y"]))
    if kind == "member":
        return (kind, which, draw(array_edit(which)))
    if kind == "rename":
        return (kind, which, draw(st.sampled_from(["X", "x.npy", "features", "", "x/y", "é"])))
    if kind in ("zip flip", "zip truncate"):
        return (kind, which, draw(st.floats(0, 1)))
    return (kind, which)


def npz_bytes(x: np.ndarray, y: np.ndarray, edits: list[tuple]) -> bytes:
    arrays = {"x": x, "y": y}
    member_edits: dict[str, list] = {"x": [], "y": []}
    members: dict[str, bytes] = {}
    compressed = False
    for edit in edits:
        if edit[0] == "member":
            member_edits[edit[1]].append(edit[2])
    for key, array in arrays.items():
        members[f"{key}.npy"] = edit_array(array, member_edits[key])
    for edit in edits:
        kind, which = edit[0], edit[1]
        name = f"{which}.npy"
        if kind == "drop":
            members.pop(name, None)
        elif kind == "rename" and name in members:
            members[f"{edit[2]}.npy"] = members.pop(name)
        elif kind == "duplicate" and name in members:
            members[name + "#2"] = npy_bytes(np.zeros((3, 3)))
        elif kind == "garbage member":
            members[name] = b"this is not an npy member"
        elif kind == "extra member":
            members["z.npy"] = npy_bytes(pickled(2))
        elif kind == "compressed":
            compressed = True
    data = zip_bytes(members, compressed)
    for edit in edits:
        if edit[0] == "zip flip" and data:
            at = min(int(edit[2] * len(data)), len(data) - 1)
            data = data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]
        elif edit[0] == "zip truncate":
            data = data[: int(edit[2] * len(data))]
    return data


def gzipped(data: bytes, edit: tuple | None) -> bytes:
    out = gzip.compress(data, mtime=0)
    if edit is None:
        return out
    at = min(int(edit[1] * len(out)), max(len(out) - 1, 0))
    if edit[0] == "gz truncate":
        return out[:at]
    if edit[0] == "gz flip" and out:
        return out[:at] + bytes([out[at] ^ 0xFF]) + out[at + 1 :]
    return out + out  # "gz twice": two members


@st.composite
def data_files(draw) -> tuple[dict[str, bytes], dict[str, Any], str, str | None, list]:
    """(files, the config's data section, features file, label file or None, edits)."""
    fmt = draw(st.sampled_from(["csv", "npz", "npy", "idx"]))
    gz = draw(st.booleans()) if draw(st.integers(0, 2)) == 0 else False
    gz_edit = None
    if gz and draw(st.booleans()):
        kind = draw(st.sampled_from(["gz truncate", "gz flip", "gz twice"]))
        gz_edit = (kind, draw(st.floats(0, 1)))
    n = draw(st.integers(4, 24))
    rng = np.random.default_rng(n)
    x = rng.uniform(0, 1, size=(n, 2))
    y = np.arange(n) % 2
    suffix = ".gz" if gz else ""
    files: dict[str, bytes] = {}
    if fmt == "csv":
        edits = draw(st.lists(csv_edit(), max_size=3))
        files[f"data/t.csv{suffix}"] = csv_bytes(x, y, edits)
        source, target = f"data/t.csv{suffix}", None
    elif fmt == "npz":
        edits = draw(st.lists(npz_edit(), max_size=3))
        files[f"data/t.npz{suffix}"] = npz_bytes(x, y, edits)
        source, target = f"data/t.npz{suffix}", None
    else:
        which = st.sampled_from(["x", "y"])
        edit = idx_edit if fmt == "idx" else array_edit
        edits = draw(st.lists(which.flatmap(edit), max_size=3))
        encode = edit_idx if fmt == "idx" else edit_array
        xs = (x * 255).astype("uint8") if fmt == "idx" else x
        files[f"data/x.{fmt}{suffix}"] = encode(xs, [e for e in edits if e[1] == "x"])
        files[f"data/y.{fmt}{suffix}"] = encode(y, [e for e in edits if e[1] == "y"])
        source, target = f"data/x.{fmt}{suffix}", f"data/y.{fmt}{suffix}"
    if gz:
        files = {name: gzipped(data, gz_edit) for name, data in files.items()}
    section: dict[str, Any] = {"source": source, "val_split": 0.25}
    if target:
        section["target"] = target
    for key, choices in (("categorical", CATEGORICAL), ("missing", MISSING)):
        value = (
            draw(st.sampled_from(choices)) if fmt == "csv" or not draw(st.integers(0, 5)) else None
        )
        if value is not None:
            section[key] = value
    return files, section, source, target, [fmt, gz, gz_edit, *edits]


@fuzz_settings(200)
@given(data=st.data())
def test_data_files(data, workspaces, base_run):
    """Any CSV / .npy / .npz / IDX file, gzipped or not: validate / train / gradcheck, and
    eval --data / predict of a trained run, keep every promise."""
    files, section, source, target, _ = data.draw(data_files(), label="data")
    command = data.draw(st.sampled_from(["validate", "train", "gradcheck", "eval", "predict"]))
    config = copy.deepcopy(BASE)
    config["data"] = section
    config["train"]["epochs"] = 1
    files["cfg.yaml"] = dump_yaml(config).encode()
    if command == "eval":
        args = ["eval", BASE_RUN, "--data", source] + (["--target", target] if target else [])
        if data.draw(st.booleans()):
            args.append("--json")
    elif command == "predict":
        args = ["predict", BASE_RUN, source]
    elif command == "train":
        args = ["train", "cfg.yaml", *TRAIN]
    else:
        args = [command, "cfg.yaml"]
    check(Case(args, files=files, base_run=command in ("eval", "predict")), workspaces, base_run)


# ----------------------------------------------------------------------------- 5. checkpoints

META_PATHS: list[tuple] = [
    ("format",), ("version",), ("epoch",), ("step",), ("task",), ("data_digest",),
    ("feature_names",), ("feature_names", 0), ("metrics",), ("metrics", "val/loss"),
    ("progress",), ("progress", "step"), ("progress", "epoch"), ("progress", "batch"),
    ("progress", "best"), ("progress", "metrics"), ("progress", "stopped_early"),
    ("config",), ("config", "model"), ("config", "model", "layers"),
    ("config", "model", "layers", 0, "units"), ("config", "model", "layers", 1, "activation"),
    ("config", "loss"), ("config", "dtype"), ("config", "seed"), ("config", "name"),
    ("config", "data", "source"), ("config", "data", "standardize"),
    ("config", "optimizer", "name"), ("config", "optimizer", "lr"),
    ("config", "train", "epochs"), ("config", "train", "batch_size"),
    ("config", "logging", "logdir"), ("config", "checkpoint", "keep_last"),
    ("config", "device"), ("unknown",),
]  # fmt: skip
META_VALUES = [None, True, -1, 0, 1, 3, 10**100, -(10**100), 2**63, 1.5, math.nan, math.inf,
               -math.inf, "", "x", "1", "../x", [], {}, [1], {"a": 1}, "a" * 100_000,
               "RAW:" + "[" * 100_000 + "]" * 100_000]  # fmt: skip
CKPT_KEYS = ["params/0/W", "params/0/b", "params/1/W", "params/1/b", "optim/0/W/exp_avg",
             "optim/1/b/exp_avg_sq", "optim/step", "data/x_mean", "data/x_std",
             "data/classes", "meta"]  # fmt: skip
META_FORMS = ["bytes", "1d", "int", "not json", "json list", "json string", "deep", "empty",
              "2d", "object", "nan json", "huge json"]  # fmt: skip


@st.composite
def checkpoint_edit(draw) -> tuple:
    kind = draw(st.sampled_from(["meta set", "meta set", "meta delete", "meta form", "drop",
                                 "swap", "reshape", "dtype", "nonfinite", "rename", "add",
                                 "duplicate", "member header", "garbage member", "compressed",
                                 "flip", "truncate", "append"]))  # fmt: skip
    key = draw(st.sampled_from(CKPT_KEYS))
    if kind == "meta set":
        return (kind, draw(st.sampled_from(META_PATHS)), draw(st.sampled_from(META_VALUES)))
    if kind == "meta delete":
        return (kind, draw(st.sampled_from(META_PATHS)))
    if kind == "meta form":
        return (kind, draw(st.sampled_from(META_FORMS)))
    if kind == "swap":
        return (kind, key, draw(st.sampled_from(CKPT_KEYS)))
    if kind == "reshape":
        return (kind, key, draw(st.sampled_from(["flat", "T", "3d", "empty", "scalar", "col"])))
    if kind == "dtype":
        return (kind, key, draw(st.sampled_from(ARRAY_DTYPES)))
    if kind == "nonfinite":
        key = draw(st.sampled_from([k for k in CKPT_KEYS if k.startswith(("params/", "data/x"))]))
        return (
            kind,
            key,
            draw(st.sampled_from([math.nan, math.inf, -math.inf, 0.0, 1e38])),
            draw(st.booleans()),
        )
    if kind == "rename":
        return (
            kind,
            key,
            draw(
                st.sampled_from(
                    [
                        "params/7/W",
                        "params/0/w",
                        "PARAMS/0/W",
                        "params/0/W/x",
                        "params//W",
                        "params/-1/W",
                    ]
                )
            ),
        )
    if kind == "add":
        return (
            kind,
            draw(
                st.sampled_from(
                    [
                        "params/2/W",
                        "params/2/b",
                        "optim/9/W/exp_avg",
                        "data/y_mean",
                        "junk",
                        "../../escape",
                    ]
                )
            ),
        )
    if kind == "member header":
        return (kind, key, draw(st.sampled_from(NPY_HEADERS)))
    if kind in ("flip", "truncate"):
        return (kind, draw(st.lists(st.floats(0, 1), min_size=1, max_size=4)))
    if kind == "append":
        return (kind, draw(st.binary(min_size=1, max_size=64)))
    return (kind, key)


def _raw_meta(meta: dict, edits: list[tuple]) -> str:
    """The meta JSON text after the meta edits ("RAW:..." values go in as they are)."""
    meta = copy.deepcopy(meta)
    for edit in edits:
        if edit[0] == "meta set":
            meta = _set_path(meta, edit[1], edit[2])
        elif edit[0] == "meta delete":
            meta = _del_path(meta, edit[1])
    raws: list[str] = []

    def swap(node):
        if isinstance(node, str) and node.startswith("RAW:"):
            raws.append(node[4:])
            return f"RAWTOKEN{len(raws) - 1}X"
        if isinstance(node, dict):
            return {k: swap(v) for k, v in node.items()}
        if isinstance(node, list):
            return [swap(v) for v in node]
        return node

    text = json.dumps(swap(meta))
    for i in reversed(range(len(raws))):
        text = text.replace(f'"RAWTOKEN{i}X"', raws[i])
    return text


def _meta_array(text: str, form: str | None) -> np.ndarray:
    return {
        None: lambda: np.array(text),
        "bytes": lambda: np.array(text.encode()),
        "1d": lambda: np.array([text, text]),
        "2d": lambda: np.array([[text]]),
        "int": lambda: np.array(7),
        "not json": lambda: np.array("{'format': 'mlpcli-checkpoint'"),
        "json list": lambda: np.array("[1, 2]"),
        "json string": lambda: np.array('"mlpcli-checkpoint"'),
        "deep": lambda: np.array("[" * 100_000 + "]" * 100_000),
        "empty": lambda: np.array(""),
        "object": lambda: pickled(1),
        "nan json": lambda: np.array(text.replace('"version": 1', '"version": NaN')),
        "huge json": lambda: np.array(text[:-1] + ', "pad": "' + "x" * 5_000_000 + '"}'),
    }[form]()


def apply_checkpoint_edits(data: bytes, edits: list[tuple], root: Path) -> bytes:
    """The bytes of checkpoint `data` after `edits` (array, meta, zip, then byte edits)."""
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays.pop("meta")[()]))
    form = None
    members: dict[str, Any] = {}
    headers: dict[str, str] = {}
    compressed = False
    for edit in edits:
        kind = edit[0]
        if kind == "meta form":
            form = edit[1]
    arrays["meta"] = _meta_array(_raw_meta(meta, edits), form)
    for edit in edits:
        kind = edit[0]
        key = edit[1] if len(edit) > 1 else None
        if kind == "drop":
            arrays.pop(key, None)
        elif kind == "swap" and key in arrays and edit[2] in arrays:
            arrays[key], arrays[edit[2]] = arrays[edit[2]], arrays[key]
        elif kind == "reshape" and key in arrays:
            arrays[key] = {
                "flat": lambda a: a.reshape(-1),
                "T": lambda a: a.T,
                "3d": lambda a: a.reshape(*a.shape, 1),
                "empty": lambda a: a.reshape(-1)[:0],
                "scalar": lambda a: np.asarray(a.reshape(-1)[0] if a.size else 0),
                "col": lambda a: a.reshape(-1, 1),
            }[edit[2]](arrays[key])
        elif kind == "dtype" and key in arrays:
            a = arrays[key]
            arrays[key] = (
                _cast(a.reshape(-1), edit[2]).reshape(a.shape) if a.ndim else _cast(a, edit[2])
            )
        elif kind == "nonfinite" and key in arrays and arrays[key].dtype.kind in "fiu":
            a = arrays[key].astype("float64" if arrays[key].dtype.kind != "f" else None)
            a = np.array(a, copy=True)
            if edit[3]:
                a[...] = edit[2]
            else:
                a.reshape(-1)[:1] = edit[2]
            arrays[key] = a
        elif kind == "rename" and key in arrays:
            arrays[edit[2]] = arrays.pop(key)
        elif kind == "add":
            arrays[key] = np.ones((2, 2), dtype="float32")
        elif kind == "member header":
            headers[key] = edit[2]
        elif kind == "compressed":
            compressed = True
    for key, a in arrays.items():
        header = headers.get(key)
        if header is not None:
            header = header.replace("N", str(a.shape[0] if a.ndim else 1))
        members[f"{key}.npy"] = npy_bytes(a, header)
    for edit in edits:
        if edit[0] == "duplicate" and f"{edit[1]}.npy" in members:
            members[f"{edit[1]}.npy#2"] = npy_bytes(np.zeros((7, 7), dtype="float32"))
        elif edit[0] == "garbage member" and f"{edit[1]}.npy" in members:
            members[f"{edit[1]}.npy"] = b"\x93NUMPY garbage"
    out = zip_bytes(
        {k: v.replace(WS.encode(), str(root).encode()) for k, v in members.items()}, compressed
    )
    for edit in edits:
        if edit[0] == "flip" and out:
            b = bytearray(out)
            for frac in edit[1]:
                b[min(int(frac * len(b)), len(b) - 1)] ^= 0xFF
            out = bytes(b)
        elif edit[0] == "truncate":
            out = out[: int(min(edit[1]) * len(out))]
        elif edit[0] == "append":
            out += edit[1]
    return out


CKPT = f"{BASE_RUN}/checkpoints"
LINK_CASES = {
    # last.npz (and best.npz) lead to a whole checkpoint outside the run folder
    "checkpoint outside": dict(
        remove=[f"{CKPT}/last.npz", f"{CKPT}/best.npz"],
        links={f"{CKPT}/last.npz": f"{WS}/elsewhere/checkpoints/last.npz",
               f"{CKPT}/best.npz": "../../../elsewhere/checkpoints/last.npz"},
    ),
    # the checkpoints/ folder itself is a link to a folder outside
    "checkpoints folder outside": dict(
        remove=[CKPT], links={CKPT: f"{WS}/elsewhere/checkpoints"},
    ),
    # the event files and the config are links to files outside
    "event files outside": dict(externalize=[f"{BASE_RUN}/events.*"]),
    "config outside": dict(remove=[f"{BASE_RUN}/config.yaml"],
                           links={f"{BASE_RUN}/config.yaml": f"{WS}/outside.yaml"}),
    # checkpoints that are links to a non-checkpoint outside
    "checkpoint is a link to text": dict(
        remove=[f"{CKPT}/last.npz", f"{CKPT}/best.npz"],
        links={f"{CKPT}/last.npz": f"{WS}/notes.txt", f"{CKPT}/best.npz": f"{WS}/notes.txt"},
    ),
}  # fmt: skip


def ckpt_commands(draw) -> list[str]:
    target = draw(st.sampled_from([BASE_RUN, f"{CKPT}/last.npz", f"{CKPT}/best.npz"]))
    command = draw(st.sampled_from(["inspect", "inspect --json", "eval", "eval --json",
                                    "predict npy", "predict csv", "resume", "resume",
                                    "init_from"]))  # fmt: skip
    if command == "resume":  # from epoch 1 the later steps are cut from the event files
        target = f"{CKPT}/epoch-0001.npz" if target.endswith("best.npz") else target
        return ["resume", target, "--epochs", "3", "-q"]
    if command == "init_from":
        return ["train", "init.yaml", *TRAIN]
    if command.startswith("predict"):
        features = "features.npy" if command.endswith("npy") else "features.csv"
        return ["predict", target, features] + (["--proba"] if draw(st.booleans()) else [])
    name, *flags = command.split()
    return [name, target, *flags]


def checkpoint_inputs() -> dict[str, Any]:
    init = copy.deepcopy(BASE)
    init["model"]["init_from"] = f"{CKPT}/last.npz"
    init["train"]["epochs"] = 1
    return {
        "init.yaml": dump_yaml(init).encode(),
        "features.npy": npy_bytes(np.array([[0.1, 0.2], [0.5, 0.4], [0.9, 0.1]])),
        "features.csv": FEATURES_CSV,
        "notes.txt": b"notes\n",
    }


@fuzz_settings(250)
@given(data=st.data())
def test_checkpoints(data, workspaces, base_run):
    """Any damaged, foreign or linked checkpoint: inspect / eval / predict / resume /
    train with model.init_from keep every promise, and the checkpoint never changes
    (resume: nothing outside its run folder)."""
    args = ckpt_commands(data.draw)
    files = checkpoint_inputs()
    if data.draw(st.integers(0, 5), label="links?") == 0:
        how = data.draw(st.sampled_from(sorted(LINK_CASES)), label="links")
        case = Case(args, files=files, base_run=True, **LINK_CASES[how])
        case.why = how
        case.files["elsewhere/checkpoints/last.npz"] = Lazy("base last.npz")
        case.files["outside.yaml"] = base_yaml()
        case.files["elsewhere/keep.txt"] = b"keep\n"
    else:
        edits = data.draw(st.lists(checkpoint_edit(), min_size=1, max_size=3), label="edits")
        case = Case(args, files=files, base_run=True, checkpoint_edits=edits)
    check(case, workspaces, base_run)


# ----------------------------------------------------------------------------- 6. --output

# name: (path, kind); "{input}" is the input features file of `predict`
OUTPUT_TARGETS = {
    "the input": ("{input}", "input"),
    "the input, spelled another way": ("./logs/../{input}", "input"),
    "the input, absolute": (WS + "/{input}", "input"),
    "the checkpoint": (f"{CKPT}/best.npz", "run folder"),
    "last.npz": (f"{CKPT}/last.npz", "run folder"),
    "an epoch checkpoint": (f"{CKPT}/epoch-0002.npz", "run folder"),
    "the run's config": (f"{BASE_RUN}/config.yaml", "run folder"),
    "a new file in the run folder": (f"{BASE_RUN}/predictions.csv", "run folder"),
    "a new file in checkpoints/": (f"{CKPT}/predictions.csv", "run folder"),
    "a new file in the run folder, through a link": ("runlink/new.csv", "run folder"),
    "the run folder": (BASE_RUN, "folder"),
    "the checkpoints folder": (CKPT, "folder"),
    "the working folder": (".", "folder"),
    "a hard link to the checkpoint": ("hardlink.npz", "link"),
    "a link to the checkpoint": ("link.csv", "link"),
    "an existing file": ("existing.csv", "existing"),
    "a new file": ("fresh.csv", "new"),
    "a new file in a missing folder": ("newdir/fresh.csv", "new, missing folder"),
}


def output_expectation(kind: str, command: str, force: bool) -> int | None:
    """The exit code SPEC.md fixes for `--output` onto a target of this kind, if it does."""
    if kind in ("run folder", "folder") or (kind == "input" and command == "predict"):
        return 2  # never an input, never into a run folder, never a folder
    if kind in ("input", "existing", "link"):  # an existing file (init has no input)
        if not force:
            return 2
        return 0 if kind != "link" else None  # a link: replaced, or refused; never followed
    return 0 if kind == "new" else None  # a missing folder: made, or refused


@fuzz_settings(60)
@given(data=st.data())
def test_output_targets(data, workspaces, base_run):
    """`predict --output` / `init -o` never write over an input, into a run folder, or
    onto an existing file without --force; a new file is written and nothing else."""
    what = data.draw(st.sampled_from(sorted(OUTPUT_TARGETS)), label="target")
    path, kind = OUTPUT_TARGETS[what]
    force = data.draw(st.booleans(), label="--force")
    command = data.draw(st.sampled_from(["predict", "predict", "init"]), label="command")
    features = data.draw(st.sampled_from(["features.npy", "features.csv"]), label="input")
    path = path.replace("{input}", features)
    if command == "predict":
        ckpt = data.draw(st.sampled_from([BASE_RUN, f"{CKPT}/best.npz"]), label="checkpoint")
        args = ["predict", ckpt, features, "--output", path]
        if data.draw(st.booleans(), label="--proba"):
            args.append("--proba")
    else:
        template = data.draw(st.sampled_from(["classification", "regression", "csv"]))
        args = ["init", template, "-o", path]
    if force:
        args.append("--force")
    case = Case(
        args,
        files={**checkpoint_inputs(), "existing.csv": b"keep me\n"},
        base_run=True,
        hardlinks={"hardlink.npz": f"{CKPT}/best.npz"},
        links={"link.csv": f"{CKPT}/best.npz", "runlink": BASE_RUN},
        output=path,
    )
    case.expect = output_expectation(kind, command, force)
    case.why = f"--output onto {what}" + (" with --force" if force else "")
    check(case, workspaces, base_run)


# ----------------------------------------------------------------------------- 7. bounds


def _gzip_zeros(total: int) -> bytes:
    """A gzip stream inflating to `total` zero bytes (concatenated 64 MiB members)."""
    member = gzip.compress(bytes(64 << 20), compresslevel=9, mtime=0)
    return member * (total // (64 << 20))


@functools.cache
def _zeros_bomb() -> bytes:
    return _gzip_zeros(2 << 30)


def _trailing_bomb(payload: bytes) -> bytes:
    """`payload` gzipped, followed by 2 GiB of gzipped zeros (about 2 MiB on disk)."""
    return gzip.compress(payload, mtime=0) + _zeros_bomb()


@functools.cache
def _honest_big_npz() -> bytes:
    """An .npz whose headers tell the truth: x (2**27, 2) float32 = 1 GiB and y (2**27,)
    int8, deflated to about 1 MiB."""
    n = 2**27
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for name, descr, shape, nbytes in (("x", "<f4", (n, 2), n * 8), ("y", "|i1", (n,), n)):
            header = io.BytesIO()
            np.lib.format.write_array_header_1_0(
                header, {"descr": descr, "fortran_order": False, "shape": shape}
            )
            with z.open(f"{name}.npy", "w", force_zip64=True) as f:
                f.write(header.getvalue())
                chunk = bytes(64 << 20)
                for _ in range(nbytes // len(chunk)):
                    f.write(chunk)
    return buf.getvalue()


SMALL_X = np.random.default_rng(0).uniform(size=(16, 2))
SMALL_Y = np.arange(16) % 2
SMALL_IDX = (SMALL_X * 255).astype("uint8")
LAZY = {
    "base last.npz": lambda base: (base / "checkpoints" / "last.npz").read_bytes(),
    "npy + 2 GiB of gzip": lambda base: _trailing_bomb(npy_bytes(SMALL_X)),
    "labels npy + 2 GiB of gzip": lambda base: _trailing_bomb(npy_bytes(SMALL_Y)),
    "idx + 2 GiB of gzip": lambda base: _trailing_bomb(idx_bytes(SMALL_IDX)),
    "labels idx + 2 GiB of gzip": lambda base: _trailing_bomb(idx_bytes(SMALL_Y)),
    "csv + 2 GiB of gzip": lambda base: _trailing_bomb(csv_bytes(SMALL_X, SMALL_Y, [])),
    "honest 1 GiB npz": lambda base: _honest_big_npz(),
}
BIG_HEADER = "{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000, 2), }"


def _data_case(command: str, source: str, target: str | None, files: dict, **kw) -> Case:
    """`command` on data file `source` (labels `target`): through a config for validate and
    train, through --data for eval, as the input of predict."""
    config = copy.deepcopy(BASE)
    config["data"] = {"source": source, "val_split": 0.25}
    if target:
        config["data"]["target"] = target
    config["train"]["epochs"] = 1
    files = {**files, "cfg.yaml": dump_yaml(config).encode()}
    if command == "predict":
        return Case(["predict", BASE_RUN, source], files=files, base_run=True, **kw)
    if command == "eval":
        extra = ["--target", target] if target else []
        return Case(["eval", BASE_RUN, "--data", source, *extra], files, base_run=True, **kw)
    args = ["train", "cfg.yaml", *TRAIN] if command == "train" else [command, "cfg.yaml"]
    return Case(args, files=files, **kw)


def _config_case(command: str, path: tuple, value: Any) -> Case:
    config = _set_path(copy.deepcopy(BASE), path, value)
    args = ["train", "cfg.yaml", *TRAIN] if command == "train" else [command, "cfg.yaml"]
    return Case(args, files={"cfg.yaml": dump_yaml(config).encode()})


def _set_case(command: str, item: str) -> Case:
    args = ["train", "cfg.yaml", *TRAIN] if command == "train" else [command, "cfg.yaml"]
    return Case([*args, "--set", item], files={"cfg.yaml": base_yaml()})


def _gz(data: bytes, gz: bool) -> bytes:
    return gzip.compress(data, mtime=0) if gz else data


def _npy_lie(command: str, gz: bool) -> Case:
    s = ".gz" if gz else ""
    files = {f"data/x.npy{s}": _gz(npy_bytes(SMALL_X, BIG_HEADER), gz),
             f"data/y.npy{s}": _gz(npy_bytes(SMALL_Y), gz)}  # fmt: skip
    return _data_case(command, f"data/x.npy{s}", f"data/y.npy{s}", files)


def _idx_lie(command: str, gz: bool) -> Case:
    s = ".gz" if gz else ""
    x = bytearray(idx_bytes(SMALL_IDX))
    x[4:12] = struct.pack(">II", 2**31 - 1, 2**31 - 1)
    files = {f"data/x.idx{s}": _gz(bytes(x), gz), f"data/y.idx{s}": _gz(idx_bytes(SMALL_Y), gz)}
    return _data_case(command, f"data/x.idx{s}", f"data/y.idx{s}", files)


def _lazy_pair(command: str, fmt: str) -> Case:
    x, y = f"data/x.{fmt}.gz", f"data/y.{fmt}.gz"
    files = {x: Lazy(f"{fmt} + 2 GiB of gzip"), y: Lazy(f"labels {fmt} + 2 GiB of gzip")}
    return _data_case(command, x, y, files)


def _dev_zero(command: str, name: str) -> Case:
    target = "data/y.npy" if name.endswith(".npy") else None
    files = {"data/y.npy": npy_bytes(SMALL_Y)}
    return _data_case(command, name, target, files, links={name: "/dev/zero"})


def _checkpoint_case(command: str, edits: list) -> Case:
    args = {
        "resume": ["resume", BASE_RUN, "--epochs", "3", "-q"],
        "predict": ["predict", BASE_RUN, "features.npy"],
    }.get(command, [command, BASE_RUN])
    return Case(args, files=checkpoint_inputs(), base_run=True, checkpoint_edits=edits)


DATA_COMMANDS = ("validate", "train", "eval", "predict")
CONFIG_COMMANDS = ("validate", "train", "gradcheck")
CHECKPOINT_COMMANDS = ("inspect", "eval", "predict", "resume")
WIDE = [{"units": 10**6, "activation": "tanh"}, {"units": 10**6, "activation": "tanh"},
        {"units": 2, "activation": "softmax"}]  # fmt: skip

# name -> (commands, a function of the command -> Case): inputs that ask for far more
# memory or time than they are worth; each must be refused up front or handled in bounds.
HAZARDS: dict[str, tuple[tuple, Any]] = {
    **{f"alias bomb at {'.'.join(map(str, p))}":
       (CONFIG_COMMANDS, lambda c, p=p: _config_case(c, p, alias_bomb(10, 9)))
       for p in [("data", "options"), ("name",), ("unknown",), ("model", "layers")]},
    **{f"nesting 10**5 deep at {'.'.join(map(str, p))}":
       (CONFIG_COMMANDS, lambda c, p=p: _config_case(c, p, deep_nesting(100_000, False)))
       for p in [("data", "options"), ("seed",)]},
    "mappings nested 5 * 10**4 deep":
        (CONFIG_COMMANDS, lambda c: _config_case(c, ("seed",), deep_nesting(50_000, True))),
    "recursive alias": (CONFIG_COMMANDS, lambda c: _config_case(c, ("data",), Raw("&r [*r]"))),
    "--set alias bomb":
        (CONFIG_COMMANDS, lambda c: _set_case(c, "data.options=" + alias_bomb(10, 9).text)),
    "--set nesting 10**5 deep": (CONFIG_COMMANDS, lambda c: _set_case(c, "seed=" + "[" * 10**5)),
    "n_samples 10**12":
        (CONFIG_COMMANDS, lambda c: _config_case(c, ("data", "options", "n_samples"), 10**12)),
    "n_samples 2**62":
        (CONFIG_COMMANDS, lambda c: _config_case(c, ("data", "options", "n_samples"), 2**62)),
    "units 10**11":
        (CONFIG_COMMANDS, lambda c: _config_case(c, ("model", "layers", 0, "units"), 10**11)),
    "two hidden layers of 10**6 units":
        (CONFIG_COMMANDS, lambda c: _config_case(c, ("model", "layers"), WIDE)),
    "synthetic with 10**12 features":
        (CONFIG_COMMANDS, lambda c: _config_case(c, ("data",), {
            "source": "synthetic", "options": {"n_samples": 10, "n_features": 10**12}})),
    "npy header claims 10**12 rows": (DATA_COMMANDS, lambda c: _npy_lie(c, False)),
    "gzipped npy header claims 10**12 rows": (DATA_COMMANDS, lambda c: _npy_lie(c, True)),
    "idx header claims 2**62 cells": (DATA_COMMANDS, lambda c: _idx_lie(c, False)),
    "gzipped idx header claims 2**62 cells": (DATA_COMMANDS, lambda c: _idx_lie(c, True)),
    "npz member claims 10**12 rows":
        (DATA_COMMANDS, lambda c: _data_case(c, "data/t.npz", None, {"data/t.npz": zip_bytes(
            {"x.npy": npy_bytes(SMALL_X, BIG_HEADER), "y.npy": npy_bytes(SMALL_Y)})})),
    "npy + 2 GiB of gzip": (DATA_COMMANDS, lambda c: _lazy_pair(c, "npy")),
    "idx + 2 GiB of gzip": (DATA_COMMANDS, lambda c: _lazy_pair(c, "idx")),
    "csv + 2 GiB of gzip":
        (DATA_COMMANDS, lambda c: _data_case(c, "data/t.csv.gz", None,
                                             {"data/t.csv.gz": Lazy("csv + 2 GiB of gzip")})),
    "honest 1 GiB npz":  # validate only: training on it would be a legitimately long run
        (("validate",), lambda c: _data_case(c, "data/t.npz", None,
                                             {"data/t.npz": Lazy("honest 1 GiB npz")})),
    "csv that is /dev/zero": (DATA_COMMANDS, lambda c: _dev_zero(c, "data/zero.csv")),
    "npy that is /dev/zero": (DATA_COMMANDS, lambda c: _dev_zero(c, "data/zero.npy")),
    "checkpoint member claims 10**12 rows":
        (CHECKPOINT_COMMANDS,
         lambda c: _checkpoint_case(c, [("member header", "params/0/W", BIG_HEADER)])),
    "checkpoint meta nested 10**5 deep":
        (CHECKPOINT_COMMANDS, lambda c: _checkpoint_case(c, [("meta form", "deep")])),
    "checkpoint meta of 5 MB": (CHECKPOINT_COMMANDS,
                                lambda c: _checkpoint_case(c, [("meta form", "huge json")])),
}  # fmt: skip


@st.composite
def bounded_cases(draw) -> Case:
    """Mostly the hazards above, now and then a case of another surface."""
    if draw(st.integers(0, 4)) > 0:
        name = draw(st.sampled_from(sorted(HAZARDS)), label="hazard")
        commands, make = HAZARDS[name]
        case = make(draw(st.sampled_from(commands), label="command"))
        case.why = name
        return case
    text, _ = draw(config_texts())
    return Case(config_command(draw), files={"cfg.yaml": text})


@fuzz_settings(24)
@given(case=bounded_cases())
def test_resource_bounds(case, workspaces, base_run):
    """In a subprocess under RLIMIT_AS = 1.5 GiB and a 20 s wall clock: no input makes the
    command run out of memory or time; every other promise holds too."""
    check(case, workspaces, base_run, subprocess_=True)


# ----------------------------------------------------------------------------- the harness


def test_the_harness_sees_writes_outside_and_data_loss(workspaces, base_run):
    """Control: a clean command passes, and the checks see what they look for."""
    case = Case(["inspect", BASE_RUN, "--json"], base_run=True)
    check(case, workspaces, base_run)
    with workspaces() as root:
        materialize(case, root, base_run)
        before = snapshot(root)
        (root / "stray.txt").write_text("x")
        (root / CKPT / "last.npz").write_bytes(b"gone")
        after = snapshot(root)
        result = Result(0, "{}", "")
        problems = broken_promises(case, result, root, before, after)
    assert any("write outside: created stray.txt" in p for p in problems), problems
    assert any(p.startswith("data loss: changed logs/base/checkpoints/last.npz") for p in problems)
    bad = broken_promises(case, Result(1, "", "Traceback (most recent call last):\nKeyError: 'x'"),
                          root, {}, {})  # fmt: skip
    assert "traceback: KeyError: 'x'" in bad and any(p.startswith("exit code 1") for p in bad)


def test_the_harness_bounds_a_subprocess(tmp_path):
    """Control: the subprocess really is bounded (a 4 GiB allocation fails)."""
    code = "import numpy; numpy.ones(1 << 29)"
    proc = subprocess.run([sys.executable, "-c", code], preexec_fn=_limit_memory,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode != 0 and "MemoryError" in proc.stderr
