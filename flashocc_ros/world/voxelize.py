"""Semantic voxelisation of the synthetic world by positive-volume overlap, and a plain reference.
In: a `Scene`, a scene time t, the ego pose (odom <- base_link) and the grid. Out: (X, Y, Z) uint8.

The rule (docs/dataset_format.md, "Voxelisation"): the ground fills the layer [z_k, z_k + s) that
contains the ground plane; a primitive occupies a voxel when their intersection has positive
volume (a face that only touches the voxel does not count), decided with a tolerance of
`OVERLAP_EPS`; where primitives share a voxel the later class of `PAINT_ORDER` wins, and any
primitive wins over the ground.

`voxelize` decides each voxel exactly (interval overlap in z, separating axes or disc-to-square
distance in the plane). `voxelize_by_sampling` is the brute-force reference the tests compare it
with: it samples points strictly inside each primitive and bins them.
"""

from __future__ import annotations

import numpy as np

from flashocc_ros.classes import CLASS_NAMES, FREE_LABEL
from flashocc_ros.config import GridConfig
from flashocc_ros.world.primitives import KIND_BOX
from flashocc_ros.world.scene import Scene

#: m, an overlap thinner than this (on any axis) counts as touching, not as volume.
OVERLAP_EPS = 1e-6

#: Paint order: later classes overwrite earlier ones where two primitives share a voxel.
PAINT_ORDER = (
    "manmade", "vegetation", "others", "trailer", "bus", "truck", "construction_vehicle", "car",
    "barrier", "motorcycle", "bicycle", "pedestrian", "traffic_cone",
)  # fmt: skip
_RANK = np.array([PAINT_ORDER.index(n) if n in PAINT_ORDER else -1 for n in CLASS_NAMES])


def paint_sequence(labels: np.ndarray) -> np.ndarray:
    """Indices of the primitives with classes `labels` (M,) that are drawn, in paint order."""
    rank = _RANK[labels]
    drawn = np.flatnonzero(rank >= 0)
    out: np.ndarray = drawn[np.argsort(rank[drawn], kind="stable")]
    return out


def ground_layer(grid: GridConfig, ground_z: float) -> int | None:
    """Index of the layer [z_k, z_k + s) holding the ground plane at ego-frame height ground_z
    (a plane on a layer face belongs to the layer above it); None outside the grid."""
    k = int(np.floor((ground_z - grid.z_min) / grid.voxel_size + 1e-9))
    return k if 0 <= k < grid.size_z else None


def _fill_ground(sem: np.ndarray, scene: Scene, ego_pose: np.ndarray, grid: GridConfig) -> None:
    """Ground layer labelled by the ground class under each voxel column's centre."""
    if not np.allclose(ego_pose[2, :3], [0.0, 0.0, 1.0]):
        raise ValueError("the ego pose must be level (yaw only) for a horizontal ground layer")
    layer = ground_layer(grid, -float(ego_pose[2, 3]))  # world z = 0 in the ego frame
    if layer is None:
        return
    vs = grid.voxel_size
    xs = grid.x_min + (np.arange(grid.size_x) + 0.5) * vs
    ys = grid.y_min + (np.arange(grid.size_y) + 0.5) * vs
    ex, ey = np.meshgrid(xs, ys, indexing="ij")  # (X, Y)
    world = ego_pose[:2, :2] @ np.stack([ex.ravel(), ey.ravel()]) + ego_pose[:2, 3:4]
    sem[:, :, layer] = scene.layout.ground_label(world[0], world[1]).reshape(ex.shape)


