"""Command line for training FlashOCC on world dataset folders (one process or torchrun DDP).
In: `python -m flashocc_ros.tools.train --train DIR --val DIR --out OUT ...`. Out: OUT folder.

Distributed: `torchrun --nproc_per_node K -m flashocc_ros.tools.train ...` (gloo on CPU, nccl on
CUDA). User mistakes print one `error: ...` line and exit with code 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from flashocc_ros.config import ConfigError, load_model_config
from flashocc_ros.model.checkpoint import CheckpointError
from flashocc_ros.train.trainer import TrainConfig, checkpoint_dirs, train
from flashocc_ros.world.dataset import DatasetError

log = logging.getLogger("flashocc_ros.tools.train")


class UsageError(ValueError):
    """A mistake in the command line."""


def _parser() -> argparse.ArgumentParser:
    d = TrainConfig.__dataclass_fields__
    p = argparse.ArgumentParser(prog="python -m flashocc_ros.tools.train", description=__doc__)
    p.add_argument(
        "--train", type=Path, nargs="+", required=True,
        help="training dataset folder(s); several are read as one (same grid and rig)",
    )  # fmt: skip
    p.add_argument("--val", type=Path, help="held-out dataset folder for mIoU (optional)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--model-config", default="demo", help="preset name or YAML (default demo)")
    n = p.add_mutually_exclusive_group(required=True)
    n.add_argument("--steps", type=int, help="optimiser steps")
    n.add_argument("--epochs", type=int, help="passes over the training keyframes")
    p.add_argument("--batch-size", type=int, default=d["batch_size"].default,
                   help="keyframes (x N images) per step and process (default 1)")  # fmt: skip
    p.add_argument("--lr", type=float, default=d["lr"].default, help="peak AdamW lr (1e-3)")
    p.add_argument("--weight-decay", type=float, default=d["weight_decay"].default)
    p.add_argument("--warmup-steps", type=int, default=d["warmup_steps"].default)
    p.add_argument("--min-lr-ratio", type=float, default=d["min_lr_ratio"].default,
                   help="cosine decay floor as a fraction of --lr (default 0.01)")  # fmt: skip
    p.add_argument("--grad-clip", type=float, default=d["grad_clip"].default)
    p.add_argument("--depth-weight", type=float, default=d["depth_weight"].default,
                   help="depth BCE weight, 0 = no depth supervision (default 0.5)")  # fmt: skip
    p.add_argument(
        "--class-balance",
        action="store_true",
        help="official class_balance: CE weighted by 1/ln(voxel count per class)",
    )
    p.add_argument("--lovasz-weight", type=float, default=d["lovasz_weight"].default,
                   help="add the Lovász-softmax loss (a surrogate of 1 - IoU per class; not in "
                        "the official recipe) with this weight (default 0 = off)")  # fmt: skip
    p.add_argument("--no-augment", action="store_true", help="no image / BEV augmentation")
    p.add_argument(
        "--bf16",
        action="store_true",
        help="bfloat16 autocast (fast on AVX-512 CPUs, emulated and slow on AVX2-only ones)",
    )
    p.add_argument("--channels-last", action="store_true", help="channels_last conv layout")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-workers", type=int, default=1, help="DataLoader workers (default 1)")
    p.add_argument("--log-every", type=int, default=d["log_every"].default)
    p.add_argument("--checkpoint-every", type=int, default=d["checkpoint_every"].default,
                   help="steps between resumable checkpoints (0 = end only)")  # fmt: skip
    p.add_argument("--keep-checkpoints", type=int, default=d["keep_checkpoints"].default)
    p.add_argument("--eval-every", type=int, default=0, help="steps between evals (0 = end)")
    p.add_argument("--eval-max-samples", type=int, help="val keyframes per eval (default all)")
    p.add_argument("--init-weights", type=Path, help="start from these weights")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    return p


def _config(a: argparse.Namespace) -> TrainConfig:
    for name, folder in [("--train", f) for f in a.train] + [("--val", a.val)]:
        if folder is not None and not (folder / "world.json").is_file():
            raise UsageError(f"{name} {folder} is not a dataset folder (no world.json)")
    load_model_config(a.model_config)  # ConfigError for an unknown preset
    if a.resume and not checkpoint_dirs(a.out):
        raise UsageError(f"--resume: no checkpoint in {a.out / 'checkpoints'}")
    if not a.resume and checkpoint_dirs(a.out):
        raise UsageError(f"{a.out} already holds checkpoints; pass --resume or a new --out")
    if a.init_weights is not None and not a.init_weights.is_file():
        raise UsageError(f"--init-weights {a.init_weights} does not exist")
    return TrainConfig(
        train_dirs=tuple(a.train), out_dir=a.out, val_dir=a.val, model_config=a.model_config,
        steps=a.steps, epochs=a.epochs, batch_size=a.batch_size, lr=a.lr,
        weight_decay=a.weight_decay, warmup_steps=a.warmup_steps, min_lr_ratio=a.min_lr_ratio,
        grad_clip=a.grad_clip, depth_weight=a.depth_weight, augment=not a.no_augment,
        class_balance=a.class_balance, lovasz_weight=a.lovasz_weight,
        bf16=a.bf16, channels_last=a.channels_last, seed=a.seed, num_workers=a.num_workers,
        log_every=a.log_every, checkpoint_every=a.checkpoint_every,
        keep_checkpoints=a.keep_checkpoints, eval_every=a.eval_every,
        eval_max_samples=a.eval_max_samples, init_weights=a.init_weights, resume=a.resume,
        device=a.device,
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 2 user error)."""
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, format="%(message)s")
    args = _parser().parse_args(argv)
    try:
        if args.threads is not None:
            if args.threads < 1:
                raise UsageError("--threads must be >= 1")
            torch.set_num_threads(args.threads)
        cfg = _config(args)
        command = shlex.join(
            [
                "python",
                "-m",
                __spec__.name if __spec__ else "flashocc_ros.tools.train",
                *(sys.argv[1:] if argv is None else argv),
            ]
        )
        result = train(cfg, command)
    except (UsageError, DatasetError, ConfigError, CheckpointError) as err:
        sys.stderr.write(f"error: {err}\n")
        return 2
    if result.interrupted:
        return 130
    if rank == 0:
        log.info("done: %d steps, weights %s", result.steps, result.weights)
        if result.miou is not None:
            log.info("final mIoU %.2f", 100 * result.miou.miou)
    return 0


if __name__ == "__main__":
    sys.exit(main())
