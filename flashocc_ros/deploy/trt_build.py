"""TensorRT 10.x engine building from the ONNX export (FP32, FP16, INT8 entropy PTQ).
In: FlashOCC + ModelConfig + engine folder + precision (+ calibration frames for INT8).
Out: <graph>.<precision>.engine + .json per graph, timing cache, INT8 calibration caches.

Graph A (images -> depth, context) and graph B (BEV -> logits) become one engine each; the
pooling stays outside, between them (runtime/trt_backend.py). 4D-stereo configs (M2) build
three: stereo graph A, graph B over [prev, curr] BEVs and graph S (scene-start stereo feature);
their INT8 calibration batches are the recorded inputs of consecutive frames
(`calibration.gather_temporal_calibration`). In fp16/int8 the cost volume of stereo
graph A (everything computed from the `stereo_grid` input up to its softmax: GridSample, L1
cost, invalid bias) and every softmax keep fp32 through layer precision constraints with
OBEY_PRECISION_CONSTRAINTS (`fp32_layer_indices`). Building needs an NVIDIA GPU and
the TensorRT 10.x Python runtime (`tensorrt-cu12` / `tensorrt-cu13` 10.x).

These precision controls belong to TensorRT's weakly typed mode (`WEAK_TYPING_API`: deprecated
since 10.1 or 10.12, removed in 11.0, where every network is strongly typed): other major
versions are refused, and a runtime that lacks one of them is refused naming it before any
build starts, never with an AttributeError halfway.

Per graph: parse the ONNX file, set the precision flags (INT8 also allows FP16 for layers
without INT8 kernels), attach the entropy calibrator, the progress monitor and the timing
cache, build, write the engine, save the timing cache, then write the metadata JSON (last).
Everything runs with the configured GPU current (`engine_meta.on_cuda_device`). INT8
calibration caches are keyed on the ONNX graph and on the calibration batches
(`calibration.CalibrationCache`); the metadata names the frames the engine's scales really
came from. Layout, metadata and the load/refuse/rebuild rules live in `engine_meta` (no
TensorRT there).
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from flashocc_ros.config import ModelConfig
from flashocc_ros.deploy.calibration import (
    BatchFeeder,
    CalibFrame,
    CalibrationCache,
    CalibrationData,
    CalibrationError,
    GraphBatches,
    graph_inputs,
)
from flashocc_ros.deploy.engine_meta import (
    EngineError,
    EngineLayout,
    EngineMetadata,
    Platform,
    check_engine_config,
    cuda_platform,
    engine_graphs,
    graph_spec,
    make_metadata,
    on_cuda_device,
)
from flashocc_ros.deploy.onnx_export import (
    ExportError,
    ExportMetadata,
    export_onnx,
    file_sha256,
    is_stereo_4d,
    verify_export,
    weights_sha256,
)
from flashocc_ros.model.flashocc import FlashOCC

if TYPE_CHECKING:
    import tensorrt as trt
    from typing_extensions import Buffer

LOG = logging.getLogger(__name__)

#: The TensorRT major version whose Python API this module uses.
TENSORRT_MAJOR = 10
#: Input of stereo graph A whose whole downstream cost volume stays fp32 in fp16 engines: the
#: sampling grid holds pixel coordinates up to W/4 (176 px for M2), which fp16 resolves only to
#: 1/8 px there, and the summed L1 costs (hundreds) lose the resolution the softmax over D needs.
FP32_SEED_INPUT = "stereo_grid"


@dataclass(frozen=True)
class LegacyApi:
    """One weakly typed precision control this builder uses, with its TensorRT life span
    (NVIDIA's API docs and the Python bindings' deprecation notices, checked 2026-12)."""

    name: str  # as spelt in the Python API: "BuilderFlag.FP16", "ILayer.set_output_type"
    deprecated: str  # TensorRT version that deprecated it
    removed: str  # TensorRT version without it
    needed_for: tuple[str, ...]  # build kinds using it: "fp16", "int8", "fp32-pins"


#: The weakly typed precision controls used here; docs/deployment.md lists the same table.
WEAK_TYPING_API = (
    LegacyApi("BuilderFlag.FP16", "10.12", "11.0", ("fp16", "int8")),
    LegacyApi("BuilderFlag.INT8", "10.12", "11.0", ("int8",)),
    LegacyApi("IBuilderConfig.int8_calibrator", "10.1", "11.0", ("int8",)),
    LegacyApi("IInt8EntropyCalibrator2", "10.1", "11.0", ("int8",)),
    LegacyApi("ILayer.precision", "10.12", "11.0", ("fp32-pins",)),
    LegacyApi("ILayer.set_output_type", "10.12", "11.0", ("fp32-pins",)),
    LegacyApi("BuilderFlag.OBEY_PRECISION_CONSTRAINTS", "10.12", "11.0", ("fp32-pins",)),
)


def weak_typing_needed(precision: str, keep_fp32: bool) -> list[LegacyApi]:
    """The `WEAK_TYPING_API` members a `precision` build uses (with the fp32 pins when
    `keep_fp32`: 4D-stereo graphs in fp16/int8); none for fp32."""
    kinds = {precision} | ({"fp32-pins"} if keep_fp32 and precision != "fp32" else set())
    return [api for api in WEAK_TYPING_API if kinds & set(api.needed_for)]


def weak_typing_missing(trt_module: object, precision: str, keep_fp32: bool) -> list[str]:
    """The members of `weak_typing_needed` that `trt_module` lacks (empty: it has them all)."""
    missing = []
    for api in weak_typing_needed(precision, keep_fp32):
        owner = trt_module
        for part in api.name.split("."):
            if not hasattr(owner, part):
                missing.append(api.name)
                break
            owner = getattr(owner, part)
    return missing


def require_weak_typing(precision: str, keep_fp32: bool) -> None:
    """EngineError, in one line, unless the installed TensorRT has every weakly typed control a
    `precision` build needs (a TensorRT 11 runtime, or a 10.x build missing one, is refused
    here rather than failing with an AttributeError in the middle of a build)."""
    import tensorrt as trt

    missing = weak_typing_missing(trt, precision, keep_fp32)
    if missing:
        version = getattr(trt, "__version__", "?")
        raise EngineError(
            f"TensorRT {version} lacks {', '.join(missing)}, which {precision} engines are "
            "built with here (weakly typed precision controls, deprecated in TensorRT 10.x and "
            "removed in 11.0); install the 10.x runtime, e.g. pip install 'tensorrt-cu12>=10,<11'"
        )


def _log_deprecations(version: str, precision: str, keep_fp32: bool) -> None:
    """One line when this TensorRT deprecates controls the build is about to use."""
    used = [
        api.name
        for api in weak_typing_needed(precision, keep_fp32)
        if _version(version) >= _version(api.deprecated)
    ]
    if used:
        LOG.info(
            "TensorRT %s deprecates %s (weak typing; they work throughout 10.x and are gone "
            "in 11.0, see docs/deployment.md)",
            version,
            ", ".join(used),
        )


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for part in text.split(".")[:2]:
        if not part.isdigit():
            break
        parts.append(int(part))
    return tuple(parts)


def load_tensorrt() -> str:
    """The TensorRT version when a usable 10.x runtime is installed; EngineError otherwise.

    A bare `import tensorrt` is not enough: type-stub packages install an empty `tensorrt`
    namespace folder that imports without any TensorRT library behind it.
    """
    try:
        import tensorrt
    except (ImportError, OSError) as err:  # OSError: bindings present, libraries missing
        raise EngineError(
            f"TensorRT is not importable ({err}); install the 10.x Python runtime, "
            "e.g. pip install 'tensorrt-cu12>=10,<11'"
        ) from err
    version = str(getattr(tensorrt, "__version__", ""))
    if not hasattr(tensorrt, "Builder") or not version:
        raise EngineError(
            "the installed `tensorrt` has no runtime (type stubs only?); install the 10.x "
            "Python runtime, e.g. pip install 'tensorrt-cu12>=10,<11'"
        )
    if not version.startswith(f"{TENSORRT_MAJOR}."):
        raise EngineError(
            f"TensorRT {version} installed; this build needs the {TENSORRT_MAJOR}.x line "
            "(TensorRT 11 removed the FP16/INT8 builder flags and INT8 calibrators)"
        )
    return version


def tensorrt_missing_reason() -> str | None:
    """Why TensorRT cannot be used here (None when a 10.x runtime imports)."""
    try:
        load_tensorrt()
    except EngineError as err:
        return str(err)
    return None


class BuildProgress:
    """TensorRT builder progress as log lines: one per phase start/finish of the top phases,
    one per 25 % of the steps of a phase. Thread-safe enough for logging (TensorRT may call
    from several threads; each call logs at most one line)."""

    def __init__(self, label: str, log: logging.Logger = LOG) -> None:
        self.label = label
        self.log = log
        self.steps: dict[str, int] = {}
        self.reported: dict[str, int] = {}
        self.depth: dict[str, int] = {}
        self.lines = 0

    def phase_start(self, phase: str, parent: str | None, num_steps: int) -> None:
        self.steps[phase] = max(int(num_steps), 1)
        self.reported[phase] = 0
        self.depth[phase] = 0 if not parent else self.depth.get(parent, 0) + 1
        if self.depth[phase] <= 1:
            self._emit(f"{'  ' * self.depth[phase]}{phase} ({num_steps} steps)")

    def step_complete(self, phase: str, step: int) -> bool:
        total = self.steps.get(phase, 1)
        quarter = (int(step) + 1) * 4 // total
        if self.depth.get(phase, 0) <= 1 and quarter > self.reported.get(phase, 0):
            self.reported[phase] = quarter
            self._emit(f"{'  ' * self.depth.get(phase, 0)}{phase}: {min(quarter, 4) * 25} %")
        return True  # False would cancel the build

    def phase_finish(self, phase: str) -> None:
        if self.depth.get(phase, 0) == 0:
            self._emit(f"{phase} done")

    def _emit(self, text: str) -> None:
        self.lines += 1
        self.log.info("[%s] %s", self.label, text)


def make_progress_monitor(progress: BuildProgress) -> trt.IProgressMonitor:
    """A `trt.IProgressMonitor` forwarding to `progress` (TensorRT >= 10.0 has the class)."""
    import tensorrt as trt

    class _Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            progress.phase_start(phase_name, parent_phase, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            return progress.step_complete(phase_name, step)

        def phase_finish(self, phase_name: str) -> None:
            progress.phase_finish(phase_name)

    return _Monitor()


def make_entropy_calibrator(
    feeder: BatchFeeder, cache: CalibrationCache
) -> trt.IInt8EntropyCalibrator2:
    """A `trt.IInt8EntropyCalibrator2` fed by `feeder` with its cache in `cache`.

    Exceptions inside TensorRT callbacks would be swallowed, so a failed batch is logged,
    remembered in `.error` and ends the calibration (None); the builder then reports failure.
    """

    import tensorrt as trt

    class _Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.error: Exception | None = None
            self.feeder = feeder  # keeps the device buffers alive as long as TensorRT may read

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: list[str]) -> list[int] | None:
            try:
                return feeder.next_pointers(names)
            except (CalibrationError, RuntimeError) as err:
                LOG.error("calibration batch failed: %s", err)
                self.error = err
                return None

        def read_calibration_cache(self) -> bytes | None:
            return cache.read()

        def write_calibration_cache(self, data: Buffer) -> None:
            cache.write(bytes(data))

    return _Calibrator()


def ensure_export(model: FlashOCC, cfg: ModelConfig, onnx_dir: Path) -> ExportMetadata:
    """The ONNX export in `onnx_dir` for this model, exported again when missing or stale."""
    try:
        return verify_export(onnx_dir, cfg, weights_sha256(model))
    except ExportError as err:
        LOG.info("ONNX export: %s; exporting to %s", err, onnx_dir)
    return export_onnx(model, cfg, onnx_dir)


def int8_rebuild_blocker(layout: EngineLayout, cfg: ModelConfig, weights_hash: str | None) -> str:
    """Why an INT8 folder cannot be rebuilt unattended ("" when it can, or for fp32/fp16): a
    rebuild without calibration frames needs valid calibration caches of the current export."""
    if layout.precision != "int8":
        return ""
    try:
        export = verify_export(layout.onnx_dir, cfg, weights_hash)
    except ExportError as err:
        return f"an int8 rebuild needs calibration frames ({err})"
    for graph in engine_graphs(cfg):
        cache = CalibrationCache(layout.calib_cache(graph), graph_spec(export, graph).sha256)
        problem = cache.problem()
        if problem:
            return f"an int8 rebuild needs calibration frames: {problem}"
    return ""


def _parse(
    builder: trt.Builder, logger: trt.ILogger, onnx_path: Path
) -> tuple[trt.INetworkDefinition, trt.OnnxParser]:
    import tensorrt as trt

    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes(), str(onnx_path)):
        errors = [str(parser.get_error(i).desc()) for i in range(parser.num_errors)]
        raise EngineError(f"TensorRT cannot parse {onnx_path.name}: {'; '.join(errors)}")
    return network, parser


def fp32_layer_indices(network: trt.INetworkDefinition) -> list[int]:
    """Indices of the layers to keep in fp32 in a reduced-precision build of `network`: every
    Softmax, and every layer with floating outputs computed from the `FP32_SEED_INPUT` input
    up to (and including) the softmax that ends its path. Layers come in topological order
    (the ONNX parser adds them in node order), so one pass follows the paths."""
    import tensorrt as trt

    floats = (trt.DataType.FLOAT, trt.DataType.HALF)
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    on_path = {t.name for t in inputs if t.name == FP32_SEED_INPUT}
    keep: list[int] = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        ins = [layer.get_input(k) for k in range(layer.num_inputs)]
        outs = [layer.get_output(k) for k in range(layer.num_outputs)]
        reached = any(t is not None and t.name in on_path for t in ins)
        float_out = bool(outs) and all(t.dtype in floats for t in outs)
        softmax = layer.type == trt.LayerType.SOFTMAX
        if softmax or (reached and float_out):
            keep.append(i)
        if reached and not softmax:  # the path ends at the cost volume's softmax
            on_path.update(t.name for t in outs if t.dtype in floats)
    return keep


def constrain_fp32(network: trt.INetworkDefinition, config: trt.IBuilderConfig) -> list[str]:
    """Pin the `fp32_layer_indices` layers (and their outputs) to fp32 and make the builder
    obey; returns their names."""
    import tensorrt as trt

    names = []
    with _legacy_precision_api():
        for i in fp32_layer_indices(network):
            layer = network.get_layer(i)
            layer.precision = trt.DataType.FLOAT
            for k in range(layer.num_outputs):
                layer.set_output_type(k, trt.DataType.FLOAT)
            names.append(layer.name)
        if names:
            config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    return names


@contextlib.contextmanager
def _legacy_precision_api() -> Iterator[None]:
    """Silences the DeprecationWarning each weakly typed call raises from TensorRT 10.12 on
    (`build_engine` logs one line about them instead)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def _load_timing_cache(config: trt.IBuilderConfig, path: Path | None) -> trt.ITimingCache:
    data = path.read_bytes() if path is not None and path.is_file() else b""
    cache = config.create_timing_cache(data)
    if not config.set_timing_cache(cache, False):
        LOG.warning("timing cache %s does not match this TensorRT/GPU: starting empty", path)
        config.set_timing_cache(config.create_timing_cache(b""), True)
    elif data:
        LOG.info("timing cache: %s (%d bytes)", path, len(data))
    return cache


