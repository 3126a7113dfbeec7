"""Hostile messages for the soak run: one at a time, a different kind each time, on the topics
a recording is played on. In: the latest /tf stamp of the recording (so contents, not stamps,
are the attack where the stamp should look right). Out: messages published, the stamps of the
refused images (no grid may contain them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from geometry_msgs.msg import TransformStamped
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image

from flashocc_ros.ros.tf_msgs import TFMessage

SEC = 1_000_000_000


class HostileInjector:
    """Publishes hostile inputs into the graph that a recording is played into."""

    KINDS = (
        "negative stamp",
        "stamp an hour ahead",
        "1x1 image",
        "unknown encoding",
        "truncated pixels",
        "fx = 1e-30",
        "tf 1 km off",
        "tf NaN",
        "tf_static re-parents a camera",
    )

    def __init__(self, node: Node, cameras: tuple[str, ...]) -> None:
        self.node, self.cameras = node, cameras
        rel = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(
            depth=10, durability=DurabilityPolicy.TRANSIENT_LOCAL,
            reliability=ReliabilityPolicy.RELIABLE,
        )  # fmt: skip
        low = [c.lower() for c in cameras]
        self.images = {c: node.create_publisher(Image, f"/{c}/image_raw", rel) for c in low}
        self.infos = {c: node.create_publisher(CameraInfo, f"/{c}/camera_info", rel) for c in low}
        self.tf = node.create_publisher(TFMessage, "/tf", rel)
        self.tf_static = node.create_publisher(TFMessage, "/tf_static", latched)
        self.latest_ns = 0  # newest /tf stamp of the recording seen so far
        self._last_hostile_tf = -1
        self.sent = 0
        self.refused_image_stamps: set[int] = set()
        node.create_subscription(TFMessage, "/tf", self._on_tf, rel)

    def _on_tf(self, msg: Any) -> None:
        for t in msg.transforms:
            stamp = t.header.stamp.sec * SEC + t.header.stamp.nanosec
            if stamp != self._last_hostile_tf:
                self.latest_ns = max(self.latest_ns, stamp)

    def inject(self) -> str:
        """Publish the next hostile message; returns its kind."""
        kind = self.KINDS[self.sent % len(self.KINDS)]
        self.sent += 1
        cam = self.cameras[self.sent % len(self.cameras)].lower()
        stamp = self.latest_ns + 5_000_000  # where a real frame of this camera could be
        make: dict[str, Callable[[], None]] = {
            "negative stamp": lambda: self._image(cam, -5 * SEC, 176, 99),
            "stamp an hour ahead": lambda: self._image(cam, stamp + 3600 * SEC, 176, 99),
            "1x1 image": lambda: self._image(cam, stamp, 1, 1, remember=True),
            "unknown encoding": lambda: self._image(cam, stamp, 176, 99, "weird8", True),
            "truncated pixels": lambda: self._image(cam, stamp, 176, 99, truncate=True),
            "fx = 1e-30": lambda: self._info(cam, stamp),
            "tf 1 km off": lambda: self._tf(stamp, 1000.0),
            "tf NaN": lambda: self._tf(stamp, float("nan")),
            "tf_static re-parents a camera": lambda: self._reparent(cam),
        }
        make[kind]()
        return kind

    def _image(
        self,
        cam: str,
        stamp: int,
        width: int,
        height: int,
        encoding: str = "bgr8",
        remember: bool = False,
        truncate: bool = False,
    ) -> None:
        msg = Image(width=width, height=height, encoding=encoding, step=width * 3)
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, SEC)
        msg.header.frame_id = f"{cam}_optical"
        data = np.zeros(width * height * 3, np.uint8).tobytes()
        msg.data = data[: len(data) // 2] if truncate else data
        if remember or truncate:
            self.refused_image_stamps.add(stamp)
        self.images[cam].publish(msg)

    def _info(self, cam: str, stamp: int) -> None:
        msg = CameraInfo(width=176, height=99, k=[1e-30, 0.0, 88.0, 0.0, 1e-30, 50.0, 0, 0, 1.0])
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, SEC)
        msg.header.frame_id = f"{cam}_optical"
        self.infos[cam].publish(msg)

    def _tf(self, stamp: int, x: float) -> None:
        t = TransformStamped()
        t.header.stamp.sec, t.header.stamp.nanosec = divmod(stamp, SEC)
        t.header.frame_id, t.child_frame_id = "odom", "base_link"
        t.transform.translation.x = x
        t.transform.rotation.w = 1.0
        self._last_hostile_tf = stamp
        self.tf.publish(TFMessage(transforms=[t]))

    def _reparent(self, cam: str) -> None:
        t = TransformStamped()
        t.header.frame_id, t.child_frame_id = "somewhere_else", f"{cam}_optical"
        t.transform.rotation.w = 1.0
        self.tf_static.publish(TFMessage(transforms=[t]))
