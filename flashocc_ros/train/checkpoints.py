"""Resumable training checkpoints: weights + optimizer/scheduler/RNG state per step folder.
In: the model, optimizer, scheduler and step. Out: <out>/checkpoints/step_XXXXXXX/ folders.

Each folder holds model.safetensors (our format, ModelConfig embedded) and trainer_state.pt; a
folder is written under a temporary name and renamed when complete, so a crash never leaves a
half checkpoint that `checkpoint_dirs` would offer for resuming.

trainer_state.pt holds only plain containers, numbers, strings and tensors (the numpy RNG state is
stored as a tensor), so `load_state` reads it with `torch.load(weights_only=True)`: a crafted file
can never run code, it is refused with one line. States written before this format (a numpy array
inside) load too: only numpy's array-rebuilding globals are allowed for them.
"""

from __future__ import annotations

import pickle
import random
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flashocc_ros.model.checkpoint import CheckpointError, save_flashocc
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
    """The RNG states of torch, numpy and Python as plain values and tensors (no numpy objects,
    so `torch.load(weights_only=True)` reads them back)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]
    version, words, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),  # MT19937 words < 2**32
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": [int(version), [int(w) for w in words], gauss_next],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what `rng_state` returned (or the numpy-array form of older trainer states);
    CheckpointError when it is malformed."""
    try:
        _set_rng_state(state)
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as err:
        raise CheckpointError(f"the trainer state's RNG state is malformed: {err}") from err


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    if isinstance(np_state, Mapping):
        np_state = (
            np_state["kind"],
            np.asarray(np_state["keys"].numpy(), dtype=np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    np.random.set_state(np_state)
    version, words, gauss_next = state["python"]
    random.setstate((version, tuple(words), gauss_next))
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


#: The only globals a trainer state written before the plain format holds: the numpy array of
#: numpy's RNG state. They rebuild an array from bytes and never call anything else.
_NP_CORE: Any = getattr(np, "_core", None) or np.core  # numpy 2 | numpy 1.x
_LEGACY_NUMPY_GLOBALS: list[Any] = [
    _NP_CORE.multiarray._reconstruct,
    np.ndarray,
    np.dtype,
    type(np.dtype(np.uint32)),
]
_STATE_KEYS = ("step", "optimizer", "scheduler", "rng")


def load_state(path: Path) -> dict[str, Any]:
    """Read a trainer_state.pt without ever running code from it.

    `torch.load(weights_only=True)` refuses any global outside tensors and plain containers; a
    file that names one (a crafted pickle that would call `os.system`, say) is refused with a
    CheckpointError in the user's terms, as is one that is no pickle or lacks the state's keys.
    """
    try:
        with torch.serialization.safe_globals(_LEGACY_NUMPY_GLOBALS):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        foreign = _foreign_globals(path) if isinstance(err, pickle.UnpicklingError) else []
        if foreign:
            raise CheckpointError(
                f"{path} is a pickle that holds no checkpoint: it names {', '.join(foreign[:3])}, "
                "which a trainer state never holds (not loaded, nothing in it was run)"
            ) from err
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path} is not a readable trainer state: {first}") from err
    if not isinstance(state, dict) or any(k not in state for k in _STATE_KEYS):
        found = sorted(map(str, state)) if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"{path} holds no trainer state (expected keys {', '.join(_STATE_KEYS)}; "
            f"found {found})"
        )
    if not isinstance(state["step"], int) or state["step"] < 0:
        raise CheckpointError(f"{path}: 'step' is {state['step']!r}, not a step count")
    for key in ("optimizer", "scheduler", "rng"):
        if not isinstance(state[key], dict):
            raise CheckpointError(f"{path}: {key!r} is a {type(state[key]).__name__}, not a state")
    return state


def _foreign_globals(path: Path) -> list[str]:
    """The globals (code objects) a pickle names besides the allowed ones, read from its
    opcodes: nothing is executed. Empty when there are none or the file cannot be scanned."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # not a torch zip / pickle at all: the caller says so
        return []
    allowed = {f"{g.__module__}.{g.__qualname__}" for g in _LEGACY_NUMPY_GLOBALS}
    return [n for n in names if n not in allowed]


__all__ = [
    "STATE_FILE",
    "WEIGHTS_FILE",
    "checkpoint_dirs",
    "load_state",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
]