def build_engine(
    onnx_path: Path,
    engine_path: Path,
    precision: str,
    *,
    timing_cache: Path | None = None,
    calibrator: trt.IInt8Calibrator | None = None,
    workspace_gib: float = 4.0,
    keep_fp32: bool = False,
) -> list[str]:
    """One engine from one ONNX file; writes `engine_path` (atomically) and the timing cache.

    `keep_fp32` (stereo graphs in fp16/int8): `constrain_fp32` pins the cost volume and the
    softmaxes to fp32. Returns the names of the layers pinned (empty otherwise)."""
    import tensorrt as trt

    require_weak_typing(precision, keep_fp32)
    if precision == "int8" and calibrator is None:
        raise EngineError("int8 needs a calibrator (calibration frames or a cache)")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network, _parser = _parse(builder, logger, onnx_path)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    with _legacy_precision_api():
        if precision in ("fp16", "int8"):
            config.set_flag(trt.BuilderFlag.FP16)
        if precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
            config.int8_calibrator = calibrator
    pinned: list[str] = []
    if keep_fp32 and precision != "fp32":
        pinned = constrain_fp32(network, config)
        LOG.info(
            "%s: %d layer(s) kept in fp32 (cost volume, softmax)", onnx_path.name, len(pinned)
        )
    progress = BuildProgress(f"{onnx_path.stem} {precision}")
    monitor = None  # must outlive the build: held here until this function returns
    if hasattr(trt, "IProgressMonitor"):
        monitor = make_progress_monitor(progress)
        config.progress_monitor = monitor
    else:
        LOG.info("this TensorRT has no IProgressMonitor: progress is logged per graph only")
    _load_timing_cache(config, timing_cache)
    t0 = time.perf_counter()
    LOG.info("building %s (%s) ... this takes minutes", engine_path.name, precision)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        err = getattr(calibrator, "error", None)
        extra = f" (calibration: {err})" if err else ""
        raise EngineError(f"TensorRT failed to build {engine_path.name}{extra}")
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = engine_path.with_name(engine_path.name + ".tmp")
    tmp.write_bytes(memoryview(serialized))
    tmp.replace(engine_path)
    if timing_cache is not None:
        timing_cache.parent.mkdir(parents=True, exist_ok=True)
        timing_cache.write_bytes(memoryview(config.get_timing_cache().serialize()))
    LOG.info("built %s in %.1f s", engine_path.name, time.perf_counter() - t0)
    return pinned


