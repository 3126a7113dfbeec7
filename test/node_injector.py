"""A synthetic rig published into the real node over DDS, and what the node says back (tests).
In: fault choices (overridden messages, missing /tf, hostile samples). Out: the node's grids
(stamps and ego poses), its diagnostics statuses and levels, its command line.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from flashocc_ros.config import NUSCENES_CAMERAS
from flashocc_ros.rig import nuscenes_like_rig
from flashocc_ros.sensing.tf_buffer import matrix_to_quaternion

W, H = 176, 99
CAMS = NUSCENES_CAMERAS
COMPRESSED = "CAM_BACK"


class Injector:
    """Publishes a synthetic rig into the node and watches its outputs (own rclpy context)."""

    def __init__(self) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.node import Node
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image

        from flashocc_ros.msg import Occupancy
        from flashocc_ros.ros.tf_msgs import TFMessage

        self.rclpy = rclpy
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx)
        self.node = Node("fault_injector", context=self.ctx)
        from rclpy.executors import SingleThreadedExecutor

        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        rel = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(
            depth=10,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
            reliability=ReliabilityPolicy.RELIABLE,
        )
        self.Image, self.CompressedImage, self.CameraInfo = Image, CompressedImage, CameraInfo
        self.TFMessage = TFMessage
        self.pub_static = self.node.create_publisher(TFMessage, "/tf_static", latched)
        self.pub_tf = self.node.create_publisher(TFMessage, "/tf", rel)
        self.pub_img = {
            c: self.node.create_publisher(
                CompressedImage if c == COMPRESSED else Image, f"/fi/{c.lower()}/image", rel
            )
            for c in CAMS
        }
        self.pub_info = {
            c: self.node.create_publisher(CameraInfo, f"/fi/{c.lower()}/camera_info", rel)
            for c in CAMS
        }
        self.stamps: list[int] = []
        self.ego_x: dict[int, float] = {}  # grid stamp -> ego_pose.position.x
        self.diag: dict[str, str] = {}  # the processing status's values
        self.levels: dict[str, int] = {}  # status name -> level
        self.messages: dict[str, str] = {}  # status name -> message
        self.node.create_subscription(Occupancy, "/flashocc/output/occupancy", self._on_grid, rel)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, rel)
        self.rig = nuscenes_like_rig(W, H)
        self.image = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)

    def _on_grid(self, m: Any) -> None:
        stamp = m.header.stamp.sec * 10**9 + m.header.stamp.nanosec
        self.stamps.append(stamp)
        self.ego_x[stamp] = m.ego_pose.position.x

    def _on_diag(self, msg: Any) -> None:
        for st in msg.status:
            if st.name.startswith("flashocc"):
                self.levels[st.name] = int.from_bytes(st.level, "little")
                self.messages[st.name] = st.message
            if st.name == "flashocc: processing":
                self.diag = {kv.key: kv.value for kv in st.values}

    def spin(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.05)

    def wait(self, what: Callable[[], bool], timeout: float = 20.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.spin(0.1)
            if what():
                return True
        return False

    def _tf(self, parent: str, child: str, t: np.ndarray, stamp: int) -> Any:
        from geometry_msgs.msg import TransformStamped

        msg = TransformStamped()
        msg.header.frame_id, msg.child_frame_id = parent, child
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 10**9)
        msg.transform.translation.x, msg.transform.translation.y = float(t[0, 3]), float(t[1, 3])
        msg.transform.translation.z = float(t[2, 3])
        q = matrix_to_quaternion(t[:3, :3])
        r = msg.transform.rotation
        r.x, r.y, r.z, r.w = q
        return msg

    def publish_static(self) -> None:
        tfs = [
            self._tf("base_link", f"{c.name.lower()}_optical", c.camera_to_base, 0)
            for c in self.rig.cameras
        ]
        self.pub_static.publish(self.TFMessage(transforms=tfs))
        for c in self.rig.cameras:
            self.camera_info(c.name)

    def camera_info(self, cam: str, k: np.ndarray | None = None) -> None:
        c = self.rig.camera(cam)
        info = self.CameraInfo(width=W, height=H, distortion_model="plumb_bob")
        info.header.frame_id = f"{cam.lower()}_optical"
        info.k = [float(v) for v in (c.intrinsics if k is None else k).ravel()]
        self.pub_info[cam].publish(info)

    def poses(self, t0: int, t1: int, hostile_at: int | None = None) -> None:
        """odom <- base_link every 20 ms from t0 to t1, the car at x = stamp in seconds (1 m/s);
        `hostile_at`: one extra sample at that stamp, 1 km off."""
        stamps = list(range(t0, t1 + 1, 20_000_000))
        for stamp in sorted([*stamps, *([hostile_at] if hostile_at is not None else [])]):
            pose = np.eye(4)
            pose[0, 3] = stamp / 1e9 + (1000.0 if stamp == hostile_at else 0.0)
            self.pub_tf.publish(
                self.TFMessage(transforms=[self._tf("odom", "base_link", pose, stamp)])
            )

    def bundle(
        self,
        t: int,
        override: dict[str, Any] | None = None,
        tf: bool = True,
        hostile_tf: int | None = None,
    ) -> None:
        """Six images at t + 8 ms·n; `override[cam]` replaces a camera's message (None: skip)."""
        override = override or {}
        if tf:
            self.poses(t - 100_000_000, t + 100_000_000, hostile_tf)
            self.spin(0.05)
        for n, cam in enumerate(CAMS):
            stamp = t + n * 8_000_000
            msg = override.get(cam, "good")
            if msg is None:
                continue
            if isinstance(msg, str):
                msg = self.good(cam)
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 10**9)
            msg.header.frame_id = f"{cam.lower()}_optical"
            self.pub_img[cam].publish(msg)

    def good(self, cam: str) -> Any:
        if cam == COMPRESSED:
            ok, buf = cv2.imencode(".jpg", self.image)
            assert ok
            return self.CompressedImage(format="jpeg", data=buf.tobytes())
        return self.raw("bgr8", self.image)

    def raw(self, encoding: str, img: np.ndarray, data: bytes | None = None) -> Any:
        msg = self.Image(height=img.shape[0], width=img.shape[1], encoding=encoding)
        msg.step = img.shape[1] * 3
        msg.data = img.tobytes() if data is None else data
        return msg

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self.rclpy.shutdown(context=self.ctx)


def node_cmd(**overrides: str) -> list[str]:
    """The node's command line: tiny random model, the injector's topics, `overrides`."""
    from flashocc_ros.ros.live_run import executable

    cmd = [sys.executable, str(executable("flashocc_node")), "--ros-args"]
    params = {
        "model_config": "tiny",
        "weights": "random",
        "compressed_cameras": f"[{COMPRESSED}]",
        "max_image_pixels": "100000",
        # Every injected image must arrive: a best-effort sample lost on a loaded host would
        # look like a missing fault (measured: 10 of 11 CAM_BACK images under load).
        "input_reliability": "reliable",
        "diagnostics_period_s": "0.2",
        "publish_markers": "false",
        "publish_points": "false",
        "publish_bev_image": "false",
        **overrides,
    }
    for k, v in params.items():
        cmd += ["-p", f"{k}:={v}"]
    for cam in CAMS:
        low = cam.lower()
        cmd += ["-r", f"/flashocc/input/{low}/image:=/fi/{low}/image"]
        cmd += ["-r", f"/flashocc/input/{low}/camera_info:=/fi/{low}/camera_info"]
    return cmd
