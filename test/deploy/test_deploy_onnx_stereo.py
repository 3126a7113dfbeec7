"""4D-stereo (M2) ONNX export + onnxruntime backend vs PyTorch over a moving sequence.
In: tiny-stereo on the small grid, seeded random weights and BatchNorm statistics (CPU, one
thread). Out: pass/fail in a few seconds.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

import onnx
import pytest
import torch
from stereo_sequence import AGREEMENT, CFG, MAX_ABS, rig_calib, seeded_model, sequence
from tiny_config import TINY

from flashocc_ros.deploy.engine_meta import EngineError, check_engine_config
from flashocc_ros.deploy.onnx_export import (
    GRAPH_A_FILE,
    GRAPH_B_FILE,
    METADATA_FILE,
    ExportError,
    check_exportable,
    export_onnx,
    read_metadata,
    weights_sha256,
)
from flashocc_ros.deploy.onnx_stereo import STEREO_FEATURE_FILE, stereo_channels
from flashocc_ros.deploy.trt_ops import check_trt_compat
from flashocc_ros.model.flashocc import FlashOCC, build_model
from flashocc_ros.model.temporal import FrameCache, ImageStep, TemporalFrame, TemporalHistory
from flashocc_ros.node_config import node_config_from_mapping
from flashocc_ros.runtime.backend import BackendError, TorchBackend
from flashocc_ros.runtime.factory import make_backend
from flashocc_ros.runtime.onnx_backend import OnnxRuntimeBackend, OnnxTemporalNet
from flashocc_ros.tools import export

torch.set_num_threads(1)

CACHE_REL = 1e-4  # depth, context, stereo feature kept for the next frame, / max(1, |ref|)


@pytest.fixture(scope="module")
def model() -> FlashOCC:
    return seeded_model()


@pytest.fixture(scope="module")
def export_dir(model: FlashOCC, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("stereo_export")
    export_onnx(model, CFG, out)
    return out


def _ort(export_dir: Path, model: FlashOCC) -> OnnxRuntimeBackend:
    return OnnxRuntimeBackend(export_dir, CFG, weights_sha256(model), intra_op_threads=1)


def _agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.argmax(-1) == b.argmax(-1)).float().mean())


def _max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def _cache_diff(a: FrameCache, b: FrameCache) -> float:
    """Largest difference between what two histories keep of the same frame, relative to the
    magnitude of `b` (context and stereo feature reach ~10, depth probabilities stay < 1)."""
    pairs = [(a.depth, b.depth), (a.context, b.context), (a.stereo, b.stereo)]
    return max(_max_abs(x, y) / max(1.0, float(y.abs().max())) for x, y in pairs)


def test_onnxruntime_matches_torch_over_a_moving_sequence(
    export_dir: Path, model: FlashOCC
) -> None:
    ours, ref = _ort(export_dir, model), TorchBackend(model, CFG)
    calib = rig_calib(CFG)
    frames = list(sequence(5, seed=3))
    worst, agree = 0.0, 1.0
    for i, (images, poses) in enumerate(frames):
        if i == 3:  # a reset mid-sequence: the next frame is a scene start again
            ours.reset()
            ref.reset()
        a, b = ref.infer(images, calib, poses), ours.infer(images, calib, poses)
        worst, agree = max(worst, _max_abs(a, b)), min(agree, _agreement(a, b))
        assert ours.history is not None and ref.history is not None
        assert len(ours.history.frames) == len(ref.history.frames) == (i + 1 if i < 3 else i - 2)
        assert _cache_diff(ours.history.frames[-1], ref.history.frames[-1]) <= CACHE_REL
        timings = ours.last_stage_timings_ms()
        scene_start = i in (0, 3)
        assert ("stereo_graph" in timings) == scene_start, (i, timings)
        assert {"image_graph", "pooling", "bev_graph", "backend_total"} <= set(timings)
    assert worst <= MAX_ABS, worst
    assert agree >= AGREEMENT, agree
    with pytest.raises(BackendError, match="needs ego poses"):
        ours.infer(frames[0][0], calib)


class _Sabotaged:
    """An onnxruntime TemporalNet with one deliberate mistake, to prove the parity check and
    the tolerance would catch it."""

    def __init__(self, net: OnnxTemporalNet, mistake: str) -> None:
        self.net, self.mistake, self.cfg = net, mistake, net.cfg

    def image_step(
        self,
        images: torch.Tensor,
        mlp_in: torch.Tensor,
        prev: torch.Tensor | None,
        grid: torch.Tensor,
    ) -> ImageStep:
        if self.mistake == "own_stereo":
            prev = None  # the frame's own stereo feature instead of the older frame's
        if self.mistake == "grid":
            grid = grid.flip(2)  # the grid of the mirrored frustum
        return self.net.image_step(images, mlp_in, prev, grid)

    def bev_step(self, bev_prev: torch.Tensor, bev_curr: torch.Tensor) -> torch.Tensor:
        if self.mistake == "swap":
            return self.net.bev_step(bev_curr, bev_prev)
        return self.net.bev_step(bev_prev, bev_curr)


@pytest.mark.parametrize("mistake", ["own_stereo", "grid", "swap"])
def test_a_wrong_grid_prev_stereo_or_bev_order_is_caught(
    export_dir: Path, model: FlashOCC, mistake: str
) -> None:
    net = _ort(export_dir, model).net
    assert net is not None
    ref, wrong = TemporalHistory(model), TemporalHistory(_Sabotaged(net, mistake))
    calib = rig_calib(CFG)
    for images, poses in sequence(2, seed=7):
        frame = TemporalFrame(images, calib, poses.ego_to_global, poses.stamp_ns)
        a, b = ref.step(frame), wrong.step(frame)
    assert _max_abs(a.logits, b.logits) > 5 * MAX_ABS  # outside the parity tolerance
    if mistake != "swap":  # and the depth of the frame by orders of magnitude
        assert _cache_diff(a.cache, b.cache) > 100 * CACHE_REL


def test_metadata_and_graphs_of_a_stereo_export(export_dir: Path, model: FlashOCC) -> None:
    assert not any(m.training for m in model.modules())  # the export leaves it in eval mode
    meta = read_metadata(export_dir)
    assert meta.stereo_graph is not None and meta.stereo_graph.file == STEREO_FEATURE_FILE
    assert meta.weights_sha256 == weights_sha256(model)
    n, (h, w), (fh, fw) = CFG.num_cameras, CFG.input_size, CFG.feature_size
    d, cs, g = CFG.num_depth_bins, stereo_channels(CFG), CFG.grid
    assert cs == model.img_backbone.out_channels[0]
    stereo = [n, cs, h // 4, w // 4]
    assert meta.image_graph.inputs == {
        "images": [n, 3, h, w],
        "mlp_input": [n, 27],
        "prev_stereo": stereo,
        "stereo_grid": [n, d * (h // 4), w // 4, 2],
    }
    assert meta.image_graph.outputs == {
        "depth": [n, d, fh, fw],
        "context": [n, CFG.context_channels, fh, fw],
        "stereo": stereo,
    }
    bev = [1, CFG.context_channels * g.bev_z_cells, g.size_y, g.size_x]
    assert meta.bev_graph.inputs == {"bev_prev": bev, "bev_curr": bev}
    assert meta.stereo_graph.outputs == {"stereo": stereo}
    for spec in meta.graphs():  # the graphs' own I/O equals the metadata: nothing else baked in
        graph = onnx.load(str(export_dir / spec.file)).graph
        assert _io(graph.input) == spec.inputs, spec.file
        assert _io(graph.output) == spec.outputs, spec.file
        assert check_trt_compat(export_dir / spec.file) == [], spec.file
        assert not any(node.op_type.startswith("Scatter") for node in graph.node), spec.file
    ops = {node.op_type for node in onnx.load(str(export_dir / GRAPH_A_FILE)).graph.node}
    assert "GridSample" in ops  # the cost volume is inside graph A


def _io(values: Sequence[onnx.ValueInfoProto]) -> dict[str, list[int]]:
    """Graph inputs or outputs as name -> static shape."""
    return {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in values}


def test_stale_or_mismatched_stereo_exports_are_refused(
    export_dir: Path, model: FlashOCC, tmp_path: Path
) -> None:
    with pytest.raises(BackendError, match="stereo_bias"):
        OnnxRuntimeBackend(export_dir, CFG.replace(stereo_bias=4.0))
    with pytest.raises(BackendError, match="other weights"):
        OnnxRuntimeBackend(export_dir, CFG, "0" * 64)
    single = tmp_path / "single"
    export_onnx(build_model(TINY).eval(), TINY, single)
    assert not (single / STEREO_FEATURE_FILE).exists()
    assert "stereo_graph" not in json.loads((single / METADATA_FILE).read_text())
    with pytest.raises(BackendError, match="another model config"):
        OnnxRuntimeBackend(single, CFG)
    copy = tmp_path / "copy"
    shutil.copytree(export_dir, copy)
    with (copy / STEREO_FEATURE_FILE).open("ab") as f:
        f.write(b"\0")
    with pytest.raises(BackendError, match=r"stereo_feature\.onnx changed after export"):
        OnnxRuntimeBackend(copy, CFG)
    (copy / STEREO_FEATURE_FILE).unlink()
    with pytest.raises(BackendError, match=r"stereo_feature\.onnx missing"):
        OnnxRuntimeBackend(copy, CFG)
    meta = json.loads((copy / METADATA_FILE).read_text())
    del meta["stereo_graph"]
    (copy / METADATA_FILE).write_text(json.dumps(meta))
    with pytest.raises(BackendError, match=r"no stereo_feature\.onnx"):
        OnnxRuntimeBackend(copy, CFG)


def test_remaining_refusals() -> None:
    temporal_only = TINY.replace(num_adj_frames=1)  # temporal without stereo
    with pytest.raises(ExportError, match="4D-stereo"):
        check_exportable(temporal_only)
    with pytest.raises(ExportError, match="camera-aware"):
        check_exportable(TINY.replace(depth_net="camera_aware"))
    with pytest.raises(EngineError, match="without the 4D-stereo layout"):
        check_engine_config(temporal_only)
    check_engine_config(CFG)  # M2 has TensorRT engines (three graphs)
    check_engine_config(TINY)


def test_export_cli_and_factory_on_tiny_stereo(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    out = tmp_path / "tiny-stereo"
    args = ["--model-config", "tiny-stereo", "--weights", "random", "--out", str(out)]
    assert export.main([*args, "--strict-trt"]) == 0
    for name in (GRAPH_A_FILE, GRAPH_B_FILE, STEREO_FEATURE_FILE, METADATA_FILE):
        assert (out / name).is_file(), name
    assert caplog.text.count("TensorRT 10 op check: 0 issue(s)") == 3
    params = node_config_from_mapping(
        {
            "model_config": "tiny-stereo",
            "weights": "random",
            "backend": "onnxruntime",
            "engine_path": str(out),
            "history_spacing_s": 0.3,
        }
    )
    from flashocc_ros.runtime.factory import load_model

    cfg, net = load_model("tiny-stereo", "random")
    backend = make_backend(cfg, net, params)
    assert isinstance(backend, OnnxRuntimeBackend) and backend.history is not None
    assert backend.history.target_gap_ns == 300_000_000
    with pytest.raises(BackendError, match="backend tensorrt: TensorRT is not importable"):
        make_backend(cfg, net, params.replace(backend="tensorrt", device="cuda"))
