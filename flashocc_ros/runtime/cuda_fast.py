"""PyTorch fast path: GPU preprocessing, device pooling indices, fp16, channels-last, CUDA graphs.
In: uint8 BGR camera images / normalised images (1, N, 3, H, W) + Calibration. Out: logits.

Each fast path keeps a plain reference beside it, and tests check they agree:

- `GpuPreprocessor` (upload uint8, bicubic antialiased resize in Pillow's two passes with uint8
  rounding between them, bottom crop, normalise on the device) vs
  `model.preprocess.preprocess_images` (Pillow on the CPU). Pillow computes in fixed point, this
  path in float: they agree to about one grey level.
- `DeviceIndices` (pooling indices on the device, recomputed only when the calibration,
  compared on the CPU, changes) vs `LiftGeometry.indices`.
- `CudaFastBackend` (graph A / pooling / graph B split as in the exported engines, autocast,
  channels-last, each dense half captured in a `torch.cuda.CUDAGraph`) vs `TorchBackend`.
  Capture needs CUDA and static shapes (batch 1, fixed N, H, W); on the CPU or when capture
  fails it runs the same halves eagerly and says so once in the log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from flashocc_ros.config import ModelConfig
from flashocc_ros.model.bev_pool import bev_pool
from flashocc_ros.model.flashocc import FlashOCC
from flashocc_ros.model.geometry import Calibration, LiftGeometry, PoolingIndices, prepare_pooling
from flashocc_ros.model.preprocess import MEAN, STD, ImageAug, Preprocessed, inference_aug
from flashocc_ros.runtime.backend import (
    BackendError,
    FramePoses,
    Precision,
    check_torch_precision,
)

LOG = logging.getLogger(__name__)

_DTYPES = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


class GpuPreprocessor:
    """`preprocess_images` on a torch device: same geometry and normalisation, test-time aug.

    Call it like `preprocess_images(images, input_hw)`; the images come back on `device`,
    post_rot/post_tran on the CPU (they feed the calibration, which stays on the host).
    """

    def __init__(self, device: str | torch.device = "cuda") -> None:
        self.device = torch.device(device)
        self.mean = torch.tensor(MEAN, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(STD, device=self.device).view(1, 3, 1, 1)
        self._augs: dict[tuple[tuple[int, int], tuple[int, int]], tuple[ImageAug, Tensor, Tensor]]
        self._augs = {}

    def _aug_mats(
        self, src_hw: tuple[int, int], input_hw: tuple[int, int]
    ) -> tuple[ImageAug, Tensor, Tensor]:
        key = (src_hw, input_hw)
        if key not in self._augs:
            aug = inference_aug(src_hw, input_hw)
            rot, tran = aug.matrices()
            self._augs[key] = (
                aug,
                torch.tensor(rot, dtype=torch.float32),
                torch.tensor(tran, dtype=torch.float32),
            )
        return self._augs[key]

    def resize_crop(self, image: np.ndarray, aug: ImageAug) -> Tensor:
        """(H, W, 3) uint8 -> (3, h, w) float32 in [0, 255] on the device, integer-valued."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
        x = torch.from_numpy(np.ascontiguousarray(image)).to(self.device, non_blocking=True)
        x = x.permute(2, 0, 1)[None].float()  # (H, W, 3) -> (1, 3, H, W)
        new_w, new_h = aug.resize_dims
        # Pillow resizes horizontally, stores uint8, then vertically: the same two passes here
        # (bicubic with antialias is Pillow's filter; the unchanged axis is an exact identity).
        for size in ((x.shape[2], new_w), (new_h, new_w)):
            x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)
            x = x.round_().clamp_(0, 255)  # (1, 3, ., .) integer-valued like a uint8 image
        return _crop(x[0], aug.crop)  # (3, h, w)

    def __call__(self, images: Sequence[np.ndarray], input_hw: tuple[int, int]) -> Preprocessed:
        """N BGR uint8 images (H_n, W_n, 3) -> Preprocessed with images (N, 3, h, w) on device."""
        if not images:
            raise ValueError("N: need at least one image")
        planes, rots, trans = [], [], []
        for img in images:
            aug, rot, tran = self._aug_mats((int(img.shape[0]), int(img.shape[1])), input_hw)
            planes.append(self.resize_crop(img, aug))
            rots.append(rot)
            trans.append(tran)
        x = torch.stack(planes)  # (N, 3, h, w)
        return Preprocessed((x - self.mean) / self.std, torch.stack(rots), torch.stack(trans))


