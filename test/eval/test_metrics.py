"""Occ3D mIoU: identity, all-free and a one-voxel shift checked against an independent count."""

from __future__ import annotations

import numpy as np
import pytest

from flashocc_ros.classes import FREE_LABEL
from flashocc_ros.config import GridConfig
from flashocc_ros.eval.metrics import MiouMetric
from flashocc_ros.rig import nuscenes_like_rig
from flashocc_ros.world.ground_truth import GroundTruthMaker
from flashocc_ros.world.scene import generate_scene


@pytest.fixture(scope="module")
def frames() -> list[tuple[np.ndarray, np.ndarray]]:
    scene = generate_scene(seed=5, num_keyframes=2)
    gt = GroundTruthMaker(scene, nuscenes_like_rig(160, 90), GridConfig(), mask_width=80)
    out = []
    for k in range(2):
        lab = gt.make(scene.timing.frame_time(6 * k))
        out.append((lab.semantics, lab.mask_camera))
    return out


def _miou(frames: list[tuple[np.ndarray, np.ndarray]], preds: list[np.ndarray]) -> float:
    metric = MiouMetric()
    for (g, m), p in zip(frames, preds, strict=True):
        metric.add(p, g, m)
    return metric.result().miou


def _independent_miou(
    frames: list[tuple[np.ndarray, np.ndarray]], preds: list[np.ndarray]
) -> float:
    """Per class TP/FP/FN as sets of (frame, voxel) ids over all frames; nanmean of 0..16."""
    ious = []
    for c in range(17):
        gt_set: set[tuple[int, int]] = set()
        pr_set: set[tuple[int, int]] = set()
        for f, ((g, m), p) in enumerate(zip(frames, preds, strict=True)):
            ids = np.flatnonzero(m.ravel())
            gt_set |= {(f, int(i)) for i in ids[g.ravel()[ids] == c]}
            pr_set |= {(f, int(i)) for i in ids[p.ravel()[ids] == c]}
        tp, fp, fn = len(gt_set & pr_set), len(pr_set - gt_set), len(gt_set - pr_set)
        ious.append(np.nan if tp + fp + fn == 0 else tp / (tp + fp + fn))
    return float(np.nanmean(ious))


def test_ground_truth_against_itself_is_100(frames: list[tuple[np.ndarray, np.ndarray]]) -> None:
    assert _miou(frames, [g for g, _ in frames]) == pytest.approx(1.0)


def test_all_free_prediction_is_0(frames: list[tuple[np.ndarray, np.ndarray]]) -> None:
    assert _miou(frames, [np.full_like(g, FREE_LABEL) for g, _ in frames]) == 0.0


def test_shifted_prediction_matches_independent_count(
    frames: list[tuple[np.ndarray, np.ndarray]],
) -> None:
    preds = [np.roll(g, 1, axis=0) for g, _ in frames]  # one voxel along x
    value = _miou(frames, preds)
    assert 0.0 < value < 1.0
    assert value == pytest.approx(_independent_miou(frames, preds), abs=1e-12)


def test_confusion_counts_only_masked_voxels() -> None:
    g = np.full((2, 2, 2), FREE_LABEL, np.uint8)
    g[0, 0, 0] = 4
    p = g.copy()
    p[1, 1, 1] = 4  # false positive outside the mask: ignored
    mask = np.zeros_like(g, dtype=bool)
    mask[0] = True
    metric = MiouMetric()
    metric.add(p, g, mask)
    res = metric.result()
    assert res.confusion.sum() == 4
    assert res.iou[4] == 1.0
    assert np.isnan(res.iou[0])
    assert "car" in res.table() and "mIoU" in res.table()


def test_shape_mismatch_names_axes() -> None:
    with pytest.raises(ValueError, match="X, Y, Z"):
        MiouMetric().add(np.zeros((2, 2, 2)), np.zeros((2, 2, 3)), np.ones((2, 2, 3), bool))
