"""TensorRT backend: graph A engine, BEV pooling in torch CUDA, graph B engine, on one stream.
In: images (1, N, 3, H, W) float32 (CPU or CUDA) + Calibration [+ FramePoses].
Out: logits (1, X, Y, Z, cls).

Start-up: the engine folder (`engine_meta` layout) is checked against the loaded model, the
precision, this TensorRT version and this GPU. A mismatch is refused with the build command,
or rebuilt when `engine_mismatch` is "rebuild" (explicitly, before the first frame, with
progress in the log). Then both engines are deserialised, every I/O binding gets a
preallocated torch CUDA tensor (`set_tensor_address`), and each frame is

    copy images -> [engine A] -> depth, context -> bev_pool (torch, fp32) -> bev -> [engine B]

enqueued on one torch CUDA stream (`execute_async_v3`). The pooling indices live on the GPU
and are recomputed only when the calibration changes (`cuda_fast.DeviceIndices`). The binding
tensors are never reallocated; the pooling's temporaries come from torch's caching allocator
(no cudaMalloc once warm). The returned logits are engine B's output buffer: valid until the
next `infer`. Needs CUDA and the TensorRT 10.x Python runtime. TensorRT works on the current
CUDA device, not on the device of the buffers, so the configured `device` (e.g. cuda:1) is
made current (`engine_meta.on_cuda_device`) around the runtime's creation, every
deserialisation and every execution. The runtime refuses engines that carry host code
(`engine_host_code_allowed` False, TensorRT's default, set explicitly).

4D-stereo configs (M2): three engines (graph S bound to graph A's image input and prev_stereo
buffer), driven by the model's own `TemporalHistory` through `TrtTemporalNet`
(runtime/trt_temporal.py); the history's matrices, grid and pooling run in torch on the same
stream. fp32 and fp16 only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from flashocc_ros.config import ModelConfig
from flashocc_ros.deploy.engine_meta import (
    ENGINE_PRECISIONS,
    GRAPHS,
    STEREO_GRAPH,
    EngineAction,
    EngineError,
    EngineLayout,
    EngineMetadata,
    Expected,
    check_engine_config,
    check_engines,
    cuda_platform,
    decide,
    engine_graphs,
    on_cuda_device,
    read_engine_metadata,
)
from flashocc_ros.deploy.onnx_export import ExportError, is_stereo_4d, weights_sha256
from flashocc_ros.model.flashocc import FlashOCC
from flashocc_ros.model.geometry import Calibration
from flashocc_ros.model.temporal import TemporalHistory
from flashocc_ros.runtime.backend import (
    BackendError,
    FramePoses,
    temporal_frame,
    temporal_timings,
)
from flashocc_ros.runtime.cuda_fast import DeviceIndices, StageTimer, pool_bev
from flashocc_ros.runtime.trt_temporal import TrtTemporalNet, check_shared

if TYPE_CHECKING:
    import tensorrt as trt

LOG = logging.getLogger(__name__)

#: Frames the 4D-stereo history keeps (TemporalHistory's default, as TorchBackend).
HISTORY_FRAMES = 4

#: TensorRT DataType names -> torch dtypes of the binding buffers.
TORCH_DTYPES: dict[str, torch.dtype] = {
    "FLOAT": torch.float32,
    "HALF": torch.float16,
    "BF16": torch.bfloat16,
    "INT8": torch.int8,
    "INT32": torch.int32,
    "INT64": torch.int64,
    "BOOL": torch.bool,
    "UINT8": torch.uint8,
}


@dataclass(frozen=True)
class Binding:
    """One I/O tensor of an engine."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    is_input: bool


def binding_problems(bindings: list[Binding], meta: EngineMetadata) -> list[str]:
    """Differences between an engine's bindings and its metadata's static shapes."""
    got_in = {b.name: list(b.shape) for b in bindings if b.is_input}
    got_out = {b.name: list(b.shape) for b in bindings if not b.is_input}
    problems = []
    if got_in != meta.inputs:
        problems.append(f"{meta.graph}: engine inputs {got_in} != metadata {meta.inputs}")
    if got_out != meta.outputs:
        problems.append(f"{meta.graph}: engine outputs {got_out} != metadata {meta.outputs}")
    if any(-1 in b.shape for b in bindings):
        problems.append(f"{meta.graph}: dynamic shapes; engines must be static (batch 1)")
    return problems