@dataclass
class _Int8Setup:
    """One graph's INT8 calibration: the calibrator TensorRT gets, its cache and feeder."""

    calibrator: trt.IInt8Calibrator
    cache: CalibrationCache
    feeder: BatchFeeder

    def metadata(self) -> dict[str, Any]:
        """What the engine's scales really came from: the batches fed (TensorRT calibrated)
        or, when it fed none, the frames the cache's record names."""
        where = {"cache": str(self.cache.path)}
        if self.cache.data is not None and self.feeder.fed > 0:
            return {"source": "frames", **self.cache.data.record(), **where}
        record = self.cache.record() or {}
        named = {k: v for k, v in record.items() if k in ("data_sha256", "frames", "bag")}
        return {"source": "cache", **named, **where}


def _calibrator(
    graph: str,
    layout: EngineLayout,
    export: ExportMetadata,
    batches: GraphBatches | None,
    device: str,
    bag: str,
) -> _Int8Setup:
    """The calibration of `graph`: on `batches[graph]` (a cache is reused only when computed
    from the very same batches) or, without batches, from a valid cache of this export."""
    spec = graph_spec(export, graph)
    buffers = {name: torch.empty(shape, device=device) for name, shape in spec.inputs.items()}
    if batches is None:  # cache only: TensorRT reads the cache and asks for no batch
        cache = CalibrationCache(layout.calib_cache(graph), spec.sha256)
        problem = cache.problem()
        if problem:
            raise EngineError(f"int8 without calibration frames: {problem}; pass --calib-bag BAG")
        zeros = {name: torch.zeros(shape) for name, shape in spec.inputs.items()}
        feeder = BatchFeeder([zeros], buffers)
        feeder.fed = 1
    else:
        if graph not in batches:
            raise EngineError(f"int8: no calibration batches for graph {graph}")
        data = CalibrationData.of(batches[graph], bag)
        cache = CalibrationCache(layout.calib_cache(graph), spec.sha256, data)
        feeder = BatchFeeder(batches[graph], buffers)
    return _Int8Setup(make_entropy_calibrator(feeder, cache), cache, feeder)


