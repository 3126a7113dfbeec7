"""Occ3D ground truth per keyframe: semantics voxelised from the scene, camera and lidar masks.
In: a `Scene`, the rig and a keyframe time. Out: `OccupancyLabels` (X, Y, Z) in the key-ego frame.

Voxelisation: the ground fills the layer containing z = 0 (index 2 for z_min = −1, 0.4 m voxels),
labelled by the ground class at the voxel centre; a primitive fills every voxel it overlaps
(tested on a half-voxel lattice that includes the voxel faces, so thin parts still count).
Masks: a voxel is observed when a ray passes through it up to and including its first hit —
camera rays (every camera, a subsampled pixel grid) and a simulated 32-beam top lidar.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flashocc_ros.classes import CLASS_NAMES, FREE_LABEL
from flashocc_ros.config import GridConfig
from flashocc_ros.rig import CameraRig
from flashocc_ros.world.primitives import KIND_BOX
from flashocc_ros.world.raycast import SKY, cast, spherical_footprints
from flashocc_ros.world.render import Renderer
from flashocc_ros.world.scene import Scene

# Later classes overwrite earlier ones where two primitives share a voxel (small things win).
_PRIORITY = [
    "manmade", "vegetation", "others", "trailer", "bus", "truck", "construction_vehicle", "car",
    "barrier", "motorcycle", "bicycle", "pedestrian", "traffic_cone",
]  # fmt: skip
_RANK = np.array([_PRIORITY.index(n) if n in _PRIORITY else -1 for n in CLASS_NAMES])


@dataclass(frozen=True)
class LidarConfig:
    """Simulated top lidar used for `mask_lidar` (HDL-32E-like)."""

    height: float = 1.8  # m, sensor height above base_link
    beams: int = 32
    azimuths: int = 1000  # rays per revolution
    elevation_min: float = -30.67  # deg
    elevation_max: float = 10.67  # deg
    max_range: float = 70.0  # m


@dataclass(frozen=True, eq=False)
class OccupancyLabels:
    """Occ3D labels of one keyframe; arrays (X, Y, Z) indexed [x, y, z]."""

    semantics: np.ndarray  # (X, Y, Z) uint8, class per voxel, FREE_LABEL = free
    mask_lidar: np.ndarray  # (X, Y, Z) bool, observed by the lidar
    mask_camera: np.ndarray  # (X, Y, Z) bool, observed by any camera

    def save(self, path: str | Path) -> None:
        """Write labels.npz with exactly `semantics`, `mask_lidar`, `mask_camera`."""
        np.savez_compressed(
            path,
            semantics=self.semantics,
            mask_lidar=self.mask_lidar,
            mask_camera=self.mask_camera,
        )

    @staticmethod
    def load(path: str | Path) -> OccupancyLabels:
        with np.load(path) as z:
            return OccupancyLabels(
                z["semantics"].astype(np.uint8),
                z["mask_lidar"].astype(bool),
                z["mask_camera"].astype(bool),
            )


def voxel_centers(grid: GridConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre coordinates (X,), (Y,), (Z,) in metres of the grid's voxels."""
    vs = grid.voxel_size
    return (
        grid.x_min + (np.arange(grid.size_x) + 0.5) * vs,
        grid.y_min + (np.arange(grid.size_y) + 0.5) * vs,
        grid.z_min + (np.arange(grid.size_z) + 0.5) * vs,
    )