class _Engine:
    """A deserialised engine, its execution context and one CUDA tensor per binding (allocated
    here, or one of `shared`: tensors of another engine bound to this one's bindings)."""

    def __init__(
        self,
        runtime: trt.Runtime,
        path: Path,
        device: torch.device,
        shared: Mapping[str, Tensor] | None = None,
    ) -> None:
        self.device = device
        with on_cuda_device(device):
            self._open(runtime, path, shared)

    def _open(self, runtime: trt.Runtime, path: Path, shared: Mapping[str, Tensor] | None) -> None:
        import tensorrt as trt

        engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise BackendError(f"TensorRT cannot deserialise {path}")
        context = engine.create_execution_context()
        if context is None:
            raise BackendError(f"TensorRT cannot create an execution context for {path}")
        self.engine, self.context = engine, context
        self.bindings: list[Binding] = []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            dtype_name = engine.get_tensor_dtype(name).name
            if dtype_name not in TORCH_DTYPES:
                raise BackendError(f"{path.name}: binding {name} has dtype {dtype_name}")
            dims = engine.get_tensor_shape(name)
            shape = tuple(int(dims[k]) for k in range(len(dims)))
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            self.bindings.append(Binding(name, shape, TORCH_DTYPES[dtype_name], is_input))
        self.path = path
        self.buffers: dict[str, Tensor] = {}
        shared = dict(shared or {})
        problems = check_shared({b.name: (b.shape, b.dtype) for b in self.bindings}, shared)
        if problems:
            raise BackendError(f"{path.name}: cannot share buffers: {'; '.join(problems)}")
        for b in self.bindings:
            if -1 in b.shape:
                break  # reported by binding_problems; nothing to allocate
            given = shared.get(b.name)
            tensor = (
                torch.empty(b.shape, dtype=b.dtype, device=self.device) if given is None else given
            )
            self.bind(b.name, tensor)

    def bind(self, name: str, tensor: Tensor) -> None:
        """Bind `tensor` (preallocated, matching the binding) to `name`; no copy."""
        if not self.context.set_tensor_address(name, int(tensor.data_ptr())):
            raise BackendError(f"{self.path.name}: set_tensor_address({name}) failed")
        self.buffers[name] = tensor

    def run(self, stream: torch.cuda.Stream | None) -> None:
        """Enqueue the engine on `stream`, with the engine's device current."""
        if stream is None:
            raise BackendError("TensorRT engines run on a CUDA stream")
        with on_cuda_device(self.device):
            ok = self.context.execute_async_v3(int(stream.cuda_stream))
        if not ok:
            raise BackendError("TensorRT execute_async_v3 failed")


