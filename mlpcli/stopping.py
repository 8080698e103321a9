"""SIGINT and SIGTERM, from the first instant a command may write anything.

A `StopRequest` holds the handlers for as long as it is entered. Until the run folder is
claimed it stops the command at once (`Interrupted`, with nothing written); from then on
(`defer()`) it only records the signal, and the training loop stops at the end of the
current step, saves a resumable `last.npz` and raises `Interrupted`. A second signal
changes nothing: the save in progress is atomic and completes.
"""

from __future__ import annotations

import signal
from typing import Any

from mlpcli.errors import Interrupted

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_process_ends_with_command = False


def process_ends_with_command() -> None:
    """Declare that this process ends when the command does (the `mlpcli` program, not a
    caller in Python): once a stop request is over, further signals are ignored, so that a
    late Ctrl-C cannot break the error message or the exit handlers with a traceback."""
    global _process_ends_with_command
    _process_ends_with_command = True


class StopRequest:
    """The signal that asked this process to stop (`signum`), once one has."""

    def __init__(self, deferred: bool = True):
        self.signum: int | None = None
        self.deferred = deferred
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, signal.SIG_IGN if _process_ends_with_command else handler)
        self._previous = {}

    def defer(self) -> None:
        """From now on record signals instead of stopping at once: the command is about to
        write a run folder, which must end whole (a resumable checkpoint)."""
        self.deferred = True

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is None:
            self.signum = signum
            if not self.deferred:  # nothing written yet: stop right here
                raise Interrupted(signum, None, 0, 0)
