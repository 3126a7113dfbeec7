"""Depth/context networks: M0/M1's single 1x1 conv and M2's camera-aware stereo `DepthNet`.
In: neck features (B·N, C, fH, fW) [+ mlp_input (B, N, 27), cost]. Out: (B·N, D + Cctx, fH, fW).

Output channel order is the official one: D depth logits first, then the context channels.
`DepthNet` follows BEVDepth/BEVStereo (FLASHOCC_SPEC.md §2.3); sub-module names are the
official state_dict names (`cost_volumn_net` keeps the upstream spelling for compatibility).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flashocc_ros.model.backbone import BasicBlock

MLP_INPUT_DIM = 27


def lss_depth_net(in_channels: int, depth_bins: int, context_channels: int) -> nn.Conv2d:
    """M0/M1 `depth_net`: Conv2d(C -> D + Cctx, 1x1, bias)."""
    return nn.Conv2d(in_channels, depth_bins + context_channels, 1)


def mlp_input(
    camera_to_keyego: Tensor, intrinsics: Tensor, post_rot: Tensor, post_tran: Tensor, bda: Tensor
) -> Tensor:
    """Camera-aware DepthNet input (`get_mlp_input`): (B, N, 27).

    fx, fy, cx, cy; post_rot[0,0], post_rot[0,1], post_tran[0], post_rot[1,0], post_rot[1,1],
    post_tran[1]; bda[0,0], bda[0,1], bda[1,0], bda[1,1], bda[2,2]; then the top 3x4 block of
    camera_to_keyego (B, N, 4, 4), row-major.
    """
    b, n = camera_to_keyego.shape[:2]
    if camera_to_keyego.shape[2:] != (4, 4):
        raise ValueError(f"camera_to_keyego must be (B, N, 4, 4), got {camera_to_keyego.shape}")
    bda_n = bda.view(b, 1, 3, 3).expand(b, n, 3, 3)
    k, pr, pt = intrinsics, post_rot, post_tran
    head = torch.stack(
        [
            k[:, :, 0, 0], k[:, :, 1, 1], k[:, :, 0, 2], k[:, :, 1, 2],
            pr[:, :, 0, 0], pr[:, :, 0, 1], pt[:, :, 0],
            pr[:, :, 1, 0], pr[:, :, 1, 1], pt[:, :, 1],
            bda_n[:, :, 0, 0], bda_n[:, :, 0, 1], bda_n[:, :, 1, 0], bda_n[:, :, 1, 1],
            bda_n[:, :, 2, 2],
        ],
        dim=-1,
    )  # (B, N, 15)  # fmt: skip
    ext = camera_to_keyego[:, :, :3, :].reshape(b, n, 12)  # (B, N, 3, 4) -> (B, N, 12)
    return torch.cat([head, ext], dim=-1)  # (B, N, 27)


class Mlp(nn.Module):
    """fc1 -> ReLU -> fc2 (dropout 0). (M, Cin) -> (M, C)."""

    def __init__(self, in_features: int, hidden: int, out_features: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(hidden, out_features)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.fc2(self.act(self.fc1(x)))
        return out


class SELayer(nn.Module):
    """Gate x (M, C, H, W) by sigmoid(expand(relu(reduce(v)))) with v (M, C, 1, 1)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv_reduce = nn.Conv2d(channels, channels, 1)
        self.conv_expand = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor, v: Tensor) -> Tensor:
        gate = torch.sigmoid(self.conv_expand(F.relu(self.conv_reduce(v))))
        return x * gate


