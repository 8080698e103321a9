"""What `train` prints: lines that fit, the model summary, the epoch table, the live bar."""

import io
import json
import re

import pytest
from helpers import cli, load_last, small_config, write_config
from rich.console import Console

from mlpcli.config import load_config
from mlpcli.data import prepare
from mlpcli.report import (
    PIPED_WIDTH,
    EpochTable,
    Reporter,
    RichReporter,
    duration,
    number,
    per_second,
)
from mlpcli.runs import run_folder
from mlpcli.train import Run

# a live display redraws a line by moving the cursor and erasing: each piece is one frame
FRAME_BREAK = re.compile(r"\r|\n|\x1b\[[0-9;]*[ABGJK]")
STYLE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _train(capsys, tmp_path, monkeypatch, config, *args):
    monkeypatch.chdir(tmp_path)
    path = write_config(tmp_path / "c.yaml", config)
    code, out, err = cli(capsys, "train", path, "--logdir", "logs", "--name", "r", *args)
    assert code == 0 and err == "", err
    return out


def _regression(**changes):
    data = {
        "source": "linear",
        "options": {"n_samples": 200, "n_features": 3},
        "standardize_target": True,
    }
    model = {"layers": [{"units": 4, "activation": "tanh"}, {"units": 1, "activation": "linear"}]}
    return small_config(data=data, model=model, loss="mse", **changes)


@pytest.mark.parametrize("columns", ["400", "60"])
def test_piped_lines_fit_the_width(tmp_path, capsys, monkeypatch, columns):
    # a wide terminal behind the pipe still gives lines of at most PIPED_WIDTH characters;
    # a narrow one, lines that fit it
    monkeypatch.setenv("COLUMNS", columns)
    limit = min(int(columns), PIPED_WIDTH)
    config = small_config(train={"epochs": 12, "batch_size": 32})
    config["data"]["source"] = "blobs"
    config["data"]["options"] = {"n_samples": 300, "n_classes": 3}
    config["model"]["layers"][-1]["units"] = 3
    out = _train(capsys, tmp_path, monkeypatch, config)
    lines = out.splitlines()
    assert len(lines) > 25
    too_long = [line for line in lines if len(line) > limit]
    assert not too_long, too_long
    # the regression run with its note on the loss's units fits too
    out = _train(capsys, tmp_path / "logs", monkeypatch, _regression())
    too_long = [line for line in out.splitlines() if len(line) > limit]
    assert not too_long, too_long


def test_model_summary_counts_the_checkpoints_parameters(tmp_path, capsys, monkeypatch):
    config = small_config()
    config["model"]["layers"].insert(1, {"units": 5, "activation": "relu", "dropout": 0.25})
    out = _train(capsys, tmp_path, monkeypatch, config)
    code, info, _ = cli(capsys, "inspect", "logs/r", "--json")
    assert code == 0
    shapes = json.loads(info)["params"]
    sizes = {}
    for key, shape in shapes.items():  # params/{i}/W, params/{i}/b
        layer = key.split("/")[1]
        count = 1
        for n in shape:
            count *= n
        sizes[layer] = sizes.get(layer, 0) + count
    total = int(re.search(r"^total: ([\d,]+) parameters", out, re.M)[1].replace(",", ""))
    assert total == sum(sizes.values()) == 2 * 8 + 8 + 8 * 5 + 5 + 5 * 2 + 2
    rows = {line.split()[1]: line.split() for line in out.splitlines() if line.startswith("dense ")}
    assert {layer: int(row[-1].replace(",", "")) for layer, row in rows.items()} == sizes
    assert rows["0"][3:6] == ["8)", "tanh", "0.1"]  # output shape (batch, 8), dropout
    assert rows["1"][3:6] == ["5)", "relu", "0.25"]
    assert rows["2"][3:5] == ["2)", "softmax"]


def _epoch_rows(out):
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("epoch "))
    header = lines[start].split()
    rows = []
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        rows.append(line.split())
    return header, rows


def test_epoch_rows_mark_the_epochs_that_wrote_best_npz(tmp_path, capsys, monkeypatch):
    train = {"epochs": 8, "batch_size": 32}
    config = small_config(train=train, checkpoint={"monitor": "val/loss", "keep_last": 1})
    out = _train(capsys, tmp_path, monkeypatch, config)
    header, rows = _epoch_rows(out)
    assert header == [
        "epoch",
        "train/loss",
        "train/acc",
        "val/loss",
        "val/acc",
        "val/f1",
        "val/auc",
        "time",
        "eta",
        "best",
    ]
    assert [row[0] for row in rows] == [f"{e}/8" for e in range(1, 9)]
    marked = [e for e, row in enumerate(rows, 1) if row[-1] == "*"]
    assert marked[0] == 1
    _, meta = load_last(tmp_path / "logs" / "r", "best.npz")
    assert marked[-1] == meta["epoch"]
    # each marked epoch beat every epoch before it; the others did not
    losses = [float(row[3]) for row in rows]
    for e in range(2, 9):
        assert (e in marked) == (losses[e - 1] <= min(losses[: e - 1])), (e, losses, marked)
    assert "best.npz  by val/loss (min)" in out
    assert rows[-1][-2] == "-"  # nothing left of the run at its last epoch
    assert all(re.fullmatch(r"[\d.]+(s|m\d\ds)", row[-3]) for row in rows)  # epoch time


