"""The engine build and the engine runtime over a fake TensorRT, single-frame (tiny): INT8 caches
keyed on the calibration frames and the metadata naming the frames really used, the configured
GPU current around every TensorRT call, the refusal of a TensorRT without the weakly typed
precision controls, and docs/deployment.md's table of those controls.
In: tiny on the small grid (seeded weights, one export), random calibration batches, the fakes of
trt_fakes.py. Out: pass/fail (CPU, no TensorRT).
"""

from __future__ import annotations

import logging
import re
import sys
import types
from pathlib import Path

import pytest
import torch
from deploy_fakes import fake_export
from tiny_config import TINY
from torch import Tensor
from trt_fakes import (
    DEVICE_CALLS,
    PLATFORM,
    FakeBuilder,
    FakeCudaDevice,
    install_fake_cuda_device,
    install_fake_tensorrt,
    write_fake_engine,
)

from flashocc_ros.deploy import trt_build
from flashocc_ros.deploy.calibration import CalibrationData, GraphBatches
from flashocc_ros.deploy.engine_meta import (
    GRAPHS,
    EngineError,
    EngineLayout,
    Expected,
    check_engines,
    graph_spec,
    make_metadata,
)
from flashocc_ros.deploy.onnx_export import read_metadata, weights_sha256
from flashocc_ros.deploy.trt_build import (
    WEAK_TYPING_API,
    build_engine,
    build_engines,
    weak_typing_missing,
)
from flashocc_ros.model.flashocc import FlashOCC, build_model

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model() -> FlashOCC:
    torch.manual_seed(0)
    return build_model(TINY).eval()


