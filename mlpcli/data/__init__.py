"""Host NumPy arrays ready for training: built-in datasets, data files, split and statistics.

Everything here runs on the host. Features stay raw: `load_dataset` only fits their mean and
std on the training rows, and the trainer standardizes each batch it gathers, so a `.npy`
file larger than memory can stay on disk as a read-only memory map. Every fault in what the
user gave us (config keys, data files) is a `DataError` whose message names the key, or the
file with its line and column, or the array key at fault. Only regular files are opened, and
nothing is read, inflated or allocated past what a file's header or the free memory allows.

Modules, each importing only those listed above it:

- `_common`: helpers they share (messages, row blocks, casts, reading a file's bytes within
  bounds: `_open_file`, `_Bounded`)
- `dataset`: `Dataset`, `data_digest` (its checksum) and the records readers exchange
- `builtin`: the built-in (generated) datasets
- `idx`, `sniff`, `npy`: IDX files; recognising a file's format; .npy data (and .npz members)
- `csv`, `arrays`: the readers of CSV files and of .npy / .npz files (memory maps)
- `preprocess`: what is fitted on the training split: the encoding of CSV columns
  (categories, missing cells) and standardization
- `weights`: `train.class_weight` resolved against the training labels (`class_weights`)
- `load`: the entry points, the validation split, and `_reader`, the one dispatcher
"""

from mlpcli.data.builtin import DATASETS, TRIANGLE, describe_datasets
from mlpcli.data.dataset import Dataset, data_digest
from mlpcli.data.load import load_dataset, load_features, load_labeled, prepare, read_inputs
from mlpcli.data.preprocess import Encoding, apply_standardization

__all__ = [
    "DATASETS",
    "TRIANGLE",
    "Dataset",
    "Encoding",
    "apply_standardization",
    "data_digest",
    "describe_datasets",
    "load_dataset",
    "load_features",
    "load_labeled",
    "prepare",
    "read_inputs",
]
