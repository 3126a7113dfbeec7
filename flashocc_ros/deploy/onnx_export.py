"""ONNX export of a single-frame FlashOCC as two graphs split at the BEV pooling, with metadata.
In: FlashOCC model + ModelConfig + output folder. Out: two .onnx files and metadata.json there.

The split (docs/deployment.md):

    graph A  images (N, 3, H, W) -> depth (N, D, fH, fW), context (N, Cctx, fH, fW)
             backbone, image neck, depth net, softmax over D
    pooling  outside any graph: depth ⊗ context summed into BEV cells with the pooling indices
             of the current calibration (`LiftGeometry` + `bev_pool`; a CUDA kernel on TensorRT)
    graph B  bev (1, Cctx·Dz, Y, X) -> logits (1, X, Y, Z, cls)
             BEV encoder backbone, BEV neck, occupancy head

No calibration is baked into either graph (the calibration only enters the pooling indices),
and no scatter op is needed (the pooling is the only scatter-like step of the network). Static
shapes, batch 1, float32, opset 17. Temporal and stereo configs are refused for now: their
depth net needs the previous frame and camera-aware inputs.

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

    def to_json(self) -> str:
        return json.dumps(_as_dict(self), indent=2, sort_keys=True) + "\n"

    @staticmethod
    def from_json(text: str) -> ExportMetadata:
        data = json.loads(text)
        image_graph = GraphSpec(**data.pop("image_graph"))
        bev_graph = GraphSpec(**data.pop("bev_graph"))
        return ExportMetadata(image_graph=image_graph, bev_graph=bev_graph, **data)


def _as_dict(meta: ExportMetadata) -> dict[str, Any]:
    out: dict[str, Any] = dataclasses.asdict(meta)
    return out


def check_exportable(cfg: ModelConfig) -> None:
    """Raise ExportError unless `cfg` is a single-frame config with the plain LSS depth net."""
    if cfg.temporal or cfg.stereo:
        raise ExportError(
            f"model config {cfg.name!r} is temporal/stereo: the ONNX export supports "
            "single-frame configs only (M0, M1, demo, tiny) for now"
        )
    if cfg.depth_net != "lss":
        raise ExportError(
            f"model config {cfg.name!r} uses the camera-aware depth net, whose calibration "
            "input is not an input of graph A yet; only depth_net 'lss' exports"
        )


class ImageToDepth(nn.Module):
    """Graph A: (N, 3, H, W) normalised images -> depth probs (N, D, fH, fW), context
    (N, Cctx, fH, fW). The LSS depth net ignores calibration; a placeholder fills the argument."""

    def __init__(self, model: FlashOCC, cfg: ModelConfig) -> None:
        super().__init__()
        check_exportable(cfg)
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
    """Static I/O shapes of graph A and graph B for `cfg` (sha256 left empty)."""
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


def _export_graph(
    module: nn.Module, example: Tensor, spec: GraphSpec, folder: Path, opset: int
) -> GraphSpec:
    import onnx

    path = folder / spec.file
    tmp = path.with_suffix(".onnx.tmp")
    with _quiet_export(), torch.no_grad():
        torch.onnx.export(
            module,
            (example,),
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
    is removed first and written again only after both graphs exported and passed
    `onnx.checker`.
    """
    import onnx

    check_exportable(cfg)
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / METADATA_FILE).unlink(missing_ok=True)
    model = model.to("cpu", torch.float32).eval()
    spec_a, spec_b = graph_shapes(cfg)
    images = torch.zeros(spec_a.inputs["images"])
    bev = torch.zeros(spec_b.inputs["bev"])
    meta = ExportMetadata(
        model_config=cfg.to_dict(),
        weights_sha256=weights_sha256(model),
        opset=opset,
        torch_version=torch.__version__,
        onnx_version=onnx.__version__,
        image_graph=_export_graph(ImageToDepth(model, cfg), images, spec_a, folder, opset),
        bev_graph=_export_graph(BevToLogits(model), bev, spec_b, folder, opset),
        notes={"pooling": "outside the graphs: LiftGeometry indices + bev_pool (fp32)"},
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
    given) and that both graph files are present and unchanged; ExportError otherwise."""
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
    for spec in (meta.image_graph, meta.bev_graph):
        path = folder / spec.file
        if not path.is_file():
            raise ExportError(f"export {folder} is incomplete: {spec.file} missing")
        if file_sha256(path) != spec.sha256:
            raise ExportError(f"export {folder}: {spec.file} changed after export (sha256)")
    return meta
