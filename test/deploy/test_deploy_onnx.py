"""ONNX export + onnxruntime backend vs PyTorch, the TensorRT op checker, metadata checks, compare.
In: the tiny config with random weights (CPU, one thread). Out: pass/fail in a few seconds.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from tiny_config import SMALL_GRID, TINY

from flashocc_ros.config import ModelConfig, model_config
from flashocc_ros.deploy.onnx_export import (
    GRAPH_A_FILE,
    GRAPH_B_FILE,
    METADATA_FILE,
    OPSET,
    ExportError,
    export_onnx,
    read_metadata,
    weights_sha256,
)
from flashocc_ros.deploy.trt_ops import check_trt_compat
from flashocc_ros.model.flashocc import FlashOCC, build_model
from flashocc_ros.model.geometry import Calibration
from flashocc_ros.model.preprocess import rig_calibration
from flashocc_ros.node_config import NodeConfig, node_config_from_mapping
from flashocc_ros.rig import nuscenes_like_rig
from flashocc_ros.runtime.backend import BackendError, TorchBackend
from flashocc_ros.runtime.factory import make_backend
from flashocc_ros.runtime.onnx_backend import OnnxRuntimeBackend, choose_providers
from flashocc_ros.tools import compare, export
from flashocc_ros.tools.compare import Frame, compare_backends

torch.set_num_threads(1)

TINY_STEREO = model_config("tiny-stereo").replace(grid=SMALL_GRID)


def rig_calib(cfg: ModelConfig) -> Calibration:
    return rig_calibration(nuscenes_like_rig(), cfg.input_size)


def images(cfg: ModelConfig, seed: int = 0, batch: int = 1) -> torch.Tensor:
    """(B, N, 3, H, W) random normalised images."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, cfg.num_cameras, 3, *cfg.input_size, generator=gen)


def randomize_bn(model: torch.nn.Module) -> None:
    """Non-trivial BatchNorm statistics, so the export must carry them."""
    gen = torch.Generator().manual_seed(0)
    for mod in model.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            assert mod.running_mean is not None and mod.running_var is not None
            n = mod.running_mean.shape[0]
            mod.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
            mod.running_var.copy_(0.5 + torch.rand(n, generator=gen))


@pytest.fixture(scope="module")
def model() -> FlashOCC:
    torch.manual_seed(0)
    net = build_model(TINY)
    randomize_bn(net)
    return net.eval()


@pytest.fixture(scope="module")
def export_dir(model: FlashOCC, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export")
    export_onnx(model, TINY, out)
    return out


def _ort(export_dir: Path, model: FlashOCC) -> OnnxRuntimeBackend:
    return OnnxRuntimeBackend(export_dir, TINY, weights_sha256(model), intra_op_threads=1)


def _moved_calib() -> Calibration:
    calib = rig_calib(TINY)
    c2e = calib.camera_to_ego.clone()
    c2e[..., 0, 3] += 0.7  # every camera 0.7 m forward: other pooling indices
    return Calibration(c2e, calib.intrinsics, calib.post_rot, calib.post_tran, calib.bda)


def test_onnxruntime_matches_torch(export_dir: Path, model: FlashOCC) -> None:
    ort_backend, torch_backend = _ort(export_dir, model), TorchBackend(model, TINY)
    frames = [Frame(images(TINY, seed), rig_calib(TINY)) for seed in range(2)]
    frames.append(Frame(images(TINY, 5), _moved_calib()))
    report = compare_backends(torch_backend, ort_backend, frames)
    assert report.max_abs <= 1e-3, report.table()
    assert report.agreement >= 0.999, report.table()
    assert ort_backend.geometry.rebuilds == 2  # once per calibration, not per frame
    timings = ort_backend.last_stage_timings_ms()
    assert set(timings) == {"image_graph", "pooling", "bev_graph", "backend_total"}
    assert ort_backend.name == "onnxruntime-cpu-fp32"


def test_backend_refuses_wrong_image_shape(export_dir: Path, model: FlashOCC) -> None:
    with pytest.raises(ValueError, match="B = 1"):
        _ort(export_dir, model).infer(images(TINY, batch=2), rig_calib(TINY))


def test_metadata_describes_the_export(export_dir: Path, model: FlashOCC) -> None:
    meta = read_metadata(export_dir)
    assert meta.opset == OPSET == 17
    assert meta.torch_version == torch.__version__
    assert meta.weights_sha256 == weights_sha256(model)
    assert meta.model_config == TINY.to_dict()
    n, (h, w), (fh, fw) = TINY.num_cameras, TINY.input_size, TINY.feature_size
    assert meta.image_graph.inputs == {"images": [n, 3, h, w]}
    assert meta.image_graph.outputs["depth"] == [n, TINY.num_depth_bins, fh, fw]
    g = TINY.grid
    assert meta.bev_graph.outputs == {
        "logits": [1, g.size_x, g.size_y, g.size_z, TINY.num_classes]
    }
    graph = onnx.load(str(export_dir / GRAPH_A_FILE)).graph
    assert [i.name for i in graph.input] == ["images"]  # no calibration input, none baked in


def test_trt_checker_passes_our_graphs(export_dir: Path) -> None:
    for name in (GRAPH_A_FILE, GRAPH_B_FILE):
        assert check_trt_compat(export_dir / name) == [], name


def test_trt_checker_flags_scatter_reduction_and_float64() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 2])
    idx = helper.make_tensor("idx", TensorProto.INT64, [1, 2], [1, 3])
    upd = helper.make_tensor("upd", TensorProto.FLOAT, [1, 2], [1.0, 2.0])
    out = helper.make_tensor_value_info("y", TensorProto.DOUBLE, [4, 2])
    nodes = [
        helper.make_node(
            "ScatterElements", ["x", "idx", "upd"], ["s"], "scatter", axis=0, reduction="add"
        ),
        helper.make_node("Cast", ["s"], ["y"], "to_double", to=TensorProto.DOUBLE),
    ]
    graph = helper.make_graph(nodes, "bad", [x], [out], [idx, upd])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    found = [str(v) for v in check_trt_compat(proto)]
    assert any("ScatterElements" in f and "reduction='add'" in f for f in found), found
    assert any("float64" in f for f in found), found
    assert any("cast to double" in f for f in found), found


