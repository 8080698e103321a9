"""The `.npz` checkpoint: the only module that knows its layout.

A checkpoint is one flat mapping of names to host arrays, saved with `numpy.savez` and
read with `allow_pickle=False`:

    params/{i}/W, params/{i}/b          the model
    optim/{i}/W/{slot}, optim/...       optimizer state; optim/step its step count
    data/x_mean, data/x_std, ...        standardization statistics and class labels
    data/fill                           values of missing numeric CSV cells, per input column
    data/categories/{j}                 the vocabulary of categorical input column j (str)
    meta                                0-d string array holding JSON (format, version,
                                        epoch, step, config, metrics, trainer state)

`pack` turns a `Checkpoint` (the state by meaning) into that flat mapping and `read` turns
a file back into one, checked as untrusted input; no other module spells a key prefix.
The file itself (never pickled, read within bounds, written atomically) is npzfile.py's.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlpcli.errors import CheckpointError, MlpcliError
from mlpcli.npzfile import read_arrays, write_atomic

if TYPE_CHECKING:
    from mlpcli.config import Config

FORMAT = "mlpcli-checkpoint"
VERSION = 1
PARAMS, OPTIM, STATS = "params", "optim", "data"  # the key prefixes of the sections
CATEGORIES = "categories"  # data/categories/{j}: input column j's vocabulary


@dataclass
class Checkpoint:
    """A run's whole state by meaning: what `pack` flattens and `read` hands back."""

    params: dict[str, np.ndarray]  # "0/W" (fan_in, fan_out), "0/b" (fan_out,), ...
    optim: dict[str, np.ndarray]  # "0/W/exp_avg", ..., "step": the optimizer's state_dict
    stats: dict[str, np.ndarray]  # "x_mean", "x_std", "y_mean", "y_std", "classes", "fill", ...
    meta: dict[str, Any]  # epoch, step, config, metrics, progress, feature_names, ...
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # keys of no section
    # input column index (into feature_names) -> its sorted categories, a str array
    categories: dict[int, np.ndarray] = field(default_factory=dict)
    path: Path | None = None

    @property
    def where(self) -> str:
        return str(self.path) if self.path is not None else "checkpoint"

    @property
    def epoch(self) -> int:
        return int(self.meta.get("epoch", 0))

    @property
    def n_features(self) -> int:
        """The model's input width, from the first layer's weights."""
        W = self.params.get("0/W")
        if W is None or W.ndim != 2:
            raise CheckpointError(f"{self.where}: no {PARAMS}/0/W matrix")
        return int(W.shape[0])

    @property
    def progress(self) -> Any:
        """The trainer's position (a dict of train.Progress's fields, when well formed)."""
        return self.meta.get("progress")

    @property
    def feature_names(self) -> list[str]:
        return list(self.meta.get("feature_names") or [])

    def config(self, **validate: Any) -> Config:
        """The resolved config stored in meta, validated again; `validate` goes on to
        `config.validate_dict` (the overrides and options of `resume`)."""
        import copy

        from mlpcli.config import validate_dict
        from mlpcli.errors import ConfigError

        raw = self.meta.get("config")
        if not isinstance(raw, dict):
            raise CheckpointError(f"{self.where}: meta holds no config")
        try:
            return validate_dict(
                copy.deepcopy(raw), where=f"{self.where} (meta.config)", **validate
            )
        except ConfigError as e:
            if validate:  # a fault in the user's overrides, already named by them
                raise
            raise CheckpointError(str(e)) from None


def pack(state: Checkpoint) -> dict[str, np.ndarray]:
    """The flat name -> host array mapping of a checkpoint, without `meta`."""
    return {
        **prefixed(PARAMS, state.params),
        **prefixed(OPTIM, state.optim),
        **prefixed(STATS, {k: v for k, v in state.stats.items() if v is not None}),
        **prefixed(f"{STATS}/{CATEGORIES}", {str(j): v for j, v in state.categories.items()}),
        **state.extra,
    }