class TensorRTBackend:
    """The engines of an engine folder with the pooling between them: single-frame configs
    (graphs A, B) and 4D-stereo configs (graphs A, B, S behind `TemporalHistory`)."""

    def __init__(
        self,
        model: FlashOCC,
        cfg: ModelConfig,
        engine_dir: str | Path,
        precision: str = "fp16",
        device: str = "cuda",
        mismatch: str = "refuse",
        build_hint: str = "",
        workspace_gib: float = 4.0,
        history_spacing_ns: int = 500_000_000,
    ) -> None:
        """`mismatch` "refuse" | "rebuild" (node parameter engine_mismatch); `build_hint` is
        the build command shown when the engines are refused; `history_spacing_ns` is the
        temporal models' preferred age of the previous frame (as TorchBackend's)."""
        from flashocc_ros.deploy.trt_build import (
            build_engines,
            int8_rebuild_blocker,
            load_tensorrt,
        )

        if precision not in ENGINE_PRECISIONS:
            raise BackendError(
                f"backend tensorrt: precision {precision} is not one of "
                f"{', '.join(ENGINE_PRECISIONS)}"
            )
        try:
            check_engine_config(cfg)
            version = load_tensorrt()
        except (ExportError, EngineError) as err:
            raise BackendError(f"backend tensorrt: {err}") from err
        self.device = torch.device(device)
        if self.device.type != "cuda" or not torch.cuda.is_available():
            raise BackendError(
                f"backend tensorrt needs a CUDA device, got {device!r}"
                f"{'' if torch.cuda.is_available() else ' (no CUDA here)'}"
            )
        self.cfg = cfg
        self.layout = EngineLayout(Path(engine_dir), precision)
        expected = Expected(cfg, weights_sha256(model), precision, cuda_platform(version, device))
        reasons = check_engines(self.layout, expected)
        blocker = (
            int8_rebuild_blocker(self.layout, cfg, expected.weights_sha256) if reasons else ""
        )
        decision = decide(
            reasons,
            mismatch,
            build_hint or "python -m flashocc_ros.tools.build_engine ...",
            blocker,
        )
        if decision.action is EngineAction.REFUSE:
            raise BackendError(decision.message)
        if decision.action is EngineAction.BUILD:
            LOG.warning("%s", decision.message)
            try:
                build_engines(model, cfg, self.layout, device=device)
            except (EngineError, ExportError) as err:
                raise BackendError(f"backend tensorrt: rebuild failed: {err}") from err
            still = check_engines(self.layout, expected)
            if still:
                raise BackendError(f"backend tensorrt: rebuilt engines still unusable: {still}")
        self.rebuilt = decision.action is EngineAction.BUILD
        engines = self._load(self.layout)
        self.image_engine, self.bev_engine = engines[GRAPHS[0]], engines[GRAPHS[1]]
        self.indices = DeviceIndices(cfg, self.device)
        self.stream = torch.cuda.Stream(self.device)  # type: ignore[no-untyped-call]
        self._timer = StageTimer(self.device, 3)
        self._timings: dict[str, float] = {}
        self.name = f"tensorrt-{precision}"
        self.history: TemporalHistory | None = None
        self.net: TrtTemporalNet | None = None
        if is_stereo_4d(cfg):
            self.net = TrtTemporalNet(
                cfg,
                engines[GRAPHS[0]],
                engines[GRAPHS[1]],
                engines[STEREO_GRAPH],
                slots=HISTORY_FRAMES + 1,  # the history's frames + the one being written
                stream=self.stream,
            )
            self.history = TemporalHistory(
                self.net, max_frames=HISTORY_FRAMES, target_gap_ns=history_spacing_ns
            )

    def _load(self, layout: EngineLayout) -> dict[str, _Engine]:
        """Every engine of the folder; graph S (4D-stereo) shares graph A's image input and
        writes graph A's prev_stereo input."""
        import tensorrt as trt

        self._logger = trt.Logger(trt.Logger.WARNING)
        with on_cuda_device(self.device):
            self._runtime = trt.Runtime(self._logger)
        self._runtime.engine_host_code_allowed = False  # a crafted engine runs no host code
        engines: dict[str, _Engine] = {}
        for graph in engine_graphs(self.cfg):
            meta = read_engine_metadata(layout.metadata(graph))
            shared = None
            if graph == STEREO_GRAPH:
                a = engines[GRAPHS[0]].buffers
                shared = {"images": a["images"], "stereo": a["prev_stereo"]}
            engine = _Engine(self._runtime, layout.engine(graph), self.device, shared)
            problems = binding_problems(engine.bindings, meta)
            if problems:
                raise BackendError(f"backend tensorrt: {'; '.join(problems)}")
            engines[graph] = engine
        return engines

    def reset(self) -> None:
        """Forget the temporal history (single-frame models have none)."""
        if self.history is not None:
            self.history.reset()

    def last_stage_timings_ms(self) -> dict[str, float]:
        return dict(self._timings)

    @torch.inference_mode()
    def infer(self, images: Tensor, calib: Calibration, poses: FramePoses | None = None) -> Tensor:
        """(1, N, 3, H, W) normalised images -> (1, X, Y, Z, cls) float32 logits on the GPU.

        4D-stereo engines also need `poses` and keep history like TorchBackend."""
        want = (1, *self.image_engine.buffers["images"].shape)
        if tuple(images.shape) != want:
            raise ValueError(
                f"images (B, N, 3, H, W) must be {want} for these engines "
                f"(batch B = 1), got {tuple(images.shape)}"
            )
        with on_cuda_device(self.device):
            if self.history is not None:
                return self._infer_temporal(images, calib, poses)
            return self._infer_single(images, calib)

    def _infer_single(self, images: Tensor, calib: Calibration) -> Tensor:
        """Graph A, the pooling, graph B on the backend's stream."""
        a, b = self.image_engine, self.bev_engine
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.stream):
            indices = self.indices.get(calib)
            self._timer.start()
            a.buffers["images"].copy_(images[0], non_blocking=True)
            a.run(self.stream)
            self._timer.mark()
            bev = pool_bev(a.buffers["depth"], a.buffers["context"], indices, self.cfg)
            b.buffers["bev"].copy_(bev)
            self._timer.mark()
            b.run(self.stream)
            self._timer.mark()
        self._timings = self._timer.finish(("image_graph", "pooling", "bev_graph"))
        return b.buffers["logits"].float()  # float32 engines: the buffer itself, no copy

    def _infer_temporal(
        self, images: Tensor, calib: Calibration, poses: FramePoses | None
    ) -> Tensor:
        assert self.history is not None and self.net is not None
        t0 = time.perf_counter()
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.stream):
            frame = temporal_frame(self.cfg.name, images, calib, poses, self.device)
            logits = self.history.step(frame).logits  # (1, X, Y, Z, cls), engine B's buffer
        graphs = self.net.timings()  # synchronises on the last engine
        self.stream.synchronize()  # type: ignore[no-untyped-call]
        self._timings = temporal_timings(graphs, (time.perf_counter() - t0) * 1e3)
        return logits.float()
