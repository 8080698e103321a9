"""Where mlpcli may write, and how: run names, the one lock per run folder, and the one
file an `--output` / `-o` option names.

The containment promise (SPEC, Run folder): a run folder is a direct child of `logdir`
named by one plain path component; nothing is written outside it except the file an
`--output` names; that file is never one of the command's own inputs nor a file inside
a run folder, and an existing one is replaced only with `--force`, atomically.
"""

from __future__ import annotations

import fcntl
import os
import unicodedata
import uuid
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from mlpcli.errors import MlpcliError

NAME_MAX = 255  # bytes in one path component on Linux and macOS file systems


def run_name_problem(name: str) -> str | None:
    """Why `name` cannot name a run folder, or None when it is one plain path component."""
    if not isinstance(name, str) or not name.strip():
        return "must be a folder name, got an empty name"
    if name in (".", ".."):
        return f"must be a plain folder name, got {name!r}"
    if "/" in name or (os.altsep and os.altsep in name) or os.sep in name:
        return f"must be one folder name without '/', got {name!r}"
    if any(unicodedata.category(c) == "Cc" for c in name):
        return f"must not hold control characters, got {name!r}"
    if len(name.encode("utf-8", "surrogatepass")) > NAME_MAX:
        return f"must be at most {NAME_MAX} bytes long, got {len(name.encode())} bytes"
    return None


def check_run_name(name: str, where: str) -> str:
    """`name`, or an MlpcliError naming `where` (`--name`, the config's `name`)."""
    problem = run_name_problem(name)
    if problem:
        raise MlpcliError(f"{where}: {problem}")
    return name


def is_run_folder(folder: Path) -> bool:
    """Whether `folder` looks like a run folder (it holds checkpoints/ and a config.yaml
    or TensorBoard event files)."""
    try:
        if not (folder / "checkpoints").is_dir():
            return False
        return (folder / "config.yaml").exists() or any(folder.glob("events.out.tfevents.*"))
    except OSError:
        return False


def output_file(path: Path, *, flag: str, inputs: Iterable[Path] = (), force: bool = False) -> Path:
    """Check that `path` may receive a command's output: not one of its `inputs`, not inside
    a run folder, not an existing file unless `force`, and in a folder that exists."""
    path = Path(path)
    target = Path(os.path.abspath(path))
    if target.exists() or target.is_symlink():
        if target.is_dir():
            raise MlpcliError(f"{flag}: {path} is a directory; give a file name")
        for given in inputs:
            try:
                same = os.path.samefile(target, given)
            except OSError:
                same = False
            if same:
                raise MlpcliError(
                    f"{flag}: {path} is one of this command's inputs; choose another file"
                )
    for folder in [target.parent, *target.parent.parents]:
        if is_run_folder(folder):
            raise MlpcliError(
                f"{flag}: {path} is inside run folder {folder}; mlpcli writes nothing there "
                "but its own run's files: choose a file outside it"
            )
    if (target.exists() or target.is_symlink()) and not force:
        raise MlpcliError(f"{flag}: {path} already exists (use --force to overwrite it)")
    if not target.parent.is_dir():
        raise MlpcliError(f"{flag}: folder {path.parent} does not exist")
    return path


def temp_beside(path: Path) -> Path:
    """A fresh hidden name beside `path` for an atomic write (never matched by `*.npz`,
    `epoch-*.npz` or event-file globs, and ignored when a crash leaves it behind)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def write_text(path: Path, text: str, flag: str) -> None:
    """Write `text` to `path` atomically (a temporary file beside it, then a rename), so a
    failure never leaves a half-written or truncated file where a good one was."""
    path = Path(path)
    tmp = temp_beside(path)
    try:
        with open(tmp, "x", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise MlpcliError(f"{flag}: cannot write {path}: {e.strerror or e}") from None
    finally:
        tmp.unlink(missing_ok=True)


class RunLock:
    """An exclusive lock on a run folder for as long as a process trains in it.

    `flock` on the folder itself: the kernel releases it when the process ends, however it
    ends, so a `kill -9` never leaves a stale lock, and nothing is added to the folder.
    """

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        try:
            fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as e:
            raise MlpcliError(f"{self.folder}: cannot open the run folder: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise MlpcliError(
                f"{self.folder}: in use by another mlpcli process (train or resume); "
                "wait for it to finish or stop it first"
            ) from None
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor releases the lock
            self._fd = None


def new_folder(logdir: Path, prefix: str, name: str | None, kind: str, taken: str) -> Path:
    """Where a new run or sweep (`kind`: "run folder", "sweep folder") goes, not yet made:
    logdir/name, which may exist only as an empty folder, or logdir/prefix-YYYYmmdd-HHMMSS
    (with -2, -3, ... after it when another started in the same second). `taken` says what
    to do about a name in use; "{path}" in it stands for the folder."""
    if name is not None:
        path = logdir / check_run_name(name, "--name")
        if path.is_symlink():
            raise MlpcliError(f"--name: {path} is a symbolic link; a {kind} is a real folder")
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            what = "is not empty" if path.is_dir() else "is a file"
            raise MlpcliError(
                f"--name: {kind} {path} already exists and {what}; "
                f"choose another name or {taken.format(path=path)}"
            )
        return path
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    prefix = check_run_name(prefix, "name")
    check_run_name(f"{prefix}-{stamp}-99", "name")  # the folder's name must fit too
    path = logdir / f"{prefix}-{stamp}"
    n = 1
    while path.exists():
        n += 1
        path = logdir / f"{prefix}-{stamp}-{n}"
    return path
