"""What class weights and the per-epoch validation metrics cost.

    python benchmarks/bench_metrics.py            # about a minute on 2 cores
    python benchmarks/bench_metrics.py --quick

Two timings, each compared inside one round on the same data (the machine is shared and
noisy; a ratio is the median over rounds of the per-round ratios):

- a training epoch (`Run.train_epoch` up to its last optimizer step) without class weights
  and with `class_weight: balanced`;
- the validation of an epoch: `MLP.evaluate` alone (the loss and hits, as before the
  metrics) against `Run._validate` (the same, plus the outputs copied to the host, F1, AUC,
  the confusion matrix image and the PR curve written to TensorBoard).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench import EpochTimer, benchmark_run  # noqa: E402

from mlpcli.runs import run_folder  # noqa: E402
from mlpcli.train import EVAL_BATCH, Run  # noqa: E402


def make_run(n, d, classes, batch, class_weight, logdir, reporter) -> Run:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d), dtype=np.float32)
    y = rng.integers(0, classes, n)
    y[: n // 2] = 0  # imbalanced: class 0 is over half of the data
    n_val = n // 5
    weights = None
    if class_weight == "balanced":
        counts = np.bincount(y[n_val:], minlength=classes)
        weights = (n - n_val) / (classes * counts)
    adam = {"name": "adam", "lr": 0.001}
    config = {"data": {"val_split": 0.2}, "train": {"class_weight": class_weight}}
    return benchmark_run(
        x[n_val:],
        y[n_val:],
        [d, 256, 128, classes],
        batch,
        adam,
        logdir,
        reporter,
        config=config,
        x_val=x[:n_val],
        y_val=y[:n_val],
        class_weight=weights,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rounds = 3 if args.quick else 7
    rows = []
    for n, d, classes, batch in ((50_000, 64, 2, 128), (50_000, 64, 10, 128)):
        with contextlib.ExitStack() as stack:
            runs = {}
            for weight in (None, "balanced"):
                timer = EpochTimer()
                logdir = stack.enter_context(tempfile.TemporaryDirectory())
                run = make_run(n, d, classes, batch, weight, logdir, timer)
                stack.enter_context(run.session(run_folder(run.config, None)))
                runs[weight] = (run, timer)
            train_ratio, val_ratio, plain_s, val_s = [], [], [], []
            for r in range(rounds):
                seconds = {}
                for weight in (None, "balanced") if r % 2 == 0 else ("balanced", None):
                    run, timer = runs[weight]  # in alternating order: no place is favoured
                    run.train_epoch()
                    seconds[weight] = timer.seconds
                train_ratio.append(seconds["balanced"] / seconds[None])
                run = runs[None][0]
                t = time.perf_counter()
                for x_val, y_val in run.feed.validation():
                    total, norm, hits = run.model.evaluate(x_val, y_val, EVAL_BATCH, run.scale)
                    float(total), int(hits)
                t_eval = time.perf_counter() - t
                t = time.perf_counter()
                run._validate()
                t_val = time.perf_counter() - t
                val_ratio.append(t_val / t_eval)
                plain_s.append(seconds[None])
                val_s.append(t_val - t_eval)
            rows.append(
                (
                    f"{n} x {d}, {classes} classes, batch {batch}",
                    statistics.median(plain_s),
                    statistics.median(train_ratio),
                    statistics.median(val_s) * 1e3,
                    statistics.median(val_ratio),
                )
            )
    print(
        f"{'data':36} {'epoch s':>8} {'weighted/plain':>15} "
        f"{'metrics ms/epoch':>17} {'validate/evaluate':>18}"
    )
    for name, plain, ratio, extra_ms, vratio in rows:
        print(f"{name:36} {plain:8.2f} {ratio:15.3f} {extra_ms:17.1f} {vratio:18.2f}")


if __name__ == "__main__":
    main()