def build_engines(
    model: FlashOCC,
    cfg: ModelConfig,
    layout: EngineLayout,
    *,
    calib_frames: Sequence[CalibFrame] | None = None,
    calib_batches: GraphBatches | None = None,
    calib_source: str = "",
    timing_cache: Path | None = None,
    workspace_gib: float = 4.0,
    device: str = "cuda",
) -> list[EngineMetadata]:
    """Export (if needed) and build every engine of `layout` (`engine_graphs(cfg)`: A, B and for
    4D-stereo S) with `device` the current CUDA device throughout; returns their metadata.

    INT8 calibrates on `calib_batches` (per graph, recorded inputs; what
    `gather_temporal_calibration` gives for 4D-stereo) or, single-frame, on `calib_frames`
    (bag frames through the node's preprocessing; `calib_source` names the bag); a cache of
    the same graph computed from the same batches is reused. Without either, it builds from
    valid calibration caches in the folder. Metadata is removed before and written after
    each engine, so an interrupted build leaves no usable-looking engine behind.
    """
    check_engine_config(cfg)
    if layout.precision == "int8" and calib_frames and is_stereo_4d(cfg):
        raise EngineError(
            "int8 for 4D-stereo calibrates on the inputs of consecutive frames with ego poses "
            "(calib_batches from calibration.gather_temporal_calibration), not single frames"
        )
    version = load_tensorrt()
    require_weak_typing(layout.precision, is_stereo_4d(cfg))
    _log_deprecations(version, layout.precision, is_stereo_4d(cfg))
    platform: Platform = cuda_platform(version, device)
    with on_cuda_device(device):
        return _build_all(
            model,
            cfg,
            layout,
            platform,
            calib_frames=calib_frames,
            calib_batches=calib_batches,
            calib_source=calib_source,
            timing_cache=timing_cache,
            workspace_gib=workspace_gib,
            device=device,
        )


