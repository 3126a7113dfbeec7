"""Losses: masked occupancy CE against a direct per-voxel sum; depth targets in the right cells.
In: synthetic logits/labels and depth maps. Out: assertions.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flashocc_ros.config import model_config
from flashocc_ros.model.geometry import depth_values
from flashocc_ros.model.preprocess import ImageAug, sample_train_aug
from flashocc_ros.train.data import warp_depth
from flashocc_ros.train.losses import (
    NO_DEPTH,
    class_balance_weights,
    depth_loss,
    depth_targets,
    log_one_minus_softmax,
    log_one_minus_softmax_reference,
    lovasz_softmax_loss,
    lovasz_softmax_reference,
    occupancy_loss,
)


def test_masked_ce_equals_direct_per_voxel_sum() -> None:
    gen = torch.Generator().manual_seed(0)
    b, x, y, z, c = 2, 4, 3, 2, 18
    logits = torch.randn(b, x, y, z, c, generator=gen)
    sem = torch.randint(0, c, (b, x, y, z), generator=gen)
    sem[0, 0, 0, 0] = 255  # ignored voxel inside the mask
    mask = (torch.rand(b, x, y, z, generator=gen) > 0.4).float()
    mask[0, 0, 0, 0] = 1.0
    total, count = 0.0, 0.0
    for idx in np.ndindex(b, x, y, z):
        m = float(mask[idx])
        count += m
        label = int(sem[idx])
        if m and label != 255:
            row = logits[idx].double()
            total += -(row[label] - torch.logsumexp(row, 0)).item()
    expected = total / count
    assert math.isclose(float(occupancy_loss(logits, sem, mask)), expected, rel_tol=1e-5)


def test_class_balanced_ce_weights_each_voxel_by_its_class() -> None:
    gen = torch.Generator().manual_seed(1)
    b, x, y, z, c = 1, 3, 3, 2, 18
    logits = torch.randn(b, x, y, z, c, generator=gen)
    sem = torch.randint(0, c, (b, x, y, z), generator=gen)
    sem[0, 0, 0, 0] = 255
    mask = (torch.rand(b, x, y, z, generator=gen) > 0.3).float()
    counts = np.arange(1, c + 1) * 1000
    w = class_balance_weights(counts)
    assert math.isclose(float(w[4]), 1.0 / math.log(5000.001), rel_tol=1e-6)
    assert float(w[0]) > float(w[-1])  # rarer class, larger weight
    num, den = 0.0, 0.0
    for idx in np.ndindex(b, x, y, z):
        label = int(sem[idx])
        if float(mask[idx]) and label != 255:
            row = logits[idx].double()
            num += float(w[label]) * -(row[label] - torch.logsumexp(row, 0)).item()
            den += float(w[label])
    got = float(occupancy_loss(logits, sem, mask, w))
    assert math.isclose(got, num / den, rel_tol=1e-5)
    assert not math.isclose(got, float(occupancy_loss(logits, sem, mask)), rel_tol=1e-3)


def test_class_balance_weights_are_finite_for_absent_classes() -> None:
    w = class_balance_weights(np.array([0, 1, 10**6]))
    assert torch.isfinite(w).all() and float(w.min()) > 0


def test_masked_ce_empty_mask_is_zero() -> None:
    logits = torch.randn(1, 2, 2, 2, 18)
    sem = torch.zeros(1, 2, 2, 2, dtype=torch.long)
    assert float(occupancy_loss(logits, sem, torch.zeros(1, 2, 2, 2))) == 0.0


def test_lovasz_matches_the_plain_set_form_and_skips_masked_voxels() -> None:
    gen = torch.Generator().manual_seed(3)
    b, x, y, z, c = 1, 5, 4, 2, 6
    logits = torch.randn(b, x, y, z, c, generator=gen) * 2
    sem = torch.randint(0, c - 1, (b, x, y, z), generator=gen)  # class c-1 absent
    sem[0, 0, 0, 0] = 255
    mask = (torch.rand(b, x, y, z, generator=gen) > 0.3).float()
    mask[0, 0, 0, 0] = 1.0
    keep = (mask.reshape(-1) > 0) & (sem.reshape(-1) != 255)
    probs = torch.softmax(logits.reshape(-1, c), dim=1)[keep]
    expected = lovasz_softmax_reference(probs, sem.reshape(-1)[keep])
    got = lovasz_softmax_loss(logits, sem, mask, min_error=0.0)
    assert float(got) == pytest.approx(float(expected), abs=1e-6)
    # leaving out the errors below min_error moves the value by less than min_error
    for min_error in (0.02, 0.1):
        cut = lovasz_softmax_loss(logits, sem, mask, min_error=min_error)
        assert float(cut) <= float(got) + 1e-6
        assert float(cut) > float(got) - min_error
    # voxels outside the mask change nothing
    logits2 = logits.clone()
    logits2[mask == 0] = torch.randn(int((mask == 0).sum()), c, generator=gen) * 5
    moved = lovasz_softmax_loss(logits2, sem, mask, min_error=0.0)
    assert float(moved) == pytest.approx(float(got), abs=1e-6)


def test_lovasz_at_one_hot_predictions_is_one_minus_iou_per_present_class() -> None:
    gen = torch.Generator().manual_seed(4)
    c = 5
    sem = torch.randint(0, c, (1, 8, 8, 2), generator=gen)
    pred = sem.clone()
    flip = torch.rand(sem.shape, generator=gen) < 0.3
    pred[flip] = torch.randint(0, c, (int(flip.sum()),), generator=gen)
    logits = torch.nn.functional.one_hot(pred, c).float() * 100.0  # softmax = one-hot
    mask = torch.ones(sem.shape)
    ious = []
    for cls in range(c):
        inter = int(((sem == cls) & (pred == cls)).sum())
        union = int(((sem == cls) | (pred == cls)).sum())
        if int((sem == cls).sum()):
            ious.append(inter / union)
    loss = float(lovasz_softmax_loss(logits, sem, mask))
    assert loss == pytest.approx(1.0 - sum(ious) / len(ious), abs=1e-5)
    assert loss > 0.05  # the flips made mistakes


def test_lovasz_gradient_raises_the_true_class() -> None:
    gen = torch.Generator().manual_seed(5)
    logits = torch.randn(1, 6, 6, 2, 4, generator=gen, requires_grad=True)
    sem = torch.randint(0, 4, (1, 6, 6, 2), generator=gen)
    lovasz_softmax_loss(logits, sem, torch.ones(sem.shape)).backward()  # type: ignore[no-untyped-call]
    grad = logits.grad
    assert grad is not None
    true_grad = grad.gather(-1, sem.unsqueeze(-1))  # a step against it raises the true logit
    assert float((true_grad <= 1e-9).float().mean()) > 0.95
    assert float(true_grad.sum()) < 0


def test_lovasz_empty_mask_is_zero() -> None:
    logits = torch.randn(1, 2, 2, 2, 3, requires_grad=True)
    sem = torch.zeros(1, 2, 2, 2, dtype=torch.long)
    loss = lovasz_softmax_loss(logits, sem, torch.zeros(sem.shape))
    assert float(loss.detach()) == 0.0
    loss.backward()  # type: ignore[no-untyped-call]


def test_depth_targets_min_depth_nearest_bin_and_invalid_cells() -> None:
    bins = torch.arange(1.0, 45.0, 1.0)  # demo bins: 1 .. 44 m
    depth = torch.zeros(1, 1, 32, 48)  # 2 x 3 cells of 16 px
    depth[0, 0, 0:16, 0:16] = 20.0
    depth[0, 0, 5, 7] = 10.3  # the minimum of cell (0, 0) -> bin 10.0 (index 9)
    depth[0, 0, 0:16, 16:32] = 44.4  # nearest bin 44 (last), within half a bin
    depth[0, 0, 0:16, 32:48] = 60.0  # beyond the bins: no target
    depth[0, 0, 16:32, 0:16] = 0.4  # below bins[0] - 0.5: no target
    depth[0, 0, 16:32, 16:32] = 1.4  # nearest bin 1 (index 0)
    # cell (1, 2) stays 0: no surface, no target
    t = depth_targets(depth, bins, 16)
    assert t.shape == (1, 1, 2, 3)
    assert t[0, 0].tolist() == [[9, 43, NO_DEPTH], [NO_DEPTH, 0, NO_DEPTH]]


def test_depth_loss_is_bce_of_the_softmax_over_valid_cells() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 2, 5, 2, 3, generator=gen)  # (B, N, D, fH, fW)
    target = torch.randint(0, 5, (1, 2, 2, 3), generator=gen)
    target[0, 1, 0, 0] = NO_DEPTH
    probs = logits.softmax(dim=2).permute(0, 1, 3, 4, 2)  # (B, N, fH, fW, D)
    valid = target != NO_DEPTH
    onehot = torch.nn.functional.one_hot(target[valid], 5).float()
    expected = (
        torch.nn.functional.binary_cross_entropy(probs[valid], onehot, reduction="sum")
        / valid.sum()
    )
    assert math.isclose(float(depth_loss(logits, target)), float(expected), rel_tol=1e-5)
    assert float(depth_loss(logits, torch.full_like(target, NO_DEPTH))) == 0.0


def test_depth_loss_stays_finite_on_a_saturated_softmax() -> None:
    """Softmax = one-hot on the wrong bin in float32 (bf16 even sooner): loss and grads finite."""
    logits = torch.zeros(1, 1, 8, 1, 1)
    logits[0, 0, 7] = 200.0  # p_7 == 1.0 exactly in float32
    logits.requires_grad_(True)
    target = torch.tensor([[[[2]]]])
    loss = depth_loss(logits, target)
    loss.backward()  # type: ignore[no-untyped-call]
    value = loss.item()
    assert math.isfinite(value) and value > 300  # -log p_2 - log(1 - p_7), about 2 · 200
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    assert float(logits.grad.abs().max()) < 10.0  # bounded: no 1e12 from 1 / (p (1 - p))
    assert float(logits.grad[0, 0, 7]) > 0.5  # and not zero: it pulls the wrong bin down


@pytest.mark.parametrize("scale", [1.0, 30.0, 400.0])
def test_log_one_minus_softmax_matches_the_plain_form(scale: float) -> None:
    """Values and gradients of the O(V·D) form against the O(V·D²) reference, from ordinary
    to saturated rows (scale 400: p of the top bin is exactly 1 in float32), ties included."""
    gen = torch.Generator().manual_seed(5)
    z = torch.randn(64, 12, generator=gen, dtype=torch.float64) * scale
    z[0] = 0.0  # all equal: every p = 1/12
    z[1, 3] = z[1, 7] = z[1].max() + 1.0  # two tied top bins
    weights = torch.randn(64, 12, generator=gen, dtype=torch.float64)
    outs = []
    for fn in (log_one_minus_softmax, log_one_minus_softmax_reference):
        for dtype in (torch.float64, torch.float32):
            x = z.to(dtype).clone().requires_grad_()
            y = fn(x)
            (y * weights.to(dtype)).sum().backward()
            assert torch.isfinite(y).all() and x.grad is not None and torch.isfinite(x.grad).all()
            outs.append((y.detach().double(), x.grad.double()))
    (fast64, gfast64), (fast32, gfast32), (ref64, gref64), (ref32, gref32) = outs
    torch.testing.assert_close(fast64, ref64)
    torch.testing.assert_close(gfast64, gref64)
    # in float32 both forms are as close to the float64 values (rounding of logits ~|z|·6e-8)
    for y, g in ((fast32, gfast32), (ref32, gref32)):
        torch.testing.assert_close(y, ref64, rtol=1e-5, atol=float(z.abs().max()) * 1e-6)
        torch.testing.assert_close(g, gref64, rtol=1e-4, atol=1e-5)
    p = torch.softmax(z, dim=-1)
    plain = torch.log1p(-p)
    ok = p < 0.999  # where the naive formula still has digits
    torch.testing.assert_close(fast64[ok], plain[ok])


def test_warped_depth_targets_follow_the_image_augmentation() -> None:
    """A surface patch in the source image lands in the cell where the network sees it."""
    cfg = model_config("demo")  # input 128 x 352, downsample 16, bins 1..44
    src_h, src_w = 396, 704
    depth = np.zeros((src_h, src_w), np.float32)
    u0, v0 = 420, 300  # source pixel at the patch centre
    depth[v0 - 20 : v0 + 20, u0 - 20 : u0 + 20] = 17.0
    rng = np.random.default_rng(3)
    augs = [sample_train_aug(rng, (src_h, src_w), cfg.input_size) for _ in range(6)]
    augs.append(ImageAug(0.5, (352, 198), (0, 70, 352, 198), True, 0.0))  # flip, no rotation
    bins = depth_values(cfg)
    for aug in augs:
        warped = warp_depth(depth, aug, cfg.input_size)
        assert warped.shape == cfg.input_size
        assert set(np.unique(warped)) <= {0.0, 17.0}  # nearest: values are never blended
        post_rot, post_tran = aug.matrices()
        u, v, _ = post_rot @ np.array([u0, v0, 1.0]) + post_tran
        t = depth_targets(torch.from_numpy(warped)[None, None], bins, cfg.downsample)
        cell = t[0, 0, int(v) // cfg.downsample, int(u) // cfg.downsample]
        assert int(cell) == int((bins - 17.0).abs().argmin())
        assert int((t == NO_DEPTH).sum()) > 0  # cells without the patch have no target
