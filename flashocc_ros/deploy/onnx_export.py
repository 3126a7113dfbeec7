"""ONNX export of FlashOCC as graphs split at the BEV pooling, with metadata.
In: FlashOCC model + ModelConfig + output folder. Out: the .onnx files and metadata.json there.

The single-frame split (M0, M1, demo, tiny; docs/deployment.md):

    graph A  images (N, 3, H, W) -> depth (N, D, fH, fW), context (N, Cctx, fH, fW)
             backbone, image neck, depth net, softmax over D
    pooling  outside any graph: depth ⊗ context summed into BEV cells with the pooling indices
             of the current calibration (`LiftGeometry` + `bev_pool`; a CUDA kernel on TensorRT)
    graph B  bev (1, Cctx·Dz, Y, X) -> logits (1, X, Y, Z, cls)
             BEV encoder backbone, BEV neck, occupancy head

4D-stereo configs (M2, tiny-stereo) export three graphs instead (`onnx_stereo`): graph A with
the cost volume and the previous frame's stereo feature as inputs, graph B taking the previous
and the current BEV, and a small stereo-feature graph for scene starts; their DepthNet input
and cost-volume grid are inputs computed outside, like the pooling.

No calibration or pose is baked into any graph (they only enter the pooling indices and the
inputs computed outside), and no scatter op is needed (the pooling is the only scatter-like
step of the network). Static shapes, batch 1, float32, opset 17.

`metadata.json` records the model config, a sha256 of the weights (state_dict tensors), the
opset, every graph's input/output names and shapes, each file's sha256 and the torch/onnx
versions; the runtime refuses an export whose metadata does not match the loaded model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.jit._trace import TracerWarning

from flashocc_ros.config import ModelConfig
from flashocc_ros.deploy.onnx_stereo import (
    STEREO_FEATURE_FILE,
    BevPairToLogits,
    StereoFeature,
    StereoImageToDepth,
    stereo_graph_io,
)
from flashocc_ros.model.flashocc import FlashOCC
from flashocc_ros.model.geometry import Calibration

#: ONNX opset of both graphs (TensorRT 10 parses opsets 9..20 at least).
OPSET = 17
#: Bumped when the folder layout or the metadata fields change incompatibly.
FORMAT_VERSION = 1
GRAPH_A_FILE = "image_to_depth.onnx"
GRAPH_B_FILE = "bev_to_logits.onnx"
METADATA_FILE = "metadata.json"


class ExportError(ValueError):
    """A model cannot be exported, or an export folder is missing, unreadable or stale."""


@dataclass(frozen=True)
class GraphSpec:
    """One exported graph: file name, sha256 of the file and static I/O shapes."""

    file: str
    sha256: str
    inputs: dict[str, list[int]]  # name -> static shape
    outputs: dict[str, list[int]]  # name -> static shape


@dataclass(frozen=True)
class ExportMetadata:
    """Contents of metadata.json (written last, so a half-written folder has none)."""

    model_config: dict[str, Any]  # ModelConfig.to_dict()
    weights_sha256: str  # `weights_sha256(model)` of the exported weights
    opset: int
    torch_version: str
    onnx_version: str
    image_graph: GraphSpec  # graph A
    bev_graph: GraphSpec  # graph B
    format_version: int = FORMAT_VERSION
    precision: str = "fp32"
    notes: dict[str, str] = field(default_factory=dict)
    stereo_graph: GraphSpec | None = None  # graph S of 4D-stereo exports (absent otherwise)

    def graphs(self) -> list[GraphSpec]:
        """Every graph of the export (A, B[, S])."""
        extra = [] if self.stereo_graph is None else [self.stereo_graph]
        return [self.image_graph, self.bev_graph, *extra]

    def to_json(self) -> str:
        return json.dumps(_as_dict(self), indent=2, sort_keys=True) + "\n"

    @staticmethod
    def from_json(text: str) -> ExportMetadata:
        data = json.loads(text)
        image_graph = GraphSpec(**data.pop("image_graph"))
        bev_graph = GraphSpec(**data.pop("bev_graph"))
        stereo = data.pop("stereo_graph", None)
        stereo_graph = None if stereo is None else GraphSpec(**stereo)
        return ExportMetadata(
            image_graph=image_graph, bev_graph=bev_graph, stereo_graph=stereo_graph, **data
        )


def _as_dict(meta: ExportMetadata) -> dict[str, Any]:
    out: dict[str, Any] = dataclasses.asdict(meta)
    if out["stereo_graph"] is None:
        del out["stereo_graph"]  # single-frame metadata keeps the format-1 fields exactly
    return out


def is_stereo_4d(cfg: ModelConfig) -> bool:
    """True for the 4D-stereo layout (M2): stereo cost volume + one previous frame."""
    return cfg.stereo and cfg.num_adj_frames == 1


def check_exportable(cfg: ModelConfig) -> None:
    """Raise ExportError unless `cfg` is single-frame with the LSS depth net, or 4D-stereo."""
    if is_stereo_4d(cfg):
        return
    if cfg.temporal or cfg.stereo:
        raise ExportError(
            f"model config {cfg.name!r} is temporal without the 4D-stereo layout "
            f"(stereo {cfg.stereo}, num_adj_frames {cfg.num_adj_frames}): the ONNX export "
            "supports single-frame configs and 4D-stereo with one previous frame (M2)"
        )
    if cfg.depth_net != "lss":
        raise ExportError(
            f"model config {cfg.name!r} uses the camera-aware depth net without stereo, whose "
            "calibration input is not an input of graph A; only depth_net 'lss' exports"
        )


def check_single_frame(cfg: ModelConfig) -> None:
    """Raise ExportError unless `cfg` is a single-frame config with the plain LSS depth net
    (the two-graph split that TensorRT engines and the torch CUDA fast path run)."""
    check_exportable(cfg)
    if is_stereo_4d(cfg):
        raise ExportError(
            f"model config {cfg.name!r} is temporal/stereo: this path supports single-frame "
            "configs only (M0, M1, demo, tiny)"
        )


class ImageToDepth(nn.Module):
    """Graph A: (N, 3, H, W) normalised images -> depth probs (N, D, fH, fW), context
    (N, Cctx, fH, fW). The LSS depth net ignores calibration; a placeholder fills the argument."""

    def __init__(self, model: FlashOCC, cfg: ModelConfig) -> None:
        super().__init__()
        check_single_frame(cfg)
        self.model = model
        n = cfg.num_cameras
        eye4 = torch.eye(4).expand(1, n, 4, 4)
        eye3 = torch.eye(3).expand(1, n, 3, 3)
        self.placeholder = Calibration(eye4, eye3, eye3, torch.zeros(1, n, 3), torch.eye(3)[None])

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        feat = self.model.encode_images(images.unsqueeze(0)).feat  # (1, N, C, fH, fW)
        depth, context = self.model.img_view_transformer.depth_context(feat, self.placeholder)
        return depth[0], context[0]  # (N, D, fH, fW), (N, Cctx, fH, fW)


class BevToLogits(nn.Module):
    """Graph B: (1, Cctx·Dz, Y, X) pooled BEV -> logits (1, X, Y, Z, cls)."""

    def __init__(self, model: FlashOCC) -> None:
        super().__init__()
        self.model = model

    def forward(self, bev: Tensor) -> Tensor:
        out: Tensor = self.model.bev_to_logits(self.model.frame_bev(bev))
        return out


def graph_shapes(cfg: ModelConfig) -> tuple[GraphSpec, GraphSpec]:
    """Static I/O shapes of graph A and graph B for `cfg` (sha256 left empty); for 4D-stereo
    configs the stereo graphs A and B (graph S: `stereo_feature_shapes`)."""
    if is_stereo_4d(cfg):
        (a_in, a_out), (b_in, b_out), _ = stereo_graph_io(cfg)
        return GraphSpec(GRAPH_A_FILE, "", a_in, a_out), GraphSpec(GRAPH_B_FILE, "", b_in, b_out)
    n, (h, w), (fh, fw) = cfg.num_cameras, cfg.input_size, cfg.feature_size
    c, g = cfg.context_channels, cfg.grid
    a = GraphSpec(
        GRAPH_A_FILE,
        "",
        {"images": [n, 3, h, w]},
        {"depth": [n, cfg.num_depth_bins, fh, fw], "context": [n, c, fh, fw]},
    )
    b = GraphSpec(
        GRAPH_B_FILE,
        "",
        {"bev": [1, c * g.bev_z_cells, g.size_y, g.size_x]},
        {"logits": [1, g.size_x, g.size_y, g.size_z, cfg.num_classes]},
    )
    return a, b


def stereo_feature_shapes(cfg: ModelConfig) -> GraphSpec:
    """Static I/O shapes of stereo graph S (4D-stereo configs only; sha256 left empty)."""
    _, _, (s_in, s_out) = stereo_graph_io(cfg)
    return GraphSpec(STEREO_FEATURE_FILE, "", s_in, s_out)


def weights_sha256(model: nn.Module) -> str:
    """sha256 over the state_dict (sorted keys, dtype, shape and bytes of every tensor)."""
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        t = value.detach().cpu().contiguous()
        digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def _quiet_export() -> Iterator[None]:
    """Silence the known, harmless warnings of the TorchScript exporter (deprecation notice,
    tracer warnings from the static shape checks)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=".*will be removed.*")
        yield


