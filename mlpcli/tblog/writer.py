"""The run's TensorBoard writer: `TBLogger`, what the trainer logs through, and
`_summary_writer_class`, the import of tensorboardX without PyTorch (graph.py calls it too).
Opening a logger first cuts the run's event files back to the resumed step (events.py).

A file-system fault (a full disk, a read-only or vanished folder) becomes one MlpcliError
naming the run folder, whether it strikes here or in tensorboardX's writer thread, whose
death would otherwise print a traceback and then block the next writes forever.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from mlpcli.errors import MlpcliError
from mlpcli.tblog.events import EVENT_GLOB, truncate_events
from mlpcli.visualize import encode_png

_PREFIX = "events.out.tfevents."
HPARAMS_TAGS = "_hparams_/"  # the HParams plugin's tags: session start and end (and experiment)
_thread_errors: dict[int, BaseException] = {}  # writer thread ident -> what ended it
_watched: set[int] = set()


class TBLogger:
    """Scalars, text and histograms for one run folder, x-axis the global optimizer step."""

    def __init__(self, run_dir: str | Path, start_step: int = 0):
        SummaryWriter = _summary_writer_class()
        self.run_dir = Path(run_dir)
        self._events = None
        with self._writing():
            self._open(SummaryWriter, start_step)
        self._events = self._writer._get_file_writer().event_writer
        _watch(self._events._worker)
        _never_block(self._events)

    def _open(self, SummaryWriter, start_step: int) -> None:
        run_dir = self.run_dir
        # Resuming from `start_step`: steps after it written by an earlier attempt go from the
        # files themselves. The purge event below hides them from TensorBoard only, and only
        # when it reads the files in order; tbparse shows them. Resuming from a step-0
        # checkpoint needs this too; on a fresh run folder there are no event files to read.
        # The HParams session goes whatever its step: TensorBoard keeps the first session
        # start and end it reads, so a resumed run's own (new epochs, new lr) must be the only.
        truncate_events(run_dir, start_step, drop=HPARAMS_TAGS)
        # tensorboardX names files `events.out.tfevents.{second}.{host}{suffix}`, and readers
        # load a folder's files in name order. The suffix keeps two writers opening one folder
        # in the same second apart (else they share, and truncate, one file) and in creation
        # order: nanoseconds, zero-padded so that they sort as numbers.
        suffix = f".{time.time_ns():020d}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        # The purge/START event is written on fresh runs too: readers then agree that any
        # step after `start_step` seen earlier in the folder is superseded by this file.
        earlier = sorted(p.name for p in run_dir.glob(EVENT_GLOB))
        self._writer = SummaryWriter(
            str(run_dir), purge_step=start_step + 1, filename_suffix=suffix, flush_secs=10
        )
        _sort_last(run_dir, suffix, earlier)

    @contextmanager
    def _writing(self):
        """Raise the writer thread's fault, or one met here, as one MlpcliError."""
        worker = self._events._worker if self._events is not None else None
        if worker is not None and not worker.is_alive():
            raise self._fault(_thread_errors.get(worker.ident))
        try:
            yield
        except OSError as e:
            raise self._fault(e) from None

    def _fault(self, error: BaseException | None) -> MlpcliError:
        why = getattr(error, "strerror", None) or error or "the writer stopped"
        return MlpcliError(
            f"{self.run_dir}: cannot write TensorBoard events: {why}; "
            "the checkpoints saved so far are unchanged"
        )

    def scalar(self, tag: str, value: float, step: int) -> None:
        with self._writing():
            self._writer.add_scalar(tag, float(value), step)

    def text(self, tag: str, text: str, step: int) -> None:
        with self._writing():
            self._writer.add_text(tag, text, step)

    def histogram(self, tag: str, values, step: int) -> None:
        with self._writing():
            self._writer.add_histogram(tag, values, step)

    def image(self, tag: str, rgb: np.ndarray, step: int) -> None:
        """An (H, W, 3) or (H, W, 4) uint8 image for the Images tab, PNG-encoded here.

        tensorboardX's add_image needs PIL to encode; the Summary is built by hand instead.
        """
        from tensorboardX.proto.summary_pb2 import Summary

        rgb = np.asarray(rgb)
        png = encode_png(rgb)  # checks the shape and dtype
        height, width, channels = rgb.shape
        image = Summary.Image(
            height=height, width=width, colorspace=channels, encoded_image_string=png
        )
        summary = Summary(value=[Summary.Value(tag=tag, image=image)])
        with self._writing():
            self._writer._get_file_writer().add_summary(summary, step)

    def pr_curve(self, tag: str, labels: np.ndarray, scores: np.ndarray, step: int) -> None:
        """A precision-recall curve for the PR Curves tab: 0/1 labels (n,) and the scores
        (n,) in [0, 1] of class 1, at tensorboardX's 127 thresholds."""
        with self._writing():
            self._writer.add_pr_curve(
                tag, np.asarray(labels, dtype=bool), np.asarray(scores, np.float64), step
            )

    def graph(self, graph) -> None:
        """A GraphDef (see `graph_def`) for the Graphs tab: an Event's `graph_def` bytes, as
        tensorboardX's add_onnx_graph writes it (its add_graph needs torch). Step 0."""
        from tensorboardX.proto.event_pb2 import Event

        with self._writing():
            self._writer._get_file_writer().add_event(Event(graph_def=graph.SerializeToString()))

    def session_start(self, hparams: dict, step: int, start_time: float) -> None:
        """The run as a session of TensorBoard's HParams plugin, with its hyperparameters
        (name -> str, bool or number), in the run's own event file: the run folder is the
        session, and its scalars are the metrics the HParams tab shows (their last values).
        Opening the logger removed any earlier session start and end (see `_open`)."""
        from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData, SessionStartInfo

        info = SessionStartInfo(start_time_secs=start_time)
        for name, value in hparams.items():
            if isinstance(value, bool):
                info.hparams[name].bool_value = value
            elif isinstance(value, int | float):
                info.hparams[name].number_value = value
            else:
                info.hparams[name].string_value = str(value)
        self._plugin_summary("session_start_info", HParamsPluginData(session_start_info=info), step)

    def session_end(self, status: str, step: int) -> None:
        """The end of the HParams session: `status` is "success", "failure" or "running"."""
        from tensorboardX.proto.api_pb2 import Status
        from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData, SessionEndInfo

        info = SessionEndInfo(
            status=Status.Value(f"STATUS_{status.upper()}"), end_time_secs=time.time()
        )
        self._plugin_summary("session_end_info", HParamsPluginData(session_end_info=info), step)

    def _plugin_summary(self, name: str, content, step: int) -> None:
        """A summary of the HParams plugin: its data travels in the value's metadata."""
        from tensorboardX.proto.summary_pb2 import Summary, SummaryMetadata

        plugin = SummaryMetadata.PluginData(
            plugin_name="hparams", content=content.SerializeToString()
        )
        value = Summary.Value(tag=HPARAMS_TAGS + name, metadata=SummaryMetadata(plugin_data=plugin))
        with self._writing():
            self._writer._get_file_writer().add_summary(Summary(value=[value]), step)

    def flush(self) -> None:
        with self._writing():
            self._writer.flush()

    def close(self) -> None:
        """Close the files. Never raises: a fault here follows one already reported, or
        loses at most the last unflushed events; the checkpoints are what a run keeps."""
        writers = [self._events] if self._events is not None else []
        all_writers = getattr(self, "_writer", None) and self._writer.all_writers or {}
        writers += [w.event_writer for w in all_writers.values()]
        for events in dict.fromkeys(writers):  # each once, the run's own first
            worker = events._worker
            try:
                if worker is None or worker.is_alive():
                    events.close()
            except Exception:  # noqa: BLE001 - see the docstring
                pass
            if not events._closed:  # its thread died or its flush failed: close the file
                events._closed = True  # as tensorboardX's exit handler then finds it
                with contextlib.suppress(Exception):
                    events._ev_writer.close()


