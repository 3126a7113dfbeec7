"""INT8 calibration data: bag frames through the node's own preprocessing, graph inputs, batches.
In: a rosbag2 + NodeConfig + FlashOCC. Out: per-graph input tensors, a batch feeder, cache files.

Frames come from `tools.replay.OfflineReplay` (the node's synchroniser, TF buffer, assembler,
preprocessing and calibration) with a recording backend in place of the network, so the
calibration inputs are exactly what the node feeds graph A. Graph B's inputs are BEV features:
graph A's computation and the pooling run in PyTorch fp32 for each frame (`graph_inputs`).

4D-stereo configs (M2) calibrate on the inputs of consecutive frames: the bag runs through the
node's pipeline with `TorchBackend` (fp32, the node's history spacing and gap rules), whose
`TemporalHistory` drives a `RecordingTemporalNet`; it records what each graph gets at runtime
(A: images, mlp_input, prev_stereo, stereo_grid; B: bev_prev, bev_curr; S: images), every
`stride`-th frame, while the history sees every frame (`gather_temporal_calibration`).

`BatchFeeder` is the TensorRT-independent part of the calibrator: it copies one batch per
call into preallocated (CUDA) buffers and hands out their device pointers; the TensorRT
subclass in `trt_build` only forwards to it.

`CalibrationCache` stores TensorRT's calibration table (a text file: a `TRT-<version>-<algorithm>`
line, then `<tensor>: <hex scale>` lines; never unpickled, and checked to be one before TensorRT
reads it) with a JSON record beside it: the sha256 of the ONNX graph and of the calibration
batches it was computed from (`CalibrationData`), their count and the bag. A build with frames
reuses a cache only for the same graph and the same batches; a build without frames reuses one of
the same graph and names the data the record says it came from.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from flashocc_ros.config import ModelConfig
from flashocc_ros.model.bev_pool import bev_pool
from flashocc_ros.model.flashocc import FlashOCC
from flashocc_ros.model.geometry import Calibration, LiftGeometry
from flashocc_ros.model.temporal import ImageStep, TorchTemporalNet
from flashocc_ros.node_config import NodeConfig
from flashocc_ros.runtime.backend import BackendError, FramePoses, TorchBackend

if TYPE_CHECKING:
    from flashocc_ros.runtime.pipeline import OccupancyPipeline

#: Per graph name, one dict of input name -> tensor per calibration frame (CPU, float32).
GraphBatches = dict[str, list[dict[str, Tensor]]]

LOG = logging.getLogger(__name__)


class CalibrationError(RuntimeError):
    """Calibration frames cannot be gathered or fed."""


@dataclass(frozen=True)
class CalibFrame:
    """One preprocessed bundle, as the node hands it to the network."""

    images: Tensor  # (1, N, 3, H, W) float32 normalised
    calib: Calibration  # B = 1 (single-frame models: key-ego folded extrinsics)
    poses: FramePoses | None = None  # per-camera ego poses (temporal models), else None


class RecordingBackend:
    """A Backend that keeps its inputs and returns zero logits (no network runs)."""

    def __init__(self, cfg: ModelConfig) -> None:
        self.name = "recording"
        self.frames: list[CalibFrame] = []
        g = cfg.grid
        self._zeros = torch.zeros(1).expand(1, g.size_x, g.size_y, g.size_z, cfg.num_classes)

    def infer(self, images: Tensor, calib: Calibration, poses: FramePoses | None = None) -> Tensor:
        cpu = images.detach().to("cpu", torch.float32)
        self.frames.append(CalibFrame(cpu, calib.to("cpu"), poses))
        return self._zeros  # (1, X, Y, Z, cls), no memory behind it

    def reset(self) -> None:
        """No history."""

    def last_stage_timings_ms(self) -> dict[str, float]:
        return {}


def select_frames(count: int, max_frames: int, stride: int) -> list[int]:
    """Indices of the bundles used for calibration: every `stride`-th, at most `max_frames`."""
    if max_frames < 1 or stride < 1:
        raise CalibrationError("calibration needs max_frames >= 1 and stride >= 1")
    return list(range(0, count, stride))[:max_frames]


def gather_calibration_frames(
    bag: Path, params: NodeConfig, cfg: ModelConfig, max_frames: int = 64, stride: int = 1
) -> list[CalibFrame]:
    """Up to `max_frames` preprocessed bundles of `bag` (every `stride`-th), read exactly as
    the node reads its topics (`OfflineReplay`: /<camera>/image_raw, camera_info, /tf)."""
    from flashocc_ros.runtime.pipeline import OccupancyPipeline
    from flashocc_ros.tools.replay import OfflineReplay

    if not Path(bag).exists():
        raise CalibrationError(f"calibration bag not found: {bag}")
    recorder = RecordingBackend(cfg)
    replay = OfflineReplay(params, OccupancyPipeline(cfg, recorder))
    limit = (max_frames - 1) * stride + 1
    try:
        for _ in replay.run(Path(bag)):
            if len(recorder.frames) >= limit:
                break
    except (OSError, ValueError, KeyError) as err:  # rosbags reader errors are ValueErrors
        raise CalibrationError(f"cannot read calibration bag {bag}: {err}") from err
    frames = [recorder.frames[i] for i in select_frames(len(recorder.frames), max_frames, stride)]
    if not frames:
        raise CalibrationError(
            f"no complete camera bundle in {bag} for cameras {list(params.camera_names)} "
            f"(dropped: {replay.stats.failures or 'none'})"
        )
    LOG.info("calibration: %d frame(s) from %s", len(frames), bag)
    return frames


@torch.inference_mode()
def graph_inputs(
    model: FlashOCC, cfg: ModelConfig, frames: Sequence[CalibFrame], device: str = "cpu"
) -> dict[str, list[dict[str, Tensor]]]:
    """Per graph name, one input batch per frame: graph A {"images": (N, 3, H, W)}, graph B
    {"bev": (1, C·Dz, Y, X)} from graph A + pooling in PyTorch fp32 (tensors on the CPU)."""
    model = model.to(device).eval()
    geometry = LiftGeometry(cfg).to(device)
    vt = model.img_view_transformer
    a: list[dict[str, Tensor]] = []
    b: list[dict[str, Tensor]] = []
    for frame in frames:
        images = frame.images.to(device)  # (1, N, 3, H, W)
        feat = model.encode_images(images).feat  # (1, N, C, fH, fW)
        depth, context = vt.depth_context(feat, frame.calib.to(device))
        indices = geometry.indices(frame.calib.to(device))
        ctx = context.permute(0, 1, 3, 4, 2).float().contiguous()  # (1, N, fH, fW, Cctx)
        bev = bev_pool(depth.float(), ctx, indices, cfg.grid)  # (1, Cctx·Dz, Y, X)
        a.append({"images": images[0].cpu()})
        b.append({"bev": bev.cpu()})
    return {"image_to_depth": a, "bev_to_logits": b}


class RecordingTemporalNet:
    """`TorchTemporalNet` that records the inputs each 4D-stereo graph gets at runtime.

    Graph A gets `prev_stereo` from graph S at a scene start: the frame's own stereo feature,
    which is what `TorchTemporalNet` uses then (the recording stores that tensor). Every
    `stride`-th frame is kept, at most `max_frames`; the network runs on every frame.
    """

    def __init__(self, model: FlashOCC, stride: int = 1, max_frames: int = 64) -> None:
        select_frames(1, max_frames, stride)  # validates both
        self.inner = TorchTemporalNet(model)
        self.cfg = model.cfg
        self.stride, self.max_frames = stride, max_frames
        self.seen = 0  # frames processed
        self.batches: GraphBatches = {
            "image_to_depth": [],
            "bev_to_logits": [],
            "stereo_feature": [],
        }
        self._pending: dict[str, dict[str, Tensor]] | None = None

    @property
    def full(self) -> bool:
        return len(self.batches["bev_to_logits"]) >= self.max_frames

    def image_step(
        self, images: Tensor, mlp_in: Tensor, prev_stereo: Tensor | None, grid: Tensor
    ) -> ImageStep:
        """As `TorchTemporalNet.image_step` (B = 1), recording graph A's and S's inputs."""
        out = self.inner.image_step(images, mlp_in, prev_stereo, grid)
        keep = self.seen % self.stride == 0 and not self.full
        if keep:
            prev = out.stereo if prev_stereo is None else prev_stereo  # (1, N, Cs, h, w)
            frame = _host(images[0])  # (N, 3, H, W), one copy for graphs A and S
            self._pending = {
                "image_to_depth": {
                    "images": frame,
                    "mlp_input": _host(mlp_in[0]),  # (N, 27)
                    "prev_stereo": _host(prev[0]),  # (N, Cs, h, w)
                    "stereo_grid": _host(grid),  # (N, D·h, w, 2)
                },
                "stereo_feature": {"images": frame},
            }
        return out

    def bev_step(self, bev_prev: Tensor, bev_curr: Tensor) -> Tensor:
        """As `TorchTemporalNet.bev_step`, recording graph B's inputs (1, Cctx·Dz, Y, X)."""
        if self._pending is not None:
            self._pending["bev_to_logits"] = {
                "bev_prev": _host(bev_prev),
                "bev_curr": _host(bev_curr),
            }
            for graph, inputs in self._pending.items():
                self.batches[graph].append(inputs)
            self._pending = None
        self.seen += 1
        return self.inner.bev_step(bev_prev, bev_curr)


