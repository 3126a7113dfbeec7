"""Lift geometry: frustum, depth bins, lifting vs an independent float64 projection, indices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flashocc_ros.config import GridConfig, model_config
from flashocc_ros.model.bev_pool import bev_pool
from flashocc_ros.model.geometry import (
    Calibration,
    LiftGeometry,
    create_frustum,
    depth_values,
    lift_to_ego,
    prepare_pooling,
)
from flashocc_ros.model.preprocess import rig_calibration
from flashocc_ros.rig import nuscenes_like_rig


def test_depth_bins_match_the_official_configs() -> None:
    m0 = depth_values(model_config("flashocc-r50-M0"))
    assert m0.shape == (44,) and m0[0] == 1.0 and m0[-1] == 44.0
    m1 = depth_values(model_config("flashocc-r50"))
    assert m1.shape == (88,) and m1[1] == 1.5 and m1[-1] == 44.5
    sid = depth_values(model_config("flashocc-r50-4d-stereo"))
    assert sid.shape == (88,)
    np.testing.assert_allclose(
        sid[[0, 1, 2, -2, -1]], [1.0, 1.0445, 1.0909, 42.127, 44.0], rtol=2e-4
    )
    assert torch.all(torch.diff(torch.log(sid)) > 0)


def test_frustum_uses_linspace_pixel_positions_not_cell_centres() -> None:
    f = create_frustum(model_config("flashocc-r50"))
    assert f.shape == (88, 16, 44, 3)
    np.testing.assert_allclose(f[0, 0, :3, 0], [0.0, 703 / 43, 2 * 703 / 43], rtol=1e-6)
    assert f[0, -1, -1, 0] == 703.0 and f[0, -1, -1, 1] == 255.0
    np.testing.assert_allclose(f[0, :, 0, 1], np.arange(16) * 17.0)
    stereo = create_frustum(model_config("flashocc-r50-4d-stereo"), downsample=4)
    assert stereo.shape == (88, 64, 176, 3)


def _independent_lift(rig_index: int, u: float, v: float, d: float) -> np.ndarray:
    """Ego point of network pixel (u, v) at depth d, computed in float64 with plain numpy."""
    cam = nuscenes_like_rig().cameras[rig_index]
    s = 704 / 1600
    u0, v0 = u / s, (v + 140.0) / s  # inference aug: scale 0.44, bottom crop of 140 rows
    ray = np.linalg.solve(cam.intrinsics, np.array([u0, v0, 1.0])) * d
    return (cam.camera_to_base @ np.append(ray, 1.0))[:3]


def test_lift_matches_an_independent_projection() -> None:
    cfg = model_config("flashocc-r50")
    calib = rig_calibration(nuscenes_like_rig(), cfg.input_size)
    pts = torch.tensor([[100.0, 50.0, 10.0], [600.0, 200.0, 3.5], [0.0, 0.0, 44.5]])
    ego = lift_to_ego(pts, *calib.tensors())  # (1, 6, 3, 3)
    assert ego.shape == (1, 6, 3, 3)
    for n in range(6):
        for i, (u, v, d) in enumerate(pts.tolist()):
            np.testing.assert_allclose(ego[0, n, i], _independent_lift(n, u, v, d), atol=2e-4)


def test_one_hot_depth_mass_lands_in_the_projected_cells() -> None:
    """Lift one-hot depths at known bins; the pooled mass sits in independently computed cells."""
    cfg = model_config("flashocc-r50")
    grid = cfg.grid
    calib = rig_calibration(nuscenes_like_rig(), cfg.input_size)
    geo = LiftGeometry(cfg)
    idx = geo.indices(calib)
    frustum = create_frustum(cfg)
    rng = np.random.default_rng(0)
    depth = torch.zeros(1, 6, cfg.num_depth_bins, 16, 44)
    expected: dict[tuple[int, int], float] = {}
    for n in range(6):
        for h in range(16):
            for w in range(0, 44, 3):
                k = int(rng.integers(0, cfg.num_depth_bins))
                u, v, d = frustum[k, h, w].tolist()
                p = _independent_lift(n, u, v, d)
                scaled = (p - [grid.x_min, grid.y_min, grid.z_min]) / [0.4, 0.4, 6.4]
                if np.any(np.abs(scaled - np.round(scaled)) < 1e-3):
                    continue  # on a cell border: float32 vs float64 may pick either side
                depth[0, n, k, h, w] = 1.0
                cell = np.trunc(scaled)
                if np.all(cell >= 0) and np.all(cell < [200, 200, 1]):
                    key = (int(cell[1]), int(cell[0]))
                    expected[key] = expected.get(key, 0.0) + 1.0
    feat = torch.ones(1, 6, 16, 44, 1)
    bev = bev_pool(depth, feat, idx, grid)[0, 0]  # (Y, X)
    assert len(expected) > 50
    got = {(int(y), int(x)): float(bev[y, x]) for y, x in torch.nonzero(bev).tolist()}
    assert got == pytest.approx(expected)


def test_truncation_keeps_points_below_the_grid_in_cell_zero() -> None:
    grid = GridConfig()
    pts = torch.tensor(
        [
            [-40.2, 0.0, 2.0],  # x in (-40.4, -40): truncates to cell 0 -> kept
            [-40.5, 0.0, 2.0],  # x < -40.4: cell -1 -> dropped
            [0.0, 0.0, -3.0],  # z in (-7.4, -1): truncates to layer 0 -> kept
            [0.0, 0.0, 5.5],  # z above 5.4 -> dropped
        ]
    ).view(1, 1, 4, 1, 1, 3)
    idx = prepare_pooling(pts, grid)
    assert sorted(idx.ranks_depth.tolist()) == [0, 2]
    assert 100 * 200 + 0 in idx.ranks_bev.tolist()  # (x=0, y=100)


def test_indices_are_cached_until_the_calibration_changes() -> None:
    cfg = model_config("tiny")
    geo = LiftGeometry(cfg)
    calib = rig_calibration(nuscenes_like_rig(), cfg.input_size)
    first = geo.indices(calib)
    same = Calibration(*(t.clone() for t in calib.tensors()))
    assert geo.indices(same) is first and geo.rebuilds == 1
    moved = calib.camera_to_ego.clone()
    moved[0, 0, 0, 3] += 0.5
    geo.indices(Calibration(moved, *calib.tensors()[1:]))
    assert geo.rebuilds == 2
    assert "frustum" not in geo.state_dict()


def test_calibration_rejects_wrong_shapes_naming_the_field() -> None:
    eye = torch.eye(4).expand(1, 6, 4, 4)
    with pytest.raises(ValueError, match="intrinsics"):
        Calibration(
            eye,
            torch.eye(3).expand(1, 5, 3, 3),
            eye[..., :3, :3],
            eye[..., :3, 3],
            eye[:, 0, :3, :3],
        )
