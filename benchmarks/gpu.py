"""mlpcli on a GPU: agreement with the CPU, exact resume and streaming, speed against PyTorch.

    python benchmarks/gpu.py                  # everything (a few minutes on one GPU)
    python benchmarks/gpu.py --cpu-only       # the CPU-side parts alone
    python benchmarks/gpu.py --skip-timings   # the checks without the timings

Without a usable GPU (no CuPy, no CUDA device) it says why and does the CPU-side parts.
It prints two Markdown tables, and writes them to --output FILE when given:

- checks: float64 GPU vs CPU after 100 steps for every optimizer (target 1e-9 relative),
  float32 likewise (reported against 1e-3); on each device, a run stopped at epoch 2 and
  resumed to 4 equal to the straight run, bit for bit; a checkpoint moved CPU -> GPU -> CPU
  unchanged, bit for bit; streamed batches (`data.stream: true`) equal to resident data,
  bit for bit, from memory and from a memory-mapped .npy split by rows.
- timings: one epoch of 784-512-256-10 (MNIST-shaped synthetic data, 60 000 samples) at
  batch 128 and 1024 and of a tiny 2-16-16-2 net at batch 32, mlpcli resident and
  streamed against PyTorch eager on the same device (its column is empty without
  PyTorch), each the median of interleaved rounds after a warm-up, with the device memory
  each holds at the end (CuPy's memory pool, torch.cuda.max_memory_allocated).

The check functions take the backends as arguments, so tests/test_gpu_bench.py runs them
with the CuPy stand-in in the place of the GPU.
"""

from __future__ import annotations

import argparse
import copy
import gc
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))  # bench.py's harness, however this file is loaded

from bench import EpochTimer, benchmark_run  # noqa: E402

from mlpcli import checkpoint as ckpt  # noqa: E402
from mlpcli.backend import Backend, get_backend  # noqa: E402
from mlpcli.config import validate_dict  # noqa: E402
from mlpcli.data import prepare  # noqa: E402
from mlpcli.errors import BackendError  # noqa: E402
from mlpcli.report import SilentReporter  # noqa: E402
from mlpcli.runs import resume_config  # noqa: E402
from mlpcli.train import Run  # noqa: E402

OPTIMIZERS = {
    "sgd": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-4},
    "adam": {"name": "adam", "lr": 0.01, "weight_decay": 1e-4},
    "adamw": {"name": "adamw", "lr": 0.01, "weight_decay": 0.01},
    "rmsprop": {"name": "rmsprop", "lr": 0.001, "momentum": 0.5, "centered": True},
    "adagrad": {"name": "adagrad", "lr": 0.05, "lr_decay": 1e-3},
}
TARGET = {"float64": 1e-9, "float32": 1e-3}  # relative agreement, GPU vs CPU
STEPS = 100
MNIST = [784, 512, 256, 10]


# ---------------------------------------------------------------------- runs


def small_config(dtype: str, optimizer: dict, **changes: Any) -> dict:
    """A synthetic 20-feature, 4-class problem and a 32-32 MLP with dropout: one epoch is
    STEPS steps of batch 16, with validation, standardization and shuffling."""
    config = {
        "seed": 0,
        "dtype": dtype,
        "data": {
            "source": "synthetic",
            "options": {"n_samples": 2000, "n_features": 20, "n_classes": 4},
            "val_split": 0.2,
        },
        "model": {
            "layers": [
                {"units": 32, "activation": "relu", "dropout": 0.1},
                {"units": 32, "activation": "tanh"},
                {"units": 4, "activation": "softmax"},
            ]
        },
        "optimizer": optimizer,
        "train": {"epochs": 1, "batch_size": 16, "clip_grad_norm": 5.0},
        "logging": {"every_n_steps": 25, "graph": False, "images_every_n_epochs": 0},
        "checkpoint": {"every_n_epochs": 1, "keep_last": 1},
    }
    config.update(changes)
    return config


def fit(raw: dict, backend: Backend, folder: Path) -> Path:
    """Train `raw` on `backend` into run folder `folder`; the path of its last.npz."""
    config = validate_dict(copy.deepcopy(raw), where="benchmark config")
    (folder / "checkpoints").mkdir(parents=True)
    Run(config, prepare(config, "benchmark config"), SilentReporter(), backend).fit(folder)
    return folder / "checkpoints" / "last.npz"


