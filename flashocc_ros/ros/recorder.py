"""Records the node's occupancy output to Occ3D-style npz files and/or a rosbag2.
In: flashocc_ros/msg/Occupancy messages on a topic. Out: <out>/<stamp_ns>.npz and/or a bag.

Each npz holds `semantics` (X, Y, Z) uint8 in Occ3D [x][y][z] order (what the evaluator reads)
and, when present, `confidence`. The bag keeps the serialised messages unchanged.

Nothing the user has is lost: npz files are written atomically (`flashocc_ros.safe_io`), a file
that existed before the recorder started is never replaced unless `overwrite` is set, and the
bag (`DurableBagWriter`) is closed on every exit path so `rosbags` can read it. On a full or
read-only disk the recorder stops writing, `failure` says why in one line, and everything written
before stays readable. `flashocc_record` ends cleanly on SIGINT and SIGTERM (exit 0), with exit 1
after a write failure and 2 for a usage mistake.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from rclpy.signals import SignalHandlerOptions

from flashocc_ros.durable_bag import DurableBagWriter
from flashocc_ros.ros.stop_signals import StopSignals
from flashocc_ros.safe_io import OutputExistsError, disk_error_line, save_npz
from flashocc_ros.sensing.tf_buffer import transform_matrix

LOG = logging.getLogger(__name__)
OCCUPANCY_TYPE = "flashocc_ros/msg/Occupancy"


def occupancy_to_arrays(msg: Any) -> dict[str, np.ndarray]:
    """Occupancy message -> the grid file's arrays (`runtime.grid_file`): 'semantics' (X, Y, Z)
    uint8[, 'confidence'] and, when the message has them, the cameras, stamps and poses."""
    shape = (int(msg.size_x), int(msg.size_y), int(msg.size_z))
    labels = np.frombuffer(bytes(msg.labels), dtype=np.uint8)
    if labels.size != shape[0] * shape[1] * shape[2]:
        raise ValueError(f"Occupancy: {labels.size} labels for a {shape} grid")
    out = {"semantics": labels.reshape(shape).copy()}
    if len(msg.confidence):
        out["confidence"] = np.frombuffer(bytes(msg.confidence), np.uint8).reshape(shape).copy()
    if len(msg.camera_names):
        out["camera_names"] = np.asarray(list(msg.camera_names), dtype=str)
        out["camera_stamps_ns"] = np.asarray(
            [t.sec * 1_000_000_000 + t.nanosec for t in msg.camera_stamps], dtype=np.int64
        )
        out["ego_pose"] = pose_matrix(msg.ego_pose)
        out["camera_poses"] = np.stack([pose_matrix(p) for p in msg.camera_poses])
    return out


def pose_matrix(pose: Any) -> np.ndarray:
    """geometry_msgs/Pose -> (4, 4) float64 transform."""
    p, q = pose.position, pose.orientation
    return transform_matrix((p.x, p.y, p.z), (q.x, q.y, q.z, q.w))


def existing_npz(folder: Path) -> list[Path]:
    """The .npz files already in `folder` (none when it does not exist)."""
    return sorted(folder.glob("*.npz")) if folder.is_dir() else []


class OccupancyRecorder:
    """Subscribes `topic` (raw bytes) and writes npz files and/or a bag; thread-safe counters.

    `overwrite=False`: an npz file that existed before this recorder started is kept (the grid
    of that stamp is counted in `kept_existing`); its own files of a looping input are replaced.
    After the first write failure (`failure`, one line) nothing more is written.
    """

    def __init__(
        self,
        node: Node,
        topic: str,
        npz_dir: Path | None = None,
        bag: Path | None = None,
        *,
        overwrite: bool = False,
    ) -> None:
        from flashocc_ros.msg import Occupancy

        self._cls = Occupancy
        self.npz_dir = npz_dir
        self.overwrite = overwrite
        self.count = 0
        self.stamps: list[int] = []
        self.frame_ids: set[str] = set()
        self.model_names: set[str] = set()
        self.kept_existing = 0  # grids not written: a file of that stamp existed before
        self.rejected = 0  # messages that are no valid grid
        self.failure: str | None = None  # why writing stopped (disk full, read-only, ...)
        self._lock = threading.Lock()
        self._written: set[str] = set()
        self._bag: DurableBagWriter | None = None
        self._conn: Any = None
        if npz_dir is not None:
            npz_dir.mkdir(parents=True, exist_ok=True)
        if bag is not None:
            from flashocc_ros.msgdefs import flashocc_typestore

            self._bag = DurableBagWriter(bag)
            try:
                self._conn = self._bag.add_connection(
                    topic, OCCUPANCY_TYPE, typestore=flashocc_typestore()
                )
            except BaseException:
                self._bag.close()
                raise
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.sub = node.create_subscription(Occupancy, topic, self._on_raw, qos, raw=True)

    def _on_raw(self, data: bytes) -> None:
        try:
            msg = deserialize_message(data, self._cls)
            stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            arrays = occupancy_to_arrays(msg) if self.npz_dir is not None else {}
        except (ValueError, TypeError) as err:
            with self._lock:
                self.rejected += 1
            LOG.warning("recorder: a message that is no valid grid was not recorded: %s", err)
            return
        with self._lock:
            if self.failure is not None:
                return
            target = self.npz_dir / f"{stamp}.npz" if self.npz_dir is not None else None
            where: Path | None = target
            try:
                if target is not None:
                    self._save(target, arrays)
                if self._bag is not None:
                    where = self._bag.path
                    self._bag.write(self._conn, stamp, data)
            except OSError as err:
                self.failure = disk_error_line(err, where)
                return
            self.count += 1
            self.stamps.append(stamp)
            self.frame_ids.add(msg.header.frame_id)
            self.model_names.add(msg.model_name)

    def _save(self, target: Path, arrays: dict[str, np.ndarray]) -> None:
        mine = target.name in self._written
        try:
            save_npz(target, dict(arrays), overwrite=self.overwrite or mine)
        except OutputExistsError:
            self.kept_existing += 1
            if self.kept_existing == 1:
                LOG.warning("recorder: %s existed before; kept (no overwrite)", target)
            return
        self._written.add(target.name)

    def close(self) -> None:
        """Close the bag (readable whatever happened before); OSError only when even the
        truncated bag cannot be closed."""
        with self._lock:
            if self._bag is not None:
                bag, self._bag = self._bag, None
                bag.close()


def main(argv: list[str] | None = None) -> int:
    """`ros2 run flashocc_ros flashocc_record --npz DIR [--bag DIR] [--topic T] [--count N]`."""
    parser = argparse.ArgumentParser(prog="flashocc_record", description=__doc__)
    parser.add_argument("--topic", default="/flashocc/output/occupancy")
    parser.add_argument("--npz", type=Path, help="write one <stamp_ns>.npz per message here")
    parser.add_argument("--bag", type=Path, help="write the messages to this new bag (mcap)")
    parser.add_argument("--count", type=int, default=0, help="stop after N messages (0: never)")
    parser.add_argument("--timeout", type=float, default=0.0, help="stop after T s (0: never)")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace .npz files already in --npz"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.npz is None and args.bag is None:
        parser.error("give --npz and/or --bag")
    if args.bag is not None and args.bag.exists():
        parser.error(f"--bag {args.bag} already exists")
    old = [] if args.overwrite or args.npz is None else existing_npz(args.npz)
    if old:
        parser.error(
            f"--npz {args.npz} already holds {len(old)} .npz files (e.g. {old[0].name}); "
            "pass --overwrite to replace them, or choose another folder"
        )
    with StopSignals() as stop:
        return _record(args, stop)


def _record(args: argparse.Namespace, stop: StopSignals) -> int:
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    node = Node("flashocc_recorder")
    recorder: OccupancyRecorder | None = None
    try:
        try:
            recorder = OccupancyRecorder(
                node, args.topic, args.npz, args.bag, overwrite=args.overwrite
            )
        except OSError as err:
            LOG.error("flashocc_record: %s", disk_error_line(err, args.bag or args.npz))
            return 1
        start = node.get_clock().now()
        while not stop.requested and recorder.failure is None:
            rclpy.spin_once(node, timeout_sec=0.2)
            if args.count and recorder.count >= args.count:
                break
            elapsed = (node.get_clock().now() - start).nanoseconds / 1e9
            if args.timeout and elapsed > args.timeout:
                break
    finally:
        closed = _close(recorder)
        node.destroy_node()
        rclpy.try_shutdown()
    assert recorder is not None
    bag = f"; bag {args.bag} closed" if args.bag is not None and closed else ""
    if recorder.failure is not None or not closed:
        LOG.error(
            "flashocc_record: %s; the %d grids recorded before it are readable%s",
            recorder.failure or "the bag could not be closed",
            recorder.count,
            bag,
        )
        return 1
    LOG.info("recorded %d occupancy messages%s", recorder.count, bag)
    if recorder.kept_existing:
        LOG.warning("%d grids not written: their files existed", recorder.kept_existing)
    return 0


def _close(recorder: OccupancyRecorder | None) -> bool:
    """Close the recorder's bag; False (and one log line) when even that failed."""
    if recorder is None:
        return True
    try:
        recorder.close()
    except OSError as err:
        LOG.error("flashocc_record: closing the bag: %s", disk_error_line(err))
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
