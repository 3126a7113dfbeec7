"""Weights I/O: official mmcv/EMA `.pth` checkpoints (safely unpickled) and our safetensors files.
In: a checkpoint path (or mapping) + a model. Out: the model with weights loaded strictly.

Never executes pickled code: `torch.load(weights_only=True)` first; if the container holds
objects that it refuses (mmcv `meta`/`optimizer` entries), a restricted unpickler turns every
non-whitelisted global into an inert placeholder and only tensors are kept. Our own format is
safetensors with the ModelConfig embedded as JSON metadata (`save_flashocc` / `load_flashocc`).

Loading our format checks before anything large is allocated: the embedded config's values
against the bounds of `flashocc_ros.config`, the memory the model it describes would take
(counted on PyTorch's meta device, limit MAX_MODEL_BYTES), then every tensor's name, shape and
dtype in the file's header against that model; only then are tensors read. A header whose dtype
was relabelled (F32 data called I32, say) is refused, never loaded as other numbers. Files are
written atomically (`flashocc_ros.safe_io`).
"""

from __future__ import annotations

import itertools
import json
import pickle
import types
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from flashocc_ros.config import ModelConfig, model_config_from_dict
from flashocc_ros.model.flashocc import FlashOCC, build_model
from flashocc_ros.safe_io import atomic_output

FORMAT_NAME = "flashocc_ros"
FORMAT_VERSION = "1"
_SHOW = 5  # keys named per category in error messages
#: The most memory (parameters and buffers) the model described by a weights file's embedded
#: config may take; counted on the meta device before anything is allocated. The largest
#: official model (M2, ResNet-50) takes about 0.2 GB.
MAX_MODEL_BYTES = 4 * 2**30


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
        container = torch.load(
            path,
            map_location="cpu",
            weights_only=False,  # safe: the pickle module below resolves no arbitrary global
            pickle_module=_restricted_pickle_module(),
        )
    except Exception as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {err}") from err
    if isinstance(container, InertObject):
        raise CheckpointError(
            f"{path} is a pickle that holds no checkpoint: it holds a call to "
            f"{container.qualname} (not run)"
        )
    return container


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
    _raise_mismatch(
        "state_dict does not match the model",
        (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shaped)),
    )


def _raise_mismatch(what: str, found: Sequence[tuple[str, list[str]]]) -> None:
    """CheckpointError 'WHAT: 2 missing (e.g. a, b); 1 mis-shaped (...)' unless all are empty."""
    parts = [
        f"{len(keys)} {label} (e.g. {', '.join(keys[:_SHOW])})" for label, keys in found if keys
    ]
    if parts:
        raise CheckpointError(f"{what}: " + "; ".join(parts))


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, Tensor]) -> None:
    """Check, then load with strict=True (dtype cast to the model's by load_state_dict)."""
    check_state_dict(model, state_dict)
    model.load_state_dict(dict(state_dict), strict=True)


def load_checkpoint_into(model: nn.Module, path: str | Path) -> nn.Module:
    """Load an official `.pth`/`.pt` or our `.safetensors` file strictly into `model`; when the
    tensors do not fit, the error names the model presets they do fit."""
    path = Path(path)
    if path.suffix == ".safetensors":
        header, _ = _read_header(path)
        check_header(path, header, model.state_dict())
        state = _read_tensors(path)
    else:
        container = read_checkpoint(path)
        try:
            state = translate_state_dict(extract_state_dict(container))
        except CheckpointError as err:
            raise CheckpointError(f"{path} is a pickle that holds no checkpoint: {err}") from err
    try:
        load_state_dict_strict(model, state)
    except CheckpointError as err:
        fits = presets_that_fit(state)
        hint = (
            f"it fits model_config {' or '.join(fits)}"
            if fits
            else "no model preset fits it (a model YAML with its architecture may)"
        )
        raise CheckpointError(f"{err}; {hint}") from err
    return model


