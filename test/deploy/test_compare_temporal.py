"""The compare tool on a temporal (4D-stereo) model: onnxruntime vs PyTorch over moving sequences.
In: tiny-stereo on the small grid (seeded weights), a generated dataset folder, the CLI on the
full tiny-stereo grid. Out: pass/fail in a few seconds (CPU, one thread).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from stereo_sequence import AGREEMENT, CFG, MAX_ABS, seeded_model
from tiny_config import SMALL_GRID, TINY
from torch import Tensor

from flashocc_ros.config import model_config
from flashocc_ros.deploy.onnx_export import export_onnx, weights_sha256
from flashocc_ros.model.flashocc import FlashOCC
from flashocc_ros.model.geometry import Calibration
from flashocc_ros.model.preprocess import rig_calibration
from flashocc_ros.rig import nuscenes_like_rig
from flashocc_ros.runtime.backend import Backend, BackendError, FramePoses, TorchBackend
from flashocc_ros.runtime.onnx_backend import OnnxRuntimeBackend
from flashocc_ros.tools import compare, export
from flashocc_ros.tools.compare import Frame, compare_backends, dataset_frames, random_frames
from flashocc_ros.train.data import OccupancyDataset
from flashocc_ros.world.dataset import DatasetError, DatasetWriter, WorldDataset
from flashocc_ros.world.generate import GenerateConfig, generate

torch.set_num_threads(1)

WIDTH, HEIGHT = 176, 99  # dataset images


@pytest.fixture(scope="module")
def model() -> FlashOCC:
    return seeded_model()  # logits that depend on the history (see the stereo export test)


@pytest.fixture(scope="module")
def export_dir(model: FlashOCC, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("stereo_export")
    export_onnx(model, CFG, out)
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Dataset folder on the small grid: 2 scenes × 2 keyframes, keyframes only, coarse masks."""
    root = tmp_path_factory.mktemp("compare_world") / "world"
    cfg = GenerateConfig(
        num_scenes=2,
        num_keyframes=2,
        width=WIDTH,
        height=HEIGHT,
        keyframes_only=True,
        mask_width=50,
    )
    rig = nuscenes_like_rig(WIDTH, HEIGHT)
    writer = DatasetWriter(root, rig, SMALL_GRID)
    generate(cfg, writer, None, rig=rig, grid=SMALL_GRID)
    writer.close()
    return root


def _ort(export_dir: Path, model: FlashOCC) -> OnnxRuntimeBackend:
    return OnnxRuntimeBackend(export_dir, CFG, weights_sha256(model), intra_op_threads=1)


class _Mistaken:
    """A backend with one deliberate mistake, to prove the compare report would show it:
    "forget" resets the history before every frame, "parked" feeds the first frame's poses
    again and again (the car never moves)."""

    def __init__(self, inner: Backend, mistake: str) -> None:
        self.inner, self.mistake = inner, mistake
        self.name = f"{inner.name}-{mistake}"
        self.first: Tensor | None = None

    def reset(self) -> None:
        self.inner.reset()

    def infer(self, images: Tensor, calib: Calibration, poses: FramePoses | None = None) -> Tensor:
        assert poses is not None
        if self.mistake == "forget":
            self.inner.reset()
        if self.mistake == "parked":
            self.first = poses.ego_to_global if self.first is None else self.first
            poses = FramePoses(self.first, poses.stamp_ns)
        return self.inner.infer(images, calib, poses)

    def last_stage_timings_ms(self) -> dict[str, float]:
        return {}


