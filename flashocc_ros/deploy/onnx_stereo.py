"""The three graphs of a 4D-stereo (M2) export, as modules that trace `TorchTemporalNet`.
In: a 4D-stereo FlashOCC + its ModelConfig. Out: nn.Modules (one per graph) and their shapes.

    stereo A  images (N, 3, H, W), mlp_input (N, 27), prev_stereo (N, Cs, H/4, W/4),
              stereo_grid (N, D·H/4, W/4, 2)
              -> depth (N, D, fH, fW), context (N, Cctx, fH, fW), stereo (N, Cs, H/4, W/4)
              backbone, neck, cost volume (GridSample per 4 channels, L1, invalid bias,
              softmax), DepthNet, softmax over D
    stereo B  bev_prev, bev_curr (1, Cctx·Dz, Y, X) -> logits (1, X, Y, Z, cls)
              pre_process_net on each, concat [prev, curr], BEV encoder, occupancy head
    stereo S  images (N, 3, H, W) -> stereo (N, Cs, H/4, W/4): backbone stem + stage 0 only,
              run only at a scene start (the cost volume then compares the frame with itself)

Everything pose- or calibration-dependent (mlp_input, the cost-volume grid, pooling indices)
is computed outside the graphs by `TemporalHistory` with the same torch functions.
"""

from __future__ import annotations

from torch import Tensor, nn

from flashocc_ros.config import ModelConfig
from flashocc_ros.model.backbone import stage_channels
from flashocc_ros.model.depth_net import MLP_INPUT_DIM
from flashocc_ros.model.flashocc import FlashOCC
from flashocc_ros.model.temporal import TorchTemporalNet
from flashocc_ros.model.view_transformer import STEREO_DOWNSAMPLE

STEREO_FEATURE_FILE = "stereo_feature.onnx"


def stereo_channels(cfg: ModelConfig) -> int:
    """Cs: channels of the stereo feature (ResNet stage 0) of `cfg`."""
    return stage_channels(cfg.backbone_depth)[0]


class StereoImageToDepth(nn.Module):
    """Stereo graph A: the image step of `TorchTemporalNet` for one batch (B = 1)."""

    def __init__(self, model: FlashOCC) -> None:
        super().__init__()
        self.model = model
        self.net = TorchTemporalNet(model)

    def forward(
        self, images: Tensor, mlp_in: Tensor, prev_stereo: Tensor, grid: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(N, 3, H, W), (N, 27), (N, Cs, h, w), (N, D·h, w, 2) -> depth (N, D, fH, fW),
        context (N, Cctx, fH, fW), stereo (N, Cs, h, w)."""
        out = self.net.image_step(
            images.unsqueeze(0), mlp_in.unsqueeze(0), prev_stereo.unsqueeze(0), grid
        )  # B = 1 added on every per-camera input; the grid is already (B·N, ...)
        return out.depth[0], out.context[0], out.stereo[0]


class BevPairToLogits(nn.Module):
    """Stereo graph B: (1, Cctx·Dz, Y, X) previous and current BEV -> logits (1, X, Y, Z, cls)."""

    def __init__(self, model: FlashOCC) -> None:
        super().__init__()
        self.model = model
        self.net = TorchTemporalNet(model)

    def forward(self, bev_prev: Tensor, bev_curr: Tensor) -> Tensor:
        return self.net.bev_step(bev_prev, bev_curr)


class StereoFeature(nn.Module):
    """Stereo graph S: (N, 3, H, W) images -> (N, Cs, H/4, W/4) stereo feature."""

    def __init__(self, model: FlashOCC) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> Tensor:
        out: Tensor = self.model.stereo_feature(images.unsqueeze(0))[0]
        return out


def stereo_graph_io(
    cfg: ModelConfig,
) -> tuple[
    tuple[dict[str, list[int]], dict[str, list[int]]],
    tuple[dict[str, list[int]], dict[str, list[int]]],
    tuple[dict[str, list[int]], dict[str, list[int]]],
]:
    """Static (inputs, outputs) name -> shape of stereo graphs A, B and S for `cfg`."""
    n, (h, w), (fh, fw) = cfg.num_cameras, cfg.input_size, cfg.feature_size
    sh, sw = h // STEREO_DOWNSAMPLE, w // STEREO_DOWNSAMPLE
    d, c, cs, g = cfg.num_depth_bins, cfg.context_channels, stereo_channels(cfg), cfg.grid
    images = {"images": [n, 3, h, w]}
    stereo = [n, cs, sh, sw]
    bev = [1, c * g.bev_z_cells, g.size_y, g.size_x]
    a_in = {
        **images,
        "mlp_input": [n, MLP_INPUT_DIM],
        "prev_stereo": stereo,
        "stereo_grid": [n, d * sh, sw, 2],
    }
    a_out = {"depth": [n, d, fh, fw], "context": [n, c, fh, fw], "stereo": stereo}
    b_in = {"bev_prev": bev, "bev_curr": bev}
    b_out = {"logits": [1, g.size_x, g.size_y, g.size_z, cfg.num_classes]}
    return (a_in, a_out), (b_in, b_out), (images, {"stereo": stereo})
