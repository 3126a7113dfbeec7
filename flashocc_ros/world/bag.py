"""rosbag2 writer for the synthetic world (pure `rosbags`, no ROS install needed).
In: stamps, ego poses, rendered images and keyframe labels. Out: an mcap or sqlite3 rosbag2.

Topics: /tf (odom -> base_link), /tf_static (base_link -> <camera>_optical, transient-local QoS),
/<camera lower>/image_raw (bgr8) or /<camera lower>/image_raw/compressed (jpeg),
/<camera lower>/camera_info and /ground_truth/occupancy (flashocc_ros/msg/Occupancy).
"""

from __future__ import annotations

import math
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import cv2
import numpy as np
from rosbags.interfaces import (
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys.store import Typestore

from flashocc_ros.classes import CLASS_NAMES, FREE_LABEL
from flashocc_ros.config import GridConfig
from flashocc_ros.msgdefs import OCCUPANCY_TYPE, flashocc_typestore
from flashocc_ros.rig import CameraRig
from flashocc_ros.world.ground_truth import OccupancyLabels

OCCUPANCY_TOPIC = "/ground_truth/occupancy"
MASK_TOPIC = "/ground_truth/mask_camera"  # Occupancy with labels 0/1 = mask_camera
ODOM_FRAME, BASE_FRAME = "odom", "base_link"

_NEVER = QosTime(sec=0, nsec=0)
TF_STATIC_QOS = Qos(
    QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL, _NEVER,
    _NEVER, QosLiveliness.AUTOMATIC, _NEVER, False,
)  # fmt: skip
DEFAULT_QOS = Qos(
    QosHistory.KEEP_LAST, 10, QosReliability.RELIABLE, QosDurability.VOLATILE, _NEVER, _NEVER,
    QosLiveliness.AUTOMATIC, _NEVER, False,
)  # fmt: skip


def optical_frame(camera: str) -> str:
    """Frame id of a camera's optical frame, e.g. CAM_FRONT -> cam_front_optical."""
    return f"{camera.lower()}_optical"


def image_topic(camera: str, compressed: bool) -> str:
    base = f"/{camera.lower()}/image_raw"
    return base + "/compressed" if compressed else base


def info_topic(camera: str) -> str:
    return f"/{camera.lower()}/camera_info"


def _quat_from_matrix(r: np.ndarray) -> tuple[float, float, float, float]:
    """(x, y, z, w) of a 3x3 rotation matrix."""
    w = math.sqrt(max(0.0, 1.0 + r[0, 0] + r[1, 1] + r[2, 2])) / 2
    x = math.copysign(
        math.sqrt(max(0.0, 1.0 + r[0, 0] - r[1, 1] - r[2, 2])) / 2, r[2, 1] - r[1, 2]
    )
    y = math.copysign(
        math.sqrt(max(0.0, 1.0 - r[0, 0] + r[1, 1] - r[2, 2])) / 2, r[0, 2] - r[2, 0]
    )
    z = math.copysign(
        math.sqrt(max(0.0, 1.0 - r[0, 0] - r[1, 1] + r[2, 2])) / 2, r[1, 0] - r[0, 1]
    )
    return (x, y, z, w)


class BagWriter:
    """Context manager writing one bag; all stamps are integer nanoseconds."""

    def __init__(
        self,
        path: str | Path,
        rig: CameraRig,
        grid: GridConfig | None = None,
        storage: Literal["mcap", "sqlite3"] = "mcap",
        compressed: bool = False,
        jpeg_quality: int = 90,
    ) -> None:
        if storage not in ("mcap", "sqlite3"):
            raise ValueError(f"storage must be 'mcap' or 'sqlite3', got {storage!r}")
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self.rig, self.grid = rig, grid or GridConfig()
        self.compressed, self.jpeg_quality = compressed, jpeg_quality
        self.store = flashocc_typestore()
        self._writer = Writer(Path(path), version=9, storage_plugin=plugin)
        self._conns: dict[str, Any] = {}
        self._t = self.store.types

    def __enter__(self) -> BagWriter:
        self._writer.open()
        w, s = self._writer, self.store
        self._conns["/tf"] = w.add_connection(
            "/tf", "tf2_msgs/msg/TFMessage", typestore=s, offered_qos_profiles=[DEFAULT_QOS]
        )
        self._conns["/tf_static"] = w.add_connection(
            "/tf_static", "tf2_msgs/msg/TFMessage", typestore=s,
            offered_qos_profiles=[TF_STATIC_QOS],
        )  # fmt: skip
        img_type = (
            "sensor_msgs/msg/CompressedImage" if self.compressed else "sensor_msgs/msg/Image"
        )
        for cam in self.rig.names:
            for topic, typ in (
                (image_topic(cam, self.compressed), img_type),
                (info_topic(cam), "sensor_msgs/msg/CameraInfo"),
            ):
                self._conns[topic] = w.add_connection(
                    topic, typ, typestore=s, offered_qos_profiles=[DEFAULT_QOS]
                )
        for topic in (OCCUPANCY_TOPIC, MASK_TOPIC):
            self._conns[topic] = w.add_connection(
                topic, OCCUPANCY_TYPE, typestore=s, offered_qos_profiles=[DEFAULT_QOS]
            )
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._writer.close()

    # --- message helpers ------------------------------------------------------------------
    def _header(self, stamp_ns: int, frame: str) -> Any:
        t = self._t
        stamp = t["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
        return t["std_msgs/msg/Header"](stamp=stamp, frame_id=frame)

    def _transform(self, stamp_ns: int, parent: str, child: str, m: np.ndarray) -> Any:
        t = self._t
        q = _quat_from_matrix(m[:3, :3])
        tf = t["geometry_msgs/msg/Transform"](
            translation=t["geometry_msgs/msg/Vector3"](x=m[0, 3], y=m[1, 3], z=m[2, 3]),
            rotation=t["geometry_msgs/msg/Quaternion"](x=q[0], y=q[1], z=q[2], w=q[3]),
        )
        return t["geometry_msgs/msg/TransformStamped"](
            header=self._header(stamp_ns, parent), child_frame_id=child, transform=tf
        )

    def _write(self, topic: str, stamp_ns: int, msg: Any) -> None:
        conn = self._conns[topic]
        self._writer.write(conn, stamp_ns, self.store.serialize_cdr(msg, conn.msgtype))

    # --- public API -----------------------------------------------------------------------
    def write_static(self, stamp_ns: int) -> None:
        """base_link -> every camera optical frame on /tf_static (once, at the start)."""
        tfs = [
            self._transform(stamp_ns, BASE_FRAME, optical_frame(c.name), c.camera_to_base)
            for c in self.rig.cameras
        ]
        self._write("/tf_static", stamp_ns, self._t["tf2_msgs/msg/TFMessage"](transforms=tfs))

    def write_pose(self, stamp_ns: int, odom_from_base: np.ndarray) -> None:
        """odom -> base_link (4, 4) on /tf."""
        tf = self._transform(stamp_ns, ODOM_FRAME, BASE_FRAME, odom_from_base)
        self._write("/tf", stamp_ns, self._t["tf2_msgs/msg/TFMessage"](transforms=[tf]))

    def write_camera(self, cam: int, stamp_ns: int, image: np.ndarray) -> None:
        """Image (H, W, 3) uint8 BGR + CameraInfo of rig camera `cam`."""
        c = self.rig.cameras[cam]
        if image.shape != (c.height, c.width, 3):
            raise ValueError(
                f"image must be (H, W, 3) = ({c.height}, {c.width}, 3), got {image.shape}"
            )
        header = self._header(stamp_ns, optical_frame(c.name))
        t = self._t
        if self.compressed:
            ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
            if not ok:
                raise RuntimeError("JPEG encoding failed")
            msg = t["sensor_msgs/msg/CompressedImage"](
                header=header, format="jpeg", data=buf.ravel()
            )
        else:
            msg = t["sensor_msgs/msg/Image"](
                header=header, height=c.height, width=c.width, encoding="bgr8", is_bigendian=0,
                step=3 * c.width, data=np.ascontiguousarray(image).reshape(-1),
            )  # fmt: skip
        self._write(image_topic(c.name, self.compressed), stamp_ns, msg)
        k = c.intrinsics
        p = np.zeros((3, 4))
        p[:, :3] = k
        info = t["sensor_msgs/msg/CameraInfo"](
            header=header, height=c.height, width=c.width, distortion_model="plumb_bob",
            d=np.zeros(5), k=k.reshape(-1), r=np.eye(3).reshape(-1), p=p.reshape(-1),
            binning_x=0, binning_y=0,
            roi=t["sensor_msgs/msg/RegionOfInterest"](
                x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
            ),
        )  # fmt: skip
        self._write(info_topic(c.name), stamp_ns, info)

    def write_ground_truth(self, stamp_ns: int, labels: OccupancyLabels) -> None:
        """Keyframe semantics (X, Y, Z) as flashocc_ros/msg/Occupancy in base_link, and
        mask_camera as a second Occupancy (labels 0 = unobserved, 1 = observed)."""
        self._write(
            OCCUPANCY_TOPIC,
            stamp_ns,
            occupancy_message(self.store, stamp_ns, labels.semantics, self.grid),
        )
        mask = occupancy_message(
            self.store,
            stamp_ns,
            labels.mask_camera.astype(np.uint8),
            self.grid,
            model_name="mask_camera",
            class_names=("unobserved", "observed"),
            free_label=0,
        )
        self._write(MASK_TOPIC, stamp_ns, mask)


def occupancy_message(
    store: Typestore,
    stamp_ns: int,
    semantics: np.ndarray,
    grid: GridConfig,
    model_name: str = "ground_truth",
    frame_id: str = BASE_FRAME,
    class_names: tuple[str, ...] = CLASS_NAMES,
    free_label: int = FREE_LABEL,
) -> Any:
    """A flashocc_ros/msg/Occupancy for semantics (X, Y, Z) uint8, labels in C order [x][y][z]."""
    if semantics.shape != grid.shape:
        raise ValueError(f"semantics must be (X, Y, Z) = {grid.shape}, got {semantics.shape}")
    t = store.types
    stamp = t["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
    origin = t["geometry_msgs/msg/Pose"](
        position=t["geometry_msgs/msg/Point"](x=grid.x_min, y=grid.y_min, z=grid.z_min),
        orientation=t["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0),
    )
    vs = grid.voxel_size
    return t[OCCUPANCY_TYPE](
        header=t["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id),
        model_name=model_name, origin=origin,
        voxel_size=t["geometry_msgs/msg/Vector3"](x=vs, y=vs, z=vs),
        size_x=grid.size_x, size_y=grid.size_y, size_z=grid.size_z, layout=0,
        labels=np.ascontiguousarray(semantics, dtype=np.uint8).reshape(-1),
        class_names=list(class_names), free_label=free_label,
        confidence=np.zeros(0, dtype=np.uint8),
        camera_names=[], camera_stamps=[], ego_pose=t["geometry_msgs/msg/Pose"](
            position=t["geometry_msgs/msg/Point"](x=0.0, y=0.0, z=0.0),
            orientation=t["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0),
        ), camera_poses=[],
    )  # fmt: skip
