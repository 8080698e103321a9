"""The user's mistakes: one family, printed by the CLI as one `error:` line with exit code 2.

Also the one "did you mean" every message that names a choice uses.
"""

from __future__ import annotations

import difflib
import signal
from collections.abc import Iterable


class MlpcliError(Exception):
    """A mistake in what the user gave us (arguments, config, data, checkpoint)."""

    exit_code = 2


class ConfigError(MlpcliError):
    """A config file or `--set` override is invalid."""


class DataError(MlpcliError):
    """A data file or built-in dataset request is invalid."""


class CheckpointError(MlpcliError):
    """A checkpoint is missing, damaged, foreign or does not fit the config."""


class BackendError(MlpcliError):
    """The requested device cannot be used."""


class RunError(MlpcliError):
    """Training could not go on (e.g. the loss diverged); exit code 1."""

    exit_code = 1


class Interrupted(MlpcliError):
    """Stopped by SIGINT / SIGTERM: after saving a resumable checkpoint at `path`, or (no
    path) before anything was written. Exit code 128 + the signal: 130, 143."""

    def __init__(self, signum: int, path: object, step: int, epoch: int):
        name = signal.Signals(signum).name
        if path is None:
            message = f"stopped by {name} before training started; nothing was written"
        else:
            message = (
                f"stopped by {name} at step {step} (epoch {epoch}); "
                f"resume with: mlpcli resume {path}"
            )
        super().__init__(message)
        self.exit_code = 128 + int(signum)


def closest(word: object, choices: Iterable[object]) -> str | None:
    """The choice closest to `word` when one is close enough to be a likely typo, else None.

    A word that begins exactly one choice is taken as that choice cut short ("val/acc")."""
    names = [str(c) for c in choices]
    word = str(word)
    started = [c for c in names if word and c.startswith(word) and c != word]
    if len(started) == 1:
        return started[0]
    match = difflib.get_close_matches(word, names, n=1, cutoff=0.6)
    return match[0] if match else None
