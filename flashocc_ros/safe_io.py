"""Writes that never leave a half-written file: a temporary file beside the target, then a rename.
In: a target path and the bytes / text / arrays for it. Out: the complete file, or no change.

`atomic_output(path)` yields a temporary path in the target's folder, named
`.<name>.<random>.part` so that no reader globbing `*.npz` or `*.json` picks it up. When the block
ends without an error the data is flushed to the disk (fsync) and renamed over `path` with
`os.replace`, which readers see as one step; on any error (a full or read-only disk, Ctrl-C) the
temporary file is removed, `path` is left as it was, and an OSError names `path`, not the
temporary. With `overwrite=False` an existing target is refused with `OutputExistsError` before
anything is written. Every writer of the package that produces user data goes through here (the
recorder, `tools.replay`, the world dataset writer, the weights files). `disk_error_line` words
an OSError in the user's terms ("no space left on the disk").
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

PART_SUFFIX = ".part"  # suffix of the temporary files (removed on failure, renamed on success)

#: errno -> what it means for someone writing files, in the user's terms.
_DISK_REASONS: dict[int, str] = {
    errno.ENOSPC: "no space left on the disk",
    errno.EDQUOT: "the disk quota is used up",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "no permission to write there",
    errno.EPERM: "no permission to write there",
    errno.EFBIG: "the file would exceed the size this process may write (ulimit -f)",
    errno.EIO: "an input/output error on the disk",
}


class OutputExistsError(FileExistsError):
    """An output file exists already and the caller did not ask to overwrite it."""


def _refuse_existing(path: Path, hint: str) -> None:
    if path.exists() or path.is_symlink():
        raise OutputExistsError(f"{path} already exists; {hint}")


def _temporary_beside(path: Path) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}{PART_SUFFIX}")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_output(
    path: str | Path,
    *,
    overwrite: bool = True,
    durable: bool = True,
    hint: str = "choose another output or allow overwriting",
) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` when the block succeeds.

    `overwrite=False`: OutputExistsError (its message ends with `hint`) when `path` exists, before
    the block runs and again just before the rename. `durable`: fsync the data before the rename
    (a power cut then leaves the old file or the new one, never an empty one).
    """
    path = Path(path)
    if not overwrite:
        _refuse_existing(path, hint)
    tmp = _temporary_beside(path)
    try:
        yield tmp
        if durable:
            _fsync(tmp)
        if not overwrite:
            _refuse_existing(path, hint)
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError) and err.filename in (None, str(tmp)):
            err.filename = str(path)  # name the file the user asked for, not the temporary
        raise


def write_bytes(
    path: str | Path, data: bytes, *, overwrite: bool = True, durable: bool = True
) -> None:
    """Write `data` to `path` atomically (see `atomic_output`)."""
    with atomic_output(path, overwrite=overwrite, durable=durable) as tmp, open(tmp, "xb") as f:
        f.write(data)


def write_text(path: str | Path, text: str, *, overwrite: bool = True) -> None:
    """Write UTF-8 `text` to `path` atomically (see `atomic_output`)."""
    write_bytes(path, text.encode("utf-8"), overwrite=overwrite)


def save_npz(
    path: str | Path, arrays: dict[str, Any], *, overwrite: bool = True, durable: bool = True
) -> None:
    """`np.savez_compressed(path, **arrays)`, atomically: readers see the whole file or none."""
    with atomic_output(path, overwrite=overwrite, durable=durable) as tmp, open(tmp, "xb") as f:
        np.savez_compressed(f, **arrays)


def is_disk_error(err: BaseException) -> bool:
    """True for the OSErrors of a full, read-only or forbidden disk (see `disk_error_line`)."""
    return isinstance(err, OSError) and err.errno in _DISK_REASONS


def disk_error_line(err: OSError, path: str | Path | None = None) -> str:
    """'cannot write PATH: no space left on the disk' for an OSError raised while writing."""
    where = path if path is not None else (err.filename or "a file")
    reason = _DISK_REASONS.get(err.errno or 0) or err.strerror or str(err)
    return f"cannot write {where}: {reason}"


__all__ = [
    "PART_SUFFIX",
    "OutputExistsError",
    "atomic_output",
    "disk_error_line",
    "is_disk_error",
    "save_npz",
    "write_bytes",
    "write_text",
]
