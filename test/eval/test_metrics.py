"""Occ3D mIoU: identity, all-free and a one-voxel shift checked against an independent count;
precision, recall and the most frequent miss; the mIoU by distance ring."""

from __future__ import annotations

import numpy as np
import pytest

from flashocc_ros.classes import FREE_LABEL
from flashocc_ros.config import GridConfig
from flashocc_ros.eval.metrics import MiouMetric, RangeMiou
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


def test_precision_recall_and_misses_match_independent_counts(
    frames: list[tuple[np.ndarray, np.ndarray]],
) -> None:
    preds = [np.roll(g, 2, axis=1) for g, _ in frames]  # two voxels along y
    metric = MiouMetric()
    for (g, m), p in zip(frames, preds, strict=True):
        metric.add(p, g, m)
    res = metric.result()
    prec, rec = res.precision(), res.recall()
    checked = 0
    for c in range(17):
        gm = np.concatenate([g[m] for g, m in frames])
        pm = np.concatenate([p[m] for (_, m), p in zip(frames, preds, strict=True)])
        n_gt, n_pred = int((gm == c).sum()), int((pm == c).sum())
        tp = int(((gm == c) & (pm == c)).sum())
        if n_gt == 0:
            assert np.isnan(rec[c]) and res.missed_as(c) is None
            continue
        checked += 1
        assert rec[c] == pytest.approx(tp / n_gt)
        assert prec[c] == pytest.approx(tp / n_pred) if n_pred else np.isnan(prec[c])
        wrong = pm[(gm == c) & (pm != c)]
        miss = res.missed_as(c)
        if wrong.size == 0:
            assert miss is None
        else:
            counts = np.bincount(wrong, minlength=18)
            assert miss is not None
            assert counts[miss[0]] == counts.max()
            assert miss[1] == pytest.approx(counts.max() / n_gt)
    assert checked >= 5


def test_table_names_the_most_frequent_miss() -> None:
    g = np.full((4, 1, 1), FREE_LABEL, np.uint8)
    g[:3] = 4  # three car voxels: one found, two predicted free
    p = np.full_like(g, FREE_LABEL)
    p[0] = 4
    p[3] = 4  # one false positive
    metric = MiouMetric()
    metric.add(p, g, np.ones_like(g, dtype=bool))
    res = metric.result()
    assert res.recall()[4] == pytest.approx(1 / 3)
    assert res.precision()[4] == pytest.approx(1 / 2)
    assert res.missed_as(4) == (FREE_LABEL, pytest.approx(2 / 3))
    car_line = next(line for line in res.table().splitlines() if line.startswith("car "))
    assert car_line.split() == ["car", "25.00", "50.00", "33.33", "free", "66.7"]


def test_range_rings_split_the_whole_grid(frames: list[tuple[np.ndarray, np.ndarray]]) -> None:
    preds = [np.roll(g, 1, axis=0) for g, _ in frames]
    whole, rings = MiouMetric(), RangeMiou()
    for (g, m), p in zip(frames, preds, strict=True):
        whole.add(p, g, m)
        rings.add(p, g, m)
    results = rings.results()
    labels = [label for label, _ in results]
    assert labels == ["0-10 m", "10-20 m", "20-30 m", "30-40 m", ">= 40 m"]
    total = sum(r.confusion for _, r in results)
    np.testing.assert_array_equal(total, whole.result().confusion)
    assert all(r.num_frames == 2 for _, r in results)
    assert "0-10 m" in rings.line() and "% of voxels" in rings.line()


def test_range_ring_of_a_voxel_is_its_column_distance() -> None:
    grid = GridConfig()
    g = np.full(grid.shape, FREE_LABEL, np.uint8)
    mask = np.zeros(grid.shape, bool)
    # voxel column (i, j): centre x = -40 + 0.4 i + 0.2, y likewise
    for i, j, ring in ((100, 100, 0), (100 + 37, 100, 1), (100, 100 - 60, 2), (199, 199, 4)):
        g[i, j, 3] = 4
        mask[i, j, 3] = True
        x, y = -40 + 0.4 * i + 0.2, -40 + 0.4 * j + 0.2
        rings = RangeMiou(grid)
        rings.add(g, g, mask)
        counts = [int(r.confusion[4, 4]) for _, r in rings.results()]
        assert counts.index(1) == ring, (x, y, np.hypot(x, y))
        g[i, j, 3] = FREE_LABEL
        mask[i, j, 3] = False


def test_range_line_says_n_a_for_an_empty_ring() -> None:
    g = np.full(GridConfig().shape, FREE_LABEL, np.uint8)
    g[100, 100, 3] = 4  # one car voxel next to the ego, nothing scored beyond 10 m
    mask = np.zeros(g.shape, bool)
    mask[100, 100, 3] = True
    rings = RangeMiou()
    rings.add(g, g, mask)
    assert rings.line() == (
        "mIoU by distance from the ego: 0-10 m 100.00 % (100 % of voxels), "
        "10-20 m n/a (0 % of voxels), 20-30 m n/a (0 % of voxels), "
        "30-40 m n/a (0 % of voxels), >= 40 m n/a (0 % of voxels)"
    )


def test_range_rings_reject_bad_edges_and_grids() -> None:
    with pytest.raises(ValueError, match="start at 0"):
        RangeMiou(edges=(5.0, 10.0))
    with pytest.raises(ValueError, match="increase"):
        RangeMiou(edges=(0.0, 20.0, 10.0))
    with pytest.raises(ValueError, match="X, Y, Z"):
        RangeMiou().add(*(np.zeros((2, 2, 2), np.uint8),) * 2, np.ones((2, 2, 2), bool))