def write(paths: list[Path], state: Checkpoint) -> None:
    """Write `state` to every path in `paths`, atomically, as one file and hard links."""
    save_many(paths, pack(state), state.meta)


def in_run_folder(path: str | Path, resume: bool = False) -> Path:
    """`path` itself, or for a run folder its checkpoint: `last.npz` to resume from, else
    `best.npz` (`last.npz` when the run kept no best)."""
    path = Path(path)
    if not path.is_dir():
        return path
    names = ("last.npz",) if resume else ("best.npz", "last.npz")
    for name in names:
        if (path / "checkpoints" / name).is_file():
            return path / "checkpoints" / name
    raise CheckpointError(
        f"{path}: is a directory, not a checkpoint; a run folder holds checkpoints/last.npz"
    )


def run_folder_of(checkpoint: Path) -> Path:
    """The run folder a checkpoint belongs to (the folder above `checkpoints/`), found
    without following links."""
    checkpoint = Path(os.path.abspath(checkpoint))
    if checkpoint.parent.name != "checkpoints":
        raise CheckpointError(
            f"{checkpoint}: not inside a run folder's checkpoints/ folder, so there is no run "
            "to continue; copy it to RUN/checkpoints/ first"
        )
    return checkpoint.parent.parent


def read(path: str | Path) -> Checkpoint:
    """A checkpoint file by meaning, its meta and arrays checked as untrusted input: every
    fault is a CheckpointError naming the file."""
    path = Path(path)
    arrays, meta = load(path)
    fields = {"params": PARAMS, "optim": OPTIM, "stats": STATS}
    extra = {k: v for k, v in arrays.items() if k.split("/", 1)[0] not in fields.values()}
    sections = {name: section(arrays, prefix) for name, prefix in fields.items()}
    vocab = section(sections["stats"], CATEGORIES)
    for name in vocab:
        del sections["stats"][f"{CATEGORIES}/{name}"]
    categories = {_column_index(name, str(path)): v for name, v in vocab.items()}
    state = Checkpoint(**sections, meta=meta, extra=extra, path=path, categories=categories)
    _check_meta(meta, str(path))
    for j, v in categories.items():
        what = f"{path}: {STATS}/{CATEGORIES}/{j}"
        if v.dtype.kind != "U" or v.ndim != 1 or len(v) == 0:
            raise CheckpointError(f"{what} must be a non-empty 1-d string array")
        if not (v[1:] > v[:-1]).all():
            raise CheckpointError(f"{what} must be sorted, each category once")
    for prefix, arrays in ((PARAMS, state.params), (OPTIM, state.optim)):
        for name, a in arrays.items():
            check_finite(a, f"{path}: {prefix}/{name}")
    for name, a in state.stats.items():
        if name != "classes":
            check_finite(a, f"{path}: {STATS}/{name}")
    return state


def _column_index(name: str, where: str) -> int:
    """j of a data/categories/{j} key: a plain decimal number."""
    if not name.isdigit() or not name.isascii() or str(int(name)) != name:
        raise CheckpointError(f"{where}: {STATS}/{CATEGORIES}/{name} is not a column number")
    return int(name)


# meta fields: name -> (the types it may hold, whether a checkpoint must have it)
_META = {
    "epoch": (int, True),
    "step": (int, True),
    "config": (dict, True),
    "metrics": (dict, False),
    "progress": (dict, False),
    "feature_names": (list, False),
    "data_digest": (str, False),
    "task": (str, False),
}


