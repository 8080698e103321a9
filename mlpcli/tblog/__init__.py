"""TensorBoard logs, the only package that imports tensorboardX.

`writer` holds `TBLogger`, through which the trainer logs, and the import of tensorboardX
without PyTorch; `graph` builds the model's GraphDef for the Graphs tab; `events` cuts a run's
event files back to a step on resume (`truncate_events`); `crc32c` is the vectorised CRC that
checks their records. Imports point one way: writer -> events -> crc32c, and graph -> writer
for that import only. tensorboardX itself is imported on first use, not with this package.
"""

from mlpcli.tblog.events import EVENT_GLOB, truncate_events
from mlpcli.tblog.graph import graph_def
from mlpcli.tblog.writer import TBLogger

__all__ = ["EVENT_GLOB", "TBLogger", "graph_def", "truncate_events"]
