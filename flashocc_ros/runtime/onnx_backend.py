"""ONNX Runtime backend: runs the exported graphs with the BEV pooling between them.
In: images (1, N, 3, H, W) float32 + Calibration [+ FramePoses]. Out: logits (1, X, Y, Z, cls).

Single-frame configs, per frame: graph A (images -> depth, context) in onnxruntime, then the
pooling in PyTorch (`bev_pool` with the indices of a `LiftGeometry`, recomputed only when the
calibration changes), then graph B (BEV -> logits) in onnxruntime.

4D-stereo configs (M2): the model's own `TemporalHistory` (history, poses, DepthNet input,
cost-volume grid, pooling) drives `OnnxTemporalNet`, whose image step is stereo graph A (after
graph S at a scene start, for the frame's own stereo feature) and whose BEV step is graph B.

The export folder is checked against the model config and weights hash at start-up; a missing
or stale export is refused with the export command, never re-exported here
(docs/deployment.md).
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
    ExportMetadata,
    check_exportable,
    is_stereo_4d,
    verify_export,
)
from flashocc_ros.model.bev_pool import bev_pool
from flashocc_ros.model.geometry import Calibration, LiftGeometry
from flashocc_ros.model.temporal import ImageStep, TemporalHistory
from flashocc_ros.runtime.backend import (
    BackendError,
    FramePoses,
    temporal_frame,
    temporal_timings,
)

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


def run_session(
    session: Any, feeds: dict[str, np.ndarray], outputs: Sequence[str] | None = None
) -> list[np.ndarray]:
    """`session.run` (the named `outputs` in that order, or all) with onnxruntime's untyped
    errors turned into BackendError."""
    try:
        out: list[np.ndarray] = session.run(None if outputs is None else list(outputs), feeds)
    except Exception as err:  # onnxruntime raises its own untyped exceptions
        raise BackendError(f"onnxruntime inference failed: {err}") from err
    return out


def _numpy(t: Tensor) -> np.ndarray:
    """A float32, contiguous CPU array of `t` (no copy when it already is one)."""
    out: np.ndarray = t.detach().to("cpu", torch.float32).contiguous().numpy()
    return out


class OnnxTemporalNet:
    """`TemporalNet` backed by the stereo graphs A, B and S of a 4D-stereo export (B = 1)."""

    def __init__(self, cfg: ModelConfig, image: Any, bev: Any, stereo: Any) -> None:
        self.cfg = cfg
        self.image_session, self.bev_session, self.stereo_session = image, bev, stereo
        self.timings: dict[str, float] = {}  # graph -> ms of the last step

    def image_step(
        self, images: Tensor, mlp_in: Tensor, prev_stereo: Tensor | None, grid: Tensor
    ) -> ImageStep:
        """(1, N, 3, H, W), (1, N, 27), (1, N, Cs, h, w) or None, (N, D·h, w, 2) -> ImageStep
        with B = 1; prev_stereo None (scene start) runs graph S for the frame's own feature."""
        x = _numpy(images[0])  # (N, 3, H, W)
        self.timings = {}
        if prev_stereo is None:
            t0 = time.perf_counter()
            (prev,) = run_session(self.stereo_session, {"images": x}, ("stereo",))
            self.timings["stereo_graph"] = (time.perf_counter() - t0) * 1e3
        else:
            prev = _numpy(prev_stereo[0])  # (N, Cs, h, w)
        t1 = time.perf_counter()
        feeds = {
            "images": x,
            "mlp_input": _numpy(mlp_in[0]),  # (N, 27)
            "prev_stereo": prev,
            "stereo_grid": _numpy(grid),  # (N, D·h, w, 2)
        }
        outs = run_session(self.image_session, feeds, ("depth", "context", "stereo"))
        self.timings["image_graph"] = (time.perf_counter() - t1) * 1e3
        depth, context, stereo = (torch.from_numpy(a)[None] for a in outs)  # B = 1 back
        return ImageStep(depth, context, stereo)

    def bev_step(self, bev_prev: Tensor, bev_curr: Tensor) -> Tensor:
        """(1, Cctx·Dz, Y, X) each -> (1, X, Y, Z, cls)."""
        t0 = time.perf_counter()
        feeds = {"bev_prev": _numpy(bev_prev), "bev_curr": _numpy(bev_curr)}
        (logits,) = run_session(self.bev_session, feeds, ("logits",))
        self.timings["bev_graph"] = (time.perf_counter() - t0) * 1e3
        return torch.from_numpy(logits)