def _check_meta(meta: dict, where: str) -> None:
    """Types and ranges of the meta fields mlpcli reads."""
    for key, (kind, required) in _META.items():
        value = meta.get(key)
        if value is None:
            if required or key in meta:
                raise CheckpointError(f"{where}: meta.{key} is missing")
            continue
        if not isinstance(value, kind) or isinstance(value, bool):
            raise CheckpointError(
                f"{where}: meta.{key} must be {kind.__name__}, got {type(value).__name__}"
            )
    for key in ("epoch", "step"):
        if not 0 <= meta[key] < 2**63:
            raise CheckpointError(f"{where}: meta.{key} is {meta[key]}, out of range")
    for name, value in (meta.get("metrics") or {}).items():
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise CheckpointError(f"{where}: meta.metrics.{name} is not a number")
    if not all(isinstance(n, str) for n in meta.get("feature_names") or []):
        raise CheckpointError(f"{where}: meta.feature_names must be a list of names")


def check_finite(a: np.ndarray, what: str) -> None:
    """A CheckpointError unless `a` is numeric and every value finite."""
    if a.dtype.kind not in "iuf":
        raise CheckpointError(f"{what} is not numeric (dtype {a.dtype})")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise CheckpointError(f"{what} holds NaN or infinite values")


def check_against(state: Checkpoint, config: Config) -> None:
    """The stored statistics, class labels, feature names and vocabularies fit the model of
    `config`."""
    n_features, n_out = state.n_features, config.model.layers[-1].units
    want = {"x_mean": n_features, "x_std": n_features}
    names = state.feature_names
    if "fill" in state.stats or state.categories:
        # inputs: one per numeric column, one per category of a categorical one
        width = len(names) + sum(len(v) - 1 for v in state.categories.values())
        outside = [j for j in state.categories if j >= len(names)]
        if outside:
            raise CheckpointError(
                f"{state.where}: {STATS}/{CATEGORIES}/{outside[0]} names no input column "
                f"(meta.feature_names has {len(names)})"
            )
        if width != n_features:
            raise CheckpointError(
                f"{state.where}: the input columns and their categories make {width} inputs, "
                f"the model has {n_features}"
            )
        want["fill"] = len(names)
    if config.task == "regression":
        want.update(y_mean=n_out, y_std=n_out)
    else:
        want["classes"] = 2 if config.loss == "binary_cross_entropy" else n_out
        if config.train.class_weight is not None:
            want["class_weight"] = want["classes"]
    for name, a in state.stats.items():
        if name not in want:
            raise CheckpointError(
                f"{state.where}: {STATS}/{name} does not belong to a {config.task} model"
            )
        if a.shape != (want[name],):
            need = (want[name],)
            raise CheckpointError(
                f"{state.where}: {STATS}/{name} has shape {a.shape}, the model needs {need}"
            )
    for mean, std in (("x_mean", "x_std"), ("y_mean", "y_std")):
        if (mean in state.stats) != (std in state.stats):
            raise CheckpointError(f"{state.where}: {STATS}/{mean} and {STATS}/{std} go together")
    if config.task == "classification" and "classes" not in state.stats:
        raise CheckpointError(f"{state.where}: {STATS}/classes is missing")
    if "class_weight" in want and "class_weight" not in state.stats:
        raise CheckpointError(f"{state.where}: {STATS}/class_weight is missing")
    if "class_weight" in state.stats and (state.stats["class_weight"] <= 0).any():
        raise CheckpointError(f"{state.where}: {STATS}/class_weight holds a weight <= 0")
    std = [state.stats[k] for k in ("x_std", "y_std") if k in state.stats]
    if any((s <= 0).any() for s in std):
        raise CheckpointError(f"{state.where}: a stored standard deviation is not positive")
    if names and len(names) != n_features and not state.categories:
        raise CheckpointError(
            f"{state.where}: meta.feature_names has {len(names)} names for {n_features} features"
        )


