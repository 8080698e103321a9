"""`.npz` files as mlpcli reads and writes them: never pickled, read within bounds, written
atomically. Nothing here knows what the arrays mean (that is checkpoint.py's business).

Reading refuses anything but a zip archive of plain `.npy` members before numpy sees it,
and refuses members whose headers claim more data than they hold, or archives that would
not fit in memory, before anything is inflated or allocated. Writing goes to a temporary
file beside the target, fsynced and renamed into place, so a crash at any moment leaves
the previous file whole.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import stat
import zipfile
import zlib
from pathlib import Path

import numpy as np

from mlpcli import memory
from mlpcli.errors import CheckpointError, MlpcliError
from mlpcli.paths import temp_beside


def write_atomic(paths: list[str | Path], payload: dict[str, np.ndarray]) -> None:
    """Write one checkpoint to every path in `paths`, each atomically.

    The file is written once to a temporary file (fsynced); every other path gets a hard
    link to it renamed into place, so last.npz and best.npz cost no second write.
    """
    paths = [Path(p) for p in paths]
    first = paths[0]
    tmp = temp_beside(first)
    try:
        with open(tmp, "xb") as f:
            np.savez(f, **payload)
            f.flush()
            os.fsync(f.fileno())
        for path in paths[1:]:
            other = temp_beside(path)
            try:
                os.link(tmp, other)
            except OSError:  # no hard links here: copy instead
                shutil.copyfile(tmp, other)
            os.replace(other, path)
        os.replace(tmp, first)
        for folder in {p.parent for p in paths}:
            fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(fd)  # make the renames themselves durable
            finally:
                os.close(fd)
    except OSError as e:  # a full disk, a read-only or vanished folder
        raise MlpcliError(
            f"cannot write checkpoint {first}: {e.strerror or e}; "
            "the checkpoints saved before are unchanged"
        ) from None
    finally:
        with contextlib.suppress(OSError):  # leftovers are ignored by readers anyway
            tmp.unlink(missing_ok=True)
            for path in paths[1:]:
                for left in path.parent.glob(f".{path.name}.{os.getpid()}.*.tmp"):
                    left.unlink(missing_ok=True)


def read_arrays(path: Path, where: str, prefix: str = "") -> dict[str, np.ndarray]:
    """The arrays of an npz (those whose names start with `prefix`), never unpickling."""
    if not path.exists():
        raise CheckpointError(f"{where}: file not found")
    if path.is_dir():
        raise CheckpointError(f"{where}: is a directory, not a checkpoint")
    if not stat.S_ISREG(path.stat().st_mode):
        raise CheckpointError(f"{where}: not a regular file (a device, pipe or socket)")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{where}: the file is empty")
    _check_zip(path, where)
    try:
        try:
            _check_sizes(path, where, prefix)
        except CheckpointError:
            raise
        except Exception as e:  # noqa: BLE001 - a header numpy cannot parse, in any way
            if "allow_pickle" in str(e) or "Object arrays" in str(e):
                raise
            raise ValueError(f"a damaged array header ({type(e).__name__})") from None
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files if key.startswith(prefix)}
    except ValueError as e:
        if "allow_pickle" in str(e) or "Object arrays" in str(e):
            raise CheckpointError(
                f"{where}: holds pickled Python objects; refusing to load them"
            ) from None
        raise CheckpointError(f"{where}: damaged or not an npz file ({e})") from None
    # zipfile raises all of these for damaged archives (NotImplementedError for a flipped
    # compression method or version field, a RuntimeError subclass)
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError, RuntimeError) as e:
        raise CheckpointError(f"{where}: damaged or not an npz file ({e})") from None


def _check_sizes(path: Path, where: str, prefix: str) -> None:
    """Refuse, before anything is inflated or allocated, members whose .npy headers claim
    more data than the member holds, and archives that would not fit in memory. zipfile
    stops a member at its declared size, so these bounds hold while numpy reads."""
    total = 0
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if not info.filename.startswith(prefix):
                continue
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                if version not in ((1, 0), (2, 0), (3, 0)):
                    raise ValueError(f"{info.filename}: unknown .npy version {version}")
                read = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0  # 3.0 differs in encoding only
                )
                shape, _, dtype = read(member, max_header_size=1 << 16)
                claimed = math.prod(shape) * dtype.itemsize
                if claimed > info.file_size:
                    raise CheckpointError(
                        f"{where}: {info.filename} claims {claimed:,} bytes of data but holds "
                        f"{info.file_size:,}: damaged or forged"
                    )
            total += info.file_size
    memory.require(total, f"{where}: its arrays", CheckpointError)


def _check_zip(path: Path, where: str) -> None:
    """Refuse anything but a zip archive before numpy sees it (numpy would try pickle)."""
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic.startswith(b"\x93NUMPY"):
        raise CheckpointError(f"{where}: a bare .npy array, not an npz checkpoint")
    if not magic.startswith(b"PK\x03\x04"):
        what = "a text file" if _is_text(path) else "not an npz file"
        raise CheckpointError(
            f"{where}: expected a checkpoint (.npz, or a run folder), got {what} (no zip header)"
        )


def _is_text(path: Path) -> bool:
    """Whether the file starts with printable UTF-8 text (a config given for a checkpoint)."""
    with open(path, "rb") as f:
        head = f.read(512)
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(c.isprintable() or c in "\t\r\n" for c in text)
