"""Picks and folds a post-hoc logit adjustment (flashocc_ros/train/prior.py) into trained weights.
In: trained weights, the TRAINING dataset folder (never the held-out one), candidate taus.
Out: adjusted weights (.safetensors) and a record JSON (the sweep, the chosen tau, the prior,
with `--per-class` the fitted class biases).

`python -m flashocc_ros.tools.adjust_logits --weights RUN/model.safetensors --train data/train \
    --out RUN/adjusted.safetensors [--record RUN/train_record.json] [--frames 48] [--per-class]`
The record written next to `--out` is the given training record plus a `logit_adjustment`
entry, ready for `pack_weights --record`.

`--remove RECORD` undoes a folded adjustment instead (no `--train`): weights trained further must
start without it (`--init-weights` the result), and get a fresh fit afterwards.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

from flashocc_ros.classes import CLASS_NAMES
from flashocc_ros.model.checkpoint import CheckpointError, load_flashocc, save_flashocc
from flashocc_ros.train.data import OccupancyDataset, class_counts
from flashocc_ros.train.prior import (
    biased_miou,
    class_log_prior,
    fit_class_bias,
    fold_class_bias,
    recorded_bias,
    visible_logits,
)
from flashocc_ros.world.dataset import DatasetError

LOG = logging.getLogger(__name__)
DEFAULT_TAUS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)


def _taus(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--taus wants numbers like 0,0.2,0.4: {text!r}"
        ) from None
    if not values or any(v < 0 or v > 2 for v in values):
        raise argparse.ArgumentTypeError("--taus must be in [0, 2]")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flashocc-adjust-logits", description=__doc__)
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--train", type=Path, nargs="+", help="training dataset folder(s)")
    parser.add_argument("--out", type=Path, required=True, help="adjusted .safetensors")
    parser.add_argument("--record", type=Path, help="train_record.json to extend")
    parser.add_argument("--taus", type=_taus, default=DEFAULT_TAUS, help="comma separated")
    parser.add_argument("--frames", type=int, default=48, help="training keyframes to score")
    parser.add_argument(
        "--bf16", action="store_true", help="bfloat16 autocast (fast on AVX-512 CPUs only)"
    )
    parser.add_argument(
        "--per-class",
        action="store_true",
        help="after tau, fit each class's bias (coordinate ascent on training-frame mIoU)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="--per-class rounds over classes")
    parser.add_argument(
        "--remove",
        type=Path,
        metavar="RECORD",
        help="instead of fitting: subtract the adjustment that RECORD (the weights' .json, e.g. "
        "flashocc_ros/weights/demo.json) says was folded into --weights, to train them further",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.remove is not None:
        return _remove(args.weights, args.remove, args.out)
    if not args.train:
        sys.stderr.write("error: --train is required (or --remove RECORD)\n")
        return 2
    if args.frames < 1 or args.rounds < 1:
        sys.stderr.write("error: --frames and --rounds must be >= 1\n")
        return 2
    try:
        model, cfg = load_flashocc(args.weights)
        data = OccupancyDataset(args.train, cfg, train=False)
        record = json.loads(args.record.read_text()) if args.record else {}
    except (CheckpointError, DatasetError, OSError, json.JSONDecodeError) as err:
        sys.stderr.write(f"error: {err}\n")
        return 2
    counts = class_counts(data.data, cfg.num_classes)
    prior = class_log_prior(counts)
    torch.manual_seed(0)
    vis = visible_logits(model, data, args.frames, args.bf16)
    results = {t: biased_miou(vis, -t * prior) for t in args.taus}
    for tau, res in results.items():
        LOG.info("tau %.2f: training-frame mIoU %.2f %%", tau, 100 * res.miou)
    best = max(results, key=lambda t: results[t].miou)
    bias, miou = -best * prior, results[best].miou
    per_class = {}
    if args.per_class:
        bias, history = fit_class_bias(vis, bias, rounds=args.rounds)
        miou = history[-1]
        LOG.info(
            "per-class fit: training-frame mIoU by round %s %%",
            [round(100 * m, 2) for m in history],
        )
        per_class = {
            "class_bias": {n: float(b) for n, b in zip(CLASS_NAMES, bias, strict=True)},
            "training_frame_miou_by_round": history,
        }
    del vis
    fold_class_bias(model, bias)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_flashocc(model, cfg, args.out)
    record["logit_adjustment"] = {
        "command": "python -m flashocc_ros.tools.adjust_logits " + " ".join(argv or sys.argv[1:]),
        "chosen_tau": best,
        "chosen_on": f"{len(data)} keyframes of {', '.join(map(str, args.train))} "
        f"(training scenes), {min(args.frames, len(data))} scored",
        "training_frame_miou_by_tau": {f"{t:g}": r.miou for t, r in results.items()},
        "class_voxel_counts": {n: int(c) for n, c in zip(CLASS_NAMES, counts, strict=True)},
        **per_class,
    }
    record_path = args.out.with_suffix(".json")
    record_path.write_text(json.dumps(record, indent=1) + "\n")
    LOG.info(
        "tau %.2f chosen%s (training-frame mIoU %.2f %%): %s, record %s",
        best,
        ", then per-class biases" if args.per_class else "",
        100 * miou,
        args.out,
        record_path,
    )
    return 0


def _remove(weights: Path, record_path: Path, out: Path) -> int:
    """--remove: `weights` minus the bias its record's `logit_adjustment` folded in, to `out`."""
    try:
        model, cfg = load_flashocc(weights)
        adjustment = json.loads(record_path.read_text())["logit_adjustment"]
        bias = recorded_bias(adjustment)
    except (CheckpointError, OSError, json.JSONDecodeError) as err:
        sys.stderr.write(f"error: {err}\n")
        return 2
    except (KeyError, TypeError, ValueError) as err:
        sys.stderr.write(f"error: {record_path} has no usable logit_adjustment entry ({err!r})\n")
        return 2
    try:
        fold_class_bias(model, -bias)
    except ValueError as err:
        sys.stderr.write(f"error: {record_path} does not fit {weights}: {err}\n")
        return 2
    out.parent.mkdir(parents=True, exist_ok=True)
    save_flashocc(model, cfg, out)
    LOG.info("removed the logit adjustment of %s from %s: %s", record_path, weights, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
