"""flashocc_play and flashocc_record as processes: SIGINT/SIGTERM end them cleanly, a full disk
ends the recorder with one line and a bag that opens, existing outputs are never replaced.
In: small bags of Occupancy grids written here, the installed executables, a tmpfs (small_disk).
Out: exit codes, output (no traceback), the bag and npz files left (read with rosbags / numpy).
"""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from small_disk import kind, run_on_small_disk

from flashocc_ros.config import GridConfig
from flashocc_ros.safe_io import PART_SUFFIX

pytestmark = pytest.mark.ros

TOPIC = "/test/occupancy"
SMALL = GridConfig(x_min=-2.0, x_max=2.0, y_min=-2.0, y_max=2.0)  # 10 x 10 x 16 voxels
STEP_NS = 100_000_000  # 0.1 s between the grids of a bag


def grid_bag(path: Path, grid: GridConfig, count: int, bad_at: int | None = None) -> None:
    """A bag of `count` Occupancy grids with random labels on TOPIC; message `bad_at` claims
    more voxels than it carries (a malformed grid the recorder must refuse, not crash on)."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    from flashocc_ros.msgdefs import OCCUPANCY_TYPE, flashocc_typestore
    from flashocc_ros.world.bag import occupancy_message

    store = flashocc_typestore()
    rng = np.random.default_rng(0)
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conn = writer.add_connection(TOPIC, OCCUPANCY_TYPE, typestore=store)
        for i in range(count):
            stamp = 1_700_000_000_000_000_000 + i * STEP_NS
            labels = rng.integers(0, 18, grid.shape, dtype=np.uint8)
            msg = occupancy_message(store, stamp, labels, grid)
            if i == bad_at:
                msg = dataclasses.replace(msg, labels=msg.labels[:7])
            writer.write(conn, stamp, store.serialize_cdr(msg, OCCUPANCY_TYPE))


def command(name: str, *args: str) -> list[str]:
    from flashocc_ros.ros.live_run import executable

    return [sys.executable, str(executable(name)), *args]


def start(cmd: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def finish(proc: subprocess.Popen[str], timeout: float = 30.0) -> str:
    try:
        return proc.communicate(timeout=timeout)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def read_bag(path: Path) -> int:
    """Messages of the bag at `path`, read back with rosbags (what `evaluate` uses)."""
    from rosbags.rosbag2 import Reader

    with Reader(path) as reader:
        return sum(1 for _ in reader.messages())


def whole_npz(folder: Path) -> int:
    files = sorted(folder.iterdir()) if folder.is_dir() else []
    assert not [f for f in files if f.name.endswith(PART_SUFFIX)], files
    for f in files:
        with np.load(f) as z:
            assert z["semantics"].ndim == 3, f
    return len(files)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_player_and_recorder_end_cleanly_on_a_signal(
    ros_env: dict[str, str], tmp_path: Path, sig: signal.Signals
) -> None:
    source = tmp_path / "in"
    grid_bag(source, SMALL, 5, bad_at=1)
    out = tmp_path / "out"
    rec = start(command("flashocc_record", "--topic", TOPIC, "--npz", str(out / "npz"),
                        "--bag", str(out / "bag")), ros_env)  # fmt: skip
    play = start(command("flashocc_play", str(source), "--loop", "--wait-for", TOPIC,
                         "--wait-timeout", "60"), ros_env)  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and rec.poll() is None and play.poll() is None:
            if len(list((out / "npz").glob("*.npz"))) >= 4:  # every valid grid of the bag
                break
            time.sleep(0.2)
        assert rec.poll() is None and play.poll() is None, "a process ended early"
        play.send_signal(sig)
        play_out = finish(play)
        rec.send_signal(sig)
        rec_out = finish(rec)
    finally:
        for proc in (play, rec):
            if proc.poll() is None:
                proc.kill()
    assert play.returncode == 0, play_out
    assert "Traceback" not in play_out and f"stopped by {sig.name}" in play_out, play_out
    assert rec.returncode == 0, rec_out
    assert "Traceback" not in rec_out, rec_out
    assert "no valid grid" in rec_out, rec_out  # the malformed grid was refused, not fatal
    assert "recorded" in rec_out and "bag" in rec_out, rec_out
    assert read_bag(out / "bag") >= 4
    assert whole_npz(out / "npz") == 4  # one per valid stamp of the looping bag, each whole


def test_the_recorder_on_a_full_disk_ends_in_one_line_with_a_readable_bag(
    ros_env: dict[str, str], tmp_path: Path
) -> None:
    source = tmp_path / "in"
    grid_bag(source, GridConfig(), 3)  # 200 x 200 x 16: 640 kB per grid
    play = start(command("flashocc_play", str(source), "--loop", "--wait-for", TOPIC,
                         "--wait-timeout", "120"), ros_env)  # fmt: skip
    disk = tmp_path / "disk"
    try:
        rec = run_on_small_disk(
            command("flashocc_record", "--topic", TOPIC, "--npz", str(disk / "npz"),
                    "--bag", str(disk / "bag"), "--timeout", "120"),
            disk, size_kib=4096, env=ros_env, timeout=180,
        )  # fmt: skip
    finally:
        play.terminate()
        finish(play)
    output = rec.stdout + rec.stderr
    assert rec.returncode == 1, output
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("flashocc_record:")]
    assert len(errors) == 1, output
    reason = "no space left on the disk" if kind() == "tmpfs" else "exceed the size"
    assert "cannot write" in errors[0] and reason in errors[0], errors
    assert "readable; bag" in errors[0] and "closed" in errors[0], errors
    assert read_bag(disk / "bag") >= 2  # the chunks that reached the disk
    assert sorted(p.name for p in (disk / "bag").iterdir()) == ["bag.mcap", "metadata.yaml"]
    assert whole_npz(disk / "npz") >= 2


def test_the_recorder_keeps_existing_npz_files_unless_told(
    ros_env: dict[str, str], tmp_path: Path
) -> None:
    npz = tmp_path / "npz"
    npz.mkdir()
    (npz / "1.npz").write_bytes(b"an earlier recording")
    proc = subprocess.run(
        command("flashocc_record", "--topic", TOPIC, "--npz", str(npz), "--timeout", "1"),
        env=ros_env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "already holds 1 .npz files" in proc.stderr and "--overwrite" in proc.stderr
    assert (npz / "1.npz").read_bytes() == b"an earlier recording"


def test_the_player_refuses_a_bag_that_is_no_bag_in_one_line(
    ros_env: dict[str, str], tmp_path: Path
) -> None:
    bad = tmp_path / "bag"
    bad.mkdir()
    (bad / "metadata.yaml").write_text("rosbag2_bagfile_information: [not, a, bag]\n")
    proc = subprocess.run(
        command("flashocc_play", str(bad)), env=ros_env, capture_output=True, text=True,
        timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    assert "Traceback" not in output and "flashocc_play: cannot play" in output, output