def test_trt_checker_flags_cubic_resize_and_unknown_ops() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])
    y = helper.make_tensor_value_info("z", TensorProto.FLOAT, None)
    scales = helper.make_tensor("scales", TensorProto.FLOAT, [4], [1.0, 1.0, 2.0, 2.0])
    nodes = [
        helper.make_node("Resize", ["x", "", "scales"], ["r"], "up", mode="cubic"),
        helper.make_node("Hardmax", ["r"], ["z"], "hm"),
    ]
    graph = helper.make_graph(nodes, "odd", [x], [y], [scales])
    found = [str(v) for v in check_trt_compat(helper.make_model(graph))]
    assert any("mode 'cubic'" in f for f in found), found
    assert any("Hardmax" in f and "OP_TABLE" in f for f in found), found


def test_stale_or_foreign_exports_are_refused(
    export_dir: Path, model: FlashOCC, tmp_path: Path
) -> None:
    with pytest.raises(BackendError, match="depth_step"):
        OnnxRuntimeBackend(export_dir, TINY.replace(depth_step=2.0))
    with pytest.raises(BackendError, match="other weights"):
        OnnxRuntimeBackend(export_dir, TINY, "0" * 64)
    with pytest.raises(BackendError, match="missing"):
        OnnxRuntimeBackend(tmp_path / "nothing", TINY)
    copy = tmp_path / "copy"
    shutil.copytree(export_dir, copy)
    with (copy / GRAPH_B_FILE).open("ab") as f:
        f.write(b"\0")
    with pytest.raises(BackendError, match="changed after export"):
        OnnxRuntimeBackend(copy, TINY)
    meta = json.loads((copy / METADATA_FILE).read_text())
    meta["format_version"] = 99
    (copy / METADATA_FILE).write_text(json.dumps(meta))
    with pytest.raises(BackendError, match="format 99"):
        OnnxRuntimeBackend(copy, TINY)


def test_unsupported_configs_are_refused(tmp_path: Path) -> None:
    aware = TINY.replace(depth_net="camera_aware")  # camera-aware without stereo
    with pytest.raises(ExportError, match="camera-aware"):
        export_onnx(build_model(aware), aware, tmp_path)
    with pytest.raises(BackendError, match="camera-aware"):
        OnnxRuntimeBackend(tmp_path, aware)
    with pytest.raises(BackendError, match="no ONNX export"):  # M2 exports (own test file)
        OnnxRuntimeBackend(tmp_path, TINY_STEREO)


def test_compare_reports_full_agreement_for_identical_backends(model: FlashOCC) -> None:
    backend = TorchBackend(model, TINY)
    report = compare_backends(backend, backend, [Frame(images(TINY), rig_calib(TINY))])
    assert report.max_abs == 0.0 and report.mean_abs == 0.0
    assert report.agreement == 1.0
    present = ~np.isnan(report.class_agreement_iou)
    assert present.any() and (report.class_agreement_iou[present] == 1.0).all()


def test_factory_builds_onnxruntime_and_refuses_without_export(
    export_dir: Path, model: FlashOCC, tmp_path: Path
) -> None:
    def params(**values: str) -> NodeConfig:
        return node_config_from_mapping({"model_config": "tiny", "weights": "random", **values})

    backend = make_backend(TINY, model, params(backend="onnxruntime", engine_path=str(export_dir)))
    assert isinstance(backend, OnnxRuntimeBackend)
    with pytest.raises(BackendError, match=r"flashocc_ros\.tools\.export --model-config tiny"):
        make_backend(TINY, model, params(backend="onnxruntime"))
    with pytest.raises(BackendError, match=r"create it with: python -m flashocc_ros\.tools"):
        make_backend(TINY, model, params(backend="onnxruntime", engine_path=str(tmp_path)))
    assert isinstance(make_backend(TINY, model, params(backend="auto")), TorchBackend)
    with pytest.raises(BackendError, match="tensorrt"):
        make_backend(TINY, model, params(backend="tensorrt"))


def test_export_and_compare_cli(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    out = tmp_path / "tiny"
    assert export.main(["--model-config", "nope", "--out", str(out)]) == 2
    base = ["--model-config", "tiny", "--weights", "random"]
    assert export.main([*base, "--out", str(out), "--strict-trt"]) == 0
    assert (out / METADATA_FILE).is_file()
    args = [*base, "--b", "onnxruntime", "--engine-path", str(out), "--frames", "1"]
    assert compare.main([*args, "--max-abs", "1e-3"]) == 0
    assert "arg-max agreement" in caplog.text
    assert compare.main([*base, "--b", "onnxruntime", "--engine-path", str(tmp_path)]) == 2
    assert model_config("tiny").grid.shape == (200, 200, 16)  # the CLI ran the full tiny grid


def test_providers_follow_the_device(caplog: pytest.LogCaptureFixture) -> None:
    import onnxruntime as ort

    assert choose_providers("cpu") == ["CPUExecutionProvider"]
    cuda = choose_providers("cuda")
    assert cuda[-1] == "CPUExecutionProvider"
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert cuda == ["CPUExecutionProvider"]
        assert "no CUDAExecutionProvider" in caplog.text
