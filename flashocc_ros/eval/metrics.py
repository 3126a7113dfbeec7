"""Occ3D-nuScenes mIoU, exactly as the official `Metric_mIoU` (use_image_mask=True).
In: (prediction, ground truth, mask_camera) grids (X, Y, Z) per frame. Out: `MiouResult` + table.

A global 18x18 confusion matrix is accumulated over all frames from the voxels inside
`mask_camera`; IoU_c = TP / (TP + FP + FN) from that matrix; mIoU = nanmean over classes 0..16
(free is in the matrix, so predicting free for an occupied voxel counts as a false negative).

Beyond the official number, for explaining it: per-class precision and recall and the label a
class's voxels most often receive instead (`MiouResult.table`), and the mIoU by BEV distance
from the ego origin (`RangeMiou`): camera occupancy degrades with range, and one number hides it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from flashocc_ros.classes import CLASS_NAMES, FREE_LABEL, NUM_CLASSES
from flashocc_ros.config import GridConfig


@dataclass(frozen=True, eq=False)
class MiouResult:
    """Per-class IoU (18,) in [0, 1] (nan where a class never occurs) and the mIoU."""

    iou: np.ndarray  # (18,) float64
    miou: float  # nanmean of iou[0:17], in [0, 1]
    confusion: np.ndarray  # (18, 18) int64, rows = ground truth, columns = prediction
    num_frames: int

    def precision(self) -> np.ndarray:
        """(18,) TP / predicted voxels per class (nan where a class is never predicted)."""
        cm = self.confusion.astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            out: np.ndarray = np.diag(cm) / cm.sum(0)
        return out

    def recall(self) -> np.ndarray:
        """(18,) TP / ground-truth voxels per class (nan where a class never occurs)."""
        cm = self.confusion.astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            out: np.ndarray = np.diag(cm) / cm.sum(1)
        return out

    def missed_as(self, c: int) -> tuple[int, float] | None:
        """The label most often predicted for class c's voxels when not c, and the fraction of
        c's voxels it takes; None when c never occurs or is never missed."""
        row = self.confusion[c].astype(np.float64)
        total = row.sum()
        row[c] = 0
        if total == 0 or row.max() == 0:
            return None
        other = int(row.argmax())
        return other, float(row[other] / total)

    def table(self) -> str:
        """Per-class text table in percent: IoU, precision, recall, most frequent miss."""
        prec, rec = self.precision(), self.recall()
        lines = [
            f"{'class':<22}{'IoU %':>8}{'prec %':>8}{'rec %':>8}  missed mostly as (% of class)",
            "-" * 78,
        ]
        for c in range(NUM_CLASSES):
            miss = self.missed_as(c)
            lines.append(
                f"{CLASS_NAMES[c]:<22}{_pct(self.iou[c]):>8}{_pct(prec[c]):>8}{_pct(rec[c]):>8}"
                + ("" if miss is None else f"  {CLASS_NAMES[miss[0]]} {100 * miss[1]:.1f}")
            )
        lines.append("-" * 78)
        lines.append(f"{'mIoU (0-16)':<22}{100 * self.miou:>8.2f}")
        lines.append(f"frames: {self.num_frames}")
        return "\n".join(lines)


def _pct(v: float) -> str:
    return "n/a" if np.isnan(v) else f"{100 * v:.2f}"


