"""Shared test helpers: configs, runs and CLI calls in a temporary folder."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import yaml

from mlpcli import checkpoint
from mlpcli.cli import main

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run `mlpcli ARGS` in-process: (exit code, stdout, stderr)."""
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    out = capsys.readouterr()
    return code, out.out, out.err


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def small_config(**changes) -> dict:
    """A quick triangle classifier; keyword arguments replace whole sections."""
    config = {
        "name": "small",
        "seed": 0,
        "data": {"source": "triangle", "options": {"n_samples": 300}, "val_split": 0.2},
        "model": {
            "layers": [
                {"units": 8, "activation": "tanh", "dropout": 0.1},
                {"units": 2, "activation": "softmax"},
            ]
        },
        "loss": "cross_entropy",
        "optimizer": {"name": "adam", "lr": 0.01},
        "schedule": {"name": "cosine", "warmup_epochs": 1},
        "train": {"epochs": 3, "batch_size": 32},
        "logging": {"every_n_steps": 3},
        "checkpoint": {"every_n_epochs": 1, "keep_last": 2},
    }
    config.update(changes)
    return config


def only_run(logdir: Path) -> Path:
    runs = [p for p in Path(logdir).iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def load_last(run: Path, name: str = "last.npz") -> tuple[dict[str, np.ndarray], dict]:
    return checkpoint.load(run / "checkpoints" / name)


def assert_same_checkpoints(a_path: Path, b_path: Path) -> None:
    """Two checkpoints hold the same arrays, bit for bit and dtype for dtype, and the same
    position, metrics and progress."""
    a, meta_a = checkpoint.load(a_path)
    b, meta_b = checkpoint.load(b_path)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert np.array_equal(a[key], b[key]), key
    assert (meta_a["epoch"], meta_a["step"]) == (meta_b["epoch"], meta_b["step"])
    assert meta_a["metrics"] == meta_b["metrics"]
    assert meta_a["progress"] == meta_b["progress"]


def user_error(result: tuple[int, str, str], *fragments: str, warnings_ok: bool = False) -> str:
    """Check the contract for a user's mistake and return its `error:` line: exit code 2,
    stderr one `error:` line (and `warning:` lines if `warnings_ok`) holding every fragment,
    and no traceback anywhere."""
    code, out, err = result
    lines = [line for line in err.splitlines() if line.strip()]
    if warnings_ok:
        lines = [line for line in lines if not line.startswith("warning: ")]
    problems = []
    if "Traceback" in out + err:
        problems.append("a traceback was printed")
    if code != 2:
        problems.append(f"exit code {code}, expected 2")
    if len(lines) != 1:
        problems.append(f"{len(lines)} non-empty lines on stderr, expected 1")
    line = lines[0] if lines else ""
    if not line.startswith("error: "):
        problems.append("stderr does not start with 'error: '")
    missing = [f for f in fragments if f not in line]
    if missing:
        problems.append(f"the error line lacks {missing}")
    assert not problems, "; ".join(problems) + f"\nstdout: {out[-800:]!r}\nstderr: {err[-800:]!r}"
    return line


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file and folder under `root`: relative path -> content (None for a folder)."""
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


def python_default_warnings() -> None:
    """The warning filters of a plain `python` process (what a user's terminal shows)."""
    warnings.resetwarnings()
    warnings.simplefilter("default")
    for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
        warnings.filterwarnings("ignore", category=category)
    warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")
