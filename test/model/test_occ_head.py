"""Channel-to-height head: z-major split and (X, Y) axis order against a per-voxel computation."""

from __future__ import annotations

import torch

from flashocc_ros.model.occ_head import BEVOCCHead2D


def test_logits_equal_a_direct_per_voxel_computation() -> None:
    torch.manual_seed(0)
    c, nz, ncls, sy, sx = 8, 4, 5, 6, 7  # Y != X to catch a transposition
    head = BEVOCCHead2D(c, c, nz, ncls).eval()
    bev = torch.randn(2, c, sy, sx)
    logits = head(bev)
    assert logits.shape == (2, sx, sy, nz, ncls)
    feat = head.final_conv(bev)  # (B, C, Y, X), conv + bias + ReLU
    assert torch.all(feat >= 0)
    for b in range(2):
        for x in range(sx):
            for y in range(sy):
                vec = head.predicter(feat[b, :, y, x])  # BEV pixel at row y, column x
                for z in range(nz):
                    for cls in range(ncls):
                        assert torch.allclose(
                            logits[b, x, y, z, cls], vec[z * ncls + cls], atol=1e-6
                        )


def test_final_conv_is_conv_bias_relu_and_predicter_uses_softplus() -> None:
    head = BEVOCCHead2D(4, 4, 2, 3)
    assert head.final_conv.conv.bias is not None
    assert isinstance(head.final_conv.activate, torch.nn.ReLU)
    assert isinstance(head.predicter[1], torch.nn.Softplus)
    assert [m.out_features for m in head.predicter if isinstance(m, torch.nn.Linear)] == [8, 6]