class MiouMetric:
    """Accumulates the global confusion matrix frame by frame."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        self.num_classes = num_classes
        self.confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
        self.num_frames = 0

    def add(self, pred: np.ndarray, gt: np.ndarray, mask_camera: np.ndarray) -> None:
        """One frame: pred, gt (X, Y, Z) integer labels, mask_camera (X, Y, Z) bool."""
        if pred.shape != gt.shape or mask_camera.shape != gt.shape:
            raise ValueError(
                f"pred {pred.shape}, gt {gt.shape}, mask {mask_camera.shape} must all be (X, Y, Z)"
            )
        m = mask_camera.astype(bool)
        g = gt[m].astype(np.int64)
        p = pred[m].astype(np.int64)
        n = self.num_classes
        if g.size and (g.max() >= n or p.max() >= n or g.min() < 0 or p.min() < 0):
            raise ValueError(f"labels must be in [0, {n}), found gt {g.max()} / pred {p.max()}")
        self.confusion += np.bincount(n * g + p, minlength=n * n).reshape(n, n)
        self.num_frames += 1

    def result(self) -> MiouResult:
        return miou_from_confusion(self.confusion.copy(), self.num_frames)


def miou_from_confusion(confusion: np.ndarray, num_frames: int) -> MiouResult:
    """The official per-class IoU and mIoU of a global confusion matrix (rows = ground truth)."""
    cm = confusion.astype(np.float64)
    tp = np.diag(cm)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = tp / (cm.sum(0) + cm.sum(1) - tp)
    occupied = iou[:FREE_LABEL]
    miou = float(np.nanmean(occupied)) if np.isfinite(occupied).any() else float("nan")
    return MiouResult(iou, miou, confusion, num_frames)


#: Edges (m) of the default distance rings of `RangeMiou`; the last ring is open (the 80 m
#: Occ3D square reaches 56.6 m in its corners).
DEFAULT_RANGE_EDGES: tuple[float, ...] = (0.0, 10.0, 20.0, 30.0, 40.0)


class RangeMiou:
    """Occ3D mIoU per ring of BEV distance (voxel centre to the ego origin, x-y plane).

    Each ring is an ordinary `MiouMetric` over the camera-mask voxels whose column lies in it,
    so the rings' confusion matrices sum to the whole grid's.
    """

    def __init__(
        self, grid: GridConfig | None = None, edges: tuple[float, ...] = DEFAULT_RANGE_EDGES
    ) -> None:
        grid = grid or GridConfig()
        if len(edges) < 1 or edges[0] != 0.0 or any(b <= a for a, b in itertools.pairwise(edges)):
            raise ValueError(f"range edges must start at 0 and increase, got {edges}")
        x = grid.x_min + (np.arange(grid.size_x) + 0.5) * grid.voxel_size
        y = grid.y_min + (np.arange(grid.size_y) + 0.5) * grid.voxel_size
        dist = np.hypot(x[:, None], y[None, :])  # (X, Y)
        ring = np.searchsorted(np.asarray(edges), dist, side="right") - 1
        self.shape = grid.shape
        self.labels = [f"{a:g}-{b:g} m" for a, b in itertools.pairwise(edges)]
        self.labels.append(f">= {edges[-1]:g} m")
        self.columns = [ring == r for r in range(len(edges))]  # (X, Y) bool per ring
        self.metrics = [MiouMetric() for _ in self.labels]

    def add(self, pred: np.ndarray, gt: np.ndarray, mask_camera: np.ndarray) -> None:
        """One frame, as `MiouMetric.add`; grids must have the shape of the ring grid."""
        if gt.shape != self.shape:
            raise ValueError(f"grid {gt.shape} is not the {self.shape} (X, Y, Z) of the rings")
        m = mask_camera.astype(bool)
        for cols, metric in zip(self.columns, self.metrics, strict=True):
            metric.add(pred, gt, m & cols[:, :, None])

    @property
    def num_frames(self) -> int:
        """Frames added so far."""
        return self.metrics[0].num_frames

    def results(self) -> list[tuple[str, MiouResult]]:
        return [(label, m.result()) for label, m in zip(self.labels, self.metrics, strict=True)]

    def line(self) -> str:
        """One line: the mIoU of each ring with its share of the scored voxels."""
        res = self.results()
        total = sum(int(r.confusion.sum()) for _, r in res) or 1
        parts = [
            f"{label} {_pct(r.miou)}{'' if np.isnan(r.miou) else ' %'} "
            f"({100 * r.confusion.sum() / total:.0f} % of voxels)"
            for label, r in res
        ]
        return "mIoU by distance from the ego: " + ", ".join(parts)
