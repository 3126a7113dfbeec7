"""Row group 1: channel-to-height (2D BEV encoder + BEVOCCHead2D) vs BEVDetOcc's 3D voxel head.
In: seeded depth/context lifted by the same pooling code into a BEV (1, 64, Y, X) and a voxel
volume (1, 32, Z, Y, X). Out: rows with the time ratio and the peak tensor memory ratio.

Both sides start from the pooled features of the same depth probabilities: FlashOCC pools into
one pillar per cell (M0/M1: 64 context channels), BEVDetOcc into Z = 16 cells (`voxel_grid`,
32 channels). Timed: `FlashOCC.bev_to_logits` vs `VoxelEncoderHead` (encoder + neck + head, the
part the paper's ablation times), fp32, inference mode. Memory: peak bytes of tensors alive at
once during the pass (`common.TensorPeakMemory`), weights and inputs excluded. Multiply-
accumulates are counted with forward hooks (conv and linear layers) to explain the ratios.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from benchmarks.common import Row, compare, peak_tensor_mib
from flashocc_ros.config import GridConfig, ModelConfig, model_config
from flashocc_ros.model.bev_pool import bev_pool
from flashocc_ros.model.flashocc import FlashOCC, build_model
from flashocc_ros.model.geometry import LiftGeometry
from flashocc_ros.model.preprocess import rig_calibration
from flashocc_ros.model.voxel_head import (
    VoxelEncoderHead,
    VoxelHeadConfig,
    to_voxel_volume,
    voxel_grid,
)
from flashocc_ros.rig import nuscenes_like_rig

GROUP = "1 c2h-vs-3d"
#: --quick: a 12.8 m square grid (32 x 32 x 16) instead of 80 m (200 x 200 x 16).
QUICK_GRID = GridConfig(x_min=-6.4, x_max=6.4, y_min=-6.4, y_max=6.4)


def count_macs(model: nn.Module, run: Callable[[], object]) -> int:
    """Multiply-accumulates of every Conv2d/Conv3d/Linear called during `run()`."""
    total = 0

    def hook(mod: nn.Module, inp: tuple[Tensor, ...], out: Tensor) -> None:
        nonlocal total
        if isinstance(mod, nn.Linear):
            total += out.numel() * mod.in_features
        elif isinstance(mod, nn.Conv2d | nn.Conv3d):
            w = mod.weight
            total += out.numel() * w[0].numel()  # (Cin/groups · k...) per output value

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, nn.Linear | nn.Conv2d | nn.Conv3d)
    ]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return total


def pooled_inputs(cfg: ModelConfig, vcfg: VoxelHeadConfig) -> tuple[Tensor, Tensor]:
    """Same seeded depth probabilities pooled two ways: BEV (1, Cctx, Y, X) for FlashOCC and a
    volume (1, C3d, Z, Y, X) for BEVDetOcc (first C3d context channels)."""
    calib = rig_calibration(nuscenes_like_rig(), cfg.input_size)
    gen = torch.Generator().manual_seed(0)
    n, d, (h, w) = cfg.num_cameras, cfg.num_depth_bins, cfg.feature_size
    depth = torch.randn(1, n, d, h, w, generator=gen).softmax(2)  # (B, N, D, fH, fW)
    context = torch.randn(1, n, h, w, cfg.context_channels, generator=gen)  # (B, N, fH, fW, C)
    bev = bev_pool(depth, context, LiftGeometry(cfg).indices(calib), cfg.grid)
    vcfg_grid = voxel_grid(cfg.grid)
    vox_cfg = cfg.replace(grid=vcfg_grid)
    ctx3d = context[..., : vcfg.in_channels].contiguous()
    pooled = bev_pool(depth, ctx3d, LiftGeometry(vox_cfg).indices(calib), vcfg_grid)
    return bev, to_voxel_volume(pooled, vcfg_grid.bev_z_cells)


@torch.inference_mode()
def measure_pair(
    name: str, grid: GridConfig, repeats: int
) -> tuple[dict[str, float], dict[str, float], dict[str, int]]:
    """ms, peak MiB and MACs of the 2D encoder+head of preset `name` and of the 3D one."""
    cfg = model_config(name).replace(grid=grid)
    vcfg = VoxelHeadConfig()
    torch.manual_seed(0)
    flash: FlashOCC = build_model(cfg).eval()
    voxel = VoxelEncoderHead(vcfg).eval()
    bev, vol = pooled_inputs(cfg, vcfg)

    def run2d() -> Tensor:
        return flash.bev_to_logits(bev)

    def run3d() -> Tensor:
        out: Tensor = voxel(vol)
        return out

    if run2d().shape != run3d().shape:
        raise RuntimeError("the 2D and 3D heads disagree on the output grid")
    ms = compare({"c2h": run2d, "3d": run3d}, repeats)
    mem = {
        "c2h": peak_tensor_mib(run2d, [bev, *flash.parameters(), *flash.buffers()]),
        "3d": peak_tensor_mib(run3d, [vol, *voxel.parameters(), *voxel.buffers()]),
    }
    macs = {"c2h": count_macs(flash, run2d), "3d": count_macs(voxel, run3d)}
    return ms, mem, macs


def run(quick: bool, repeats: int) -> list[Row]:
    grid = QUICK_GRID if quick else GridConfig()
    rows: list[Row] = []
    presets = (
        (("flashocc-r50", "M1"),) if quick else (("flashocc-r50", "M1"), ("flashocc-r50-M0", "M0"))
    )
    for name, label in presets:
        ms, mem, macs = measure_pair(name, grid, repeats)
        extra = {
            "grid_xyz": list(grid.shape),
            "c2h_gmac": macs["c2h"] / 1e9,
            "3d_gmac": macs["3d"] / 1e9,
            "c2h_gflops": 2 * macs["c2h"] / ms["c2h"] / 1e6,
            "3d_gflops": 2 * macs["3d"] / ms["3d"] / 1e6,
            "c2h_peak_mib": mem["c2h"],
            "3d_peak_mib": mem["3d"],
        }
        ours = f"C2H {label}: CustomResNet+FPN_LSS+BEVOCCHead2D"
        base = "BEVDetOcc 3D: CustomResNet3D+LSSFPN3D+BEVOCCHead3D"
        rows.append(
            Row(
                GROUP,
                f"{ours} time",
                base,
                ms["c2h"],
                ms["3d"],
                ms["c2h"] / ms["3d"],
                target="<= 0.45",
                extra=extra,
            )
        )
        rows.append(
            Row(
                GROUP,
                f"{ours} peak tensor memory",
                base,
                ratio=mem["c2h"] / mem["3d"],
                target="<= 0.35",
                extra=dict(extra),
            )
        )
    return rows
