"""3D-convolution voxel head of BEVDetOcc: the baseline that channel-to-height replaces.
In: voxel features (B, C, Dz, Y, X) from the lift with one pooling cell per voxel. Out: logits
(B, X, Y, Z, cls), the same layout as `BEVOCCHead2D`.

Built from the same code as FlashOCC (FLASHOCC_SPEC.md §9): the view transformer pools into a
grid with `bev_z_cells = Z` (`voxel_grid`) instead of one pillar, `to_voxel_volume` undoes the
collapse_z channel stacking, then CustomResNet3D -> LSSFPN3D -> BEVOCCHead3D (Conv3d + per-voxel
predicter). Used for the channel-to-height ablation benchmark (benchmarks/), not by the node.
Module names follow the official mmcv ConvModule layout (`.conv`, `.bn`); no checkpoint of this
variant is loaded anywhere, so the names are descriptive only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from flashocc_ros.config import ConfigError, GridConfig


@dataclass(frozen=True)
class VoxelHeadConfig:
    """BEVDetOcc (`bevdet-occ-r50.py`) 3D encoder and head widths; defaults are official."""

    in_channels: int = 32  # numC_Trans: context channels lifted into every voxel
    num_layers: tuple[int, ...] = (1, 2, 4)  # BasicBlock3D per CustomResNet3D stage
    num_channels: tuple[int, ...] = (32, 64, 128)  # stage widths
    strides: tuple[int, ...] = (1, 2, 2)  # stage strides (Z, Y and X alike)
    neck_channels: int = 32  # LSSFPN3D output channels
    head_channels: int = 32  # BEVOCCHead3D final_conv width
    num_classes: int = 18

    def __post_init__(self) -> None:
        if not len(self.num_layers) == len(self.num_channels) == len(self.strides):
            raise ConfigError("num_layers, num_channels and strides must have the same length")
        if len(self.num_channels) != 3:
            raise ConfigError("LSSFPN3D fuses exactly three stages")


def voxel_grid(grid: GridConfig) -> GridConfig:
    """The pooling grid of the 3D variant: one pooling cell per occupancy voxel along Z."""
    return dataclasses.replace(grid, bev_z_cells=grid.size_z)


def to_voxel_volume(bev: Tensor, num_z: int) -> Tensor:
    """Pooled (B, Dz·C, Y, X) (collapse_z order: channel = z·C + c) -> (B, C, Dz, Y, X)."""
    if bev.dim() != 4 or bev.shape[1] % num_z:
        raise ValueError(f"bev must be (B, Dz·C, Y, X) with Dz={num_z}, got {tuple(bev.shape)}")
    b, zc, y, x = bev.shape
    vol = bev.view(b, num_z, zc // num_z, y, x)  # (B, Dz, C, Y, X)
    return vol.permute(0, 2, 1, 3, 4).contiguous()  # (B, C, Dz, Y, X)


class ConvBN3d(nn.Module):
    """Conv3d (no bias) + BatchNorm3d [+ ReLU]: mmcv ConvModule(conv_cfg Conv3d, norm BN3d)."""

    def __init__(
        self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, relu: bool = True
    ) -> None:
        super().__init__()
        self.conv = nn.Conv3d(
            in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, bias=False
        )
        self.bn = nn.BatchNorm3d(out_ch)
        self.activate = nn.ReLU(inplace=True) if relu else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.activate(self.bn(self.conv(x)))
        return out


class BasicBlock3D(nn.Module):
    """conv3x3x3(stride)-BN-ReLU -> conv3x3x3-BN, + shortcut, ReLU. (B, Cin, Z, Y, X) ->
    (B, C, Z/s, Y/s, X/s); the shortcut is a 3x3x3 ConvBN3d when given, else identity."""

    def __init__(
        self, in_ch: int, out_ch: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = ConvBN3d(in_ch, out_ch, 3, stride)
        self.conv2 = ConvBN3d(out_ch, out_ch, 3, relu=False)
        self.downsample = downsample
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out: Tensor = self.relu(self.conv2(self.conv1(x)) + identity)
        return out


class CustomResNet3D(nn.Module):
    """Stages of BasicBlock3D; the first block of every stage has a 3x3x3 conv shortcut."""

    def __init__(
        self,
        in_channels: int,
        num_channels: Sequence[int],
        num_layers: Sequence[int],
        strides: Sequence[int],
    ) -> None:
        super().__init__()
        stages: list[nn.Module] = []
        cur = in_channels
        for out_ch, count, stride in zip(num_channels, num_layers, strides, strict=True):
            shortcut = ConvBN3d(cur, out_ch, 3, stride, relu=False)
            blocks: list[nn.Module] = [BasicBlock3D(cur, out_ch, stride, shortcut)]
            blocks += [BasicBlock3D(out_ch, out_ch) for _ in range(count - 1)]
            stages.append(nn.Sequential(*blocks))
            cur = out_ch
        self.layers = nn.Sequential(*stages)

    def forward(self, x: Tensor) -> list[Tensor]:
        """(B, Cin, Z, Y, X) -> [(B, C_i, Z/s_i, Y/s_i, X/s_i)] for every stage."""
        feats: list[Tensor] = []
        for stage in self.layers:
            x = stage(x)
            feats.append(x)
        return feats


class LSSFPN3D(nn.Module):
    """Trilinear upsampling of stages 1 and 2 to stage 0's size (×2, ×4; align_corners),
    concat, 1x1x1 ConvBN3d + ReLU. [(B, C0, Z, Y, X), (B, C1, Z/2, ..), (B, C2, Z/4, ..)] ->
    (B, C, Z, Y, X). Sizes instead of scale factors keep odd test grids working.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = ConvBN3d(in_channels, out_channels, 1)

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        s0, s1, s2 = feats
        up = nn.functional.interpolate
        s1 = up(s1, size=s0.shape[2:], mode="trilinear", align_corners=True)
        s2 = up(s2, size=s0.shape[2:], mode="trilinear", align_corners=True)
        x = torch.cat([s0, s1, s2], dim=1)  # (B, C0 + C1 + C2, Z, Y, X)
        out: Tensor = self.conv(x)
        return out


