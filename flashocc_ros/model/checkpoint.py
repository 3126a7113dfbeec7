"""Weights I/O: official mmcv/EMA `.pth` checkpoints (safely unpickled) and our safetensors files.
In: a checkpoint path (or mapping) + a model. Out: the model with weights loaded strictly.

Never executes pickled code: `torch.load(weights_only=True)` first; if the container holds
objects that it refuses (mmcv `meta`/`optimizer` entries), a restricted unpickler turns every
non-whitelisted global into an inert placeholder and only tensors are kept. Our own format is
safetensors with the ModelConfig embedded as JSON metadata (`save_flashocc` / `load_flashocc`).
"""

from __future__ import annotations

import json
import pickle
import types
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from flashocc_ros.config import ModelConfig, model_config_from_dict
from flashocc_ros.model.flashocc import FlashOCC, build_model

FORMAT_NAME = "flashocc_ros"
FORMAT_VERSION = "1"
_SHOW = 5  # keys named per category in error messages


class CheckpointError(ValueError):
    """A checkpoint cannot be read or does not match the model."""


# --- safe unpickling -----------------------------------------------------------------------------
class InertObject:
    """Stand-in for any pickled object whose class is not whitelisted; it never runs code."""

    qualname = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> InertObject:
        return super().__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, value: Any) -> None:
        pass

    def extend(self, values: Any) -> None:
        pass

    def __repr__(self) -> str:
        return f"<inert {self.qualname}>"


_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,
    ("torch", "Tensor"): torch.Tensor,
    ("torch", "Size"): torch.Size,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("builtins", "complex"): complex,
}
for _name in ("float32", "float16", "bfloat16", "float64", "int64", "int32", "uint8", "bool"):
    _SAFE_GLOBALS[("torch", _name)] = getattr(torch, _name)


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        safe = _SAFE_GLOBALS.get((module, name))
        if safe is not None:
            return safe
        return type(name, (InertObject,), {"qualname": f"{module}.{name}"})


def _restricted_pickle_module() -> types.ModuleType:
    mod = types.ModuleType("flashocc_restricted_pickle")
    mod.Unpickler = _RestrictedUnpickler  # type: ignore[attr-defined]

    def load(file: Any, **kwargs: Any) -> Any:
        return _RestrictedUnpickler(file, **kwargs).load()

    mod.load = load  # type: ignore[attr-defined]
    return mod


def read_checkpoint(path: str | Path) -> Any:
    """Unpickle a `.pth` file without executing code (tensors on the CPU)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass  # objects weights_only refuses (mmcv meta); retry with inert placeholders
    except Exception as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {err}") from err
    try:
        return torch.load(
            path,
            map_location="cpu",
            weights_only=False,  # safe: the pickle module below resolves no arbitrary global
            pickle_module=_restricted_pickle_module(),
        )
    except Exception as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {err}") from err


# --- translation ---------------------------------------------------------------------------------
def extract_state_dict(container: Any) -> dict[str, Tensor]:
    """The tensors of an mmcv `{state_dict, meta, optimizer}`, EMA `{epoch, state_dict,
    updates}` or bare state dict. Raises CheckpointError for anything else."""
    if not isinstance(container, Mapping):
        raise CheckpointError(f"checkpoint is a {type(container).__name__}, not a mapping")
    sd = container.get("state_dict", container)
    if not isinstance(sd, Mapping):
        raise CheckpointError("checkpoint 'state_dict' is not a mapping")
    bad = [k for k, v in sd.items() if not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(f"state_dict has {len(bad)} non-tensor entries, e.g. {bad[:_SHOW]}")
    return {str(k): v for k, v in sd.items()}


def translate_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Official (mmdet3d) key names -> ours. Pure: only strips a DataParallel `module.` prefix,
    since module names follow the official keys."""
    prefix = "module."
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        return {k[len(prefix) :]: v for k, v in state_dict.items()}
    return dict(state_dict)


