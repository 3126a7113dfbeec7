"""safe_io: atomic replacement, refusal to overwrite, cleanup after errors, disk errors worded.
In: files under tmp_path. Out: assertions (milliseconds).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest

from flashocc_ros.safe_io import (
    OutputExistsError,
    atomic_output,
    disk_error_line,
    is_disk_error,
    save_npz,
    write_text,
)


def test_a_write_replaces_the_file_whole_and_leaves_nothing_else(tmp_path: Path) -> None:
    target = tmp_path / "grid.npz"
    save_npz(target, {"semantics": np.zeros((2, 3, 4), np.uint8)})
    save_npz(target, {"semantics": np.ones((2, 3, 4), np.uint8)})
    with np.load(target) as z:
        assert int(z["semantics"].sum()) == 24
    assert [p.name for p in tmp_path.iterdir()] == ["grid.npz"]
    plain = tmp_path / "plain"
    plain.write_bytes(b"")
    assert target.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777  # umask, not 0600


def test_an_error_in_the_block_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "world.json"
    write_text(target, "old")
    with pytest.raises(KeyboardInterrupt), atomic_output(target) as tmp:
        tmp.write_text("half of the new")
        assert not list(tmp_path.glob("*.json"))[1:]  # the temporary never matches *.json
        raise KeyboardInterrupt
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["world.json"]


def test_overwrite_false_refuses_an_existing_file_before_writing(tmp_path: Path) -> None:
    target = tmp_path / "1.npz"
    target.write_bytes(b"mine")
    with pytest.raises(OutputExistsError, match=r"1\.npz already exists"):
        save_npz(target, {"a": np.zeros(1)}, overwrite=False)
    refused = pytest.raises(OutputExistsError, match="already exists; pass --overwrite")
    with refused, atomic_output(target, overwrite=False, hint="pass --overwrite") as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"mine"
    assert [p.name for p in tmp_path.iterdir()] == ["1.npz"]
    save_npz(tmp_path / "2.npz", {"a": np.zeros(1)}, overwrite=False)  # a new name is fine


def test_disk_errors_are_worded_for_the_user() -> None:
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/.x.npz.ab12.part")
    assert (
        disk_error_line(full, "/data/x.npz")
        == "cannot write /data/x.npz: no space left on the disk"
    )
    ro = OSError(errno.EROFS, os.strerror(errno.EROFS))
    assert disk_error_line(ro, "out") == "cannot write out: the file system is read-only"
    assert is_disk_error(full) and is_disk_error(ro)
    other = OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG))
    assert not is_disk_error(other)
    assert disk_error_line(other, "p") == f"cannot write p: {os.strerror(errno.ENAMETOOLONG)}"