def _crop(x: Tensor, box: tuple[int, int, int, int]) -> Tensor:
    """(C, H, W) -> (C, y1-y0, x1-x0) like PIL's crop: outside the image is zero."""
    x0, y0, x1, y1 = box
    c, h, w = x.shape
    if 0 <= x0 and 0 <= y0 and x1 <= w and y1 <= h:
        return x[:, y0:y1, x0:x1]
    out = x.new_zeros(c, y1 - y0, x1 - x0)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if sx1 > sx0 and sy1 > sy0:
        out[:, sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = x[:, sy0:sy1, sx0:sx1]
    return out


class DeviceIndices:
    """Pooling indices on `device` for the current calibration; the calibration is compared on
    the CPU (no device sync per frame) and the indices are recomputed only when it changes."""

    def __init__(self, cfg: ModelConfig, device: str | torch.device) -> None:
        self.device = torch.device(device)
        self.grid = cfg.grid
        self.geometry = LiftGeometry(cfg).to(self.device)
        self._key: Calibration | None = None
        self._indices: PoolingIndices | None = None
        self.rebuilds = 0

    def get(self, calib: Calibration) -> PoolingIndices:
        host = calib.to("cpu")
        if self._indices is None or not host.equals(self._key):
            coords = self.geometry.coords(host.to(self.device))  # (B, N, D, fH, fW, 3)
            self._indices = prepare_pooling(coords, self.grid)
            self._key = Calibration(*(t.clone() for t in host.tensors()))
            self.rebuilds += 1
        return self._indices


def pool_bev(depth: Tensor, context: Tensor, indices: PoolingIndices, cfg: ModelConfig) -> Tensor:
    """(N, D, fH, fW) depth, (N, Cctx, fH, fW) context of one frame -> (1, Cctx·Dz, Y, X), fp32
    (the `bev_pool` fast path between graph A and graph B)."""
    feat = context[None].permute(0, 1, 3, 4, 2).float().contiguous()  # (1, N, fH, fW, Cctx)
    with torch.autocast(depth.device.type, enabled=False):
        return bev_pool(depth[None].float(), feat, indices, cfg.grid)


class StageTimer:
    """Per-stage milliseconds: CUDA events on the current stream on CUDA (created once), wall
    clock on the CPU. `mark()` after each stage, then `finish(names)` (one sync)."""

    def __init__(self, device: torch.device, stages: int) -> None:
        self.cuda = device.type == "cuda"
        self._events: list[torch.cuda.Event] = []
        for _ in range(stages + 1 if self.cuda else 0):
            self._events.append(torch.cuda.Event(enable_timing=True))  # type: ignore[no-untyped-call]
        self._times: list[float] = []
        self._n = 0  # events recorded since start()

    def start(self) -> None:
        self._times = [time.perf_counter()]
        if self.cuda:
            self._events[0].record()
        self._n = 1

    def mark(self) -> None:
        if self.cuda:
            self._events[self._n].record()
        else:
            self._times.append(time.perf_counter())
        self._n += 1

    def finish(self, names: Sequence[str]) -> dict[str, float]:
        if self.cuda:
            self._events[self._n - 1].synchronize()
            ms = [self._events[i].elapsed_time(self._events[i + 1]) for i in range(self._n - 1)]
        else:
            ms = [(b - a) * 1e3 for a, b in zip(self._times, self._times[1:], strict=False)]
        out = dict(zip(names, ms, strict=True))
        out["backend_total"] = (time.perf_counter() - self._times[0]) * 1e3
        return out


class _Captured:
    """One CUDA graph of `fn(static_input)` with static output tensors."""

    def __init__(self, fn: Callable[[Tensor], tuple[Tensor, ...]], example: Tensor) -> None:
        self.input = example.clone()
        side = torch.cuda.Stream(example.device)  # type: ignore[no-untyped-call]
        side.wait_stream(torch.cuda.current_stream(example.device))
        with torch.cuda.stream(side):
            for _ in range(3):  # warm-up: cuDNN autotuning and lazy init outside the capture
                fn(self.input)
        torch.cuda.current_stream(example.device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.outputs = fn(self.input)

    def __call__(self, x: Tensor) -> tuple[Tensor, ...]:
        self.input.copy_(x)
        self.graph.replay()
        return self.outputs


class CudaFastBackend:
    """Single-frame FlashOCC in PyTorch split like the engines: image half, pooling, BEV half.

    fp16 (CUDA) / bf16 (CPU) autocast, channels-last weights and inputs, pooling indices on the
    device, and on CUDA each half replayed from a CUDA graph. Outputs of a replayed graph live
    in static buffers: the returned logits are valid until the next `infer`.
    """

    def __init__(
        self,
        model: FlashOCC,
        cfg: ModelConfig,
        device: str = "cuda",
        precision: Precision = "fp16",
        channels_last: bool = True,
        cuda_graphs: bool = True,
    ) -> None:
        from flashocc_ros.deploy.onnx_export import BevToLogits, ExportError, ImageToDepth

        self.device = torch.device(device)
        check_torch_precision(self.device, precision)
        try:
            self.image_half = ImageToDepth(model, cfg)  # single-frame LSS configs only
        except ExportError as err:
            raise BackendError(f"torch fast path: {err}; use backend torch") from err
        self.cfg = cfg
        self.precision = precision
        self.dtype = _DTYPES[precision]
        model = model.to(self.device).eval()
        if channels_last:
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.channels_last = channels_last
        self.bev_half = BevToLogits(model)
        self.indices = DeviceIndices(cfg, self.device)
        self.use_graphs = cuda_graphs and self.device.type == "cuda"
        self._graphs: tuple[_Captured, _Captured] | None = None
        self._timer = StageTimer(self.device, 3)
        self._timings: dict[str, float] = {}
        mode = "cuda-graphs" if self.use_graphs else "eager"
        self.name = f"torch-fast-{self.device.type}-{precision}-{mode}"

    def reset(self) -> None:
        """Single-frame model: no history."""

    def last_stage_timings_ms(self) -> dict[str, float]:
        return dict(self._timings)

    def _autocast(self) -> torch.autocast:
        enabled = self.dtype is not None
        return torch.autocast(
            self.device.type, dtype=self.dtype, enabled=enabled, cache_enabled=False
        )

    def _image_fn(self, images: Tensor) -> tuple[Tensor, ...]:
        """(N, 3, H, W) -> depth (N, D, fH, fW) fp32, context (N, Cctx, fH, fW)."""
        with self._autocast():
            depth, context = self.image_half(images)
        return depth.float(), context.float()

    def _bev_fn(self, bev: Tensor) -> tuple[Tensor, ...]:
        """(1, Cctx·Dz, Y, X) -> logits (1, X, Y, Z, cls) fp32."""
        with self._autocast():
            logits = self.bev_half(bev)
        return (logits.float(),)

    def _capture(self, images: Tensor, bev: Tensor) -> None:
        try:
            self._graphs = (_Captured(self._image_fn, images), _Captured(self._bev_fn, bev))
        except RuntimeError as err:
            LOG.warning("torch fast path: CUDA graph capture failed, running eagerly: %s", err)
            self.use_graphs = False
            self.name = self.name.replace("cuda-graphs", "eager")

    def _prepare(self, images: Tensor) -> Tensor:
        n, (h, w) = self.cfg.num_cameras, self.cfg.input_size
        if tuple(images.shape) != (1, n, 3, h, w):
            raise ValueError(
                f"images (B, N, 3, H, W) must be (1, {n}, 3, {h}, {w}) (batch B = 1), "
                f"got {tuple(images.shape)}"
            )
        x = images[0].to(self.device, torch.float32, non_blocking=True)  # (N, 3, H, W)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    @torch.inference_mode()
    def infer(self, images: Tensor, calib: Calibration, poses: FramePoses | None = None) -> Tensor:
        """(1, N, 3, H, W) normalised images -> (1, X, Y, Z, cls) float32 logits on device."""
        x = self._prepare(images)
        indices = self.indices.get(calib)
        self._timer.start()
        if self.use_graphs and self._graphs is None:
            depth, context = self._image_fn(x)
            self._capture(x, pool_bev(depth, context, indices, self.cfg))
        graphs = self._graphs if self.use_graphs else None
        depth, context = graphs[0](x) if graphs else self._image_fn(x)
        self._timer.mark()
        bev = pool_bev(depth, context, indices, self.cfg)  # (1, Cctx·Dz, Y, X)
        self._timer.mark()
        (logits,) = graphs[1](bev) if graphs else self._bev_fn(bev)
        self._timer.mark()
        self._timings = self._timer.finish(("image_graph", "pooling", "bev_graph"))
        return logits
