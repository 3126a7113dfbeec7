"""Camera rig: names, image size, pinhole intrinsics and camera-to-base extrinsics.
In: a YAML mapping or the nuScenes-like default. Out: `CameraRig` for the world, model and node.

Extrinsics are `base_link <- camera optical frame` transforms (REP-103 optical frame: z forward,
x right, y down). Intrinsics belong to the image size stored beside them (source resolution).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from flashocc_ros.config import NUSCENES_CAMERAS, ConfigError

# Rotation taking optical axes (x right, y down, z forward) to a forward-looking base frame
# (x forward, y left, z up): columns are the optical axes expressed in base coordinates.
_OPTICAL_TO_FORWARD = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def yaw_pitch_to_optical_rotation(yaw_deg: float, pitch_deg: float = 0.0) -> np.ndarray:
    """(3, 3) rotation base <- optical for a camera turned `yaw` left and tilted `pitch` down."""
    yaw, pitch = math.radians(yaw_deg), math.radians(pitch_deg)
    rz = np.array(
        [[math.cos(yaw), -math.sin(yaw), 0.0], [math.sin(yaw), math.cos(yaw), 0.0], [0, 0, 1.0]]
    )
    # Pitch down = rotation about base y by +pitch (x towards -z).
    ry = np.array(
        [
            [math.cos(pitch), 0.0, math.sin(pitch)],
            [0.0, 1.0, 0.0],
            [-math.sin(pitch), 0.0, math.cos(pitch)],
        ]
    )
    rot: np.ndarray = rz @ ry @ _OPTICAL_TO_FORWARD
    return rot


@dataclass(frozen=True)
class Camera:
    """One pinhole camera. Intrinsics in pixels at (width, height); extrinsic base <- optical."""

    name: str
    width: int  # px, source image width the intrinsics belong to
    height: int  # px, source image height
    fx: float  # px
    fy: float  # px
    cx: float  # px
    cy: float  # px
    translation: tuple[float, float, float]  # m, optical-frame origin in base_link
    rotation: tuple[tuple[float, float, float], ...]  # 3x3 row-major, base <- optical

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ConfigError(f"camera {self.name}: image size must be positive")
        for v, what in ((self.fx, "fx"), (self.fy, "fy")):
            if not (math.isfinite(v) and v > 0):
                raise ConfigError(f"camera {self.name}: {what} must be a positive finite number")
        r = np.asarray(self.rotation, dtype=np.float64)
        if r.shape != (3, 3) or not np.allclose(r @ r.T, np.eye(3), atol=1e-5):
            raise ConfigError(f"camera {self.name}: rotation must be a 3x3 orthonormal matrix")

    @property
    def intrinsics(self) -> np.ndarray:
        """(3, 3) pinhole matrix K at the source resolution."""
        return np.array(
            [[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]], dtype=np.float64
        )

    @property
    def camera_to_base(self) -> np.ndarray:
        """(4, 4) homogeneous transform base_link <- camera optical frame."""
        t = np.eye(4)
        t[:3, :3] = np.asarray(self.rotation, dtype=np.float64)
        t[:3, 3] = self.translation
        return t

    def scaled(self, width: int, height: int) -> Camera:
        """The same camera with intrinsics rescaled to another image size."""
        sx, sy = width / self.width, height / self.height
        return Camera(
            self.name,
            width,
            height,
            self.fx * sx,
            self.fy * sy,
            self.cx * sx,
            self.cy * sy,
            self.translation,
            self.rotation,
        )


@dataclass(frozen=True)
class CameraRig:
    """An ordered set of cameras; the order is the model's camera order."""

    cameras: tuple[Camera, ...]

    def __post_init__(self) -> None:
        names = [c.name for c in self.cameras]
        if not names:
            raise ConfigError("a camera rig needs at least one camera")
        if len(set(names)) != len(names):
            raise ConfigError(f"camera names must be unique, got {names}")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.cameras)

    def __len__(self) -> int:
        return len(self.cameras)

    def camera(self, name: str) -> Camera:
        for c in self.cameras:
            if c.name == name:
                return c
        raise ConfigError(f"no camera {name!r} in rig {self.names}")

    def intrinsics(self) -> np.ndarray:
        """(N, 3, 3) intrinsics at source resolution."""
        return np.stack([c.intrinsics for c in self.cameras])

    def camera_to_base(self) -> np.ndarray:
        """(N, 4, 4) base_link <- optical transforms."""
        return np.stack([c.camera_to_base for c in self.cameras])

    def scaled(self, width: int, height: int) -> CameraRig:
        """The rig with every camera's image size (and intrinsics) changed."""
        return CameraRig(tuple(c.scaled(width, height) for c in self.cameras))

    def ordered(self, names: Sequence[str]) -> CameraRig:
        """The rig restricted/reordered to `names`."""
        return CameraRig(tuple(self.camera(n) for n in names))

    def to_dict(self) -> dict[str, Any]:
        return {
            "cameras": [
                {
                    "name": c.name,
                    "width": c.width,
                    "height": c.height,
                    "fx": c.fx,
                    "fy": c.fy,
                    "cx": c.cx,
                    "cy": c.cy,
                    "translation": list(c.translation),
                    "rotation": [list(r) for r in c.rotation],
                }
                for c in self.cameras
            ]
        }


