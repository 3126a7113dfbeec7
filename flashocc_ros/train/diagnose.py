"""Where a trained single-frame model loses its mIoU: depth or the rest.
In: a FlashOCC (single-frame config), a dataset folder with labels (and depth maps for the depth
half). Out: `Diagnosis`: the model's mIoU (whole grid and by BEV distance ring), its depth
accuracy against the rendered/lidar depth, and the mIoU it would reach with perfect depth.

The perfect-depth ("oracle") run is the same network and weights with one change: in every
feature cell that has a depth target, the predicted depth distribution is replaced by a one-hot
at the target bin before the lift-splat (cells without a target keep the prediction). The gap
between the two mIoUs is what better depth alone could buy; what remains is image semantics,
lateral resolution and the BEV encoder/head.

The "one voxel off" column scores the ground truth against itself moved by one voxel along x and
along y (both added to one confusion matrix): what a prediction that is right except for a
one-voxel slip would score, i.e. how unforgiving each class is at this voxel size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from flashocc_ros.classes import FREE_LABEL
from flashocc_ros.eval.metrics import MiouMetric, MiouResult, RangeMiou
from flashocc_ros.model.flashocc import FlashOCC
from flashocc_ros.model.geometry import depth_values
from flashocc_ros.train.data import OccupancyDataset, batch_calibration
from flashocc_ros.train.losses import NO_DEPTH, depth_targets


@dataclass(frozen=True)
class DepthAccuracy:
    """Feature cells with a depth target, and how many of them the predicted argmax bin hits
    exactly or within one bin."""

    cells: int
    exact: int
    within_one: int

    def line(self) -> str:
        if not self.cells:
            return "depth: no feature cell has a depth target"
        return (
            f"depth argmax bin vs target over {self.cells} feature cells: exact "
            f"{100 * self.exact / self.cells:.1f} %, within one bin "
            f"{100 * self.within_one / self.cells:.1f} %"
        )


@dataclass(frozen=True)
class Diagnosis:
    model: MiouResult
    rings: RangeMiou
    depth: DepthAccuracy | None  # None: the dataset has no depth maps
    oracle: MiouResult | None  # mIoU with the target depth where there is one
    shifted: MiouResult  # the ground truth scored against itself moved one voxel in x / in y


def depth_accuracy(probs: Tensor, target: Tensor) -> DepthAccuracy:
    """probs (B, N, D, fH, fW), target (B, N, fH, fW) bin index or NO_DEPTH."""
    valid = target != NO_DEPTH
    top = probs.argmax(dim=2)
    diff = (top - target).abs()
    return DepthAccuracy(
        int(valid.sum()), int((valid & (diff == 0)).sum()), int((valid & (diff <= 1)).sum())
    )


def oracle_depth(probs: Tensor, target: Tensor) -> Tensor:
    """probs (B, N, D, fH, fW) with a one-hot at `target`'s bin wherever it has one."""
    valid = (target != NO_DEPTH).unsqueeze(2)  # (B, N, 1, fH, fW)
    one_hot = torch.zeros_like(probs).scatter_(2, target.clamp(min=0).unsqueeze(2), 1.0)
    return torch.where(valid, one_hot, probs)


def shift_one_voxel(labels: np.ndarray, axis: int, fill: int) -> np.ndarray:
    """(X, Y, Z) labels moved by +1 voxel along `axis`; the emptied edge slice becomes `fill`."""
    out = np.full_like(labels, fill)
    src: list[slice] = [slice(None)] * labels.ndim
    dst: list[slice] = [slice(None)] * labels.ndim
    src[axis], dst[axis] = slice(0, -1), slice(1, None)
    out[tuple(dst)] = labels[tuple(src)]
    return out


@torch.no_grad()
def diagnose(
    net: FlashOCC, data: OccupancyDataset, frames: int | None = None, bf16: bool = False
) -> Diagnosis:
    """Run `net` over the first `frames` keyframes of `data` (all when None), test-time
    geometry. `data` must be built with `with_depth=True` for the depth half."""
    cfg = net.cfg
    if cfg.stereo or cfg.temporal:
        raise ValueError(f"model {cfg.name!r}: the diagnosis runs single-frame models only")
    was_training = net.training
    net.eval()
    vt = net.img_view_transformer
    bins = depth_values(cfg)
    model, oracle, rings = MiouMetric(cfg.num_classes), MiouMetric(cfg.num_classes), RangeMiou()
    shifted = MiouMetric(cfg.num_classes)
    cells = exact = near = 0
    count = len(data) if frames is None else min(frames, len(data))
    ctx = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)
    for i in tqdm(range(count), desc="diagnose", unit="frame", leave=False):
        item = data[i]
        batch = {k: v[None] for k, v in item.items()}
        calib = batch_calibration(batch)
        with ctx:
            feat = net.encode_images(batch["images"]).feat
            probs, context = vt.depth_context(feat, calib)
            index = vt.geometry.indices(calib)
        gt = item["semantics"].numpy()
        mask = item["mask_camera"].numpy() > 0
        for axis in (0, 1):
            shifted.add(shift_one_voxel(gt, axis, FREE_LABEL), gt, mask)
        runs = [(probs, model)]
        if data.with_depth:
            target = depth_targets(batch["depth"], bins, cfg.downsample)
            acc = depth_accuracy(probs, target)
            cells, exact, near = cells + acc.cells, exact + acc.exact, near + acc.within_one
            runs.append((oracle_depth(probs, target), oracle))
        for depth, metric in runs:
            with ctx:
                logits = net.bev_to_logits(net.frame_bev(vt.splat(depth, context, index)))
            pred = logits[0].argmax(-1).to(torch.uint8).numpy()
            metric.add(pred, gt, mask)
            if metric is model and gt.shape == rings.shape:
                rings.add(pred, gt, mask)
    net.train(was_training)
    with_depth = data.with_depth
    return Diagnosis(
        model.result(),
        rings,
        DepthAccuracy(cells, exact, near) if with_depth else None,
        oracle.result() if with_depth else None,
        shifted.result(),
    )


def class_table(columns: dict[str, MiouResult], names: tuple[str, ...]) -> str:
    """Per-class IoU in percent, one column per result (heading -> result), mIoU last."""
    widths = [max(9, len(h) + 2) for h in columns]
    results = list(columns.values())
    head = f"{'class':<22}" + "".join(f"{h:>{w}}" for h, w in zip(columns, widths, strict=True))
    rule = "-" * len(head)
    lines = [head, rule]
    for c in range(len(names) - 1):
        ious = [r.iou[c] for r in results]
        if all(np.isnan(v) for v in ious):
            continue
        cells = "".join(f"{100 * v:>{w}.2f}" for v, w in zip(ious, widths, strict=True))
        lines.append(f"{names[c]:<22}" + cells)
    lines.append(rule)
    cells = "".join(f"{100 * r.miou:>{w}.2f}" for r, w in zip(results, widths, strict=True))
    lines.append(f"{'mIoU (0-16)':<22}" + cells)
    return "\n".join(lines)


__all__ = [
    "DepthAccuracy",
    "Diagnosis",
    "class_table",
    "depth_accuracy",
    "diagnose",
    "oracle_depth",
    "shift_one_voxel",
]
