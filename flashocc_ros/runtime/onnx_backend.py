"""ONNX Runtime backend: runs the two exported graphs with the BEV pooling between them.
In: images (1, N, 3, H, W) float32 + Calibration. Out: logits (1, X, Y, Z, cls) float32 (CPU).

Per frame: graph A (images -> depth, context) in onnxruntime, then the pooling in PyTorch
(`bev_pool` with the indices of a `LiftGeometry`, recomputed only when the calibration
changes), then graph B (BEV -> logits) in onnxruntime. The export folder is checked against
the model config and weights hash at start-up; a missing or stale export is refused with the
export command, never re-exported here (docs/deployment.md). Single-frame configs only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from flashocc_ros.config import ModelConfig
from flashocc_ros.deploy.onnx_export import (
    ExportError,
    check_exportable,
    verify_export,
)
from flashocc_ros.model.bev_pool import bev_pool
from flashocc_ros.model.geometry import Calibration, LiftGeometry
from flashocc_ros.runtime.backend import BackendError, FramePoses

LOG = logging.getLogger(__name__)

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"


def export_command(model_config: str, weights: str, out: str | Path) -> str:
    """The command line that (re-)creates an export folder."""
    w = f" --weights {weights}" if weights else ""
    return f"python -m flashocc_ros.tools.export --model-config {model_config}{w} --out {out}"


def choose_providers(device: str | None = None) -> list[str]:
    """Execution providers for a torch-style `device`: "cpu" -> CPU only; "cuda*" -> CUDA then
    CPU (one warning line when this onnxruntime has no CUDA); None -> CUDA first if present."""
    import onnxruntime as ort

    available = set(ort.get_available_providers())
    if device is not None and device.startswith("cuda") and CUDA_PROVIDER not in available:
        LOG.warning("onnxruntime: device %s asked for, but no %s here: CPU", device, CUDA_PROVIDER)
    wanted = [CPU_PROVIDER] if device == "cpu" else [CUDA_PROVIDER, CPU_PROVIDER]
    return [p for p in wanted if p in available]


class OnnxRuntimeBackend:
    """The exported graphs A and B in onnxruntime, pooling in PyTorch on the CPU."""

    def __init__(
        self,
        export_dir: str | Path,
        cfg: ModelConfig,
        weights_sha256: str | None = None,
        providers: Sequence[str] | None = None,
        intra_op_threads: int = 0,
        export_hint: str = "",
    ) -> None:
        """`weights_sha256`: hash of the model the caller expects (None: not checked);
        `intra_op_threads` 0 lets onnxruntime choose; `export_hint` is the command shown
        when the export is missing or stale."""
        try:
            check_exportable(cfg)
            self.meta = verify_export(export_dir, cfg, weights_sha256)
        except ExportError as err:
            hint = f"; create it with: {export_hint}" if export_hint else ""
            raise BackendError(f"onnxruntime backend: {err}{hint}") from err
        import onnxruntime as ort

        folder = Path(export_dir)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = intra_op_threads
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.providers = list(providers) if providers is not None else choose_providers()
        try:
            self.image_session = ort.InferenceSession(
                str(folder / self.meta.image_graph.file), opts, providers=self.providers
            )
            self.bev_session = ort.InferenceSession(
                str(folder / self.meta.bev_graph.file), opts, providers=self.providers
            )
        except Exception as err:  # onnxruntime raises its own untyped exceptions
            raise BackendError(f"onnxruntime cannot load the export in {folder}: {err}") from err
        self.cfg = cfg
        self.geometry = LiftGeometry(cfg)  # pooling indices, cached per calibration
        used = self.image_session.get_providers()[0]
        self.name = f"onnxruntime-{'cuda' if used == CUDA_PROVIDER else 'cpu'}-fp32"
        self._timings: dict[str, float] = {}

    def reset(self) -> None:
        """Single-frame model: no history to forget."""

    def last_stage_timings_ms(self) -> dict[str, float]:
        return dict(self._timings)

    def _check(self, images: Tensor) -> None:
        want = [1, *self.meta.image_graph.inputs["images"]]
        if list(images.shape) != want:
            axes = "B, N, 3, H, W"
            raise ValueError(
                f"images ({axes}) must be {tuple(want)} for this export (batch B = 1), "
                f"got {tuple(images.shape)}"
            )

    @torch.inference_mode()
    def infer(self, images: Tensor, calib: Calibration, poses: FramePoses | None = None) -> Tensor:
        """(1, N, 3, H, W) float32 normalised images -> (1, X, Y, Z, cls) float32 logits."""
        self._check(images)
        t0 = time.perf_counter()
        x = images[0].detach().to("cpu", torch.float32).contiguous().numpy()  # (N, 3, H, W)
        depth, context = self._run(self.image_session, {"images": x})  # (N,D,fH,fW), (N,C,..)
        t1 = time.perf_counter()
        indices = self.geometry.indices(calib.to("cpu"))
        d = torch.from_numpy(depth)[None]  # (1, N, D, fH, fW)
        feat = torch.from_numpy(context)[None].permute(0, 1, 3, 4, 2)  # (1, N, fH, fW, C)
        bev = bev_pool(d, feat.contiguous(), indices, self.cfg.grid)  # (1, C·Dz, Y, X)
        t2 = time.perf_counter()
        (logits,) = self._run(self.bev_session, {"bev": bev.contiguous().numpy()})
        t3 = time.perf_counter()
        self._timings = {
            "image_graph": (t1 - t0) * 1e3,
            "pooling": (t2 - t1) * 1e3,
            "bev_graph": (t3 - t2) * 1e3,
            "backend_total": (t3 - t0) * 1e3,
        }
        return torch.from_numpy(logits)  # (1, X, Y, Z, cls)

    @staticmethod
    def _run(session: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        try:
            out: list[np.ndarray] = session.run(None, feeds)
        except Exception as err:  # onnxruntime raises its own untyped exceptions
            raise BackendError(f"onnxruntime inference failed: {err}") from err
        return out
