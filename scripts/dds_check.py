#!/usr/bin/env python3
"""Real-DDS round trip between two processes: a seeded message is published, then checked.
In: a role (publish | receive), a kind (occupancy | tf), a topic and a seed. Out: exit status.

Both roles rebuild the expected message from the seed, so the receiver checks every field
(including a SHA-256 of the 640,000 labels) without any side channel. The publisher waits for
`--subscribers` matched subscriptions, re-publishes every 0.2 s while matched and exits 0 once
the subscriptions go away again (the receivers are done) or after `--linger` seconds.

Exit status: 0 success, 1 mismatch or no subscriber, 2 timeout. Needs the built package
(`source scripts/env.sh`). Used by `make demo` and test/ros/test_dds_*.py.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import serialize_message
from rclpy.utilities import try_shutdown

from flashocc_ros.classes import CLASS_NAMES, FREE_LABEL
from flashocc_ros.config import GridConfig

#: Reliable + transient-local: a late receiver still gets the last message.
QOS = QoSProfile(  # type: ignore[no-untyped-call]  # rclpy 7 is partly annotated
    depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _stamp(seed: int) -> tuple[int, int]:
    return 1_700_000_000 + seed, (123_456_789 * (seed + 1)) % 1_000_000_000


def occupancy_arrays(seed: int, grid: GridConfig) -> tuple[bytes, bytes]:
    """(labels, confidence) bytes of X*Y*Z uint8 each, from a seeded RNG."""
    rng = np.random.default_rng(seed)
    n = grid.size_x * grid.size_y * grid.size_z
    labels = rng.integers(0, len(CLASS_NAMES), size=n, dtype=np.uint8)
    confidence = rng.integers(0, 256, size=n, dtype=np.uint8)
    return labels.tobytes(), confidence.tobytes()


def make_occupancy(seed: int) -> Any:
    """A fully populated flashocc_ros/msg/Occupancy, deterministic in `seed`."""
    from flashocc_ros.msg import Occupancy

    grid = GridConfig()
    labels, confidence = occupancy_arrays(seed, grid)
    msg = Occupancy()
    msg.header.stamp.sec, msg.header.stamp.nanosec = _stamp(seed)
    msg.header.frame_id = "base_link"
    msg.model_name = f"dds_check_{seed}"
    yaw = 0.25
    msg.origin.position.x, msg.origin.position.y = grid.x_min, grid.y_min
    msg.origin.position.z = grid.z_min
    msg.origin.orientation.z, msg.origin.orientation.w = math.sin(yaw / 2), math.cos(yaw / 2)
    msg.voxel_size.x = msg.voxel_size.y = msg.voxel_size.z = grid.voxel_size
    msg.size_x, msg.size_y, msg.size_z = grid.shape
    msg.layout = Occupancy.LAYOUT_XYZ_Z_FASTEST
    msg.labels = labels  # bytes: ~1000x faster than assigning a numpy array
    msg.class_names = list(CLASS_NAMES)
    msg.free_label = FREE_LABEL
    msg.confidence = confidence
    return msg


def check_occupancy(msg: Any, seed: int) -> list[str]:
    """Differences between a received Occupancy and the one `make_occupancy(seed)` builds."""
    want = make_occupancy(seed)
    errors = []
    for name in ("layout", "size_x", "size_y", "size_z", "free_label", "model_name"):
        if getattr(msg, name) != getattr(want, name):
            errors.append(f"{name}: got {getattr(msg, name)!r}, want {getattr(want, name)!r}")
    if msg.header != want.header:
        errors.append(f"header: got {msg.header}, want {want.header}")
    if msg.origin != want.origin:
        errors.append(f"origin: got {msg.origin}, want {want.origin}")
    if msg.voxel_size != want.voxel_size:
        errors.append(f"voxel_size: got {msg.voxel_size}, want {want.voxel_size}")
    if list(msg.class_names) != list(want.class_names):
        errors.append(f"class_names: got {list(msg.class_names)}")
    for name in ("labels", "confidence"):
        got, exp = bytes(getattr(msg, name)), bytes(getattr(want, name))
        if got != exp:
            errors.append(f"{name}: {len(got)} bytes sha {_sha(got)}, want {len(exp)} {_sha(exp)}")
    return errors


def make_tf(seed: int) -> Any:
    """A tf2_msgs/TFMessage with three transforms (odom <- base_link, two cameras)."""
    from geometry_msgs.msg import TransformStamped
    from tf2_msgs.msg import TFMessage

    rng = np.random.default_rng(seed)
    msg = TFMessage()
    for parent, child in (
        ("odom", "base_link"),
        ("base_link", "cam_front_optical"),
        ("base_link", "cam_back_optical"),
    ):
        t = TransformStamped()
        t.header.stamp.sec, t.header.stamp.nanosec = _stamp(seed)
        t.header.frame_id, t.child_frame_id = parent, child
        x, y, z = (float(v) for v in rng.normal(size=3))
        t.transform.translation.x, t.transform.translation.y = x, y
        t.transform.translation.z = z
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        r = t.transform.rotation
        r.x, r.y, r.z, r.w = (float(v) for v in q)
        msg.transforms.append(t)
    return msg


def check_tf(msg: Any, seed: int) -> list[str]:
    """Differences between a received TFMessage and `make_tf(seed)`."""
    want = make_tf(seed)
    if len(msg.transforms) != len(want.transforms):
        return [f"transforms: got {len(msg.transforms)}, want {len(want.transforms)}"]
    return [
        f"transforms[{i}]: got {got}, want {exp}"
        for i, (got, exp) in enumerate(zip(msg.transforms, want.transforms, strict=True))
        if got != exp
    ]


KINDS: dict[str, tuple[Callable[[int], Any], Callable[[Any, int], list[str]]]] = {
    "occupancy": (make_occupancy, check_occupancy),
    "tf": (make_tf, check_tf),
}


def publish(node: Node, kind: str, topic: str, seed: int, args: argparse.Namespace) -> int:
    """Publish until the receivers matched and went away again (or `linger` s passed)."""
    msg = KINDS[kind][0](seed)
    size = len(serialize_message(msg))
    pub = node.create_publisher(type(msg), topic, QOS)
    deadline = time.monotonic() + args.timeout
    while pub.get_subscription_count() < args.subscribers:
        if time.monotonic() > deadline:
            print(f"publisher: no subscriber on {topic} after {args.timeout:.0f} s", flush=True)
            return 1
        rclpy.spin_once(node, timeout_sec=0.05)
    print(
        f"publisher: {pub.get_subscription_count()} subscriber(s) matched on {topic}; "
        f"publishing {type(msg).__name__} ({size} bytes serialised), seed {seed}",
        flush=True,
    )
    first = time.monotonic()
    sent = 0
    while time.monotonic() - first < args.linger:
        if pub.get_subscription_count() == 0:
            break
        pub.publish(msg)
        sent += 1
        rclpy.spin_once(node, timeout_sec=0.2)
    print(f"publisher: sent {sent} time(s); receivers done", flush=True)
    return 0


def receive(node: Node, kind: str, topic: str, seed: int, args: argparse.Namespace) -> int:
    """Wait for one message, check every field against the seed, report."""
    make, check = KINDS[kind]
    msg_type = type(make(seed))
    got: list[Any] = []
    node.create_subscription(msg_type, topic, got.append, QOS)
    start = time.monotonic()
    while not got:
        if time.monotonic() - start > args.timeout:
            print(f"receiver: nothing on {topic} after {args.timeout:.0f} s", flush=True)
            return 2
        rclpy.spin_once(node, timeout_sec=0.1)
    errors = check(got[0], seed)
    for line in errors:
        print(f"receiver: MISMATCH {line}", flush=True)
    if errors:
        return 1
    detail = ""
    if kind == "occupancy":
        m = got[0]
        detail = (
            f" {m.size_x}x{m.size_y}x{m.size_z} labels sha {_sha(bytes(m.labels))},"
            f" {len(m.class_names)} classes, frame {m.header.frame_id!r}"
        )
    print(
        f"receiver: {msg_type.__name__} on {topic} after {time.monotonic() - start:.2f} s,"
        f" every field as sent{detail}",
        flush=True,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dds_check", description=__doc__.split("\n")[0])
    parser.add_argument("role", choices=("publish", "receive"))
    parser.add_argument("--kind", choices=tuple(KINDS), default="occupancy")
    parser.add_argument("--topic", default="/dds_check/occupancy")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=30.0, help="s to wait for the peer")
    parser.add_argument("--linger", type=float, default=5.0, help="publisher: max s to publish")
    parser.add_argument("--subscribers", type=int, default=1, help="publisher: wait for N")
    args = parser.parse_args(argv)
    rclpy.init(args=[])
    node = Node(f"dds_check_{args.role}_{args.kind}")
    try:
        role = publish if args.role == "publish" else receive
        return role(node, args.kind, args.topic, args.seed, args)
    finally:
        node.destroy_node()  # type: ignore[no-untyped-call]  # rclpy 7
        try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
