"""build_engine CLI error paths, the factory's TensorRT wiring, `auto` choice and its log line.
In: tiny config with random weights; TensorRT/CUDA facts passed in or monkeypatched.
Out: pass/fail (CPU only; nothing here needs TensorRT or a GPU).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
import torch
from tiny_config import TINY
from trt_fakes import PLATFORM, calibration_table, install_fake_tensorrt, write_export

from flashocc_ros.config import ConfigError, model_config
from flashocc_ros.deploy.engine_meta import GRAPHS, STEREO_GRAPH, EngineLayout
from flashocc_ros.model.flashocc import FlashOCC, build_model
from flashocc_ros.node_config import NodeConfig, node_config_from_mapping
from flashocc_ros.runtime import factory
from flashocc_ros.runtime.backend import BackendError, TorchBackend
from flashocc_ros.runtime.factory import BuildOnlyDone, auto_choice, create_pipeline, make_backend
from flashocc_ros.tools import build_engine

torch.set_num_threads(1)
NO_TRT = "TensorRT is not importable (test)"


def params(**values: object) -> NodeConfig:
    return node_config_from_mapping({"model_config": "tiny", "weights": "random", **values})


@pytest.fixture(scope="module")
def model() -> FlashOCC:
    torch.manual_seed(0)
    return build_model(TINY).eval()


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model-config", "nope"], "unknown model config"),
        (
            ["--model-config", "tiny-stereo", "--precision", "int8"],
            "--precision int8 needs --calib-bag BAG",
        ),
        (["--weights", "/no/such.safetensors"], "weights file not found"),
        (
            ["--calib-bag", "/no/such/bag", "--precision", "int8"],
            "--calib-bag /no/such/bag not found",
        ),
        (["--calib-frames", "0"], "--calib-frames and --calib-stride must be >= 1"),
        (["--precision", "int8"], "--precision int8 needs --calib-bag BAG"),
    ],
)
def test_user_mistakes_end_in_one_line_and_exit_2(
    args: list[str], message: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    base = ["--model-config", "tiny", "--weights", "random", "--out", str(tmp_path / "e")]
    assert build_engine.main([*base, *args]) == 2
    errors = _errors(caplog)
    assert len(errors) == 1, errors
    assert errors[0].startswith("flashocc-build-engine: ") and message in errors[0], errors
    assert "Traceback" not in caplog.text


def test_calib_bag_is_refused_for_float_engines(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    base = ["--model-config", "tiny", "--weights", "random", "--out", str(tmp_path / "e")]
    assert build_engine.main([*base, "--precision", "fp16", "--calib-bag", str(tmp_path)]) == 2
    assert "for --precision int8 only" in _errors(caplog)[0]


def test_a_crafted_calibration_cache_ends_the_build_in_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """int8 without a bag builds from the folder's caches: a cache that is not a calibration
    table (here a pickle whose unpickling would run code) is refused naming the file, in one
    line, before TensorRT is even looked for (it used to be handed to TensorRT)."""
    import pickle

    from flashocc_ros.deploy.calibration import CalibrationCache
    from flashocc_ros.deploy.onnx_export import weights_sha256
    from flashocc_ros.runtime.factory import load_model

    cfg, model = load_model("tiny", "random")
    layout = EngineLayout(tmp_path / "e", "int8")
    export = write_export(layout.onnx_dir, cfg, weights_sha256(model))
    for graph, spec in zip(GRAPHS, (export.image_graph, export.bev_graph), strict=True):
        CalibrationCache(layout.calib_cache(graph), spec.sha256).write(calibration_table(["x"]))
    crafted = layout.calib_cache(GRAPHS[1])
    crafted.write_bytes(pickle.dumps(("exec", "import os")))
    args = ["--model-config", "tiny", "--weights", "random", "--precision", "int8"]
    assert build_engine.main([*args, "--out", str(layout.root)]) == 2
    assert _errors(caplog) == [
        "flashocc-build-engine: --precision int8 needs --calib-bag BAG (an int8 rebuild needs "
        f"calibration frames: {crafted} is not a TensorRT calibration table: binary data, "
        "not text)"
    ]


def test_int8_engines_from_another_bag_are_not_up_to_date(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--calib-bag NEW` on int8 engines calibrated on another bag rebuilds them (it reported
    them up to date); the bag they were calibrated on keeps them."""
    from flashocc_ros.deploy import engine_meta
    from flashocc_ros.deploy.engine_meta import make_metadata
    from flashocc_ros.deploy.onnx_export import file_sha256, weights_sha256
    from flashocc_ros.runtime.factory import load_model

    install_fake_tensorrt(monkeypatch)
    monkeypatch.setattr(engine_meta, "cuda_platform", lambda version, device="cuda": PLATFORM)
    old_bag, new_bag = tmp_path / "old_bag", tmp_path / "new_bag"
    old_bag.mkdir()
    new_bag.mkdir()  # empty: reading it fails, which shows the build went for it
    cfg, model = load_model("tiny", "random")
    layout = EngineLayout(tmp_path / "e", "int8")
    export = write_export(layout.onnx_dir, cfg, weights_sha256(model))
    for graph in GRAPHS:
        layout.engine(graph).write_bytes(graph.encode())
        sha = file_sha256(layout.engine(graph))
        calibration = {"source": "frames", "bag": str(old_bag.resolve())}
        meta = make_metadata(graph, "int8", export, PLATFORM, sha, calibration=calibration)
        layout.metadata(graph).write_text(meta.to_json())
    args = ["--model-config", "tiny", "--weights", "random", "--precision", "int8"]
    args += ["--out", str(layout.root), "--calib-bag"]
    caplog.set_level(logging.INFO)
    assert build_engine.main([*args, str(old_bag)]) == 0
    assert "are up to date" in caplog.text
    caplog.clear()
    assert build_engine.main([*args, str(new_bag)]) == 2
    assert "cannot read calibration bag" in _errors(caplog)[0]