def voxelize(scene: Scene, t: float, ego_pose: np.ndarray, grid: GridConfig) -> np.ndarray:
    """(X, Y, Z) uint8 semantics at scene time t in the ego frame `ego_pose` (odom <- base)."""
    sem = np.full(grid.shape, FREE_LABEL, dtype=np.uint8)
    vs = grid.voxel_size
    xs, ys, _ = voxel_centers(grid)
    ex, ey = np.meshgrid(xs, ys, indexing="ij")  # (X, Y)
    world = ego_pose[:2, :2] @ np.stack([ex.ravel(), ey.ravel()]) + ego_pose[:2, 3:4]
    ground_z = -ego_pose[2, 3]  # world z = 0 in the ego frame (no roll / pitch)
    layer = int(np.floor((ground_z - grid.z_min) / vs))
    if 0 <= layer < grid.size_z:
        sem[:, :, layer] = scene.layout.ground_label(world[0], world[1]).reshape(ex.shape)
    prims = scene.prims
    world_to_ego = np.linalg.inv(ego_pose)
    corners = prims.corners_at(t) @ world_to_ego[:3, :3].T + world_to_ego[:3, 3]  # (M, 8, 3)
    centers = prims.centers_at(t) @ world_to_ego[:3, :3].T + world_to_ego[:3, 3]  # (M, 3)
    yaw = prims.yaw - np.arctan2(ego_pose[1, 0], ego_pose[0, 0])  # box headings in the ego frame
    lo = np.array([grid.x_min, grid.y_min, grid.z_min])
    size = np.array(grid.shape)
    k_lo = np.floor((corners.min(1) - lo) / (vs / 2)).astype(np.int64) - 2
    k_hi = np.ceil((corners.max(1) - lo) / (vs / 2)).astype(np.int64) + 2
    k_lo = np.maximum(k_lo - (k_lo % 2), 0)  # even: a voxel corner
    k_hi = np.minimum(k_hi, 2 * size)
    touched = np.flatnonzero((k_hi > k_lo).all(1) & (_RANK[prims.label] >= 0))
    eps = 1e-6
    for m in touched[np.argsort(_RANK[prims.label[touched]], kind="stable")]:
        # Primitives are vertical extrusions: inside = inside_xy (2D) and inside_z (1D).
        ax, ay, az = (lo[a] + np.arange(k_lo[m, a], k_hi[m, a] + 1) * (vs / 2) for a in range(3))
        dx, dy = ax[:, None] - centers[m, 0], ay[None, :] - centers[m, 1]
        h = prims.half[m]
        if prims.kind[m] == KIND_BOX:
            c, s_ = np.cos(yaw[m]), np.sin(yaw[m])
            in_xy = (np.abs(c * dx + s_ * dy) <= h[0] + eps) & (
                np.abs(c * dy - s_ * dx) <= h[1] + eps
            )
        else:
            in_xy = dx * dx + dy * dy <= (h[0] + eps) ** 2
        in_z = np.abs(az - centers[m, 2]) <= h[2] + eps
        occ = _pool2(in_xy)[:, :, None] & _pool1(in_z)[None, None, :]  # voxels k_lo/2 + i
        i0 = k_lo[m] // 2
        region = sem[i0[0] : i0[0] + occ.shape[0], i0[1] : i0[1] + occ.shape[1],
                     i0[2] : i0[2] + occ.shape[2]]  # fmt: skip
        occ = occ[: region.shape[0], : region.shape[1], : region.shape[2]]
        region[occ] = prims.label[m]
    return sem


def _pool1(inside: np.ndarray) -> np.ndarray:
    """Voxel i is hit when any lattice point 2i, 2i+1, 2i+2 is inside (1D)."""
    n = (len(inside) - 1) // 2
    out: np.ndarray = inside[0 : 2 * n : 2] | inside[1 : 2 * n + 1 : 2] | inside[2 : 2 * n + 2 : 2]
    return out


def _pool2(inside: np.ndarray) -> np.ndarray:
    """2D version of `_pool1` over both axes."""
    rows = _pool1_axis0(inside)
    return _pool1_axis0(rows.T).T


def _pool1_axis0(a: np.ndarray) -> np.ndarray:
    n = (a.shape[0] - 1) // 2
    out: np.ndarray = a[0 : 2 * n : 2] | a[1 : 2 * n + 1 : 2] | a[2 : 2 * n + 2 : 2]
    return out