def check_state_dict(model: nn.Module, state_dict: Mapping[str, Tensor]) -> None:
    """Raise CheckpointError naming missing / unexpected / mis-shaped keys (first few + counts)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shaped = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state_dict.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    parts = [
        f"{len(keys)} {label} (e.g. {', '.join(keys[:_SHOW])})"
        for label, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("mis-shaped", shaped),
        )
        if keys
    ]
    if parts:
        raise CheckpointError("state_dict does not match the model: " + "; ".join(parts))


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, Tensor]) -> None:
    """Check, then load with strict=True (dtype cast to the model's by load_state_dict)."""
    check_state_dict(model, state_dict)
    model.load_state_dict(dict(state_dict), strict=True)


def load_checkpoint_into(model: nn.Module, path: str | Path) -> nn.Module:
    """Load an official `.pth`/`.pt` or our `.safetensors` file strictly into `model`."""
    path = Path(path)
    if path.suffix == ".safetensors":
        state, _ = _read_safetensors(path)
    else:
        state = translate_state_dict(extract_state_dict(read_checkpoint(path)))
    load_state_dict_strict(model, state)
    return model


# --- our format ----------------------------------------------------------------------------------
_Q8 = ".q8"  # suffix of an int8 weight stored per output channel
_Q8_SCALE = ".q8_scale"  # its float32 scale, one per output channel
_Q8_MIN_NUMEL = 1024  # smaller tensors (biases, norms, tiny kernels) stay float32


def save_flashocc(
    model: nn.Module, cfg: ModelConfig, path: str | Path, *, weight_bits: int = 32
) -> None:
    """Write weights + the ModelConfig (JSON metadata) as safetensors.

    `weight_bits=8` stores every conv/linear weight of at least 1024 elements as int8 with one
    float32 scale per output channel (weight-only, symmetric, max-abs); loading dequantizes.
    It cuts the file to about a quarter (used for the shipped demo weights, size-capped).
    """
    if weight_bits not in (8, 32):
        raise ValueError(f"weight_bits must be 8 or 32, got {weight_bits}")
    tensors: dict[str, Tensor] = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu().contiguous().clone()
        if (
            weight_bits == 8
            and v.is_floating_point()
            and v.dim() >= 2
            and v.numel() >= _Q8_MIN_NUMEL
        ):
            flat = v.float().reshape(v.shape[0], -1)  # (C_out, rest)
            scale = (flat.abs().amax(dim=1) / 127.0).clamp(min=1e-12)  # (C_out,)
            q = torch.round(flat / scale[:, None]).clamp(-127, 127).to(torch.int8)
            tensors[k + _Q8] = q.reshape(v.shape).contiguous()
            tensors[k + _Q8_SCALE] = scale.contiguous()
        else:
            tensors[k] = v
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "model_config": json.dumps(cfg.to_dict()),
        "weights": "int8 per-channel (weight-only)" if weight_bits == 8 else "float32",
    }
    save_file(tensors, str(path), metadata=meta)


def _dequantize(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """Turn `<key>.q8` + `<key>.q8_scale` pairs back into float32 `<key>` tensors."""
    out: dict[str, Tensor] = {}
    for k, v in tensors.items():
        if k.endswith(_Q8_SCALE):
            continue
        if k.endswith(_Q8):
            base = k[: -len(_Q8)]
            scale = tensors.get(base + _Q8_SCALE)
            if scale is None or scale.shape != (v.shape[0],):
                raise CheckpointError(f"quantised weight {base} has no matching scale")
            shape = (v.shape[0],) + (1,) * (v.dim() - 1)
            out[base] = v.float() * scale.float().reshape(shape)
        else:
            out[k] = v
    return out


def _read_safetensors(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta: dict[str, str] = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except Exception as err:
        raise CheckpointError(f"cannot read safetensors file {path}: {err}") from err
    return _dequantize(tensors), meta


def load_flashocc(path: str | Path, device: str = "cpu") -> tuple[FlashOCC, ModelConfig]:
    """Read our safetensors file -> (model in eval mode, its ModelConfig)."""
    path = Path(path)
    tensors, meta = _read_safetensors(path)
    if meta.get("format") != FORMAT_NAME or "model_config" not in meta:
        raise CheckpointError(f"{path} is not a {FORMAT_NAME} weights file (no model_config)")
    try:
        cfg = model_config_from_dict(json.loads(meta["model_config"]))
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{path}: invalid embedded model_config: {err}") from err
    model = build_model(cfg)
    load_state_dict_strict(model, tensors)
    return model.to(device).eval(), cfg


__all__ = [
    "CheckpointError",
    "build_model",
    "check_state_dict",
    "extract_state_dict",
    "load_checkpoint_into",
    "load_flashocc",
    "read_checkpoint",
    "save_flashocc",
    "translate_state_dict",
]
