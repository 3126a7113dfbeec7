"""Stereo cost volume: sampling grid geometry and the grouped L1 cost vs a direct reference."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from tiny_flashocc import TINY_STEREO, rig_calib

from flashocc_ros.model.geometry import create_frustum
from flashocc_ros.model.stereo import cost_volume, stereo_grid

torch.set_num_threads(2)


def _grid(k2s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    calib = rig_calib(TINY_STEREO)
    frustum = create_frustum(TINY_STEREO, downsample=4)  # (D, h, w, 3)
    g = stereo_grid(frustum, k2s, calib.intrinsics, calib.post_rot, calib.post_tran)
    return g, frustum


def test_identity_motion_samples_each_pixel_at_itself() -> None:
    g, frustum = _grid(torch.eye(4).expand(1, 6, 4, 4))
    d, h, w, _ = frustum.shape
    assert g.shape == (6, d * h, w, 2)
    hi, wi = 4 * h, 4 * w
    expect = torch.stack(
        (frustum[..., 0] / (wi - 1) * 2 - 1, frustum[..., 1] / (hi - 1) * 2 - 1), dim=-1
    ).view(1, d * h, w, 2)
    torch.testing.assert_close(g, expect.expand_as(g), atol=1e-4, rtol=0)


def test_lateral_baseline_gives_disparity_f_b_over_d_and_behind_points_get_minus_two() -> None:
    k2s = torch.eye(4).repeat(1, 6, 1, 1)
    k2s[..., 0, 3] = -0.5  # older camera 0.5 m to the right (+x of the optical frame)
    g, frustum = _grid(k2s)
    calib = rig_calib(TINY_STEREO)
    d, h, w, _ = frustum.shape
    fx = calib.intrinsics[0, :, 0, 0] * calib.post_rot[0, :, 0, 0]  # focal in input pixels
    du = (g[..., 0] + 1) / 2 * (4 * w - 1) - frustum[..., 0].reshape(1, d * h, w)
    expect = -(fx.view(6, 1, 1) * 0.5) / frustum[..., 2].reshape(1, d * h, w)
    torch.testing.assert_close(du, expect.expand_as(du), atol=1e-2, rtol=1e-4)
    k2s[..., 2, 3] = -100.0  # everything ends up behind the older camera
    g, _ = _grid(k2s)
    assert torch.all(g == -2)


def test_cost_volume_matches_a_direct_reference_with_bias_on_invalid() -> None:
    gen = torch.Generator().manual_seed(0)
    bn, cs, d, h, w = 2, 8, 5, 4, 6
    prev = torch.randn(bn, cs, h, w, generator=gen)
    curr = torch.randn(bn, cs, h, w, generator=gen)
    grid = torch.rand(bn, d * h, w, 2, generator=gen) * 2.4 - 1.2  # some samples outside
    grid[0, :3] = -2.0
    out = cost_volume(prev, curr, grid, bias=5.0)
    warped = F.grid_sample(prev, grid, align_corners=True).view(bn, cs, d, h, w)
    cost = (curr.unsqueeze(2) - warped).abs().sum(1)
    cost = cost + 5.0 * (warped[:, cs - 4] == 0)  # channel 0 of the last group of 4
    torch.testing.assert_close(out, torch.softmax(-cost, dim=1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.sum(1), torch.ones(bn, h, w))