def mark_rays(
    origin: np.ndarray,
    dirs: np.ndarray,
    length: np.ndarray,
    grid: GridConfig,
    mask: np.ndarray,
    step: float | None = None,
) -> None:
    """Set `mask` (X, Y, Z) True in voxels along rays origin + s·dirs, 0 <= s <= length + ε.

    origin (3,) and unit dirs (K, 3) in the grid's frame; length (K,) m (inf: until it leaves).
    """
    step = step or grid.voxel_size / 2
    lo = np.array([grid.x_min, grid.y_min, grid.z_min])
    hi = np.array([grid.x_max, grid.y_max, grid.z_max])
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (lo - origin) / dirs, (hi - origin) / dirs
    exit_t = np.nan_to_num(np.maximum(t1, t2), nan=np.inf).min(axis=1)
    end = np.minimum(np.where(np.isfinite(length), length + 0.02, np.inf), exit_t)
    vs, shape = grid.voxel_size, np.array(grid.shape)
    flat = mask.reshape(-1)
    order = np.argsort(end)  # similar lengths per chunk: few wasted samples
    dirs32 = (dirs[order] / np.float32(vs)).astype(np.float32)
    end = end[order].astype(np.float32)
    start = ((origin - lo) / vs).astype(np.float32)  # in voxel units
    for c0 in range(0, len(dirs32), 4096):
        d, e = dirs32[c0 : c0 + 4096], end[c0 : c0 + 4096]
        s = np.arange(0.0, float(e.max()) + step, step, dtype=np.float32)[None, :]  # (1, S)
        s = np.minimum(s, e[:, None])  # clamp: the last sample sits at the end point (hit voxel)
        p = start + s[..., None] * d[:, None, :]  # (K, S, 3) voxel units
        idx = np.minimum(p.astype(np.int32), shape - 1)  # p > -1 inside: truncation gives 0
        flat[(idx[..., 0] * shape[1] + idx[..., 1]) * shape[2] + idx[..., 2]] = True


class GroundTruthMaker:
    """Builds `OccupancyLabels` for keyframes of one scene."""

    def __init__(
        self,
        scene: Scene,
        rig: CameraRig,
        grid: GridConfig | None = None,
        mask_width: int = 200,
        lidar: LidarConfig | None = None,
    ) -> None:
        self.scene, self.grid = scene, grid or GridConfig()
        cam0 = rig.cameras[0]
        mask_height = max(1, round(mask_width * cam0.height / cam0.width))
        self._mask_renderer = Renderer(scene, rig.scaled(mask_width, mask_height))
        self.lidar = lidar or LidarConfig()

    def make(self, t: float) -> OccupancyLabels:
        """Labels at scene time t (the keyframe = camera 0 stamp), in the ego frame at t."""
        ego = self.scene.trajectory.pose(t)
        sem = voxelize(self.scene, t, ego, self.grid)
        return OccupancyLabels(sem, self._lidar_mask(t, ego), self._camera_mask(t, ego))

    def _camera_mask(self, t: float, ego: np.ndarray) -> np.ndarray:
        mask = np.zeros(self.grid.shape, dtype=bool)
        r = self._mask_renderer
        for n, cam in enumerate(r.rig.cameras):
            hits = r.cast_camera(n, t, ego @ cam.camera_to_base)
            d_cam = r._rays[n].reshape(-1, 3).astype(np.float64)  # optical, z = 1
            norm = np.linalg.norm(d_cam, axis=1)
            length = np.where(hits.prim.reshape(-1) == SKY, np.inf, hits.t.reshape(-1) * norm)
            c2b = cam.camera_to_base
            dirs = (d_cam / norm[:, None]) @ c2b[:3, :3].T
            mark_rays(c2b[:3, 3], dirs, length, self.grid, mask)
        return mask

    def _lidar_mask(self, t: float, ego: np.ndarray) -> np.ndarray:
        cfg = self.lidar
        el = np.radians(np.linspace(cfg.elevation_min, cfg.elevation_max, cfg.beams))
        az = np.arange(cfg.azimuths) * (2 * np.pi / cfg.azimuths)
        e, a = np.meshgrid(el, az, indexing="ij")  # (beams, azimuths)
        local = np.stack([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)], axis=-1)
        dirs_w = (local @ ego[:3, :3].T).astype(np.float32)
        origin_w = ego[:3, 3] + ego[:3, :3] @ np.array([0.0, 0.0, cfg.height])
        prims = self.scene.prims
        centers = prims.centers_at(t)
        near = np.flatnonzero(
            np.linalg.norm(centers - origin_w, axis=1) - prims.bounding_radius() < cfg.max_range
        )
        fps = (
            (int(near[m]), rs, cs)
            for m, rs, cs in spherical_footprints(
                prims.corners_at(t)[near], origin_w, el, cfg.azimuths
            )
        )
        hits = cast(prims, centers, self.scene.layout, origin_w, dirs_w, fps)
        length = np.where(hits.t.reshape(-1) <= cfg.max_range, hits.t.reshape(-1), np.inf)
        mask = np.zeros(self.grid.shape, dtype=bool)
        mark_rays(np.array([0.0, 0.0, cfg.height]), local.reshape(-1, 3), length, self.grid, mask)
        return mask
