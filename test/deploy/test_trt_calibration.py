"""INT8 calibration without TensorRT: bag frames through the node's preprocessing, graph B inputs,
batch feeding, cache validity, the calibrator/progress subclasses over a fake `tensorrt` module,
and the TensorRT version gate. In: tiny config, a 3-keyframe generated bag. Out: pass/fail.
"""

from __future__ import annotations

import json
import logging
import pickle
import sys
import types
from pathlib import Path

import pytest
import torch
from deploy_fakes import calibration_bag
from tiny_config import TINY
from trt_fakes import calibration_table

from flashocc_ros.deploy.calibration import (
    MAX_TABLE_BYTES,
    BatchFeeder,
    CalibFrame,
    CalibrationCache,
    CalibrationData,
    CalibrationError,
    RecordingBackend,
    gather_calibration_frames,
    graph_inputs,
    select_frames,
    table_problem,
)
from flashocc_ros.deploy.engine_meta import EngineError
from flashocc_ros.deploy.onnx_export import BevToLogits
from flashocc_ros.deploy.trt_build import (
    BuildProgress,
    load_tensorrt,
    make_entropy_calibrator,
    make_progress_monitor,
)
from flashocc_ros.model.flashocc import FlashOCC, build_model
from flashocc_ros.node_config import node_config_from_mapping
from flashocc_ros.runtime.backend import TorchBackend
from flashocc_ros.runtime.pipeline import OccupancyPipeline
from flashocc_ros.tools.compare import random_frames
from flashocc_ros.tools.replay import OfflineReplay

torch.set_num_threads(1)


