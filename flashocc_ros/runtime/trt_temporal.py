"""`TemporalNet` over the three TensorRT engines of a 4D-stereo (M2) engine folder.
In: image step / BEV step inputs from `TemporalHistory` (device tensors). Out: ImageStep, logits.

`TemporalHistory` (model/temporal.py) keeps everything pose-, calibration- and history-dependent
(selection of t−1, key-ego extrinsic, DepthNet input, cost-volume grid, pooling, the cache);
this class only runs the engines, on one CUDA stream, with bindings allocated once:

    scene start: graph S  images -> stereo, written straight into graph A's prev_stereo input
    every frame: graph A  images, mlp_input, prev_stereo, stereo_grid -> depth, context, stereo
                 graph B  bev_prev, bev_curr -> logits

Graph A's outputs are cached by the history and read again by later frames (prev_stereo of
t+1, depth/context re-lifted at t+1), so they cannot live in one buffer that the next frame
overwrites. They rotate through a ring of preallocated output sets, one more than the history
holds: the set written at frame t is the one of frame t − slots, which the history has already
dropped. Rebinding an output is `set_tensor_address` (no allocation, no copy).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Protocol

import torch
from torch import Tensor

from flashocc_ros.config import ModelConfig
from flashocc_ros.model.temporal import ImageStep
from flashocc_ros.runtime.backend import BackendError

#: Binding names of the stereo graphs (deploy/onnx_stereo.py `stereo_graph_io`).
IMAGE_INPUTS = ("images", "mlp_input", "prev_stereo", "stereo_grid")
IMAGE_OUTPUTS = ("depth", "context", "stereo")
BEV_INPUTS = ("bev_prev", "bev_curr")


class EngineRunner(Protocol):
    """What `TrtTemporalNet` needs from an engine (runtime/trt_backend.py `_Engine`)."""

    buffers: dict[str, Tensor]  # binding name -> the tensor bound now

    def bind(self, name: str, tensor: Tensor) -> None:
        """Bind `tensor` (right shape, dtype and device, contiguous) to binding `name`."""
        ...

    def run(self, stream: torch.cuda.Stream | None) -> None:
        """Enqueue the engine on `stream`."""
        ...


class _Clock:
    """Milliseconds of named stages: CUDA events (created once) on CUDA, wall clock on the CPU."""

    def __init__(self, device: torch.device, names: Sequence[str]) -> None:
        self.cuda = device.type == "cuda"
        self._events: dict[str, tuple[torch.cuda.Event, torch.cuda.Event]] = {}
        if self.cuda:
            for name in names:
                self._events[name] = (
                    torch.cuda.Event(enable_timing=True),  # type: ignore[no-untyped-call]
                    torch.cuda.Event(enable_timing=True),  # type: ignore[no-untyped-call]
                )
        self._wall: dict[str, float] = {}
        self.ran: list[str] = []

    def clear(self) -> None:
        self.ran = []
        self._wall = {}

    def start(self, name: str) -> None:
        if self.cuda:
            self._events[name][0].record()
        else:
            self._wall[name] = time.perf_counter()

    def stop(self, name: str) -> None:
        if self.cuda:
            self._events[name][1].record()
        else:
            self._wall[name] = (time.perf_counter() - self._wall[name]) * 1e3
        self.ran.append(name)

    def results(self) -> dict[str, float]:
        """Stage -> ms of the stages run since `clear` (synchronises on CUDA)."""
        if not self.cuda:
            return {name: self._wall[name] for name in self.ran}
        out = {}
        for name in self.ran:
            start, end = self._events[name]
            end.synchronize()
            out[name] = start.elapsed_time(end)
        return out


class TrtTemporalNet:
    """`TemporalNet` backed by engines of stereo graphs A, B and S (batch B = 1).

    `slots`: output sets of graph A in the ring; at least the history's `max_frames` + 1.
    Graph S must already be bound to graph A's `images` input and `prev_stereo` buffer
    (`TensorRTBackend` creates it that way); this is checked here.
    """

    def __init__(
        self,
        cfg: ModelConfig,
        image: EngineRunner,
        bev: EngineRunner,
        stereo: EngineRunner,
        slots: int,
        stream: torch.cuda.Stream | None = None,
    ) -> None:
        for engine, names, graph in (
            (image, (*IMAGE_INPUTS, *IMAGE_OUTPUTS), "image_to_depth"),
            (bev, (*BEV_INPUTS, "logits"), "bev_to_logits"),
            (stereo, ("images", "stereo"), "stereo_feature"),
        ):
            missing = [n for n in names if n not in engine.buffers]
            if missing:
                raise BackendError(f"{graph} engine lacks bindings {missing}")
        if slots < 2:
            raise BackendError(f"TrtTemporalNet needs at least 2 output slots, got {slots}")
        if not _same(stereo.buffers["images"], image.buffers["images"]) or not _same(
            stereo.buffers["stereo"], image.buffers["prev_stereo"]
        ):
            raise BackendError(
                "stereo_feature engine must read image_to_depth's images and write its "
                "prev_stereo buffer"
            )
        self.cfg = cfg
        self.image, self.bev, self.stereo = image, bev, stereo
        self.stream = stream
        first = {n: image.buffers[n] for n in IMAGE_OUTPUTS}  # the engine's own buffers
        self.slots: list[dict[str, Tensor]] = [first] + [
            {n: torch.empty_like(t) for n, t in first.items()} for _ in range(slots - 1)
        ]
        self._next = 0
        self.device = first["depth"].device
        self.clock = _Clock(self.device, ("stereo_graph", "image_graph", "bev_graph"))

    def image_step(
        self, images: Tensor, mlp_in: Tensor, prev_stereo: Tensor | None, grid: Tensor
    ) -> ImageStep:
        """(1, N, 3, H, W), (1, N, 27), (1, N, Cs, h, w) or None, (N, D·h, w, 2) -> ImageStep
        with B = 1 whose tensors are one output slot of graph A (valid for `slots` frames);
        prev_stereo None (scene start) runs graph S into graph A's prev_stereo input."""
        a = self.image
        if images.shape[0] != 1:
            raise ValueError(f"B: the engines run batch 1, got images {tuple(images.shape)}")
        slot = self.slots[self._next]
        self._next = (self._next + 1) % len(self.slots)
        for name, tensor in slot.items():
            a.bind(name, tensor)
        self.clock.clear()
        a.buffers["images"].copy_(images[0], non_blocking=True)  # (N, 3, H, W)
        a.buffers["mlp_input"].copy_(mlp_in[0], non_blocking=True)  # (N, 27)
        a.buffers["stereo_grid"].copy_(grid, non_blocking=True)  # (N, D·h, w, 2)
        if prev_stereo is None:
            self.clock.start("stereo_graph")
            self.stereo.run(self.stream)  # -> a.buffers["prev_stereo"]
            self.clock.stop("stereo_graph")
        else:
            a.buffers["prev_stereo"].copy_(prev_stereo[0], non_blocking=True)  # (N, Cs, h, w)
        self.clock.start("image_graph")
        a.run(self.stream)
        self.clock.stop("image_graph")
        return ImageStep(slot["depth"][None], slot["context"][None], slot["stereo"][None])

    def bev_step(self, bev_prev: Tensor, bev_curr: Tensor) -> Tensor:
        """(1, Cctx·Dz, Y, X) each -> (1, X, Y, Z, cls): graph B's output buffer (valid until the
        next step)."""
        b = self.bev
        b.buffers["bev_prev"].copy_(bev_prev)
        b.buffers["bev_curr"].copy_(bev_curr)
        self.clock.start("bev_graph")
        b.run(self.stream)
        self.clock.stop("bev_graph")
        return b.buffers["logits"]

    def timings(self) -> dict[str, float]:
        """Graph -> ms of the last frame (synchronises)."""
        return self.clock.results()


def _same(a: Tensor, b: Tensor) -> bool:
    return a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.dtype == b.dtype


def check_shared(
    bindings: Mapping[str, tuple[tuple[int, ...], torch.dtype]], shared: Mapping[str, Tensor]
) -> list[str]:
    """Problems binding `shared` tensors to bindings (name -> (shape, dtype))."""
    problems = []
    for name, t in shared.items():
        if name not in bindings:
            problems.append(f"no binding {name!r}")
            continue
        shape, dtype = bindings[name]
        if tuple(t.shape) != shape or t.dtype != dtype:
            problems.append(
                f"{name}: tensor {tuple(t.shape)} {t.dtype} != binding {shape} {dtype}"
            )
        elif not t.is_contiguous():
            problems.append(f"{name}: tensor is not contiguous")
    return problems