def _export_graph(module: nn.Module, spec: GraphSpec, folder: Path, opset: int) -> GraphSpec:
    """Trace `module` on zero inputs of `spec`'s shapes into folder/spec.file (checked)."""
    import onnx

    path = folder / spec.file
    tmp = path.with_suffix(".onnx.tmp")
    examples = tuple(torch.zeros(shape) for shape in spec.inputs.values())
    # The exporter restores the wrapper's training flag recursively afterwards: a fresh wrapper
    # in training mode would leave the model with BatchNorm statistics updating.
    module.eval()
    with _quiet_export(), torch.no_grad():
        torch.onnx.export(
            module,
            examples,
            str(tmp),
            input_names=list(spec.inputs),
            output_names=list(spec.outputs),
            opset_version=opset,
            dynamo=False,  # TorchScript exporter: static shapes, no onnxscript dependency
            do_constant_folding=True,
        )
    onnx.checker.check_model(str(tmp))
    tmp.replace(path)
    return GraphSpec(spec.file, file_sha256(path), spec.inputs, spec.outputs)


def export_onnx(
    model: FlashOCC, cfg: ModelConfig, out_dir: str | Path, opset: int = OPSET
) -> ExportMetadata:
    """Export graph A and graph B of `model` (a FlashOCC for `cfg`) into `out_dir`.

    Runs on the CPU in float32; the model is put in eval mode. Existing metadata in the folder
    is removed first and written again only after every graph exported and passed
    `onnx.checker`. 4D-stereo configs export stereo graphs A, B and S (`onnx_stereo`).
    """
    import onnx

    check_exportable(cfg)
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / METADATA_FILE).unlink(missing_ok=True)
    (folder / STEREO_FEATURE_FILE).unlink(missing_ok=True)  # never left from another export
    model = model.to("cpu", torch.float32).eval()
    spec_a, spec_b = graph_shapes(cfg)
    notes = {"pooling": "outside the graphs: LiftGeometry indices + bev_pool (fp32)"}
    stereo_graph = None
    if is_stereo_4d(cfg):
        graph_a: nn.Module = StereoImageToDepth(model)
        graph_b: nn.Module = BevPairToLogits(model)
        spec_s = stereo_feature_shapes(cfg)
        stereo_graph = _export_graph(StereoFeature(model), spec_s, folder, opset)
        notes["stereo"] = (
            "mlp_input and stereo_grid are computed outside (TemporalHistory.inputs); "
            f"{STEREO_FEATURE_FILE} gives the scene-start prev_stereo"
        )
    else:
        graph_a, graph_b = ImageToDepth(model, cfg), BevToLogits(model)
    meta = ExportMetadata(
        model_config=cfg.to_dict(),
        weights_sha256=weights_sha256(model),
        opset=opset,
        torch_version=torch.__version__,
        onnx_version=onnx.__version__,
        image_graph=_export_graph(graph_a, spec_a, folder, opset),
        bev_graph=_export_graph(graph_b, spec_b, folder, opset),
        notes=notes,
        stereo_graph=stereo_graph,
    )
    (folder / METADATA_FILE).write_text(meta.to_json())
    return meta


