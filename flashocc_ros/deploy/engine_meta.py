"""TensorRT engine folder layout, engine metadata and the load/rebuild/refuse decision.
In: ModelConfig, weights hash, precision, this machine's Platform. Out: paths, metadata, decision.

Nothing here imports TensorRT, so every rule is unit-tested on a CPU with fake platforms.

Engine folder (`engine_path` of the node, `--out` of `flashocc_ros.tools.build_engine`):

    <dir>/onnx/                          the ONNX export (deploy/onnx_export.py)
    <dir>/image_to_depth.<prec>.engine   graph A engine, <prec> in fp32 | fp16 | int8
    <dir>/image_to_depth.<prec>.json     its metadata (written last: no JSON, no engine)
    <dir>/bev_to_logits.<prec>.engine    graph B engine
    <dir>/bev_to_logits.<prec>.json
    <dir>/stereo_feature.<prec>.engine   graph S engine + .json (4D-stereo configs only)
    <dir>/timing.cache                   TensorRT timing cache (default location)
    <dir>/calib/<graph>.int8.calib(.json) INT8 calibration cache + the ONNX sha256 it belongs to

An engine is used only when its metadata matches the loaded model (config and weights hash),
the precision, the TensorRT version and the GPU (name and compute capability), the ONNX graph
it was built from is the one the folder's export holds now (when `onnx/` is there), and the
engine file's sha256 is the recorded one. Otherwise the backend refuses (with the build
command) or, with `engine_mismatch: rebuild`, rebuilds explicitly at start-up, never on a frame.
Metadata files are JSON, checked field by field before use (a crafted file is refused in one
line). `on_cuda_device` makes the configured GPU current around every TensorRT call.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flashocc_ros.config import ModelConfig
from flashocc_ros.deploy.onnx_export import (
    GRAPH_A_FILE,
    GRAPH_B_FILE,
    METADATA_FILE,
    ExportError,
    ExportMetadata,
    GraphSpec,
    check_exportable,
    config_differences,
    file_sha256,
    is_stereo_4d,
    read_metadata,
)
from flashocc_ros.deploy.onnx_stereo import STEREO_FEATURE_FILE

if TYPE_CHECKING:
    import torch

#: Bumped when the engine folder layout or the metadata fields change incompatibly.
ENGINE_FORMAT_VERSION = 1
#: Precisions an engine can be built in (TensorRT 10.x builder flags).
ENGINE_PRECISIONS = ("fp32", "fp16", "int8")
#: Graph names = ONNX file stems, in execution order (A, then pooling, then B).
GRAPHS = (Path(GRAPH_A_FILE).stem, Path(GRAPH_B_FILE).stem)
#: Graph S of 4D-stereo exports (the scene-start stereo feature).
STEREO_GRAPH = Path(STEREO_FEATURE_FILE).stem
#: Every graph name an engine folder can hold.
ALL_GRAPHS = (*GRAPHS, STEREO_GRAPH)
#: Policies of the node parameter `engine_mismatch`.
MISMATCH_POLICIES = ("refuse", "rebuild")


class EngineError(RuntimeError):
    """An engine folder is missing, stale or cannot be built or loaded."""


def check_engine_config(cfg: ModelConfig) -> None:
    """Raise EngineError unless TensorRT engines exist for `cfg`: exactly the configs the ONNX
    export supports (single-frame with the LSS depth net: two graphs; 4D-stereo M2: three)."""
    try:
        check_exportable(cfg)
    except ExportError as err:
        raise EngineError(f"no TensorRT engines: {err}; run it with backend torch") from err


def engine_graphs(cfg: ModelConfig) -> tuple[str, ...]:
    """The graphs whose engines a folder for `cfg` must hold (A, B[, S]), in execution order."""
    return ALL_GRAPHS if is_stereo_4d(cfg) else GRAPHS


@dataclass(frozen=True)
class EngineLayout:
    """Where every file of one engine folder lives, for one precision."""

    root: Path
    precision: str  # fp32 | fp16 | int8

    def __post_init__(self) -> None:
        if self.precision not in ENGINE_PRECISIONS:
            raise EngineError(
                f"precision {self.precision!r}: TensorRT engines are "
                f"{', '.join(ENGINE_PRECISIONS)}"
            )

    @property
    def onnx_dir(self) -> Path:
        return self.root / "onnx"

    @property
    def timing_cache(self) -> Path:
        return self.root / "timing.cache"

    def engine(self, graph: str) -> Path:
        return self.root / f"{_graph(graph)}.{self.precision}.engine"

    def metadata(self, graph: str) -> Path:
        return self.root / f"{_graph(graph)}.{self.precision}.json"

    def calib_cache(self, graph: str) -> Path:
        return self.root / "calib" / f"{_graph(graph)}.int8.calib"

    def onnx(self, graph: str) -> Path:
        return self.onnx_dir / f"{_graph(graph)}.onnx"


def _graph(graph: str) -> str:
    if graph not in ALL_GRAPHS:
        raise EngineError(f"unknown graph {graph!r}; graphs are {', '.join(ALL_GRAPHS)}")
    return graph


@dataclass(frozen=True)
class Platform:
    """What an engine is bound to besides the model: TensorRT version and GPU."""

    tensorrt_version: str  # e.g. "10.13.0.35"
    gpu_name: str  # torch.cuda.get_device_name()
    compute_capability: str  # "major.minor", e.g. "8.6"


def cuda_platform(tensorrt_version: str, device: str = "cuda") -> Platform:
    """The Platform of a CUDA `device` (needs CUDA; the TensorRT version comes from the caller)."""
    import torch

    if not torch.cuda.is_available():
        raise EngineError("no CUDA device visible to PyTorch")
    dev = torch.device(device)
    major, minor = torch.cuda.get_device_capability(dev)
    return Platform(tensorrt_version, torch.cuda.get_device_name(dev), f"{major}.{minor}")


def on_cuda_device(device: str | torch.device) -> AbstractContextManager[object]:
    """A block in which `device` is the current CUDA device (`torch.cuda.device`, i.e.
    cudaSetDevice). TensorRT builds, deserialises and runs on the current device, not on the
    device of the buffers handed to it, so every TensorRT call runs inside one. CPU devices
    (the fakes in the tests) get a block that changes nothing."""
    import torch

    dev = torch.device(device)
    if dev.type != "cuda":
        return contextlib.nullcontext()
    return torch.cuda.device(dev)  # type: ignore[no-untyped-call]


@dataclass(frozen=True)
class EngineMetadata:
    """`<graph>.<precision>.json`, written after the engine file."""

    graph: str  # image_to_depth | bev_to_logits | stereo_feature
    precision: str
    model_config: dict[str, Any]  # ModelConfig.to_dict() of the exported model
    weights_sha256: str  # onnx_export.weights_sha256 of the exported weights
    onnx_sha256: dict[str, str]  # ONNX file name -> sha256, every graph of the export
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    inputs: dict[str, list[int]]  # binding name -> static shape
    outputs: dict[str, list[int]]
    engine_sha256: str  # of the .engine file next to this JSON
    torch_version: str = ""
    calibration: dict[str, Any] = field(default_factory=dict)  # int8: source, frames, cache
    format_version: int = ENGINE_FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"

    @staticmethod
    def from_json(text: str) -> EngineMetadata:
        """Parse and check every field's type (ValueError naming the first wrong one)."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("engine metadata must be a JSON object")
        unknown = sorted(set(data) - set(_FIELD_CHECKS))
        if unknown:
            raise ValueError(f"unknown field(s) {unknown}")
        for name, value in data.items():
            if not _FIELD_CHECKS[name](value):
                raise ValueError(f"field {name!r} has the wrong type: {str(value)[:40]!r}")
        return EngineMetadata(**data)