class BEVOCCHead3D(nn.Module):
    """final_conv (Conv3d 3x3x3 + bias + ReLU) -> permute to (B, X, Y, Z, C) -> per-voxel
    Linear-Softplus-Linear predicter. (B, C, Z, Y, X) -> logits (B, X, Y, Z, cls)."""

    def __init__(self, in_dim: int, out_dim: int, num_classes: int) -> None:
        super().__init__()
        self.final_conv = nn.Sequential(
            nn.Conv3d(in_dim, out_dim, 3, padding=1, bias=True), nn.ReLU(inplace=True)
        )
        self.predicter = nn.Sequential(
            nn.Linear(out_dim, out_dim * 2), nn.Softplus(), nn.Linear(out_dim * 2, num_classes)
        )

    def forward(self, vol: Tensor) -> Tensor:
        if vol.dim() != 5:
            raise ValueError(f"voxel features must be (B, C, Z, Y, X), got {tuple(vol.shape)}")
        x = self.final_conv(vol).permute(0, 4, 3, 2, 1)  # (B, C, Z, Y, X) -> (B, X, Y, Z, C)
        out: Tensor = self.predicter(x)  # (B, X, Y, Z, cls)
        return out


class VoxelEncoderHead(nn.Module):
    """BEVDetOcc's BEV encoder + head: CustomResNet3D -> LSSFPN3D -> BEVOCCHead3D.

    Counterpart of FlashOCC's `bev_to_logits` (CustomResNet -> FPN_LSS -> BEVOCCHead2D).
    """

    def __init__(self, cfg: VoxelHeadConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or VoxelHeadConfig()
        self.cfg = cfg
        self.img_bev_encoder_backbone = CustomResNet3D(
            cfg.in_channels, cfg.num_channels, cfg.num_layers, cfg.strides
        )
        self.img_bev_encoder_neck = LSSFPN3D(sum(cfg.num_channels), cfg.neck_channels)
        self.occ_head = BEVOCCHead3D(cfg.neck_channels, cfg.head_channels, cfg.num_classes)

    def forward(self, vol: Tensor) -> Tensor:
        """(B, C, Z, Y, X) voxel features -> logits (B, X, Y, Z, cls)."""
        if vol.dim() != 5 or vol.shape[1] != self.cfg.in_channels:
            raise ValueError(
                f"C: voxel features must be (B, {self.cfg.in_channels}, Z, Y, X), "
                f"got {tuple(vol.shape)}"
            )
        feats = self.img_bev_encoder_backbone(vol)
        out: Tensor = self.occ_head(self.img_bev_encoder_neck(feats))
        return out


__all__ = [
    "LSSFPN3D",
    "BEVOCCHead3D",
    "BasicBlock3D",
    "CustomResNet3D",
    "VoxelEncoderHead",
    "VoxelHeadConfig",
    "to_voxel_volume",
    "voxel_grid",
]
