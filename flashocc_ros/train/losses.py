"""Training losses: the official masked occupancy cross-entropy and BEVDepth-style depth BCE.
In: logits (B, X, Y, Z, cls) + labels/mask, depth logits (B, N, D, fH, fW) + depth maps.
Out: scalar losses (float32).

Occupancy (FLASHOCC_SPEC.md §1.1): per-voxel cross-entropy (ignore label 255) weighted by
`mask_camera` and averaged over the mask sum. Depth: per feature cell (stride `downsample`) the
minimum valid depth of its pixels, one-hot at the nearest bin (out of range = no target), binary
cross-entropy on the softmaxed depth summed over D, averaged over cells with a target.
Optional (not in the official recipe): the Lovász-softmax loss (Berman et al., CVPR 2018), a
convex surrogate of 1 − IoU per class, over the same masked voxels.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from flashocc_ros.classes import IGNORE_LABEL

#: Depth target value of a cell without a valid target.
NO_DEPTH = -1


def _check_voxel_shapes(logits: Tensor, semantics: Tensor, mask: Tensor) -> None:
    """ValueError unless logits are (B, X, Y, Z, C) over semantics and mask (B, X, Y, Z)."""
    if logits.dim() != 5 or tuple(logits.shape[:4]) != tuple(semantics.shape):
        raise ValueError(
            f"logits (B, X, Y, Z, C) {tuple(logits.shape)} do not match semantics (B, X, Y, Z) "
            f"{tuple(semantics.shape)}"
        )
    if mask.shape != semantics.shape:
        raise ValueError(f"mask {tuple(mask.shape)} != semantics {tuple(semantics.shape)}")


def occupancy_loss(
    logits: Tensor, semantics: Tensor, mask: Tensor, class_weight: Tensor | None = None
) -> Tensor:
    """Masked CE: logits (B, X, Y, Z, C), semantics (B, X, Y, Z) int, mask (B, X, Y, Z) 0/1.

    sum(CE · mask) / max(sum(mask), 1), computed in float32; voxels labelled 255 add 0.
    With `class_weight` (C,) (the official `class_balance=True`): each voxel's CE is scaled by
    the weight of its true class and the sum is divided by the summed weights of the masked
    voxels instead of their count.
    """
    _check_voxel_shapes(logits, semantics, mask)
    c = logits.shape[-1]
    labels = semantics.reshape(-1).long()
    ce = F.cross_entropy(
        logits.float().reshape(-1, c),
        labels,
        ignore_index=IGNORE_LABEL,
        reduction="none",
    )  # (B·X·Y·Z,)
    weight = mask.reshape(-1).float()
    if class_weight is not None:
        if class_weight.shape != (c,):
            raise ValueError(f"class_weight {tuple(class_weight.shape)} != ({c},)")
        valid = labels != IGNORE_LABEL
        per_voxel = torch.zeros_like(weight)
        per_voxel[valid] = class_weight.float()[labels[valid]]
        weight = weight * per_voxel
    return (ce * weight).sum() / weight.sum().clamp(min=1e-6)


def lovasz_softmax_loss(
    logits: Tensor, semantics: Tensor, mask: Tensor, min_error: float = 1e-3
) -> Tensor:
    """Lovász-softmax: mean over the classes present in the masked voxels of the Lovász
    extension of the Jaccard loss, evaluated at the errors |1[y = c] − p_c|.

    logits (B, X, Y, Z, C), semantics (B, X, Y, Z) int, mask (B, X, Y, Z) 0/1; voxels outside
    the mask or labelled 255 take no part. Per class the errors are sorted in decreasing order
    and weighted by the increments of the Jaccard loss of the growing prefix (the set of the
    k largest errors counted as mistakes); at one-hot probabilities the value is exactly
    1 − IoU of each class. All classes go through one sort. Float32.

    Errors below `min_error` are the tail of the sorted order, so leaving them out changes no
    other voxel's weight; as the weights are >= 0 and sum to at most 1 per class, the value
    moves by less than `min_error` (0 = exact). A trained model is confident on most voxels,
    so this spares sorting most of a 640,000-voxel grid for each class.
    """
    _check_voxel_shapes(logits, semantics, mask)
    c = logits.shape[-1]
    labels = semantics.reshape(-1).long()
    keep = (mask.reshape(-1) > 0) & (labels != IGNORE_LABEL)
    if int(keep.sum()) == 0:
        return logits.sum() * 0.0
    with torch.autocast(logits.device.type, enabled=False):
        probs = torch.softmax(logits.float().reshape(-1, c)[keep], dim=1)  # (V, C)
        fg = F.one_hot(labels[keep], c).bool()  # (V, C)
        gts = fg.sum(dim=0)  # (C,) voxels of each class
        present = gts > 0
        errors = torch.where(fg, 1.0 - probs, probs)  # (V, C)
        big = (errors.detach() >= min_error) & present  # only present classes are scored
        cls = big.nonzero()[:, 1]  # (S,) class of each kept error, row-major like errors[big]
        kept = errors[big]  # (S,)
        fg_kept = fg[big]
        # one sort for all classes: by class, then by decreasing error (a float64 key holds
        # both exactly enough: the errors are float32 in [0, 1])
        order = torch.argsort(cls.double() * 2.0 + (1.0 - kept.detach().double()))
        cls, kept, fg_kept = cls[order], kept[order], fg_kept[order].to(kept.dtype)
        per_class = torch.bincount(cls, minlength=c)  # (C,) kept errors of each class
        fg_per_class = torch.bincount(cls, weights=fg_kept, minlength=c)
        start = per_class.cumsum(0) - per_class  # first sorted position of each class
        fg_start = fg_per_class.cumsum(0) - fg_per_class  # fg voxels sorted before it
        k = torch.arange(1, len(cls) + 1, device=cls.device) - start[cls]  # prefix length
        fg_prefix = fg_kept.cumsum(0) - fg_start[cls]  # its fg voxels
        g = gts.to(kept.dtype)[cls]
        jaccard = 1.0 - (g - fg_prefix) / (g + (k - fg_prefix))  # J(k): prefix = mistakes
        previous = torch.cat([jaccard.new_zeros(1), jaccard[:-1]])
        previous = torch.where(k == 1, 0.0, previous)  # J(0) = 0 at each class's start
        terms = kept.new_zeros(c).index_add(0, cls, kept * (jaccard - previous))
        return terms[present].mean()


def lovasz_softmax_reference(probs: Tensor, labels: Tensor) -> Tensor:
    """Plain Lovász-softmax for tests: probs (V, C), labels (V,) int, every voxel counted.

    Per present class, the errors are sorted and each prefix's Jaccard loss is computed from
    sets (1 − |fg minus wrong| / |fg ∪ wrong|), O(V²); mean over present classes.
    """
    total, count = probs.new_zeros(()), 0
    for cls in range(probs.shape[1]):
        fg = labels == cls
        if not bool(fg.any()):
            continue
        errors = (fg.to(probs.dtype) - probs[:, cls]).abs()
        order = torch.argsort(errors, descending=True)
        previous = 0.0
        for k in range(1, len(order) + 1):
            wrong = torch.zeros_like(fg)
            wrong[order[:k]] = True
            inter = int((fg & ~wrong).sum())
            union = int((fg | wrong).sum())
            jac = 1.0 - inter / union
            total = total + errors[order[k - 1]] * (jac - previous)
            previous = jac
        count += 1
    return total / max(count, 1)


def class_balance_weights(counts: np.ndarray) -> Tensor:
    """Official `class_balance` weights 1 / ln(count + 0.001) from per-class voxel counts (C,).

    Counts are clamped to >= 2 so that a class absent from the data gets a finite, large weight
    (1 / ln 2) instead of the official formula's division by ln(0.001) < 0.
    """
    c = np.maximum(np.asarray(counts, dtype=np.float64), 2.0)
    return torch.tensor(1.0 / np.log(c + 0.001), dtype=torch.float32)


def depth_targets(depth: Tensor, bins: Tensor, downsample: int) -> Tensor:
    """(B, N, H, W) metres (0 = none) -> (B, N, H/ds, W/ds) int64 bin index, NO_DEPTH = none.

    A cell's depth is the minimum positive depth of its ds×ds pixels; its bin is the nearest of
    `bins` (D,); depths beyond half a bin spacing outside [bins[0], bins[-1]] have no target.
    """
    if depth.dim() != 4:
        raise ValueError(f"depth must be (B, N, H, W), got {tuple(depth.shape)}")
    b, n, h, w = depth.shape
    if h % downsample or w % downsample:
        raise ValueError(f"H, W: depth map {h}x{w} is not divisible by {downsample}")
    fh, fw = h // downsample, w // downsample
    d = depth.float().masked_fill(depth <= 0, float("inf"))
    d = d.view(b, n, fh, downsample, fw, downsample).amin(dim=(3, 5))  # (B, N, fH, fW)
    bins = bins.to(d)
    idx = (d.unsqueeze(-1) - bins).abs().argmin(dim=-1)  # (B, N, fH, fW)
    if bins.numel() > 1:
        lo = bins[0] - (bins[1] - bins[0]) / 2
        hi = bins[-1] + (bins[-1] - bins[-2]) / 2
    else:
        lo, hi = bins[0] * 0, bins[0] * 2
    valid = torch.isfinite(d) & (d >= lo) & (d <= hi)
    return torch.where(valid, idx, torch.full_like(idx, NO_DEPTH))


def log_one_minus_softmax(z: Tensor) -> Tensor:
    """log(1 - softmax(z)) over the last axis of (V, D) float logits, finite when saturated.

    Only the largest logit of a row can have p > 1/2; every other entry is log1p(-p), accurate
    for p <= 1/2. The largest one is logsumexp of the other logits minus logsumexp of all
    (exact even when p rounds to 1). O(V·D); `log_one_minus_softmax_reference` is the O(V·D²)
    plain form it is tested against.
    """
    lse = torch.logsumexp(z, dim=-1, keepdim=True)  # (V, 1)
    top = z.argmax(dim=-1, keepdim=True)  # (V, 1)
    lse_rest = torch.logsumexp(z.scatter(-1, top, float("-inf")), dim=-1, keepdim=True)
    # the top entries get a dummy p = e^-1 before log1p, so no inf/nan gradient reaches them
    rest = torch.log1p(-torch.exp((z - lse).scatter(-1, top, -1.0)))  # (V, D)
    return rest.scatter(-1, top, lse_rest - lse)


def log_one_minus_softmax_reference(z: Tensor) -> Tensor:
    """Plain form: log(1 - p_d) = logsumexp_{k != d} z_k - logsumexp_k z_k via (V, D, D)."""
    d = z.shape[-1]
    lse = torch.logsumexp(z, dim=-1, keepdim=True)  # (V, 1)
    eye = torch.eye(d, dtype=torch.bool, device=z.device)
    others = z.unsqueeze(-2).masked_fill(eye, float("-inf"))  # (V, D, D): row d without z_d
    return torch.logsumexp(others, dim=-1) - lse


def depth_loss(depth_logits: Tensor, target: Tensor) -> Tensor:
    """BCE of softmax(depth logits) (B, N, D, fH, fW) against one-hot targets (B, N, fH, fW).

    Same value as `binary_cross_entropy(softmax(logits), one_hot)` summed over D and cells with
    a target, divided by their count; computed from logits in float32 so that a saturated
    softmax (p = 0 or 1 in float) gives neither -inf terms nor exploding gradients:
    log p_d = log_softmax_d, log(1 - p_d) from `log_one_minus_softmax`. No -100 clamp as in
    torch's BCE: the terms stay finite and their gradients (bounded by 1 per logit) keep pulling
    a saturated softmax back.
    """
    if depth_logits.dim() != 5 or target.shape != depth_logits.shape[:2] + depth_logits.shape[3:]:
        raise ValueError(
            f"depth logits (B, N, D, fH, fW) {tuple(depth_logits.shape)} do not match target "
            f"(B, N, fH, fW) {tuple(target.shape)}"
        )
    d = depth_logits.shape[2]
    z = depth_logits.permute(0, 1, 3, 4, 2).reshape(-1, d)  # (B·N·fH·fW, D)
    tgt = target.reshape(-1)
    valid = tgt != NO_DEPTH
    count = valid.sum()
    if int(count) == 0 or d < 2:
        return depth_logits.sum() * 0.0
    with torch.autocast(depth_logits.device.type, enabled=False):
        zv = z[valid].float()  # (V, D)
        log_p = torch.log_softmax(zv, dim=1)  # (V, D)
        onehot = F.one_hot(tgt[valid], d).bool()
        bce = -torch.where(onehot, log_p, log_one_minus_softmax(zv)).sum()
    return bce / count.float()


__all__ = [
    "NO_DEPTH",
    "depth_loss",
    "depth_targets",
    "log_one_minus_softmax",
    "log_one_minus_softmax_reference",
    "lovasz_softmax_loss",
    "lovasz_softmax_reference",
    "occupancy_loss",
]
