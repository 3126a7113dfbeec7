"""Post-hoc logit adjustment: a per-class bias folded into the occupancy head.
In: a trained FlashOCC, a *training* dataset folder, candidate strengths tau.
Out: mIoU per tau on training frames (`biased_miou`); the model with -tau·log(prior) in its
last bias, or with per-class biases fitted from there (`fit_class_bias`).

A model trained with (nearly) unweighted cross-entropy on occupancy, where ~95 % of the visible
voxels are free, under-predicts rare classes: objects are mostly labelled free. Logit adjustment
(Menon et al., "Long-tail learning via logit adjustment", ICLR 2021) subtracts tau·log p(c) from
each logit, p(c) = the class's share of the camera-visible training voxels; tau = 0 changes
nothing, tau = 1 is the balanced-error optimum. mIoU sits in between, so tau is picked by mIoU on
*training* scenes only: the held-out evaluation stays untouched by the choice.

One strength for all classes is a one-parameter family; `fit_class_bias` goes on from the best
tau by coordinate ascent over the 18 class biases, still on training frames only (18 numbers
fitted to tens of millions of voxels).

The bias is added to `occ_head.predicter[-1].bias` (z-major layout: entry z·cls + c gets
bias[c]), so the network, its ONNX export and every backend carry it with no runtime change.
`recorded_bias` reads back the bias a record says was folded, so that it can be subtracted
before training such weights further.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from flashocc_ros.classes import CLASS_NAMES
from flashocc_ros.eval.metrics import MiouResult, miou_from_confusion
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


def recorded_bias(adjustment: Mapping[str, Any]) -> Tensor:
    """The total class bias (cls,) that a record's `logit_adjustment` entry folded into its
    weights: the fitted `class_bias` when present, else -chosen_tau · log prior of the recorded
    class counts. KeyError/ValueError when the entry lacks them."""
    if "class_bias" in adjustment:
        values = [float(adjustment["class_bias"][name]) for name in CLASS_NAMES]
        return torch.tensor(values, dtype=torch.float32)
    counts = np.array([adjustment["class_voxel_counts"][name] for name in CLASS_NAMES])
    return -float(adjustment["chosen_tau"]) * class_log_prior(counts)


@dataclass(frozen=True, eq=False)
class VisibleLogits:
    """The logits and ground-truth labels of the camera-visible voxels of some scored frames,
    all frames stacked: what every mIoU of a logit bias needs, computed once."""

    logits: Tensor  # (V, cls) float32
    labels: Tensor  # (V,) int64
    frames: int


@torch.no_grad()
def visible_logits(
    net: FlashOCC, dataset: OccupancyDataset, frames: int, bf16: bool = False
) -> VisibleLogits:
    """Logits of the `mask_camera` voxels of `frames` evenly spaced keyframes of `dataset`
    (about 4 MB per 100,000 visible voxels: hundreds of MB for 48 synthetic frames)."""
    was_training = net.training
    net.eval()
    picks = np.unique(np.linspace(0, len(dataset) - 1, min(frames, len(dataset))).astype(int))
    ctx = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)
    logits, labels = [], []
    for i in tqdm(picks, desc="logits", unit="frame", leave=False):
        item = dataset[int(i)]
        batch = {k: v[None] for k, v in item.items()}
        with ctx:
            out = batch_logits(net, batch)[0].float()
        mask = item["mask_camera"] > 0
        logits.append(out[mask])
        labels.append(item["semantics"][mask].long())
    net.train(was_training)
    return VisibleLogits(torch.cat(logits), torch.cat(labels), len(picks))


def _score(vis: VisibleLogits, pred: Tensor) -> MiouResult:
    n = vis.logits.shape[1]
    cm = torch.bincount(vis.labels * n + pred, minlength=n * n).reshape(n, n)
    return miou_from_confusion(cm.numpy(), vis.frames)


def biased_miou(vis: VisibleLogits, bias: Tensor) -> MiouResult:
    """mIoU of argmax(logits + bias) over `vis`: the plain evaluation of one bias (cls,)."""
    return _score(vis, (vis.logits + bias).argmax(-1))


#: Default steps of `fit_class_bias` (logit units, added to one class's bias at a time).
DEFAULT_BIAS_STEPS: tuple[float, ...] = (-1.0, -0.5, -0.25, -0.1, 0.1, 0.25, 0.5, 1.0)


def fit_class_bias(
    vis: VisibleLogits,
    start: Tensor,
    steps: Sequence[float] = DEFAULT_BIAS_STEPS,
    rounds: int = 3,
) -> tuple[Tensor, list[float]]:
    """Per-class logit biases by coordinate ascent on the mIoU of `vis` from `start` (cls,).

    Class by class, each step is tried on that class's bias alone and the best strict gain is
    kept; a round visits every class; it stops after `rounds` or a round without gain. Returns
    the bias and the mIoU before and after each round. Fast path: with the other classes'
    biased maximum and its index computed once per class, a step's argmax is one comparison
    (ties resolved like argmax: the lower index wins), equal to `biased_miou` of that bias.
    """
    bias = start.detach().clone().float()
    history = [biased_miou(vis, bias).miou]
    current = history[0]
    for _ in range(rounds):
        for c in range(bias.shape[0]):
            others = vis.logits + bias
            others[:, c] = float("-inf")
            top, arg = others.max(dim=-1)
            del others
            best_step = 0.0
            for step in steps:
                z = vis.logits[:, c] + (bias[c] + step)
                wins = (z > top) | ((z == top) & (arg > c))
                miou = _score(vis, torch.where(wins, c, arg)).miou
                if miou > current:
                    best_step, current = step, miou
            if best_step:
                bias[c] += best_step
        history.append(current)
        if history[-1] <= history[-2]:
            break
    return bias, history


__all__ = [
    "DEFAULT_BIAS_STEPS",
    "VisibleLogits",
    "biased_miou",
    "class_log_prior",
    "fit_class_bias",
    "fold_class_bias",
    "visible_logits",
]
