"""Resumable training checkpoints: weights + optimizer/scheduler/RNG state per step folder.
In: the model, optimizer, scheduler and step. Out: <out>/checkpoints/step_XXXXXXX/ folders.

Each folder holds model.safetensors (our format, ModelConfig embedded) and trainer_state.pt; a
folder is written under a temporary name and renamed when complete, so a crash never leaves a
half checkpoint that `checkpoint_dirs` would offer for resuming.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flashocc_ros.model.checkpoint import save_flashocc
from flashocc_ros.model.flashocc import FlashOCC

STATE_FILE = "trainer_state.pt"
WEIGHTS_FILE = "model.safetensors"


def checkpoint_dirs(out_dir: Path) -> list[Path]:
    """Complete checkpoints in out_dir/checkpoints, oldest first."""
    root = out_dir / "checkpoints"
    if not root.is_dir():
        return []
    found = [
        p
        for p in root.glob("step_*")
        if (p / WEIGHTS_FILE).is_file() and (p / STATE_FILE).is_file()
    ]
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    out_dir: Path,
    step: int,
    net: FlashOCC,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    keep: int,
) -> Path:
    """Write step_XXXXXXX/{model.safetensors, trainer_state.pt} atomically; prune old ones."""
    root = out_dir / "checkpoints"
    final = root / f"step_{step:07d}"
    tmp = root / f".tmp_step_{step:07d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_flashocc(net, net.cfg, tmp / WEIGHTS_FILE)
    torch.save(
        {
            "step": step,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": rng_state(),
        },
        tmp / STATE_FILE,
    )
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in checkpoint_dirs(out_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_state(path: Path) -> dict[str, Any]:
    # Our own file: optimizer tensors + numpy/python RNG states (not plain tensors), so the
    # numpy globals must be allowed; never use this on files of unknown origin.
    state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    return state


__all__ = [
    "STATE_FILE",
    "WEIGHTS_FILE",
    "checkpoint_dirs",
    "load_state",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
]
