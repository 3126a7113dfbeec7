"""M2 (4D-stereo) on TensorRT end to end: build the three engines per precision (int8
calibrated on the recorded inputs of another moving sequence), run a moving tiny-stereo
sequence (with a reset) and compare with PyTorch fp32 on CUDA frame by frame; a folder missing
graph S is refused, then rebuilt. Needs CUDA and TensorRT 10.x: marked `gpu` and
`tensorrt`, skipped with the reason where either is missing (every machine of this project so
far: none of this has run yet). In: tiny-stereo on the small grid, seeded weights.
Out: pass/fail.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from stereo_sequence import CFG, rig_calib, seeded_model, sequence
from trt_marks import TRT_MARKS

from flashocc_ros.deploy.calibration import RecordingTemporalNet
from flashocc_ros.deploy.engine_meta import STEREO_GRAPH, EngineLayout
from flashocc_ros.deploy.trt_build import build_engines
from flashocc_ros.model.flashocc import FlashOCC
from flashocc_ros.model.temporal import TemporalFrame, TemporalHistory
from flashocc_ros.runtime.backend import BackendError, TorchBackend

pytestmark = TRT_MARKS
#: (max abs logit difference or None, minimum arg-max agreement) vs PyTorch fp32 on CUDA, per
#: frame. fp16/int8 keep the cost volume and softmaxes in fp32 (trt_build.constrain_fp32).
TOLERANCE = {"fp32": (1e-2, 0.999), "fp16": (None, 0.98), "int8": (None, 0.9)}


@pytest.fixture(scope="module")
def model() -> FlashOCC:
    return seeded_model()


@pytest.fixture(scope="module")
def engines(model: FlashOCC, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("m2_engines")
    recorder = RecordingTemporalNet(model.cuda())
    history = TemporalHistory(recorder)
    calib = rig_calib(CFG).to("cuda")
    for images, poses in sequence(4, seed=7):  # not the compared sequence
        frame = TemporalFrame(images.cuda(), calib, poses.ego_to_global.cuda(), poses.stamp_ns)
        history.step(frame)
    for precision in TOLERANCE:
        batches = recorder.batches if precision == "int8" else None
        build_engines(model, CFG, EngineLayout(root, precision), calib_batches=batches)
    return root


@pytest.mark.parametrize("precision", list(TOLERANCE))
def test_engines_match_pytorch_over_a_moving_sequence(
    model: FlashOCC, engines: Path, precision: str
) -> None:
    from flashocc_ros.runtime.trt_backend import TensorRTBackend

    ours = TensorRTBackend(model, CFG, engines, precision)
    ref = TorchBackend(model, CFG, "cuda", "fp32")
    calib = rig_calib(CFG)
    max_abs, min_agree = TOLERANCE[precision]
    for i, (images, poses) in enumerate(sequence(6, seed=11)):
        if i == 4:  # a reset: the next frame is a scene start again
            ours.reset()
            ref.reset()
        a = ref.infer(images, calib, poses).cpu()
        b = ours.infer(images, calib, poses).cpu()
        agree = float((a.argmax(-1) == b.argmax(-1)).float().mean())
        diff = float((a - b).abs().max())
        assert agree >= min_agree, (precision, i, agree, diff)
        if max_abs is not None:
            assert diff <= max_abs, (precision, i, diff)
        timings = ours.last_stage_timings_ms()
        assert ("stereo_graph" in timings) == (i in (0, 4)), (i, timings)
        assert {"image_graph", "bev_graph", "pooling", "backend_total"} <= set(timings)
    with pytest.raises(BackendError, match="needs ego poses"):
        ours.infer(images, calib)


def test_missing_graph_s_is_refused_then_rebuilt(
    model: FlashOCC, engines: Path, tmp_path: Path
) -> None:
    import shutil

    from flashocc_ros.runtime.trt_backend import TensorRTBackend

    copy = tmp_path / "copy"
    shutil.copytree(engines, copy)
    EngineLayout(copy, "fp16").engine(STEREO_GRAPH).unlink()
    with pytest.raises(BackendError, match=r"stereo_feature\.fp16\.engine missing"):
        TensorRTBackend(model, CFG, copy, "fp16")
    rebuilt = TensorRTBackend(model, CFG, copy, "fp16", mismatch="rebuild")
    assert rebuilt.rebuilt
    images, poses = next(iter(sequence(1, seed=1)))
    logits = rebuilt.infer(images, rig_calib(CFG), poses)
    assert logits.shape == (1, *CFG.grid.shape, CFG.num_classes)
