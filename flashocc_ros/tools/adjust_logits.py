"""Picks and folds a post-hoc logit adjustment (flashocc_ros/train/prior.py) into trained weights.
In: trained weights, the TRAINING dataset folder (never the held-out one), candidate taus.
Out: adjusted weights (.safetensors) and a record JSON (the sweep, the chosen tau, the prior).

`python -m flashocc_ros.tools.adjust_logits --weights RUN/model.safetensors --train data/train \
    --out RUN/adjusted.safetensors [--record RUN/train_record.json] [--frames 48]`
The record written next to `--out` is the given training record plus a `logit_adjustment`
entry, ready for `pack_weights --record`.
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
from flashocc_ros.train.prior import class_log_prior, fold_class_bias, sweep_logit_adjustment
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
    parser.add_argument(
        "--train", type=Path, nargs="+", required=True, help="training dataset folder(s)"
    )
    parser.add_argument("--out", type=Path, required=True, help="adjusted .safetensors")
    parser.add_argument("--record", type=Path, help="train_record.json to extend")
    parser.add_argument("--taus", type=_taus, default=DEFAULT_TAUS, help="comma separated")
    parser.add_argument("--frames", type=int, default=48, help="training keyframes to score")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CPU)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.frames < 1:
        sys.stderr.write("error: --frames must be >= 1\n")
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
    results = sweep_logit_adjustment(model, data, prior, args.taus, args.frames, args.bf16)
    for tau, res in results.items():
        LOG.info("tau %.2f: training-frame mIoU %.2f %%", tau, 100 * res.miou)
    best = max(results, key=lambda t: results[t].miou)
    fold_class_bias(model, -best * prior)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_flashocc(model, cfg, args.out)
    record["logit_adjustment"] = {
        "command": "python -m flashocc_ros.tools.adjust_logits " + " ".join(argv or sys.argv[1:]),
        "chosen_tau": best,
        "chosen_on": f"{len(data)} keyframes of {', '.join(map(str, args.train))} "
        f"(training scenes), {min(args.frames, len(data))} scored",
        "training_frame_miou_by_tau": {f"{t:g}": r.miou for t, r in results.items()},
        "class_voxel_counts": {n: int(c) for n, c in zip(CLASS_NAMES, counts, strict=True)},
    }
    record_path = args.out.with_suffix(".json")
    record_path.write_text(json.dumps(record, indent=1) + "\n")
    LOG.info(
        "tau %.2f chosen (training-frame mIoU %.2f %%): %s, record %s",
        best,
        100 * results[best].miou,
        args.out,
        record_path,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