def resume_on(path: Path, backend: Backend, epochs: int) -> Path:
    """Resume checkpoint `path` on `backend` to `epochs`, in its run folder (as `mlpcli
    resume` does); the path of the new last.npz."""
    state = ckpt.read(path)
    config = resume_config(state, None, epochs, None)
    run = Run(config, prepare(config, str(path)), SilentReporter(), backend, state=state)
    run.progress.stopped_early = False
    folder = ckpt.run_folder_of(state.path)
    run.fit(folder)
    return folder / "checkpoints" / "last.npz"


def arrays(path: Path) -> dict[str, np.ndarray]:
    """A checkpoint's parameter and optimizer arrays."""
    values, _ = ckpt.load(path)
    return {k: v for k, v in values.items() if k.startswith(("params/", "optim/"))}


def relative_error(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    """The largest max|a - b| / max|a| over the arrays (float64)."""
    worst = 0.0
    for key, x in a.items():
        x, y = x.astype(np.float64), b[key].astype(np.float64)
        scale = max(float(np.abs(x).max(initial=0.0)), np.finfo(np.float64).tiny)
        worst = max(worst, float(np.abs(x - y).max(initial=0.0)) / scale)
    return worst


def bit_equal(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]) for k in a
    )


# ---------------------------------------------------------------------- checks

Row = tuple[str, str, str, str, bool]  # check, device, result, target, passed


def agreement(cpu: Backend, gpu: Backend, tmp: Path) -> list[Row]:
    """GPU vs CPU after STEPS steps, every optimizer, float64 and float32."""
    rows = []
    for dtype in ("float64", "float32"):
        for name, optimizer in OPTIMIZERS.items():
            raw = small_config(dtype, optimizer)
            on_cpu = arrays(fit(raw, cpu, tmp / f"agree-{dtype}-{name}-cpu"))
            on_gpu = arrays(fit(raw, gpu, tmp / f"agree-{dtype}-{name}-gpu"))
            err = relative_error(on_cpu, on_gpu)
            rows.append(
                (
                    f"{dtype} GPU vs CPU after {STEPS} steps, {name}",
                    gpu.name,
                    f"{err:.2e} relative",
                    f"<= {TARGET[dtype]:.0e}",
                    err <= TARGET[dtype],
                )
            )
    return rows


def resume_exact(backend: Backend, tmp: Path) -> list[Row]:
    """On one device: stopped at epoch 2 and resumed to 4 equals straight to 4."""
    rows = []
    for dtype in ("float64", "float32"):
        raw = small_config(dtype, OPTIMIZERS["adam"], schedule={"name": "cosine", "epochs": 4})
        raw["train"]["epochs"] = 4
        straight = arrays(fit(raw, backend, tmp / f"straight-{dtype}-{backend.name}"))
        raw["train"]["epochs"] = 2
        half = fit(raw, backend, tmp / f"half-{dtype}-{backend.name}")
        same = bit_equal(straight, arrays(resume_on(half, backend, 4)))
        rows.append(
            (
                f"{dtype} stopped at epoch 2, resumed to 4",
                backend.name,
                _same(same),
                "bit-equal",
                same,
            )
        )
    return rows


def moves_exact(cpu: Backend, gpu: Backend, tmp: Path) -> list[Row]:
    """A CPU checkpoint loaded on the GPU and back on the CPU holds the same bits."""
    rows = []
    for dtype in ("float64", "float32"):
        raw = small_config(dtype, OPTIMIZERS["adam"])
        path = fit(raw, cpu, tmp / f"move-{dtype}")
        state = ckpt.read(path)
        config = resume_config(state, None, 2, None)
        data = prepare(config, str(path))
        on_gpu = Run(config, data, SilentReporter(), gpu, state=state).state()
        back = Run(config, data, SilentReporter(), cpu, state=on_gpu).state()
        before = {**state.params, **state.optim}
        same = bit_equal(before, {**on_gpu.params, **on_gpu.optim}) and bit_equal(
            before, {**back.params, **back.optim}
        )
        rows.append(
            (f"{dtype} checkpoint CPU -> GPU -> CPU", "cpu, cuda", _same(same), "bit-equal", same)
        )
    return rows


