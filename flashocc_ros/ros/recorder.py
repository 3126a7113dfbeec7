"""Records the node's occupancy output to Occ3D-style npz files and/or a rosbag2.
In: flashocc_ros/msg/Occupancy messages on a topic. Out: <out>/<stamp_ns>.npz and/or a bag.

Each npz holds `semantics` (X, Y, Z) uint8 in Occ3D [x][y][z] order (what the evaluator reads)
and, when present, `confidence`. The bag keeps the serialised messages unchanged.
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


class OccupancyRecorder:
    """Subscribes `topic` (raw bytes) and writes npz files and/or a bag; thread-safe counters."""

    def __init__(
        self, node: Node, topic: str, npz_dir: Path | None = None, bag: Path | None = None
    ) -> None:
        from flashocc_ros.msg import Occupancy

        self._cls = Occupancy
        self.npz_dir = npz_dir
        self.count = 0
        self.stamps: list[int] = []
        self.frame_ids: set[str] = set()
        self.model_names: set[str] = set()
        self._lock = threading.Lock()
        self._writer: Any = None
        self._conn: Any = None
        if npz_dir is not None:
            npz_dir.mkdir(parents=True, exist_ok=True)
        if bag is not None:
            from rosbags.rosbag2 import StoragePlugin, Writer

            from flashocc_ros.msgdefs import flashocc_typestore

            self._writer = Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP)
            self._writer.open()
            self._conn = self._writer.add_connection(
                topic, OCCUPANCY_TYPE, typestore=flashocc_typestore()
            )
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.sub = node.create_subscription(Occupancy, topic, self._on_raw, qos, raw=True)

    def _on_raw(self, data: bytes) -> None:
        msg = deserialize_message(data, self._cls)
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        with self._lock:
            if self.npz_dir is not None:
                np.savez_compressed(self.npz_dir / f"{stamp}.npz", **occupancy_to_arrays(msg))
            if self._writer is not None:
                self._writer.write(self._conn, stamp, data)
            self.count += 1
            self.stamps.append(stamp)
            self.frame_ids.add(msg.header.frame_id)
            self.model_names.add(msg.model_name)

    def close(self) -> None:
        with self._lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None


def main(argv: list[str] | None = None) -> int:
    """`ros2 run flashocc_ros flashocc_record --npz DIR [--bag DIR] [--topic T] [--count N]`."""
    parser = argparse.ArgumentParser(prog="flashocc_record", description=__doc__)
    parser.add_argument("--topic", default="/flashocc/output/occupancy")
    parser.add_argument("--npz", type=Path, help="write one <stamp_ns>.npz per message here")
    parser.add_argument("--bag", type=Path, help="write the messages to this new bag (mcap)")
    parser.add_argument("--count", type=int, default=0, help="stop after N messages (0: never)")
    parser.add_argument("--timeout", type=float, default=0.0, help="stop after T s (0: never)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.npz is None and args.bag is None:
        parser.error("give --npz and/or --bag")
    if args.bag is not None and args.bag.exists():
        parser.error(f"--bag {args.bag} already exists")
    rclpy.init()
    node = Node("flashocc_recorder")
    recorder = OccupancyRecorder(node, args.topic, args.npz, args.bag)
    start = node.get_clock().now()
    try:
        while rclpy.ok():
            rclpy.spin_once(node, timeout_sec=0.2)
            if args.count and recorder.count >= args.count:
                break
            elapsed = (node.get_clock().now() - start).nanoseconds / 1e9
            if args.timeout and elapsed > args.timeout:
                break
    except KeyboardInterrupt:
        pass
    finally:
        recorder.close()
        node.destroy_node()
        rclpy.try_shutdown()
    LOG.info("recorded %d occupancy messages", recorder.count)
    return 0


if __name__ == "__main__":
    sys.exit(main())
