"""Hostile data files: bombs, lying headers, FIFOs and devices, data larger than memory.

Each ends as a DataError (exit 2, one `error:` line) naming the file, without inflating,
allocating or waiting for more than its header or the memory free allows. Memory is made
small by replacing `mlpcli.memory.available_bytes`, so the bombs stay cheap (a few hundred
KB that inflate to 256 MiB); one test proves the bounds for real under RLIMIT_AS.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO, cli, small_config, user_error, write_config

from mlpcli import memory
from mlpcli.data import load_dataset, load_features
from mlpcli.errors import DataError

MiB = 1 << 20
MEMBER = 16 * MiB  # what one gzip member of a bomb inflates to (it takes ~16 KB)


def load(dtype="float32", **data):
    data.setdefault("target", None)
    return load_dataset(data, task="classification", seed=0, dtype=dtype, config_file="c.yaml")


def features(path, dtype="float32"):
    return load_features(str(path), feature_names=None, dtype=dtype)


def error_of(fn, *args, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        fn(*args, **kwargs)
    return str(info.value)


@pytest.fixture
def free(monkeypatch):
    """Set the memory this process may still take, in MiB."""

    def set_free(mib: float) -> None:
        monkeypatch.setattr(memory, "available_bytes", lambda: int(mib * MiB))

    return set_free


@contextlib.contextmanager
def peak_bytes():
    """Yields a list that holds, afterwards, the peak bytes traced inside the block."""
    result: list[int] = []
    tracemalloc.start()
    try:
        yield result
    finally:
        result.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def npy_header(shape, dtype="<f4") -> bytes:
    """A .npy header claiming `shape`, with no data after it."""
    buf = io.BytesIO()
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue()


def idx_bytes(dims, data: bytes = b"") -> bytes:
    """An IDX file of uint8 values: its header claiming `dims`, then `data`."""
    return struct.pack(">BBBB", 0, 0, 0x08, len(dims)) + struct.pack(f">{len(dims)}I", *dims) + data


ZEROS = gzip.compress(bytes(MEMBER), 9)
ROWS = gzip.compress(b"0,0\n" * (MEMBER // 4), 9)  # 4 Mi rows of a 2-column CSV
CELLS = gzip.compress(b"0," * (MEMBER // 2), 9)  # 8 Mi cells of one line


def bomb(path: Path, head: bytes, member: bytes = ZEROS, n: int = 16) -> str:
    """A gzip file: `head`, then `n` members that each inflate to 16 MiB (a few KB each)."""
    with open(path, "wb") as f:
        f.write(gzip.compress(head))
        for _ in range(n):
            f.write(member)
    return str(path)


# --------------------------------------------------------------------- decompression bombs


@pytest.mark.parametrize("name", ["big.npy.gz", "images.gz"])
def test_npy_and_idx_gz_are_never_inflated_past_their_header(tmp_path, name):
    head = {  # 3328 and 812 bytes, then 256 MiB of zeros
        "big.npy.gz": npy_bytes(np.ones((100, 8), dtype=np.float32)),
        "images.gz": idx_bytes((100, 8), bytes(800)),
    }[name]
    path = bomb(tmp_path / name, head)
    with peak_bytes() as peak:
        message = error_of(features, path)
    assert message == f"{path}: inflates past {len(head)} bytes, more than its header promises"
    assert peak[0] < 12 * MiB


def test_a_few_bytes_past_an_idx_header_are_still_counted(tmp_path):
    path = tmp_path / "images.gz"
    path.write_bytes(gzip.compress(idx_bytes((2, 2), bytes(4 + 10))))
    assert f"{path}: corrupted IDX file: 10 bytes more than its header" in error_of(features, path)


def test_csv_gz_rows_stop_at_what_memory_allows(tmp_path, free):
    free(32)
    path = bomb(tmp_path / "big.csv.gz", b"a,target\n", ROWS)  # 64 Mi rows
    with peak_bytes() as peak:
        message = error_of(load, source=path)
    assert re.fullmatch(
        rf"{re.escape(path)} line (\d+): (\d+) rows so far, more than memory allows "
        r"\(32.0 MiB free\)",
        message,
    ), message
    assert peak[0] < 48 * MiB


def test_csv_gz_of_one_endless_line_stops_at_what_memory_allows(tmp_path, free):
    free(32)
    path = bomb(tmp_path / "wide.csv.gz", b"a,target\n", CELLS)
    with peak_bytes() as peak:
        message = error_of(load, source=path)
    # a table takes ~10 bytes of memory per byte of text: 28 MiB of 32 leave 2.8 MiB of text
    assert message == f"{path}: inflates past 2.8 MiB, more than memory allows (32.0 MiB free)"
    assert peak[0] < 48 * MiB


def test_plain_csv_larger_than_memory_allows(tmp_path, free):
    path = tmp_path / "big.csv"
    path.write_bytes(b"a,target\n" + b"0,0\n" * 200_000)  # 800 KB: fine for the real memory
    free(32)
    assert " rows so far, more than memory allows (32.0 MiB free)" in error_of(
        load, source=str(path)
    )


def test_npz_gz_is_inflated_only_as_far_as_memory_allows(tmp_path, free):
    buf = io.BytesIO()
    np.savez(buf, x=np.ones((10, 2)), y=np.arange(10) % 2)
    path = bomb(tmp_path / "big.npz.gz", buf.getvalue())  # a valid archive, then zeros
    free(32)
    with peak_bytes() as peak:
        message = error_of(load, source=path)
    # 28 MiB of 32 for the archive and the arrays read from it: half each
    assert message == f"{path}: inflates past 14.0 MiB, more than memory allows (32.0 MiB free)"
    assert peak[0] < 64 * MiB


# ---------------------------------------------------------------------------- header lies

LIE = (10**6, 10**6)  # 10^12 float32: 4 TB claimed by a file of a few hundred bytes
SAYS = "its header says 1000000 x 1000000 float32, 4000000000000 bytes"


@pytest.mark.parametrize("dtype", ["float32", "float64"])  # memory-mapped, read
def test_npy_header_claiming_more_than_the_file(tmp_path, dtype):
    path = tmp_path / "x.npy"
    path.write_bytes(npy_header(LIE) + bytes(100))
    np.save(tmp_path / "y.npy", np.arange(4))
    expected = f"{path}: the .npy array cannot be read (truncated: {SAYS}; the file holds 100)"
    assert error_of(load, dtype, source=str(path), target=str(tmp_path / "y.npy")) == expected
    assert error_of(features, path, dtype) == expected


def test_gzipped_npy_header_claiming_more_than_memory(tmp_path, free):
    path = tmp_path / "x.npy.gz"
    path.write_bytes(gzip.compress(npy_header(LIE) + bytes(100)))
    free(32)
    assert error_of(features, path) == (
        f"{path}: 1000000 x 1000000 float32 needs 3.6 TiB of memory, more than the 32.0 MiB free"
    )
    path.write_bytes(gzip.compress(npy_header((1000, 1000)) + bytes(100)))  # 4 MB: it fits
    assert error_of(features, path) == (
        f"{path}: the .npy array cannot be read (truncated: its header says 1000 x 1000 "
        "float32, 4000000 bytes; it inflates to 100)"
    )


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_npz_member_header_claiming_more_than_the_archive(tmp_path, compression):
    path = tmp_path / "z.npz"
    with zipfile.ZipFile(path, "w", compression=compression) as z:
        z.writestr("x.npy", npy_header(LIE) + bytes(100))
        z.writestr("y.npy", npy_bytes(np.arange(4) % 2))
    expected = f"{path}: array 'x' cannot be read (truncated: {SAYS}; the archive holds 100)"
    assert error_of(load, source=str(path)) == expected
    assert error_of(features, path) == expected


def test_idx_dims_claiming_more_than_the_file(tmp_path, free):
    path = tmp_path / "images"
    path.write_bytes(idx_bytes((100_000, 100_000), bytes(10)))
    assert error_of(features, path) == (
        f"{path}: truncated IDX file: its header says 100000x100000 values of uint8 "
        "(10000000000 bytes), it holds 10 bytes"
    )
    gz = tmp_path / "images.gz"  # its size is known only once inflated: memory decides first
    gz.write_bytes(gzip.compress(idx_bytes((100_000, 100_000), bytes(10))))
    free(32)
    assert error_of(features, gz) == (
        f"{gz}: 100000 x 100000 uint8 needs 46.6 GiB of memory, more than the 32.0 MiB free"
    )


# ---------------------------------------------------------------------- non-regular files


@contextlib.contextmanager
def unblocking(fifo: Path):
    """Should a reader block on `fifo`, open and close its write end after 5 s: the reader
    sees the end of the data, and a regression fails this test instead of hanging it."""
    done = threading.Event()

    def release() -> None:
        if done.wait(5):
            return
        while not done.is_set():
            with contextlib.suppress(OSError):  # no reader yet
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            time.sleep(0.05)

    thread = threading.Thread(target=release, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def test_fifo_as_source_target_or_predict_input_is_refused_at_once(tmp_path):
    fifo = tmp_path / "x.npy"
    os.mkfifo(fifo)
    np.save(tmp_path / "y.npy", np.arange(4) % 2)
    np.save(tmp_path / "f.npy", np.ones((4, 2)))
    start = time.monotonic()
    with unblocking(fifo):
        source = error_of(load, source=str(fifo), target=str(tmp_path / "y.npy"))
        target = error_of(load, source=str(tmp_path / "f.npy"), target=str(fifo))
        predict = error_of(features, fifo)
    assert time.monotonic() - start < 4
    assert source == f"data.source: {fifo} is a named pipe (FIFO), not a data file (c.yaml)"
    assert target == f"data.target: {fifo} is a named pipe (FIFO), not a data file (c.yaml)"
    assert predict == f"{fifo} is a named pipe (FIFO), not a data file"


def test_fifo_through_the_cli(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.mkfifo("data.csv")
    config = small_config(data={"source": "data.csv"})
    write_config(tmp_path / "c.yaml", config)
    with unblocking(tmp_path / "data.csv"):
        result = cli(capsys, "validate", "c.yaml")
    user_error(result, "data.source: data.csv is a named pipe (FIFO), not a data file")


def test_devices_sockets_and_directories_are_not_data_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a short socket path
    (tmp_path / "zero.npy").symlink_to("/dev/zero")
    (tmp_path / "dir.csv").mkdir()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind("s.csv")
        for name, kind in [
            ("zero.npy", "a character device"),
            ("s.csv", "a socket"),
            ("dir.csv", "a directory"),  # the message directories always had
        ]:
            message = error_of(load, source=name)
            assert message == f"data.source: {name} is {kind}, not a data file (c.yaml)"
            assert error_of(features, name) == f"{name} is {kind}, not a data file"
    assert error_of(features, "/dev/zero") == "/dev/zero is a character device, not a data file"


def test_a_symlink_to_a_regular_file_is_read(tmp_path):
    np.save(tmp_path / "x.npy", np.arange(8, dtype=np.float32).reshape(4, 2))
    np.save(tmp_path / "y.npy", np.arange(4) % 2)
    (tmp_path / "link.npy").symlink_to(tmp_path / "x.npy")
    d = load(source=str(tmp_path / "link.npy"), target=str(tmp_path / "y.npy"))
    assert isinstance(d.x_train, np.memmap) and d.x_train.shape == (4, 2)


# ------------------------------------------------------------------ data larger than memory


@pytest.mark.parametrize(
    "name, where, expected",
    [  # the file's 4 MB (784 KB for the IDX), and 8 bytes a value for its float64 copy
        ("x.npy", "", "1000 x 1000 float32 needs 11.4 MiB"),
        ("z.npz", " (array 'x')", "1000 x 1000 float32 needs 11.4 MiB"),
        ("images", "", "1000 x 28 x 28 uint8 needs 6.7 MiB"),
    ],
)
def test_arrays_read_into_memory_are_weighed_first(tmp_path, free, name, where, expected):
    path = tmp_path / name
    x = np.ones((1000, 1000), dtype=np.float32)
    if name == "x.npy":
        np.save(path, x)
    elif name == "z.npz":
        np.savez_compressed(path, x=x, y=np.zeros(1000))
    else:
        path.write_bytes(idx_bytes((1000, 28, 28), bytes(784_000)))
    free(4)
    assert error_of(features, path, "float64") == (
        f"{path}{where}: {expected} of memory, more than the 4.0 MiB free"
    )


def test_a_memory_map_is_exempt_but_its_validation_rows_are_not(tmp_path, free):
    np.save(tmp_path / "x.npy", np.ones((1000, 1000), dtype=np.float32))  # 3.8 MiB
    np.save(tmp_path / "y.npy", np.arange(1000) % 2)
    free(2)
    files = {"source": str(tmp_path / "x.npy"), "target": str(tmp_path / "y.npy")}
    d = load(**files)
    assert isinstance(d.x_train, np.memmap)
    message = error_of(load, **files, val_split=0.6)
    assert message == (
        f"data.val_split: {tmp_path / 'x.npy'}: a validation copy of 600 x 1000 float32 "
        "needs 2.3 MiB of memory, more than the 2.0 MiB free"
    )


# ------------------------------------------------------------------------ built-in datasets


@pytest.mark.parametrize(
    "source, options, expected",
    [
        (
            "triangle",
            {"n_samples": 10**12},
            "data.options.n_samples: 'triangle' with 1000000000000 samples of 2 features "
            "needs 58.2 TiB of memory",
        ),
        (
            "blobs",
            {"n_classes": 10**12},
            "data.options.n_classes: 'blobs' with 1000 samples of 2 features, "
            "1000000000000 classes needs 21.8 TiB of memory",
        ),
        (
            "synthetic",
            {"n_features": 10**9},
            "data.options.n_features: 'synthetic' with 10000 samples of 1000000000 features, "
            "10 classes needs 36.5 TiB of memory",
        ),
    ],
)
def test_builtin_sizes_are_weighed_before_anything_is_drawn(source, options, expected, free):
    free(100)
    message = error_of(load, "float32", source=source, options=options)
    assert message == f"{expected}, more than the 100.0 MiB free (c.yaml)"


def test_builtin_too_large_through_the_cli(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = small_config(data={"source": "triangle", "options": {"n_samples": 1e12}})
    write_config(tmp_path / "c.yaml", config)
    user_error(cli(capsys, "validate", "c.yaml"), "data.options.n_samples", "of memory")


# ----------------------------------------------------------------- for real, under RLIMIT_AS

LIMIT = 320 * MiB  # the subprocess's address space; each bomb inflates to 2 GiB
LOADER = """
import sys
from mlpcli.data import load_features
from mlpcli.errors import DataError
for path in sys.argv[1:]:
    try:
        load_features(path, feature_names=None, dtype="float32")
        print("loaded", path)
    except DataError as e:
        print("error:", e)
