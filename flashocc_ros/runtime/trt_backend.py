"""TensorRT backend: graph A engine, BEV pooling in torch CUDA, graph B engine, on one stream.
In: images (1, N, 3, H, W) float32 (CPU or CUDA) + Calibration. Out: logits (1, X, Y, Z, cls).

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
next `infer`. Needs CUDA and the TensorRT 10.x Python runtime.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from flashocc_ros.config import ModelConfig
from flashocc_ros.deploy.engine_meta import (
    ENGINE_PRECISIONS,
    GRAPHS,
    EngineAction,
    EngineError,
    EngineLayout,
    EngineMetadata,
    Expected,
    check_engine_config,
    check_engines,
    cuda_platform,
    decide,
    read_engine_metadata,
)
from flashocc_ros.deploy.onnx_export import ExportError, weights_sha256
from flashocc_ros.model.flashocc import FlashOCC
from flashocc_ros.model.geometry import Calibration
from flashocc_ros.runtime.backend import BackendError, FramePoses
from flashocc_ros.runtime.cuda_fast import DeviceIndices, StageTimer, pool_bev

if TYPE_CHECKING:
    import tensorrt as trt

LOG = logging.getLogger(__name__)

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
    """A deserialised engine, its execution context and one CUDA tensor per binding."""

    def __init__(self, runtime: trt.Runtime, path: Path, device: torch.device) -> None:
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
        self.buffers: dict[str, Tensor] = {}
        for b in self.bindings:
            if -1 in b.shape:
                break  # reported by binding_problems; nothing to allocate
            self.buffers[b.name] = torch.empty(b.shape, dtype=b.dtype, device=device)
            if not context.set_tensor_address(b.name, int(self.buffers[b.name].data_ptr())):
                raise BackendError(f"{path.name}: set_tensor_address({b.name}) failed")

    def run(self, stream: torch.cuda.Stream) -> None:
        if not self.context.execute_async_v3(int(stream.cuda_stream)):
            raise BackendError("TensorRT execute_async_v3 failed")


class TensorRTBackend:
    """Both engines of an engine folder with the pooling between them (single-frame configs)."""

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
    ) -> None:
        """`mismatch` "refuse" | "rebuild" (node parameter engine_mismatch); `build_hint` is
        the build command shown when the engines are refused."""
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
        self._load(self.layout)
        self.indices = DeviceIndices(cfg, self.device)
        self.stream = torch.cuda.Stream(self.device)  # type: ignore[no-untyped-call]
        self._timer = StageTimer(self.device, 3)
        self._timings: dict[str, float] = {}
        self.name = f"tensorrt-{precision}"

    def _load(self, layout: EngineLayout) -> None:
        import tensorrt as trt

        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        engines = {}
        for graph in GRAPHS:
            meta = read_engine_metadata(layout.metadata(graph))
            engine = _Engine(self._runtime, layout.engine(graph), self.device)
            problems = binding_problems(engine.bindings, meta)
            if problems:
                raise BackendError(f"backend tensorrt: {'; '.join(problems)}")
            engines[graph] = engine
        self.image_engine, self.bev_engine = engines[GRAPHS[0]], engines[GRAPHS[1]]

    def reset(self) -> None:
        """Single-frame model: no history."""

    def last_stage_timings_ms(self) -> dict[str, float]:
        return dict(self._timings)

    @torch.inference_mode()
    def infer(self, images: Tensor, calib: Calibration, poses: FramePoses | None = None) -> Tensor:
        """(1, N, 3, H, W) normalised images -> (1, X, Y, Z, cls) float32 logits on the GPU."""
        a, b = self.image_engine, self.bev_engine
        want = (1, *a.buffers["images"].shape)
        if tuple(images.shape) != want:
            raise ValueError(
                f"images (B, N, 3, H, W) must be {want} for these engines "
                f"(batch B = 1), got {tuple(images.shape)}"
            )
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