def _str_map(value: object) -> bool:
    return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())


def _shape_map(value: object) -> bool:
    return isinstance(value, dict) and all(
        isinstance(v, list) and all(isinstance(d, int) for d in v) for v in value.values()
    )


#: The type check of each EngineMetadata field as read from JSON.
_FIELD_CHECKS: dict[str, Callable[[object], bool]] = {
    "graph": lambda v: isinstance(v, str),
    "precision": lambda v: isinstance(v, str),
    "model_config": lambda v: isinstance(v, dict),
    "weights_sha256": lambda v: isinstance(v, str),
    "onnx_sha256": _str_map,
    "tensorrt_version": lambda v: isinstance(v, str),
    "gpu_name": lambda v: isinstance(v, str),
    "compute_capability": lambda v: isinstance(v, str),
    "inputs": _shape_map,
    "outputs": _shape_map,
    "engine_sha256": lambda v: isinstance(v, str),
    "torch_version": lambda v: isinstance(v, str),
    "calibration": lambda v: isinstance(v, dict),
    "format_version": lambda v: isinstance(v, int),
}


def make_metadata(
    graph: str,
    precision: str,
    export: ExportMetadata,
    platform: Platform,
    engine_sha256: str,
    *,
    torch_version: str = "",
    calibration: dict[str, Any] | None = None,
) -> EngineMetadata:
    """Metadata of a freshly built engine of `graph` from the export described by `export`."""
    spec = graph_spec(export, graph)
    return EngineMetadata(
        graph=graph,
        precision=precision,
        model_config=dict(export.model_config),
        weights_sha256=export.weights_sha256,
        onnx_sha256={g.file: g.sha256 for g in export.graphs()},
        tensorrt_version=platform.tensorrt_version,
        gpu_name=platform.gpu_name,
        compute_capability=platform.compute_capability,
        inputs={k: list(v) for k, v in spec.inputs.items()},
        outputs={k: list(v) for k, v in spec.outputs.items()},
        engine_sha256=engine_sha256,
        torch_version=torch_version,
        calibration=dict(calibration or {}),
    )


