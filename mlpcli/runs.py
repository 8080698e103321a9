"""Starting and resuming runs: from a config file, or from a checkpoint, to a finished `Run`
in its run folder. The command line calls one function of this module per command.

A run folder is made only once the config, the device and the data have all checked out,
so a failed start leaves nothing behind. `resume` continues in the checkpoint's own folder
and may change only what does not change the model or the meaning of a step (RESUMABLE).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from mlpcli import checkpoint as ckpt
from mlpcli import memory, paths
from mlpcli.backend import get_backend
from mlpcli.config import Config, load_config, parse_override, to_yaml
from mlpcli.data import data_digest, prepare
from mlpcli.data.preprocess import stored_encoding
from mlpcli.errors import (
    BackendError,
    CheckpointError,
    ConfigError,
    DataError,
    MlpcliError,
    RunError,
)
from mlpcli.paths import RunLock, check_run_name
from mlpcli.progress import Progress
from mlpcli.stopping import StopRequest
from mlpcli.train import Run

# Keys `resume --set` may change: none of them changes the model, its data or the meaning
# of a step. Anything else (model, loss, data, seed, dtype, batch size...) is refused.
RESUMABLE = (
    "name",
    "device",
    "data.stream",
    "train.epochs",
    "train.shuffle",
    "train.clip_grad_norm",
    "train.early_stopping",
    "logging",
    "checkpoint",
    "optimizer",
    "schedule",
)


def train(
    config_path: str | Path,
    reporter: Any,
    *,
    overrides: list[str] | None = None,
    options: dict[str, tuple[str, Any]] | None = None,
    name: str | None = None,
) -> Progress:
    """Train a new run of the config file, with `--set` overrides and option values."""
    if name is not None:
        check_run_name(name, "--name")
    with StopRequest(deferred=False) as stop:  # a signal stops at once: nothing written yet
        config = load_config(config_path, overrides, options)
        backend = get_backend(config.device)
        data = prepare(config, str(config_path))
        with memory.on_device(backend):  # the data and model may not fit on the GPU
            run = Run(config, data, reporter, backend, stop=stop)
        stop.defer()  # from here on a stop ends with a resumable checkpoint
        with claim_folder(config, name, run.comm) as run_dir:
            try:
                with memory.on_device(backend):
                    return run.fit(run_dir)
            except (RunError, BackendError) as e:  # diverged, or out of GPU memory
                _clear_unsaved(run, run_dir, e)
                raise


def _clear_unsaved(run: Run, run_dir: Path, error: MlpcliError) -> None:
    """A new run that diverged (or ran out of GPU memory) before its first checkpoint
    leaves nothing behind that would block a rerun under the same name."""
    if run.comm.rank != 0 or any((run_dir / "checkpoints").glob("*.npz")):
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    error.args = (f"{error}; nothing had been saved, so run folder {run_dir} was removed",)


@contextmanager
def claim_folder(config: Config, name: str | None, comm: Any) -> Iterator[Path]:
    """The new run's folder, locked, with its config.yaml; made by the first process alone
    (under MPI), and its path handed to every process."""
    with ExitStack() as stack:
        run_dir = None
        if comm.rank == 0:
            run_dir = run_folder(config, name)
            stack.enter_context(RunLock(run_dir))
            if _holds_a_run(run_dir):  # another process claimed it since run_folder looked
                raise MlpcliError(f"--name: run folder {run_dir} was taken by another run")
            paths.write_text(run_dir / "config.yaml", to_yaml(config), "logging.logdir")
        yield Path(comm.broadcast_text(str(run_dir) if run_dir else None))


def run_folder(config: Config, name: str | None) -> Path:
    """A new run folder under logging.logdir; an existing non-empty one is an error."""
    logdir = Path(config.logging.logdir)
    path = paths.new_folder(logdir, config.name, name, "run folder", "resume from its checkpoint")
    try:
        (path / "checkpoints").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MlpcliError(f"logging.logdir: cannot create run folder {path}: {e}") from None
    return path


def _holds_a_run(folder: Path) -> bool:
    return any(p.name != "checkpoints" for p in folder.iterdir()) or any(
        (folder / "checkpoints").iterdir()
    )


def resume(
    path: str | Path,
    reporter: Any,
    *,
    epochs: int | None = None,
    overrides: list[str] | None = None,
    device: str | None = None,
) -> Progress:
    """Continue the run of checkpoint `path` (or of run folder `path`) in its own run
    folder, exactly."""
    with StopRequest(deferred=False) as stop:  # a signal stops at once: nothing written yet
        return _resume(path, reporter, stop, epochs, overrides, device)


def _resume(
    path: str | Path,
    reporter: Any,
    stop: StopRequest,
    epochs: int | None,
    overrides: list[str] | None,
    device: str | None,
) -> Progress:
    state = ckpt.read(ckpt.in_run_folder(path, resume=True))
    if state.path.is_symlink():
        raise CheckpointError(
            f"{state.path}: is a symbolic link; resume continues a run from its own "
            "checkpoint, never through a link into another run"
        )
    run_dir = ckpt.run_folder_of(state.path)
    inside = run_dir / "checkpoints"
    if inside.is_symlink():
        raise CheckpointError(
            f"{inside}: is a symbolic link; resume writes only inside its run folder"
        )
    config = resume_config(state, overrides, epochs, device)
    ckpt.check_against(state, config)
    backend = get_backend(config.device)
    data = prepare(config, f"{state.where} (meta.config)", stored_encoding(state))
    stored = state.meta.get("data_digest")
    if stored not in (None, data_digest(data)):
        raise DataError(
            f"data: {data.source} is not the data this checkpoint was trained on "
            f"({stored}, now {data_digest(data)}); exact resume needs the same data"
        )
    with memory.on_device(backend):
        run = Run(config, data, reporter, backend, state=state, stop=stop)
    run.progress.stopped_early = False  # asked to go on: early stopping judges anew
    stop.defer()  # from here on a stop ends with a resumable checkpoint
    with RunLock(run_dir) if run.comm.rank == 0 else nullcontext(), memory.on_device(backend):
        return run.fit(run_dir)


def resume_config(
    state: ckpt.Checkpoint, overrides: list[str] | None, epochs: int | None, device: str | None
) -> Config:
    """The checkpoint's config with the allowed overrides of `mlpcli resume` applied."""
    for item in overrides or []:
        key, _ = parse_override(item)
        if key.startswith("optimizer.name") or not any(
            key == allowed or key.startswith(allowed + ".") for allowed in RESUMABLE
        ):
            raise ConfigError(
                f"--set {key}: cannot change when resuming (it changes the model, its data or "
                "its optimizer state); start a new run with `mlpcli train` instead"
            )
    config = state.config(
        overrides=overrides,
        options={"train.epochs": ("--epochs", epochs), "device": ("--device", device)},
    )
    done = state.epoch
    if config.train.epochs <= done:
        flag = "--epochs" if epochs is not None else "train.epochs"
        raise ConfigError(
            f"{flag}: the checkpoint has {done} epochs done; give a larger total to go on "
            f"(e.g. --epochs {done + config.train.epochs if epochs is None else done + 1})"
        )
    return config