"""


def test_bombs_under_a_real_address_space_limit(tmp_path):
    resource = pytest.importorskip("resource")
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    if hard != resource.RLIM_INFINITY and hard < LIMIT:
        pytest.skip(f"RLIMIT_AS's hard limit ({hard} bytes) is already below {LIMIT}")
    npz = io.BytesIO()
    np.savez(npz, x=np.ones((10, 2)))
    bombs = [
        bomb(tmp_path / "b.npy.gz", npy_bytes(np.ones((10, 2), dtype=np.float32)), n=128),
        bomb(tmp_path / "b.idx.gz", idx_bytes((10, 2), bytes(20)), n=128),
        bomb(tmp_path / "b.csv.gz", b"a,b\n", ROWS, n=128),
        bomb(tmp_path / "b.npz.gz", npz.getvalue(), n=128),
    ]
    fine = tmp_path / "fine.npy.gz"  # 4 MB inflated: a file that fits still loads
    fine.write_bytes(gzip.compress(npy_bytes(np.ones((1000, 1000), dtype=np.float32))))
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}

    def run_limited(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", *args],
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT)),
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    try:
        probe = run_limited("import mlpcli.data")
    except subprocess.SubprocessError as e:  # setrlimit failed in the child
        pytest.skip(f"RLIMIT_AS cannot be set here: {e}")
    if probe.returncode != 0:
        pytest.skip(f"Python cannot run under RLIMIT_AS = {LIMIT}: {probe.stderr[-300:]}")
    proc = run_limited(LOADER, *bombs, str(fine))
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert len(lines) == 5 and lines[4] == f"loaded {fine}", proc.stdout
    assert lines[0] == f"error: {bombs[0]}: inflates past 208 bytes, more than its header promises"
    assert lines[1] == f"error: {bombs[1]}: inflates past 32 bytes, more than its header promises"
    assert lines[2].startswith(f"error: {bombs[2]} line ") and "rows so far" in lines[2]
    assert lines[3].startswith(f"error: {bombs[3]}: inflates past ")
    assert all("more than memory allows" in line for line in lines[2:4])