def graph_spec(export: ExportMetadata, graph: str) -> GraphSpec:
    """The export's description of `graph` (EngineError when the export has no such graph)."""
    specs = dict(zip(ALL_GRAPHS, export.graphs(), strict=False))
    if _graph(graph) not in specs:
        raise EngineError(f"the export has no graph {graph!r} (a single-frame export)")
    return specs[graph]


@dataclass(frozen=True)
class Expected:
    """What the runtime needs an engine to be: model, weights, precision, platform."""

    cfg: ModelConfig
    weights_sha256: str | None  # None: not checked
    precision: str
    platform: Platform


def metadata_mismatches(meta: EngineMetadata, expected: Expected) -> list[str]:
    """Human-readable reasons why `meta` does not fit `expected` (empty: it fits)."""
    reasons: list[str] = []
    if meta.format_version != ENGINE_FORMAT_VERSION:
        reasons.append(
            f"metadata format {meta.format_version}, this build reads {ENGINE_FORMAT_VERSION}"
        )
    reasons += [f"model config {d}" for d in config_differences(meta.model_config, expected.cfg)]
    want_w = expected.weights_sha256
    if want_w is not None and meta.weights_sha256 != want_w:
        reasons.append(
            f"weights sha256 {meta.weights_sha256[:12]}… != loaded model {want_w[:12]}…"
        )
    if meta.precision != expected.precision:
        reasons.append(f"precision {meta.precision} != requested {expected.precision}")
    plat = expected.platform
    if meta.tensorrt_version != plat.tensorrt_version:
        reasons.append(
            f"built with TensorRT {meta.tensorrt_version}, this is TensorRT "
            f"{plat.tensorrt_version}"
        )
    if meta.compute_capability != plat.compute_capability:
        reasons.append(
            f"built for compute capability {meta.compute_capability}, this GPU has "
            f"{plat.compute_capability}"
        )
    if meta.gpu_name != plat.gpu_name:
        reasons.append(f"built on GPU {meta.gpu_name!r}, this is {plat.gpu_name!r}")
    return reasons


def read_engine_metadata(path: Path) -> EngineMetadata:
    """Metadata JSON at `path`; EngineError when missing or unreadable."""
    if not path.is_file():
        raise EngineError(f"{path.name} missing")
    try:
        return EngineMetadata.from_json(path.read_text())
    except (OSError, ValueError, TypeError) as err:
        raise EngineError(f"{path.name} unreadable: {err}") from err


def export_graph_hashes(onnx_dir: Path) -> dict[str, str] | None:
    """ONNX file name -> sha256 of the export in `onnx_dir`, as its metadata records them;
    None when the folder holds no export (engines may be deployed without it). ExportError
    when the export metadata is unreadable."""
    if not (onnx_dir / METADATA_FILE).is_file():
        return None
    return {spec.file: spec.sha256 for spec in read_metadata(onnx_dir).graphs()}


