"""M2 (4D-stereo) on TensorRT, without TensorRT: three-engine folders, metadata and stale
detection, the engine build over a fake `tensorrt` module that parses the real exported graphs
(fp32 pins on the cost volume and softmaxes in fp16/int8; int8 calibration feeding and caches),
the int8 calibration inputs recorded from a bag through the node's pipeline and history, shared
bindings of graph S, and `TrtTemporalNet`'s output ring with the engines stood in for by the
exported torch modules. In: tiny-stereo on the small grid, seeded weights, a generated
3-keyframe bag (CPU, one thread). Out: pass/fail.
"""

from __future__ import annotations

import json
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from deploy_fakes import calibration_bag, fake_export
from stereo_sequence import CFG, rig_calib, seeded_model, sequence
from tiny_config import TINY
from torch import Tensor
from trt_fakes import (
    PLATFORM,
    DataType,
    FakeBuilder,
    FakeConfig,
    FakeEngine,
    FakeNetwork,
    calibration_table,
    install_fake_tensorrt,
)

from flashocc_ros.deploy.calibration import (
    CalibFrame,
    CalibrationCache,
    GraphBatches,
    RecordingTemporalNet,
    gather_temporal_calibration,
)
from flashocc_ros.deploy.engine_meta import (
    ALL_GRAPHS,
    GRAPHS,
    STEREO_GRAPH,
    EngineError,
    EngineLayout,
    EngineMetadata,
    Expected,
    check_engines,
    engine_graphs,
    graph_spec,
    make_metadata,
)
from flashocc_ros.deploy.onnx_export import (
    ExportMetadata,
    file_sha256,
    read_metadata,
    weights_sha256,
)
from flashocc_ros.deploy.onnx_stereo import (
    BevPairToLogits,
    StereoFeature,
    StereoImageToDepth,
    stereo_channels,
    stereo_graph_io,
)
from flashocc_ros.deploy.trt_build import build_engines, int8_rebuild_blocker
from flashocc_ros.model.flashocc import FlashOCC
from flashocc_ros.model.temporal import TemporalFrame, TemporalHistory
from flashocc_ros.node_config import node_config_from_mapping
from flashocc_ros.runtime.backend import BackendError, TorchBackend
from flashocc_ros.runtime.pipeline import OccupancyPipeline
from flashocc_ros.runtime.trt_temporal import IMAGE_INPUTS, TrtTemporalNet
from flashocc_ros.tools.replay import OfflineReplay

torch.set_num_threads(1)

QUARTER_SECOND = 250_000_000
MAX_ABS = 1e-5  # the stand-in engines run the very torch modules the history's reference runs


@pytest.fixture(scope="module")
def model() -> FlashOCC:
    return seeded_model()


# --- engine folder, metadata, stale detection ------------------------------------------------


def write_stereo_engines(root: Path, precision: str = "fp16") -> EngineLayout:
    """A folder as build_engines leaves it for tiny-stereo, with fake engine bytes."""
    layout = EngineLayout(root, precision)
    root.mkdir(parents=True, exist_ok=True)
    for graph in ALL_GRAPHS:
        layout.engine(graph).write_bytes(f"engine {graph} {precision}".encode())
        sha = file_sha256(layout.engine(graph))
        meta = make_metadata(graph, precision, fake_export(CFG), PLATFORM, sha)
        layout.metadata(graph).write_text(meta.to_json())
    return layout


