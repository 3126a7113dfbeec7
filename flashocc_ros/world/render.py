"""Camera rendering: one pinhole image per camera at its own stamp, by vectorised ray casting.
In: a `Scene`, a `CameraRig` and a camera index + time. Out: `CameraImage` (BGR, depth, class).

Pixel (row i, column j) is the ray through image point (u, v) = (j, i) (OpenCV convention, the
same one `lift_to_ego` uses), so a pixel's depth lifted at (j, i) lands on the rendered surface.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flashocc_ros.rig import CameraRig
from flashocc_ros.world import shading
from flashocc_ros.world.primitives import KIND_BOX, Primitives
from flashocc_ros.world.raycast import GROUND, SKY, Hits, cast, pinhole_footprints
from flashocc_ros.world.scene import Scene

_MAX_RANGE = 250.0  # m, primitives farther than this are not drawn (hidden by haze anyway)


@dataclass(frozen=True, eq=False)
class CameraImage:
    """One rendered camera image with per-pixel ground truth."""

    image: np.ndarray  # (H, W, 3) uint8 BGR
    depth: np.ndarray  # (H, W) float32 m, optical-frame z of the first hit; inf for sky
    label: np.ndarray  # (H, W) uint8 Occ3D class of the first hit; FREE_LABEL for sky
    stamp: float  # s, scene time the camera fired
    camera_to_world: np.ndarray  # (4, 4) odom <- optical frame at `stamp`


def pixel_rays(K: np.ndarray, width: int, height: int) -> np.ndarray:
    """(H, W, 3) float32 optical-frame directions with z = 1 through pixels (u=j, v=i)."""
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    uv1 = np.stack([u, v, np.ones_like(u)], axis=-1)
    return (uv1 @ np.linalg.inv(K).T).astype(np.float32)


def surface(
    prims: Primitives, centers: np.ndarray, index: np.ndarray, points: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normals (K, 3), face coordinates (K, 2) m and relative height (K,) of hit points (K, 3)
    on primitives `index` (K,) whose centres are `centers` (M, 3)."""
    c = centers[index]
    h = prims.half[index]
    yaw = prims.yaw[index]
    cy, sy = np.cos(yaw), np.sin(yaw)
    d = points - c
    lx, ly, lz = cy * d[:, 0] + sy * d[:, 1], -sy * d[:, 0] + cy * d[:, 1], d[:, 2]
    height = np.clip((lz + h[:, 2]) / (2 * h[:, 2]), 0.0, 1.0)
    rel = np.abs(np.stack([lx, ly, lz], axis=1)) / h
    axis = np.argmax(rel, axis=1)
    sign = np.sign(np.stack([lx, ly, lz], axis=1)[np.arange(len(axis)), axis])
    nl = np.zeros((len(index), 3))
    nl[np.arange(len(axis)), axis] = sign
    uv = np.where((axis == 0)[:, None], np.stack([ly, lz], 1), np.stack([lx, lz], 1))
    uv = np.where((axis == 2)[:, None], np.stack([lx, ly], 1), uv)
    cyl = prims.kind[index] != KIND_BOX
    side = cyl & (axis != 2)
    r = np.maximum(np.hypot(lx, ly), 1e-6)
    nl[side] = np.stack([lx[side] / r[side], ly[side] / r[side], np.zeros(side.sum())], 1)
    uv[side] = np.stack([np.arctan2(ly[side], lx[side]) * h[side, 0], lz[side]], 1)
    normal = np.stack([cy * nl[:, 0] - sy * nl[:, 1], sy * nl[:, 0] + cy * nl[:, 1], nl[:, 2]], 1)
    return normal.astype(np.float32), uv.astype(np.float32), height.astype(np.float32)


