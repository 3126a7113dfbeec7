"""Small FlashOCC configurations and inputs shared by the model tests (CPU, a few seconds).
In: nothing. Out: tiny single-frame / stereo-temporal configs, calibrations and images.
"""

from __future__ import annotations

import torch
from tiny_config import SMALL_GRID, TINY, randomize_bn  # noqa: F401 - re-exported
from torch import Tensor

from flashocc_ros.config import ModelConfig, model_config
from flashocc_ros.model.geometry import Calibration
from flashocc_ros.model.preprocess import rig_calibration
from flashocc_ros.rig import nuscenes_like_rig

#: M2-like: stage-0 stereo feature, camera-aware DepthNet with cost volume, SID bins, 2 frames.
TINY_STEREO: ModelConfig = model_config("tiny-stereo").replace(grid=SMALL_GRID)


def rig_calib(cfg: ModelConfig) -> Calibration:
    """B = 1 calibration of the nuScenes-like rig at the config's input size."""
    return rig_calibration(nuscenes_like_rig(), cfg.input_size)


def images(cfg: ModelConfig, seed: int = 0, batch: int = 1) -> Tensor:
    """(B, N, 3, H, W) random normalised images."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, cfg.num_cameras, 3, *cfg.input_size, generator=gen)
