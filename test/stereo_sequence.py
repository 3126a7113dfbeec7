"""A seeded tiny-stereo model and a moving camera sequence with poses, shared by the M2 tests.
In: nothing. Out: CFG (tiny-stereo on SMALL_GRID), tolerances, a weight randomiser, rig calibration
with distinct intrinsics, ego poses and `sequence` (images + FramePoses of consecutive bundles).
Importable from every test folder (test/ is on sys.path through test/conftest.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from tiny_config import SMALL_GRID, randomize_bn

from flashocc_ros.config import ModelConfig, model_config
from flashocc_ros.model.flashocc import FlashOCC, build_model
from flashocc_ros.model.geometry import Calibration
from flashocc_ros.model.preprocess import rig_calibration
from flashocc_ros.rig import nuscenes_like_rig
from flashocc_ros.runtime.backend import FramePoses

CFG = model_config("tiny-stereo").replace(grid=SMALL_GRID)
HALF_SECOND = 500_000_000
MAX_ABS = 1e-3  # logits, fp32 graphs vs eager PyTorch (measured ~1e-6)
AGREEMENT = 0.999  # arg-max agreement with eager PyTorch


def randomize_weights(model: torch.nn.Module, gain: float = 0.75) -> None:
    """He-normal conv/linear weights scaled by `gain`: PyTorch's default init shrinks the signal
    layer by layer until the logits hardly depend on the images (a wrong cost-volume grid then
    moved them by ~1e-5, below the tolerance); these keep them O(1) and input-sensitive."""
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.Conv2d | torch.nn.Linear):
                std = gain * (2.0 / mod.weight[0].numel()) ** 0.5
                mod.weight.copy_(std * torch.randn(mod.weight.shape, generator=gen))


def rig_calib(cfg: ModelConfig) -> Calibration:
    """The nuScenes-like rig with every camera's intrinsics made distinct, B = 1."""
    calib = rig_calibration(nuscenes_like_rig(), cfg.input_size)
    k = calib.intrinsics.clone()  # (1, N, 3, 3)
    i = torch.arange(cfg.num_cameras, dtype=k.dtype)
    k[0, :, 0, 0] *= 1.0 + 0.03 * i
    k[0, :, 1, 1] *= 1.0 + 0.02 * i
    k[0, :, 0, 2] += 0.5 * i
    return Calibration(calib.camera_to_ego, k, calib.post_rot, calib.post_tran, calib.bda)


def ego_poses(x: float, yaw: float, n: int = 6) -> torch.Tensor:
    """(1, N, 4, 4) ego -> global at x metres, yaw rad; each camera captured 2 cm further on."""
    e = torch.eye(4)
    e[0, 0], e[0, 1], e[1, 0], e[1, 1] = (
        math.cos(yaw),
        -math.sin(yaw),
        math.sin(yaw),
        math.cos(yaw),
    )
    e[0, 3], e[1, 3] = x, 0.3 * x
    out = e.expand(1, n, 4, 4).clone()
    out[0, :, 0, 3] += 0.02 * torch.arange(n)
    return out


def sequence(
    count: int, seed: int, spacing_ns: int = HALF_SECOND
) -> Iterator[tuple[torch.Tensor, FramePoses]]:
    """`count` bundles `spacing_ns` apart (0.5 s), driving ~1.4 m and turning 0.05 rad between
    bundles."""
    gen = torch.Generator().manual_seed(seed)
    for i in range(count):
        images = torch.randn(1, CFG.num_cameras, 3, *CFG.input_size, generator=gen)
        yield images, FramePoses(ego_poses(1.4 * i, 0.05 * i), i * spacing_ns)


def seeded_model() -> FlashOCC:
    """tiny-stereo with seeded He-normal weights and random BatchNorm statistics, eval mode."""
    torch.manual_seed(0)
    net = build_model(CFG)
    randomize_weights(net)
    randomize_bn(net, seed=1, mean_scale=0.2)
    return net.eval()
