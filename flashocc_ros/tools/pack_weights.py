"""Packs trained weights for shipping: int8 weight storage, checked on held-out data.
In: a trained .safetensors (+ its train_record.json) and a held-out dataset folder.
Out: the packed .safetensors and a JSON record next to it (training facts + both mIoUs).

`python -m flashocc_ros.tools.pack_weights --weights RUN/model.safetensors \
    --record RUN/train_record.json --val data/val --out flashocc_ros/weights/demo.safetensors`
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
from flashocc_ros.train.data import OccupancyDataset
from flashocc_ros.train.trainer import evaluate
from flashocc_ros.world.dataset import DatasetError

LOG = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flashocc-pack-weights", description=__doc__)
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--record", type=Path, help="train_record.json of the run")
    parser.add_argument("--val", type=Path, required=True, help="held-out dataset folder")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        model, cfg = load_flashocc(args.weights)
        data = OccupancyDataset(args.val, cfg, train=False)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        save_flashocc(model, cfg, args.out, weight_bits=8)
        packed, _ = load_flashocc(args.out)
    except (CheckpointError, DatasetError, OSError) as err:
        sys.stderr.write(f"error: {err}\n")
        return 2
    torch.manual_seed(0)
    device = torch.device("cpu")
    full = evaluate(model, data, device)
    small = evaluate(packed, data, device)
    record = json.loads(args.record.read_text()) if args.record else {}
    record["packed"] = {
        "file": args.out.name,
        "bytes": args.out.stat().st_size,
        "storage": "int8 per-channel weights (weight-only), float32 elsewhere",
        "heldout_frames": len(data),
        "heldout_miou_float32_weights": full.miou,
        "heldout_miou_packed_weights": small.miou,
        "heldout_per_class_iou_packed": {
            n: (None if v != v else float(v)) for n, v in zip(CLASS_NAMES, small.iou, strict=True)
        },
    }
    record_path = args.out.with_suffix(".json")
    record_path.write_text(json.dumps(record, indent=1) + "\n")
    LOG.info("%s", small.table())
    LOG.info(
        "packed %s (%.1f MB): held-out mIoU %.2f %% (float32 weights %.2f %%), record %s",
        args.out,
        args.out.stat().st_size / 1e6,
        100 * small.miou,
        100 * full.miou,
        record_path,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
