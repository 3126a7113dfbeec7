"""Post-hoc logit adjustment: a per-class bias folded into the occupancy head.
In: a trained FlashOCC, a *training* dataset folder, candidate strengths tau.
Out: mIoU per tau on training frames; the model with -tau·log(prior) in its last bias.

A model trained with (nearly) unweighted cross-entropy on occupancy, where ~95 % of the visible
voxels are free, under-predicts rare classes: objects are mostly labelled free. Logit adjustment
(Menon et al., "Long-tail learning via logit adjustment", ICLR 2021) subtracts tau·log p(c) from
each logit, p(c) = the class's share of the camera-visible training voxels; tau = 0 changes
nothing, tau = 1 is the balanced-error optimum. mIoU sits in between, so tau is picked by mIoU on
*training* scenes only: the held-out evaluation stays untouched by the choice.

The bias is added to `occ_head.predicter[-1].bias` (z-major layout: entry z·cls + c gets
bias[c]), so the network, its ONNX export and every backend carry it with no runtime change.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from flashocc_ros.eval.metrics import MiouMetric, MiouResult
from flashocc_ros.model.flashocc import FlashOCC
from flashocc_ros.train.data import OccupancyDataset, batch_logits


def class_log_prior(counts: np.ndarray) -> Tensor:
    """log of each class's share (C,) of `counts` (voxels per class); absent classes get the
    log-share of one voxel so that the prior stays finite."""
    c = np.maximum(np.asarray(counts, dtype=np.float64), 1.0)
    return torch.tensor(np.log(c / c.sum()), dtype=torch.float32)


def fold_class_bias(net: FlashOCC, bias: Tensor) -> None:
    """Add `bias` (cls,) to every height's logits of `net`'s occupancy head, in place."""
    last = net.occ_head.predicter[-1]
    if not isinstance(last, nn.Linear) or last.bias is None:
        raise TypeError("occ_head.predicter[-1] must be a Linear layer with a bias")
    num_z, num_cls = net.occ_head.num_z, net.occ_head.num_classes
    if bias.shape != (num_cls,):
        raise ValueError(f"bias {tuple(bias.shape)} != ({num_cls},)")
    with torch.no_grad():
        last.bias.add_(bias.to(last.bias).repeat(num_z))  # z-major: index z·cls + c


@torch.no_grad()
def sweep_logit_adjustment(
    net: FlashOCC,
    dataset: OccupancyDataset,
    log_prior: Tensor,
    taus: Sequence[float],
    frames: int,
    bf16: bool = False,
) -> dict[float, MiouResult]:
    """mIoU of argmax(logits - tau·log_prior) for every tau over `frames` evenly spaced
    keyframes of `dataset` (each frame's logits are computed once)."""
    was_training = net.training
    net.eval()
    metrics = {t: MiouMetric(net.cfg.num_classes) for t in taus}
    picks = np.unique(np.linspace(0, len(dataset) - 1, min(frames, len(dataset))).astype(int))
    ctx = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)
    for i in tqdm(picks, desc="logit adjustment", unit="frame", leave=False):
        item = dataset[int(i)]
        batch = {k: v[None] for k, v in item.items()}
        with ctx:
            logits = batch_logits(net, batch)[0].float()
        gt = item["semantics"].numpy()
        mask = item["mask_camera"].numpy() > 0
        for t, metric in metrics.items():
            pred = (logits - t * log_prior).argmax(-1).to(torch.uint8).numpy()
            metric.add(pred, gt, mask)
    net.train(was_training)
    return {t: m.result() for t, m in metrics.items()}


__all__ = ["class_log_prior", "fold_class_bias", "sweep_logit_adjustment"]