def test_out_must_be_a_folder(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "file").write_text("x")
    args = ["--model-config", "tiny", "--weights", "random", "--out", str(tmp_path / "file")]
    assert build_engine.main(args) == 2
    assert "is not a folder" in _errors(caplog)[0]


def test_missing_tensorrt_is_a_user_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flashocc_ros.deploy import trt_build
    from flashocc_ros.deploy.engine_meta import EngineError

    def missing() -> str:
        raise EngineError(NO_TRT)

    monkeypatch.setattr(trt_build, "load_tensorrt", missing)
    args = ["--model-config", "tiny", "--weights", "random", "--out", str(tmp_path / "e")]
    assert build_engine.main(args) == 2
    assert _errors(caplog) == [f"flashocc-build-engine: {NO_TRT}"]
    assert not (tmp_path / "e").exists()  # nothing exported or built before the check


def _facts(**kw: object) -> dict[str, object]:
    return {"cuda_available": True, "tensorrt_missing": None, "engines_present": True, **kw}


@pytest.mark.parametrize(
    ("values", "facts", "kind", "device", "precision", "reason"),
    [
        ({"device": "cuda", "engine_path": "e", "precision": "fp16"}, {},
         "tensorrt", "cuda", "fp16", ""),
        ({"device": "cpu", "precision": "int8"}, {}, "torch", "cpu", "fp32", "device is cpu"),
        ({"device": "cuda", "precision": "fp16"}, {"cuda_available": False},
         "torch", "cpu", "fp32", "CUDA is not available"),
        ({"device": "cuda", "engine_path": "e", "precision": "int8"}, {"tensorrt_missing": NO_TRT},
         "torch", "cuda", "fp16", NO_TRT),
        ({"device": "cuda:1", "precision": "fp16"}, {},
         "torch", "cuda:1", "fp16", "engine_path is empty"),
        ({"device": "cuda", "engine_path": "e", "precision": "fp32"}, {"engines_present": False},
         "torch", "cuda", "fp32", "no fp32 engines in e"),
    ],
)  # fmt: skip
def test_auto_choice(
    values: dict[str, object],
    facts: dict[str, object],
    kind: str,
    device: str,
    precision: str,
    reason: str,
) -> None:
    choice = auto_choice(TINY, params(**values), **_facts(**facts))  # type: ignore[arg-type]
    assert (choice.kind, choice.device, choice.precision) == (kind, device, precision)
    assert reason in choice.reason and (reason != "") == (choice.reason != "")


