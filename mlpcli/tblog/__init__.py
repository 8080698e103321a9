"""TensorBoard logs, the only package that imports tensorboardX.

`writer` holds `TBLogger`, through which the trainer logs (scalars, images, the HParams
session), and the import of tensorboardX without PyTorch; `graph` builds the model's GraphDef
for the Graphs tab; `events` cuts a run's event files back to a step on resume
(`truncate_events`) and reads values back (`read_scalars`, `first_wall_time`); `crc32c` is the
vectorised CRC that checks their records. Imports point one way: writer -> events -> crc32c,
and graph -> writer for that import only. tensorboardX itself is imported on first use, not
with this package.
"""

from mlpcli.tblog.events import EVENT_GLOB, first_wall_time, read_scalars, truncate_events
from mlpcli.tblog.graph import graph_def
from mlpcli.tblog.writer import HPARAMS_TAGS, TBLogger

__all__ = [
    "EVENT_GLOB",
    "HPARAMS_TAGS",
    "TBLogger",
    "first_wall_time",
    "graph_def",
    "read_scalars",
    "truncate_events",
]