def test_onnxruntime_matches_torch_over_a_drive_with_a_new_sequence(
    export_dir: Path, model: FlashOCC
) -> None:
    ours, ref = _ort(export_dir, model), TorchBackend(model, CFG)
    frames = list(random_frames(CFG, 5, seed=3))
    frames[3:] = [f._replace(sequence="second drive") for f in frames[3:]]
    report = compare_backends(ref, ours, frames, temporal=True)
    assert report.max_abs <= MAX_ABS, report.table()
    assert report.agreement >= AGREEMENT, report.table()
    starts = [f.history_start for f in report.per_frame]
    assert starts == [True, False, False, True, False]
    assert [f.time_s for f in report.per_frame] == [0.0, 0.5, 1.0, 0.0, 0.5]
    assert ours.history is not None and ref.history is not None
    assert len(ours.history.frames) == len(ref.history.frames) == 2  # both reset at frame 3
    table = report.table()
    assert "history starts      2" in table and "worst frame" in table, table
    assert table.count("second drive") == 2, table


@pytest.mark.parametrize("mistake", ["forget", "parked"])
def test_lost_history_or_wrong_poses_show_in_the_report(
    export_dir: Path, model: FlashOCC, mistake: str
) -> None:
    ref, wrong = TorchBackend(model, CFG), _Mistaken(_ort(export_dir, model), mistake)
    report = compare_backends(ref, wrong, random_frames(CFG, 3, seed=3), temporal=True)
    first, *later = report.per_frame
    assert first.max_abs <= MAX_ABS  # the scene start is the same for both
    assert min(f.max_abs for f in later) > 5 * MAX_ABS, report.table()  # every later frame
    assert report.worst_frame > 0


def test_frames_without_poses_or_out_of_time_order_are_refused(model: FlashOCC) -> None:
    a, b = TorchBackend(model, CFG), TorchBackend(model, CFG)
    frames = list(random_frames(CFG, 2))
    bare = Frame(frames[0].images, frames[0].calib)
    with pytest.raises(ValueError, match="frame 0 has no ego poses") as err:
        compare_backends(a, b, [bare], temporal=True)
    assert "\n" not in str(err.value)
    with pytest.raises(BackendError, match="needs ego poses"):  # the backend's own refusal
        compare_backends(a, b, [bare])
    with pytest.raises(ValueError, match="frame 1: stamp 0 ns is not after") as err:
        compare_backends(a, b, frames[::-1], temporal=True)
    assert "\n" not in str(err.value)


def test_a_gap_starts_a_new_history(model: FlashOCC) -> None:
    a, b = TorchBackend(model, CFG), TorchBackend(model, CFG)
    frames = list(random_frames(CFG, 2))
    report = compare_backends(a, b, frames, temporal=True, max_gap_ns=400_000_000)
    assert [f.history_start for f in report.per_frame] == [True, True]
    assert a.history is not None and len(a.history.frames) == 1
    report = compare_backends(a, b, frames, temporal=True)
    assert [f.history_start for f in report.per_frame] == [True, False]


def test_random_frames_drive_forward_and_turn() -> None:
    frames = list(random_frames(CFG, 3))
    static = rig_calibration(nuscenes_like_rig(), CFG.input_size).camera_to_ego
    assert [f.stamp for f in frames] == [0, 500_000_000, 1_000_000_000]
    for f in frames:
        assert f.poses is not None and f.poses.stamp_ns == f.stamp_ns
        assert f.poses.ego_to_global.shape == (1, CFG.num_cameras, 4, 4)
        assert torch.equal(f.calib.camera_to_ego, static)  # temporal: static extrinsics
        cams = f.poses.ego_to_global[0]  # (N, 4, 4)
        assert float(cams[-1, 0, 3] - cams[0, 0, 3]) > 0.1  # cameras fire one after another
    e0, e1 = (f.poses.ego_to_global[0, 0].double() for f in frames[:2] if f.poses is not None)
    step = torch.linalg.inv(e0) @ e1  # motion over 0.5 s in the earlier ego frame
    assert 2.0 < float(step[0, 3]) < 3.0 and abs(float(step[1, 3])) < 0.2  # ~2.5 m forward
    assert math.atan2(float(step[1, 0]), float(step[0, 0])) == pytest.approx(0.05, abs=1e-6)
    single = next(random_frames(TINY, 1))  # single-frame configs: unchanged, no poses
    assert single.poses is None and single.stamp is None and single.sequence == ""


