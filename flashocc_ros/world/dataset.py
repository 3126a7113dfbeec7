"""nuScenes-like dataset folder of the synthetic world: writer and reader (no ROS needed).
In: rendered frames + keyframe labels (writer) or a folder path (reader).
Out: the folder of docs/dataset_format.md, or `Sample`s with images, calibration and labels.

Every file is written atomically (`flashocc_ros.safe_io`): a crash or a full disk leaves whole
files only, and the index (world.json, written last and fsynced) never half a one.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from flashocc_ros.config import GridConfig
from flashocc_ros.rig import CameraRig, rig_from_dict
from flashocc_ros.safe_io import save_npz, write_bytes, write_text
from flashocc_ros.world.ground_truth import OccupancyLabels

FORMAT_VERSION = 1
INDEX_FILE = "world.json"


class DatasetError(ValueError):
    """The dataset folder is missing, incomplete or of an unknown format."""


@dataclass(frozen=True, eq=False)
class CameraFrame:
    """One camera image of a frame."""

    camera: str
    stamp_ns: int  # the camera's own trigger stamp
    path: Path  # image file
    ego_pose: np.ndarray  # (4, 4) odom <- base_link at `stamp_ns`
    depth_path: Path | None = None  # 16-bit PNG, camera-z centimetres, 0 = no surface
    class_path: Path | None = None  # 8-bit PNG, class of the surface seen, FREE_LABEL = sky


@dataclass(frozen=True, eq=False)
class FrameRecord:
    """One 12 Hz camera frame of a scene; keyframes (2 Hz) carry a token and labels."""

    scene: str
    frame: int
    token: str | None  # keyframe token, None for sweeps
    cams: tuple[CameraFrame, ...]  # rig order
    folder: Path  # the dataset folder the frame belongs to

    @property
    def is_keyframe(self) -> bool:
        return self.token is not None

    @property
    def stamp_ns(self) -> int:
        """Keyframe / key-ego stamp = camera 0 stamp."""
        return self.cams[0].stamp_ns


@dataclass(frozen=True, eq=False)
class Sample:
    """Everything a model needs for one keyframe. N cameras, images (N, H, W, 3) BGR."""

    token: str
    scene: str
    stamp_ns: int
    images: np.ndarray  # (N, H, W, 3) uint8 BGR
    intrinsics: np.ndarray  # (N, 3, 3) at the stored image size
    sensor_to_ego: np.ndarray  # (N, 4, 4) base_link <- optical (static extrinsics)
    ego_poses: np.ndarray  # (N, 4, 4) odom <- base_link at each camera's stamp
    sensor_to_keyego: np.ndarray  # (N, 4, 4) inv(E_0) · E_n · S_n (spec §2.1)
    labels: OccupancyLabels | None


class DatasetWriter:
    """Writes scenes frame by frame; `close()` writes the index."""

    def __init__(
        self, root: str | Path, rig: CameraRig, grid: GridConfig, image_format: str = "jpg"
    ) -> None:
        if image_format not in ("jpg", "png"):
            raise ValueError(f"image_format must be 'jpg' or 'png', got {image_format!r}")
        self.root = Path(root)
        if (self.root / INDEX_FILE).exists():
            raise DatasetError(f"{self.root} already holds a dataset; choose a new folder")
        self.root.mkdir(parents=True, exist_ok=True)
        self.rig, self.grid, self.ext = rig, grid, image_format
        self._scenes: list[dict[str, Any]] = []

    def begin_scene(self, name: str, seed: int) -> None:
        self._scenes.append({"name": name, "seed": seed, "frames": []})

    def scene_entries(self) -> list[dict[str, Any]]:
        """The index entries of the scenes written so far (for a parallel writer's parent)."""
        return list(self._scenes)

    def add_scenes(self, entries: list[dict[str, Any]]) -> None:
        """Index entries of scenes another writer put into this folder (`scene_entries`)."""
        self._scenes.extend(entries)

    def add_frame(
        self,
        frame: int,
        token: str | None,
        stamps_ns: list[int],
        ego_poses: np.ndarray,
        images: list[np.ndarray],
        depths: list[np.ndarray] | None = None,
        classes: list[np.ndarray] | None = None,
    ) -> None:
        """Images (N of (H, W, 3) BGR) of one frame of the current scene, poses (N, 4, 4).

        Optional `depths` (N of (H, W) float32 camera-z metres, inf = sky) are stored as 16-bit
        PNG in centimetres (0 = no surface) for depth supervision; optional `classes` (N of
        (H, W) uint8, the class of each pixel's surface, FREE_LABEL = sky) as 8-bit PNG.
        """
        scene = self._scenes[-1]
        sub = "samples" if token is not None else "sweeps"
        cams: list[dict[str, Any]] = []
        for cam, stamp, pose, img in zip(
            self.rig.names, stamps_ns, ego_poses, images, strict=True
        ):
            rel = Path(sub) / cam / f"{scene['name']}__{cam}__{stamp}.{self.ext}"
            self._write_image(rel, img)
            entry = {
                "camera": cam,
                "stamp_ns": stamp,
                "file": rel.as_posix(),
                "ego_pose": np.asarray(pose).tolist(),
            }
            if depths is not None:
                d = depths[len(cams)]
                cm = np.where(np.isfinite(d), np.clip(np.round(d * 100.0), 0, 65535), 0)
                entry["depth_file"] = self._write_map("depth", scene["name"], cam, stamp, cm)
            if classes is not None:
                entry["class_file"] = self._write_map(
                    "classes", scene["name"], cam, stamp, classes[len(cams)]
                )
            cams.append(entry)
        scene["frames"].append({"frame": frame, "token": token, "cams": cams})

    def _write_map(self, kind: str, scene: str, cam: str, stamp: int, image: np.ndarray) -> str:
        """A per-pixel map as <kind>/<cam>/<scene>__<cam>__<stamp>.png (uint16 or uint8)."""
        rel = Path(kind) / cam / f"{scene}__{cam}__{stamp}.png"
        dtype = np.uint8 if kind == "classes" else np.uint16
        self._write_image(rel, image.astype(dtype))
        return rel.as_posix()

    def _write_image(self, rel: Path, image: np.ndarray) -> None:
        """Encode `image` by the file suffix of `rel` and write it under the root, atomically
        (not fsynced: until the index is written the folder is no dataset anyway)."""
        ok, encoded = cv2.imencode(rel.suffix, image)
        if not ok:
            raise DatasetError(f"cannot encode {self.root / rel}")
        (self.root / rel).parent.mkdir(parents=True, exist_ok=True)
        write_bytes(self.root / rel, encoded.tobytes(), durable=False)

    def add_labels(self, token: str, labels: OccupancyLabels) -> None:
        """labels.npz of a keyframe (the arrays `OccupancyLabels.save` writes), atomically."""
        path = self.root / "gts" / self._scenes[-1]["name"] / token / "labels.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {f.name: getattr(labels, f.name) for f in dataclasses.fields(labels)}
        save_npz(path, arrays, durable=False)

    def close(self) -> None:
        g = self.grid
        index = {
            "format": "flashocc_ros synthetic world",
            "version": FORMAT_VERSION,
            "grid": {
                "x_min": g.x_min,
                "x_max": g.x_max,
                "y_min": g.y_min,
                "y_max": g.y_max,
                "z_min": g.z_min,
                "z_max": g.z_max,
                "voxel_size": g.voxel_size,
            },
            "rig": self.rig.to_dict(),
            "scenes": self._scenes,
        }
        write_text(self.root / INDEX_FILE, json.dumps(index, indent=1))


class WorldDataset:
    """Reads one or more dataset folders as one. Keyframes are indexed 0 … len-1 in scene order,
    folder after folder; the folders must share the grid and the camera rig, and a scene name
    may appear in only one of them."""

    def __init__(self, *roots: str | Path) -> None:
        if not roots:
            raise DatasetError("no dataset folder given")
        self.roots = tuple(Path(r) for r in roots)
        indexes = [_read_index(root) for root in self.roots]
        self.grid: GridConfig = indexes[0][0]
        self.rig: CameraRig = indexes[0][1]
        self.frames: list[FrameRecord] = []
        self.scenes: list[str] = []
        first_seen: dict[str, Path] = {}
        for root, (grid, rig, scenes) in zip(self.roots, indexes, strict=True):
            if grid != self.grid:
                raise DatasetError(f"{root}: grid {grid} differs from {self.roots[0]}'s")
            if rig.to_dict() != self.rig.to_dict():
                raise DatasetError(f"{root}: camera rig differs from {self.roots[0]}'s")
            for sc in scenes:
                if sc["name"] in first_seen:
                    raise DatasetError(
                        f"scene {sc['name']} is in both {first_seen[sc['name']]} and {root}"
                    )
                first_seen[sc["name"]] = root
                self.scenes.append(sc["name"])
                self.frames.extend(_frame_record(root, sc["name"], fr) for fr in sc["frames"])
        self.keyframes = [f for f in self.frames if f.is_keyframe]

    def __len__(self) -> int:
        return len(self.keyframes)

    def labels_path(self, record: FrameRecord) -> Path:
        if record.token is None:
            raise DatasetError(f"frame {record.frame} of {record.scene} is not a keyframe")
        return record.folder / "gts" / record.scene / record.token / "labels.npz"

    def labels(self, record: FrameRecord) -> OccupancyLabels:
        return OccupancyLabels.load(self.labels_path(record))

    def images(self, record: FrameRecord) -> np.ndarray:
        """(N, H, W, 3) uint8 BGR images of a frame."""
        imgs = []
        for c in record.cams:
            img = cv2.imread(str(c.path), cv2.IMREAD_COLOR)
            if img is None:
                raise DatasetError(f"cannot read image {c.path}")
            imgs.append(img)
        return np.stack(imgs)

    def depths(self, record: FrameRecord) -> np.ndarray | None:
        """(N, H, W) float32 camera-z depth in metres (0 = no surface), or None if not stored."""
        maps = _read_maps([c.depth_path for c in record.cams], "depth")
        return None if maps is None else maps.astype(np.float32) / 100.0

    def pixel_classes(self, record: FrameRecord) -> np.ndarray | None:
        """(N, H, W) uint8 class of each pixel's surface (FREE_LABEL = sky), or None if not
        stored (generate with --classes)."""
        return _read_maps([c.class_path for c in record.cams], "class map")

    def sample(self, i: int) -> Sample:
        """Keyframe `i` with images, calibration, per-camera ego poses and labels."""
        rec = self.keyframes[i]
        s2e = self.rig.camera_to_base()
        poses = np.stack([c.ego_pose for c in rec.cams])
        key_inv = np.linalg.inv(poses[0])
        s2k = np.einsum("ij,njk,nkl->nil", key_inv, poses, s2e)
        assert rec.token is not None
        return Sample(
            rec.token,
            rec.scene,
            rec.stamp_ns,
            self.images(rec),
            self.rig.intrinsics(),
            s2e,
            poses,
            s2k,
            self.labels(rec),
        )


def _read_index(root: Path) -> tuple[GridConfig, CameraRig, list[dict[str, Any]]]:
    """A folder's index: (grid, rig, scene entries)."""
    index_path = root / INDEX_FILE
    try:
        index = json.loads(index_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DatasetError(f"{root} is not a world dataset (cannot read {INDEX_FILE})") from err
    if index.get("version") != FORMAT_VERSION:
        raise DatasetError(f"{index_path}: unsupported version {index.get('version')}")
    return GridConfig(**index["grid"]), rig_from_dict(index["rig"]), list(index["scenes"])


def _read_maps(paths: list[Path | None], what: str) -> np.ndarray | None:
    """(N, H, W) per-pixel maps read as stored, or None when a camera has none."""
    if any(p is None for p in paths):
        return None
    out = []
    for p in paths:
        m = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        if m is None:
            raise DatasetError(f"cannot read {what} {p}")
        out.append(m)
    return np.stack(out)


def _frame_record(root: Path, scene: str, fr: dict[str, Any]) -> FrameRecord:
    cams = tuple(
        CameraFrame(
            c["camera"],
            int(c["stamp_ns"]),
            root / c["file"],
            np.array(c["ego_pose"], dtype=np.float64),
            root / c["depth_file"] if "depth_file" in c else None,
            root / c["class_file"] if "class_file" in c else None,
        )
        for c in fr["cams"]
    )
    return FrameRecord(scene, int(fr["frame"]), fr["token"], cams, root)
