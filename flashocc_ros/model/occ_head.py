"""Occupancy head `BEVOCCHead2D`: channel-to-height, the core idea of FlashOCC.
In: BEV features (B, C, Y, X). Out: logits (B, X, Y, Z, cls) in Occ3D [x][y][z] order.

The per-pixel predicter emits Z·cls values that are split z-major (index = z·cls + c).
"""

from __future__ import annotations

from torch import Tensor, nn


class ConvReLU(nn.Module):
    """mmcv ConvModule(3x3, bias, no norm, ReLU); `.conv` is named for compatibility."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=True)
        self.activate = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.activate(self.conv(x))
        return out


class BEVOCCHead2D(nn.Module):
    """final_conv (conv+bias+ReLU) -> permute to (B, X, Y, C) -> Linear-Softplus-Linear."""

    def __init__(self, in_dim: int, out_dim: int, num_z: int, num_classes: int) -> None:
        super().__init__()
        self.num_z = num_z
        self.num_classes = num_classes
        self.final_conv = ConvReLU(in_dim, out_dim)
        self.predicter = nn.Sequential(
            nn.Linear(out_dim, out_dim * 2),
            nn.Softplus(),
            nn.Linear(out_dim * 2, num_z * num_classes),
        )

    def forward(self, bev: Tensor) -> Tensor:
        """(B, C, Y, X) -> (B, X, Y, Z, cls)."""
        if bev.dim() != 4:
            raise ValueError(f"BEV must be (B, C, Y, X), got {tuple(bev.shape)}")
        x = self.final_conv(bev).permute(0, 3, 2, 1)  # (B, C, Y, X) -> (B, X, Y, C)
        b, sx, sy = x.shape[:3]
        x = self.predicter(x)  # (B, X, Y, Z·cls)
        out: Tensor = x.view(b, sx, sy, self.num_z, self.num_classes)  # z-major: (B,X,Y,Z,cls)
        return out
