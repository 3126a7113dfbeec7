"""Occ3D-nuScenes mIoU, exactly as the official `Metric_mIoU` (use_image_mask=True).
In: (prediction, ground truth, mask_camera) grids (X, Y, Z) per frame. Out: `MiouResult` + table.

A global 18x18 confusion matrix is accumulated over all frames from the voxels inside
`mask_camera`; IoU_c = TP / (TP + FP + FN) from that matrix; mIoU = nanmean over classes 0..16
(free is in the matrix, so predicting free for an occupied voxel counts as a false negative).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flashocc_ros.classes import CLASS_NAMES, FREE_LABEL, NUM_CLASSES


@dataclass(frozen=True, eq=False)
class MiouResult:
    """Per-class IoU (18,) in [0, 1] (nan where a class never occurs) and the mIoU."""

    iou: np.ndarray  # (18,) float64
    miou: float  # nanmean of iou[0:17], in [0, 1]
    confusion: np.ndarray  # (18, 18) int64, rows = ground truth, columns = prediction
    num_frames: int

    def table(self) -> str:
        """Per-class text table in percent."""
        lines = [f"{'class':<22}{'IoU %':>8}", "-" * 30]
        for c in range(NUM_CLASSES):
            v = self.iou[c]
            lines.append(f"{CLASS_NAMES[c]:<22}{'n/a' if np.isnan(v) else f'{100 * v:.2f}':>8}")
        lines.append("-" * 30)
        lines.append(f"{'mIoU (0-16)':<22}{100 * self.miou:>8.2f}")
        lines.append(f"frames: {self.num_frames}")
        return "\n".join(lines)


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
        cm = self.confusion.astype(np.float64)
        tp = np.diag(cm)
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = tp / (cm.sum(0) + cm.sum(1) - tp)
        occupied = iou[:FREE_LABEL]
        miou = float(np.nanmean(occupied)) if np.isfinite(occupied).any() else float("nan")
        return MiouResult(iou, miou, self.confusion.copy(), self.num_frames)