def presets_that_fit(state: Mapping[str, Tensor]) -> list[str]:
    """The model presets whose tensors have exactly the names and shapes of `state` (each
    preset is built on the meta device: nothing large is allocated)."""
    from flashocc_ros.config import PRESETS

    shapes = {k: tuple(v.shape) for k, v in state.items()}
    out = []
    for name, cfg in PRESETS.items():
        try:
            with _ParametersOnMeta():
                skeleton = build_model(cfg)
        except (ValueError, RuntimeError):
            continue
        if {k: tuple(v.shape) for k, v in skeleton.state_dict().items()} == shapes:
            out.append(name)
    return out


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
    with atomic_output(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


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


_HeaderEntry = tuple[str, tuple[int, ...]]  # (safetensors dtype name, shape)
#: What our format stores for each torch dtype a model's state_dict holds.
_STORED_AS = {torch.float32: "F32", torch.int64: "I64", torch.float16: "F16"}
_STORED_AS.update(
    {torch.bfloat16: "BF16", torch.int32: "I32", torch.uint8: "U8", torch.bool: "BOOL"}
)


def _read_header(path: Path) -> tuple[dict[str, _HeaderEntry], dict[str, str]]:
    """{name: (dtype, shape)} and the metadata of a safetensors file; no tensor data is read."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta: dict[str, str] = f.metadata() or {}
            header = {}
            for k in f.keys():  # noqa: SIM118 - safe_open has no __iter__
                sl = f.get_slice(k)
                header[k] = (str(sl.get_dtype()), tuple(int(n) for n in sl.get_shape()))
    except Exception as err:
        raise CheckpointError(f"cannot read safetensors file {path}: {err}") from err
    return header, meta


def _read_tensors(path: Path) -> dict[str, Tensor]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except Exception as err:
        raise CheckpointError(f"cannot read safetensors file {path}: {err}") from err
    return _dequantize(tensors)


def check_header(
    path: Path, header: Mapping[str, _HeaderEntry], own: Mapping[str, Tensor]
) -> None:
    """CheckpointError unless the file's header holds exactly what `save_flashocc` writes for
    the tensors `own` (a state_dict, real or on the meta device): each name with its shape and
    dtype, or its int8 `.q8` weight and float32 `.q8_scale` pair. Reads no tensor data."""
    missing: list[str] = []
    shaped: list[str] = []
    typed: list[str] = []
    seen: set[str] = set()

    def entry(name: str, dtype: str, shape: tuple[int, ...]) -> None:
        seen.add(name)
        got_dtype, got_shape = header[name]
        if got_shape != shape:
            shaped.append(f"{name}: file {got_shape} vs model {shape}")
        elif got_dtype != dtype:
            typed.append(f"{name}: file says {got_dtype}, the format stores {dtype}")

    for k, v in own.items():
        shape = tuple(v.shape)
        if k in header:
            entry(k, _STORED_AS.get(v.dtype, str(v.dtype)), shape)
        elif k + _Q8 in header and v.is_floating_point() and shape:
            entry(k + _Q8, "I8", shape)
            if k + _Q8_SCALE in header:
                entry(k + _Q8_SCALE, "F32", shape[:1])
            else:
                missing.append(k + _Q8_SCALE)
        else:
            missing.append(k)
    unexpected = [k for k in header if k not in seen]
    _raise_mismatch(
        f"{path} does not hold the tensors of its model",
        (
            ("missing", missing),
            ("unexpected", unexpected),
            ("mis-shaped", shaped),
            ("with another dtype (header relabelled or file corrupt)", typed),
        ),
    )


class _ParametersOnMeta(TorchFunctionMode):
    """Within the block, the factories that layers create their parameters and buffers with
    (`empty`, `zeros`, `ones`, ...) make meta tensors, so building a model allocates nothing.
    Not `with torch.device("meta")`: that also sends the frustum's `arange` to the meta device,
    whose first call imports torch._refs (about 3 s); the frustum is small and stays real."""

    _FACTORIES = frozenset(
        {torch.empty, torch.empty_strided, torch.zeros, torch.ones, torch.full}
        | {torch.rand, torch.randn, torch.randint}
    )

    def __torch_function__(
        self,
        func: Any,
        types: Any,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = dict(kwargs or {})
        if func in self._FACTORIES and kwargs.get("device") is None:
            kwargs["device"] = "meta"
        return func(*args, **kwargs)


def _skeleton(cfg: ModelConfig, path: Path) -> FlashOCC:
    """The model `cfg` describes with its parameters on the meta device (nothing large is
    allocated); CheckpointError when it would take more than MAX_MODEL_BYTES."""
    try:
        with _ParametersOnMeta():
            skeleton = build_model(cfg)
    except (ValueError, RuntimeError) as err:  # a combination the network cannot build
        raise CheckpointError(f"{path}: invalid embedded model_config: {err}") from err
    tensors = itertools.chain(skeleton.parameters(), skeleton.buffers())
    size = sum(t.numel() * t.element_size() for t in tensors)
    if size > MAX_MODEL_BYTES:
        raise CheckpointError(
            f"{path}: its model_config ({cfg.name}) describes a model of {size / 2**30:.1f} GiB; "
            f"at most {MAX_MODEL_BYTES / 2**30:.0f} GiB are loaded"
        )
    return skeleton


def load_flashocc(path: str | Path, device: str = "cpu") -> tuple[FlashOCC, ModelConfig]:
    """Read our safetensors file -> (model in eval mode, its ModelConfig).

    Order: header and config (bounds-checked), the model's size on the meta device, the header
    against that model, then the tensors and the real model."""
    path = Path(path)
    header, meta = _read_header(path)
    if meta.get("format") != FORMAT_NAME or "model_config" not in meta:
        raise CheckpointError(f"{path} is not a {FORMAT_NAME} weights file (no model_config)")
    try:
        cfg = model_config_from_dict(json.loads(meta["model_config"]))
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{path}: invalid embedded model_config: {err}") from err
    check_header(path, header, _skeleton(cfg, path).state_dict())
    tensors = _read_tensors(path)
    model = build_model(cfg)
    load_state_dict_strict(model, tensors)
    return model.to(device).eval(), cfg


__all__ = [
    "MAX_MODEL_BYTES",
    "CheckpointError",
    "build_model",
    "check_header",
    "check_state_dict",
    "extract_state_dict",
    "load_checkpoint_into",
    "load_flashocc",
    "read_checkpoint",
    "save_flashocc",
    "translate_state_dict",
]
