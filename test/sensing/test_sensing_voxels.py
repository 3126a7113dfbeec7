"""Voxel centres and the BEV colour image: positions, orientation, highest-voxel rule.
In: small hand-made label grids. Out: pass/fail.
"""

from __future__ import annotations

import numpy as np
import pytest

from flashocc_ros.classes import FREE_LABEL, PALETTE_RGB
from flashocc_ros.config import GridConfig
from flashocc_ros.sensing.voxels import BEV_FREE_RGB, bev_image, occupancy_voxels

GRID = GridConfig()


def empty() -> np.ndarray:
    return np.full(GRID.shape, FREE_LABEL, dtype=np.uint8)


def test_voxel_centres_and_order() -> None:
    labels = empty()
    labels[0, 0, 0] = 4
    labels[199, 100, 15] = 11
    labels[100, 199, 3] = 0
    xyz, lab = occupancy_voxels(labels, GRID)
    assert xyz.dtype == np.float32 and xyz.shape == (3, 3) and lab.dtype == np.uint8
    np.testing.assert_array_equal(lab, [4, 0, 11])  # C order: x slowest
    np.testing.assert_allclose(xyz[0], (-39.8, -39.8, -0.8), atol=1e-5)
    np.testing.assert_allclose(xyz[1], (0.2, 39.8, 0.4), atol=1e-5)
    np.testing.assert_allclose(xyz[2], (39.8, 0.2, 5.2), atol=1e-5)


def test_voxels_empty_and_shape_errors() -> None:
    xyz, lab = occupancy_voxels(empty(), GRID)
    assert xyz.shape == (0, 3) and lab.shape == (0,)
    with pytest.raises(ValueError, match="axis Z"):
        occupancy_voxels(np.zeros((200, 200, 8), np.uint8), GRID)
    with pytest.raises(ValueError, match=r"\(X, Y, Z\)"):
        occupancy_voxels(np.zeros((200, 200), np.uint8), GRID)


def test_bev_orientation_and_highest_voxel() -> None:
    labels = empty()
    labels[199, 199, 2] = 4  # front-left corner: car low ...
    labels[199, 199, 9] = 16  # ... vegetation above it wins
    labels[0, 0, 0] = 11  # rear-right corner
    labels[150, 100, 5] = 7  # ahead of the ego, on the centre line
    img = bev_image(labels)
    assert img.shape == (200, 200, 3) and img.dtype == np.uint8
    np.testing.assert_array_equal(img[0, 0], PALETTE_RGB[16])  # top-left = (x_max, y_max)
    np.testing.assert_array_equal(img[199, 199], PALETTE_RGB[11])  # bottom-right = (x_min, y_min)
    np.testing.assert_array_equal(img[199 - 150, 199 - 100], PALETTE_RGB[7])
    np.testing.assert_array_equal(img[100, 100], BEV_FREE_RGB)
    occupied = (img != np.asarray(BEV_FREE_RGB, np.uint8)).any(axis=2)
    assert occupied.sum() == 3


def test_bev_matches_plain_loop() -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 18, (12, 9, 5)).astype(np.uint8)
    labels[rng.random(labels.shape) < 0.6] = FREE_LABEL
    img = bev_image(labels)
    X, Y, Z = labels.shape
    for ix in range(X):
        for iy in range(Y):
            want = np.asarray(BEV_FREE_RGB, np.uint8)
            for iz in range(Z - 1, -1, -1):
                if labels[ix, iy, iz] != FREE_LABEL:
                    want = PALETTE_RGB[labels[ix, iy, iz]]
                    break
            np.testing.assert_array_equal(img[X - 1 - ix, Y - 1 - iy], want)
