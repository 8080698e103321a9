"""The GPU code path without a GPU: the engine on a CuPy-like stand-in (tests/standin_xp.py).

The stand-in's arrays refuse NumPy as `cupy.ndarray` does, so a stray `numpy` call in the
math fails here; and since NumPy runs underneath, a run on it must give the CPU backend's
bits exactly. Also: checkpoints move between the two, `get_backend`'s choice of device, and
a static guard that the math modules never touch numpy themselves.
"""

from __future__ import annotations

import ast
import copy
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import REPO, assert_same_checkpoints, cli, small_config, write_config
from standin_xp import BACKEND, DeviceArray, xp

import mlpcli.backend
import mlpcli.inference
import mlpcli.runs
from mlpcli import checkpoint, inference, memory
from mlpcli.backend import Backend, get_backend, to_host
from mlpcli.config import validate_dict
from mlpcli.data import prepare
from mlpcli.errors import BackendError
from mlpcli.report import QuietReporter
from mlpcli.runs import resume
from mlpcli.train import Run

CPU = get_backend("cpu")

# ------------------------------------------------------------------ the stand-in refuses


def test_standin_refuses_implicit_conversion_to_numpy():
    dev = xp.asarray(np.arange(6.0).reshape(2, 3))
    host = np.ones((3, 2))
    refused = {
        "np.asarray": lambda: np.asarray(dev),
        "np.array of a list": lambda: np.array([dev]),
        "np.matmul(dev, host)": lambda: np.matmul(dev, host),
        "np.matmul(host, dev)": lambda: np.matmul(host.T, dev),
        "np.exp": lambda: np.exp(dev),
        "np.concatenate": lambda: np.concatenate([dev, dev]),
        "np.sum": lambda: np.sum(dev),
        "dev + host": lambda: dev + host.T,
        "host * dev": lambda: host.T * dev,
        "dev -= host": lambda: dev.__isub__(host.T),
        "xp.multiply(host, ...)": lambda: xp.multiply(host, 2.0),
        "xp.add(..., out=host)": lambda: xp.add(dev, 1.0, out=np.empty((2, 3))),
        "xp.matmul(dev, host)": lambda: xp.matmul(dev, host),
        "xp.copyto(dev, host)": lambda: xp.copyto(dev, host.T),
        "xp.ascontiguousarray(host)": lambda: xp.ascontiguousarray(host),  # as cupy's
        "xp.take(host, ...)": lambda: xp.take(host, xp.arange(2), axis=0),
        "index with a host array": lambda: dev[np.array([0, 1])],
        "assign a host array": lambda: dev.__setitem__(..., host.T),
        "float() of a non-0-d array": lambda: float(dev[0]),
    }
    for what, attempt in refused.items():
        with pytest.raises(TypeError):
            attempt()
            pytest.fail(f"{what} was not refused")
    with pytest.raises(TypeError, match="mode"):
        xp.take(dev, xp.arange(2), axis=0, mode="clip")  # cupy.take has no mode
    with pytest.raises(AttributeError):
        xp.linalg  # noqa: B018  (only what the stand-in offers exists)


def test_standin_behaves_like_device_arrays():
    host = np.arange(6.0).reshape(2, 3)
    dev = xp.asarray(host)
    host[0, 0] = 99.0
    assert dev.get()[0, 0] == 0.0  # asarray copied host -> device
    got = to_host(dev)
    assert type(got) is np.ndarray and np.array_equal(got, [[0, 1, 2], [3, 4, 5]])
    got[...] = -1.0
    assert dev.get()[0, 0] == 0.0  # .get() copied device -> host
    # slices and transposes are views: writes through them reach the base
    row = dev[1]
    row[...] = 7.0
    dev.T[0] = 5.0
    assert np.array_equal(dev.get(), [[5, 1, 2], [5, 7, 7]])
    grad = xp.zeros((3, 2), xp.float32)
    rows, y = xp.arange(3), xp.asarray(np.array([0, 1, 0]))
    grad[rows, y] -= 1.0
    assert np.array_equal(grad.get(), [[-1, 0], [0, -1], [-1, 0]])
    out = xp.empty((2, 3))
    assert xp.multiply(dev, 2.0, out=out) is out  # out= comes back as the same object
    total = dev.sum()
    assert isinstance(total, DeviceArray) and total.ndim == 0
    assert float(total) == 27.0 and int(dev.argmax()) == 4 and bool(total > 0)
    assert xp.ascontiguousarray(dev) is dev and xp.asarray(dev) is dev
    BACKEND.synchronize()  # the "cuda" code path of Backend
    flipped = BACKEND.take(dev, xp.arange(1, -1, -1), out=xp.empty((2, 3)))
    assert np.array_equal(flipped.get(), dev.get()[::-1])


