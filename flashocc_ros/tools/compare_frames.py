"""Frames for the backend compare tool: random images on the default rig or dataset keyframes.
In: a ModelConfig (+ a world dataset folder). Out: `Frame`s (images, calibration, optional
ground truth, and for temporal models the per-camera ego poses of a moving sequence).

Random frames of a temporal config are a drive (0.5 s apart, forward motion and a slow turn,
each camera's ego pose at its own capture time); dataset keyframes go through the node's own
`OccupancyPipeline`, so a frame is exactly what the node would feed the network.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from flashocc_ros.config import ModelConfig
from flashocc_ros.model.geometry import Calibration
from flashocc_ros.runtime.backend import FramePoses


class Frame(NamedTuple):
    """One input frame, optionally with ground truth (X, Y, Z) labels and camera mask.

    Temporal models need `poses` and `calib` with the static extrinsics; single-frame models take
    key-ego folded extrinsics and no poses (the pipeline's `calibration` gives either).
    """

    images: Tensor  # (1, N, 3, H, W) normalised
    calib: Calibration  # B = 1
    semantics: np.ndarray | None = None  # (X, Y, Z) integer labels
    mask_camera: np.ndarray | None = None  # (X, Y, Z) bool
    poses: FramePoses | None = None  # per-camera ego poses (B = 1) and the bundle stamp
    stamp_ns: int | None = None  # bundle stamp (camera 0); None: that of `poses`, if any
    sequence: str = ""  # scene / drive; frames of a sequence come in time order

    @property
    def stamp(self) -> int | None:
        """Bundle stamp in ns: `stamp_ns`, else that of `poses`, else None."""
        if self.stamp_ns is not None:
            return self.stamp_ns
        return None if self.poses is None else self.poses.stamp_ns


def drive_pose(t_s: float, speed_mps: float, yaw_rate: float) -> np.ndarray:
    """(4, 4) odom <- base_link after `t_s` s of driving forward (+x) from the origin at
    `speed_mps` m/s while turning at `yaw_rate` rad/s (left for > 0), float64."""
    yaw = yaw_rate * t_s
    c, s = math.cos(yaw), math.sin(yaw)
    pose = np.eye(4)
    pose[:2, :2] = [[c, -s], [s, c]]
    if yaw_rate == 0.0:
        pose[0, 3] = speed_mps * t_s
    else:  # on a circle of radius v / w
        pose[0, 3] = speed_mps / yaw_rate * s
        pose[1, 3] = speed_mps / yaw_rate * (1.0 - c)
    return pose


def random_frames(
    cfg: ModelConfig,
    count: int,
    seed: int = 0,
    *,
    speed_mps: float = 5.0,
    yaw_rate: float = 0.1,
) -> Iterator[Frame]:
    """`count` frames of random normalised images on the nuScenes-like rig's calibration.

    Temporal configs get a drive: frames one keyframe period (0.5 s) apart, moving forward at
    `speed_mps` m/s and turning at `yaw_rate` rad/s, each camera's ego pose at its own
    (staggered) capture time, static extrinsics in `calib` (as the pipeline gives them).
    """
    from flashocc_ros.model.preprocess import rig_calibration
    from flashocc_ros.rig import nuscenes_like_rig
    from flashocc_ros.world.trajectory import Timing

    calib = rig_calibration(nuscenes_like_rig(), cfg.input_size)
    gen = torch.Generator().manual_seed(seed)
    timing = Timing(num_cameras=cfg.num_cameras)
    period_s = timing.frames_per_keyframe / timing.camera_hz  # s between keyframes (0.5)
    for i in range(count):
        images = torch.randn(1, cfg.num_cameras, 3, *cfg.input_size, generator=gen)
        if not cfg.temporal:
            yield Frame(images, calib)
            continue
        times = i * period_s + timing.camera_times(0)  # (N,) s, camera 0 first
        poses = np.stack([drive_pose(float(t), speed_mps, yaw_rate) for t in times])
        stamp = round(times[0] * 1e9)
        ego = torch.as_tensor(poses, dtype=torch.float32)[None]  # (1, N, 4, 4)
        yield Frame(images, calib, poses=FramePoses(ego, stamp), stamp_ns=stamp, sequence="drive")


def dataset_frames(
    root: str | Path, cfg: ModelConfig, count: int, start: int = 0
) -> Iterator[Frame]:
    """`count` consecutive keyframes of a world dataset folder from keyframe `start`, with GT.

    Each keyframe goes through the node's `OccupancyPipeline` (preprocessing without
    augmentation, calibration, poses) with a recording backend, so a frame is exactly what the
    node would feed the network: temporal configs get static extrinsics and the per-camera ego
    poses, single-frame ones key-ego folded extrinsics. `sequence` is the scene name.
    """
    from flashocc_ros.runtime.pipeline import CameraInput, OccupancyPipeline
    from flashocc_ros.world.dataset import DatasetError, WorldDataset

    data = WorldDataset(root)
    if data.grid.shape != cfg.grid.shape:
        raise DatasetError(
            f"X, Y, Z: dataset grid {data.grid.shape} != model grid {cfg.grid.shape}"
        )
    if not 0 <= start < len(data):
        raise DatasetError(f"{root}: keyframe {start} asked for, it holds {len(data)}")
    from flashocc_ros.deploy.calibration import RecordingBackend

    recorder = RecordingBackend(cfg)
    # no gap limit: compare_backends decides where histories start (and the recorder has none)
    pipeline = OccupancyPipeline(cfg, recorder, max_gap_ns=sys.maxsize)
    k, ext = data.rig.intrinsics(), data.rig.camera_to_base()  # (N, 3, 3), (N, 4, 4)
    for rec in data.keyframes[start : start + count]:
        cams = [
            CameraInput(c.camera, img, k[n], ext[n], c.ego_pose, c.stamp_ns)
            for n, (c, img) in enumerate(zip(rec.cams, data.images(rec), strict=True))
        ]
        pipeline.process(cams)
        fed = recorder.frames.pop()  # what the pipeline handed the network (none kept)
        labels = data.labels(rec)
        yield Frame(
            fed.images,
            fed.calib,
            labels.semantics,
            labels.mask_camera.astype(bool),
            fed.poses,
            rec.stamp_ns,
            rec.scene,
        )
