"""Data parallelism on this machine: one epoch of mlpcli on K = 1 vs K = 2 processes.

    python benchmarks/bench_mpi.py               # about 30 s on 2 cores
    python benchmarks/bench_mpi.py --epochs 3    # the median of 3 epochs a row (about 1 min)

The model is MNIST-shaped (synthetic 60 000 x 784 float32, MLP 784-512-256-10 ReLU, SGD
with momentum, no validation). Every row runs in fresh processes, so that the BLAS thread
count is set before NumPy loads: K = 1 with 2 BLAS threads (all the cores to one process),
K = 1 with 1 thread, and K = 2 launched by `mpiexec -n 2` with 1 thread each (2 processes
on the 2 cores). Each process times `Run.train_epoch` (the code `mlpcli train` runs: the
steps, the logging, and rank 0's checkpoint of the epoch) after a warm-up epoch, and the
time it spends in `comm.allreduce`, wrapped with a timer here: the gradients' Allreduce of
every step (which includes waiting for the slower process) and the small one of each
logging step. The table shows rank 0's figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MPIEXEC = Path(sys.executable).parent / "mpiexec"
MNIST = [784, 512, 256, 10]
N = 60_000
BATCHES = (128, 1024)


def worker(batch: int, epochs: int) -> None:
    """Train warm-up + `epochs` epochs in this process (one rank of a job, or alone) and
    print rank 0's timings as one JSON line."""
    sys.path.insert(0, str(ROOT))
    import numpy as np
    from bench import benchmark_run

    from mlpcli.distributed import world
    from mlpcli.report import SilentReporter
    from mlpcli.runs import claim_folder

    comm = world()
    rng = np.random.default_rng(0)  # the same data on every rank
    x = rng.standard_normal((N, MNIST[0]), dtype=np.float32)
    y = rng.integers(0, MNIST[-1], N)
    with tempfile.TemporaryDirectory() as logdir:
        sgd = {"name": "sgd", "lr": 0.01, "momentum": 0.9}
        run = benchmark_run(x, y, MNIST, batch, sgd, logdir, SilentReporter(), comm=comm)
        config = run.config
        # the time spent in allreduce: gradients (the model's flat buffer) and the rest
        spent = {"grads": 0.0, "small": 0.0, "calls": 0}
        allreduce = comm.allreduce
        grad_buffer = run.model.grad_flat

        def timed_allreduce(buf, backend=None):
            t = time.perf_counter()
            try:
                return allreduce(buf, backend)
            finally:
                spent["grads" if buf is grad_buffer else "small"] += time.perf_counter() - t
                spent["calls"] += buf is grad_buffer

        run.comm.allreduce = timed_allreduce
        # rank 0 alone writes a run folder, as `mlpcli train` does
        results = []
        with claim_folder(config, None, comm) as folder, run.session(folder):
            for epoch in range(epochs + 1):
                spent.update(grads=0.0, small=0.0, calls=0)
                t = time.perf_counter()
                run.train_epoch()
                seconds = time.perf_counter() - t
                if epoch:  # the first is a warm-up
                    results.append({"seconds": seconds, **spent})
    if comm.rank == 0:
        best = statistics.median(r["seconds"] for r in results)
        row = min(results, key=lambda r: abs(r["seconds"] - best))  # the median epoch
        row.update(steps=run.steps_per_epoch, grad_bytes=int(grad_buffer.nbytes), procs=comm.size)
        print(json.dumps(row), flush=True)


def launch(batch: int, procs: int, threads: int, epochs: int) -> dict:
    """One row: fresh process(es) with `threads` BLAS threads each; rank 0's JSON line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "HYDRA_"))}
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = str(threads)
    command = [sys.executable, __file__, "--worker", "--batch", str(batch)]
    command += ["--epochs", str(epochs)]
    if procs > 1:
        command = [str(MPIEXEC), "-n", str(procs), *command]
    out = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=1800
    )
    if out.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1, help="timed epochs per row (median)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=128, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.batch, args.epochs)
        return
    if not MPIEXEC.exists():
        sys.exit(f"no mpiexec at {MPIEXEC}: pip install -e '.[mpi]'")
    import mpi4py
    import numpy as np

    mpich = subprocess.run([str(MPIEXEC), "--version"], capture_output=True, text=True).stdout
    version = [line.split(":", 1)[1].strip() for line in mpich.splitlines() if "Version:" in line]
    print(
        f"# {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"NumPy {np.__version__}, mpi4py {mpi4py.__version__}, MPICH {version[0]} (Hydra)"
    )
    print(
        f"# MNIST-shaped: {N:,} x {MNIST[0]} float32, MLP {'-'.join(map(str, MNIST))} ReLU, "
        "SGD momentum, no validation"
    )
    timed = "one epoch" if args.epochs == 1 else f"the median of {args.epochs} epochs"
    print(
        f"# {timed} after a warm-up epoch: wall time around Run.train_epoch, rank 0's; "
        "comm = its time inside comm.allreduce\n"
    )
    rows = [("K=1, 2 threads", 1, 2), ("K=1, 1 thread", 1, 1), ("K=2, 1 thread each", 2, 1)]
    print(
        f"{'batch':>5}  {'case':<20}{'epoch s':>9}{'comm s':>9}{'comm':>8}{'ms/step':>9}"
        f"{'/ K=1 2thr':>12}{'/ K=1 1thr':>12}"
    )
    volume = 0
    for batch in BATCHES:
        results = []
        for name, procs, threads in rows:
            r = launch(batch, procs, threads, args.epochs)
            results.append(r)
            volume = r["grad_bytes"]
            comm = r["grads"] + r["small"]
            print(
                f"{batch:>5}  {name:<20}{r['seconds']:>9.3f}{comm:>9.3f}"
                f"{100 * comm / r['seconds']:>7.1f}%{1000 * r['seconds'] / r['steps']:>9.2f}"
                f"{r['seconds'] / results[0]['seconds']:>12.2f}"
                + (f"{r['seconds'] / results[1]['seconds']:>12.2f}" if len(results) > 1 else ""),
                flush=True,
            )
        k2 = results[-1]
        each = k2["grads"] / max(k2["calls"], 1)
        print(
            f"{'':>7}K=2: {k2['calls']} gradient Allreduces an epoch, {1000 * each:.2f} ms each "
            f"(waiting included), {volume / each / 1e9:.2f} GB/s of buffer\n"
        )
    print(
        f"Allreduce volume per step: the flat gradient buffer, {volume // 4:,} float32 = "
        f"{volume:,} bytes ({volume / 2**20:.2f} MiB), whatever the batch"
    )


if __name__ == "__main__":
    main()