# ------------------------------------------------------------------ same bits as the CPU

TRAIN = {
    "epochs": 3,
    "batch_size": 32,
    "shuffle": True,
    "clip_grad_norm": 0.5,
    "early_stopping": {"monitor": "val/loss", "patience": 2},
}
TRIANGLE = {
    "source": "triangle",
    "options": {"n_samples": 240},
    "val_split": 0.2,
    "standardize": True,
}


def _layers(*hidden: str, out: dict | None = None) -> dict:
    layers = [
        {"units": 8, "activation": a, "dropout": 0.1 * (i == 0)} for i, a in enumerate(hidden)
    ]
    return {
        "init": "glorot_uniform",
        "layers": [*layers, out or {"units": 2, "activation": "softmax"}],
    }


CONFIGS = {
    # shuffling, dropout, standardization, Adam with weight decay, cosine with warmup,
    # clipping, early stopping, a validation split; weight histograms through to_host
    "adam": small_config(
        data=TRIANGLE,
        model=_layers("relu", "tanh"),
        optimizer={"name": "adam", "lr": 0.02, "weight_decay": 1e-3, "amsgrad": True},
        schedule={"name": "cosine", "warmup_epochs": 1, "min_lr": 1e-4},
        train=TRAIN,
        logging={"every_n_steps": 2, "histograms": True},
    ),
    "sgd-nesterov": small_config(
        data=TRIANGLE,
        model=_layers("leaky_relu", "linear"),
        optimizer={
            "name": "sgd",
            "lr": 0.1,
            "momentum": 0.9,
            "nesterov": True,
            "weight_decay": 1e-3,
        },
        schedule={"name": "step", "step_size": 1, "gamma": 0.5, "warmup_epochs": 0.5},
        train=TRAIN,
    ),
    "rmsprop-centered-float64": small_config(
        dtype="float64",
        data=TRIANGLE,
        model=_layers("sigmoid"),
        optimizer={
            "name": "rmsprop",
            "lr": 0.01,
            "centered": True,
            "momentum": 0.5,
            "weight_decay": 1e-3,
        },
        schedule={"name": "exponential", "gamma": 0.8},
        train=TRAIN,
    ),
    "adagrad-no-validation": small_config(
        data={**TRIANGLE, "val_split": 0.0},
        model=_layers("gelu"),
        optimizer={
            "name": "adagrad",
            "lr": 0.1,
            "lr_decay": 0.01,
            "initial_accumulator_value": 0.1,
            "weight_decay": 1e-3,
        },
        schedule=None,
        train={**TRAIN, "shuffle": False},
    ),
    "adamw-bce": small_config(
        data=TRIANGLE,
        model=_layers("gelu", "tanh", out={"units": 1, "activation": "sigmoid"}),
        loss="binary_cross_entropy",
        optimizer={"name": "adamw", "lr": 0.02, "weight_decay": 0.05},
        train=TRAIN,
    ),
    "adam-class-weight": small_config(
        data=TRIANGLE,
        model=_layers("tanh"),
        train={**TRAIN, "class_weight": "balanced"},
    ),
    "bce-class-weight": small_config(
        data=TRIANGLE,
        model=_layers("tanh", out={"units": 1, "activation": "sigmoid"}),
        loss="binary_cross_entropy",
        train={**TRAIN, "class_weight": {1: 3.0}},
    ),
    "mse-regression": small_config(
        data={
            "source": "linear",
            "options": {"n_samples": 240, "n_features": 3},
            "val_split": 0.25,
            "standardize_target": True,
        },
        model=_layers("tanh", out={"units": 1, "activation": "linear"}),
        loss="mse",
        optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.5, "dampening": 0.1},
        train=TRAIN,
    ),
}


