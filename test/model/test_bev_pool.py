"""BEV pooling: the fast sparse path and the index_add path agree with the plain reference."""

from __future__ import annotations

import pytest
import torch

from flashocc_ros.config import GridConfig, model_config
from flashocc_ros.model.bev_pool import bev_pool, bev_pool_index_add, bev_pool_reference
from flashocc_ros.model.geometry import Calibration, LiftGeometry, prepare_pooling
from flashocc_ros.model.preprocess import rig_calibration
from flashocc_ros.rig import nuscenes_like_rig


@pytest.mark.parametrize("name", ["tiny", "flashocc-r50-M0"])
def test_fast_pooling_paths_agree_with_the_reference(name: str) -> None:
    cfg = model_config(name)
    fh, fw = cfg.feature_size
    calib = rig_calibration(nuscenes_like_rig(), cfg.input_size)
    geo = LiftGeometry(cfg)
    idx = geo.indices(calib)
    gen = torch.Generator().manual_seed(1)
    depth = torch.softmax(torch.randn(1, 6, cfg.num_depth_bins, fh, fw, generator=gen), dim=2)
    feat = torch.randn(1, 6, fh, fw, 5, generator=gen)
    ref = bev_pool_reference(depth, feat, geo.coords(calib), cfg.grid)
    assert ref.shape == (1, 5, 200, 200)
    assert ref.abs().sum() > 0
    torch.testing.assert_close(bev_pool(depth, feat, idx, cfg.grid), ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        bev_pool_index_add(depth, feat, idx, cfg.grid), ref, atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize("b", [1, 2])
def test_fast_pooling_gradients_match_autograd_through_the_reference(b: int) -> None:
    """The hand-written backward of `bev_pool` (training) against autograd through index_add,
    with an upstream gradient that differs per cell and channel, in float64."""
    # 1.6 m cells: consecutive depth bins of a pixel often fall in one cell (merged pairs)
    cfg = model_config("demo").replace(grid=GridConfig(voxel_size=1.6))
    fh, fw = cfg.feature_size
    one = rig_calibration(nuscenes_like_rig(), cfg.input_size)
    calib = Calibration(*(torch.cat([t] * b) for t in one.tensors()))
    idx = LiftGeometry(cfg).indices(calib)
    assert idx.pair_col.shape[0] < idx.num_points  # some (cell, pixel) pairs merge points
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(b, 6, cfg.num_depth_bins, fh, fw, generator=gen, dtype=torch.float64)
    depth = torch.softmax(logits, dim=2).requires_grad_()
    feat = torch.randn(b, 6, fh, fw, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(b, 4, 50, 50, generator=gen, dtype=torch.float64)
    grads = []
    for pool in (bev_pool, bev_pool_index_add):
        (pool(depth, feat, idx, cfg.grid) * upstream).sum().backward()
        assert depth.grad is not None and feat.grad is not None
        grads.append((depth.grad.clone(), feat.grad.clone()))
        depth.grad = feat.grad = None
    (dd_fast, df_fast), (dd_ref, df_ref) = grads
    assert dd_ref.abs().sum() > 0 and df_ref.abs().sum() > 0
    torch.testing.assert_close(dd_fast, dd_ref)
    torch.testing.assert_close(df_fast, df_ref)
    # only the input that needs a gradient gets one
    feat_only = feat.detach().requires_grad_()
    bev_pool(depth.detach(), feat_only, idx, cfg.grid).sum().backward()
    assert feat_only.grad is not None


def test_batched_pooling_keeps_samples_apart_and_stacks_height_layers() -> None:
    """B = 2 with different calibrations and Dz = 2 layers (collapse_z: channel = z·C + c)."""
    cfg = model_config("tiny").replace(grid=GridConfig(bev_z_cells=2))
    fh, fw = cfg.feature_size
    one = rig_calibration(nuscenes_like_rig(), cfg.input_size)
    shifted = one.camera_to_ego.clone()
    shifted[..., 0, 3] += 3.0
    calib = Calibration(
        torch.cat([one.camera_to_ego, shifted]),
        *(torch.cat([t, t]) for t in one.tensors()[1:4]),
        torch.cat([one.bda, one.bda]),
    )
    geo = LiftGeometry(cfg)
    gen = torch.Generator().manual_seed(2)
    depth = torch.softmax(torch.randn(2, 6, cfg.num_depth_bins, fh, fw, generator=gen), dim=2)
    feat = torch.randn(2, 6, fh, fw, 3, generator=gen)
    coords = geo.coords(calib)
    ref = bev_pool_reference(depth, feat, coords, cfg.grid)
    assert ref.shape == (2, 6, 200, 200)
    torch.testing.assert_close(bev_pool(depth, feat, geo.indices(calib), cfg.grid), ref)
    single = bev_pool_reference(depth[1:], feat[1:], coords[1:], cfg.grid)
    torch.testing.assert_close(ref[1:], single)


def test_pooling_with_no_point_inside_the_grid_is_all_zero() -> None:
    grid = GridConfig()
    coords = torch.full((1, 1, 2, 1, 1, 3), 100.0)
    idx = prepare_pooling(coords, grid)
    assert idx.num_points == 0
    out = bev_pool(torch.ones(1, 1, 2, 1, 1), torch.ones(1, 1, 1, 1, 4), idx, grid)
    assert out.shape == (1, 4, 200, 200) and out.abs().sum() == 0


def test_pooling_rejects_mismatched_feature_shape() -> None:
    grid = GridConfig()
    idx = prepare_pooling(torch.zeros(1, 1, 2, 1, 1, 3), grid)
    with pytest.raises(ValueError, match="feat"):
        bev_pool(torch.ones(1, 1, 2, 1, 1), torch.ones(1, 2, 1, 1, 4), idx, grid)
