"""BEV encoder: BEVDet's CustomResNet (BasicBlocks with conv shortcuts) and the FPN_LSS neck.
In: BEV features (B, C, Y, X). Out: stages [(B, C_i, Y/s_i, X/s_i)]; FPN_LSS: (B, C, Y, X).

Also used for M2's `pre_process_net` (one stride-1 block per frame BEV). Sequential indices of
FPN_LSS (`conv.0`, `conv.1`, `up2.1`, ...) are fixed by the official state_dict names.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from flashocc_ros.model.backbone import BasicBlock


class CustomResNet(nn.Module):
    """Stages of BasicBlocks; the first block of each stage has a 3x3 conv shortcut (bias)."""

    def __init__(
        self,
        in_channels: int,
        num_channels: Sequence[int],
        num_layers: Sequence[int],
        strides: Sequence[int] | None = None,
        output_ids: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        strides = tuple(strides) if strides is not None else (2,) * len(num_channels)
        if not len(num_channels) == len(num_layers) == len(strides):
            raise ValueError("num_channels, num_layers and strides must have the same length")
        self.output_ids = (
            tuple(output_ids) if output_ids is not None else tuple(range(len(num_channels)))
        )
        stages: list[nn.Module] = []
        cur = in_channels
        for out_ch, count, stride in zip(num_channels, num_layers, strides, strict=True):
            shortcut = nn.Conv2d(cur, out_ch, 3, stride=stride, padding=1)  # bias: official
            # mmdet BasicBlock: conv3x3(stride)-BN-ReLU-conv3x3-BN + shortcut(x), ReLU.
            blocks: list[nn.Module] = [BasicBlock(cur, out_ch, stride, shortcut)]
            blocks += [
                BasicBlock(out_ch, out_ch, default_shortcut=False) for _ in range(count - 1)
            ]
            stages.append(nn.Sequential(*blocks))
            cur = out_ch
        self.layers = nn.Sequential(*stages)

    def forward(self, x: Tensor) -> list[Tensor]:
        """(B, Cin, Y, X) -> [(B, C_i, Y/s_i, X/s_i) for i in output_ids]."""
        feats: list[Tensor] = []
        for i, stage in enumerate(self.layers):
            x = stage(x)
            if i in self.output_ids:
                feats.append(x)
        return feats


class FPN_LSS(nn.Module):  # noqa: N801 - official class name
    """Fuse stage 0 with the ×4-upsampled last stage, then ×2 up to the input BEV resolution.

    Bilinear upsampling with align_corners=True everywhere (official `nn.Upsample` settings).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        scale_factor: int = 4,
        input_feature_index: tuple[int, int] = (0, 2),
        extra_upsample: int = 2,
    ) -> None:
        super().__init__()
        self.input_feature_index = input_feature_index
        self.scale_factor = scale_factor
        self.extra_upsample = extra_upsample
        mid = out_channels * 2
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, mid, 3, padding=1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, padding=1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
        )
        self.up2 = nn.Sequential(
            nn.Upsample(scale_factor=extra_upsample, mode="bilinear", align_corners=True),
            nn.Conv2d(mid, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 1),
        )

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        """[(B, C0, Y/2, X/2), _, (B, C2, Y/8, X/8)] -> (B, C, Y, X)."""
        fine = feats[self.input_feature_index[0]]
        coarse = feats[self.input_feature_index[1]]
        coarse = nn.functional.interpolate(
            coarse, scale_factor=self.scale_factor, mode="bilinear", align_corners=True
        )
        x = torch.cat([fine, coarse], dim=1)  # (B, C0 + C2, Y/2, X/2)
        out: Tensor = self.up2(self.conv(x))
        return out
