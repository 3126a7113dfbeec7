"""The PyTorch fast path (`cuda_fast.CudaFastBackend`, `DeviceIndices`) against `TorchBackend`.
In: tiny config on a small grid, random weights and BatchNorm statistics. Out: pass/fail.

On the CPU the fast path runs its eager halves (no CUDA graphs, no fp16); the CUDA tests
(marked gpu, skipped with the reason where CUDA is absent) cover graphs, fp16 and the GPU
preprocessing inside the pipeline.
"""

from __future__ import annotations

import logging

import pytest
import torch
from tiny_config import TINY

from flashocc_ros.config import model_config
from flashocc_ros.model.flashocc import FlashOCC, build_model
from flashocc_ros.model.geometry import Calibration, LiftGeometry
from flashocc_ros.runtime.backend import BackendError, TorchBackend
from flashocc_ros.runtime.cuda_fast import CudaFastBackend, DeviceIndices
from flashocc_ros.tools.compare import Frame, compare_backends, random_frames

torch.set_num_threads(1)
CUDA_MISSING = None if torch.cuda.is_available() else "no CUDA device visible to PyTorch"


@pytest.fixture(scope="module")
def model() -> FlashOCC:
    torch.manual_seed(0)
    net = build_model(TINY)
    gen = torch.Generator().manual_seed(1)
    for mod in net.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            assert mod.running_mean is not None and mod.running_var is not None
            mod.running_mean.copy_(0.1 * torch.randn(mod.running_mean.shape, generator=gen))
            mod.running_var.copy_(0.5 + torch.rand(mod.running_var.shape, generator=gen))
    return net.eval()


def moved(calib: Calibration, dx: float) -> Calibration:
    c2e = calib.camera_to_ego.clone()
    c2e[..., 0, 3] += dx
    return Calibration(c2e, calib.intrinsics, calib.post_rot, calib.post_tran, calib.bda)


def frames(count: int = 2) -> list[Frame]:
    out = list(random_frames(TINY, count))
    out.append(Frame(out[0].images, moved(out[0].calib, 0.7)))
    return out


def test_fast_path_matches_plain_torch_on_cpu(model: FlashOCC) -> None:
    fast = CudaFastBackend(model, TINY, "cpu", "fp32", channels_last=True)
    assert fast.name == "torch-fast-cpu-fp32-eager"
    report = compare_backends(TorchBackend(model, TINY), fast, frames())
    assert report.max_abs <= 1e-4, report.table()
    assert report.agreement == 1.0, report.table()
    assert fast.indices.rebuilds == 2  # two calibrations over three frames
    assert set(fast.last_stage_timings_ms()) == {
        "image_graph",
        "pooling",
        "bev_graph",
        "backend_total",
    }


def test_bf16_fast_path_stays_close_on_cpu(model: FlashOCC) -> None:
    report = compare_backends(
        TorchBackend(model, TINY), CudaFastBackend(model, TINY, "cpu", "bf16"), frames(1)
    )
    assert report.agreement >= 0.95, report.table()


def test_device_indices_equal_the_geometry_and_rebuild_only_on_change() -> None:
    calib = next(iter(random_frames(TINY, 1))).calib
    cache = DeviceIndices(TINY, "cpu")
    ref = LiftGeometry(TINY).indices(calib)
    got = cache.get(calib)
    for a, b in zip(got[:-1], ref[:-1], strict=True):
        assert torch.equal(a, b)
    same = Calibration(*(t.clone() for t in calib.tensors()))  # equal values, new tensors
    assert cache.get(same) is got and cache.rebuilds == 1
    calib.camera_to_ego[0, 0, 0, 3] += 0.5  # in place: the cache kept its own copy
    assert cache.get(calib) is not got and cache.rebuilds == 2


def test_refusals(model: FlashOCC) -> None:
    with pytest.raises(BackendError, match="int8 needs the tensorrt backend"):
        CudaFastBackend(model, TINY, "cpu", "int8")
    with pytest.raises(BackendError, match="fp16 needs a CUDA device"):
        CudaFastBackend(model, TINY, "cpu", "fp16")
    stereo = model_config("tiny-stereo").replace(grid=TINY.grid)
    with pytest.raises(BackendError, match="use backend torch"):
        CudaFastBackend(build_model(stereo), stereo, "cpu", "fp32")
    fast = CudaFastBackend(model, TINY, "cpu", "fp32")
    with pytest.raises(ValueError, match="batch B = 1"):
        f = frames(1)[0]
        fast.infer(torch.cat([f.images, f.images]), f.calib)


@pytest.mark.gpu
@pytest.mark.parametrize(
    ("precision", "max_abs", "agreement"), [("fp32", 1e-3, 0.999), ("fp16", None, 0.99)]
)
def test_cuda_graphs_match_plain_torch(
    model: FlashOCC, precision: str, max_abs: float | None, agreement: float
) -> None:
    if CUDA_MISSING:
        pytest.skip(CUDA_MISSING)
    fast = CudaFastBackend(model, TINY, "cuda", precision)  # type: ignore[arg-type]
    ref = TorchBackend(model, TINY, "cuda", "fp32")
    report = compare_backends(ref, fast, frames(3))
    assert fast.name.endswith("cuda-graphs"), fast.name  # captured, not fallen back
    if max_abs is not None:
        assert report.max_abs <= max_abs, report.table()
    assert report.agreement >= agreement, report.table()


@pytest.mark.gpu
def test_capture_failure_falls_back_to_eager(
    model: FlashOCC, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    if CUDA_MISSING:
        pytest.skip(CUDA_MISSING)
    from flashocc_ros.runtime import cuda_fast

    def broken(*args: object) -> None:
        raise RuntimeError("capture not supported (test)")

    monkeypatch.setattr(cuda_fast, "_Captured", broken)
    fast = CudaFastBackend(model, TINY, "cuda", "fp32")
    f = frames(1)[0]
    with caplog.at_level(logging.WARNING):
        out = fast.infer(f.images, f.calib)
    assert "running eagerly" in caplog.text and fast.name.endswith("eager")
    want = TorchBackend(model, TINY, "cuda").infer(f.images, f.calib)
    assert float((out - want).abs().max()) <= 1e-3


@pytest.mark.gpu
def test_pipeline_on_cuda_uses_gpu_preprocessing(model: FlashOCC) -> None:
    if CUDA_MISSING:
        pytest.skip(CUDA_MISSING)
    from flashocc_ros.runtime.cuda_fast import GpuPreprocessor
    from flashocc_ros.runtime.factory import pipeline_preprocessor
    from flashocc_ros.runtime.pipeline import OccupancyPipeline
    from flashocc_ros.tools.gpu_selfcheck import synthetic_bundles

    fast = CudaFastBackend(model, TINY, "cuda", "fp32")
    pre = pipeline_preprocessor(fast, "cuda")
    assert isinstance(pre, GpuPreprocessor)
    cams = synthetic_bundles(TINY, 1)[0]
    gpu = OccupancyPipeline(TINY, fast, preprocess=pre).process(cams)
    cpu = OccupancyPipeline(TINY, TorchBackend(model, TINY)).process(cams)
    assert (gpu.labels == cpu.labels).mean() >= 0.99  # one grey level apart, random weights
