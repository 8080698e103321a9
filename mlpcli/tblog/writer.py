"""The run's TensorBoard writer: `TBLogger`, what the trainer logs through, and
`_summary_writer_class`, the import of tensorboardX without PyTorch (graph.py calls it too).
Opening a logger first cuts the run's event files back to the resumed step (events.py).
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import numpy as np

from mlpcli.tblog.events import truncate_events
from mlpcli.visualize import encode_png


class TBLogger:
    """Scalars, text and histograms for one run folder, x-axis the global optimizer step."""

    def __init__(self, run_dir: str | Path, start_step: int = 0):
        SummaryWriter = _summary_writer_class()

        # Resuming from `start_step`: steps after it written by an earlier attempt go from the
        # files themselves. The purge event below hides them from TensorBoard only, and only
        # when it reads the files in order; tbparse shows them. Resuming from a step-0
        # checkpoint needs this too; on a fresh run folder there are no event files to read.
        truncate_events(run_dir, start_step)
        # tensorboardX names files `events.out.tfevents.{second}.{host}{suffix}`, and readers
        # load a folder's files in name order. The suffix keeps two writers opening one folder
        # in the same second apart (else they share, and truncate, one file) and in creation
        # order: nanoseconds, zero-padded so that they sort as numbers.
        suffix = f".{time.time_ns():020d}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        # The purge/START event is written on fresh runs too: readers then agree that any
        # step after `start_step` seen earlier in the folder is superseded by this file.
        self._writer = SummaryWriter(
            str(run_dir), purge_step=start_step + 1, filename_suffix=suffix, flush_secs=10
        )

    def scalar(self, tag: str, value: float, step: int) -> None:
        self._writer.add_scalar(tag, float(value), step)

    def text(self, tag: str, text: str, step: int) -> None:
        self._writer.add_text(tag, text, step)

    def histogram(self, tag: str, values, step: int) -> None:
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
        self._writer._get_file_writer().add_summary(summary, step)

    def graph(self, graph) -> None:
        """A GraphDef (see `graph_def`) for the Graphs tab: an Event's `graph_def` bytes, as
        tensorboardX's add_onnx_graph writes it (its add_graph needs torch). Step 0."""
        from tensorboardX.proto.event_pb2 import Event

        self._writer._get_file_writer().add_event(Event(graph_def=graph.SerializeToString()))

    def hparams(self, params: dict, metrics: dict, step: int) -> None:
        """Hyperparameters and final metrics for the HParams tab, in the run's `hparams`
        folder: one fixed name, so a resumed run adds to it instead of making a new run."""
        self._writer.add_hparams(params, metrics, name="hparams", global_step=step)

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


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