def _build_all(
    model: FlashOCC,
    cfg: ModelConfig,
    layout: EngineLayout,
    platform: Platform,
    *,
    calib_frames: Sequence[CalibFrame] | None,
    calib_batches: GraphBatches | None,
    calib_source: str,
    timing_cache: Path | None,
    workspace_gib: float,
    device: str,
) -> list[EngineMetadata]:
    export = ensure_export(model, cfg, layout.onnx_dir)
    batches = calib_batches if layout.precision == "int8" else None
    if layout.precision == "int8" and batches is None and calib_frames:
        batches = graph_inputs(model, cfg, calib_frames, device)
    cache_path = timing_cache if timing_cache is not None else layout.timing_cache
    out = []
    for graph in engine_graphs(cfg):
        layout.metadata(graph).unlink(missing_ok=True)
        int8 = None
        if layout.precision == "int8":
            int8 = _calibrator(graph, layout, export, batches, device, calib_source)
        build_engine(
            layout.onnx(graph),
            layout.engine(graph),
            layout.precision,
            timing_cache=cache_path,
            calibrator=None if int8 is None else int8.calibrator,
            workspace_gib=workspace_gib,
            keep_fp32=is_stereo_4d(cfg),
        )
        meta = make_metadata(
            graph,
            layout.precision,
            export,
            platform,
            file_sha256(layout.engine(graph)),
            torch_version=torch.__version__,
            calibration=None if int8 is None else int8.metadata(),
        )
        layout.metadata(graph).write_text(meta.to_json())
        out.append(meta)
    return out
