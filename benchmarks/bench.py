"""Time mlpcli's real training loop against the GEMMs it needs and against PyTorch.

    python benchmarks/bench.py            # the full table (about 5 minutes on 2 cores)
    python benchmarks/bench.py --quick    # fewer rounds, no 600 000-sample row

The machine is shared and noisy, so every comparison is made inside one round: each round
times one epoch of mlpcli, one of the GEMMs alone and one of PyTorch back to back, and a
ratio is the median over rounds of the per-round ratios. mlpcli is timed through
`mlpcli.train.Run.train_epoch`, the code `mlpcli train` runs, from the start of an epoch
to the end of its last optimizer step (gathering and standardizing batches, forward,
backward, optimizer, logging); validation and checkpoints are not counted.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mlpcli.config import validate_dict  # noqa: E402
from mlpcli.data import Dataset  # noqa: E402
from mlpcli.report import SilentReporter  # noqa: E402
from mlpcli.runs import run_folder  # noqa: E402
from mlpcli.train import Run  # noqa: E402

MNIST = [784, 512, 256, 10]
SGD = {"name": "sgd", "lr": 0.01, "momentum": 0.9}
ADAM = {"name": "adam", "lr": 0.001}
THREADS = int(os.environ.get("BENCH_THREADS", "2"))


def synthetic(n: int, d: int, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d), dtype=np.float32), rng.integers(0, classes, n)


class EpochTimer(SilentReporter):
    """Seconds from an epoch's start to the end of its last optimizer step, with the
    device's queued work waited for at both ends (a no-op on the CPU)."""

    def epoch_start(self, run, epoch):
        run.backend.synchronize()
        self.t0 = time.perf_counter()

    def step(self, run, batch):
        if batch == run.steps_per_epoch:
            run.backend.synchronize()
            self.seconds = time.perf_counter() - self.t0


def benchmark_run(
    x, y, sizes, batch, optimizer, logdir, reporter, comm=None, *, backend=None, config=None, **data
) -> Run:
    """An mlpcli Run of an MLP on (x, y): ReLU hidden layers, softmax output, features taken as
    standardized already, no validation unless `data` gives x_val and y_val, no checkpoints.
    `config` adds to (or replaces) sections of the config; `data` adds Dataset fields."""
    layers = [{"units": u, "activation": "relu"} for u in sizes[1:-1]]
    layers.append({"units": sizes[-1], "activation": "softmax"})
    sections = {
        "data": {"source": "synthetic", "val_split": 0, "standardize": True},
        "model": {"layers": layers},
        "optimizer": optimizer,
        "train": {"epochs": 10**6, "batch_size": batch},
        "logging": {"logdir": str(logdir), "every_n_steps": 50, "graph": False},
        "checkpoint": {"every_n_epochs": 10**6, "keep_last": 0, "save_best": False},
    }
    for name, values in (config or {}).items():
        sections[name] = {**sections[name], **values}
    dataset = Dataset(
        x_train=x,
        y_train=y,
        classes=np.arange(sizes[-1]),
        source="benchmark",
        x_mean=np.zeros(x.shape[1]),
        x_std=np.ones(x.shape[1]),
        **data,
    )
    return Run(validate_dict(sections), dataset, reporter, backend, comm=comm)


def mlpcli_epoch(x, y, sizes, batch, optimizer, stack: contextlib.ExitStack) -> Callable:
    """A function that trains one more epoch of mlpcli and returns its seconds."""
    timer = EpochTimer()
    logdir = stack.enter_context(tempfile.TemporaryDirectory())
    run = benchmark_run(x, y, sizes, batch, optimizer, logdir, timer)
    stack.enter_context(run.session(run_folder(run.config, None)))

    def epoch() -> float:
        run.train_epoch()
        return timer.seconds

    return epoch


