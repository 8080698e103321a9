"""Resource promises of the training loop: no per-step allocations, bounded peak memory,
and commands that import only what they need."""

import subprocess
import sys
import tracemalloc

import numpy as np
from helpers import REPO, write_config

from mlpcli.config import validate_dict
from mlpcli.data import Dataset
from mlpcli.report import QuietReporter
from mlpcli.runs import run_folder
from mlpcli.train import Run

BATCH, WIDTH = 64, 512  # an activation buffer is BATCH x WIDTH x 4 = 128 KiB


class _Measure(QuietReporter):
    """Traces allocations over steps 30..45 (warm, and inside the second epoch)."""

    def step(self, run, batch):
        if run.progress.step == 30:
            tracemalloc.start()
            self.base = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
        elif run.progress.step == 45:
            self.current, self.peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()

    def finish(self, run):
        pass


def test_a_warm_training_step_allocates_no_activation_sized_array(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((25 * BATCH, 100), dtype=np.float32)  # 25 steps an epoch
    y = rng.integers(0, 10, len(x))
    config = validate_dict(
        {
            "data": {"source": "synthetic"},
            "model": {
                "layers": [
                    {"units": WIDTH, "activation": "relu", "dropout": 0.2},
                    {"units": WIDTH, "activation": "tanh"},
                    {"units": 10, "activation": "softmax"},
                ]
            },
            "optimizer": {"name": "adam", "lr": 0.001, "weight_decay": 0.01},
            "train": {"epochs": 3, "batch_size": BATCH, "clip_grad_norm": 1.0},
            "logging": {"logdir": str(tmp_path), "every_n_steps": 5},
            "checkpoint": {"every_n_epochs": 100, "keep_last": 0, "save_best": False},
        }
    )
    data = Dataset(
        x_train=x,
        y_train=y,
        classes=np.arange(10),
        x_mean=np.zeros(100),
        x_std=np.ones(100),
        feature_names=[f"x{i}" for i in range(100)],
    )
    reporter = _Measure()
    Run(config, data, reporter).fit(run_folder(config, "r"))
    activation = BATCH * WIDTH * 4
    # NumPy's fixed ufunc buffers (32 KiB) and logit-sized temporaries are fine; an array
    # the size of a hidden layer's activations is not
    assert reporter.peak - reporter.base < activation / 2, reporter.peak - reporter.base
    assert reporter.current - reporter.base < 16 * 1024  # and nothing accumulates


def test_peak_memory_stays_under_twice_the_data(tmp_path):
    """60 000 x 784 float32 (179 MiB) trains with a peak under twice its size (+ baseline)."""

    def peak(samples):
        config = write_config(
            tmp_path / f"{samples}.yaml",
            {
                "data": {
                    "source": "synthetic",
                    "options": {"n_samples": samples, "n_features": 784},
                },
                "model": {"layers": [{"units": 64}, {"units": 10}]},
                "train": {"epochs": 1, "batch_size": 1024},
            },
        )
        code = (
            "import sys\nfrom mlpcli.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    assert not e.code\n"
            "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0])"
        )
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                code,
                "train",
                str(config),
                "--logdir",
                str(tmp_path / "logs"),
                "-q",
            ],
            capture_output=True,
            text=True,
            cwd=REPO,
            check=True,
        )
        return int(out.stdout.split()[-2]) * 1024  # VmHWM: kB

    data_bytes = 60_000 * 784 * 4
    assert peak(60_000) - peak(100) < 2 * data_bytes


def _modules_after(*args):
    code = (
        "import sys\nfrom mlpcli.cli import main\ntry:\n    main(sys.argv[1:])\n"
        "except SystemExit:\n    pass\nprint(' '.join(sorted(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO, check=True
    )
    return set(out.stdout.split()[-1000000:])


def test_help_imports_no_numerical_library():
    loaded = _modules_after("--help")
    assert not {"numpy", "pydantic", "tensorboardX", "yaml"} & loaded


def test_validate_imports_neither_tensorboard_nor_the_trainer():
    loaded = _modules_after("validate", "configs/triangle.yaml")
    assert "numpy" in loaded and "mlpcli.config" in loaded
    assert not {"tensorboardX", "torch", "mlpcli.train", "mlpcli.optim", "mlpcli.model"} & loaded