def test_dataset_frames_are_what_the_pipeline_feeds(world: Path) -> None:
    data = WorldDataset(world)
    frames = list(dataset_frames(world, CFG, 10))
    assert len(frames) == len(data) == 4
    assert [f.sequence for f in frames] == [r.scene for r in data.keyframes]
    assert len({f.sequence for f in frames}) == 2
    static = torch.as_tensor(data.rig.camera_to_base(), dtype=torch.float32)
    for f, rec in zip(frames, data.keyframes, strict=True):
        assert f.poses is not None and f.stamp == rec.stamp_ns == f.poses.stamp_ns
        ego = np.stack([c.ego_pose for c in rec.cams])  # (N, 4, 4)
        assert np.allclose(f.poses.ego_to_global[0].numpy(), ego, atol=1e-5)
        assert torch.equal(f.calib.camera_to_ego[0], static)  # temporal: static extrinsics
        assert f.semantics is not None and f.mask_camera is not None
        assert f.semantics.shape == SMALL_GRID.shape and f.mask_camera.dtype == bool
    # single-frame configs: key-ego folded extrinsics, the images of the evaluation dataset
    item, single = (
        OccupancyDataset(world, TINY, train=False)[1],
        next(dataset_frames(world, TINY, 1, 1)),
    )
    assert single.poses is None and single.stamp == data.keyframes[1].stamp_ns
    assert torch.allclose(single.calib.camera_to_ego[0], item["camera_to_ego"], atol=1e-5)
    assert torch.equal(single.images[0], item["images"])
    last = list(dataset_frames(world, CFG, 5, start=3))
    assert len(last) == 1 and last[0].stamp == data.keyframes[3].stamp_ns
    with pytest.raises(DatasetError, match="keyframe 4 asked for"):
        next(dataset_frames(world, CFG, 1, start=4))
    with pytest.raises(DatasetError, match="model grid"):
        next(dataset_frames(world, model_config("tiny-stereo"), 1))


def test_onnxruntime_matches_torch_over_dataset_scenes(
    export_dir: Path, model: FlashOCC, world: Path
) -> None:
    ours, ref = _ort(export_dir, model), TorchBackend(model, CFG)
    report = compare_backends(ref, ours, dataset_frames(world, CFG, 4), temporal=True)
    assert report.max_abs <= MAX_ABS, report.table()
    assert report.agreement >= AGREEMENT, report.table()
    assert [f.history_start for f in report.per_frame] == [True, False, True, False]
    assert report.iou_a is not None and report.iou_diff is not None  # ground truth used
    assert "IoU diff %" in report.table()


def test_compare_cli_on_tiny_stereo(
    tmp_path: Path,
    world: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.INFO)
    out = tmp_path / "tiny-stereo"
    base = ["--model-config", "tiny-stereo", "--weights", "random"]
    assert export.main([*base, "--out", str(out)]) == 0
    args = [*base, "--b", "onnxruntime", "--engine-path", str(out)]
    caplog.clear()
    assert compare.main([*args, "--frames", "2", "--max-abs", "1e-3"]) == 0
    assert "over 2 frame(s)" in caplog.text and "worst frame" in caplog.text, caplog.text
    assert "history starts      1" in caplog.text
    assert _error_lines(caplog) == []

    def bare(cfg: object, count: int) -> list[Frame]:
        return [Frame(f.images, f.calib) for f in random_frames(CFG, count)]

    mistakes = {
        "--frames": [*args, "--frames", "0"],
        "not a world dataset": [*args, "--dataset", str(tmp_path)],
        "model grid": [*args, "--dataset", str(world)],  # the small grid, the CLI runs 200²
        "no ego poses": [*args, "--frames", "1"],
    }
    for expected, argv in mistakes.items():
        if expected == "no ego poses":
            monkeypatch.setattr(compare, "random_frames", bare)
        caplog.clear()
        assert compare.main(argv) == 2, expected
        (line,) = _error_lines(caplog)
        assert line.startswith("flashocc-compare: ") and "\n" not in line, line
        assert expected in line, line


def _error_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