def _host(t: Tensor) -> Tensor:
    return t.detach().to("cpu", torch.float32).clone()


def temporal_recorder(
    model: FlashOCC,
    cfg: ModelConfig,
    params: NodeConfig,
    max_frames: int = 64,
    stride: int = 1,
    device: str = "cpu",
) -> tuple[OccupancyPipeline, RecordingTemporalNet]:
    """The node's pipeline for a 4D-stereo `cfg` (TorchBackend fp32 on `device`, the node's
    history spacing and gap rules) with a `RecordingTemporalNet` behind its history."""
    from flashocc_ros.runtime.pipeline import OccupancyPipeline

    backend = TorchBackend(
        model, cfg, device, "fp32", history_spacing_ns=int(params.history_spacing_s * 1e9)
    )
    if backend.history is None:
        raise CalibrationError(f"model config {cfg.name!r} is not temporal")
    recorder = RecordingTemporalNet(model, stride, max_frames)  # the model TorchBackend runs
    backend.history.net = recorder
    pipeline = OccupancyPipeline(cfg, backend, max_gap_ns=int(params.history_max_gap_s * 1e9))
    return pipeline, recorder


def gather_temporal_calibration(
    bag: Path,
    params: NodeConfig,
    cfg: ModelConfig,
    model: FlashOCC,
    max_frames: int = 64,
    stride: int = 1,
    device: str = "cpu",
) -> GraphBatches:
    """Inputs of stereo graphs A, B and S for up to `max_frames` bundles of `bag` (every
    `stride`-th; the history sees all of them), read and processed exactly as the node does
    (`OfflineReplay`: /<camera>/image_raw, camera_info, /tf with odom -> base_link poses).
    Host memory: about 155 MB per frame for M2 (R50): prev_stereo 69 MB, the grid 48 MB, the
    BEVs 26 MB, the images 13 MB."""
    from flashocc_ros.tools.replay import OfflineReplay

    if not Path(bag).exists():
        raise CalibrationError(f"calibration bag not found: {bag}")
    pipeline, recorder = temporal_recorder(model, cfg, params, max_frames, stride, device)
    replay = OfflineReplay(params, pipeline)
    try:
        for _ in replay.run(Path(bag)):
            if recorder.full:
                break
    except (OSError, ValueError, KeyError, BackendError) as err:
        raise CalibrationError(f"cannot read calibration bag {bag}: {err}") from err
    frames = len(recorder.batches["bev_to_logits"])
    if not frames:
        raise CalibrationError(
            f"no complete camera bundle with ego poses in {bag} for cameras "
            f"{list(params.camera_names)} (dropped: {replay.stats.failures or 'none'})"
        )
    LOG.info("calibration: %d consecutive-frame input(s) from %s", frames, bag)
    return recorder.batches