def _fit(raw: dict, backend: Backend, run_dir: Path, **changes) -> Path:
    """Train `raw` in-process on `backend` in run_dir; the path of its last.npz."""
    raw = copy.deepcopy(raw)
    for key, value in changes.items():
        raw["train"][key] = value
    config = validate_dict(raw, where="test config")
    data = prepare(config, "test config")
    (run_dir / "checkpoints").mkdir(parents=True)
    run = Run(config, data, QuietReporter(), backend=backend)
    on_device = isinstance(run.model.layers[0].W, DeviceArray)
    assert on_device == (backend is BACKEND)
    assert isinstance(run.x, DeviceArray) == (on_device and not run.feed.streaming)
    run.fit(run_dir)
    return run_dir / "checkpoints" / "last.npz"


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_standin_training_gives_the_cpu_bits(name, tmp_path):
    raw = CONFIGS[name]
    on_cpu = _fit(raw, CPU, tmp_path / "cpu")
    on_dev = _fit(raw, BACKEND, tmp_path / "dev")
    assert_same_checkpoints(on_cpu, on_dev)
    assert_same_checkpoints(on_cpu.with_name("best.npz"), on_dev.with_name("best.npz"))
    _, meta = checkpoint.load(on_dev)
    assert meta["epoch"] >= 2 and np.isfinite(meta["metrics"]["train/loss"])