def read_metadata(export_dir: str | Path) -> ExportMetadata:
    """metadata.json of an export folder; ExportError when missing or unreadable."""
    path = Path(export_dir) / METADATA_FILE
    if not path.is_file():
        raise ExportError(f"no ONNX export at {Path(export_dir)} ({METADATA_FILE} missing)")
    try:
        meta = ExportMetadata.from_json(path.read_text())
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise ExportError(f"unreadable export metadata {path}: {err}") from err
    if meta.format_version != FORMAT_VERSION:
        raise ExportError(
            f"export {path.parent} has format {meta.format_version}, this build reads "
            f"{FORMAT_VERSION}"
        )
    return meta


def config_differences(exported: Mapping[str, Any], cfg: ModelConfig) -> list[str]:
    """Config fields that differ between an export and `cfg`. Camera names are not compared
    (a renamed rig runs the same graphs); only their count N is."""
    want = cfg.to_dict()
    diffs = [
        f"{key}: export {exported.get(key)!r} != model {want[key]!r}"
        for key in sorted(want)
        if key != "camera_names" and exported.get(key) != want[key]
    ]
    n_exported = len(exported.get("camera_names", []))
    if n_exported != cfg.num_cameras:
        diffs.append(f"N: export has {n_exported} cameras, model {cfg.num_cameras}")
    return diffs


def verify_export(
    export_dir: str | Path, cfg: ModelConfig, weights_hash: str | None = None
) -> ExportMetadata:
    """Metadata of `export_dir` after checking it matches `cfg` (and the weights hash when
    given) and that every graph file is present and unchanged; ExportError otherwise."""
    folder = Path(export_dir)
    meta = read_metadata(folder)
    diffs = config_differences(meta.model_config, cfg)
    if diffs:
        raise ExportError(f"export {folder} is for another model config: {'; '.join(diffs)}")
    if weights_hash is not None and weights_hash != meta.weights_sha256:
        raise ExportError(
            f"export {folder} holds other weights (sha256 {meta.weights_sha256[:12]}…, "
            f"loaded model {weights_hash[:12]}…)"
        )
    if is_stereo_4d(cfg) and meta.stereo_graph is None:
        raise ExportError(f"export {folder} has no {STEREO_FEATURE_FILE} (a 4D-stereo export)")
    for spec in meta.graphs():
        path = folder / spec.file
        if not path.is_file():
            raise ExportError(f"export {folder} is incomplete: {spec.file} missing")
        if file_sha256(path) != spec.sha256:
            raise ExportError(f"export {folder}: {spec.file} changed after export (sha256)")
    return meta
