"""Compare two inference backends on the same frames (e.g. torch vs onnxruntime).
In: two Backends + frames (random images on the default rig, or dataset keyframes). Out: report.

Reported: max / mean absolute logit difference, arg-max label agreement, per-class agreement
IoU between the two label grids (|A=c ∧ B=c| / |A=c ∨ B=c|) and, when the frames carry ground
truth, each backend's per-class IoU against it and the difference.
`python -m flashocc_ros.tools.compare --model-config tiny --weights random --b onnxruntime
--engine-path DIR [--dataset DIR] [--frames 4]`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from flashocc_ros.config import ConfigError, ModelConfig
from flashocc_ros.eval.metrics import MiouMetric
from flashocc_ros.model.geometry import Calibration
from flashocc_ros.runtime.backend import Backend, BackendError

LOG = logging.getLogger(__name__)


class Frame(NamedTuple):
    """One input frame, optionally with ground truth (X, Y, Z) labels and camera mask."""

    images: Tensor  # (1, N, 3, H, W) normalised
    calib: Calibration  # B = 1
    semantics: np.ndarray | None = None  # (X, Y, Z) integer labels
    mask_camera: np.ndarray | None = None  # (X, Y, Z) bool


@dataclass(frozen=True, eq=False)
class CompareReport:
    """Agreement of backend B with backend A over `frames` frames."""

    name_a: str
    name_b: str
    frames: int
    max_abs: float  # max |logit_A - logit_B|
    mean_abs: float  # mean |logit_A - logit_B|
    agreement: float  # fraction of voxels with equal arg-max labels, in [0, 1]
    class_agreement_iou: np.ndarray  # (cls,) IoU of label c between A and B (nan: absent)
    iou_a: np.ndarray | None = None  # (cls,) IoU of A vs ground truth (frames with GT only)
    iou_b: np.ndarray | None = None  # (cls,) IoU of B vs ground truth

    @property
    def iou_diff(self) -> np.ndarray | None:
        """(cls,) IoU_B - IoU_A against ground truth, None without ground truth."""
        return None if self.iou_a is None or self.iou_b is None else self.iou_b - self.iou_a

    def table(self) -> str:
        lines = [
            f"{self.name_a} vs {self.name_b} over {self.frames} frame(s)",
            f"max abs logit diff  {self.max_abs:.3e}",
            f"mean abs logit diff {self.mean_abs:.3e}",
            f"arg-max agreement   {100 * self.agreement:.4f} %",
            f"{'class':>6}{'agree IoU %':>13}"
            + (f"{'IoU diff %':>12}" if self.iou_a is not None else ""),
        ]
        diff = self.iou_diff
        for c, v in enumerate(self.class_agreement_iou):
            row = f"{c:>6}{'n/a' if np.isnan(v) else f'{100 * v:.3f}':>13}"
            if diff is not None:
                row += f"{'n/a' if np.isnan(diff[c]) else f'{100 * diff[c]:+.3f}':>12}"
            lines.append(row)
        return "\n".join(lines)


def compare_backends(a: Backend, b: Backend, frames: Iterable[Frame]) -> CompareReport:
    """Run both backends on every frame and accumulate the agreement statistics."""
    max_abs, abs_sum, count, voxels, equal = 0.0, 0.0, 0, 0, 0
    inter: np.ndarray | None = None
    union: np.ndarray | None = None
    metric_a: MiouMetric | None = None
    metric_b: MiouMetric | None = None
    n = 0
    for frame in frames:
        la = a.infer(frame.images, frame.calib).float().cpu()  # (1, X, Y, Z, cls)
        lb = b.infer(frame.images, frame.calib).float().cpu()
        if la.shape != lb.shape:
            raise ValueError(f"logit shapes differ: {tuple(la.shape)} vs {tuple(lb.shape)}")
        diff = (la - lb).abs()
        max_abs = max(max_abs, float(diff.max()))
        abs_sum += float(diff.sum(dtype=torch.float64))
        count += diff.numel()
        num_cls = la.shape[-1]
        ya = la.argmax(-1).numpy()  # (1, X, Y, Z)
        yb = lb.argmax(-1).numpy()
        equal += int((ya == yb).sum())
        voxels += ya.size
        classes = np.arange(num_cls).reshape(-1, 1)
        ia, ib = ya.reshape(1, -1) == classes, yb.reshape(1, -1) == classes  # (cls, voxels)
        inter = (ia & ib).sum(1) + (0 if inter is None else inter)
        union = (ia | ib).sum(1) + (0 if union is None else union)
        if frame.semantics is not None and frame.mask_camera is not None:
            metric_a = metric_a or MiouMetric(num_cls)
            metric_b = metric_b or MiouMetric(num_cls)
            metric_a.add(ya[0], frame.semantics, frame.mask_camera)
            metric_b.add(yb[0], frame.semantics, frame.mask_camera)
        n += 1
    if n == 0 or inter is None or union is None:
        raise ValueError("no frames to compare")
    with np.errstate(divide="ignore", invalid="ignore"):
        class_iou = np.where(union > 0, inter / np.maximum(union, 1), np.nan)
    return CompareReport(
        a.name,
        b.name,
        n,
        max_abs,
        abs_sum / count,
        equal / voxels,
        class_iou,
        None if metric_a is None else metric_a.result().iou,
        None if metric_b is None else metric_b.result().iou,
    )


def random_frames(cfg: ModelConfig, count: int, seed: int = 0) -> Iterator[Frame]:
    """`count` frames of random normalised images on the nuScenes-like rig's calibration."""
    from flashocc_ros.model.preprocess import rig_calibration
    from flashocc_ros.rig import nuscenes_like_rig

    calib = rig_calibration(nuscenes_like_rig(), cfg.input_size)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(count):
        yield Frame(torch.randn(1, cfg.num_cameras, 3, *cfg.input_size, generator=gen), calib)