def _watch(worker: threading.Thread) -> None:
    """Keep what ends tensorboardX's writer thread for TBLogger, instead of a traceback."""
    _watched.add(worker.ident)
    if getattr(threading.excepthook, "_mlpcli", False):
        return
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        thread = args.thread
        if thread is not None and thread.ident in _watched:
            _thread_errors[thread.ident] = args.exc_value
            return
        previous(args)

    hook._mlpcli = True  # type: ignore[attr-defined]
    threading.excepthook = hook


def _never_block(events) -> None:
    """Make tensorboardX's bounded event queue give up instead of waiting forever when its
    writer thread has died (a full queue nobody empties): the put raises OSError then."""
    q, worker = events._event_queue, events._worker
    put = q.put

    def guarded_put(item, block=True, timeout=None):
        while True:
            try:
                return put(item, timeout=0.5)
            except queue.Full:
                if not worker.is_alive():
                    error = _thread_errors.get(worker.ident)
                    why = getattr(error, "strerror", None) or str(error or "the writer stopped")
                    raise OSError(getattr(error, "errno", None), why) from None

    q.put = guarded_put


def _sort_last(run_dir: Path, suffix: str, earlier: list[str]) -> None:
    """Rename the new event file, if needed, so that it sorts after every earlier one.

    Readers load a folder's event files in name order, and tensorboardX starts each name
    with the wall clock's second: a clock that stepped back would sort a resumed run's file
    first and make readers drop the steps before it. The order of the files is the order
    they were made in, so the second in the name is raised past the newest one's. (The
    writer keeps its open descriptor: renaming the file does not disturb it.)
    """
    found = list(run_dir.glob(f"{_PREFIX}*{suffix}"))
    if len(found) != 1 or not earlier or found[0].name > earlier[-1]:
        return
    new = found[0]
    second, rest = new.name[len(_PREFIX) :].split(".", 1)
    newest = earlier[-1][len(_PREFIX) :].split(".", 1)[0]
    later = max(int(second), int(newest) + 1) if newest.isdigit() else int(second)
    new.rename(run_dir / f"{_PREFIX}{later:010d}.{rest}")


def _summary_writer_class():
    """tensorboardX's SummaryWriter, imported without PyTorch.

    tensorboardX imports torch at import time when it is installed, only to accept torch
    tensors; mlpcli passes floats and NumPy arrays, and importing torch costs over a second
    at every start. Marking torch as absent for the duration of the import skips it.
    """
    import sys

    if "tensorboardX" in sys.modules or "torch" in sys.modules:
        from tensorboardX import SummaryWriter

        return SummaryWriter
    sys.modules["torch"] = None  # `import torch` now raises ImportError
    try:
        from tensorboardX import SummaryWriter
    finally:
        del sys.modules["torch"]
    return SummaryWriter
