"""Independent check of the ground truth: does each labelled voxel hold a surface of its class?
In: a generated bag and its dataset folder (written with --depth --classes). Out: `CheckResult`.

Geometry comes only from the bag: CameraInfo K of each image, /tf (odom -> base_link, looked up
strictly at the image stamp, interpolated between the two samples around it) and /tf_static
(base_link -> optical). The folder gives each pixel's rendered depth and class; the voxeliser,
its masks and the renderer's matrices are not used. Per keyframe (ground-truth stamp s_k) and
camera image (stamp s_n), with T = inv(T_odom<-optical(s_n)) · T_odom<-base_link(s_k):

- every pixel that sees a surface is lifted with K⁻¹ to its depth, pushed `PUSH` m further along
  its ray (into the surface, so a surface lying on a voxel face counts for the voxel behind it)
  and binned into the key-ego grid: that voxel holds a surface of the pixel's class;
- probe points (a 4 x 4 x 4 lattice of cell centres) of the other labelled voxels are projected;
  one is seen empty when the 3 x 3 pixels around it see sky or surfaces more than `BEHIND` m
  beyond it (the neighbours keep a point just beside an edge or above a surface seen at a
  grazing angle from being called empty).

A labelled voxel is **on its object** when some image puts a surface of its class inside it. It
is **off** when, instead, only surfaces of other classes lie inside it (the ground plane does not
count against an object standing on it), or every probe point of it is seen empty by some image
(the voxel is empty throughout). The other voxels (hidden behind others or inside objects,
outside every image) are not judged. The second score runs the other way: of the surface points
inside the grid, how many fall into a voxel labelled with their class. Objects move between the
camera stamps of a frame (up to 41.5 ms), so moving objects seen by later cameras score lower.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from rosbags.highlevel import AnyReader

from flashocc_ros.classes import CLASS_NAMES, FREE_LABEL, NUM_CLASSES
from flashocc_ros.config import GridConfig
from flashocc_ros.eval.sources import SourceError, read_bag_grids
from flashocc_ros.msgdefs import flashocc_typestore
from flashocc_ros.sensing.tf_buffer import TfBuffer, TransformError
from flashocc_ros.world.bag import BASE_FRAME, OCCUPANCY_TOPIC, ODOM_FRAME, info_topic
from flashocc_ros.world.dataset import DatasetError, FrameRecord, WorldDataset
from flashocc_ros.world.layout import DRIVEABLE, OTHER_FLAT, SIDEWALK, TERRAIN

PUSH = 0.02  # m, how far a lifted pixel is pushed past its surface (depth maps store cm)
BEHIND = 0.05  # m, a surface this far beyond a point leaves the point seen empty
SUB = 4  # probe points per voxel edge (SUB³ per voxel) for "seen empty throughout"
GROUND_CLASSES = (DRIVEABLE, OTHER_FLAT, SIDEWALK, TERRAIN)
MAX_TF_GAP_NS = 100_000_000  # the /tf samples around an image stamp lie at most this far apart


class CheckError(ValueError):
    """The bag and the folder do not belong together or lack what the check needs."""


@dataclass(frozen=True)
class CameraInfo:
    """What the check takes from one sensor_msgs/CameraInfo."""

    frame_id: str  # optical frame of the image
    width: int
    height: int
    k: np.ndarray  # (3, 3) intrinsics


@dataclass
class BagView:
    """The parts of a bag the check uses."""

    tf: TfBuffer  # /tf and /tf_static, every sample kept, strict lookups
    tf_stamps: list[int]  # sorted stamps of the odom -> base_link samples
    infos: dict[tuple[str, int], CameraInfo]  # (camera info topic, stamp ns) -> info
    image_stamps: set[int]  # header stamps of all images
    ground_truth: dict[int, np.ndarray]  # keyframe stamp -> (X, Y, Z) semantics

    def covered(self, stamp_ns: int) -> bool:
        """Whether two adjacent /tf samples at most MAX_TF_GAP_NS apart enclose the stamp."""
        i = bisect.bisect_left(self.tf_stamps, stamp_ns)
        if i < len(self.tf_stamps) and self.tf_stamps[i] == stamp_ns:
            return True
        return 0 < i < len(self.tf_stamps) and (
            self.tf_stamps[i] - self.tf_stamps[i - 1] <= MAX_TF_GAP_NS
        )


@dataclass
class CheckResult:
    """Per class (index = label, 18 entries): voxels judged / on their object, surface points
    inside the grid / in a voxel of their class."""

    judged: np.ndarray = field(default_factory=lambda: np.zeros(NUM_CLASSES, np.int64))
    on_object: np.ndarray = field(default_factory=lambda: np.zeros(NUM_CLASSES, np.int64))
    points: np.ndarray = field(default_factory=lambda: np.zeros(NUM_CLASSES, np.int64))
    points_in_class: np.ndarray = field(default_factory=lambda: np.zeros(NUM_CLASSES, np.int64))
    keyframes: int = 0
    images: int = 0
    images_outside_tf: int = 0

    def on_fraction(self, label: int) -> float:
        """Fraction of judged voxels of class `label` on their object (nan if none judged)."""
        n = int(self.judged[label])
        return float(self.on_object[label]) / n if n else float("nan")

    def table(self) -> str:
        """Per-class table plus a summary line, as the CLI prints it."""
        lines = [
            f"{'class':<22}{'judged':>9}{'on object':>11}{'surface pts':>13}{'in own class':>14}"
        ]
        for c in range(FREE_LABEL):
            on = 100.0 * self.on_fraction(c)
            pts = int(self.points[c])
            own = 100.0 * self.points_in_class[c] / pts if pts else float("nan")
            lines.append(
                f"{CLASS_NAMES[c]:<22}{int(self.judged[c]):>9}{on:>10.1f}%{pts:>13}{own:>13.1f}%"
            )
        lines.append(
            f"keyframes: {self.keyframes}, images: {self.images}, images whose stamp /tf does not "
            f"enclose (skipped): {self.images_outside_tf}"
        )
        return "\n".join(lines)


def read_bag(path: Path) -> BagView:
    """/tf, /tf_static, CameraInfo, image stamps and ground truth of a generated bag."""
    tf = TfBuffer(cache_ns=2**62, max_samples_per_link=10**7, jump_back_ns=2**62)
    tf_stamps: list[int] = []
    infos: dict[tuple[str, int], CameraInfo] = {}
    images: set[int] = set()
    try:
        with AnyReader([path], default_typestore=flashocc_typestore()) as reader:
            for conn, _, raw in reader.messages():
                msg: Any = reader.deserialize(raw, conn.msgtype)
                if conn.msgtype == "tf2_msgs/msg/TFMessage":
                    for t in msg.transforms:
                        stamp = _stamp(t.header)
                        tr, q = t.transform.translation, t.transform.rotation
                        tf.set_transform(
                            t.header.frame_id, t.child_frame_id, stamp, (tr.x, tr.y, tr.z),
                            (q.x, q.y, q.z, q.w), static=conn.topic == "/tf_static",
                        )  # fmt: skip
                        if t.child_frame_id == BASE_FRAME and conn.topic == "/tf":
                            tf_stamps.append(stamp)
                elif conn.msgtype == "sensor_msgs/msg/CameraInfo":
                    k = np.array(msg.k, dtype=np.float64).reshape(3, 3)
                    infos[(conn.topic, _stamp(msg.header))] = CameraInfo(
                        msg.header.frame_id, int(msg.width), int(msg.height), k
                    )
                elif conn.msgtype in ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage"):
                    images.add(_stamp(msg.header))
    except Exception as err:  # rosbags raises several unrelated error types
        raise CheckError(f"cannot read bag {path}: {err}") from err
    try:
        truth = read_bag_grids(path, OCCUPANCY_TOPIC)
    except SourceError as err:
        raise CheckError(str(err)) from err
    return BagView(tf, sorted(tf_stamps), infos, images, truth)


def _stamp(header: Any) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def check(
    bag: BagView, data: WorldDataset, truth: dict[int, np.ndarray] | None = None
) -> CheckResult:
    """Score the ground truth of every keyframe of `data` that the bag holds.

    `truth` replaces the bag's ground truth (stamp -> semantics), e.g. to check a variant.
    """
    truth = bag.ground_truth if truth is None else truth
    result = CheckResult()
    for rec in data.keyframes:
        sem = truth.get(rec.stamp_ns)
        if sem is None:
            continue
        if sem.shape != data.grid.shape:
            raise CheckError(f"ground truth {sem.shape} does not match the grid {data.grid.shape}")
        _check_keyframe(bag, data, rec, sem, result)
    if result.keyframes == 0:
        raise CheckError("no keyframe of the folder has ground truth in the bag")
    return result


def _check_keyframe(
    bag: BagView, data: WorldDataset, rec: FrameRecord, sem: np.ndarray, result: CheckResult
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Adds one keyframe to `result`; returns its labelled voxels (V, 3) and which of them
    are judged (V,) and on their object (V,)."""
    if any(c.depth_path is None or c.class_path is None for c in rec.cams):
        raise CheckError(
            f"{rec.folder} has no depth or class maps: generate it with --depth --classes"
        )
    depths, classes = data.depths(rec), data.pixel_classes(rec)
    assert depths is not None and classes is not None
    grid = data.grid
    views = []  # (nearest depth around each pixel (H, W), K, key <- optical) of images used
    codes = []  # voxel flat index * NUM_CLASSES + class of the surfaces inside it
    for n, cam in enumerate(rec.cams):
        info = bag.infos.get((info_topic(cam.camera), cam.stamp_ns))
        if info is None or cam.stamp_ns not in bag.image_stamps:
            raise CheckError(
                f"the bag has no image + CameraInfo of {cam.camera} at {cam.stamp_ns}"
            )
        if depths.shape[1:] != (info.height, info.width):
            raise CheckError(f"{cam.camera}: maps {depths.shape[1:]} but CameraInfo is "
                             f"{info.height}x{info.width}")  # fmt: skip
        result.images += 1
        if not (bag.covered(cam.stamp_ns) and bag.covered(rec.stamp_ns)):
            result.images_outside_tf += 1
            continue
        try:
            key_pose = bag.tf.lookup(ODOM_FRAME, BASE_FRAME, rec.stamp_ns)
            key_from_cam = np.linalg.inv(key_pose) @ bag.tf.lookup(
                ODOM_FRAME, info.frame_id, cam.stamp_ns
            )
        except TransformError as err:
            raise CheckError(f"{cam.camera} at {cam.stamp_ns}: {err}") from err
        codes.append(_surfaces(depths[n], classes[n], info.k, key_from_cam, grid, sem, result))
        views.append((_nearest_around(depths[n]), info.k, key_from_cam))
    if not views:
        return np.zeros((0, 3), np.int64), np.zeros(0, bool), np.zeros(0, bool)
    result.keyframes += 1
    occupied = np.argwhere(sem != FREE_LABEL)  # (V, 3)
    labels = sem[tuple(occupied.T)].astype(np.int64)
    flat = np.ravel_multi_index(tuple(occupied.T), grid.shape)
    found = np.unique(np.concatenate(codes))
    on = np.isin(flat * NUM_CLASSES + labels, found)
    # Surfaces inside, none of its class. The ground plane runs through the foot of anything
    # standing on it, so ground surfaces count only against ground-class voxels.
    ground = np.isin(found % NUM_CLASSES, GROUND_CLASSES)
    others_only = ~on & np.where(
        np.isin(labels, GROUND_CLASSES),
        np.isin(flat, found // NUM_CLASSES),
        np.isin(flat, found[~ground] // NUM_CLASSES),
    )
    rest = np.flatnonzero(~on & ~others_only)
    empty = np.zeros(len(occupied), dtype=bool)
    empty[rest] = _seen_empty_throughout(occupied[rest], grid, views)
    judged = on | others_only | empty
    result.judged += np.bincount(labels[judged], minlength=NUM_CLASSES)
    result.on_object += np.bincount(labels[on], minlength=NUM_CLASSES)
    return occupied, judged, on


def _lower(grid: GridConfig) -> np.ndarray:
    return np.array([grid.x_min, grid.y_min, grid.z_min])


def _surfaces(
    depth: np.ndarray,
    classes: np.ndarray,
    k: np.ndarray,
    key_from_cam: np.ndarray,
    grid: GridConfig,
    sem: np.ndarray,
    result: CheckResult,
) -> np.ndarray:
    """Codes voxel * NUM_CLASSES + class of the surfaces one image puts into the grid (depth,
    classes (H, W)); counts them and those in a voxel of their class into `result`."""
    rows, cols = np.nonzero(depth > 0)
    d = depth[rows, cols].astype(np.float64)
    rays = np.stack([cols, rows, np.ones_like(cols)], axis=1) @ np.linalg.inv(k).T  # (P, 3) z=1
    pts = rays * (d + PUSH * np.linalg.norm(rays, axis=1))[:, None]  # pushed PUSH m along ray
    key = pts @ key_from_cam[:3, :3].T + key_from_cam[:3, 3]
    idx = np.floor((key - _lower(grid)) / grid.voxel_size).astype(np.int64)
    inside = ((idx >= 0) & (idx < grid.shape)).all(axis=1)
    idx, cls = idx[inside], classes[rows[inside], cols[inside]].astype(np.int64)
    result.points += np.bincount(cls, minlength=NUM_CLASSES)
    own = sem[tuple(idx.T)] == cls
    result.points_in_class += np.bincount(cls[own], minlength=NUM_CLASSES)
    out: np.ndarray = np.ravel_multi_index(tuple(idx.T), grid.shape) * NUM_CLASSES + cls
    return out


def _seen_empty_throughout(
    voxels: np.ndarray, grid: GridConfig, views: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
) -> np.ndarray:
    """(V,) bool: voxels (V, 3 indices) whose every probe point (SUB³ per voxel) some image
    sees empty. views: (nearest depth around each pixel (H, W), K, key <- optical)."""
    step = (np.arange(SUB) + 0.5) / SUB
    probes = np.stack(np.meshgrid(step, step, step, indexing="ij"), -1).reshape(-1, 3)
    left = np.arange(len(voxels))  # voxels whose probes so far were all seen empty
    for probe in probes:
        pts = _lower(grid) + (voxels[left] + probe) * grid.voxel_size
        empty = np.zeros(len(left), dtype=bool)
        for near, k, key_from_cam in views:
            empty |= _points_seen_empty(pts, near, k, key_from_cam)
        left = left[empty]
    out = np.zeros(len(voxels), dtype=bool)
    out[left] = True
    return out


def _nearest_around(depth: np.ndarray) -> np.ndarray:
    """(H, W) float32: the nearest surface over each pixel's 3 x 3 neighbourhood (inf: none),
    so that a point seen between pixels next to an edge is not called empty."""
    far = np.where(depth > 0, depth, np.inf).astype(np.float32)
    out: np.ndarray = cv2.erode(far, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_REPLICATE)
    return out


def _points_seen_empty(
    points: np.ndarray, near: np.ndarray, k: np.ndarray, key_from_cam: np.ndarray
) -> np.ndarray:
    """(P,) bool: key-ego points (P, 3) in front of the camera whose pixel neighbourhood sees
    nothing nearer than BEHIND m beyond them (near (H, W) from `_nearest_around`)."""
    cam_from_key = np.linalg.inv(key_from_cam)
    p = points @ cam_from_key[:3, :3].T + cam_from_key[:3, 3]
    out = np.zeros(len(points), dtype=bool)
    front = np.flatnonzero(p[:, 2] > 0.1)
    uv = p[front] @ k.T
    u = np.round(uv[:, 0] / uv[:, 2]).astype(np.int64)
    v = np.round(uv[:, 1] / uv[:, 2]).astype(np.int64)
    h, w = near.shape
    ok = (u >= 0) & (u < w) & (v >= 0) & (v < h)
    out[front[ok]] = near[v[ok], u[ok]] > p[front[ok], 2] + BEHIND
    return out


def check_folder(bag: Path, data: Path) -> CheckResult:
    """`check` of a bag and the dataset folder written with it."""
    try:
        dataset = WorldDataset(data)
    except DatasetError as err:
        raise CheckError(str(err)) from err
    return check(read_bag(bag), dataset)