class OnnxRuntimeBackend:
    """The exported graphs in onnxruntime, pooling (and for M2 the history) in PyTorch on the
    CPU."""

    def __init__(
        self,
        export_dir: str | Path,
        cfg: ModelConfig,
        weights_sha256: str | None = None,
        providers: Sequence[str] | None = None,
        intra_op_threads: int = 0,
        export_hint: str = "",
        history_spacing_ns: int = 500_000_000,
    ) -> None:
        """`weights_sha256`: hash of the model the caller expects (None: not checked);
        `intra_op_threads` 0 lets onnxruntime choose; `export_hint` is the command shown
        when the export is missing or stale; `history_spacing_ns` is the temporal models'
        preferred age of the previous frame (as TorchBackend's)."""
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
        sessions = _load_sessions(folder, self.meta, opts, self.providers)
        self.image_session, self.bev_session = sessions[0], sessions[1]
        self.cfg = cfg
        self.geometry = LiftGeometry(cfg)  # pooling indices, cached per calibration
        self.history: TemporalHistory | None = None
        self.net: OnnxTemporalNet | None = None
        if is_stereo_4d(cfg):
            self.net = OnnxTemporalNet(cfg, *sessions)
            self.history = TemporalHistory(self.net, target_gap_ns=history_spacing_ns)
        used = self.image_session.get_providers()[0]
        self.name = f"onnxruntime-{'cuda' if used == CUDA_PROVIDER else 'cpu'}-fp32"
        self._timings: dict[str, float] = {}

    def reset(self) -> None:
        """Forget the temporal history (single-frame models have none)."""
        if self.history is not None:
            self.history.reset()

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
        """(1, N, 3, H, W) float32 normalised images -> (1, X, Y, Z, cls) float32 logits.

        Temporal (4D-stereo) exports also need `poses` and keep history like TorchBackend."""
        self._check(images)
        if self.history is not None:
            return self._infer_temporal(images, calib, poses)
        t0 = time.perf_counter()
        x = _numpy(images[0])  # (N, 3, H, W)
        depth, context = run_session(self.image_session, {"images": x})  # (N,D,fH,fW), ..
        t1 = time.perf_counter()
        indices = self.geometry.indices(calib.to("cpu"))
        d = torch.from_numpy(depth)[None]  # (1, N, D, fH, fW)
        feat = torch.from_numpy(context)[None].permute(0, 1, 3, 4, 2)  # (1, N, fH, fW, C)
        bev = bev_pool(d, feat.contiguous(), indices, self.cfg.grid)  # (1, C·Dz, Y, X)
        t2 = time.perf_counter()
        (logits,) = run_session(self.bev_session, {"bev": bev.contiguous().numpy()})
        t3 = time.perf_counter()
        self._timings = {
            "image_graph": (t1 - t0) * 1e3,
            "pooling": (t2 - t1) * 1e3,
            "bev_graph": (t3 - t2) * 1e3,
            "backend_total": (t3 - t0) * 1e3,
        }
        return torch.from_numpy(logits)  # (1, X, Y, Z, cls)

    def _infer_temporal(
        self, images: Tensor, calib: Calibration, poses: FramePoses | None
    ) -> Tensor:
        assert self.history is not None and self.net is not None
        t0 = time.perf_counter()
        frame = temporal_frame(self.cfg.name, images.detach(), calib, poses, "cpu")
        logits = self.history.step(frame).logits  # (1, X, Y, Z, cls)
        total = (time.perf_counter() - t0) * 1e3
        self._timings = temporal_timings(dict(self.net.timings), total)
        return logits


def _load_sessions(
    folder: Path, meta: ExportMetadata, opts: Any, providers: Sequence[str]
) -> list[Any]:
    """One onnxruntime session per graph of the export (A, B[, S])."""
    import onnxruntime as ort

    try:
        return [
            ort.InferenceSession(str(folder / spec.file), opts, providers=list(providers))
            for spec in meta.graphs()
        ]
    except Exception as err:  # onnxruntime raises its own untyped exceptions
        raise BackendError(f"onnxruntime cannot load the export in {folder}: {err}") from err
