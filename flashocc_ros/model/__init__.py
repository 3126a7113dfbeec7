"""FlashOCC network in plain PyTorch (imports torch only; no ROS, no mmcv).
In: normalised camera images + Calibration. Out: occupancy logits (B, X, Y, Z, cls) / labels.

Stage modules: backbone -> image_neck -> view_transformer (depth_net, stereo, geometry,
bev_pool) -> bev_encoder -> occ_head, assembled in `flashocc`; M2 history in `temporal`;
weights I/O in `checkpoint`.
"""

from __future__ import annotations

from flashocc_ros.model.flashocc import FlashOCC, ImageFeatures, StereoInput, build_model
from flashocc_ros.model.geometry import Calibration

__all__ = ["Calibration", "FlashOCC", "ImageFeatures", "StereoInput", "build_model"]