def test_auto_runs_4d_stereo_engines_and_refuses_the_rest() -> None:
    stereo = model_config("tiny-stereo")
    fp16 = params(device="cuda", engine_path="e", precision="fp16")
    choice = auto_choice(stereo, fp16, **_facts())  # type: ignore[arg-type]
    assert (choice.kind, choice.precision, choice.reason) == ("tensorrt", "fp16", "")
    int8 = params(device="cuda", engine_path="e", precision="int8")
    assert auto_choice(stereo, int8, **_facts()).kind == "tensorrt"  # type: ignore[arg-type]
    temporal_only = TINY.replace(num_adj_frames=1)  # temporal without stereo: no export
    other = auto_choice(temporal_only, params(device="cuda", engine_path="e"), **_facts())  # type: ignore[arg-type]
    assert other.kind == "torch" and "without the 4D-stereo layout" in other.reason


def test_auto_falls_back_with_exactly_one_line(
    model: FlashOCC, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, logger=factory.LOG.name)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    backend = make_backend(TINY, model, params(backend="auto", device="cuda", precision="fp16"))
    assert isinstance(backend, TorchBackend) and backend.name == "torch-cpu-fp32"
    lines = [r for r in caplog.records if r.name == factory.LOG.name]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    assert lines[0].getMessage() == (
        "backend auto: torch on cpu (fp32) because CUDA is not available here"
    )
    caplog.clear()
    make_backend(TINY, model, params(backend="auto"))
    lines = [r for r in caplog.records if r.name == factory.LOG.name]
    assert [(r.levelno, r.getMessage()) for r in lines] == [
        (logging.INFO, "backend auto: torch on cpu (fp32) because device is cpu")
    ]


def test_engines_present_needs_both_engines_and_metadata(tmp_path: Path) -> None:
    p = params(engine_path=str(tmp_path), precision="fp16")
    assert not factory._engines_present(p, TINY)
    layout = EngineLayout(tmp_path, "fp16")
    for graph in GRAPHS:
        layout.engine(graph).write_bytes(b"e")
    assert not factory._engines_present(p, TINY)
    for graph in GRAPHS:
        layout.metadata(graph).write_text("{}")
    assert factory._engines_present(p, TINY)
    assert not factory._engines_present(p.replace(precision="bf16"), TINY)
    stereo = model_config("tiny-stereo")
    assert not factory._engines_present(p, stereo)  # graph S missing
    layout.engine(STEREO_GRAPH).write_bytes(b"e")
    layout.metadata(STEREO_GRAPH).write_text("{}")
    assert factory._engines_present(p, stereo)


def test_tensorrt_backend_refusals_name_the_build_command(
    model: FlashOCC, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(BackendError, match=r"engine_path.*build_engine --model-config tiny"):
        make_backend(TINY, model, params(backend="tensorrt", precision="fp16"))
    with pytest.raises(BackendError, match="precision bf16"):
        make_backend(TINY, model, params(backend="tensorrt", precision="bf16", engine_path="e"))
    from flashocc_ros.deploy import trt_build
    from flashocc_ros.deploy.engine_meta import EngineError

    def missing() -> str:
        raise EngineError(NO_TRT)

    monkeypatch.setattr(trt_build, "load_tensorrt", missing)
    with pytest.raises(BackendError, match=re.escape(f"backend tensorrt: {NO_TRT}")):
        make_backend(TINY, model, params(backend="tensorrt", precision="fp16", engine_path="e"))


def test_build_only_needs_tensorrt_and_exits_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="build_only needs backend tensorrt"):
        create_pipeline(params(build_only=True, backend="torch"))

    class Built:
        name = "tensorrt-fp16"

    monkeypatch.setattr(factory, "make_backend", lambda *a: Built())
    with pytest.raises(BuildOnlyDone) as done:
        create_pipeline(params(build_only=True, backend="tensorrt", engine_path="e"))
    assert done.value.code == 0 and "tensorrt-fp16 engines in e" in done.value.message