def onnx_mismatch(meta: EngineMetadata, onnx_file: str, current: dict[str, str]) -> str:
    """Why an engine built from the graphs `meta.onnx_sha256` is stale for the export whose
    hashes are `current` ("" when its graph `onnx_file` is the same file)."""
    built, now = meta.onnx_sha256.get(onnx_file), current.get(onnx_file)
    if built == now:
        return ""
    return (
        f"built from another {onnx_file} (sha256 {(built or 'none')[:12]}), the export in "
        f"onnx/ now holds sha256 {(now or 'none')[:12]}"
    )


def check_engines(layout: EngineLayout, expected: Expected) -> list[str]:
    """Every reason the engines of `layout` cannot be loaded for `expected` (empty: usable).

    Reasons are prefixed with the graph name. Engine files are hashed, so a truncated or
    replaced engine is caught before TensorRT sees it. Each engine's recorded ONNX hash is
    compared with the export in `layout.onnx_dir` when one is there (a re-export, e.g. by
    another exporter version, makes the engines stale). Which graphs must be there follows
    the expected config (`engine_graphs`: a 4D-stereo folder without graph S is stale).
    """
    reasons: list[str] = []
    try:
        current = export_graph_hashes(layout.onnx_dir)
    except ExportError as err:
        current = None
        reasons.append(f"onnx: {err}")
    for graph in engine_graphs(expected.cfg):
        engine = layout.engine(graph)
        if not engine.is_file():
            reasons.append(f"{graph}: {engine.name} missing")
            continue
        try:
            meta = read_engine_metadata(layout.metadata(graph))
        except EngineError as err:
            reasons.append(f"{graph}: {err}")
            continue
        if meta.graph != graph:
            reasons.append(f"{graph}: metadata describes graph {meta.graph!r}")
        reasons += [f"{graph}: {r}" for r in metadata_mismatches(meta, expected)]
        stale = onnx_mismatch(meta, layout.onnx(graph).name, current) if current else ""
        if stale:
            reasons.append(f"{graph}: {stale}")
        if file_sha256(engine) != meta.engine_sha256:
            reasons.append(f"{graph}: {engine.name} changed after it was built (sha256)")
    return reasons


def calibrated_elsewhere(layout: EngineLayout, cfg: ModelConfig, bag: str) -> list[str]:
    """Why the int8 engines of `layout` were not calibrated on the recording `bag` (an
    absolute path): one reason per engine whose metadata names another bag or none."""
    reasons = []
    for graph in engine_graphs(cfg):
        try:
            used = read_engine_metadata(layout.metadata(graph)).calibration.get("bag")
        except EngineError:
            continue  # check_engines reports it
        if used != bag:
            reasons.append(f"{graph}: calibrated on {used or 'no recorded bag'}, not {bag}")
    return reasons


class EngineAction(Enum):
    """What the runtime does with an engine folder."""

    LOAD = "load"
    BUILD = "build"
    REFUSE = "refuse"


@dataclass(frozen=True)
class EngineDecision:
    action: EngineAction
    message: str  # one line for the log (LOAD: empty)


def decide(
    reasons: list[str], policy: str, build_command: str, build_blocker: str = ""
) -> EngineDecision:
    """LOAD when nothing is wrong; otherwise BUILD (policy "rebuild" and nothing blocks a
    build) or REFUSE with a message that names every reason and the build command."""
    if policy not in MISMATCH_POLICIES:
        raise EngineError(f"engine_mismatch={policy!r}: must be refuse or rebuild")
    if not reasons:
        return EngineDecision(EngineAction.LOAD, "")
    why = "; ".join(reasons)
    if policy == "rebuild" and not build_blocker:
        return EngineDecision(EngineAction.BUILD, f"rebuilding TensorRT engines: {why}")
    blocker = f" ({build_blocker})" if build_blocker else ""
    tail = "" if policy == "rebuild" else " or set engine_mismatch:=rebuild"
    return EngineDecision(
        EngineAction.REFUSE,
        f"TensorRT engines unusable: {why}{blocker}. Build them with: {build_command}{tail}",
    )


def build_command(
    model_config: str, weights: str, precision: str, out: str | Path, calib_bag: str = ""
) -> str:
    """The `build_engine` command line that (re)creates an engine folder."""
    w = f" --weights {weights}" if weights else ""
    bag = f" --calib-bag {calib_bag or 'BAG'}" if precision == "int8" else ""
    return (
        f"python -m flashocc_ros.tools.build_engine --model-config {model_config}{w} "
        f"--precision {precision} --out {out}{bag}"
    )
