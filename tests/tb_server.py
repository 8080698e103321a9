"""A real TensorBoard server for tests: started on a free port of 127.0.0.1 in its own process
group (so its Rust data server goes with it), spoken to over HTTP."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

# What TensorBoard prints when the Rust data server (--load_fast=true) is missing or will not
# start: tests of that loader skip on it.
FAST_LOADER_UNAVAILABLE = ("--load_fast=true not available", "Could not start data server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def tensorboard(logdir: Path, load_fast: str, log: Path):
    """Yields (process, base URL) of `tensorboard --logdir logdir`; its output goes to `log`."""
    port = free_port()
    cmd = [sys.executable, "-m", "tensorboard.main", f"--logdir={logdir}", "--host=127.0.0.1"]
    cmd += [f"--port={port}", f"--load_fast={load_fast}", "--reload_interval=1"]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)  # its own group: the Rust data server goes too
        proc.wait(10)


def still_running(proc: subprocess.Popen, log: Path, load_fast: str) -> None:
    """Fails the test if the server has exited, or skips it where the fast loader cannot run."""
    if proc.poll() is None:
        return
    output = log.read_text(errors="replace")
    if load_fast == "true" and any(m in output for m in FAST_LOADER_UNAVAILABLE):
        pytest.skip(f"the fast loader cannot run here:\n{output[-2000:]}")
    pytest.fail(f"tensorboard exited with {proc.returncode}:\n{output[-2000:]}")


def get(base: str, route: str, **params):
    """GET a JSON route."""
    url = f"{base}{route}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def post(base: str, route: str, body: dict):
    """POST a JSON body to a JSON route (as the HParams dashboard asks for its data)."""
    request = urllib.request.Request(
        f"{base}{route}", data=json.dumps(body).encode(), method="POST"
    )
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=5) as r:
        return json.loads(r.read())