class Renderer:
    """Renders the cameras of `rig` in `scene`. Ray directions are computed once per camera."""

    def __init__(self, scene: Scene, rig: CameraRig) -> None:
        self.scene = scene
        self.rig = rig
        self.look = shading.Look.from_seed(scene.seed)
        self._rays = [pixel_rays(c.intrinsics, c.width, c.height) for c in rig.cameras]

    def camera_pose(self, cam: int, t: float) -> np.ndarray:
        """(4, 4) odom <- optical frame of camera `cam` at scene time t."""
        out: np.ndarray = self.scene.trajectory.pose(t) @ self.rig.cameras[cam].camera_to_base
        return out

    def cast_camera(self, cam: int, t: float, camera_to_world: np.ndarray | None = None) -> Hits:
        """First hits of camera `cam`'s pixel rays; t also places the moving objects."""
        c = self.rig.cameras[cam]
        pose = self.camera_pose(cam, t) if camera_to_world is None else camera_to_world
        prims = self.scene.prims
        centers = prims.centers_at(t)
        origin = pose[:3, 3]
        near = np.linalg.norm(centers - origin, axis=1) - prims.bounding_radius() < _MAX_RANGE
        idx = np.flatnonzero(near)
        world_to_cam = np.linalg.inv(pose)
        corners = prims.corners_at(t)[idx] @ world_to_cam[:3, :3].T + world_to_cam[:3, 3]
        fps = (
            (int(idx[m]), rs, cs)
            for m, rs, cs in pinhole_footprints(corners, c.intrinsics, c.width, c.height)
        )
        dirs = (self._rays[cam] @ pose[:3, :3].T.astype(np.float32)).astype(np.float32)
        return cast(prims, centers, self.scene.layout, origin, dirs, fps, max_ground_t=2000.0)

    def render(self, cam: int, t: float) -> CameraImage:
        """Render camera `cam` (rig index) at scene time t (s)."""
        pose = self.camera_pose(cam, t)
        hits = self.cast_camera(cam, t, pose)
        dirs = (self._rays[cam] @ pose[:3, :3].T).astype(np.float32)
        image = self._shade(hits, pose[:3, 3], dirs, t)
        depth = np.where(hits.prim == SKY, np.inf, hits.t).astype(np.float32)
        return CameraImage(image, depth, hits.label, t, pose)

    def render_frame(self, frame: int) -> list[CameraImage]:
        """All cameras of camera frame `frame`, each at its own staggered stamp."""
        times = self.scene.timing.camera_times(frame)
        return [self.render(n, float(times[n])) for n in range(len(self.rig))]

    def _shade(self, hits: Hits, origin: np.ndarray, dirs: np.ndarray, t: float) -> np.ndarray:
        look, prims = self.look, self.scene.prims
        flat_d = dirs.reshape(-1, 3)
        prim = hits.prim.reshape(-1)
        tt = hits.t.reshape(-1)
        label = hits.label.reshape(-1)
        out = np.empty((len(prim), 3), dtype=np.float32)
        sky = prim == SKY
        out[sky] = shading.sky(look, flat_d[sky])
        hit = ~sky
        pts = origin[None, :].astype(np.float32) + tt[hit, None] * flat_d[hit]
        dist = tt[hit] * np.linalg.norm(flat_d[hit], axis=1)
        horizon = np.array(look.sky_horizon, dtype=np.float32)
        albedo = np.empty((len(pts), 3), dtype=np.float32)
        normal = np.zeros((len(pts), 3), dtype=np.float32)
        ground = prim[hit] == GROUND
        gp = pts[ground]
        albedo[ground] = shading.ground_albedo(
            look, self.scene.layout, gp[:, 0], gp[:, 1], label[hit][ground]
        )
        normal[ground, 2] = 1.0
        obj = ~ground
        index = prim[hit][obj]
        n, uv, height = surface(prims, prims.centers_at(t), index, pts[obj])
        normal[obj] = n
        albedo[obj] = shading.object_albedo(
            prims.style[index], prims.color[index], prims.seed[index], uv, height
        )
        out[hit] = shading.lit(look, albedo, normal, dist, horizon)
        img = np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)
        shaped: np.ndarray = img.reshape(*hits.t.shape, 3)
        return shaped
