"""Occupancy grid helpers for the outputs: occupied voxel centres and a top-down colour image.
In: (X, Y, Z) uint8 labels, GridConfig. Out: (P, 3) float32 centres + (P,) labels; (X, Y, 3) RGB.

`occupancy_voxels` and `bev_image` are the fast paths the node runs per bundle (flat indices
with per-axis centre tables; a per-layer overwrite and one colour lookup table); the plain
`*_reference` functions beside them define the results and are tested to agree.
"""

from __future__ import annotations

import functools

import numpy as np
import numpy.typing as npt

from flashocc_ros.classes import FREE_LABEL, PALETTE_RGB
from flashocc_ros.config import GridConfig

U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]

#: Colour (RGB) of columns without any occupied voxel in `bev_image`.
BEV_FREE_RGB: tuple[int, int, int] = (16, 16, 16)


def _check_grid(labels: npt.NDArray[np.generic], grid: GridConfig | None) -> None:
    if labels.ndim != 3:
        raise ValueError(f"labels must be (X, Y, Z), got shape {labels.shape}")
    if grid is not None and labels.shape != grid.shape:
        for axis, got, want in zip("XYZ", labels.shape, grid.shape, strict=True):
            if got != want:
                raise ValueError(f"labels axis {axis} has {got} cells, grid has {want}")


@functools.lru_cache(maxsize=8)
def _axis_centres(grid: GridConfig) -> tuple[F32, F32, F32]:
    """Voxel centres along X, Y and Z, float32, computed in float64 like the reference."""
    v = grid.voxel_size
    return tuple(  # type: ignore[return-value]
        (lo + (np.arange(n, dtype=np.float64) + 0.5) * v).astype(np.float32)
        for lo, n in (
            (grid.x_min, grid.size_x),
            (grid.y_min, grid.size_y),
            (grid.z_min, grid.size_z),
        )
    )


def occupancy_voxels(
    labels: npt.NDArray[np.integer], grid: GridConfig, free_label: int = FREE_LABEL
) -> tuple[F32, U8]:
    """(X, Y, Z) labels -> occupied voxel centres (P, 3) float32 in the ego frame and (P,) uint8.

    Centre of voxel (i, j, k) = (x_min + (i + 0.5) v, y_min + (j + 0.5) v, z_min + (k + 0.5) v);
    voxels come in C order of the grid (x slowest, z fastest). `free_label` voxels are left out.
    Fast path of `occupancy_voxels_reference`: flat indices and per-axis centre tables.
    """
    _check_grid(labels, grid)
    _, sy, sz = labels.shape
    flat = labels.reshape(-1)  # (X·Y·Z,) C order
    idx = np.flatnonzero(flat != free_label)  # (P,)
    cx, cy, cz = _axis_centres(grid)
    xyz = np.empty((idx.shape[0], 3), dtype=np.float32)  # (P, 3)
    xyz[:, 0] = cx[idx // (sy * sz)]
    xyz[:, 1] = cy[(idx // sz) % sy]
    xyz[:, 2] = cz[idx % sz]
    return xyz, flat[idx].astype(np.uint8)


def occupancy_voxels_reference(
    labels: npt.NDArray[np.integer], grid: GridConfig, free_label: int = FREE_LABEL
) -> tuple[F32, U8]:
    """Plain version of `occupancy_voxels` (np.nonzero, float64 arithmetic per voxel)."""
    _check_grid(labels, grid)
    idx = np.nonzero(labels != free_label)  # 3 x (P,)
    v = grid.voxel_size
    mins = np.array([grid.x_min, grid.y_min, grid.z_min], dtype=np.float64)
    ijk = np.stack(idx, axis=1).astype(np.float64)  # (P, 3)
    xyz = (mins + (ijk + 0.5) * v).astype(np.float32)  # (P, 3)
    return xyz, labels[idx].astype(np.uint8)


def bev_image(
    labels: npt.NDArray[np.integer],
    free_label: int = FREE_LABEL,
    palette: U8 = PALETTE_RGB,
    free_rgb: tuple[int, int, int] = BEV_FREE_RGB,
) -> U8:
    """(X, Y, Z) labels -> (H=X, W=Y, 3) uint8 RGB top-down view, equal to `bev_image_reference`
    (see there for the orientation). Fast path: the layers overwrite each other bottom-up where
    occupied, then one lookup in a colour table (free columns -> `free_rgb`)."""
    _check_grid(labels, None)
    top = np.full(labels.shape[:2], free_label, dtype=labels.dtype)  # (X, Y)
    for k in range(labels.shape[2]):  # higher layers win
        layer = labels[:, :, k]
        np.copyto(top, layer, where=layer != free_label)
    occupied = top != free_label
    if occupied.any() and int(top[occupied].max()) >= len(palette):
        raise ValueError(f"label {int(top[occupied].max())} has no palette colour")
    lut = np.zeros((max(len(palette), free_label + 1), 3), dtype=np.uint8)
    lut[: len(palette)] = palette
    lut[free_label] = free_rgb
    return np.ascontiguousarray(lut[top[::-1, ::-1]])  # rows: x descending, cols: y descending


def bev_image_reference(
    labels: npt.NDArray[np.integer],
    free_label: int = FREE_LABEL,
    palette: U8 = PALETTE_RGB,
    free_rgb: tuple[int, int, int] = BEV_FREE_RGB,
) -> U8:
    """(X, Y, Z) labels -> (H=X, W=Y, 3) uint8 RGB top-down view (ROS encoding "rgb8").

    Each pixel shows the class colour of the highest non-free voxel of its (x, y) column, or
    `free_rgb` if the column is free. Orientation for viewing: ego x (forward) points up, ego y
    (left) points left, i.e. pixel [row r, col c] shows grid column (ix = X-1-r, iy = Y-1-c):
    the top-left pixel is the front-left corner (x_max, y_max), the bottom-right pixel the
    rear-right corner (x_min, y_min).
    """
    _check_grid(labels, None)
    X, Y, Z = labels.shape
    occupied = labels != free_label  # (X, Y, Z)
    top = Z - 1 - np.argmax(occupied[:, :, ::-1], axis=2)  # (X, Y) highest occupied z
    any_occ = occupied.any(axis=2)  # (X, Y)
    top_label = np.take_along_axis(labels, top[:, :, None], axis=2)[:, :, 0]  # (X, Y)
    if int(top_label[any_occ].max(initial=0)) >= len(palette):
        raise ValueError(f"label {int(top_label.max())} has no palette colour")
    rgb = np.empty((X, Y, 3), dtype=np.uint8)
    rgb[any_occ] = palette[top_label[any_occ]]
    rgb[~any_occ] = np.asarray(free_rgb, dtype=np.uint8)
    return np.ascontiguousarray(rgb[::-1, ::-1])  # rows: x descending, cols: y descending
