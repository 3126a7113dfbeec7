"""View transformer (`img_view_transformer`): depth/context prediction and lift-splat pooling.
In: neck features (B, N, C, fH, fW) + Calibration. Out: BEV features (B, Cctx·Dz, Y, X).

Depth logits are softmaxed over D, context is used raw (FLASHOCC_SPEC.md §2.3). The lift
geometry (frustum, pooling indices) is cached per calibration in a `LiftGeometry`; the stereo
variant also owns the stride-4 frustum of the cost volume. Neither adds state_dict keys.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flashocc_ros.config import GridConfig, ModelConfig
from flashocc_ros.model.bev_pool import bev_pool
from flashocc_ros.model.depth_net import DepthNet, lss_depth_net, mlp_input
from flashocc_ros.model.geometry import Calibration, LiftGeometry, PoolingIndices, create_frustum
from flashocc_ros.model.stereo import cost_volume, stereo_grid

#: Stride of the stereo feature (ResNet stage 0) relative to the network input.
STEREO_DOWNSAMPLE = 4


def splat(depth: Tensor, context: Tensor, indices: PoolingIndices, grid: GridConfig) -> Tensor:
    """Sum-pool depth ⊗ context into BEV: (B, N, D, fH, fW), (B, N, Cctx, fH, fW) ->
    (B, Cctx·Dz, Y, X). Pooling runs in float32 (also under autocast)."""
    feat = context.permute(0, 1, 3, 4, 2).float()  # (B, N, fH, fW, Cctx)
    with torch.autocast(depth.device.type, enabled=False):
        return bev_pool(depth.float(), feat.contiguous(), indices, grid)


class ViewTransformer(nn.Module):
    """`LSSViewTransformer` (M0/M1) or `LSSViewTransformerBEVStereo` (M2)."""

    cv_frustum: Tensor

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.depth_bins = cfg.num_depth_bins
        self.context_channels = cfg.context_channels
        self.depth_net: nn.Module
        if cfg.depth_net == "lss":
            self.depth_net = lss_depth_net(
                cfg.neck_channels, self.depth_bins, cfg.context_channels
            )
        else:
            self.depth_net = DepthNet(
                cfg.neck_channels,
                cfg.neck_channels,
                cfg.context_channels,
                self.depth_bins,
                cfg.aspp_mid_channels,
                cfg.stereo,
            )
        self.geometry = LiftGeometry(cfg)  # current (key) frame, cached per calibration
        if cfg.stereo:
            self.prev_geometry = LiftGeometry(cfg)  # previous frame re-lifted into the key ego
            frustum = create_frustum(cfg, downsample=STEREO_DOWNSAMPLE)  # (D, H/4, W/4, 3)
            self.register_buffer("cv_frustum", frustum, persistent=False)

    def stereo_cost(
        self, prev: Tensor, curr: Tensor, curr_to_adj: Tensor, calib: Calibration
    ) -> Tensor:
        """Softmaxed cost volume (B·N, D, H/4, W/4) between stereo features (B, N, Cs, H/4, W/4)
        of the older (`prev`) and the processed frame; curr_to_adj (B, N, 4, 4)."""
        return self.stereo_cost_on_grid(prev, curr, self.stereo_grid(curr_to_adj, calib))

    def stereo_grid(self, curr_to_adj: Tensor, calib: Calibration) -> Tensor:
        """Cost-volume sampling grid (B·N, D·h, w, 2) of this frame's stride-4 frustum in the
        older frame; curr_to_adj (B, N, 4, 4). Outside any exported graph (matrix inverses)."""
        return stereo_grid(
            self.cv_frustum, curr_to_adj, calib.intrinsics, calib.post_rot, calib.post_tran
        )

    def stereo_cost_on_grid(self, prev: Tensor, curr: Tensor, grid: Tensor) -> Tensor:
        """Softmaxed cost volume (B·N, D, h, w) of stereo features (B, N, Cs, h, w) of the older
        (`prev`) and the processed frame, sampled at `grid` (B·N, D·h, w, 2)."""
        if prev.shape != curr.shape:
            raise ValueError(f"stereo features differ: {tuple(prev.shape)} vs {tuple(curr.shape)}")
        return cost_volume(
            prev.flatten(0, 1), curr.flatten(0, 1), grid, self.cfg.stereo_bias
        )  # (B·N, Cs, h, w) inputs -> (B·N, D, h, w)

    def mlp_input(self, calib: Calibration, mlp_extrinsic: Tensor | None = None) -> Tensor:
        """Camera-aware DepthNet input (B, N, 27) from `calib` with `mlp_extrinsic` (B, N, 4, 4;
        default calib.camera_to_ego). Outside any exported graph."""
        ext = calib.camera_to_ego if mlp_extrinsic is None else mlp_extrinsic
        return mlp_input(ext, calib.intrinsics, calib.post_rot, calib.post_tran, calib.bda)

    def depth_context(
        self,
        feat: Tensor,
        calib: Calibration,
        mlp_extrinsic: Tensor | None = None,
        cost: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """(B, N, C, fH, fW) -> depth probs (B, N, D, fH, fW), context (B, N, Cctx, fH, fW).

        The softmax over D runs in float32, also under autocast.
        """
        logits, context = self.depth_logits_context(feat, calib, mlp_extrinsic, cost)
        return logits.float().softmax(dim=2), context

    def depth_logits_context(
        self,
        feat: Tensor,
        calib: Calibration,
        mlp_extrinsic: Tensor | None = None,
        cost: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """(B, N, C, fH, fW) -> depth logits (B, N, D, fH, fW), context (B, N, Cctx, fH, fW).

        Camera-aware nets build their 27-dim input from `calib` with `mlp_extrinsic`
        (B, N, 4, 4; default calib.camera_to_ego) — the 4D models always pass the key frame's.
        """
        m = self.mlp_input(calib, mlp_extrinsic) if isinstance(self.depth_net, DepthNet) else None
        return self.depth_logits_context_mlp(feat, m, cost)

    def depth_context_mlp(
        self, feat: Tensor, mlp_in: Tensor | None, cost: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """`depth_context` with the DepthNet input already built: feat (B, N, C, fH, fW),
        mlp_in (B, N, 27) or None (LSS) -> depth probs (B, N, D, fH, fW), context."""
        logits, context = self.depth_logits_context_mlp(feat, mlp_in, cost)
        return logits.float().softmax(dim=2), context

    def depth_logits_context_mlp(
        self, feat: Tensor, mlp_in: Tensor | None, cost: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """feat (B, N, C, fH, fW), mlp_in (B, N, 27) (camera-aware nets; None for LSS),
        cost (B·N, D, 4fH, 4fW) -> depth logits (B, N, D, fH, fW), context (B, N, Cctx, ..)."""
        if feat.dim() != 5:
            raise ValueError(f"features must be (B, N, C, fH, fW), got {tuple(feat.shape)}")
        b, n, c, h, w = feat.shape
        x = feat.reshape(b * n, c, h, w)  # (B, N, C, fH, fW) -> (B·N, C, fH, fW)
        if isinstance(self.depth_net, DepthNet):
            if mlp_in is None:
                raise ValueError("the camera-aware DepthNet needs mlp_in (B, N, 27)")
            x = self.depth_net(x, mlp_in, cost)
        else:
            x = self.depth_net(x)  # (B·N, D + Cctx, fH, fW)
        d = self.depth_bins
        logits = x[:, :d].reshape(b, n, d, h, w)  # (B, N, D, fH, fW), softmax in depth_context
        context = x[:, d : d + self.context_channels]
        context = context.reshape(b, n, self.context_channels, h, w)  # (B, N, Cctx, fH, fW)
        return logits, context

    def splat(self, depth: Tensor, context: Tensor, indices: PoolingIndices) -> Tensor:
        """Sum-pool depth ⊗ context into BEV: (B, N, D, fH, fW), (B, N, Cctx, fH, fW) ->
        (B, Cctx·Dz, Y, X). Pooling runs in float32 (also under autocast)."""
        return splat(depth, context, indices, self.cfg.grid)

    def forward(self, feat: Tensor, calib: Calibration) -> Tensor:
        """Single-frame lift (M0/M1): (B, N, C, fH, fW) -> (B, Cctx·Dz, Y, X)."""
        depth, context = self.depth_context(feat, calib)
        return self.splat(depth, context, self.geometry.indices(calib))
