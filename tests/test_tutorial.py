"""Every `$` command of docs/tutorial.md runs as written, and does what the page says."""

import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from helpers import CONFIGS, REPO, cli, load_last

TUTORIAL = REPO / "docs" / "tutorial.md"


def _commands() -> list[str]:
    return re.findall(r"^\$ (.+)$", TUTORIAL.read_text(), flags=re.M)


def _tensorboard(args: list[str]) -> None:
    """Start TensorBoard as written and see it serve; port 6006 taken: say so and go on."""
    exe = Path(sys.executable).parent / args[0]
    process = subprocess.Popen(
        [str(exe), *args[1:]], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 60
        lines = []
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            lines.append(line)
            if "http://" in line or not line and process.poll() is not None:
                break
        text = "".join(lines)
        assert "http://" in text or "already in use" in text, text
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_every_tutorial_command_runs_and_does_what_the_page_says(tmp_path, capsys, monkeypatch):
    shutil.copytree(CONFIGS, tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    outputs = {}
    commands = _commands()
    assert len(commands) == 8
    for command in commands:
        args = shlex.split(command)
        if args[0] == "mlpcli":
            code, out, err = cli(capsys, *args[1:])
            assert code == 0, (command, err)
        elif args[0] == "python":
            result = subprocess.run([sys.executable, *args[1:]], capture_output=True, text=True)
            assert result.returncode == 0, (command, result.stderr)
            out = result.stdout
        else:
            assert args[0] == "tensorboard"
            _tensorboard(args)
            out = ""
        outputs[command] = out

    def metric(run, key):
        return load_last(tmp_path / "logs" / run)[1]["metrics"][key]

    assert abs(metric("linreg", "val/loss") - 0.011) < 0.003
    r2 = next(
        float(line.split()[1])
        for line in outputs[commands[1]].splitlines()
        if line.strip().startswith("r2")
    )
    assert r2 > 0.8
    assert "[[" in outputs[commands[2]]  # the weights, printed by plain NumPy
    assert metric("logreg", "val/accuracy") == 1.0
    assert 0.65 < metric("triangle-linear", "val/accuracy") < 0.8
    assert metric("triangle", "val/accuracy") >= 0.95
    assert outputs[commands[-1]].rstrip().endswith("ok: every gradient agrees to 1e-06 relative")

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "logs" / "triangle"), size_guidance={"images": 0})
    events.Reload()
    assert {"vis/decision_surface", "vis/hidden_units"} <= set(events.Tags()["images"])
    assert events.Tags()["graph"]
    steps = [image.step for image in events.Images("vis/decision_surface")]
    assert steps[0] == 0 and steps == sorted(steps) and len(steps) == 13  # 60 epochs, every 5
