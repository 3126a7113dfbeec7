"""The fast voxel outputs (`occupancy_voxels`, `bev_image`) equal their plain references.
In: random label grids of several densities, dtypes and layouts. Out: pass/fail.
"""

from __future__ import annotations

import numpy as np
import pytest

from flashocc_ros.classes import FREE_LABEL, PALETTE_RGB
from flashocc_ros.config import GridConfig
from flashocc_ros.sensing.voxels import (
    bev_image,
    bev_image_reference,
    occupancy_voxels,
    occupancy_voxels_reference,
)

GRID = GridConfig()
SMALL = GridConfig(x_min=-2.0, x_max=2.4, y_min=-1.2, y_max=2.0, z_min=-1.0, z_max=0.6)


def grid_labels(grid: GridConfig, density: float, seed: int, dtype: str = "u1") -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = np.full(grid.shape, FREE_LABEL, dtype=dtype)
    mask = rng.random(grid.shape) < density
    labels[mask] = rng.integers(0, FREE_LABEL, int(mask.sum()))
    return labels


@pytest.mark.parametrize("density", [0.0, 0.001, 0.06, 0.7, 1.0])
@pytest.mark.parametrize("grid", [GRID, SMALL])
def test_occupancy_voxels_fast_equals_reference(density: float, grid: GridConfig) -> None:
    labels = grid_labels(grid, density, seed=int(density * 1000))
    xyz, lab = occupancy_voxels(labels, grid)
    ref_xyz, ref_lab = occupancy_voxels_reference(labels, grid)
    assert xyz.dtype == ref_xyz.dtype == np.float32 and lab.dtype == ref_lab.dtype == np.uint8
    np.testing.assert_array_equal(xyz, ref_xyz)  # bit-identical centres
    np.testing.assert_array_equal(lab, ref_lab)


def test_occupancy_voxels_layouts_and_free_label() -> None:
    labels = grid_labels(SMALL, 0.3, seed=1, dtype="i8")
    fortran = np.asfortranarray(labels)
    for arr, free in ((labels, FREE_LABEL), (fortran, FREE_LABEL), (labels, 3)):
        for a, b in zip(
            occupancy_voxels(arr, SMALL, free),
            occupancy_voxels_reference(arr, SMALL, free),
            strict=True,
        ):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="axis Z"):
        occupancy_voxels(np.zeros((200, 200, 8), np.uint8), GRID)


@pytest.mark.parametrize("density", [0.0, 0.002, 0.05, 0.5, 1.0])
def test_bev_image_fast_equals_reference(density: float) -> None:
    labels = grid_labels(GRID, density, seed=7 + int(density * 100))
    np.testing.assert_array_equal(bev_image(labels), bev_image_reference(labels))
    sliced = grid_labels(SMALL, density, seed=3)[:, ::-1, :]  # non-contiguous view
    np.testing.assert_array_equal(bev_image(sliced), bev_image_reference(sliced))


def test_bev_image_custom_palette_free_label_and_errors() -> None:
    labels = grid_labels(SMALL, 0.4, seed=5)
    palette = PALETTE_RGB[::-1].copy()
    for kw in ({"free_label": 2}, {"palette": palette, "free_rgb": (1, 2, 3)}):
        np.testing.assert_array_equal(bev_image(labels, **kw), bev_image_reference(labels, **kw))
    bad = labels.copy()
    bad[0, 0, -1] = 40  # the top voxel of a column: its colour is needed
    for fn in (bev_image, bev_image_reference):
        with pytest.raises(ValueError, match="no palette colour"):
            fn(bad)