class BatchFeeder:
    """Copies calibration batches into preallocated buffers, one batch per `next_pointers`.

    `buffers` maps each network input name to a tensor of the batch's shape on the device
    TensorRT reads (CUDA in a build, CPU in tests); the pointers handed out stay valid while
    the feeder lives. Batch size is 1 frame (static-shape engines).
    """

    def __init__(
        self, batches: Sequence[Mapping[str, Tensor]], buffers: Mapping[str, Tensor]
    ) -> None:
        if not batches:
            raise CalibrationError("no calibration batches")
        for i, batch in enumerate(batches):
            if set(batch) != set(buffers):
                raise CalibrationError(
                    f"batch {i} has inputs {sorted(batch)}, the network {sorted(buffers)}"
                )
            for name, t in batch.items():
                if tuple(t.shape) != tuple(buffers[name].shape):
                    raise CalibrationError(
                        f"batch {i} input {name!r} is {tuple(t.shape)}, the network expects "
                        f"{tuple(buffers[name].shape)}"
                    )
        self.batches = list(batches)
        self.buffers = dict(buffers)
        self.fed = 0  # batches handed out so far

    def __len__(self) -> int:
        return len(self.batches)

    def next_pointers(self, names: Sequence[str]) -> list[int] | None:
        """Device pointers of the next batch in `names` order, or None when all were fed."""
        if self.fed >= len(self.batches):
            return None
        unknown = [n for n in names if n not in self.buffers]
        if unknown:
            raise CalibrationError(f"TensorRT asked for unknown inputs {unknown}")
        batch = self.batches[self.fed]
        for name in names:
            self.buffers[name].copy_(batch[name])
        for device in {b.device for b in self.buffers.values() if b.is_cuda}:
            torch.cuda.synchronize(device)  # TensorRT reads the buffers on its own stream
        self.fed += 1
        return [int(self.buffers[n].data_ptr()) for n in names]

    def reset(self) -> None:
        self.fed = 0

    def __iter__(self) -> Iterator[Mapping[str, Tensor]]:
        return iter(self.batches)


