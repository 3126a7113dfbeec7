"""A recording of a real-looking rig, written with rosbags (test support, no ROS needed).
In: rig timing (rate, trigger offsets, jitter, drops, a silent camera, a /tf gap, a repeated
frame), topic names. Out: an mcap rosbag2 and the truth it was made from.

`check_results` holds what the node made of it to that truth (right frames, /tf poses).

Six nuScenes-like cameras (some JPEG, some raw bgr8) on vehicle-style topics, CameraInfo with
every image (same stamp), /tf_static base_link <- <camera>_optical, /tf odom <- base_link at
50 Hz of a car driving a 20 m-radius left turn at 10 m/s. Images are seeded noise, different for
every frame, so a grid depends on which frames went in. Log time = stamp + a transport delay.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from rig_streams import MS, Rig, RigFrame
from tiny_config import SMALL_GRID, input_sensitive

from flashocc_ros.camera_topics import CameraTopics
from flashocc_ros.config import NUSCENES_CAMERAS, model_config
from flashocc_ros.model.checkpoint import save_flashocc
from flashocc_ros.model.flashocc import build_model
from flashocc_ros.msgdefs import flashocc_typestore
from flashocc_ros.rig import nuscenes_like_rig
from flashocc_ros.sensing.tf_buffer import matrix_to_quaternion
from flashocc_ros.world.bag import DEFAULT_QOS, TF_STATIC_QOS

NUSC_PHASES = (0, 8 * MS, 17 * MS, 25 * MS, 33 * MS, 42 * MS)
MM, DEG = 1e-3, math.radians(1.0)
SPEED, RADIUS = 10.0, 20.0  # m/s, m: a left turn, yaw rate 0.5 rad/s


def autoware_topics(compressed: set[str]) -> tuple[CameraTopics, ...]:
    """Vehicle-style topic names: /sensing/camera/<name>/image_raw[/compressed], camera_info."""
    out = []
    for cam in NUSCENES_CAMERAS:
        base = f"/sensing/camera/{cam.lower().removeprefix('cam_')}"
        image = f"{base}/image_raw" + ("/compressed" if cam in compressed else "")
        out.append(CameraTopics(cam, image, f"{base}/camera_info", cam in compressed))
    return tuple(out)


def ego_pose(t_s: float) -> np.ndarray:
    """(4, 4) odom <- base_link at `t_s` seconds into the drive."""
    yaw = SPEED / RADIUS * t_s
    m = np.eye(4)
    m[:2, :2] = [[math.cos(yaw), -math.sin(yaw)], [math.sin(yaw), math.cos(yaw)]]
    m[:3, 3] = (RADIUS * math.sin(yaw), RADIUS * (1 - math.cos(yaw)), 0.0)
    return m


@dataclass
class RigRecording:
    """What a recording holds, for checking what the node made of it."""

    topics: tuple[CameraTopics, ...]
    frames: list[RigFrame]  # every image frame written (a repeated one once)
    tf_stamps: list[int]  # /tf sample stamps (ns)
    t0_ns: int
    rig: Any  # the CameraRig (static extrinsics, intrinsics)
    silent: dict[str, tuple[int, int]] = field(default_factory=dict)  # camera -> cycles

    def complete_cycles(self) -> dict[int, tuple[int, ...]]:
        """cycle -> camera stamps (camera order) of every cycle with all six frames."""
        by: dict[int, dict[str, int]] = {}
        for f in self.frames:
            by.setdefault(f.cycle, {})[f.camera] = f.stamp_ns
        names = [t.name for t in self.topics]
        return {c: tuple(v[n] for n in names) for c, v in by.items() if len(v) == len(names)}

    def tf_samples(self) -> list[tuple[int, np.ndarray]]:
        """(stamp, odom <- base_link) of every /tf sample."""
        return [(s, ego_pose((s - self.t0_ns) / 1e9)) for s in self.tf_stamps]


def write_rig_recording(
    path: Path,
    *,
    cycles: int = 36,
    width: int = 176,
    height: int = 99,
    compressed: frozenset[str] = frozenset({"CAM_FRONT", "CAM_BACK"}),
    seed: int = 0,
) -> RigRecording:
    """A 12 Hz nuScenes-like recording of `cycles` trigger cycles with: +-3 ms trigger jitter,
    dropped frames on two cameras at different times, CAM_BACK_LEFT silent for 12 cycles (1 s),
    a 100 ms /tf gap and one image written twice."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    period = 1_000_000_000 // 12
    dropped = {(7, 1), (20, 4)}  # CAM_FRONT once, CAM_BACK once
    silent = {"CAM_BACK_LEFT": (14, 26)}
    dropped |= {(c, 3) for c in range(*silent["CAM_BACK_LEFT"])}
    rig_t = Rig(NUSCENES_CAMERAS, period, NUSC_PHASES, 3 * MS, dropped=dropped)
    rng = random.Random(seed)
    frames = rig_t.frames(cycles, rng)
    t0 = rig_t.t0_ns
    topics = autoware_topics(set(compressed))
    by_name = {t.name: t for t in topics}
    rig = nuscenes_like_rig(width, height)
    store = flashocc_typestore()
    T = store.types
    msgs: list[tuple[int, str, str, Any]] = []  # (log time, topic, type, message)

    def header(stamp: int, frame: str) -> Any:
        return T["std_msgs/msg/Header"](
            stamp=T["builtin_interfaces/msg/Time"](sec=stamp // 10**9, nanosec=stamp % 10**9),
            frame_id=frame,
        )

    def transform(stamp: int, parent: str, child: str, m: np.ndarray) -> Any:
        q = matrix_to_quaternion(m[:3, :3])
        tf = T["geometry_msgs/msg/Transform"](
            translation=T["geometry_msgs/msg/Vector3"](x=m[0, 3], y=m[1, 3], z=m[2, 3]),
            rotation=T["geometry_msgs/msg/Quaternion"](x=q[0], y=q[1], z=q[2], w=q[3]),
        )
        return T["geometry_msgs/msg/TransformStamped"](
            header=header(stamp, parent), child_frame_id=child, transform=tf
        )

    statics = [
        transform(t0 - period, "base_link", f"{c.name.lower()}_optical", c.camera_to_base)
        for c in rig.cameras
    ]
    msgs.append((t0 - period, "/tf_static", "tf2_msgs/msg/TFMessage",
                 T["tf2_msgs/msg/TFMessage"](transforms=statics)))  # fmt: skip
    gap = (t0 + 1_500 * MS, t0 + 1_600 * MS)  # no /tf sample inside (100 ms)
    tf_stamps = [
        s
        for s in range(t0 - 200 * MS, t0 + cycles * period + 200 * MS, 20 * MS)
        if not gap[0] < s < gap[1]
    ]
    for s in tf_stamps:
        tf = transform(s, "odom", "base_link", ego_pose((s - t0) / 1e9))
        msgs.append((s + 2 * MS, "/tf", "tf2_msgs/msg/TFMessage",
                     T["tf2_msgs/msg/TFMessage"](transforms=[tf])))  # fmt: skip
    for f in frames:
        cam = rig.camera(f.camera)
        topic = by_name[f.camera]
        h = header(f.stamp_ns, f"{f.camera.lower()}_optical")
        pixels = np.random.default_rng([seed, f.cycle, NUSCENES_CAMERAS.index(f.camera)])
        img = pixels.integers(0, 256, (height, width, 3), dtype=np.uint8)
        if topic.compressed:
            ok, buf = cv2.imencode(".jpg", img)
            assert ok
            msg = T["sensor_msgs/msg/CompressedImage"](header=h, format="jpeg", data=buf.ravel())
            kind = "sensor_msgs/msg/CompressedImage"
        else:
            msg = T["sensor_msgs/msg/Image"](
                header=h, height=height, width=width, encoding="bgr8", is_bigendian=0,
                step=3 * width, data=img.reshape(-1),
            )  # fmt: skip
            kind = "sensor_msgs/msg/Image"
        log = f.stamp_ns + rng.randint(5, 12) * MS
        msgs.append((log, topic.image, kind, msg))
        p = np.zeros((3, 4))
        p[:, :3] = cam.intrinsics
        info = T["sensor_msgs/msg/CameraInfo"](
            header=h, height=height, width=width, distortion_model="plumb_bob",
            d=np.zeros(5), k=cam.intrinsics.reshape(-1), r=np.eye(3).reshape(-1),
            p=p.reshape(-1), binning_x=0, binning_y=0,
            roi=T["sensor_msgs/msg/RegionOfInterest"](
                x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
            ),
        )  # fmt: skip
        msgs.append((log + MS, topic.camera_info, "sensor_msgs/msg/CameraInfo", info))
        if (f.cycle, f.camera) == (10, "CAM_FRONT_RIGHT"):  # the same image again
            msgs.append((log + 3 * MS, topic.image, kind, msg))
    msgs.sort(key=lambda m: m[0])
    writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
    writer.open()
    try:
        conns: dict[str, Any] = {}
        for log, topic, kind, msg in msgs:
            if topic not in conns:
                qos = [TF_STATIC_QOS if topic == "/tf_static" else DEFAULT_QOS]
                conns[topic] = writer.add_connection(
                    topic, kind, typestore=store, offered_qos_profiles=qos
                )
            writer.write(conns[topic], log, store.serialize_cdr(msg, kind))
    finally:
        writer.close()
    return RigRecording(topics, frames, tf_stamps, t0, rig, silent)


def reference_pose(samples: list[tuple[int, np.ndarray]], stamp: int) -> np.ndarray:
    """odom <- base_link at `stamp` from the /tf samples on both sides: translation linear,
    rotation R0 exp(a log(R0^T R1)) (written apart from the project's TF buffer)."""
    stamps = [s for s, _ in samples]
    i = int(np.searchsorted(stamps, stamp))
    (s0, m0), (s1, m1) = samples[i - 1], samples[i]
    a = (stamp - s0) / (s1 - s0)
    rel = m0[:3, :3].T @ m1[:3, :3]
    angle = math.acos(max(-1.0, min(1.0, (np.trace(rel) - 1) / 2)))
    out = np.eye(4)
    out[:3, 3] = (1 - a) * m0[:3, 3] + a * m1[:3, 3]
    if angle < 1e-12:
        out[:3, :3] = m0[:3, :3]
        return out
    axis = np.array([rel[2, 1] - rel[1, 2], rel[0, 2] - rel[2, 0], rel[1, 0] - rel[0, 1]])
    axis /= 2 * math.sin(angle)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    step = np.eye(3) + math.sin(a * angle) * k + (1 - math.cos(a * angle)) * k @ k
    out[:3, :3] = m0[:3, :3] @ step
    return out


def assert_pose_close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    err_t = float(np.linalg.norm(got[:3, 3] - want[:3, 3]))
    rel = got[:3, :3].T @ want[:3, :3]
    err_r = math.acos(max(-1.0, min(1.0, (np.trace(rel) - 1) / 2)))
    assert err_t <= 5 * MM and err_r <= 0.05 * DEG, f"{what}: {err_t * 1e3:.2f} mm, {err_r}"


def check_results(rec: RigRecording, grids: dict[int, dict[str, np.ndarray]]) -> None:
    """Every grid (stamp -> its grid-file arrays, `runtime.grid_file`) from its cycle's own
    frames with the poses /tf gives; every complete cycle has a grid."""
    complete = rec.complete_cycles()
    by_key = {stamps[0]: stamps for stamps in complete.values()}
    assert set(grids) == set(by_key), (sorted(grids), sorted(by_key))
    samples = rec.tf_samples()
    static = {c.name: c.camera_to_base for c in rec.rig.cameras}
    for stamp, g in grids.items():
        assert tuple(g["camera_stamps_ns"]) == by_key[stamp]
        key = reference_pose(samples, stamp)
        assert_pose_close(g["ego_pose"], key, f"ego pose {stamp}")
        names, poses = g["camera_names"], g["camera_poses"]
        for i, (name, cam_stamp) in enumerate(zip(names, by_key[stamp], strict=True)):
            want = np.linalg.inv(key) @ reference_pose(samples, cam_stamp) @ static[str(name)]
            assert_pose_close(poses[i], want, f"{name} at {stamp}")


def load_grids(folder: Path) -> dict[int, dict[str, np.ndarray]]:
    """stamp -> arrays of every <stamp>.npz grid file in `folder`."""
    return {int(p.stem): dict(np.load(p)) for p in folder.glob("*.npz")}


def write_test_weights(path: Path) -> None:
    """Seeded random `tiny` weights on the small test grid whose grids depend on the images."""
    cfg = model_config("tiny").replace(grid=SMALL_GRID)
    torch.manual_seed(3)
    save_flashocc(input_sensitive(build_model(cfg).eval()), cfg, path)
