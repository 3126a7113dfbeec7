"""The world dataset writer on a full disk: `tools.world generate` ends with one line, and every
file it left is whole (images decode, labels load, no temporary file, no half world.json).
In: `world generate` of one small scene on a tmpfs too small for it (small_disk). Out: the files.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
from small_disk import kind, run_on_small_disk

from flashocc_ros.safe_io import PART_SUFFIX
from flashocc_ros.world.dataset import INDEX_FILE


def test_a_full_disk_leaves_only_whole_files_and_no_index(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    cmd = [sys.executable, "-m", "flashocc_ros.tools.world", "generate", "--out",
           str(disk / "data"), "--scenes", "1", "--keyframes", "2", "--keyframes-only",
           "--width", "176", "--height", "99"]  # fmt: skip
    # tmpfs: room for the first six images (~8 kB each); rlimit: a labels.npz (~50 kB) is too big
    proc = run_on_small_disk(cmd, disk, size_kib=64 if kind() == "tmpfs" else 16)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and len(errors) == 1, proc.stderr
    assert PART_SUFFIX not in errors[0], errors  # names the file asked for, not a temporary
    files = [p for p in (disk / "data").rglob("*") if p.is_file()]
    assert files, "nothing was written before the disk filled"
    assert not (disk / "data" / INDEX_FILE).exists()  # no index: the folder is no dataset
    for f in files:
        assert not f.name.endswith(PART_SUFFIX), f
        if f.suffix == ".npz":
            with np.load(f) as z:
                assert z["semantics"].shape == (200, 200, 16), f
        else:
            assert cv2.imread(str(f), cv2.IMREAD_UNCHANGED) is not None, f
