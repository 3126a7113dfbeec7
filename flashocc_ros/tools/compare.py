"""Compare two inference backends on the same frames (e.g. torch vs onnxruntime).
In: two Backends + frames (`compare_frames`: random images or dataset keyframes). Out: report.

Reported: max / mean absolute logit difference, arg-max label agreement, per-class agreement
IoU between the two label grids (|A=c ∧ B=c| / |A=c ∨ B=c|) and, when the frames carry ground
truth, each backend's per-class IoU against it and the difference.
Temporal models (M2) run over a time sequence: each frame carries its per-camera ego poses, both
backends keep history and are reset together at sequence starts; the report then also lists
every frame (max / mean abs diff, agreement, history starts), so drift over a sequence shows.
`python -m flashocc_ros.tools.compare --model-config tiny --weights random --b onnxruntime
--engine-path DIR [--dataset DIR [--start K]] [--frames 4]`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from flashocc_ros.config import ConfigError
from flashocc_ros.eval.metrics import MiouMetric
from flashocc_ros.runtime.backend import Backend, BackendError
from flashocc_ros.tools.compare_frames import Frame, dataset_frames, drive_pose, random_frames

LOG = logging.getLogger(__name__)

__all__ = [
    "CompareReport",
    "Frame",
    "FrameDiff",
    "compare_backends",
    "dataset_frames",
    "drive_pose",
    "random_frames",
]

DEFAULT_MAX_GAP_NS = 1_500_000_000  # history reset after a longer gap (history_max_gap_s)


class FrameDiff(NamedTuple):
    """How the two backends differ on one frame (frames in processing order)."""

    sequence: str
    time_s: float | None  # s since the first frame of its sequence (None: no stamp)
    max_abs: float  # max |logit_A - logit_B| of this frame
    mean_abs: float
    agreement: float  # fraction of equal arg-max labels, in [0, 1]
    history_start: bool  # both backends were reset before this frame


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
    per_frame: tuple[FrameDiff, ...] = ()  # one entry per frame, in processing order
    temporal: bool = False  # a temporal model: the table lists every frame

    @property
    def iou_diff(self) -> np.ndarray | None:
        """(cls,) IoU_B - IoU_A against ground truth, None without ground truth."""
        return None if self.iou_a is None or self.iou_b is None else self.iou_b - self.iou_a

    @property
    def worst_frame(self) -> int:
        """Index (processing order) of the frame with the largest max abs difference."""
        if not self.per_frame:
            raise ValueError("the report has no per-frame entries")
        return max(range(len(self.per_frame)), key=lambda i: self.per_frame[i].max_abs)

    @property
    def history_starts(self) -> int:
        """How many times both backends started a fresh history (sequence starts and gaps)."""
        return sum(f.history_start for f in self.per_frame)

    def table(self) -> str:
        lines = [
            f"{self.name_a} vs {self.name_b} over {self.frames} frame(s)",
            f"max abs logit diff  {self.max_abs:.3e}",
            f"mean abs logit diff {self.mean_abs:.3e}",
            f"arg-max agreement   {100 * self.agreement:.4f} %",
        ]
        if self.temporal and self.per_frame:
            lines += self._frame_rows()
        lines.append(
            f"{'class':>6}{'agree IoU %':>13}"
            + (f"{'IoU diff %':>12}" if self.iou_a is not None else "")
        )
        diff = self.iou_diff
        for c, v in enumerate(self.class_agreement_iou):
            row = f"{c:>6}{'n/a' if np.isnan(v) else f'{100 * v:.3f}':>13}"
            if diff is not None:
                row += f"{'n/a' if np.isnan(diff[c]) else f'{100 * diff[c]:+.3f}':>12}"
            lines.append(row)
        return "\n".join(lines)

    def _frame_rows(self) -> list[str]:
        """Worst frame, then one row per frame (`*`: history start), so drift shows."""
        w = self.worst_frame
        lines = [
            f"history starts      {self.history_starts}",
            f"worst frame         {w} (max abs {self.per_frame[w].max_abs:.3e})",
            f"{'frame':>6}  {'sequence':<16}{'t s':>8}{'max abs':>11}{'mean abs':>11}"
            f"{'agree %':>10}",
        ]
        for i, f in enumerate(self.per_frame):
            t = "-" if f.time_s is None else f"{f.time_s:.3f}"
            mark = " *" if f.history_start else ""
            lines.append(
                f"{i:>6}  {f.sequence[:16]:<16}{t:>8}{f.max_abs:>11.3e}{f.mean_abs:>11.3e}"
                f"{100 * f.agreement:>10.4f}{mark}"
            )
        return lines


def compare_backends(
    a: Backend,
    b: Backend,
    frames: Iterable[Frame],
    *,
    temporal: bool = False,
    max_gap_ns: int = DEFAULT_MAX_GAP_NS,
) -> CompareReport:
    """Run both backends on every frame, in the given order, and accumulate the statistics.

    Each frame's `poses` go to both backends. Both are reset before the first frame, when the
    sequence changes and after a gap longer than `max_gap_ns` (as the pipeline does); within a
    sequence the stamps must increase. `temporal`: the backends run a temporal model, so every
    frame must carry poses (ValueError otherwise) and the table lists every frame.
    """
    max_abs, abs_sum, count, voxels, equal = 0.0, 0.0, 0, 0, 0
    inter: np.ndarray | None = None
    union: np.ndarray | None = None
    metric_a: MiouMetric | None = None
    metric_b: MiouMetric | None = None
    per_frame: list[FrameDiff] = []
    clock = _SequenceClock(max_gap_ns)
    for i, frame in enumerate(frames):
        if temporal and frame.poses is None:
            raise ValueError(
                f"frame {i} has no ego poses: a temporal model needs FramePoses with every "
                "frame (random_frames / dataset_frames give them)"
            )
        start, time_s = clock.advance(i, frame)
        if start:
            a.reset()
            b.reset()
        la = a.infer(frame.images, frame.calib, frame.poses).float().cpu()  # (1, X, Y, Z, cls)
        lb = b.infer(frame.images, frame.calib, frame.poses).float().cpu()
        if la.shape != lb.shape:
            raise ValueError(f"logit shapes differ: {tuple(la.shape)} vs {tuple(lb.shape)}")
        diff = (la - lb).abs()
        frame_sum = float(diff.sum(dtype=torch.float64))
        frame_max = float(diff.max())
        max_abs = max(max_abs, frame_max)
        abs_sum += frame_sum
        count += diff.numel()
        num_cls = la.shape[-1]
        ya = la.argmax(-1).numpy()  # (1, X, Y, Z)
        yb = lb.argmax(-1).numpy()
        frame_equal = int((ya == yb).sum())
        equal += frame_equal
        voxels += ya.size
        per_frame.append(
            FrameDiff(
                frame.sequence,
                time_s,
                frame_max,
                frame_sum / diff.numel(),
                frame_equal / ya.size,
                start,
            )
        )
        classes = np.arange(num_cls).reshape(-1, 1)
        ia, ib = ya.reshape(1, -1) == classes, yb.reshape(1, -1) == classes  # (cls, voxels)
        inter = (ia & ib).sum(1) + (0 if inter is None else inter)
        union = (ia | ib).sum(1) + (0 if union is None else union)
        if frame.semantics is not None and frame.mask_camera is not None:
            metric_a = metric_a or MiouMetric(num_cls)
            metric_b = metric_b or MiouMetric(num_cls)
            metric_a.add(ya[0], frame.semantics, frame.mask_camera)
            metric_b.add(yb[0], frame.semantics, frame.mask_camera)
    if not per_frame or inter is None or union is None:
        raise ValueError("no frames to compare")
    with np.errstate(divide="ignore", invalid="ignore"):
        class_iou = np.where(union > 0, inter / np.maximum(union, 1), np.nan)
    return CompareReport(
        a.name,
        b.name,
        len(per_frame),
        max_abs,
        abs_sum / count,
        equal / voxels,
        class_iou,
        None if metric_a is None else metric_a.result().iou,
        None if metric_b is None else metric_b.result().iou,
        tuple(per_frame),
        temporal,
    )


class _SequenceClock:
    """Decides where a history starts: the first frame, a new sequence, a gap > max_gap_ns."""

    def __init__(self, max_gap_ns: int) -> None:
        self.max_gap_ns = max_gap_ns
        self.sequence: str | None = None
        self.first_ns: int | None = None  # stamp of the sequence's first frame
        self.last_ns: int | None = None

    def advance(self, index: int, frame: Frame) -> tuple[bool, float | None]:
        """(history starts here, s since the sequence's first frame) of the next frame."""
        stamp = frame.stamp
        start = frame.sequence != self.sequence
        if not start and stamp is not None and self.last_ns is not None:
            if stamp <= self.last_ns:
                raise ValueError(
                    f"frame {index}: stamp {stamp} ns is not after the previous frame's "
                    f"({self.last_ns} ns) in sequence {frame.sequence!r}; give the frames of a "
                    "sequence in time order"
                )
            start = stamp - self.last_ns > self.max_gap_ns
        if frame.sequence != self.sequence or self.first_ns is None:
            self.first_ns = stamp
        self.sequence, self.last_ns = frame.sequence, stamp
        if stamp is None or self.first_ns is None:
            return start, None
        return start, (stamp - self.first_ns) / 1e9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="flashocc-compare", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--model-config", default="demo")
    parser.add_argument("--weights", default="")
    parser.add_argument("--a", default="torch", help="reference backend (torch)")
    parser.add_argument("--b", default="onnxruntime", help="backend under test")
    parser.add_argument("--engine-path", default="", help="export folder / engine for B")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dataset", type=Path, help="world dataset folder (default: random)")
    parser.add_argument("--start", type=int, default=0, help="first dataset keyframe (0)")
    parser.add_argument("--frames", type=int, default=4, help="frames (consecutive keyframes)")
    parser.add_argument("--max-abs", type=float, help="exit 1 when the max abs diff exceeds it")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from flashocc_ros.node_config import node_config_from_mapping
    from flashocc_ros.runtime.factory import load_model, make_backend
    from flashocc_ros.world.dataset import DatasetError

    try:
        if args.frames < 1:
            raise ValueError(f"--frames must be at least 1, got {args.frames}")
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
            frames: Iterable[Frame] = dataset_frames(args.dataset, cfg, args.frames, args.start)
        else:
            frames = random_frames(cfg, args.frames)
        report = compare_backends(
            backends[0],
            backends[1],
            frames,
            temporal=cfg.temporal,
            max_gap_ns=round(params.history_max_gap_s * 1e9),
        )
    except (ConfigError, BackendError, DatasetError, OSError, ValueError) as err:
        LOG.error("flashocc-compare: %s", err)
        return 2
    LOG.info("%s", report.table())
    return 1 if args.max_abs is not None and report.max_abs > args.max_abs else 0


if __name__ == "__main__":
    sys.exit(main())