def voxelize(scene: Scene, t: float, ego_pose: np.ndarray, grid: GridConfig) -> np.ndarray:
    """(X, Y, Z) uint8 semantics at scene time t in the ego frame `ego_pose` (odom <- base)."""
    sem = np.full(grid.shape, FREE_LABEL, dtype=np.uint8)
    _fill_ground(sem, scene, ego_pose, grid)
    prims = scene.prims
    world_to_ego = np.linalg.inv(ego_pose)
    centers = prims.centers_at(t) @ world_to_ego[:3, :3].T + world_to_ego[:3, 3]  # (M, 3)
    yaw = prims.yaw - np.arctan2(ego_pose[1, 0], ego_pose[0, 0])  # headings in the ego frame
    lo = np.array([grid.x_min, grid.y_min, grid.z_min])
    vs, size = grid.voxel_size, np.array(grid.shape)
    c, s = np.abs(np.cos(yaw)), np.abs(np.sin(yaw))
    is_box = prims.kind == KIND_BOX
    reach = np.stack(  # (M, 3) half extent of each primitive along the ego axes
        [
            np.where(is_box, c * prims.half[:, 0] + s * prims.half[:, 1], prims.half[:, 0]),
            np.where(is_box, s * prims.half[:, 0] + c * prims.half[:, 1], prims.half[:, 0]),
            prims.half[:, 2],
        ],
        axis=1,
    )
    i_lo = np.maximum(np.floor((centers - reach - lo) / vs).astype(np.int64), 0)
    i_hi = np.minimum(np.ceil((centers + reach - lo) / vs).astype(np.int64), size)  # exclusive
    for m in paint_sequence(prims.label):
        if not (i_hi[m] > i_lo[m]).all():
            continue  # outside the grid
        # Voxel faces along each axis of the candidate block: a[0] … a[n], voxel i = [a_i, a_i+1].
        ax, ay, az = (lo[a] + np.arange(i_lo[m, a], i_hi[m, a] + 1) * vs for a in range(3))
        in_z = _overlaps(centers[m, 2] - reach[m, 2], centers[m, 2] + reach[m, 2], az[:-1], az[1:])
        if is_box[m]:
            in_xy = _box_columns(ax, ay, centers[m, :2], prims.half[m, :2], float(yaw[m]))
        else:
            in_xy = _disc_columns(ax, ay, centers[m, :2], float(prims.half[m, 0]))
        occ = in_xy[:, :, None] & in_z[None, None, :]
        block = sem[i_lo[m, 0] : i_hi[m, 0], i_lo[m, 1] : i_hi[m, 1], i_lo[m, 2] : i_hi[m, 2]]
        block[occ] = prims.label[m]
    return sem


def _overlaps(a0: np.ndarray | float, a1: np.ndarray | float, b0: np.ndarray, b1: np.ndarray
              ) -> np.ndarray:  # fmt: skip
    """Whether intervals [a0, a1] and [b0, b1] overlap by more than OVERLAP_EPS (broadcast)."""
    out: np.ndarray = np.minimum(a1, b1) - np.maximum(a0, b0) > OVERLAP_EPS
    return out


def _box_columns(
    ax: np.ndarray, ay: np.ndarray, center: np.ndarray, half: np.ndarray, yaw: float
) -> np.ndarray:
    """(I, J) bool: columns [ax_i, ax_i+1] x [ay_j, ay_j+1] whose square overlaps the rectangle
    (centre (2,), half length/width (2,), heading yaw) with positive area: the projections on
    all four separating axes (ego x, ego y, box length, box width) overlap by more than ε."""
    c, s = np.cos(yaw), np.sin(yaw)
    hx = abs(c) * half[0] + abs(s) * half[1]  # rectangle's half extent along ego x / y
    hy = abs(s) * half[0] + abs(c) * half[1]
    in_x = _overlaps(center[0] - hx, center[0] + hx, ax[:-1], ax[1:])  # (I,)
    in_y = _overlaps(center[1] - hy, center[1] + hy, ay[:-1], ay[1:])  # (J,)
    mx = 0.5 * (ax[:-1] + ax[1:])[:, None] - center[0]  # (I, 1) square centres rel. to the box
    my = 0.5 * (ay[:-1] + ay[1:])[None, :] - center[1]  # (1, J)
    r = 0.5 * (ax[1] - ax[0]) * (abs(c) + abs(s))  # square's half extent along a box axis
    along = c * mx + s * my  # (I, J) square centre on the box's length axis
    across = c * my - s * mx
    ok = _overlaps(-half[0], half[0], along - r, along + r)
    ok &= _overlaps(-half[1], half[1], across - r, across + r)
    out: np.ndarray = ok & in_x[:, None] & in_y[None, :]
    return out


