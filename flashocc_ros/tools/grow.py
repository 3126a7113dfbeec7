"""Grows trained weights into a wider / deeper configuration that computes the same thing
(flashocc_ros/train/grow.py), so a model that underfits can keep training with more capacity.
In: weights (.safetensors), a target model config (preset or YAML) that differs from the weights'
own config only in context_channels, bev_num_layers, bev_neck_channels, head_channels (each at
least as large). Out: the grown weights; the command checks they predict what the input did.

`python -m flashocc_ros.tools.grow --weights W.safetensors --to wide.yaml --out grown.safetensors`
with wide.yaml e.g. `{base: demo, context_channels: 64, bev_neck_channels: 128}`;
then `tools.train --model-config wide.yaml --init-weights grown.safetensors ...`. Weights with a
folded logit adjustment should have it removed first (`adjust_logits --remove`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from flashocc_ros.config import ConfigError, load_model_config
from flashocc_ros.model.checkpoint import CheckpointError, load_flashocc, save_flashocc
from flashocc_ros.model.preprocess import rig_calibration
from flashocc_ros.rig import nuscenes_like_rig
from flashocc_ros.train.grow import GrowError, grow_model

LOG = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flashocc-grow", description=__doc__)
    parser.add_argument("--weights", type=Path, required=True, help="trained .safetensors")
    parser.add_argument("--to", required=True, help="target model config: preset name or YAML")
    parser.add_argument("--out", type=Path, required=True, help="grown .safetensors")
    parser.add_argument("--seed", type=int, default=0, help="initialisation of the new channels")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        model, old = load_flashocc(args.weights)
        new = load_model_config(args.to)
        grown = grow_model(model, old, new, seed=args.seed)
    except (CheckpointError, ConfigError, GrowError, OSError) as err:
        sys.stderr.write(f"error: {err}\n")
        return 2
    # The promise, checked on this model: same logits on one random frame of a nuScenes-like rig.
    gen = torch.Generator().manual_seed(args.seed)
    images = torch.randn(1, old.num_cameras, 3, *old.input_size, generator=gen)
    calib = rig_calibration(nuscenes_like_rig(), old.input_size)
    with torch.no_grad():
        diff = (grown(images, calib) - model(images, calib)).abs().max().item()
    if diff > 1e-3:
        sys.stderr.write(f"error: the grown model's logits differ by {diff:.3g}; not written\n")
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_flashocc(grown, new, args.out)
    params = (sum(p.numel() for p in m.parameters()) for m in (model, grown))
    LOG.info(
        "grown %s -> %s (%d -> %d parameters, logits equal within %.1e): %s",
        old.name,
        args.to,
        *params,
        diff,
        args.out,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
