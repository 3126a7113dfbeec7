"""The BEVDetOcc-style 3D voxel head (benchmark baseline): shapes, training, grid layout.
In: small random volumes. Out: pass/fail.
"""

from __future__ import annotations

import pytest
import torch

from flashocc_ros.config import model_config
from flashocc_ros.model.bev_pool import bev_pool
from flashocc_ros.model.geometry import LiftGeometry
from flashocc_ros.model.occ_head import BEVOCCHead2D
from flashocc_ros.model.preprocess import rig_calibration
from flashocc_ros.model.voxel_head import (
    BEVOCCHead3D,
    VoxelEncoderHead,
    VoxelHeadConfig,
    to_voxel_volume,
    voxel_grid,
)
from flashocc_ros.rig import nuscenes_like_rig

SMALL = VoxelHeadConfig(in_channels=4, num_channels=(4, 8, 8), num_layers=(1, 1, 1))


def test_shapes_follow_the_2d_head() -> None:
    torch.manual_seed(0)
    z, y, x = 16, 12, 10
    vol = torch.randn(2, 4, z, y, x)
    out = VoxelEncoderHead(SMALL).eval()(vol)
    head2d = BEVOCCHead2D(8, 8, z, 18).eval()
    out2d = head2d(torch.randn(2, 8, y, x))
    assert out.shape == out2d.shape == (2, x, y, z, 18)
    with pytest.raises(ValueError, match="C: voxel features"):
        VoxelEncoderHead(SMALL)(torch.randn(1, 3, z, y, x))


def test_official_defaults_parameter_count() -> None:
    """BEVDetOcc's 3D encoder + head widths (spec §9): stage widths 32/64/128, neck 224 -> 32."""
    model = VoxelEncoderHead()
    assert model.img_bev_encoder_neck.conv.conv.in_channels == 224
    assert [len(s) for s in model.img_bev_encoder_backbone.layers] == [1, 2, 4]
    assert model.occ_head.predicter[2].out_features == 18


def test_trains_and_backpropagates() -> None:
    torch.manual_seed(0)
    model = VoxelEncoderHead(SMALL).train()
    vol = torch.randn(2, 4, 8, 8, 8)
    target = torch.randint(0, 18, (2, 8, 8, 8))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        logits = model(vol)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 18), target.reshape(-1))
        loss.backward()
        losses.append(float(loss.detach()))
        opt.step()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert losses[-1] < losses[0]


def test_grid_layout_equals_the_2d_head() -> None:
    """A single hot voxel/pixel lands at logits[b, x, y, z] in both heads."""
    z, y, x = 4, 6, 5
    hot = (3, 1, 4)  # (z, y, x)
    head3d = BEVOCCHead3D(1, 1, 2)
    with torch.no_grad():
        head3d.final_conv[0].weight.zero_()
        head3d.final_conv[0].weight[0, 0, 1, 1, 1] = 1.0  # identity 3x3x3 kernel
        head3d.final_conv[0].bias.zero_()
        for layer in (head3d.predicter[0], head3d.predicter[2]):
            layer.weight.fill_(1.0)
            layer.bias.zero_()
    vol = torch.zeros(1, 1, z, y, x)
    vol[0, 0, hot[0], hot[1], hot[2]] = 10.0
    out3d = head3d(vol)[..., 0]  # (1, X, Y, Z)
    # The 2D head emits z-major Z·cls values per BEV pixel: one hot pixel, the hot layer's logit.
    head2d = BEVOCCHead2D(1, 1, z, 2)
    with torch.no_grad():
        head2d.final_conv.conv.weight.zero_()
        head2d.final_conv.conv.weight[0, 0, 1, 1] = 1.0
        head2d.final_conv.conv.bias.zero_()
        head2d.predicter[0].weight.fill_(1.0)
        head2d.predicter[0].bias.zero_()
        head2d.predicter[2].weight.zero_()
        head2d.predicter[2].weight[hot[0] * 2, :] = 1.0  # logit (z = hot, cls 0)
        head2d.predicter[2].bias.zero_()
    bev = torch.zeros(1, 1, y, x)
    bev[0, 0, hot[1], hot[2]] = 10.0
    out2d = head2d(bev)[..., 0]  # (1, X, Y, Z)
    want = (0, hot[2], hot[1], hot[0])
    assert out3d.shape == out2d.shape == (1, x, y, z)
    for out in (out3d, out2d):
        flat = int(out.argmax())
        assert tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), out.shape)) == want


def test_voxel_pooling_reuses_the_lift() -> None:
    """Pooling with Z cells + `to_voxel_volume` gives (B, C, Z, Y, X) in context-channel order,
    holding a subset of the pillar sum (the pillar also keeps points just below z_min)."""
    cfg = model_config("tiny")
    grid = voxel_grid(cfg.grid)
    assert grid.bev_z_cells == cfg.grid.size_z == 16
    calib = rig_calibration(nuscenes_like_rig(), cfg.input_size)
    gen = torch.Generator().manual_seed(0)
    n, d, (h, w) = cfg.num_cameras, cfg.num_depth_bins, cfg.feature_size
    depth = torch.rand(1, n, d, h, w, generator=gen).softmax(2)
    base = torch.rand(1, n, h, w, 1, generator=gen)
    feat = torch.cat([base, 2 * base, 3 * base], dim=-1)  # channel c = (c + 1) · base
    indices = LiftGeometry(cfg.replace(grid=grid)).indices(calib)
    vol = to_voxel_volume(bev_pool(depth, feat, indices, grid), grid.bev_z_cells)
    pillar = bev_pool(depth, feat, LiftGeometry(cfg).indices(calib), cfg.grid)
    assert vol.shape == (1, 3, 16, grid.size_y, grid.size_x)
    torch.testing.assert_close(vol[:, 1], 2 * vol[:, 0])
    torch.testing.assert_close(vol[:, 2], 3 * vol[:, 0])
    assert vol.sum() > 0.5 * pillar.sum()
    assert bool((vol.sum(2) <= pillar + 1e-5).all())