class ASPPBranch(nn.Module):
    """Dilated conv (no bias) + BN + ReLU."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, dilation: int) -> None:
        super().__init__()
        pad = 0 if kernel == 1 else dilation
        self.atrous_conv = nn.Conv2d(
            in_ch, out_ch, kernel, padding=pad, dilation=dilation, bias=False
        )
        self.bn = nn.BatchNorm2d(out_ch)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.atrous_conv(x)))


class ASPP(nn.Module):
    """Four dilated branches (1, 6, 12, 18) + image pooling, fused by 1x1 conv-BN-ReLU.

    (M, C, H, W) -> (M, C, H, W). The trailing Dropout(0.5) is a no-op at inference.
    """

    def __init__(self, channels: int, mid: int) -> None:
        super().__init__()
        self.aspp1 = ASPPBranch(channels, mid, 1, 1)
        self.aspp2 = ASPPBranch(channels, mid, 3, 6)
        self.aspp3 = ASPPBranch(channels, mid, 3, 12)
        self.aspp4 = ASPPBranch(channels, mid, 3, 18)
        self.global_avg_pool = nn.Sequential(
            nn.AdaptiveAvgPool2d((1, 1)),
            nn.Conv2d(channels, mid, 1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(),
        )
        self.conv1 = nn.Conv2d(5 * mid, channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.dropout = nn.Dropout(0.5)

    def forward(self, x: Tensor) -> Tensor:
        branches = [self.aspp1(x), self.aspp2(x), self.aspp3(x), self.aspp4(x)]
        pooled = self.global_avg_pool(x)  # (M, mid, 1, 1)
        pooled = F.interpolate(pooled, size=x.shape[2:], mode="bilinear", align_corners=True)
        x = torch.cat([*branches, pooled], dim=1)  # (M, 5·mid, H, W)
        out: Tensor = self.dropout(F.relu(self.bn1(self.conv1(x))))
        return out


class DepthNet(nn.Module):
    """Camera-aware depth/context net with an optional stereo cost-volume input (M2)."""

    def __init__(
        self,
        in_channels: int,
        mid_channels: int,
        context_channels: int,
        depth_bins: int,
        aspp_mid_channels: int,
        stereo: bool,
    ) -> None:
        super().__init__()
        mid, d = mid_channels, depth_bins
        self.depth_bins = d
        self.stereo = stereo
        self.reduce_conv = nn.Sequential(
            nn.Conv2d(in_channels, mid, 3, padding=1), nn.BatchNorm2d(mid), nn.ReLU(inplace=True)
        )
        self.context_conv = nn.Conv2d(mid, context_channels, 1)
        self.bn = nn.BatchNorm1d(MLP_INPUT_DIM)
        self.depth_mlp = Mlp(MLP_INPUT_DIM, mid, mid)
        self.depth_se = SELayer(mid)
        self.context_mlp = Mlp(MLP_INPUT_DIM, mid, mid)
        self.context_se = SELayer(mid)
        conv_in = mid
        if stereo:
            # Spelling `cost_volumn_net` kept for compatibility with the official keys.
            self.cost_volumn_net = nn.Sequential(
                nn.Conv2d(d, d, 3, stride=2, padding=1),
                nn.BatchNorm2d(d),
                nn.Conv2d(d, d, 3, stride=2, padding=1),
                nn.BatchNorm2d(d),
            )
            conv_in = mid + d
        self.depth_conv = nn.Sequential(
            BasicBlock(conv_in, mid, shortcut=nn.Conv2d(conv_in, mid, 1)),  # 1x1 conv, bias
            BasicBlock(mid, mid, default_shortcut=False),
            BasicBlock(mid, mid, default_shortcut=False),
            ASPP(mid, aspp_mid_channels),
            nn.Conv2d(mid, d, 1),
        )

    def forward(self, x: Tensor, mlp_in: Tensor, cost: Tensor | None = None) -> Tensor:
        """x (B·N, C, fH, fW), mlp_in (B, N, 27), cost (B·N, D, 4fH, 4fW) softmaxed stereo cost.

        Returns (B·N, D + Cctx, fH, fW): depth logits, then context.
        """
        if self.stereo and cost is None:
            raise ValueError("stereo DepthNet needs the cost volume (B·N, D, 4fH, 4fW)")
        m = self.bn(mlp_in.reshape(-1, mlp_in.shape[-1]))  # (B·N, 27)
        x = self.reduce_conv(x)  # (B·N, mid, fH, fW)
        context = self.context_se(x, self.context_mlp(m)[..., None, None])
        context = self.context_conv(context)  # (B·N, Cctx, fH, fW)
        depth = self.depth_se(x, self.depth_mlp(m)[..., None, None])  # (B·N, mid, fH, fW)
        if self.stereo:
            assert cost is not None
            depth = torch.cat([depth, self.cost_volumn_net(cost)], dim=1)  # (B·N, mid+D, ..)
        depth = self.depth_conv(depth)  # (B·N, D, fH, fW)
        return torch.cat([depth, context], dim=1)
