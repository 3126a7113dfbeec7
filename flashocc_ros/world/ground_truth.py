"""Occ3D ground truth per keyframe: semantics voxelised from the scene, camera and lidar masks.
In: a `Scene`, the rig and a keyframe time. Out: `OccupancyLabels` (X, Y, Z) in the key-ego frame.

Semantics come from `voxelize` (positive-volume overlap, world/voxelize.py).
Masks: a voxel is observed when a ray passes through it up to and including its first hit —
camera rays (every camera, a subsampled pixel grid) and a simulated 32-beam top lidar.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flashocc_ros.config import GridConfig
from flashocc_ros.rig import CameraRig
from flashocc_ros.world.raycast import SKY, cast, spherical_footprints
from flashocc_ros.world.render import Renderer
from flashocc_ros.world.scene import Scene
from flashocc_ros.world.voxelize import voxelize


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