def gemm_epoch(n, sizes, batch) -> Callable:
    """The 8 GEMMs of a 3-layer step (3 forward, 3 dW, 2 dX) over an epoch, nothing else."""
    rng = np.random.default_rng(0)
    pairs = list(zip(sizes[:-1], sizes[1:], strict=True))
    Ws = [rng.standard_normal(shape, dtype=np.float32) for shape in pairs]
    dWs = [np.empty_like(W) for W in Ws]

    def buffers(rows):
        return (
            [rng.standard_normal((rows, s), dtype=np.float32) for s in sizes],
            [np.empty((rows, s), np.float32) for s in sizes],
        )

    full, tail = buffers(batch), buffers(n % batch) if n % batch else None

    def epoch() -> float:
        t = time.perf_counter()
        for b in range(math.ceil(n / batch)):
            acts, grads = tail if tail and b == n // batch else full
            for i, W in enumerate(Ws):
                np.matmul(acts[i], W, out=acts[i + 1])
            for i in range(len(Ws) - 1, -1, -1):
                np.matmul(acts[i].T, acts[i + 1], out=dWs[i])
                if i > 0:
                    np.matmul(acts[i + 1], Ws[i].T, out=grads[i])
        return time.perf_counter() - t

    return epoch


def torch_epoch(x, y, sizes, batch, optimizer, fused=None) -> Callable | None:
    """One epoch of the same model in PyTorch eager (CPU), or None without torch."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    mods: list = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        mods += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    net = torch.nn.Sequential(*mods[:-1])
    if optimizer["name"] == "sgd":
        opt = torch.optim.SGD(net.parameters(), lr=optimizer["lr"], momentum=0.9)
    else:
        opt = torch.optim.Adam(net.parameters(), lr=optimizer["lr"], fused=fused)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    loss_fn = torch.nn.CrossEntropyLoss()
    n = x.shape[0]

    def epoch() -> float:
        t = time.perf_counter()
        perm = torch.randperm(n)
        for b in range(0, n, batch):
            idx = perm[b : b + batch]
            opt.zero_grad(set_to_none=True)
            loss_fn(net(xt[idx]), yt[idx]).backward()
            opt.step()
        return time.perf_counter() - t

    return epoch


def rounds(runners: dict[str, Callable | None], count: int) -> dict[str, list[float]]:
    """Time each runner once per round, interleaved; the first round is a warm-up."""
    times: dict[str, list[float]] = {k: [] for k, f in runners.items() if f is not None}
    for r in range(count + 1):
        for key in times:
            seconds = runners[key]()
            if r:
                times[key].append(seconds)
    return times


def ratio(times: dict[str, list[float]], a: str, b: str) -> float:
    if a not in times or b not in times:
        return float("nan")
    return statistics.median(x / y for x, y in zip(times[a], times[b], strict=True))


def peak_rss(config: Path, cwd: Path) -> float:
    """Peak resident memory (MB) of `mlpcli train CONFIG` in a child process."""
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent through exec
    code = (
        "import sys\nfrom mlpcli.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
        "print(int(hwm.split()[1]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, "train", str(config), "--logdir", str(cwd), "-q"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    return int(out.stdout.split()[-1]) / 1024


def command_seconds(args: list[str], repeats: int = 7) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run(args, capture_output=True, cwd=ROOT, check=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and sizes")
    args = parser.parse_args()
    count = 3 if args.quick else 5
    try:
        import torch

        torch_version = f"PyTorch {torch.__version__} ({THREADS} threads)"
    except ImportError:
        torch_version = "PyTorch not installed: its columns are empty"
    print(
        f"# {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"NumPy {np.__version__}, {torch_version}"
    )
    print(f"# median of {count} interleaved rounds after a warm-up; ratios per round\n")

    n = 60_000
    x, y = synthetic(n, 784, 10)
    print("MNIST-shaped: 60 000 x 784 float32, MLP 784-512-256-10 ReLU, one epoch")
    print(f"{'case':<24}{'mlpcli s':>9}{'GEMMs s':>9}{'torch s':>9}{'/GEMMs':>8}{'/torch':>8}")
    epochs: dict[str, float] = {}
    for batch, optimizer in ((32, SGD), (128, SGD), (128, ADAM), (1024, SGD)):
        name = "sgd-momentum" if optimizer is SGD else "adam"
        with contextlib.ExitStack() as stack:
            times = rounds(
                {
                    "mlpcli": mlpcli_epoch(x, y, MNIST, batch, optimizer, stack),
                    "gemm": gemm_epoch(n, MNIST, batch),
                    "torch": torch_epoch(x, y, MNIST, batch, optimizer),
                },
                count,
            )
        med = {k: statistics.median(v) for k, v in times.items()}
        epochs[name, batch] = med["mlpcli"]
        print(
            f"{f'batch {batch} {name}':<24}{med['mlpcli']:>9.3f}{med['gemm']:>9.3f}"
            f"{med.get('torch', math.nan):>9.3f}{ratio(times, 'mlpcli', 'gemm'):>8.2f}"
            f"{ratio(times, 'mlpcli', 'torch'):>8.2f}"
        )

    with contextlib.ExitStack() as stack:
        times = rounds(
            {
                "sgd": mlpcli_epoch(x, y, MNIST, 128, SGD, stack),
                "adam": mlpcli_epoch(x, y, MNIST, 128, ADAM, stack),
                "torch-sgd": torch_epoch(x, y, MNIST, 128, SGD),
                "torch-adam": torch_epoch(x, y, MNIST, 128, ADAM, fused=True),
            },
            count,
        )
    print(
        f"\nAdam epoch / SGD-momentum epoch, batch 128: mlpcli {ratio(times, 'adam', 'sgd'):.2f}, "
        f"PyTorch (fused Adam) {ratio(times, 'torch-adam', 'torch-sgd'):.2f}"
    )

    xs, ys = synthetic(32 * 1000, 2, 2)
    with contextlib.ExitStack() as stack:
        times = rounds(
            {
                "mlpcli": mlpcli_epoch(xs, ys, [2, 16, 16, 2], 32, SGD, stack),
                "torch": torch_epoch(xs, ys, [2, 16, 16, 2], 32, SGD),
            },
            count,
        )
    rate = 1000 / statistics.median(times["mlpcli"])
    print(
        f"\ntiny 2-16-16-2, batch 32: mlpcli {rate:,.0f} steps/s; "
        f"{1 / ratio(times, 'mlpcli', 'torch'):.2f} x PyTorch's steps/s"
    )

    print("\ntime per sample as the data grows (batch 128, sgd-momentum)")
    print(f"{'samples':>9}{'s/epoch':>10}{'us/sample':>11}")
    for count_n in (6_000, 60_000) if args.quick else (6_000, 60_000, 600_000):
        xc, yc = synthetic(count_n, 784, 10, seed=1)
        with contextlib.ExitStack() as stack:
            times = rounds(
                {"mlpcli": mlpcli_epoch(xc, yc, MNIST, 128, SGD, stack)},
                2 if count_n >= 600_000 else count,
            )
        t = statistics.median(times["mlpcli"])
        print(f"{count_n:>9}{t:>10.3f}{t / count_n * 1e6:>11.2f}")
        del xc, yc
    del x, y

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, samples in (("small", 100), ("mnist", 60_000)):
            (tmp / f"{name}.yaml").write_text(
                f"data: {{source: synthetic, options: {{n_samples: {samples}, n_features: 784}}}}\n"
                "model: {layers: [{units: 512}, {units: 256}, {units: 10}]}\n"
                "train: {epochs: 1, batch_size: 128}\n"
            )
        base, big = peak_rss(tmp / "small.yaml", tmp), peak_rss(tmp / "mnist.yaml", tmp)
    data_mb = 60_000 * 784 * 4 / 2**20
    print(
        f"\npeak memory, `mlpcli train` on synthetic 60 000 x 784 float32 ({data_mb:.0f} MB):"
        f" {big:.0f} MB; {big - base:.0f} MB above the same run on 100 samples "
        f"({(big - base) / data_mb:.2f} x the data)"
    )

    mlpcli = [sys.executable, "-m", "mlpcli"]
    python = command_seconds([sys.executable, "-c", "pass"])
    helps = command_seconds([*mlpcli, "--help"])
    validate = command_seconds([*mlpcli, "validate", "configs/triangle.yaml"])
    print(
        f"\nstart-up: python -c pass {python:.3f} s; mlpcli --help {helps:.3f} s; "
        f"mlpcli validate configs/triangle.yaml {validate:.3f} s"
    )


if __name__ == "__main__":
    main()
