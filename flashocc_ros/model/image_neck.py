"""Image neck: BEVDet's CustomFPN (lateral 1x1 convs, top-down nearest upsampling, one 3x3).
In: backbone stages [(B·N, C_i, H_i, W_i)], finest first. Out: (B·N, C, H_0, W_0).

mmcv `ConvModule` wrappers without norm/activation are kept as `.conv` sub-modules only so that
the parameter names match the official keys (`lateral_convs.i.conv`, `fpn_convs.0.conv`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn


class ConvWrapper(nn.Module):
    """mmcv ConvModule with no norm and no activation; the `.conv` name is for compatibility."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.conv(x)
        return out


class CustomFPN(nn.Module):
    """FPN that outputs only level 0 (official `out_ids=[0]`, `num_outs=1`)."""

    def __init__(self, in_channels: Sequence[int], out_channels: int) -> None:
        super().__init__()
        if not in_channels:
            raise ValueError("CustomFPN needs at least one input level")
        self.lateral_convs = nn.ModuleList(ConvWrapper(c, out_channels, 1) for c in in_channels)
        self.fpn_convs = nn.ModuleList([ConvWrapper(out_channels, out_channels, 3)])

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        """[(B·N, C_i, H_i, W_i)] -> (B·N, C, H_0, W_0)."""
        if len(feats) != len(self.lateral_convs):
            raise ValueError(
                f"CustomFPN expects {len(self.lateral_convs)} levels, got {len(feats)}"
            )
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, feats, strict=True)]
        for i in range(len(laterals) - 1, 0, -1):  # top-down, coarse into fine
            up = F.interpolate(laterals[i], size=laterals[i - 1].shape[2:], mode="nearest")
            laterals[i - 1] = laterals[i - 1] + up
        out: Tensor = self.fpn_convs[0](laterals[0])
        return out
