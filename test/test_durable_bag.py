"""DurableBagWriter: a bag cut short by a full disk, or closed after an error, still opens.
In: std_msgs/String messages of 300 kB written into a small tmpfs (small_disk) or a plain folder.
Out: what rosbags reads back; the disk errors the writer reported. ROS-free (rosbags only).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from rosbags.rosbag2 import Reader, WriterError
from rosbags.typesys import Stores, get_typestore
from small_disk import kind, run_on_small_disk

from flashocc_ros.durable_bag import RESERVE_NAME, DurableBagWriter

STRING = "std_msgs/msg/String"

# Run in a child process on the small disk: write until the disk refuses, close, report.
_WRITE_UNTIL_FULL = """
import sys
from pathlib import Path
from rosbags.typesys import Stores, get_typestore
from flashocc_ros.durable_bag import DurableBagWriter
store = get_typestore(Stores.ROS2_JAZZY)
bag = DurableBagWriter(Path(sys.argv[1]))
conn = bag.add_connection("/text", "std_msgs/msg/String", store)
n = 0
try:
    while n < 1000:
        msg = store.types["std_msgs/msg/String"](data=f"{n:06d}" + "x" * 300_000)
        bag.write(conn, 1000 + n, bytes(store.serialize_cdr(msg, "std_msgs/msg/String")))
        n += 1
except OSError as err:
    print(f"refused after {n}: errno {err.errno}")
bag.close()
print(f"kept {bag.messages}")
"""


def _texts(path: Path) -> list[str]:
    store = get_typestore(Stores.ROS2_JAZZY)
    with Reader(path) as reader:
        return [store.deserialize_cdr(d, STRING).data[:6] for _, _, d in reader.messages()]


def test_a_bag_cut_short_by_a_full_disk_opens_with_every_flushed_message(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    proc = run_on_small_disk(
        [sys.executable, "-c", _WRITE_UNTIL_FULL, str(disk / "bag")], disk, size_kib=3072
    )
    assert proc.returncode == 0, proc.stderr
    assert "refused after" in proc.stdout, proc.stdout
    kept = int(proc.stdout.split("kept ")[1])
    texts = _texts(disk / "bag")
    assert len(texts) == kept >= 3
    assert texts == [f"{i:06d}" for i in range(kept)]  # in order, none torn
    assert sorted(p.name for p in (disk / "bag").iterdir()) == ["bag.mcap", "metadata.yaml"]
    if kind() == "tmpfs":
        assert "errno 28" in proc.stdout  # ENOSPC: the disk itself was full


def test_close_after_an_error_elsewhere_keeps_what_was_written(tmp_path: Path) -> None:
    store = get_typestore(Stores.ROS2_JAZZY)
    bag = DurableBagWriter(tmp_path / "bag")
    assert (tmp_path / "bag" / RESERVE_NAME).stat().st_size > 0
    conn = bag.add_connection("/text", STRING, store)
    try:
        for n in range(5):
            msg = store.types[STRING](data=f"{n:06d}" + "x" * 300_000)
            bag.write(conn, 1000 + n, bytes(store.serialize_cdr(msg, STRING)))
        raise KeyboardInterrupt  # Ctrl-C mid-recording
    except KeyboardInterrupt:
        pass
    finally:
        bag.close()
    bag.close()  # idempotent
    assert _texts(tmp_path / "bag") == [f"{i:06d}" for i in range(5)]  # the pending chunk too
    assert not (tmp_path / "bag" / RESERVE_NAME).exists()


def test_an_existing_bag_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "bag").mkdir()
    (tmp_path / "bag" / "mine.txt").write_text("keep")
    with pytest.raises(WriterError, match="exists already"):
        DurableBagWriter(tmp_path / "bag")
    assert (tmp_path / "bag" / "mine.txt").read_text() == "keep"


def test_no_room_to_start_leaves_no_half_bag_behind(tmp_path: Path) -> None:
    """Less space than the close reserve: refused at once, and the folder it made is gone."""
    disk = tmp_path / "disk"
    code = (
        "import sys; from pathlib import Path; "
        "from flashocc_ros.durable_bag import DurableBagWriter\n"
        "try:\n    DurableBagWriter(Path(sys.argv[1]))\n"
        "except OSError as err:\n    print('refused', err.errno)"
    )
    proc = run_on_small_disk([sys.executable, "-c", code, str(disk / "bag")], disk, size_kib=128)
    assert proc.returncode == 0 and "refused" in proc.stdout, proc.stdout + proc.stderr
    assert not (disk / "bag").exists()
