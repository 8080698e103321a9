"""benchmarks/gpu.py's checks, with the CuPy stand-in in the place of the GPU, and its
CPU-side command as a machine without a GPU runs it."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest
from helpers import REPO
from standin_xp import BACKEND

from mlpcli.backend import get_backend

_spec = importlib.util.spec_from_file_location("gpu_bench", REPO / "benchmarks" / "gpu.py")
gpu_bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpu_bench)

CPU = get_backend("cpu")


def test_every_check_passes_on_the_standin(tmp_path):
    rows = gpu_bench.checks(CPU, BACKEND, tmp_path)
    names = [check for check, *_ in rows]
    assert sum("GPU vs CPU" in n for n in names) == 2 * len(gpu_bench.OPTIMIZERS)
    assert sum("resumed" in n for n in names) == 4  # two dtypes on each device
    assert sum("CPU -> GPU -> CPU" in n for n in names) == 2
    assert sum("streamed" in n for n in names) == 4
    failed = [row for row in rows if not row[4]]
    assert not failed, failed
    # NumPy underneath: the stand-in agrees with the CPU exactly
    assert all(r[2] == "0.00e+00 relative" for r in rows if "GPU vs CPU" in r[0])


def test_a_check_can_fail():
    a = {"params/0/W": np.array([1.0, 2.0])}
    b = {"params/0/W": np.array([1.0, 2.0 + 1e-6])}
    assert gpu_bench.relative_error(a, b) == pytest.approx(5e-7, rel=1e-6)
    assert not gpu_bench.bit_equal(a, b) and gpu_bench.bit_equal(a, a)


def test_the_timings_run_on_the_standin(tmp_path):
    rows = gpu_bench.timings(BACKEND, rounds=1, tmp=tmp_path, share=1000)
    assert [r[0] for r in rows][2] == "2-16-16-2, batch 32"
    assert all(r[1] > 0 and r[2] > 0 for r in rows)
    assert "| 2-16-16-2, batch 32 |" in gpu_bench.timing_table("stand-in", rows)


def test_without_a_gpu_the_command_says_so_and_does_the_cpu_side(tmp_path):
    out = tmp_path / "gpu.md"
    proc = subprocess.run(
        [sys.executable, "benchmarks/gpu.py", "--cpu-only", "--skip-timings", "--output", out],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "no GPU (--cpu-only): the CPU-side parts only" in proc.stdout
    assert "| float64 stopped at epoch 2, resumed to 4 | cpu | bit-equal | bit-equal | yes |" in (
        proc.stdout
    )
    assert "4/4 checks pass" in out.read_text()