def rig_from_dict(data: Mapping[str, Any]) -> CameraRig:
    """Build a rig from `{cameras: [{name, width, height, fx, fy, cx, cy, translation, ...}]}`.

    Each camera gives either `rotation` (3x3, base <- optical) or `yaw_deg` (+ optional
    `pitch_deg`) for a level camera turned left by yaw.
    """
    cams = data.get("cameras")
    if not isinstance(cams, Sequence) or not cams:
        raise ConfigError("rig needs a non-empty 'cameras' list")
    out = []
    for i, c in enumerate(cams):
        try:
            if "rotation" in c:
                rot = np.asarray(c["rotation"], dtype=np.float64)
            else:
                rot = yaw_pitch_to_optical_rotation(
                    float(c["yaw_deg"]), float(c.get("pitch_deg", 0.0))
                )
            out.append(
                Camera(
                    name=str(c["name"]),
                    width=int(c["width"]),
                    height=int(c["height"]),
                    fx=float(c["fx"]),
                    fy=float(c.get("fy", c["fx"])),
                    cx=float(c["cx"]),
                    cy=float(c["cy"]),
                    translation=(
                        float(c["translation"][0]),
                        float(c["translation"][1]),
                        float(c["translation"][2]),
                    ),
                    rotation=_rot_tuple(rot),
                )
            )
        except (KeyError, TypeError, ValueError, IndexError) as err:
            if isinstance(err, ConfigError):
                raise
            raise ConfigError(f"rig camera #{i}: invalid or missing field ({err})") from err
    return CameraRig(tuple(out))


def load_rig(path: str | Path) -> CameraRig:
    """Read a rig YAML file (format of `rig_from_dict`)."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read rig {path}: {err}") from err
    if not isinstance(data, Mapping):
        raise ConfigError(f"rig file {path} must hold a mapping")
    return rig_from_dict(data)


def _rot_tuple(r: np.ndarray) -> tuple[tuple[float, float, float], ...]:
    return tuple((float(row[0]), float(row[1]), float(row[2])) for row in r)


# nuScenes-like default: positions/yaws/intrinsics approximate the nuScenes vehicle at 1600x900.
_NUSCENES_LIKE = (
    # name, (x, y, z) m, yaw deg, fx, cx, cy
    ("CAM_FRONT_LEFT", (1.52, 0.49, 1.51), 55.0, 1272.6, 826.6, 479.8),
    ("CAM_FRONT", (1.70, 0.02, 1.51), 0.0, 1266.4, 816.3, 491.5),
    ("CAM_FRONT_RIGHT", (1.55, -0.49, 1.50), -55.0, 1260.8, 808.0, 495.3),
    ("CAM_BACK_LEFT", (1.04, 0.71, 1.56), 110.0, 1256.7, 817.8, 452.0),
    ("CAM_BACK", (0.03, 0.01, 1.57), 180.0, 809.2, 829.2, 481.8),
    ("CAM_BACK_RIGHT", (1.05, -0.48, 1.56), -110.0, 1259.5, 807.3, 501.2),
)
assert tuple(n for n, *_ in _NUSCENES_LIKE) == NUSCENES_CAMERAS


def nuscenes_like_rig(width: int = 1600, height: int = 900) -> CameraRig:
    """Six cameras placed like the nuScenes vehicle, intrinsics scaled to (width, height)."""
    cams = tuple(
        Camera(
            name,
            1600,
            900,
            fx,
            fx,
            cx,
            cy,
            t,
            _rot_tuple(yaw_pitch_to_optical_rotation(yaw)),
        )
        for name, t, yaw, fx, cx, cy in _NUSCENES_LIKE
    )
    rig = CameraRig(cams)
    return rig if (width, height) == (1600, 900) else rig.scaled(width, height)
