"""`tools.replay` never loses or corrupts a user's files: existing npz files are kept unless asked,
and a full or read-only disk ends it with one line, exit 1, and only whole files left behind.
In: a generated 3-keyframe bag, the `tiny` model with random weights, a small tmpfs (small_disk).
Out: exit codes, log lines, the files left.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest
from small_disk import kind, run_on_small_disk

from flashocc_ros.safe_io import PART_SUFFIX
from flashocc_ros.tools import replay
from flashocc_ros.tools.world import main as world_main

KEYFRAMES = 3


@pytest.fixture(scope="module")
def bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("replay_writes") / "bag"
    size = ["--width", "176", "--height", "99", "--mask-width", "16"]
    args = ["generate", "--bag", str(path), "--scenes", "1", "--keyframes", str(KEYFRAMES),
            "--keyframes-only", *size]  # fmt: skip
    assert world_main(args) == 0
    return path


def _replay_cmd(bag: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "flashocc_ros.tools.replay", str(bag), "--out", str(out),
            "--model-config", "tiny", "--weights", "random"]  # fmt: skip


def _assert_only_whole_npz(folder: Path) -> int:
    """Every file left is a complete npz the evaluator reads; no temporary file remains."""
    files = sorted(folder.iterdir()) if folder.is_dir() else []
    assert not [f for f in files if f.name.endswith(PART_SUFFIX)], files
    for f in files:
        with np.load(f) as z:
            assert z["semantics"].shape == (200, 200, 16), f
    return len(files)


def test_existing_npz_files_are_kept_unless_overwrite_is_given(
    bag: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    mine = out / "1700000000000000000.npz"
    mine.write_bytes(b"the user's own result")
    args = [str(bag), "--out", str(out), "--model-config", "tiny", "--weights", "random"]
    with caplog.at_level(logging.ERROR):
        assert replay.main(args) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "already holds 1 .npz files" in errors[0], errors
    assert "--overwrite" in errors[0]
    assert mine.read_bytes() == b"the user's own result"
    assert replay.main([*args, "--overwrite"]) == 0
    assert _assert_only_whole_npz(out) == KEYFRAMES


@pytest.mark.parametrize("read_only", [False, True], ids=["full", "read-only"])
def test_a_full_or_read_only_disk_ends_with_one_line_and_whole_files(
    bag: Path, tmp_path: Path, read_only: bool
) -> None:
    disk = tmp_path / "disk"
    (disk / "out").mkdir(parents=True)
    # tmpfs: 8 KiB are two pages, room for two of the three ~2 KB grids; rlimit: 1 KiB per file
    size = 8 if kind() == "tmpfs" else 1
    proc = run_on_small_disk(_replay_cmd(bag, disk / "out"), disk, size_kib=size,
                             read_only=read_only)  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("flashocc-replay:")]
    assert len(errors) == 1, output
    reasons = {
        ("tmpfs", False): "no space left on the disk",
        ("tmpfs", True): "the file system is read-only",
        ("rlimit", False): "exceed the size this process may write",
        ("rlimit", True): "no permission to write there",
    }
    assert "cannot write" in errors[0] and reasons[kind(), read_only] in errors[0], errors
    left = _assert_only_whole_npz(disk / "out")
    assert f"the {left} grids written before it are complete" in errors[0]
    if kind() == "tmpfs" and not read_only:
        assert left == 2  # the grids that fitted are there, whole