def streaming_exact(backend: Backend, tmp: Path) -> list[Row]:
    """Streamed batches vs resident data, from memory and from a memory-mapped .npy."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1700, 20), dtype=np.float32)
    x_path, y_path = tmp / f"x-{backend.name}.npy", tmp / f"y-{backend.name}.npy"
    np.save(x_path, x)
    np.save(y_path, (x[:, :4].argmax(1)).astype(np.int64))
    memmap = {"source": str(x_path), "target": str(y_path), "val_split": 0.06}
    rows = []
    for what, data in (("synthetic, in memory", None), ("memory-mapped .npy", memmap)):
        raw = small_config("float32", OPTIMIZERS["sgd"])
        raw["train"]["epochs"] = 2
        if data is not None:
            raw["data"] = data
        got = {}
        for stream in (False, True):
            raw["data"]["stream"] = stream
            folder = tmp / f"stream-{stream}-{backend.name}-{what.split()[0]}"
            got[stream] = arrays(fit(raw, backend, folder))
        same = bit_equal(got[False], got[True])
        rows.append((f"streamed vs resident, {what}", backend.name, _same(same), "bit-equal", same))
    return rows


def _same(same: bool) -> str:
    return "bit-equal" if same else "DIFFERENT"


def checks(cpu: Backend, gpu: Backend | None, tmp: Path) -> list[Row]:
    """Every check; those that need a GPU only when `gpu` is given."""
    rows: list[Row] = []
    if gpu is not None:
        rows += agreement(cpu, gpu, tmp)
    for backend in (cpu, gpu) if gpu is not None else (cpu,):
        rows += resume_exact(backend, tmp)
    if gpu is not None:
        rows += moves_exact(cpu, gpu, tmp)
    for backend in (cpu, gpu) if gpu is not None else (cpu,):
        rows += streaming_exact(backend, tmp)
    return rows


# ---------------------------------------------------------------------- timings


def mlpcli_epoch(x, y, sizes, batch, backend, stream, tmp) -> tuple[Callable, Run]:
    """A function training one more epoch of mlpcli and returning its seconds; the run."""
    timer = EpochTimer()
    sgd = {"name": "sgd", "lr": 0.01, "momentum": 0.9}
    config = {"data": {"stream": stream}}
    run = benchmark_run(x, y, sizes, batch, sgd, tmp, timer, backend=backend, config=config)
    folder = Path(tempfile.mkdtemp(dir=tmp))
    (folder / "checkpoints").mkdir()
    session = run.session(folder)
    session.__enter__()

    def epoch() -> float:
        run.train_epoch()
        return timer.seconds

    epoch.close = lambda: session.__exit__(None, None, None)  # type: ignore[attr-defined]
    return epoch, run


def torch_epoch(x, y, sizes, batch, device: str) -> Callable | None:
    """One epoch of the same model in PyTorch eager on `device`, data resident there."""
    try:
        import torch
    except ImportError:
        return None
    if device == "cuda" and not torch.cuda.is_available():
        return None
    torch.manual_seed(0)
    mods: list = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        mods += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    net = torch.nn.Sequential(*mods[:-1]).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    xt, yt = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
    loss_fn = torch.nn.CrossEntropyLoss()
    n = x.shape[0]

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    def epoch() -> float:
        sync()
        t = time.perf_counter()
        perm = torch.randperm(n, device=device)
        for b in range(0, n, batch):
            idx = perm[b : b + batch]
            opt.zero_grad(set_to_none=True)
            loss_fn(net(xt[idx]), yt[idx]).backward()
            opt.step()
        sync()
        return time.perf_counter() - t

    return epoch


def device_bytes(backend: Backend) -> float:
    """Bytes CuPy's memory pool holds (its high-water mark: it keeps freed blocks)."""
    if backend.name != "cuda" or not hasattr(backend.xp, "get_default_memory_pool"):
        return math.nan
    return float(backend.xp.get_default_memory_pool().total_bytes())


def release(backend: Backend) -> None:
    gc.collect()
    if backend.name == "cuda" and hasattr(backend.xp, "get_default_memory_pool"):
        backend.xp.get_default_memory_pool().free_all_blocks()


