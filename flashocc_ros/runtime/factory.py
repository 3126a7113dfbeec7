"""Builds the model, its weights and a backend from the node's parameters (one place for all).
In: NodeConfig (or its model/weights/backend fields). Out: a ready OccupancyPipeline.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from flashocc_ros.config import ConfigError, ModelConfig, load_model_config
from flashocc_ros.model.preprocess import preprocess_images_fast
from flashocc_ros.node_config import NodeConfig
from flashocc_ros.runtime.backend import Backend, BackendError, Precision, TorchBackend
from flashocc_ros.runtime.pipeline import OccupancyPipeline, Preprocessor

LOG = logging.getLogger(__name__)

#: Weights shipped with the package for the `demo` configuration.
DEMO_WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "demo.safetensors"
#: `weights` value that asks for seeded random weights (tests, smoke runs); never a default.
RANDOM_WEIGHTS = "random"


def load_model(model_config: str, weights: str) -> tuple[ModelConfig, nn.Module]:
    """The network for `model_config` with `weights` loaded strictly.

    `weights` is a path (.pth/.pt official or .safetensors ours), "" for the shipped demo
    weights, or "random" for seeded random weights.
    """
    from flashocc_ros.model.checkpoint import CheckpointError
    from flashocc_ros.model.flashocc import build_model

    try:
        return _load_model(model_config, weights, build_model)
    except (CheckpointError, OSError) as err:
        raise ConfigError(f"cannot load weights {weights!r}: {err}") from err


def _load_model(
    model_config: str, weights: str, build_model: Callable[[ModelConfig], nn.Module]
) -> tuple[ModelConfig, nn.Module]:
    from flashocc_ros.model.checkpoint import load_checkpoint_into, load_flashocc

    path = Path(weights) if weights not in ("", RANDOM_WEIGHTS) else None
    if weights == "":
        if DEMO_WEIGHTS.is_file():
            path = DEMO_WEIGHTS
        else:
            raise ConfigError(
                "parameter weights is empty and no shipped demo weights were found at "
                f"{DEMO_WEIGHTS}; pass weights:=<file> or weights:=random"
            )
    if path is not None and not path.is_file():
        raise ConfigError(f"weights file not found: {path}")
    if path is not None and path.suffix == ".safetensors":
        loaded, cfg = load_flashocc(path)
        wanted = load_model_config(model_config)
        if model_config not in ("", "demo") and cfg != wanted:
            LOG.warning(
                "weights %s embed config %r; using it instead of %r", path, cfg.name, wanted.name
            )
        return cfg, loaded
    cfg = load_model_config(model_config)
    torch.manual_seed(0)
    model = build_model(cfg)
    if path is None:
        LOG.warning("running %s with RANDOM weights: occupancy output is meaningless", cfg.name)
    else:
        load_checkpoint_into(model, path)
    return cfg, model


class BuildOnlyDone(SystemExit):
    """Raised by `create_pipeline` in `build_only` mode once the engines are built and load:
    the process ends with exit status 0 (a SystemExit, so no caller mistakes it for a fault)."""

    def __init__(self, message: str) -> None:
        super().__init__(0)
        self.message = message


def make_backend(cfg: ModelConfig, model: nn.Module, params: NodeConfig) -> Backend:
    """The backend the parameters ask for; `auto` picks the best available, saying why."""
    kind = params.backend
    if kind == "tensorrt":
        return _tensorrt_backend(cfg, model, params)
    if kind == "onnxruntime":
        return _onnxruntime_backend(cfg, model, params)
    if kind == "auto":
        return _auto_backend(cfg, model, params)
    return _torch_backend(cfg, model, params, params.device, params.precision)


def _torch_backend(
    cfg: ModelConfig, model: nn.Module, params: NodeConfig, device: str, precision: str
) -> Backend:
    """TorchBackend, or the CUDA fast path (CudaFastBackend) for single-frame models on CUDA."""
    from flashocc_ros.model.flashocc import FlashOCC
    from flashocc_ros.runtime.cuda_fast import CudaFastBackend

    prec: Precision = precision  # type: ignore[assignment]
    fast = device.startswith("cuda") and not cfg.temporal and cfg.depth_net == "lss"
    if fast and isinstance(model, FlashOCC) and torch.cuda.is_available():
        return CudaFastBackend(model, cfg, device, prec)
    spacing = int(params.history_spacing_s * 1e9)
    return TorchBackend(model, cfg, device, prec, history_spacing_ns=spacing)


@dataclass(frozen=True)
class AutoChoice:
    """What `backend: auto` runs and the one log line saying why."""

    kind: str  # "tensorrt" | "torch"
    device: str
    precision: str
    reason: str  # "" when TensorRT was chosen


def auto_choice(
    cfg: ModelConfig,
    params: NodeConfig,
    cuda_available: bool,
    tensorrt_missing: str | None,
    engines_present: bool,
) -> AutoChoice:
    """TensorRT when TensorRT 10.x, CUDA and built engines are all present; torch otherwise,
    with the precision adapted (int8 is TensorRT-only, fp16 GPU-only). Pure: tests pass facts."""
    device, precision = params.device, params.precision
    reason = ""
    if not device.startswith("cuda"):
        reason = f"device is {device}"
    elif not cuda_available:
        reason, device = "CUDA is not available here", "cpu"
    elif (no_engines := _no_engines_reason(cfg)) is not None:
        reason = no_engines
    elif tensorrt_missing is not None:
        reason = tensorrt_missing
    elif not params.engine_path:
        reason = "engine_path is empty (build engines with flashocc_ros.tools.build_engine)"
    elif not engines_present:
        reason = f"no {precision} engines in {params.engine_path}"
    if not reason:
        return AutoChoice("tensorrt", device, precision, "")
    if precision == "int8":
        precision = "fp16" if device.startswith("cuda") else "fp32"
    if precision == "fp16" and not device.startswith("cuda"):
        precision = "fp32"
    return AutoChoice("torch", device, precision, reason)


def _no_engines_reason(cfg: ModelConfig) -> str | None:
    """Why no TensorRT engines exist for `cfg` (None when they can)."""
    from flashocc_ros.deploy.engine_meta import EngineError, check_engine_config

    try:
        check_engine_config(cfg)
    except EngineError as err:
        return str(err)
    return None


def _engines_present(params: NodeConfig, cfg: ModelConfig) -> bool:
    """Every engine file and metadata of `cfg` (A, B[, S]) exists in engine_path."""
    from flashocc_ros.deploy.engine_meta import EngineError, EngineLayout, engine_graphs

    if not params.engine_path:
        return False
    try:
        layout = EngineLayout(Path(params.engine_path), params.precision)
    except EngineError:
        return False
    return all(
        layout.engine(g).is_file() and layout.metadata(g).is_file() for g in engine_graphs(cfg)
    )


def _auto_backend(cfg: ModelConfig, model: nn.Module, params: NodeConfig) -> Backend:
    from flashocc_ros.deploy.trt_build import tensorrt_missing_reason

    cuda = torch.cuda.is_available()
    wants_gpu = params.device.startswith("cuda")
    missing = tensorrt_missing_reason() if wants_gpu and cuda else None
    choice = auto_choice(cfg, params, cuda, missing, _engines_present(params, cfg))
    if choice.kind == "tensorrt":
        LOG.info("backend auto: tensorrt %s engines in %s", choice.precision, params.engine_path)
        return _tensorrt_backend(cfg, model, params)
    level = logging.WARNING if wants_gpu else logging.INFO
    LOG.log(
        level,
        "backend auto: torch on %s (%s) because %s",
        choice.device,
        choice.precision,
        choice.reason,
    )
    return _torch_backend(cfg, model, params, choice.device, choice.precision)


def _tensorrt_backend(cfg: ModelConfig, model: nn.Module, params: NodeConfig) -> Backend:
    """Engines of `engine_path`, checked against model/precision/TensorRT/GPU; refused with the
    build command, or rebuilt at start-up when engine_mismatch is "rebuild"."""
    from flashocc_ros.deploy.engine_meta import ENGINE_PRECISIONS, build_command
    from flashocc_ros.model.flashocc import FlashOCC
    from flashocc_ros.runtime.trt_backend import TensorRTBackend

    out = params.engine_path or "DIR"
    hint = build_command(params.model_config, params.weights, params.precision, out)
    if params.precision not in ENGINE_PRECISIONS:
        raise BackendError(
            f"backend tensorrt: precision {params.precision} is not one of "
            f"{', '.join(ENGINE_PRECISIONS)}"
        )
    if not params.engine_path:
        raise BackendError(f"backend tensorrt needs engine_path (an engine folder): {hint}")
    if not isinstance(model, FlashOCC):
        raise BackendError(f"backend tensorrt cannot run a {type(model).__name__}")
    mismatch = "rebuild" if params.build_only else params.engine_mismatch
    return TensorRTBackend(
        model,
        cfg,
        params.engine_path,
        params.precision,
        params.device,
        mismatch,
        hint,
        history_spacing_ns=int(params.history_spacing_s * 1e9),  # 4D-stereo engines only
    )


def _onnxruntime_backend(cfg: ModelConfig, model: nn.Module, params: NodeConfig) -> Backend:
    """The exported graphs in `engine_path`, refused (with the export command) when the folder
    is missing or was exported from another config/weights; never exported here."""
    from flashocc_ros.deploy.onnx_export import weights_sha256
    from flashocc_ros.runtime.onnx_backend import (
        OnnxRuntimeBackend,
        choose_providers,
        export_command,
    )

    hint = export_command(params.model_config, params.weights, params.engine_path or "DIR")
    if not params.engine_path:
        raise BackendError(f"backend onnxruntime needs engine_path (an export folder): {hint}")
    if params.precision != "fp32":
        raise BackendError(f"backend onnxruntime runs the fp32 export, not {params.precision}")
    providers = choose_providers(params.device)
    spacing = int(params.history_spacing_s * 1e9)  # temporal (4D-stereo) exports only
    return OnnxRuntimeBackend(
        params.engine_path,
        cfg,
        weights_sha256(model),
        providers,
        export_hint=hint,
        history_spacing_ns=spacing,
    )


def create_pipeline(params: NodeConfig) -> OccupancyPipeline:
    """Model + weights + backend -> pipeline, validated against the node's camera list."""
    cfg, model = load_model(params.model_config, params.weights)
    if tuple(params.camera_names) != cfg.camera_names:
        cfg = cfg.replace(camera_names=tuple(params.camera_names))
    if params.build_only and params.backend != "tensorrt":
        raise ConfigError("parameter build_only needs backend tensorrt")
    backend = make_backend(cfg, model, params)
    if params.build_only:
        done = f"build_only: {backend.name} engines in {params.engine_path} are built and load"
        LOG.info("%s; exiting", done)
        raise BuildOnlyDone(done)
    LOG.info("model %s on backend %s", cfg.name, backend.name)
    return OccupancyPipeline(
        cfg,
        backend,
        confidence=params.publish_confidence,
        max_gap_ns=int(params.history_max_gap_s * 1e9),
        preprocess=pipeline_preprocessor(backend, params.device),
    )


def pipeline_preprocessor(backend: Backend, device: str) -> Preprocessor:
    """GPU preprocessing for backends that run on CUDA (torch fast path, TensorRT, torch on
    cuda); on the CPU the boxed, threaded `preprocess_images_fast` (within one grey level of
    the reference `preprocess_images`)."""
    from flashocc_ros.runtime.cuda_fast import GpuPreprocessor

    on_gpu = backend.name.startswith(("tensorrt", "torch-cuda", "torch-fast-cuda"))
    if on_gpu and device.startswith("cuda") and torch.cuda.is_available():
        return GpuPreprocessor(device)
    return preprocess_images_fast
