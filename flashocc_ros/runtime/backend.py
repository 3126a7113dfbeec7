"""Inference backends behind one small interface, and the factory that picks one.
In: normalised images (B, N, 3, H, W) + Calibration. Out: logits (B, X, Y, Z, cls).

`torch` runs the PyTorch model (CPU or CUDA, optional bf16/fp16 autocast). Other backends
(onnxruntime, tensorrt) plug in through `make_backend`; when a requested backend cannot run here
the factory falls back loudly with one log line saying why.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
from torch import Tensor, nn

from flashocc_ros.config import ModelConfig
from flashocc_ros.cpu import warn_if_slow_bf16
from flashocc_ros.model.geometry import Calibration
from flashocc_ros.model.temporal import TemporalFrame, TemporalHistory

LOG = logging.getLogger(__name__)

BackendKind = Literal["auto", "torch", "onnxruntime", "tensorrt"]
Precision = Literal["fp32", "fp16", "bf16", "int8"]


class BackendError(RuntimeError):
    """A backend cannot be created or cannot run the given model."""


@dataclass(frozen=True)
class FramePoses:
    """What temporal models need besides the images: per-camera ego poses and the stamp."""

    ego_to_global: Tensor  # (B, N, 4, 4) odom <- base_link at each camera's stamp
    stamp_ns: int  # bundle stamp (camera 0)


def temporal_frame(
    model_name: str,
    images: Tensor,
    calib: Calibration,
    poses: FramePoses | None,
    device: torch.device | str,
) -> TemporalFrame:
    """The TemporalFrame of one bundle on `device` (float32 images); BackendError without
    poses. Shared by every backend that runs a temporal model."""
    if poses is None:
        raise BackendError(f"{model_name} is temporal: it needs ego poses")
    return TemporalFrame(
        images.to(device, torch.float32, non_blocking=True),
        calib.to(device),
        poses.ego_to_global.to(device, non_blocking=True),
        poses.stamp_ns,
    )


def temporal_timings(graphs: dict[str, float], total_ms: float) -> dict[str, float]:
    """Stage timings of a temporal step whose graphs/engines took `graphs` ms: the rest of
    `total_ms` (history, matrices, grid, DepthNet input, pooling) is reported as "pooling"."""
    return {**graphs, "pooling": total_ms - sum(graphs.values()), "backend_total": total_ms}


def check_torch_precision(device: torch.device, precision: Precision) -> None:
    """BackendError for a precision PyTorch cannot run on `device` (int8, fp16 off CUDA, CUDA
    missing); one warning for bf16 on a CPU that only emulates it. Shared by the torch backends."""
    if precision == "int8":
        raise BackendError("int8 needs the tensorrt backend")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BackendError(f"device {str(device)!r} requested but CUDA is not available")
    if precision == "fp16" and device.type != "cuda":
        raise BackendError("fp16 needs a CUDA device; use bf16 on a CPU")
    if precision == "bf16" and device.type != "cuda":
        warn_if_slow_bf16("precision bf16")


class Backend(Protocol):
    """What the pipeline needs from an inference backend."""

    name: str

    def infer(self, images: Tensor, calib: Calibration, poses: FramePoses | None = None) -> Tensor:
        """(B, N, 3, H, W) float32 normalised images -> (B, X, Y, Z, cls) logits.

        Single-frame models take `calib` with key-ego folded extrinsics and ignore `poses`.
        Temporal models take the static extrinsics in `calib` plus `poses` and keep history.
        """
        ...

    def reset(self) -> None:
        """Forget temporal history (time jump, gap, calibration change)."""
        ...

    def last_stage_timings_ms(self) -> dict[str, float]:
        """Per-stage times of the last `infer` call (empty when not measured)."""
        ...


class TorchBackend:
    """PyTorch eager inference of a FlashOCC module on one device."""

    def __init__(
        self,
        model: nn.Module,
        cfg: ModelConfig,
        device: str = "cpu",
        precision: Precision = "fp32",
        channels_last: bool = False,
        history_spacing_ns: int = 500_000_000,
    ) -> None:
        self.device = torch.device(device)
        check_torch_precision(self.device, precision)
        self.cfg = cfg
        self.precision = precision
        self.model = model.to(self.device).eval()
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.name = f"torch-{self.device.type}-{precision}"
        self._timings: dict[str, float] = {}
        self.history = (
            TemporalHistory(model, target_gap_ns=history_spacing_ns)  # type: ignore[arg-type]
            if cfg.temporal
            else None
        )

    def reset(self) -> None:
        if self.history is not None:
            self.history.reset()

    @torch.inference_mode()
    def infer(self, images: Tensor, calib: Calibration, poses: FramePoses | None = None) -> Tensor:
        t0 = time.perf_counter()
        images = images.to(self.device, non_blocking=True)
        calib = calib.to(self.device)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        with torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
            if self.history is not None:
                frame = temporal_frame(self.cfg.name, images, calib, poses, self.device)
                logits: Tensor = self.history.step(frame).logits
            else:
                logits = self.model(images, calib)
        out = logits.float()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self._timings = {"backend_total": (time.perf_counter() - t0) * 1e3}
        return out

    def last_stage_timings_ms(self) -> dict[str, float]:
        return dict(self._timings)
