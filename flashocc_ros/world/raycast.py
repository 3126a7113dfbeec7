"""Vectorised ray casting against the ground plane, oriented boxes and vertical cylinders.
In: a ray origin, a (R, C, 3) grid of ray directions and the primitives at one instant.
Out: `Hits` — first-hit parameter t, primitive index and class per ray.

Rays are o + t·d with d not necessarily unit (camera rays use d_z(camera) = 1, so t = depth).
Each primitive is tested only against the rays inside its footprint on the ray grid (the image
rectangle its bounding box projects to), which a caller-supplied footprint function computes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from flashocc_ros.classes import FREE_LABEL
from flashocc_ros.world.layout import RoadLayout
from flashocc_ros.world.primitives import KIND_BOX, Primitives

GROUND, SKY = -1, -2  # `Hits.prim` values for the ground plane and for no hit

#: One primitive's footprint: (index, row slice, column slice or index array).
Footprint = tuple[int, slice, "slice | np.ndarray"]


@dataclass(frozen=True, eq=False)
class Hits:
    """First hits of an (R, C) ray grid."""

    t: np.ndarray  # (R, C) float32, ray parameter of the hit; inf for sky
    prim: np.ndarray  # (R, C) int32, primitive index, GROUND or SKY
    label: np.ndarray  # (R, C) uint8, Occ3D class, FREE_LABEL for sky


def _rotation_z(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=np.float32)


def intersect_box(
    origin: np.ndarray, dirs: np.ndarray, center: np.ndarray, half: np.ndarray, yaw: float
) -> np.ndarray:
    """(...,) entry parameter t of rays o + t·d (dirs (..., 3)) into a yawed box; inf on a miss."""
    rot = _rotation_z(yaw)
    o = (origin - center).astype(np.float32) @ rot  # = rot.T @ (o - c)
    d = dirs @ rot  # (..., 3) directions in the box frame
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / d
        t1 = (-half.astype(np.float32) - o) * inv
        t2 = (half.astype(np.float32) - o) * inv
    t_near = np.minimum(t1, t2).max(axis=-1)
    t_far = np.maximum(t1, t2).min(axis=-1)
    hit = (t_near <= t_far) & (t_near > 0.0)
    return np.where(hit, t_near, np.float32(np.inf))


def intersect_cylinder(
    origin: np.ndarray, dirs: np.ndarray, center: np.ndarray, radius: float, half_h: float
) -> np.ndarray:
    """(...,) entry parameter t into a vertical cylinder (side or caps); inf on a miss."""
    o = (origin - center).astype(np.float32)
    dx, dy, dz = dirs[..., 0], dirs[..., 1], dirs[..., 2]
    a = dx * dx + dy * dy
    b = o[0] * dx + o[1] * dy
    c = o[0] ** 2 + o[1] ** 2 - radius**2
    disc = b * b - a * c
    with np.errstate(divide="ignore", invalid="ignore"):
        t_side = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
        z_side = o[2] + t_side * dz
        side_ok = (disc >= 0) & (a > 1e-12) & (np.abs(z_side) <= half_h) & (t_side > 0)
        cap_z = np.where(dz < 0, half_h, -half_h)
        t_cap = (cap_z - o[2]) / dz
        cx, cy = o[0] + t_cap * dx, o[1] + t_cap * dy
        cap_ok = (cx * cx + cy * cy <= radius**2) & (t_cap > 0) & (np.abs(o[2]) > half_h)
    inf = np.float32(np.inf)
    return np.minimum(np.where(side_ok, t_side, inf), np.where(cap_ok, t_cap, inf))


def cast(
    prims: Primitives,
    centers: np.ndarray,
    layout: RoadLayout,
    origin: np.ndarray,
    dirs: np.ndarray,
    footprints: Iterator[Footprint],
    max_ground_t: float = np.inf,
) -> Hits:
    """First hits of rays origin + t·dirs[r, c] (dirs (R, C, 3) float32, world frame).

    `centers` (M, 3) are the primitive centres at the instant being rendered; `footprints`
    yields the primitives to test and the rays they can cover.
    """
    if dirs.ndim != 3 or dirs.shape[2] != 3:
        raise ValueError(f"dirs must be (R, C, 3), got {dirs.shape}")
    rows, cols = dirs.shape[:2]
    with np.errstate(divide="ignore", invalid="ignore"):
        t_ground = np.where(dirs[..., 2] < 0, -float(origin[2]) / dirs[..., 2], np.inf)
    t_best = np.where(t_ground <= max_ground_t, t_ground, np.inf).astype(np.float32)
    prim = np.where(np.isfinite(t_best), GROUND, SKY).astype(np.int32)
    for m, rs, cs in footprints:
        sub = dirs[rs, cs]
        if prims.kind[m] == KIND_BOX:
            t = intersect_box(origin, sub, centers[m], prims.half[m], float(prims.yaw[m]))
        else:
            h = prims.half[m]
            t = intersect_cylinder(origin, sub, centers[m], float(h[0]), float(h[2]))
        cur = t_best[rs, cs]
        better = t < cur
        if better.any():
            t_best[rs, cs] = np.where(better, t, cur)
            prim[rs, cs] = np.where(better, m, prim[rs, cs])
    label = np.full((rows, cols), FREE_LABEL, dtype=np.uint8)
    obj = prim >= 0
    label[obj] = prims.label[prim[obj]]
    ground = prim == GROUND
    if ground.any():
        p = origin[None, :2] + t_best[ground][:, None] * dirs[ground][:, :2]
        label[ground] = layout.ground_label(p[:, 0], p[:, 1])
    return Hits(t_best, prim, label)


# Edges of a box whose 8 corners are ordered by bits (sx, sy, sz): pairs differing in one bit.
_EDGES = np.array(
    [(a, b) for a in range(8) for b in range(8) if a < b and bin(a ^ b).count("1") == 1]
)


def pinhole_footprints(
    corners_cam: np.ndarray, K: np.ndarray, width: int, height: int, near: float = 0.05
) -> Iterator[Footprint]:
    """Image rectangles covered by primitives with box corners (M, 8, 3) in the optical frame.

    The bounding box is clipped against the plane z = near, so boxes beside the camera get a
    tight rectangle too. Primitives entirely behind the camera or off-image are skipped.
    """
    z = corners_cam[..., 2]
    a, b = corners_cam[:, _EDGES[:, 0]], corners_cam[:, _EDGES[:, 1]]  # (M, 12, 3)
    za, zb = a[..., 2], b[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        w = (near - za) / (zb - za)
        crossing = ((za - near) * (zb - near) < 0)[..., None]
        cut = np.where(crossing, a + w[..., None] * (b - a), np.nan)  # points on the near plane
    pts = np.concatenate([np.where((z >= near)[..., None], corners_cam, np.nan), cut], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        u = K[0, 0] * pts[..., 0] / pts[..., 2] + K[0, 2]
        v = K[1, 1] * pts[..., 1] / pts[..., 2] + K[1, 2]
    visible = np.isfinite(u).any(axis=1)
    for m in np.flatnonzero(visible):
        u0 = max(int(np.floor(np.nanmin(u[m]))), 0)
        u1 = min(int(np.ceil(np.nanmax(u[m]))) + 1, width)
        v0 = max(int(np.floor(np.nanmin(v[m]))), 0)
        v1 = min(int(np.ceil(np.nanmax(v[m]))) + 1, height)
        if u0 < u1 and v0 < v1:
            yield int(m), slice(v0, v1), slice(u0, u1)


def spherical_footprints(
    corners: np.ndarray, origin: np.ndarray, elevations: np.ndarray, num_azimuths: int
) -> Iterator[Footprint]:
    """Footprints on a (beams, azimuths) lidar ray grid for primitives with corners (M, 8, 3).

    Azimuth column k points at angle 2πk/num_azimuths; `elevations` (R,) rad are increasing.
    """
    rel = corners - origin
    az = np.arctan2(rel[..., 1], rel[..., 0])  # (M, 8)
    # Elevation bounds from the nearest/farthest horizontal distance of the footprint (edges of a
    # box can rise above its corners' elevations when seen from the side).
    mid = rel[..., :2].mean(1)
    r_xy = np.linalg.norm(rel[..., :2] - mid[:, None], axis=2).max(1)
    d_min = np.maximum(np.linalg.norm(mid, axis=1) - r_xy, 0.01)
    d_max = np.linalg.norm(mid, axis=1) + r_xy
    z_lo, z_hi = rel[..., 2].min(1), rel[..., 2].max(1)
    el_lo = np.arctan2(z_lo, np.where(z_lo < 0, d_min, d_max))
    el_hi = np.arctan2(z_hi, np.where(z_hi > 0, d_min, d_max))
    centre = np.arctan2(rel[..., 1].mean(1), rel[..., 0].mean(1))
    spread = np.angle(np.exp(1j * (az - centre[:, None])))  # wrapped to (-π, π]
    lo, hi = centre + spread.min(1), centre + spread.max(1)
    xy_min, xy_max = rel[..., :2].min(1), rel[..., :2].max(1)
    around = (xy_min <= 0).all(1) & (xy_max >= 0).all(1)  # origin inside the xy footprint
    step = 2 * np.pi / num_azimuths
    de = np.diff(elevations).min() if len(elevations) > 1 else 1.0
    for m in range(len(corners)):
        r0 = int(np.searchsorted(elevations, el_lo[m] - de, side="left"))
        r1 = int(np.searchsorted(elevations, el_hi[m] + de, side="right"))
        if r0 >= r1:
            continue
        if around[m] or hi[m] - lo[m] > np.pi:
            cols: slice | np.ndarray = slice(0, num_azimuths)
        else:
            k0, k1 = int(np.floor(lo[m] / step)) - 1, int(np.ceil(hi[m] / step)) + 2
            cols = np.arange(k0, k1) % num_azimuths
        yield m, slice(r0, r1), cols