def test_stereo_folders_hold_three_engines(tmp_path: Path) -> None:
    assert engine_graphs(CFG) == (*GRAPHS, STEREO_GRAPH) == ALL_GRAPHS
    assert engine_graphs(TINY) == GRAPHS
    layout = EngineLayout(tmp_path, "fp16")
    assert layout.engine(STEREO_GRAPH) == tmp_path / "stereo_feature.fp16.engine"
    assert layout.metadata(STEREO_GRAPH) == tmp_path / "stereo_feature.fp16.json"
    meta = make_metadata(STEREO_GRAPH, "fp16", fake_export(CFG), PLATFORM, "e" * 64)
    n, (h, w) = CFG.num_cameras, CFG.input_size
    assert meta.inputs == {"images": [n, 3, h, w]}
    assert meta.outputs == {"stereo": [n, stereo_channels(CFG), h // 4, w // 4]}
    assert meta.onnx_sha256 == {
        "image_to_depth.onnx": "a" * 64,
        "bev_to_logits.onnx": "b" * 64,
        "stereo_feature.onnx": "c" * 64,
    }
    assert EngineMetadata.from_json(meta.to_json()) == meta
    a = make_metadata(GRAPHS[0], "fp16", fake_export(CFG), PLATFORM, "e" * 64)
    assert set(a.inputs) == {"images", "mlp_input", "prev_stereo", "stereo_grid"}
    single = ExportMetadata(**{**fake_export(CFG).__dict__, "stereo_graph": None})
    with pytest.raises(EngineError, match="no graph 'stereo_feature'"):
        graph_spec(single, STEREO_GRAPH)


def test_a_stereo_folder_without_or_with_a_foreign_graph_s_is_stale(tmp_path: Path) -> None:
    want = Expected(CFG, "ab" * 32, "fp16", PLATFORM)
    layout = write_stereo_engines(tmp_path / "m2")
    assert check_engines(layout, want) == []
    meta = json.loads(layout.metadata(STEREO_GRAPH).read_text())
    meta["tensorrt_version"] = "10.9.0.34"
    layout.metadata(STEREO_GRAPH).write_text(json.dumps(meta))
    assert check_engines(layout, want) == [
        "stereo_feature: built with TensorRT 10.9.0.34, this is TensorRT 10.13.0.35"
    ]
    meta["tensorrt_version"], meta["graph"] = PLATFORM.tensorrt_version, GRAPHS[0]
    layout.metadata(STEREO_GRAPH).write_text(json.dumps(meta))
    assert check_engines(layout, want) == [
        "stereo_feature: metadata describes graph 'image_to_depth'"
    ]
    layout.engine(STEREO_GRAPH).unlink()
    assert check_engines(layout, want) == ["stereo_feature: stereo_feature.fp16.engine missing"]
    # A single-frame folder is stale for the stereo model: graph S missing, config differs.
    single = EngineLayout(tmp_path / "single", "fp16")
    single.root.mkdir()
    for graph in GRAPHS:
        single.engine(graph).write_bytes(b"e")
        sha = file_sha256(single.engine(graph))
        meta = make_metadata(graph, "fp16", fake_export(CFG), PLATFORM, sha)
        data = json.loads(meta.to_json())
        data["model_config"] = TINY.to_dict()
        single.metadata(graph).write_text(json.dumps(data))
    reasons = check_engines(single, want)
    assert "stereo_feature: stereo_feature.fp16.engine missing" in reasons
    assert any(r.startswith("image_to_depth: model config stereo") for r in reasons), reasons


# --- the build path over a fake TensorRT that parses the real graphs --------------------------


@pytest.fixture
def fake_tensorrt(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    return install_fake_tensorrt(monkeypatch)


@pytest.fixture(scope="module")
def fp16_build(
    model: FlashOCC, tmp_path_factory: pytest.TempPathFactory
) -> tuple[EngineLayout, list[tuple[FakeNetwork, FakeConfig]], list[EngineMetadata]]:
    """tiny-stereo fp16 engines built over the fake TensorRT (module scope: one export)."""
    mp = pytest.MonkeyPatch()
    try:
        install_fake_tensorrt(mp)
        layout = EngineLayout(tmp_path_factory.mktemp("m2_engines"), "fp16")
        metas = build_engines(model, CFG, layout, device="cpu")
        return layout, list(FakeBuilder.builds), metas
    finally:
        mp.undo()


def test_fp16_build_writes_three_engines_that_then_match(
    fp16_build: tuple[EngineLayout, list[tuple[FakeNetwork, FakeConfig]], list[EngineMetadata]],
    model: FlashOCC,
) -> None:
    layout, builds, metas = fp16_build
    assert [m.graph for m in metas] == list(ALL_GRAPHS)
    export = read_metadata(layout.onnx_dir)
    for meta in metas:
        assert layout.engine(meta.graph).is_file()
        assert EngineMetadata.from_json(layout.metadata(meta.graph).read_text()) == meta
        assert meta.onnx_sha256 == {g.file: g.sha256 for g in export.graphs()}
        assert meta.inputs == graph_spec(export, meta.graph).inputs
    assert layout.timing_cache.read_bytes() == b"timing"
    want = Expected(CFG, weights_sha256(model), "fp16", PLATFORM)
    assert check_engines(layout, want) == []
    assert all("FP16" in config.flags for _, config in builds)


def test_fp16_keeps_the_cost_volume_and_softmaxes_in_fp32(
    fp16_build: tuple[EngineLayout, list[tuple[FakeNetwork, FakeConfig]], list[EngineMetadata]],
) -> None:
    (net_a, config_a), (net_b, config_b), (net_s, config_s) = fp16_build[1]
    pinned = [layer for layer in net_a.layers if layer.precision is not None]
    ops = {layer.op for layer in pinned}
    grid_samples = [layer for layer in net_a.layers if layer.op == "GridSample"]
    softmaxes = [layer for layer in net_a.layers if layer.op == "Softmax"]
    assert len(grid_samples) == stereo_channels(CFG) // 4  # one per group of 4 channels
    assert len(softmaxes) == 2  # cost volume over D, depth over D
    assert all(layer in pinned for layer in grid_samples + softmaxes)
    # the whole cost volume: grid cast, samples, L1 per group, the sum, the negation
    assert {"Cast", "GridSample", "Sub", "Abs", "ReduceSum", "Add", "Neg", "Softmax"} <= ops
    assert not ops & {"Conv", "Relu", "Gemm", "MaxPool", "Sigmoid", "Resize", "Equal"}
    for layer in pinned:
        assert layer.precision is DataType.FLOAT  # type: ignore[attr-defined]
        assert layer.output_types == dict.fromkeys(range(layer.num_outputs), DataType.FLOAT)  # type: ignore[attr-defined]
        assert all(t.dtype is DataType.FLOAT for t in layer.outputs)  # type: ignore[attr-defined]
    assert "OBEY_PRECISION_CONSTRAINTS" in config_a.flags
    for net, config in ((net_b, config_b), (net_s, config_s)):  # no grid, no softmax
        assert not any(layer.precision is not None for layer in net.layers)
        assert "OBEY_PRECISION_CONSTRAINTS" not in config.flags


def test_fp32_build_sets_no_constraints(
    fake_tensorrt: types.ModuleType,
    fp16_build: tuple[EngineLayout, list[tuple[FakeNetwork, FakeConfig]], list[EngineMetadata]],
    model: FlashOCC,
) -> None:
    layout = EngineLayout(fp16_build[0].root, "fp32")  # the same folder: export reused
    build_engines(model, CFG, layout, device="cpu")
    assert len(FakeBuilder.builds) == 3
    for net, config in FakeBuilder.builds:
        assert not config.flags
        assert not any(layer.precision is not None for layer in net.layers)
    assert check_engines(layout, Expected(CFG, None, "fp32", PLATFORM)) == []


# --- graph S shares graph A's buffers (the backend's _Engine over a fake runtime) ------------


def _engine(
    monkeypatch: pytest.MonkeyPatch,
    io: dict[str, tuple[list[int], bool]],
    shared: dict[str, Tensor] | None = None,
) -> Any:
    """The backend's `_Engine` over a fake runtime whose engine has bindings `io`
    (name -> (shape, is_input)), on the CPU."""
    from flashocc_ros.runtime.trt_backend import _Engine

    install_fake_tensorrt(monkeypatch)
    fake = FakeEngine(io)
    runtime = types.SimpleNamespace(deserialize_cuda_engine=lambda data: fake)
    return _Engine(runtime, Path(__file__), torch.device("cpu"), shared)  # type: ignore[arg-type]


def test_graph_s_binds_graph_a_buffers(monkeypatch: pytest.MonkeyPatch) -> None:
    (a_in, a_out), _, (s_in, s_out) = stereo_graph_io(CFG)
    io_a = {**{k: (v, True) for k, v in a_in.items()}, **{k: (v, False) for k, v in a_out.items()}}
    a = _engine(monkeypatch, io_a)
    assert set(a.buffers) == set(io_a)
    assert a.context.addresses["depth"] == a.buffers["depth"].data_ptr()
    io_s = {"images": (s_in["images"], True), "stereo": (s_out["stereo"], False)}
    shared = {"images": a.buffers["images"], "stereo": a.buffers["prev_stereo"]}
    s = _engine(monkeypatch, io_s, shared)
    assert s.buffers["images"] is a.buffers["images"]
    assert s.context.addresses["stereo"] == a.buffers["prev_stereo"].data_ptr()
    with pytest.raises(BackendError, match="cannot share buffers: images: tensor"):
        _engine(monkeypatch, io_s, {"images": a.buffers["depth"]})


# --- TrtTemporalNet: the ring of graph A outputs, graph S at scene starts ---------------------


class TorchEngine:
    """Stands in for an engine: runs `fn` (an exported graph's module) from its bound input
    tensors into its bound output tensors, like execute_async_v3 over the set addresses."""

    def __init__(
        self,
        fn: Callable[..., Tensor | tuple[Tensor, ...]],
        io: tuple[dict[str, list[int]], dict[str, list[int]]],
        shared: dict[str, Tensor] | None = None,
    ) -> None:
        self.fn, self.inputs, self.outputs = fn, list(io[0]), list(io[1])
        shared = shared or {}
        self.buffers = {
            name: shared[name] if name in shared else torch.full(shape, float("nan"))
            for name, shape in {**io[0], **io[1]}.items()
        }
        self.runs = 0
        self.bound: list[tuple[str, int]] = []

    def bind(self, name: str, tensor: Tensor) -> None:
        self.buffers[name] = tensor
        self.bound.append((name, tensor.data_ptr()))

    def run(self, stream: object) -> None:
        with torch.no_grad():
            out = self.fn(*(self.buffers[n] for n in self.inputs))
        outs = (out,) if isinstance(out, Tensor) else out
        for name, t in zip(self.outputs, outs, strict=True):
            self.buffers[name].copy_(t)
        self.runs += 1


def stand_in_net(model: FlashOCC, slots: int) -> TrtTemporalNet:
    io_a, io_b, io_s = stereo_graph_io(CFG)
    a = TorchEngine(StereoImageToDepth(model), io_a)
    b = TorchEngine(BevPairToLogits(model), io_b)
    shared = {"images": a.buffers["images"], "stereo": a.buffers["prev_stereo"]}
    s = TorchEngine(StereoFeature(model), io_s, shared)
    return TrtTemporalNet(CFG, a, b, s, slots=slots)


def run_pair(
    model: FlashOCC, net: TrtTemporalNet, frames: int, reset_at: int = -1
) -> tuple[float, list[dict[str, float]]]:
    """Max abs logit difference of `net` in a TemporalHistory vs the model's own history over
    `frames` bundles 0.25 s apart (the history picks t−2, 0.5 s back), and the net's timings."""
    gap = 2 * QUARTER_SECOND
    ref = TemporalHistory(model, target_gap_ns=gap)
    ours = TemporalHistory(net, target_gap_ns=gap)
    calib = rig_calib(CFG)
    worst, timings = 0.0, []
    for i, (images, poses) in enumerate(sequence(frames, seed=5, spacing_ns=QUARTER_SECOND)):
        if i == reset_at:
            ref.reset()
            ours.reset()
        frame = TemporalFrame(images, calib, poses.ego_to_global, poses.stamp_ns)
        a, b = ref.step(frame), ours.step(frame)
        worst = max(worst, float((a.logits - b.logits).abs().max()))
        timings.append(net.timings())
    return worst, timings


def test_trt_temporal_net_matches_the_model_over_a_moving_sequence(model: FlashOCC) -> None:
    net = stand_in_net(model, slots=5)
    worst, timings = run_pair(model, net, frames=7, reset_at=5)
    assert worst <= MAX_ABS, worst
    a, s = net.image, net.stereo
    assert (a.runs, s.runs) == (7, 2)  # type: ignore[attr-defined]  # graph S: scene starts only
    assert [("stereo_graph" in t) for t in timings] == [i in (0, 5) for i in range(7)]
    assert all({"image_graph", "bev_graph"} <= set(t) for t in timings)
    depth_ptrs = {ptr for name, ptr in a.bound if name == "depth"}  # type: ignore[attr-defined]
    assert len(depth_ptrs) == 5  # the ring, reused: no binding allocated per frame
    assert depth_ptrs == {slot["depth"].data_ptr() for slot in net.slots}


def test_a_ring_smaller_than_the_history_is_caught(model: FlashOCC) -> None:
    """Power check: with 2 slots the t−2 frame's depth/context are overwritten by frame t
    before the history re-lifts them."""
    worst, _ = run_pair(model, stand_in_net(model, slots=2), frames=4)
    assert worst > 100 * MAX_ABS, worst


def test_trt_temporal_net_checks_its_engines(model: FlashOCC) -> None:
    io_a, io_b, io_s = stereo_graph_io(CFG)
    a = TorchEngine(StereoImageToDepth(model), io_a)
    b = TorchEngine(BevPairToLogits(model), io_b)
    own = TorchEngine(StereoFeature(model), io_s)  # its own buffers: S's output would be lost
    with pytest.raises(BackendError, match="must read image_to_depth's images"):
        TrtTemporalNet(CFG, a, b, own, slots=5)
    shared = {"images": a.buffers["images"], "stereo": a.buffers["prev_stereo"]}
    s = TorchEngine(StereoFeature(model), io_s, shared)
    with pytest.raises(BackendError, match="at least 2 output slots"):
        TrtTemporalNet(CFG, a, b, s, slots=1)
    del b.buffers["bev_prev"]
    with pytest.raises(BackendError, match=r"bev_to_logits engine lacks bindings \['bev_prev'\]"):
        TrtTemporalNet(CFG, a, b, s, slots=5)


# --- INT8: the inputs of consecutive frames, as the runtime feeds each graph ------------------


def sequence_batches(model: FlashOCC, count: int = 3) -> GraphBatches:
    """Graph inputs recorded over a moving sequence by the history the runtime runs."""
    recorder = RecordingTemporalNet(model)
    history = TemporalHistory(recorder)
    calib = rig_calib(CFG)
    for images, poses in sequence(count, seed=9):
        history.step(TemporalFrame(images, calib, poses.ego_to_global, poses.stamp_ns))
    return recorder.batches


def test_int8_build_calibrates_every_graph_then_reuses_the_caches(
    fake_tensorrt: types.ModuleType,
    fp16_build: tuple[EngineLayout, list[tuple[FakeNetwork, FakeConfig]], list[EngineMetadata]],
    model: FlashOCC,
) -> None:
    layout = EngineLayout(fp16_build[0].root, "int8")  # the same folder: export reused
    batches = sequence_batches(model)
    metas = build_engines(model, CFG, layout, calib_batches=batches, device="cpu")
    export = read_metadata(layout.onnx_dir)
    for (_, config), meta in zip(FakeBuilder.builds, metas, strict=True):
        assert {"INT8", "FP16"} <= config.flags
        want = batches[meta.graph]
        assert len(config.fed) == len(want) == 3, meta.graph
        for got, ref in zip(config.fed, want, strict=True):  # what TensorRT read = recorded
            assert set(got) == set(ref) and all(torch.equal(got[k], ref[k]) for k in ref)
        assert (meta.calibration["source"], meta.calibration["frames"]) == ("frames", 3)
        sha = graph_spec(export, meta.graph).sha256
        table = calibration_table(config.fed[0])  # the network's inputs, in its order
        assert CalibrationCache(layout.calib_cache(meta.graph), sha).read() == table
    net_a, config_a = FakeBuilder.builds[0]
    assert "OBEY_PRECISION_CONSTRAINTS" in config_a.flags  # the cost volume stays fp32 in int8
    assert all(
        layer.precision is DataType.FLOAT  # type: ignore[attr-defined]
        for layer in net_a.layers
        if layer.op == "GridSample"
    )
    weights = weights_sha256(model)
    assert int8_rebuild_blocker(layout, CFG, weights) == ""
    FakeBuilder.builds = []
    metas = build_engines(model, CFG, layout, device="cpu")  # caches only: nothing is fed
    assert len(FakeBuilder.builds) == 3 and not any(c.fed for _, c in FakeBuilder.builds)
    assert [m.calibration["source"] for m in metas] == ["cache"] * 3
    assert check_engines(layout, Expected(CFG, weights, "int8", PLATFORM)) == []
    other_export = CalibrationCache(layout.calib_cache(STEREO_GRAPH), "0" * 64)
    other_export.write(calibration_table(["images"]))
    assert "stereo_feature.int8.calib" in int8_rebuild_blocker(layout, CFG, weights)
    single = [CalibFrame(batches[GRAPHS[0]][0]["images"][None], rig_calib(CFG))]
    with pytest.raises(EngineError, match="consecutive frames with ego poses"):
        build_engines(model, CFG, layout, calib_frames=single, device="cpu")


@pytest.fixture(scope="module")
def bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return calibration_bag(tmp_path_factory.mktemp("m2_calib"))


def test_temporal_calibration_inputs_are_what_the_node_feeds_each_graph(
    bag: Path, model: FlashOCC
) -> None:
    params = node_config_from_mapping({"model_config": "tiny-stereo", "weights": "random"})
    batches = gather_temporal_calibration(bag, params, CFG, model, max_frames=3)
    a_b, b_b, s_b = (batches[g] for g in ALL_GRAPHS)
    for graph, (inputs, _) in zip(ALL_GRAPHS, stereo_graph_io(CFG), strict=True):
        assert len(batches[graph]) == 3
        assert all({k: list(v.shape) for k, v in b.items()} == inputs for b in batches[graph])
    # The node's own path on the same bag: its history's cache and labels, frame by frame.
    backend = TorchBackend(model, CFG, history_spacing_ns=int(params.history_spacing_s * 1e9))
    pipeline = OccupancyPipeline(CFG, backend, max_gap_ns=int(params.history_max_gap_s * 1e9))
    results, caches = [], []
    for result in OfflineReplay(params, pipeline).run(bag):
        assert backend.history is not None
        results.append(result)
        caches.append(backend.history.frames[-1])
    assert len(results) == 3 and not pipeline.history_resets
    graph_a, graph_b = StereoImageToDepth(model), BevPairToLogits(model)
    with torch.no_grad():
        for i in range(3):
            a = a_b[i]
            depth, _, stereo = graph_a(*(a[n] for n in IMAGE_INPUTS))
            assert torch.allclose(depth, caches[i].depth[0], atol=1e-5), i
            assert torch.allclose(stereo, caches[i].stereo[0], atol=1e-5), i
            logits = graph_b(b_b[i]["bev_prev"], b_b[i]["bev_curr"])[0]  # (X, Y, Z, cls)
            assert (logits.argmax(-1).numpy() == results[i].labels).all(), i
            assert torch.equal(s_b[i]["images"], a["images"])
        own = StereoFeature(model)(s_b[0]["images"])  # scene start: graph S's output
    assert torch.allclose(a_b[0]["prev_stereo"], own, atol=1e-6)
    assert torch.equal(a_b[1]["prev_stereo"], caches[0].stereo[0])  # t−1's stereo feature
    assert not torch.equal(b_b[1]["bev_prev"], b_b[1]["bev_curr"])
    strided = gather_temporal_calibration(bag, params, CFG, model, max_frames=5, stride=2)
    assert len(strided[GRAPHS[1]]) == 2  # frames 0 and 2; the history still saw frame 1
    assert torch.equal(strided[GRAPHS[0]][1]["prev_stereo"], a_b[2]["prev_stereo"])