def save_many(paths: list[str | Path], arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Write one checkpoint to every path in `paths`, each atomically, as one file and hard
    links (so last.npz and best.npz cost no second write)."""
    meta = {"format": FORMAT, "version": VERSION, **meta}
    write_atomic(paths, {**arrays, "meta": np.array(json.dumps(meta, sort_keys=True))})


def save(path: str | Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Write arrays and meta to `path` atomically."""
    save_many([path], arrays, meta)


def load(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a checkpoint: (arrays without meta, meta). Any fault is a CheckpointError."""
    path = Path(path)
    arrays = read_arrays(path, str(path))
    return arrays, _meta(arrays.pop("meta", None), str(path))


def read_meta(path: str | Path) -> dict[str, Any]:
    """A checkpoint's meta record alone (epoch, step, metrics, progress), without reading
    its arrays: cheap enough to follow a run that is writing it."""
    path = Path(path)
    return _meta(read_arrays(path, str(path), prefix="meta").get("meta"), str(path))


def _meta(meta_array: np.ndarray | None, where: str) -> dict[str, Any]:
    if meta_array is None or meta_array.shape != () or meta_array.dtype.kind != "U":
        raise CheckpointError(f"{where}: not an mlpcli checkpoint (no `meta` record)")
    try:
        meta = json.loads(str(meta_array))
    except (json.JSONDecodeError, RecursionError) as e:
        raise CheckpointError(f"{where}: damaged `meta` record ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{where}: not an mlpcli checkpoint (meta.format is not {FORMAT})")
    if not isinstance(meta.get("version"), int) or meta["version"] > VERSION:
        raise CheckpointError(
            f"{where}: checkpoint version {meta.get('version')} is newer than this mlpcli reads"
        )
    return meta


def section(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """The arrays under `prefix/`, with the prefix removed."""
    cut = len(prefix) + 1
    return {k[cut:]: v for k, v in arrays.items() if k.startswith(prefix + "/")}


def prefixed(prefix: str, arrays: dict[str, Any]) -> dict[str, Any]:
    """`arrays` with `prefix/` put before each name."""
    return {f"{prefix}/{k}": v for k, v in arrays.items()}


def load_params(path: str | Path) -> dict[str, np.ndarray]:
    """`params/{i}/W`, `params/{i}/b` from any npz (a checkpoint or the user's own file)."""
    path = Path(path)
    arrays = read_arrays(path, f"model.init_from: {path}", prefix=PARAMS + "/")
    params = section(arrays, PARAMS)
    for name, a in params.items():
        check_finite(a, f"{path}: {PARAMS}/{name}")
    return params


def param_key(name: str) -> str:
    """The checkpoint key of parameter `name` ("0/W" -> "params/0/W")."""
    return f"{PARAMS}/{name}"


def check_params(params: dict[str, Any], shapes: dict[str, tuple], where: str) -> None:
    """Raise CheckpointError naming each missing key and each shape mismatch."""
    problems = []
    for name, shape in shapes.items():
        layer, kind = name.split("/")
        if name not in params:
            problems.append(f"layer {layer}: no {PARAMS}/{name}")
        elif tuple(params[name].shape) != shape:
            problems.append(
                f"layer {layer}: {PARAMS}/{name} has shape {tuple(params[name].shape)}, "
                f"the config needs {shape}"
            )
    if problems:
        raise CheckpointError(f"{where}: " + "; ".join(problems))


def shapes(state: Checkpoint) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """(parameter key -> shape, every other array's key -> shape), as the file names them."""
    flat = {k: list(v.shape) for k, v in pack(state).items()}
    params = {k: v for k, v in flat.items() if k.startswith(PARAMS + "/")}
    return params, {k: v for k, v in flat.items() if k not in params}


def rotate(directory: Path, keep_last: int) -> None:
    """Delete all but the newest `keep_last` epoch-NNNN.npz files."""
    files = sorted(directory.glob("epoch-*.npz"))
    for old in files[: max(len(files) - keep_last, 0)]:
        try:
            old.unlink(missing_ok=True)
        except OSError as e:
            raise MlpcliError(f"cannot remove old checkpoint {old}: {e.strerror or e}") from None