def dataset_frames(root: str | Path, cfg: ModelConfig, count: int) -> Iterator[Frame]:
    """The first `count` keyframes of a world dataset folder, without augmentation, with GT."""
    from flashocc_ros.train.data import OccupancyDataset

    data = OccupancyDataset(root, cfg, train=False)
    for i in range(min(count, len(data))):
        item = data[i]
        calib = Calibration(
            item["camera_to_ego"][None],
            item["intrinsics"][None],
            item["post_rot"][None],
            item["post_tran"][None],
            item["bda"][None],
        )
        yield Frame(
            item["images"][None],
            calib,
            item["semantics"].numpy(),
            item["mask_camera"].numpy().astype(bool),
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flashocc-compare", description=__doc__)
    parser.add_argument("--model-config", default="demo")
    parser.add_argument("--weights", default="")
    parser.add_argument("--a", default="torch", help="reference backend (torch)")
    parser.add_argument("--b", default="onnxruntime", help="backend under test")
    parser.add_argument("--engine-path", default="", help="export folder / engine for B")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dataset", type=Path, help="world dataset folder (default: random)")
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--max-abs", type=float, help="exit 1 when the max abs diff exceeds it")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from flashocc_ros.node_config import node_config_from_mapping
    from flashocc_ros.runtime.factory import load_model, make_backend
    from flashocc_ros.world.dataset import DatasetError

    try:
        cfg, model = load_model(args.model_config, args.weights)
        backends = []
        for kind in (args.a, args.b):
            params = node_config_from_mapping(
                {
                    "model_config": args.model_config,
                    "weights": args.weights,
                    "backend": kind,
                    "device": args.device,
                    "engine_path": args.engine_path,
                }
            )
            backends.append(make_backend(cfg, model, params))
        if args.dataset is not None:
            frames: Iterable[Frame] = list(dataset_frames(args.dataset, cfg, args.frames))
        else:
            frames = random_frames(cfg, args.frames)
        report = compare_backends(backends[0], backends[1], frames)
    except (ConfigError, BackendError, DatasetError, OSError, ValueError) as err:
        LOG.error("flashocc-compare: %s", err)
        return 2
    LOG.info("%s", report.table())
    return 1 if args.max_abs is not None and report.max_abs > args.max_abs else 0


if __name__ == "__main__":
    sys.exit(main())