class _Payload:
    """Unpickling this would run code (it creates the file `marker`)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.fixture(scope="module")
def model() -> FlashOCC:
    torch.manual_seed(0)
    return build_model(TINY).eval()


@pytest.fixture(scope="module")
def bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return calibration_bag(tmp_path_factory.mktemp("calib"))


def test_select_frames_honours_stride_and_limit() -> None:
    assert select_frames(10, 3, 2) == [0, 2, 4]
    assert select_frames(3, 64, 1) == [0, 1, 2]
    assert select_frames(0, 4, 1) == []
    with pytest.raises(CalibrationError):
        select_frames(3, 0, 1)


def test_bag_frames_are_what_the_node_feeds_the_network(bag: Path, model: FlashOCC) -> None:
    params = node_config_from_mapping({"model_config": "tiny", "weights": "random"})
    frames = gather_calibration_frames(bag, params, TINY, max_frames=2, stride=1)
    assert len(frames) == 2
    assert frames[0].images.shape == (1, 6, 3, *TINY.input_size)
    # The node's path on the same bag: its labels must equal the network run on our frames.
    backend = TorchBackend(model, TINY)
    results = list(OfflineReplay(params, OccupancyPipeline(TINY, backend)).run(bag))
    assert len(results) == 3
    for frame, result in zip(frames, results, strict=False):
        labels = backend.infer(frame.images, frame.calib)[0].argmax(-1).to(torch.uint8).numpy()
        assert (labels == result.labels).all()
    three = gather_calibration_frames(bag, params, TINY, max_frames=3)
    strided = gather_calibration_frames(bag, params, TINY, max_frames=5, stride=2)
    assert len(three) == 3 and len(strided) == 2  # bundles 0 and 2
    assert torch.equal(strided[0].images, three[0].images)
    assert torch.equal(strided[1].images, three[2].images)
    with pytest.raises(CalibrationError, match="not found"):
        gather_calibration_frames(bag.parent / "nope", params, TINY)
    wrong = params.replace(camera_names=("CAM_X",))
    with pytest.raises(CalibrationError, match="no camera topic found: looked for /cam_x"):
        gather_calibration_frames(bag, wrong, TINY)


def test_graph_b_inputs_reproduce_the_model(model: FlashOCC) -> None:
    frames = [CalibFrame(f.images, f.calib) for f in random_frames(TINY, 2)]
    inputs = graph_inputs(model, TINY, frames)
    assert [list(b) for b in inputs["image_to_depth"]] == [["images"], ["images"]]
    g = TINY.grid
    assert inputs["bev_to_logits"][0]["bev"].shape == (
        1,
        TINY.context_channels,
        g.size_y,
        g.size_x,
    )
    with torch.no_grad():
        for frame, bev in zip(frames, inputs["bev_to_logits"], strict=True):
            want = model(frame.images, frame.calib)
            got = BevToLogits(model)(bev["bev"])
            assert torch.allclose(got, want, atol=1e-5)


def test_recording_backend_keeps_inputs_and_returns_zero_logits() -> None:
    rec = RecordingBackend(TINY)
    frame = next(iter(random_frames(TINY, 1)))
    out = rec.infer(frame.images, frame.calib)
    assert out.shape == (1, *TINY.grid.shape, TINY.num_classes) and not out.any()
    assert len(rec.frames) == 1 and torch.equal(rec.frames[0].images, frame.images)


def test_feeder_copies_each_batch_and_hands_out_buffer_pointers() -> None:
    batches = [
        {"x": torch.full((2, 3), float(i)), "y": torch.full((4,), -float(i))} for i in range(3)
    ]
    buffers = {"x": torch.empty(2, 3), "y": torch.empty(4)}
    feeder = BatchFeeder(batches, buffers)
    assert len(feeder) == 3
    for i in range(3):
        ptrs = feeder.next_pointers(["y", "x"])
        assert ptrs == [buffers["y"].data_ptr(), buffers["x"].data_ptr()]
        assert (buffers["x"] == i).all() and (buffers["y"] == -i).all()
    assert feeder.next_pointers(["x", "y"]) is None
    feeder.reset()
    assert feeder.next_pointers(["x"]) is not None
    with pytest.raises(CalibrationError, match="unknown inputs"):
        feeder.next_pointers(["z"])
    with pytest.raises(CalibrationError, match=r"expects \(2, 3\)"):
        BatchFeeder([{"x": torch.zeros(3, 2), "y": torch.zeros(4)}], buffers)
    with pytest.raises(CalibrationError, match="has inputs"):
        BatchFeeder([{"x": torch.zeros(2, 3)}], buffers)
    with pytest.raises(CalibrationError, match="no calibration batches"):
        BatchFeeder([], buffers)


def test_calibration_cache_belongs_to_one_onnx_graph(tmp_path: Path) -> None:
    table = calibration_table(["images"])
    cache = CalibrationCache(tmp_path / "calib" / "a.int8.calib", "1" * 64)
    assert cache.read() is None and not cache.valid()
    assert cache.problem().startswith("no calibration cache")
    cache.write(table)
    assert cache.read() == table
    assert CalibrationCache(cache.path, "2" * 64).read() is None  # another export
    assert "belongs to another ONNX export" in CalibrationCache(cache.path, "2" * 64).problem()
    cache.sidecar.write_text("garbage")
    assert not cache.valid() and "record a.int8.calib.json is unreadable" in cache.problem()
    cache.sidecar.write_text('["onnx_sha256"]')  # JSON, but not a record
    assert not cache.valid()


def _batches(seed: int, count: int = 2) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [{"bev": torch.rand(1, 2, 3, generator=gen)} for _ in range(count)]


def test_calibration_cache_is_keyed_on_the_frames_too(tmp_path: Path) -> None:
    """A cache computed from other frames is not reused for a build with frames (it used to be,
    whenever the ONNX hash matched); a build without frames takes it and names its frames."""
    old = CalibrationData.of(_batches(0), "/bags/old")
    assert old == CalibrationData.of(_batches(0), "/bags/old")  # the content, reproducibly
    assert old.frames == 2 and old.sha256 != CalibrationData.of(_batches(1)).sha256
    assert old.sha256 != CalibrationData.of(_batches(0, count=1)).sha256  # fewer frames
    moved = CalibrationData.of(_batches(0), "/elsewhere/old")
    assert moved.sha256 == old.sha256  # the same frames from a moved bag: the same data
    path, onnx = tmp_path / "b.int8.calib", "1" * 64
    table = calibration_table(["bev"])
    CalibrationCache(path, onnx, old).write(table)
    record = json.loads(path.with_name("b.int8.calib.json").read_text())
    assert record == {"onnx_sha256": onnx, **old.record()}
    assert record["bag"] == "/bags/old" and record["frames"] == 2
    assert CalibrationCache(path, onnx, moved).read() == table  # same frames: reused
    new = CalibrationData.of(_batches(1), "/bags/new")
    stale = CalibrationCache(path, onnx, new)
    assert stale.read() is None  # TensorRT calibrates on the new frames
    assert "computed from other frames (2 frame(s) from /bags/old" in stale.problem()
    assert CalibrationCache(path, onnx).read() == table  # no frames: any cache of this graph
    CalibrationCache(path, onnx).write(table)  # rewritten without frames: keeps the record
    assert json.loads(path.with_name("b.int8.calib.json").read_text()) == record
    stale.write(table)
    assert CalibrationCache(path, onnx, new).read() == table
    assert CalibrationCache(path, onnx, old).read() is None


CRAFTED = {
    "pickle": "binary data, not text",
    "script": "no TRT-<version>-<algorithm> first line",
    "mangled": "line 2 is not '<tensor>: <hex scale>'",
    "empty": "no tensor scales",
}


@pytest.mark.parametrize("kind", list(CRAFTED))
def test_a_crafted_calibration_cache_is_refused_in_one_line(tmp_path: Path, kind: str) -> None:
    """The cache is handed to TensorRT as bytes and never unpickled; anything but a calibration
    table (a pickle that would run code, a script, a mangled table) is refused before TensorRT
    reads it, with one line naming the file."""
    marker = tmp_path / "ran"
    content = {
        "pickle": pickle.dumps(_Payload(marker)),
        "script": f"open({str(marker)!r}, 'w').close()\n".encode(),
        "mangled": b"TRT-101300-EntropyCalibration2\nbev = 1\n",
        "empty": b"TRT-101300-EntropyCalibration2\n",
    }[kind]
    path, onnx = tmp_path / "calib" / "a.int8.calib", "1" * 64
    CalibrationCache(path, onnx).write(calibration_table(["images"]))
    path.write_bytes(content)  # the record still matches: only the table is crafted
    cache = CalibrationCache(path, onnx)
    problem = cache.problem()
    assert problem == f"{path} is not a TensorRT calibration table: {CRAFTED[kind]}"
    assert "\n" not in problem
    assert cache.read() is None and not cache.valid()
    assert not marker.exists()  # nothing in it ran


def test_table_check_accepts_what_tensorrt_writes() -> None:
    """The layout TensorRT writes (header, then one `<tensor>: <hex>` line per tensor; names
    with spaces, brackets and colons as TensorRT's own unnamed tensors have)."""
    table = (
        b"TRT-100300-EntropyCalibration2\nimages: 3c010a14\n"
        b"(Unnamed Layer* 48) [Constant]_output: 3c88edfc\n/neck/Conv_output_0: 0\n"
        b"a:b: 3DDC858B\n"
    )
    assert table_problem(table) == ""
    assert "more than a calibration table" in table_problem(b" " * (MAX_TABLE_BYTES + 1))


class _FakeBase:
    """Stands in for the pybind base classes of TensorRT (which need __init__ called)."""

    def __init__(self) -> None:
        self.base_initialised = True


@pytest.fixture
def fake_tensorrt(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    mod = types.ModuleType("tensorrt")
    mod.__version__ = "10.13.0.35"  # type: ignore[attr-defined]
    mod.Builder = object  # type: ignore[attr-defined]
    mod.IInt8EntropyCalibrator2 = type("IInt8EntropyCalibrator2", (_FakeBase,), {})  # type: ignore[attr-defined]
    mod.IProgressMonitor = type("IProgressMonitor", (_FakeBase,), {})  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tensorrt", mod)
    return mod


def test_calibrator_forwards_to_feeder_and_cache(
    fake_tensorrt: types.ModuleType, tmp_path: Path
) -> None:
    buffers = {"bev": torch.empty(1, 2)}
    feeder = BatchFeeder([{"bev": torch.ones(1, 2)}], buffers)
    cache = CalibrationCache(tmp_path / "b.calib", "3" * 64)
    table = calibration_table(["bev"])
    cal = make_entropy_calibrator(feeder, cache)
    assert isinstance(cal, fake_tensorrt.IInt8EntropyCalibrator2) and cal.base_initialised  # type: ignore[attr-defined]
    assert cal.get_batch_size() == 1
    assert cal.get_batch(["bev"]) == [buffers["bev"].data_ptr()]
    assert cal.get_batch(["bev"]) is None
    assert cal.read_calibration_cache() is None
    cal.write_calibration_cache(memoryview(table))
    assert cal.read_calibration_cache() == table
    feeder.reset()
    assert cal.get_batch(["nope"]) is None  # an error ends calibration and is remembered
    assert isinstance(cal.error, CalibrationError)  # type: ignore[attr-defined]


def test_progress_monitor_logs_phases_and_quarters(
    fake_tensorrt: types.ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    progress = BuildProgress("graph fp16")
    monitor = make_progress_monitor(progress)
    monitor.phase_start("Building engine", None, 8)
    monitor.phase_start("Tactic search", "Building engine", 100)
    monitor.phase_start("inner detail", "Tactic search", 3)  # depth 2: not logged
    for step in range(100):
        assert monitor.step_complete("Tactic search", step) is True
    monitor.phase_finish("Tactic search")
    monitor.phase_finish("Building engine")
    text = caplog.text
    assert "[graph fp16] Building engine (8 steps)" in text
    assert "[graph fp16]   Tactic search: 25 %" in text and "Tactic search: 100 %" in text
    assert "inner detail" not in text and "[graph fp16] Building engine done" in text
    assert progress.lines == 7  # 2 starts + 4 quarters + 1 finish


def test_tensorrt_version_gate(monkeypatch: pytest.MonkeyPatch) -> None:
    stubs_only = types.ModuleType("tensorrt")  # what a stub package's namespace folder gives
    monkeypatch.setitem(sys.modules, "tensorrt", stubs_only)
    with pytest.raises(EngineError, match="no runtime"):
        load_tensorrt()
    v11 = types.ModuleType("tensorrt")
    v11.__version__, v11.Builder = "11.0.0.1", object  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tensorrt", v11)
    with pytest.raises(EngineError, match=r"needs the 10\.x line"):
        load_tensorrt()
    v10 = types.ModuleType("tensorrt")
    v10.__version__, v10.Builder = "10.13.0.35", object  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tensorrt", v10)
    assert load_tensorrt() == "10.13.0.35"
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # not installed at all
    with pytest.raises(EngineError, match="not importable"):
        load_tensorrt()