def _disc_columns(ax: np.ndarray, ay: np.ndarray, center: np.ndarray, radius: float) -> np.ndarray:
    """(I, J) bool: columns whose square the disc reaches into by more than ε (the distance
    from the disc centre to the closed square is below radius − ε)."""
    dx = np.maximum(np.maximum(ax[:-1] - center[0], center[0] - ax[1:]), 0.0)  # (I,)
    dy = np.maximum(np.maximum(ay[:-1] - center[1], center[1] - ay[1:]), 0.0)  # (J,)
    out: np.ndarray = np.hypot(dx[:, None], dy[None, :]) < radius - OVERLAP_EPS
    return out


def voxelize_by_sampling(
    scene: Scene, t: float, ego_pose: np.ndarray, grid: GridConfig, spacing: float = 0.1
) -> np.ndarray:
    """Plain reference of `voxelize`: (X, Y, Z) uint8 from points sampled inside primitives.

    Each primitive is filled with the cell centres of a lattice of pitch <= `spacing` m in its
    own frame (strictly inside it, so a touching face yields no point); the points go to the
    world at time t, then into the ego frame, and are binned by floor. A voxel gets the class of
    the last primitive in paint order that put a point into it. Sound but not complete: a voxel
    it marks does overlap its primitive; an overlap thinner than about spacing / 2 may be missed.
    """
    sem = np.full(grid.shape, FREE_LABEL, dtype=np.uint8)
    _fill_ground(sem, scene, ego_pose, grid)
    prims = scene.prims
    world_to_ego = np.linalg.inv(ego_pose)
    lo = np.array([grid.x_min, grid.y_min, grid.z_min])
    size = np.array(grid.shape)
    centers = prims.centers_at(t)
    # World heights that can land in the grid (the ego is level: ego z = world z - ego z).
    z_band = (grid.z_min + ego_pose[2, 3] - spacing, grid.z_max + ego_pose[2, 3] + spacing)
    for m in paint_sequence(prims.label):
        h = prims.half[m]
        if not (h > 0).all():
            continue  # no volume
        cells = [_cell_centres(h[a], spacing) for a in range(3)]
        cz = cells[2][np.abs(centers[m, 2] + cells[2] - 0.5 * sum(z_band)) <= 0.5 * np.ptp(z_band)]
        lx, ly = np.meshgrid(cells[0], cells[1], indexing="ij")
        lx, ly = lx.ravel(), ly.ravel()
        if prims.kind[m] != KIND_BOX:
            keep = lx * lx + ly * ly < h[0] * h[0]
            lx, ly = lx[keep], ly[keep]
        c, s = np.cos(prims.yaw[m]), np.sin(prims.yaw[m])
        wx, wy = centers[m, 0] + c * lx - s * ly, centers[m, 1] + s * lx + c * ly
        ex = world_to_ego[0, 0] * wx + world_to_ego[0, 1] * wy + world_to_ego[0, 3]
        ey = world_to_ego[1, 0] * wx + world_to_ego[1, 1] * wy + world_to_ego[1, 3]
        col = (ex > lo[0] - spacing) & (ex < grid.x_max + spacing)
        col &= (ey > lo[1] - spacing) & (ey < grid.y_max + spacing)
        if not col.any() or cz.size == 0:
            continue
        pts = np.empty((int(col.sum()), cz.size, 3))
        pts[..., 0], pts[..., 1] = ex[col, None], ey[col, None]
        pts[..., 2] = (centers[m, 2] + cz)[None, :] + world_to_ego[2, 3]
        idx = np.floor((pts.reshape(-1, 3) - lo) / grid.voxel_size).astype(np.int64)
        idx = idx[((idx >= 0) & (idx < size)).all(axis=1)]
        sem[idx[:, 0], idx[:, 1], idx[:, 2]] = prims.label[m]
    return sem


def _cell_centres(half: float, spacing: float) -> np.ndarray:
    """Centres of the n = ceil(2·half / spacing) equal cells of [-half, half] (n >= 1)."""
    n = max(1, int(np.ceil(2.0 * half / spacing)))
    out: np.ndarray = -half + (np.arange(n) + 0.5) * (2.0 * half / n)
    return out
