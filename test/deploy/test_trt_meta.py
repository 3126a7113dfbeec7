"""Engine folder layout, engine metadata, mismatch reasons and the load/rebuild/refuse decision.
In: fake platforms, fake engine bytes and a fake export description (no TensorRT, no GPU).
Out: pass/fail in well under a second.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from deploy_fakes import WEIGHTS, fake_export
from tiny_config import TINY
from trt_fakes import calibration_table, write_export

from flashocc_ros.deploy.calibration import CalibrationCache
from flashocc_ros.deploy.engine_meta import (
    GRAPHS,
    EngineAction,
    EngineError,
    EngineLayout,
    EngineMetadata,
    Expected,
    Platform,
    build_command,
    calibrated_elsewhere,
    check_engines,
    decide,
    make_metadata,
    metadata_mismatches,
)
from flashocc_ros.deploy.onnx_export import (
    METADATA_FILE,
    ExportMetadata,
    GraphSpec,
    file_sha256,
)
from flashocc_ros.deploy.trt_build import int8_rebuild_blocker
from flashocc_ros.runtime.trt_backend import Binding, binding_problems

PLATFORM = Platform("10.13.0.35", "NVIDIA GeForce RTX 3090", "8.6")


def write_engines(root: Path, precision: str, platform: Platform = PLATFORM) -> EngineLayout:
    """A folder as build_engines leaves it, with fake engine bytes."""
    layout = EngineLayout(root, precision)
    root.mkdir(parents=True, exist_ok=True)
    for graph in GRAPHS:
        layout.engine(graph).write_bytes(f"engine {graph} {precision}".encode())
        meta = make_metadata(
            graph, precision, fake_export(TINY), platform, file_sha256(layout.engine(graph))
        )
        layout.metadata(graph).write_text(meta.to_json())
    return layout


def expected(precision: str = "fp16", platform: Platform = PLATFORM) -> Expected:
    return Expected(TINY, WEIGHTS, precision, platform)


def test_layout_names_every_file(tmp_path: Path) -> None:
    layout = EngineLayout(tmp_path, "int8")
    assert layout.engine("image_to_depth") == tmp_path / "image_to_depth.int8.engine"
    assert layout.metadata("bev_to_logits") == tmp_path / "bev_to_logits.int8.json"
    assert layout.onnx("bev_to_logits") == tmp_path / "onnx" / "bev_to_logits.onnx"
    assert layout.calib_cache("image_to_depth") == tmp_path / "calib/image_to_depth.int8.calib"
    assert layout.timing_cache == tmp_path / "timing.cache"
    with pytest.raises(EngineError, match="unknown graph"):
        layout.engine("neck")
    with pytest.raises(EngineError, match="fp32, fp16, int8"):
        EngineLayout(tmp_path, "bf16")


def test_metadata_records_shapes_hashes_and_platform() -> None:
    meta = make_metadata("bev_to_logits", "fp16", fake_export(TINY), PLATFORM, "e" * 64)
    g = TINY.grid
    assert meta.inputs == {"bev": [1, TINY.context_channels, g.size_y, g.size_x]}
    assert meta.outputs == {"logits": [1, g.size_x, g.size_y, g.size_z, TINY.num_classes]}
    assert meta.onnx_sha256 == {"image_to_depth.onnx": "a" * 64, "bev_to_logits.onnx": "b" * 64}
    assert (meta.tensorrt_version, meta.gpu_name, meta.compute_capability) == (
        "10.13.0.35",
        "NVIDIA GeForce RTX 3090",
        "8.6",
    )
    assert EngineMetadata.from_json(meta.to_json()) == meta
    assert metadata_mismatches(meta, expected()) == []


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"precision": "fp32"}, "precision fp16 != requested fp32"),
        ({"platform": Platform("10.9.0.34", PLATFORM.gpu_name, "8.6")}, "TensorRT 10.13.0.35"),
        ({"platform": Platform(PLATFORM.tensorrt_version, "NVIDIA A100", "8.0")}, "capability"),
        ({"platform": Platform(PLATFORM.tensorrt_version, "RTX A6000", "8.6")}, "GPU"),
        ({"weights_sha256": "cd" * 32}, "weights sha256 abababababab"),
        ({"cfg": TINY.replace(depth_step=2.0)}, "depth_step"),
        ({"cfg": TINY.replace(camera_names=("A", "B"))}, "N: export has 6 cameras"),
    ],
)
def test_each_mismatch_is_named(change: dict[str, object], match: str) -> None:
    meta = make_metadata("image_to_depth", "fp16", fake_export(TINY), PLATFORM, "e" * 64)
    want = Expected(
        change.get("cfg", TINY),  # type: ignore[arg-type]
        change.get("weights_sha256", WEIGHTS),  # type: ignore[arg-type]
        change.get("precision", "fp16"),  # type: ignore[arg-type]
        change.get("platform", PLATFORM),  # type: ignore[arg-type]
    )
    reasons = metadata_mismatches(meta, want)
    assert len(reasons) >= 1
    assert any(match in r for r in reasons), reasons


def test_renamed_cameras_keep_the_engines() -> None:
    meta = make_metadata("image_to_depth", "fp32", fake_export(TINY), PLATFORM, "e" * 64)
    renamed = TINY.replace(camera_names=tuple(f"cam{i}" for i in range(6)))
    assert metadata_mismatches(meta, Expected(renamed, WEIGHTS, "fp32", PLATFORM)) == []


def test_check_engines_finds_missing_changed_and_foreign(tmp_path: Path) -> None:
    assert check_engines(EngineLayout(tmp_path / "none", "fp16"), expected()) == [
        "image_to_depth: image_to_depth.fp16.engine missing",
        "bev_to_logits: bev_to_logits.fp16.engine missing",
    ]
    layout = write_engines(tmp_path / "ok", "fp16")
    assert check_engines(layout, expected()) == []
    other = Platform("10.14.1.48", PLATFORM.gpu_name, "8.6")
    assert len(check_engines(layout, expected(platform=other))) == 2  # both graphs
    with layout.engine("bev_to_logits").open("ab") as f:
        f.write(b"\0")
    assert check_engines(layout, expected()) == [
        "bev_to_logits: bev_to_logits.fp16.engine changed after it was built (sha256)"
    ]
    layout.metadata("image_to_depth").write_text("{not json")
    assert (
        "image_to_depth: image_to_depth.fp16.json unreadable"
        in check_engines(layout, expected())[0]
    )
    data = json.loads(layout.metadata("bev_to_logits").read_text())
    data["format_version"] = 7
    layout.metadata("bev_to_logits").write_text(json.dumps(data))
    assert any("metadata format 7" in r for r in check_engines(layout, expected()))
    layout.metadata("bev_to_logits").unlink()
    assert "bev_to_logits: bev_to_logits.fp16.json missing" in check_engines(layout, expected())


def test_engines_from_another_onnx_export_are_stale(tmp_path: Path) -> None:
    """The engines record the sha256 of the ONNX graphs they were built from; once the folder's
    export holds other graphs (re-exported by another exporter, or by hand), they are stale
    (the check used to compare config, weights and platform only)."""
    layout = write_engines(tmp_path, "fp16")  # built from fake_export: graphs "a…", "b…"
    assert check_engines(layout, expected()) == []  # no onnx/ folder: nothing to compare
    export = fake_export(TINY)
    layout.onnx_dir.mkdir()
    (layout.onnx_dir / METADATA_FILE).write_text(export.to_json())
    assert check_engines(layout, expected()) == []  # the export they were built from
    a = GraphSpec(export.image_graph.file, "d" * 64, export.image_graph.inputs, {})
    re_exported = ExportMetadata(**{**export.__dict__, "image_graph": a})
    (layout.onnx_dir / METADATA_FILE).write_text(re_exported.to_json())
    assert check_engines(layout, expected()) == [
        "image_to_depth: built from another image_to_depth.onnx (sha256 aaaaaaaaaaaa), "
        "the export in onnx/ now holds sha256 dddddddddddd"
    ]
    (layout.onnx_dir / METADATA_FILE).write_text("{")
    reasons = check_engines(layout, expected())
    assert len(reasons) == 1 and reasons[0].startswith("onnx: unreadable export metadata")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("model_config", ["a list"]),
        ("onnx_sha256", {"image_to_depth.onnx": 7}),
        ("inputs", {"images": "1x6"}),
        ("format_version", "1"),
        ("__class__", "x"),
    ],
)
def test_crafted_metadata_is_refused_in_one_line(
    tmp_path: Path, field: str, value: object
) -> None:
    """Engine metadata is JSON checked field by field: a crafted file is one reason, never an
    AttributeError later (a list as model_config used to reach `.get`)."""
    layout = write_engines(tmp_path, "fp16")
    data = json.loads(layout.metadata("bev_to_logits").read_text())
    data[field] = value
    layout.metadata("bev_to_logits").write_text(json.dumps(data))
    reasons = check_engines(layout, expected())
    assert len(reasons) == 1 and "\n" not in reasons[0], reasons
    assert reasons[0].startswith("bev_to_logits: bev_to_logits.fp16.json unreadable: ")
    assert repr(field) in reasons[0] or "unknown field" in reasons[0]


def test_int8_engines_name_the_bag_they_were_calibrated_on(tmp_path: Path) -> None:
    layout = EngineLayout(tmp_path, "int8")
    for graph, bag in zip(GRAPHS, ("/bags/a", ""), strict=True):
        meta = make_metadata(
            graph, "int8", fake_export(TINY), PLATFORM, "e" * 64, calibration={"bag": bag}
        )
        layout.metadata(graph).write_text(meta.to_json())
    assert calibrated_elsewhere(layout, TINY, "/bags/a") == [
        "bev_to_logits: calibrated on no recorded bag, not /bags/a"
    ]
    assert len(calibrated_elsewhere(layout, TINY, "/bags/b")) == 2
    layout.metadata(GRAPHS[1]).unlink()  # check_engines reports a missing file
    assert calibrated_elsewhere(layout, TINY, "/bags/a") == []


def test_decision_load_refuse_rebuild() -> None:
    cmd = build_command("demo", "w.safetensors", "fp16", "engines/demo")
    assert cmd == (
        "python -m flashocc_ros.tools.build_engine --model-config demo --weights w.safetensors "
        "--precision fp16 --out engines/demo"
    )
    assert decide([], "refuse", cmd).action is EngineAction.LOAD
    refused = decide(["a: old", "b: older"], "refuse", cmd)
    assert refused.action is EngineAction.REFUSE
    assert "a: old; b: older" in refused.message
    assert cmd in refused.message and "engine_mismatch:=rebuild" in refused.message
    rebuild = decide(["a: old"], "rebuild", cmd)
    assert rebuild.action is EngineAction.BUILD and "a: old" in rebuild.message
    blocked = decide(["a: old"], "rebuild", cmd, "needs calibration frames")
    assert blocked.action is EngineAction.REFUSE
    assert (
        "needs calibration frames" in blocked.message and "engine_mismatch" not in blocked.message
    )
    with pytest.raises(EngineError, match="refuse or rebuild"):
        decide([], "ask", cmd)
    assert build_command("tiny", "", "int8", "e", "b.mcap").endswith("--out e --calib-bag b.mcap")


def test_int8_rebuild_needs_caches_of_this_export(tmp_path: Path) -> None:
    layout = EngineLayout(tmp_path, "int8")
    assert int8_rebuild_blocker(EngineLayout(tmp_path, "fp16"), TINY, WEIGHTS) == ""
    assert "calibration frames" in int8_rebuild_blocker(layout, TINY, WEIGHTS)  # no export
    export = write_export(layout.onnx_dir, TINY, WEIGHTS)
    specs = [export.image_graph, export.bev_graph]
    assert "no calibration cache" in int8_rebuild_blocker(layout, TINY, WEIGHTS)
    for graph, spec in zip(GRAPHS, specs, strict=True):
        CalibrationCache(layout.calib_cache(graph), spec.sha256).write(calibration_table(["x"]))
    assert int8_rebuild_blocker(layout, TINY, WEIGHTS) == ""
    other = CalibrationCache(layout.calib_cache("bev_to_logits"), "0" * 64)
    other.write(calibration_table(["bev"]))
    blocker = int8_rebuild_blocker(layout, TINY, WEIGHTS)
    assert "bev_to_logits.int8.calib belongs to another ONNX export" in blocker


def test_engine_bindings_are_checked_against_metadata() -> None:
    import torch

    meta = make_metadata("bev_to_logits", "fp16", fake_export(TINY), PLATFORM, "e" * 64)
    (name_in, shape_in), (name_out, shape_out) = *meta.inputs.items(), *meta.outputs.items()
    good = [
        Binding(name_in, tuple(shape_in), torch.float32, True),
        Binding(name_out, tuple(shape_out), torch.float32, False),
    ]
    assert binding_problems(good, meta) == []
    swapped = [Binding(name_in, tuple(shape_out), torch.float32, True), good[1]]
    assert "engine inputs" in binding_problems(swapped, meta)[0]
    dynamic = [Binding(name_in, (-1, *shape_in[1:]), torch.float32, True), good[1]]
    assert any("dynamic shapes" in p for p in binding_problems(dynamic, meta))
    renamed = [good[0], Binding("out", tuple(shape_out), torch.float32, False)]
    assert "engine outputs {'out'" in binding_problems(renamed, meta)[0]
