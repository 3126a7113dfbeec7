"""Explains a trained model's mIoU on a dataset folder: per-class precision/recall and misses,
mIoU by distance, depth accuracy, the mIoU with perfect depth, and what a one-voxel slip costs
each class (flashocc_ros/train/diagnose.py).
In: weights (.safetensors or a training checkpoint) of a single-frame model, a dataset folder
with labels (and depth maps, `generate --depth`, for the depth half). Out: a printed report.

`python -m flashocc_ros.tools.diagnose --weights W --data DIR [--frames N] [--bf16]`
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from flashocc_ros.classes import CLASS_NAMES
from flashocc_ros.model.checkpoint import load_flashocc
from flashocc_ros.train.data import OccupancyDataset
from flashocc_ros.train.diagnose import class_table, diagnose


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flashocc-diagnose", description=__doc__)
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, help="dataset folder with labels")
    parser.add_argument("--frames", type=int, help="first N keyframes (default: all)")
    parser.add_argument(
        "--bf16", action="store_true", help="bfloat16 autocast (fast on AVX-512 CPUs only)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.frames is not None and args.frames < 1:
        sys.stderr.write("error: --frames must be >= 1\n")
        return 2
    try:
        net, cfg = load_flashocc(args.weights)
        data = OccupancyDataset(args.data, cfg, train=False)
        data.with_depth = data.has_depth  # the depth half only where the folder has depth maps
        result = diagnose(net, data, args.frames, args.bf16)
    except (ValueError, OSError) as err:  # CheckpointError, DatasetError, a 4D model
        sys.stderr.write(f"error: {err}\n")
        return 2
    lines = [
        f"{args.weights} on {result.model.num_frames} keyframes of {args.data}",
        "",
        result.model.table(),
        result.rings.line(),
        "",
    ]
    columns = {"model %": result.model}
    if result.depth is None or result.oracle is None:
        lines.append("no depth maps in the dataset: depth accuracy and true-depth mIoU skipped")
    else:
        lines.append(result.depth.line())
        columns["true depth %"] = result.oracle
    columns["one voxel off %"] = result.shifted
    lines += [
        "per-class IoU: the model; with the target depth in every feature cell that has one",
        "(same weights); the ground truth against itself moved one voxel in x and in y (what",
        "a one-voxel slip alone costs):",
        class_table(columns, CLASS_NAMES),
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