def batches_sha256(batches: Sequence[Mapping[str, Tensor]]) -> str:
    """sha256 over calibration batches in order: per batch, every input (sorted by name) with its
    dtype, shape and values. Equal for the same frames, whatever bag or path they came from."""
    digest = hashlib.sha256()
    for i, batch in enumerate(batches):
        for name in sorted(batch):
            t = batch[name].detach().to("cpu").contiguous()
            digest.update(f"{i}|{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            digest.update(t.view(-1).view(torch.uint8).numpy().data)  # no copy
    return digest.hexdigest()


@dataclass(frozen=True)
class CalibrationData:
    """What a calibration cache is computed from: one graph's calibration batches."""

    sha256: str  # `batches_sha256` of the batches
    frames: int  # how many batches (bundles)
    bag: str = ""  # the recording they were read from ("" when not from a bag)

    @staticmethod
    def of(batches: Sequence[Mapping[str, Tensor]], bag: str = "") -> CalibrationData:
        return CalibrationData(batches_sha256(batches), len(batches), bag)

    def record(self) -> dict[str, Any]:
        """The fields the cache's JSON record and the engine metadata carry."""
        return {"data_sha256": self.sha256, "frames": self.frames, "bag": self.bag}


#: Largest calibration table read (a table has one short line per tensor: kilobytes).
MAX_TABLE_BYTES = 64 << 20
_TABLE_HEADER = re.compile(r"TRT-\d+-\w+")  # e.g. TRT-100300-EntropyCalibration2
_TABLE_ENTRY = re.compile(r".+: [0-9a-fA-F]{1,8}")  # <tensor name>: <float32 scale bits, hex>


def table_problem(data: bytes) -> str:
    """Why `data` is not a TensorRT calibration table ("" when it is one): text whose first
    line is `TRT-<version>-<algorithm>` and whose other lines are `<tensor>: <hex scale>`."""
    if len(data) > MAX_TABLE_BYTES:
        return f"{len(data)} bytes, more than a calibration table holds"
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        return "binary data, not text"
    if not lines or not _TABLE_HEADER.fullmatch(lines[0]):
        return "no TRT-<version>-<algorithm> first line"
    for number, line in enumerate(lines[1:], start=2):
        if line and not _TABLE_ENTRY.fullmatch(line):
            return f"line {number} is not '<tensor>: <hex scale>'"
    if not any(lines[1:]):
        return "no tensor scales"
    return ""


class CalibrationCache:
    """TensorRT's calibration table at `path` with its JSON record `<path>.json`.

    Usable for the ONNX graph `onnx_sha256` and, when `data` is given, only when it was computed
    from exactly those batches (`problem` says why not). `write` records both; without `data`
    (a build from caches alone) it keeps the data the record already names.
    """

    def __init__(self, path: Path, onnx_sha256: str, data: CalibrationData | None = None) -> None:
        self.path = Path(path)
        self.onnx_sha256 = onnx_sha256
        self.data = data
        self.sidecar = self.path.with_name(self.path.name + ".json")

    def record(self) -> dict[str, Any] | None:
        """The JSON record (None when missing, unreadable or not a record)."""
        try:
            record = json.loads(self.sidecar.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or not isinstance(record.get("onnx_sha256"), str):
            return None
        return record

    def problem(self) -> str:
        """Why this cache cannot be used ("" when it can), in one line."""
        if not self.path.is_file():
            return f"no calibration cache {self.path}"
        record = self.record()
        if record is None:
            return f"calibration cache {self.path}: its record {self.sidecar.name} is unreadable"
        if record["onnx_sha256"] != self.onnx_sha256:
            return f"calibration cache {self.path} belongs to another ONNX export"
        if self.data is not None and record.get("data_sha256") != self.data.sha256:
            return (
                f"calibration cache {self.path} was computed from other frames "
                f"({_describe(record)}; now {self.data.frames} frame(s) from "
                f"{self.data.bag or 'memory'}, sha256 {self.data.sha256[:12]})"
            )
        try:
            why = table_problem(self.path.read_bytes())
        except OSError as err:
            why = str(err)
        return f"{self.path} is not a TensorRT calibration table: {why}" if why else ""

    def valid(self) -> bool:
        return not self.problem()

    def read(self) -> bytes | None:
        """The table when usable; None (TensorRT then calibrates) otherwise."""
        problem = self.problem()
        if problem:
            if self.path.is_file():
                LOG.info("calibration: not reusing the cache: %s", problem)
            return None
        LOG.info("calibration: using cache %s", self.path)
        return self.path.read_bytes()

    def write(self, data: bytes) -> None:
        why = table_problem(data)
        if why:
            LOG.warning(
                "calibration: TensorRT wrote a table this build does not recognise (%s); "
                "%s will not be reused",
                why,
                self.path,
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(self.path)
        previous = self.record() or {}
        kept = {k: v for k, v in previous.items() if k in ("data_sha256", "frames", "bag")}
        data_fields = kept if self.data is None else self.data.record()
        record = {"onnx_sha256": self.onnx_sha256, **data_fields}
        self.sidecar.write_text(json.dumps(record, sort_keys=True) + "\n")


def _describe(record: Mapping[str, Any]) -> str:
    """The frames a cache record names: count, bag and sha256 (older records name none)."""
    if "data_sha256" not in record:
        return "frames not recorded"
    frames, bag = record.get("frames", "?"), record.get("bag") or "memory"
    return f"{frames} frame(s) from {bag}, sha256 {str(record['data_sha256'])[:12]}"