def test_small_metrics_keep_their_significant_digits():
    assert number(1.234567e-5) == "1.235e-05"
    assert number(0.000651) == "0.0006510"
    assert number(0.95) == "0.9500" and number(1.0) == "1.000"
    assert number(None) == "-" and number(float("nan")) == "nan"
    assert number(0.000651, 8) == "0.000651" and number(-1.234e-5, 7) == "-1e-05"
    assert all(len(number(x, 7)) <= 7 for x in (1e-300, -3.3e-7, 123456.0, 0.1234567))
    assert duration(0.04) == "0.04s" and duration(4.56) == "4.6s" and duration(125) == "2m05s"
    assert duration(None) == "-" and duration(3725) == "1h02m"
    assert per_second(94712) == "94.7k" and per_second(999.99) == "1k"


def test_epoch_table_wraps_between_columns_when_the_line_is_narrow():
    headers = ["epoch", "train/loss", "val/loss", "val/acc", "val/f1", "time", "eta"]
    widths = [5, 10, 8, 7, 7, 6, 6]
    wide = EpochTable(headers, widths, 80)
    assert len(wide.lines) == 1 and len(wide.render(headers)[0]) <= 80
    narrow = EpochTable(headers, widths, 30)
    lines = narrow.render(headers)
    assert len(lines) > 1 and all(len(line) <= 30 for line in lines)
    assert " ".join(" ".join(lines).split()) == " ".join(headers)  # every column, in order
    assert all(line.startswith(" " * 5) for line in lines[1:])  # continued past the epoch


def test_regression_says_the_units_of_its_loss(tmp_path, capsys, monkeypatch):
    out = _train(capsys, tmp_path, monkeypatch, _regression())
    assert "loss      mse in standardized target units (data.standardize_target)" in out
    assert "losses: mse in standardized target units" in out
    code, text, _ = cli(capsys, "eval", "logs/r")
    assert code == 0 and re.search(r"^  loss +\S+ \(standardized target units\)$", text, re.M)
    config = _regression()
    config["data"]["standardize_target"] = False
    out = _train(capsys, tmp_path / "logs", monkeypatch, config)  # in logs/logs/r
    assert "mse in the target's units, squared" in out and "standardized" not in out
    code, text, _ = cli(capsys, "eval", "logs/r")
    assert code == 0 and re.search(r"^  loss +\S+ \(the target's units, squared\)$", text, re.M)


def _run(tmp_path, reporter, **changes):
    config = write_config(tmp_path / "c.yaml", small_config(**changes))
    config = load_config(config, options={"logging.logdir": ("--logdir", str(tmp_path))})
    run = Run(config, prepare(config, "c.yaml"), reporter)
    run.fit(run_folder(config, "r"))
    return run


def test_the_live_bar_fits_and_shows_the_running_epoch(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # paths shown relative to it: short
    stream = io.StringIO()
    console = Console(file=stream, force_terminal=True, width=80, highlight=False)
    drawn = []

    class Watching(RichReporter):
        def _draw(self, run, batch):
            super()._draw(run, batch)
            drawn.append(self._bar.tasks[0].fields["right"])

    train = {"epochs": 2, "batch_size": 8}
    _run(tmp_path, Watching(console), train=train, logging={"every_n_steps": 5})
    assert drawn[0].split()[:3] == ["0/30", "loss", "-"]  # a new epoch shows no old loss
    later = [d for d in drawn if d.split()[0] not in ("0/30",)]
    assert later and all("loss" in d and "acc" in d for d in later), drawn
    assert any("elapsed" in d and "eta" in d for d in drawn), drawn
    visible = [STYLE.sub("", frame) for frame in FRAME_BREAK.split(stream.getvalue())]
    assert sum("epoch 2/2" in frame for frame in visible) > 1
    assert max(len(line) for line in visible) <= 80, max(visible, key=len)


def test_running_loss_is_the_mean_of_the_epochs_steps(tmp_path):
    seen = []

    class Recording(Reporter):
        def log(self, run, loss, rate):
            super().log(run, loss, rate)
            seen.append((run.progress.batch, dict(self._running)))

        def epoch_end(self, run, metrics):
            super().epoch_end(run, metrics)
            seen.append(("end", metrics))

    _run(tmp_path, Recording(Console(file=io.StringIO())), train={"epochs": 1, "batch_size": 32})
    *logs, (_, metrics) = seen
    batch, running = logs[-1]
    assert batch == 8  # 240 training samples / 32: the last step logs
    assert running["loss"] == pytest.approx(metrics["train/loss"], rel=1e-12)
    assert running["acc"] == pytest.approx(metrics["train/accuracy"], rel=1e-12)


def test_a_path_wider_than_the_line_stands_whole_on_its_own_line():
    stream = io.StringIO()
    reporter = Reporter(Console(file=stream, width=40))
    path = "/a/very/long/folder/name/that/does/not/fit/anywhere/checkpoints"
    reporter.field("saved in", path)
    reporter.field("data", "a b c " * 12)
    lines = stream.getvalue().splitlines()
    assert lines[:2] == ["saved in", path]
    assert all(len(line) <= 40 for line in lines[2:]) and len(lines) > 3