@pytest.fixture(scope="module")
def folder(model: FlashOCC, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An engine folder with tiny's export and fp32 engines built over the fake TensorRT."""
    mp = pytest.MonkeyPatch()
    try:
        install_fake_tensorrt(mp)
        root = tmp_path_factory.mktemp("tiny_engines")
        build_engines(model, TINY, EngineLayout(root, "fp32"), device="cpu")
        return root
    finally:
        mp.undo()


@pytest.fixture
def fake_tensorrt(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    return install_fake_tensorrt(monkeypatch)


def random_batches(root: Path, seed: int, count: int = 2) -> GraphBatches:
    """`count` random batches per graph, shaped as the export's inputs."""
    export = read_metadata(root / "onnx")
    gen = torch.Generator().manual_seed(seed)
    out: GraphBatches = {}
    for graph in GRAPHS:
        spec = graph_spec(export, graph)
        out[graph] = [
            {name: torch.rand(shape, generator=gen) for name, shape in spec.inputs.items()}
            for _ in range(count)
        ]
    return out


def fed(graph_index: int) -> list[dict[str, Tensor]]:
    """The batches the fake TensorRT read in the `graph_index`-th build since install."""
    return FakeBuilder.builds[graph_index][1].fed


def _same(a: list[dict[str, Tensor]], b: list[dict[str, Tensor]]) -> bool:
    if len(a) != len(b):
        return False
    pairs = zip(a, b, strict=True)
    return all(set(x) == set(y) and all(torch.equal(x[k], y[k]) for k in x) for x, y in pairs)


# --- INT8: the calibration cache is keyed on the frames; the metadata names the frames used ---


def test_a_new_bag_recalibrates_and_the_metadata_names_the_frames_used(
    fake_tensorrt: types.ModuleType, folder: Path, model: FlashOCC
) -> None:
    """`--calib-bag NEW --force` used to calibrate with the cache of the old frames (same ONNX)
    while the metadata named the new bag."""
    layout = EngineLayout(folder, "int8")
    old, new = random_batches(folder, 1), random_batches(folder, 2)
    metas = build_engines(
        model, TINY, layout, calib_batches=old, calib_source="/bags/old", device="cpu"
    )
    for i, (graph, meta) in enumerate(zip(GRAPHS, metas, strict=True)):
        assert _same(fed(i), old[graph])
        want = CalibrationData.of(old[graph], "/bags/old")
        assert meta.calibration == {
            "source": "frames",
            **want.record(),
            "cache": str(layout.calib_cache(graph)),
        }
    FakeBuilder.builds = []
    metas = build_engines(
        model, TINY, layout, calib_batches=new, calib_source="/bags/new", device="cpu"
    )
    for i, (graph, meta) in enumerate(zip(GRAPHS, metas, strict=True)):
        assert _same(fed(i), new[graph]), graph  # TensorRT calibrated on the new frames
        assert meta.calibration["source"] == "frames"
        assert meta.calibration["bag"] == "/bags/new"
        assert meta.calibration["data_sha256"] == CalibrationData.of(new[graph]).sha256
    # The same frames again (the bag moved): the cache is reused, and the metadata names the
    # frames its scales came from, not the path given now.
    FakeBuilder.builds = []
    metas = build_engines(
        model, TINY, layout, calib_batches=new, calib_source="/moved/new", device="cpu"
    )
    assert not any(config.fed for _, config in FakeBuilder.builds)
    assert [m.calibration["source"] for m in metas] == ["cache", "cache"]
    assert [m.calibration["bag"] for m in metas] == ["/bags/new", "/bags/new"]
    # No frames at all: the caches, and the frames they were computed from.
    metas = build_engines(model, TINY, layout, device="cpu")
    assert [(m.calibration["source"], m.calibration["bag"]) for m in metas] == [
        ("cache", "/bags/new")
    ] * 2
    assert metas[1].calibration["data_sha256"] == CalibrationData.of(new[GRAPHS[1]]).sha256
    assert check_engines(layout, Expected(TINY, weights_sha256(model), "int8", PLATFORM)) == []


# --- the configured device is current for the build, deserialisation and execution ----------


def test_the_build_runs_with_the_configured_device_current(
    fake_tensorrt: types.ModuleType,
    folder: Path,
    model: FlashOCC,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With device cuda:1 the builder used to run on whatever device was current (device 0),
    while the platform in the metadata (and int8 buffers) followed cuda:1."""
    caplog.set_level(logging.INFO, logger=trt_build.LOG.name)
    build_engines(model, TINY, EngineLayout(folder, "fp16"), device="cuda:1")
    calls = {call for call, _ in DEVICE_CALLS}
    assert {"Builder", "create_network", "parse", "create_builder_config"} <= calls
    assert "build_serialized_network" in calls
    assert {device for _, device in DEVICE_CALLS} == {1}, DEVICE_CALLS
    assert FakeCudaDevice.stack == []  # and the previous device is current again
    deprecated = [r.getMessage() for r in caplog.records if "deprecates" in r.getMessage()]
    assert deprecated == [
        "TensorRT 10.13.0.35 deprecates BuilderFlag.FP16 (weak typing; they work throughout "
        "10.x and are gone in 11.0, see docs/deployment.md)"
    ]


def test_the_runtime_deserialises_and_runs_with_the_configured_device_current(
    fake_tensorrt: types.ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The runtime, every deserialisation, context, binding and execution of a backend on
    cuda:1 happen with cuda:1 current (TensorRT uses the current device, not the buffers')."""
    from flashocc_ros.runtime.trt_backend import TensorRTBackend

    layout = EngineLayout(tmp_path, "fp16")
    for graph in GRAPHS:
        meta = make_metadata(graph, "fp16", fake_export(TINY), PLATFORM, "e" * 64)
        io = {k: (v, True) for k, v in meta.inputs.items()}
        io.update({k: (v, False) for k, v in meta.outputs.items()})
        write_fake_engine(layout.engine(graph), io)
        layout.metadata(graph).write_text(meta.to_json())
    empty = torch.empty
    # Buffers land on the CPU (no CUDA here); only the current device is under test.
    monkeypatch.setattr(torch, "empty", lambda *a, device=None, **k: empty(*a, **k))
    backend = TensorRTBackend.__new__(TensorRTBackend)
    backend.cfg, backend.device = TINY, torch.device("cuda", 1)
    engines = backend._load(layout)
    for engine in engines.values():
        engine.run(types.SimpleNamespace(cuda_stream=0))  # type: ignore[arg-type]
    calls = [call for call, _ in DEVICE_CALLS]
    assert calls.count("deserialize_cuda_engine") == calls.count("execute_async_v3") == 2
    assert {"Runtime", "create_execution_context", "set_tensor_address"} <= set(calls)
    assert {device for _, device in DEVICE_CALLS} == {1}, DEVICE_CALLS
    assert backend._runtime.engine_host_code_allowed is False  # no host code from an engine


def test_a_cpu_device_makes_no_cuda_device_current(monkeypatch: pytest.MonkeyPatch) -> None:
    from flashocc_ros.deploy.engine_meta import on_cuda_device

    install_fake_cuda_device(monkeypatch)
    with on_cuda_device("cpu"):
        assert FakeCudaDevice.stack == []
    with on_cuda_device("cuda:2"):
        assert FakeCudaDevice.stack == [2]


# --- TensorRT without the weakly typed precision controls (11.x) is refused in one line -------


def _without(mod: types.ModuleType, *names: str) -> None:
    """Remove `names` ("BuilderFlag.FP16", "IInt8EntropyCalibrator2") from the fake module."""
    for name in names:
        owner_name, _, attr = name.rpartition(".")
        owner = getattr(mod, owner_name) if owner_name else mod
        if isinstance(owner, type):
            kept = {k: v for k, v in vars(owner).items() if k != attr and not k.startswith("__")}
            owner = type(owner.__name__, (), kept)
            setattr(mod, owner_name, owner)
        else:
            delattr(owner, attr)


def test_tensorrt_without_weak_typing_is_refused_before_building(
    fake_tensorrt: types.ModuleType, folder: Path, model: FlashOCC
) -> None:
    """TensorRT 11 removed the precision flags, layer precision and the INT8 calibrator: a
    build used to die with an AttributeError on `trt.BuilderFlag.FP16` mid-way."""
    _without(fake_tensorrt, *(api.name for api in WEAK_TYPING_API))
    fake_tensorrt.__version__ = "11.1.0.2"  # type: ignore[attr-defined]
    onnx = folder / "onnx" / "bev_to_logits.onnx"
    with pytest.raises(EngineError) as err:
        build_engine(onnx, folder / "x.engine", "fp16")
    assert str(err.value).startswith(
        "TensorRT 11.1.0.2 lacks BuilderFlag.FP16, which fp16 engines are built with here"
    )
    assert "\n" not in str(err.value) and "tensorrt-cu12>=10,<11" in str(err.value)
    assert not DEVICE_CALLS  # refused before any builder existed
    assert weak_typing_missing(fake_tensorrt, "fp32", keep_fp32=True) == []  # fp32 needs none
    assert weak_typing_missing(fake_tensorrt, "int8", keep_fp32=True) == [
        api.name for api in WEAK_TYPING_API
    ]


def test_a_10x_runtime_lacking_the_int8_calibrator_is_refused_by_name(
    fake_tensorrt: types.ModuleType, folder: Path, model: FlashOCC
) -> None:
    _without(fake_tensorrt, "IInt8EntropyCalibrator2")
    with pytest.raises(EngineError, match=r"^TensorRT 10\.13\.0\.35 lacks IInt8Entropy"):
        build_engines(model, TINY, EngineLayout(folder, "int8"), device="cpu")
    assert not FakeBuilder.builds
    assert weak_typing_missing(fake_tensorrt, "fp16", keep_fp32=False) == []


def test_docs_list_every_weak_typing_control_with_its_versions() -> None:
    """docs/deployment.md's table names each control the builder uses with the TensorRT
    versions that deprecated and removed it, and the builder uses no control the table lacks."""
    docs = (ROOT / "docs" / "deployment.md").read_text()
    for api in WEAK_TYPING_API:
        row = rf"\| `{re.escape(api.name)}` \| [^|]*\| {api.deprecated} \| {api.removed} \|"
        assert re.search(row, docs), f"docs/deployment.md lacks the row of {api.name}"
    source = (ROOT / "flashocc_ros" / "deploy" / "trt_build.py").read_text()
    used = set(re.findall(r"trt\.(BuilderFlag\.\w+|IInt8\w+)", source))
    used |= {"ILayer.precision"} if re.search(r"layer\.precision = ", source) else set()
    used |= {"ILayer.set_output_type"} if ".set_output_type(" in source else set()
    used |= {"IBuilderConfig.int8_calibrator"} if "config.int8_calibrator =" in source else set()
    used.discard("IInt8Calibrator")  # the calibrator's base class, in type hints only
    assert used == {api.name for api in WEAK_TYPING_API}


def test_fakes_lack_nothing_a_10x_build_needs(fake_tensorrt: types.ModuleType) -> None:
    assert "tensorrt" in sys.modules
    assert weak_typing_missing(fake_tensorrt, "int8", keep_fp32=True) == []
