"""TensorRT end to end: build, load, run and compare with PyTorch fp32 per precision; refuse and
rebuild on stale metadata; the build_engine CLI. Needs CUDA and TensorRT 10.x: marked
`gpu` and `tensorrt`, skipped with the reason where either is missing (every machine of this
project so far). In: tiny config on a small grid, random weights. Out: pass/fail.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny_config import TINY
from trt_marks import TRT_MARKS

from flashocc_ros.deploy.calibration import CalibFrame
from flashocc_ros.deploy.engine_meta import GRAPHS, EngineLayout
from flashocc_ros.deploy.trt_build import build_engines
from flashocc_ros.model.flashocc import FlashOCC, build_model
from flashocc_ros.model.geometry import Calibration
from flashocc_ros.runtime.backend import BackendError, TorchBackend
from flashocc_ros.tools.compare import Frame, compare_backends, random_frames

pytestmark = TRT_MARKS
#: (max abs logit difference or None, minimum arg-max agreement) vs PyTorch fp32 on CUDA.
TOLERANCE = {"fp32": (1e-2, 0.999), "fp16": (None, 0.99), "int8": (None, 0.9)}


@pytest.fixture(scope="module")
def model() -> FlashOCC:
    torch.manual_seed(0)
    return build_model(TINY).eval()


@pytest.fixture(scope="module")
def engines(model: FlashOCC, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("engines")
    calib = [CalibFrame(f.images, f.calib) for f in random_frames(TINY, 4, seed=7)]
    for precision in TOLERANCE:
        frames = calib if precision == "int8" else None
        build_engines(model, TINY, EngineLayout(root, precision), calib_frames=frames)
    return root


def _frames() -> list[Frame]:
    frames = list(random_frames(TINY, 3))
    c = frames[0].calib
    c2e = c.camera_to_ego.clone()
    c2e[..., 0, 3] += 0.7  # every camera 0.7 m forward: other pooling indices
    frames.append(Frame(frames[0].images, Calibration(c2e, *c.tensors()[1:])))
    return frames


@pytest.mark.parametrize("precision", list(TOLERANCE))
def test_engine_matches_pytorch(model: FlashOCC, engines: Path, precision: str) -> None:
    from flashocc_ros.runtime.trt_backend import TensorRTBackend

    backend = TensorRTBackend(model, TINY, engines, precision)
    report = compare_backends(TorchBackend(model, TINY, "cuda"), backend, _frames())
    max_abs, agreement = TOLERANCE[precision]
    if max_abs is not None:
        assert report.max_abs <= max_abs, report.table()
    assert report.agreement >= agreement, report.table()
    assert backend.indices.rebuilds == 2  # two calibrations over four frames
    assert set(backend.last_stage_timings_ms()) == {
        "image_graph",
        "pooling",
        "bev_graph",
        "backend_total",
    }
    meta = json.loads(EngineLayout(engines, precision).metadata("image_to_depth").read_text())
    assert meta["gpu_name"] == torch.cuda.get_device_name()
    assert (meta["calibration"].get("source") == "frames") == (precision == "int8")


def test_stale_engine_is_refused_then_rebuilt(
    model: FlashOCC, engines: Path, tmp_path: Path
) -> None:
    import shutil

    from flashocc_ros.runtime.trt_backend import TensorRTBackend

    copy = tmp_path / "copy"
    shutil.copytree(engines, copy)
    layout = EngineLayout(copy, "fp16")
    data = json.loads(layout.metadata(GRAPHS[1]).read_text())
    data["tensorrt_version"] = "10.0.0.1"
    layout.metadata(GRAPHS[1]).write_text(json.dumps(data))
    with pytest.raises(BackendError, match=r"TensorRT 10\.0\.0\.1.*build_engine"):
        TensorRTBackend(
            model, TINY, copy, "fp16", build_hint="python -m flashocc_ros.tools.build_engine"
        )
    rebuilt = TensorRTBackend(model, TINY, copy, "fp16", mismatch="rebuild")
    assert rebuilt.rebuilt
    frame = _frames()[0]
    assert rebuilt.infer(frame.images, frame.calib).shape == (
        1,
        *TINY.grid.shape,
        TINY.num_classes,
    )


def test_build_engine_cli_builds_then_reports_up_to_date(tmp_path: Path) -> None:
    from flashocc_ros.tools import build_engine

    args = ["--model-config", "tiny", "--weights", "random", "--precision", "fp32"]
    args += ["--out", str(tmp_path / "e")]
    assert build_engine.main(args) == 0
    layout = EngineLayout(tmp_path / "e", "fp32")
    assert all(layout.engine(g).is_file() and layout.metadata(g).is_file() for g in GRAPHS)
    assert layout.timing_cache.stat().st_size > 0
    stamp = layout.engine(GRAPHS[0]).stat().st_mtime_ns
    assert build_engine.main(args) == 0  # up to date: not rebuilt
    assert layout.engine(GRAPHS[0]).stat().st_mtime_ns == stamp
