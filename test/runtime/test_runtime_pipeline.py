"""The ROS-free pipeline: key-ego folding, labels vs the model, temporal history, factory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_config import TINY as SMALL

from flashocc_ros.config import ConfigError, model_config
from flashocc_ros.model.checkpoint import save_flashocc
from flashocc_ros.model.flashocc import build_model
from flashocc_ros.model.preprocess import preprocess_images
from flashocc_ros.rig import nuscenes_like_rig
from flashocc_ros.runtime.backend import TorchBackend
from flashocc_ros.runtime.factory import load_model
from flashocc_ros.runtime.pipeline import (
    CameraInput,
    OccupancyPipeline,
    PipelineError,
    key_ego_extrinsics,
)


def _pose(x: float, yaw: float = 0.0) -> np.ndarray:
    t = np.eye(4)
    t[:2, :2] = [[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]]
    t[0, 3] = x
    return t


def _cameras(
    seed: int = 0, x0: float = 0.0, speed: float = 0.0, stamp0: int = 0
) -> list[CameraInput]:
    rig = nuscenes_like_rig(176, 99)
    rng = np.random.default_rng(seed)
    out = []
    for n, cam in enumerate(rig.cameras):
        stamp = stamp0 + n * 8_000_000
        image = rng.integers(0, 256, (99, 176, 3), dtype=np.uint8)
        pose = _pose(x0 + speed * n * 0.008)
        out.append(CameraInput(cam.name, image, cam.intrinsics, cam.camera_to_base, pose, stamp))
    return out


def test_key_ego_folding_is_the_static_extrinsic_when_parked() -> None:
    cams = _cameras(speed=0.0, x0=5.0)
    np.testing.assert_allclose(key_ego_extrinsics(cams), [c.camera_to_base for c in cams])


def test_key_ego_folding_moves_later_cameras_forward() -> None:
    cams = _cameras(speed=10.0)
    ext = key_ego_extrinsics(cams)
    for n, cam in enumerate(cams):
        want = np.linalg.inv(cams[0].ego_pose) @ cam.ego_pose @ cam.camera_to_base  # type: ignore[operator]
        np.testing.assert_allclose(ext[n], want)
        assert ext[n, 0, 3] == pytest.approx(cam.camera_to_base[0, 3] + 10.0 * n * 0.008)


def test_pipeline_labels_equal_the_model_prediction() -> None:
    torch.manual_seed(0)
    model = build_model(SMALL)
    pipe = OccupancyPipeline(SMALL, TorchBackend(model, SMALL), confidence=True)
    cams = _cameras(speed=5.0)
    result = pipe.process(cams)
    assert result.labels.shape == (64, 64, 16) and result.labels.dtype == np.uint8
    assert result.stamp_ns == cams[0].stamp_ns
    assert result.confidence is not None and result.confidence.min() >= 255 // 18
    pre = preprocess_images([c.image for c in cams], SMALL.input_size)
    calib = pipe.calibration(cams, (pre.post_rot, pre.post_tran))
    with torch.no_grad():
        want = model.eval().predict(pre.images[None], calib)[0].numpy()
    np.testing.assert_array_equal(result.labels, want)
    assert {"preprocess", "network", "postprocess"} <= set(result.timings_ms)


def test_pipeline_refuses_wrong_cameras_and_bad_intrinsics() -> None:
    pipe = OccupancyPipeline(SMALL, TorchBackend(build_model(SMALL), SMALL))
    cams = _cameras()
    with pytest.raises(PipelineError, match="expected cameras"):
        pipe.process(cams[:5])
    bad = list(cams)
    k = bad[2].intrinsics.copy()
    k[0, 0] = np.nan
    bad[2] = CameraInput(bad[2].name, bad[2].image, k, bad[2].camera_to_base, None, 0)
    with pytest.raises(PipelineError, match="CAM_FRONT_RIGHT: intrinsics"):
        pipe.process(bad)


def test_temporal_pipeline_keeps_history_and_resets_on_gaps() -> None:
    cfg = model_config("tiny-stereo").replace(grid=SMALL.grid)
    torch.manual_seed(0)
    backend = TorchBackend(build_model(cfg), cfg)
    pipe = OccupancyPipeline(cfg, backend, max_gap_ns=1_000_000_000)
    assert backend.history is not None
    pipe.process(_cameras(0, 0.0, 5.0, stamp0=0))
    pipe.process(_cameras(1, 2.5, 5.0, stamp0=500_000_000))
    assert len(backend.history.frames) == 2
    pipe.process(_cameras(2, 20.0, 5.0, stamp0=4_000_000_000))  # 3.5 s gap -> reset first
    assert len(backend.history.frames) == 1
    moved = [
        CameraInput(c.name, c.image, c.intrinsics * 1.01, c.camera_to_base, c.ego_pose, c.stamp_ns)
        for c in _cameras(2, 22.5, 5.0, stamp0=4_500_000_000)
    ]
    pipe.process(moved)  # new intrinsics -> reset first
    assert len(backend.history.frames) == 1
    pipe.process(_cameras(2, 25.0, 5.0, stamp0=4_200_000_000))  # time went backwards
    assert len(backend.history.frames) == 1
    assert set(pipe.history_resets) == {
        "gap longer than 1.0 s",
        "calibration changed",
        "time went backwards",
    }
    no_pose = [
        CameraInput(
            c.name, c.image, c.intrinsics, c.camera_to_base, None, c.stamp_ns + 4_500_000_000
        )
        for c in _cameras(3)
    ]
    with pytest.raises(PipelineError, match="ego pose"):
        pipe.process(no_pose)


def test_factory_loads_our_weights_and_explains_bad_paths(tmp_path: Path) -> None:
    torch.manual_seed(3)
    model = build_model(SMALL)
    path = tmp_path / "w.safetensors"
    save_flashocc(model, SMALL, path)
    cfg, loaded = load_model("tiny", str(path))
    assert cfg == SMALL
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    with pytest.raises(ConfigError, match="weights file not found"):
        load_model("tiny", str(tmp_path / "missing.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="cannot load weights"):
        load_model("tiny", str(tmp_path / "junk.pth"))
