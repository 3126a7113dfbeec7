"""The assembled FlashOCC network, built from a ModelConfig (FLASHOCC_SPEC.md §2, §3).
In: normalised images (B, N, 3, H, W) + Calibration. Out: logits (B, X, Y, Z, cls) or labels.

Top-level module names equal the official checkpoint prefixes (`img_backbone`, `img_neck`,
`img_view_transformer`, `img_bev_encoder_backbone`, `img_bev_encoder_neck`, `pre_process_net`
(M2 only), `occ_head`). Stages are exposed separately so callers can time or export them:
`encode_images` -> `lift` -> `bev_to_logits`. Temporal (M2) history lives in `temporal.py`;
`forward` on a temporal model treats the frame as a scene start (history = the frame itself).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from flashocc_ros.config import ConfigError, ModelConfig
from flashocc_ros.model.backbone import ResNet
from flashocc_ros.model.bev_encoder import FPN_LSS, CustomResNet
from flashocc_ros.model.geometry import Calibration
from flashocc_ros.model.image_neck import CustomFPN
from flashocc_ros.model.occ_head import BEVOCCHead2D
from flashocc_ros.model.view_transformer import STEREO_DOWNSAMPLE, ViewTransformer


class ImageFeatures(NamedTuple):
    """Output of the image encoder for one frame."""

    feat: Tensor  # (B, N, C, fH, fW) neck output fed to the depth net
    stereo: Tensor | None  # (B, N, Cs, H/4, W/4) backbone stage 0 (stereo configs), else None


class StereoInput(NamedTuple):
    """What the cost volume of one frame needs from the older frame."""

    prev: Tensor  # (B, N, Cs, H/4, W/4) stereo feature of the older frame
    curr_to_adj: Tensor  # (B, N, 4, 4) camera at this frame -> same camera at the older frame
    mlp_extrinsic: Tensor  # (B, N, 4, 4) camera -> key ego of the *key* frame (DepthNet input)


class FlashOCC(nn.Module):
    """FlashOCC: ResNet -> CustomFPN -> depth/context -> BEV pooling -> CustomResNet ->
    FPN_LSS -> BEVOCCHead2D. Call `.eval()` for inference (BatchNorm running statistics)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.stereo and cfg.downsample != 16:
            raise ConfigError("the stereo cost volume needs downsample 16 (two stride-2 convs)")
        self.cfg = cfg
        self.img_backbone = ResNet(cfg.backbone_depth, cfg.backbone_out_indices)
        neck_in = (
            self.img_backbone.out_channels[1:] if cfg.stereo else (self.img_backbone.out_channels)
        )
        self.img_neck = CustomFPN(neck_in, cfg.neck_channels)
        self.img_view_transformer = ViewTransformer(cfg)
        frames = cfg.num_adj_frames + 1
        bev_in = cfg.context_channels * cfg.grid.bev_z_cells * frames
        self.img_bev_encoder_backbone = CustomResNet(bev_in, cfg.bev_channels, cfg.bev_num_layers)
        self.img_bev_encoder_neck = FPN_LSS(
            cfg.bev_channels[0] + cfg.bev_channels[-1],
            cfg.bev_neck_channels,
            input_feature_index=(0, len(cfg.bev_channels) - 1),
        )
        # Registered after the BEV encoder to keep the official key order (BEVDet4D adds it).
        self.pre_process_net: CustomResNet | None = None
        if cfg.temporal:
            c = cfg.context_channels * cfg.grid.bev_z_cells
            self.pre_process_net = CustomResNet(c, [c], [1], strides=[1], output_ids=[0])
        self.occ_head = BEVOCCHead2D(
            cfg.bev_neck_channels, cfg.head_channels, cfg.grid.size_z, cfg.num_classes
        )

    # --- stages --------------------------------------------------------------------------------
    def encode_images(self, imgs: Tensor) -> ImageFeatures:
        """(B, N, 3, H, W) normalised images -> ImageFeatures (B, N, C, fH, fW) [+ stereo]."""
        b, n = self._check_images(imgs)
        x = imgs.reshape(b * n, *imgs.shape[2:])  # (B, N, 3, H, W) -> (B·N, 3, H, W)
        stages = self.img_backbone(x)
        stereo = None
        if self.cfg.stereo:
            s = stages[0]
            stereo = s.view(b, n, *s.shape[1:])  # (B·N, Cs, H/4, W/4) -> (B, N, Cs, H/4, W/4)
            stages = stages[1:]
        feat = self.img_neck(stages)  # (B·N, C, fH, fW)
        return ImageFeatures(feat.view(b, n, *feat.shape[1:]), stereo)  # (B, N, C, fH, fW)

    def stereo_feature(self, imgs: Tensor) -> Tensor:
        """(B, N, 3, H, W) -> (B, N, Cs, H/4, W/4): only stem + stage 0 (the extra reference
        frame t−2 of the official 4D-stereo model)."""
        b, n = self._check_images(imgs)
        s = self.img_backbone.stereo_feature(imgs.reshape(b * n, *imgs.shape[2:]))
        return s.view(b, n, *s.shape[1:])  # (B·N, Cs, h, w) -> (B, N, Cs, h, w)

    def depth_context(
        self, features: ImageFeatures, calib: Calibration, stereo: StereoInput | None = None
    ) -> tuple[Tensor, Tensor]:
        """Depth probabilities (B, N, D, fH, fW) and context (B, N, Cctx, fH, fW) of one frame."""
        vt = self.img_view_transformer
        if not self.cfg.stereo:
            return vt.depth_context(features.feat, calib)
        if stereo is None or features.stereo is None:
            raise ValueError("stereo model: depth_context needs the stereo features and input")
        cost = vt.stereo_cost(stereo.prev, features.stereo, stereo.curr_to_adj, calib)
        return vt.depth_context(features.feat, calib, stereo.mlp_extrinsic, cost)

    def frame_bev(self, bev: Tensor) -> Tensor:
        """Per-frame BEV block of the temporal model (`pre_process_net`); identity otherwise."""
        if self.pre_process_net is None:
            return bev
        out: Tensor = self.pre_process_net(bev)[0]
        return out

    def lift(
        self, features: ImageFeatures, calib: Calibration, stereo: StereoInput | None = None
    ) -> Tensor:
        """Lift-splat one frame: -> BEV (B, Cctx·Dz, Y, X) in the frame of calib.camera_to_ego
        (the per-frame `pre_process_net` of M2 is applied in `frame_bev`, not here)."""
        depth, context = self.depth_context(features, calib, stereo)
        vt = self.img_view_transformer
        return vt.splat(depth, context, vt.geometry.indices(calib))

    def bev_to_logits(self, bev: Tensor) -> Tensor:
        """(B, C_in, Y, X) BEV (M2: [prev, current] concatenated) -> logits (B, X, Y, Z, cls)."""
        feats = self.img_bev_encoder_backbone(bev)
        x = self.img_bev_encoder_neck(feats)  # (B, C, Y, X)
        out: Tensor = self.occ_head(x)
        return out

    # --- whole model ---------------------------------------------------------------------------
    def forward(self, imgs: Tensor, calib: Calibration) -> Tensor:
        """(B, N, 3, H, W) normalised images (official BGR order) + Calibration (camera_to_ego =
        sensor2keyego) -> logits (B, X, Y, Z, cls).

        Temporal models: scene-start semantics of the official dataset (every past frame is a
        copy of this one, identity motion); use `temporal.TemporalHistory` for real history.
        """
        features = self.encode_images(imgs)
        stereo = None
        if self.cfg.stereo:
            assert features.stereo is not None
            b, n = imgs.shape[:2]
            eye = torch.eye(4, dtype=imgs.dtype, device=imgs.device).expand(b, n, 4, 4)
            stereo = StereoInput(features.stereo, eye, calib.camera_to_ego)
        bev = self.frame_bev(self.lift(features, calib, stereo))
        if self.cfg.temporal:
            bev = torch.cat([bev] * (self.cfg.num_adj_frames + 1), dim=1)  # [prev.., current]
        return self.bev_to_logits(bev)

    @torch.no_grad()
    def predict(self, imgs: Tensor, calib: Calibration) -> Tensor:
        """Arg-max labels (B, X, Y, Z) uint8 (softmax is monotonic, so it is skipped)."""
        return self.forward(imgs, calib).argmax(dim=-1).to(torch.uint8)

    def _check_images(self, imgs: Tensor) -> tuple[int, int]:
        if imgs.dim() != 5 or imgs.shape[2] != 3:
            raise ValueError(f"images must be (B, N, 3, H, W), got {tuple(imgs.shape)}")
        if tuple(imgs.shape[3:]) != tuple(self.cfg.input_size):
            raise ValueError(
                f"H, W: images are {tuple(imgs.shape[3:])}, model expects {self.cfg.input_size}"
            )
        if imgs.shape[1] != self.cfg.num_cameras:
            raise ValueError(f"N: expected {self.cfg.num_cameras} cameras, got {imgs.shape[1]}")
        return int(imgs.shape[0]), int(imgs.shape[1])


def build_model(cfg: ModelConfig) -> FlashOCC:
    """A freshly initialised FlashOCC for `cfg` (PyTorch default init; load weights next)."""
    return FlashOCC(cfg)


__all__ = ["STEREO_DOWNSAMPLE", "FlashOCC", "ImageFeatures", "StereoInput", "build_model"]