def test_standin_trains_a_memory_mapped_npy_split_by_rows(tmp_path):
    """A .npy dataset stays a memory map, gathered by `train_rows`: streamed from the host
    (the automatic choice for a memory map on a GPU) or copied whole to the device."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", (x[:, 0] + x[:, 1] > 0).astype(np.int64))
    data = {"source": str(tmp_path / "x.npy"), "target": str(tmp_path / "y.npy")}
    raw = small_config(data={**data, "val_split": 0.25}, model=_layers("relu"), train=TRAIN)
    resident = copy.deepcopy(raw)
    resident["data"]["stream"] = False
    on_cpu = _fit(raw, CPU, tmp_path / "cpu")
    assert_same_checkpoints(on_cpu, _fit(raw, BACKEND, tmp_path / "dev"))
    assert_same_checkpoints(on_cpu, _fit(resident, BACKEND, tmp_path / "resident"))


# ------------------------------------------------------------------ checkpoints move

RESUMABLE = copy.deepcopy(CONFIGS["adam"])
RESUMABLE["schedule"]["epochs"] = 4  # the schedule of the whole 4-epoch run from the start
RESUMABLE["train"]["early_stopping"]["patience"] = 3  # cannot stop before epoch 4


@pytest.fixture
def standin_for_cuda(monkeypatch) -> list[str]:
    """`get_backend("cuda")` in train and inference returns the stand-in; the devices asked."""
    asked: list[str] = []

    def fake(device: str = "auto") -> Backend:
        asked.append(device)
        return BACKEND if device == "cuda" else get_backend(device)

    monkeypatch.setattr(mlpcli.runs, "get_backend", fake)
    monkeypatch.setattr(mlpcli.inference, "get_backend", fake)
    return asked


def test_a_standin_checkpoint_resumes_on_the_cpu_exactly(tmp_path):
    straight = _fit(RESUMABLE, CPU, tmp_path / "straight", epochs=4)
    half = _fit(RESUMABLE, BACKEND, tmp_path / "half", epochs=2)
    resume(half, QuietReporter(), epochs=4, device="cpu")
    assert_same_checkpoints(straight, half)


def test_a_cpu_checkpoint_resumes_on_the_standin_exactly(tmp_path, standin_for_cuda):
    straight = _fit(RESUMABLE, BACKEND, tmp_path / "straight", epochs=4)
    half = _fit(RESUMABLE, CPU, tmp_path / "half", epochs=2)
    resume(half, QuietReporter(), epochs=4, device="cuda")
    assert standin_for_cuda == ["cuda"]
    assert_same_checkpoints(straight, half)
    _, meta = checkpoint.load(half)
    assert meta["config"]["device"] == "cuda"


# ------------------------------------------------------------------ eval and predict


@pytest.mark.parametrize("name", ["adam", "adamw-bce", "bce-class-weight", "mse-regression"])
def test_eval_and_predict_on_the_standin_match_the_cpu(name, tmp_path, standin_for_cuda):
    last = _fit(CONFIGS[name], CPU, tmp_path / "run", epochs=2)
    features = np.random.default_rng(2).uniform(-1, 1, size=(50, 3 if "mse" in name else 2))
    np.save(tmp_path / "x.npy", features)
    on_cpu = inference.load(last)
    on_dev = inference.load(last, device="cuda")
    assert on_dev.backend is BACKEND
    assert all(isinstance(p, DeviceArray) for p in on_dev.model.params().values())
    assert inference.evaluate(on_dev) == inference.evaluate(on_cpu)
    targets = features.sum(axis=1) if "mse" in name else (features[:, 0] > 0).astype(np.int64)
    np.savez(tmp_path / "other.npz", x=features, y=targets)
    other = str(tmp_path / "other.npz")
    assert inference.evaluate(on_dev, other) == inference.evaluate(on_cpu, other)
    for proba in [False] if "mse" in name else [False, True]:
        names_cpu, cols_cpu = inference.predict(on_cpu, str(tmp_path / "x.npy"), proba)
        names_dev, cols_dev = inference.predict(on_dev, str(tmp_path / "x.npy"), proba)
        assert names_dev == names_cpu
        for a, b in zip(cols_cpu, cols_dev, strict=True):
            assert type(b) is np.ndarray and np.array_equal(a, b)


# ------------------------------------------------------------------ choosing the device


def test_cuda_without_cupy_is_a_clear_error_and_auto_falls_back(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # `import cupy` raises ImportError
    with pytest.raises(BackendError) as e:
        get_backend("cuda")
    assert "CuPy is not installed" in str(e.value)
    assert 'pip install "mlpcli[gpu]"' in str(e.value)
    auto = get_backend("auto")
    assert auto.name == "cpu" and auto.xp is np


def test_train_on_cuda_without_cupy_exits_2_before_making_a_run_folder(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.setitem(sys.modules, "cupy", None)
    config = write_config(tmp_path / "c.yaml", small_config())
    logs = tmp_path / "logs"
    code, out, err = cli(
        capsys, "train", config, "--device", "cuda", "--logdir", logs, "--name", "r"
    )
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert "CuPy is not installed" in err and "mlpcli[gpu]" in err
    assert "Traceback" not in out + err
    assert not logs.exists()


def _fake_cupy(count, name: str | bytes = b"NVIDIA H100 80GB HBM3") -> SimpleNamespace:
    def get_count() -> int:
        if isinstance(count, Exception):
            raise count
        return count

    runtime = SimpleNamespace(
        getDeviceCount=get_count, getDeviceProperties=lambda i: {"name": name, "major": 9}
    )
    return SimpleNamespace(cuda=SimpleNamespace(runtime=runtime))


def test_cuda_selection_with_a_fake_cupy(monkeypatch, capsys):
    for count, expected in [(0, "no CUDA device"), (RuntimeError("no driver"), "no driver")]:
        monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(count))
        reason = mlpcli.backend._cuda()
        assert isinstance(reason, mlpcli.backend.NoCuda) and expected in reason.reason
        assert not reason.has_gpu
        with pytest.raises(BackendError, match=expected):
            get_backend("cuda")
        assert get_backend("auto").name == "cpu"
        assert capsys.readouterr().err == ""  # no GPU at all: the CPU without a word
    monkeypatch.setattr(mlpcli.backend, "_probe", lambda cupy: None)  # the GPU works
    for name in (b"NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3"):
        fake = _fake_cupy(1, name)
        monkeypatch.setitem(sys.modules, "cupy", fake)
        for device in ("cuda", "auto"):
            backend = get_backend(device)
            assert backend.name == "cuda" and backend.xp is fake
            assert "NVIDIA H100 80GB HBM3" in backend.description
    assert get_backend("cpu").xp is np
    monkeypatch.undo()
    assert not isinstance(sys.modules.get("cupy"), SimpleNamespace)


def test_a_gpu_that_fails_the_check_is_an_error_or_a_warning(monkeypatch, capsys):
    """A GPU whose libraries are missing: `cuda` is one error, `auto` the CPU and a warning
    (against real CuPy: tests/test_cupy_conformance.py)."""
    fake = _fake_cupy(1)

    def no_cublas():
        raise ImportError("libcublas.so.12: cannot open shared object file")

    fake.__version__ = "14.0.0"
    fake.cuda.device = SimpleNamespace(get_cublas_handle=no_cublas)
    fake.cuda.nvrtc = SimpleNamespace(getVersion=lambda: (12, 4))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(mlpcli.backend, "_WARNED", set())
    with pytest.raises(BackendError) as e:
        get_backend("cuda")
    message = str(e.value)
    assert message.startswith("device cuda: the GPU (NVIDIA H100 80GB HBM3) cannot be used")
    assert "cuBLAS (libcublas.so.12: cannot open" in message and "NVRTC" not in message
    assert 'pip install "cupy-cuda12x[ctk]"' in message and "\n" not in message
    assert capsys.readouterr().err == ""
    assert get_backend("auto").name == "cpu"
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("warning: device auto: the GPU (NVIDIA H100 80GB HBM3) cannot be")
    assert line.endswith("; running on the CPU")
    assert get_backend("auto").name == "cpu"
    assert capsys.readouterr().err == ""  # said once a process (a sweep runs many trials)
    # the libraries load, but the test computation goes wrong
    fake.cuda.device = SimpleNamespace(get_cublas_handle=lambda: 1)
    fake.float32 = np.float32
    fake.arange = np.arange
    fake.matmul = lambda a, b: np.float32(0.0)
    with pytest.raises(BackendError, match="gave 30.0 instead of 60"):
        get_backend("cuda")


def test_out_of_gpu_memory_is_a_backend_error():
    class OutOfMemoryError(MemoryError):
        pass

    OutOfMemoryError.__module__ = "cupy.cuda.memory"
    runtime = SimpleNamespace(memGetInfo=lambda: (1 << 30, 16 << 30))
    fake = SimpleNamespace(
        cuda=SimpleNamespace(runtime=runtime),
        get_default_memory_pool=lambda: SimpleNamespace(total_bytes=lambda: 5 << 30),
    )
    gpu = Backend("cuda", fake, "fake")
    with pytest.raises(BackendError) as e, memory.on_device(gpu):
        raise OutOfMemoryError("Out of memory allocating 8,000,000,000 bytes.")
    assert str(e.value) == (
        "device cuda: out of GPU memory (Out of memory allocating 8,000,000,000 bytes; "
        "the GPU has 1.0 GiB free of 16.0 GiB, and this run holds 5.0 GiB); use a smaller "
        "train.batch_size or model, stream the data from the host, or train with --device cpu"
    )
    with pytest.raises(MemoryError), memory.on_device(CPU):  # the host's: not ours to reword
        raise MemoryError("host")
    with pytest.raises(MemoryError), memory.on_device(gpu):
        raise MemoryError("a host allocation on a GPU run")


# ------------------------------------------------------------------ the math touches only xp

MATH = ("activations", "losses", "optim", "schedules")
ARRAY_MODULES = {"numpy", "cupy"}
ARRAY_NAMES = {"np", "numpy", "cp", "cupy"}


def _tree(module: str) -> ast.Module:
    path = REPO / "mlpcli" / f"{module}.py"
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _runtime_nodes(node: ast.AST):
    """Every node that runs: annotations and `if TYPE_CHECKING:` blocks are skipped."""
    if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
        yield from (n for child in node.orelse for n in _runtime_nodes(child))
        return
    yield node
    for field, value in ast.iter_fields(node):
        if field in ("annotation", "returns"):
            continue
        for child in value if isinstance(value, list) else [value]:
            if isinstance(child, ast.AST):
                yield from _runtime_nodes(child)


def _array_module_uses(node: ast.AST) -> list[str]:
    """Imports of numpy / cupy and uses of the names np, numpy, cp, cupy that would run."""
    found = []
    for n in _runtime_nodes(node):
        if isinstance(n, ast.Name) and n.id in ARRAY_NAMES:
            found.append(f"line {n.lineno}: {n.id}")
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in n.names] if isinstance(n, ast.Import) else [n.module or ""]
            found += [
                f"line {n.lineno}: import {m}" for m in names if m.split(".")[0] in ARRAY_MODULES
            ]
    return found


@pytest.mark.parametrize("module", MATH)
def test_math_modules_never_touch_numpy_or_cupy(module):
    assert _array_module_uses(_tree(module)) == [], f"mlpcli/{module}.py"


@pytest.mark.parametrize("cls", ["Dense", "MLP"])
def test_model_layers_compute_only_through_xp(cls):
    (body,) = [n for n in _tree("model").body if isinstance(n, ast.ClassDef) and n.name == cls]
    assert _array_module_uses(body) == [], f"mlpcli/model.py class {cls}"


def test_the_guard_sees_stray_array_modules_but_not_annotations():
    clean = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    import numpy as np\n"
        "def f(xp, a: np.ndarray) -> np.ndarray:\n"
        "    b: np.ndarray = xp.exp(a)\n"
        "    return b\n"
    )
    assert _array_module_uses(clean) == []
    stray = ast.parse(
        "import cupy\nfrom numpy.linalg import norm\ndef f(a):\n    return np.exp(a)\n"
    )
    assert _array_module_uses(stray) == [
        "line 1: import cupy",
        "line 2: import numpy.linalg",
        "line 4: np",
    ]