def timings(backend: Backend, rounds: int, tmp: Path, share: int = 1) -> list[tuple]:
    """(case, resident s, streamed s, torch s, resident MiB, streamed MiB, torch MiB) per
    case; `share` > 1 times 1/share of the samples (a quick look)."""
    torch_device = "cuda" if backend.name == "cuda" else "cpu"
    cases = [("784-512-256-10, batch 128", MNIST, 128, 60_000)]
    cases += [("784-512-256-10, batch 1024", MNIST, 1024, 60_000)]
    cases += [("2-16-16-2, batch 32", [2, 16, 16, 2], 32, 32_000)]
    out = []
    for name, sizes, batch, n in cases:
        n //= share
        rng = np.random.default_rng(0)
        x = rng.standard_normal((n, sizes[0]), dtype=np.float32)
        y = rng.integers(0, sizes[-1], n)
        med = {}
        memory = {}
        for stream in (False, True):
            release(backend)
            epoch, run = mlpcli_epoch(x, y, sizes, batch, backend, stream, tmp)
            try:
                med[stream] = statistics.median([epoch() for _ in range(rounds + 1)][1:])
                memory[stream] = device_bytes(backend) / 2**20
            finally:
                epoch.close()
                del run
        torch_run = torch_epoch(x, y, sizes, batch, torch_device)
        torch_s, torch_mib = math.nan, math.nan
        if torch_run is not None:
            import torch

            if torch_device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            torch_s = statistics.median([torch_run() for _ in range(rounds + 1)][1:])
            if torch_device == "cuda":
                torch_mib = torch.cuda.max_memory_allocated() / 2**20
        out.append((name, med[False], med[True], torch_s, memory[False], memory[True], torch_mib))
    return out


# ---------------------------------------------------------------------- main


def cuda_backend() -> tuple[Backend | None, str]:
    """The GPU backend, or None and why not."""
    try:
        return get_backend("cuda"), ""
    except BackendError as e:
        return None, str(e)


def check_table(rows: list[Row]) -> str:
    lines = ["| check | device | result | target | pass |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {c} | {d} | {r} | {t} | {'yes' if ok else 'NO'} |" for c, d, r, t, ok in rows]
    return "\n".join(lines)


def timing_table(device: str, rows: list[tuple]) -> str:
    lines = [
        f"| one epoch on {device} | mlpcli s | mlpcli streamed s | PyTorch s | mlpcli / PyTorch "
        "| mlpcli MiB | streamed MiB | PyTorch MiB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, res, streamed, torch_s, mem, mem_s, torch_mib in rows:
        cells = [res, streamed, torch_s, res / torch_s, mem, mem_s, torch_mib]
        forms = [".3f", ".3f", ".3f", ".2f", ".0f", ".0f", ".0f"]
        text = ["n/a" if math.isnan(v) else format(v, f) for v, f in zip(cells, forms, strict=True)]
        lines.append(f"| {name} | {' | '.join(text)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-only", action="store_true", help="skip everything needing a GPU")
    parser.add_argument("--skip-timings", action="store_true", help="the checks alone")
    parser.add_argument("--rounds", type=int, default=3, help="timed epochs per case (3)")
    parser.add_argument("--quick", action="store_true", help="timings on 1/10 of the samples")
    parser.add_argument("--output", type=Path, help="also write the tables to this file")
    args = parser.parse_args(argv)

    cpu = get_backend("cpu")
    gpu, why = (None, "--cpu-only") if args.cpu_only else cuda_backend()
    started = time.perf_counter()
    head = [
        f"# {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"NumPy {np.__version__}; GPU: {gpu.description if gpu else 'none'}"
    ]
    if gpu is None:
        head.append(f"# no GPU ({why}): the CPU-side parts only")
    print("\n".join(head), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rows = checks(cpu, gpu, tmp)
        text = ["", check_table(rows)]
        print("\n".join(text), flush=True)
        if not args.skip_timings:
            for backend in (gpu,) if gpu is not None else (cpu,):
                table = timing_table(
                    backend.description, timings(backend, args.rounds, tmp, 10 if args.quick else 1)
                )
                text += ["", table]
                print("\n" + table, flush=True)
    passed = sum(r[4] for r in rows)
    tail = f"\n# {time.perf_counter() - started:.0f} s; {passed}/{len(rows)} checks pass"
    print(tail)
    if args.output:
        args.output.write_text("\n".join([*head, *text, tail, ""]))
    return 0 if all(r[4] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
