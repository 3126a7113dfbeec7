"""Builds the model, its weights and a backend from the node's parameters (one place for all).
In: NodeConfig (or its model/weights/backend fields). Out: a ready OccupancyPipeline.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from flashocc_ros.config import ConfigError, ModelConfig, load_model_config
from flashocc_ros.node_config import NodeConfig
from flashocc_ros.runtime.backend import Backend, BackendError, Precision, TorchBackend
from flashocc_ros.runtime.pipeline import OccupancyPipeline

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


def make_backend(cfg: ModelConfig, model: nn.Module, params: NodeConfig) -> Backend:
    """The backend the parameters ask for; `auto` picks the best available, saying why."""
    kind = params.backend
    precision: Precision = params.precision  # type: ignore[assignment]
    if kind == "tensorrt":
        raise BackendError(f"backend {kind!r} is not available in this build yet")
    if kind == "onnxruntime":
        return _onnxruntime_backend(cfg, model, params)
    spacing = int(params.history_spacing_s * 1e9)
    device = params.device
    if kind == "auto" and device.startswith("cuda") and not torch.cuda.is_available():
        LOG.warning("backend auto: CUDA is not available here, falling back to torch on cpu")
        device, precision = "cpu", "fp32" if precision == "fp16" else precision
    return TorchBackend(model, cfg, device, precision, history_spacing_ns=spacing)


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
    return OnnxRuntimeBackend(
        params.engine_path, cfg, weights_sha256(model), providers, export_hint=hint
    )


def create_pipeline(params: NodeConfig) -> OccupancyPipeline:
    """Model + weights + backend -> pipeline, validated against the node's camera list."""
    cfg, model = load_model(params.model_config, params.weights)
    if tuple(params.camera_names) != cfg.camera_names:
        cfg = cfg.replace(camera_names=tuple(params.camera_names))
    backend = make_backend(cfg, model, params)
    LOG.info("model %s on backend %s", cfg.name, backend.name)
    return OccupancyPipeline(
        cfg,
        backend,
        confidence=params.publish_confidence,
        max_gap_ns=int(params.history_max_gap_s * 1e9),
    )
