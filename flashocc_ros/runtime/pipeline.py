"""The per-bundle pipeline shared by the node, replay and evaluation tools (ROS-free).
In: one synchronised camera bundle (BGR images, intrinsics, extrinsics, ego poses). Out: labels.

Stages: preprocess (resize/crop/normalise) -> calibration (key-ego folding of each camera's ego
pose, as the official data pipeline) -> network (a Backend) -> arg-max labels (+ confidence).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from flashocc_ros.config import ModelConfig
from flashocc_ros.model.geometry import Calibration
from flashocc_ros.model.preprocess import Preprocessed, preprocess_images
from flashocc_ros.runtime.backend import Backend, FramePoses

LOG = logging.getLogger(__name__)

#: (N BGR uint8 images, network input (H, W)) -> Preprocessed; `preprocess_images` on the CPU
#: or `runtime.cuda_fast.GpuPreprocessor` on a GPU.
Preprocessor = Callable[[Sequence[np.ndarray], tuple[int, int]], Preprocessed]


class PipelineError(ValueError):
    """A bundle cannot be processed (wrong camera set, bad calibration, ...)."""


@dataclass(frozen=True)
class CameraInput:
    """One camera of a bundle. Intrinsics belong to this image's size."""

    name: str
    image: np.ndarray  # (H, W, 3) uint8, BGR
    intrinsics: np.ndarray  # (3, 3) pinhole K in pixels of `image`
    camera_to_base: np.ndarray  # (4, 4) base_link <- camera optical frame
    ego_pose: np.ndarray | None  # (4, 4) odom <- base_link at this camera's stamp, if known
    stamp_ns: int  # capture time of this image


@dataclass(frozen=True)
class OccupancyResult:
    """Occupancy of one bundle in the key-ego frame (the base_link at camera 0's stamp), and
    what it was computed from."""

    stamp_ns: int  # bundle stamp = camera 0 stamp
    labels: np.ndarray  # (X, Y, Z) uint8 class per voxel, Occ3D [x][y][z]
    confidence: np.ndarray | None  # (X, Y, Z) uint8 round(255 · p(label)), or None
    timings_ms: dict[str, float] = field(default_factory=dict)  # stage -> milliseconds
    camera_names: tuple[str, ...] = ()  # (N,) model order, key camera first
    camera_stamps_ns: tuple[int, ...] = ()  # (N,) stamp of the image used per camera
    ego_pose: np.ndarray | None = None  # (4, 4) float64 odom <- ego at stamp_ns; None: no odom
    camera_poses: np.ndarray | None = None  # (N, 4, 4) float64 key ego <- camera optical frame


def key_ego_extrinsics(cameras: Sequence[CameraInput]) -> np.ndarray:
    """(N, 4, 4) camera -> key-ego: inv(E_0)·E_n·S_n in float64 (official `prepare_inputs`).

    Without ego poses (or with equal poses) this is the static extrinsic S_n.
    """
    poses = [c.ego_pose for c in cameras]
    out = np.stack([np.asarray(c.camera_to_base, dtype=np.float64) for c in cameras])
    if any(p is None for p in poses):
        return out
    key_inv = np.linalg.inv(np.asarray(poses[0], dtype=np.float64))
    for i, pose in enumerate(poses):
        out[i] = key_inv @ np.asarray(pose, dtype=np.float64) @ out[i]
    return out


class OccupancyPipeline:
    """Preprocess -> calibrate -> infer -> labels, with per-stage timings in milliseconds.

    The lift geometry (pooling indices) lives in the backend and is rebuilt only when the
    calibration changes. With ego-motion folding (inv(E_0)·E_n·S_n) it changes whenever the car
    moves between the camera stamps; a parked car or a rig without per-camera poses reuses it.
    The result depends only on the bundle itself, never on which bundles came before.
    """

    def __init__(
        self,
        cfg: ModelConfig,
        backend: Backend,
        *,
        confidence: bool = False,
        max_gap_ns: int = 1_500_000_000,
        preprocess: Preprocessor = preprocess_images,
    ) -> None:
        self.cfg = cfg
        self.backend = backend
        self.preprocess = preprocess
        self.confidence = confidence
        self.max_gap_ns = max_gap_ns
        self._last_stamp_ns: int | None = None
        self._last_rig: np.ndarray | None = None  # (N, 3, 4) extrinsics + (N, 3, 3) K, flat
        self.history_resets: dict[str, int] = {}  # reason -> count (temporal models)

    def calibration(
        self,
        cameras: Sequence[CameraInput],
        post: tuple[torch.Tensor, ...],
        key_ego: np.ndarray | None = None,
    ) -> Calibration:
        """Calibration (B = 1) of a bundle from its cameras and their augmentation matrices.

        Single-frame models get key-ego folded extrinsics (`key_ego`, computed here when not
        given); temporal models get the static ones (their history folds the poses itself).
        """
        if self.cfg.temporal:
            ext = np.stack([np.asarray(c.camera_to_base, dtype=np.float64) for c in cameras])
        else:
            ext = key_ego_extrinsics(cameras) if key_ego is None else key_ego
        intr = np.stack([np.asarray(c.intrinsics, dtype=np.float64) for c in cameras])
        return Calibration.from_numpy_like(
            torch.as_tensor(ext.astype(np.float32)),
            torch.as_tensor(intr.astype(np.float32)),
            post[0],
            post[1],
        )

    def reset(self) -> None:
        """Forget state carried between bundles (temporal history)."""
        self.backend.reset()
        self._last_stamp_ns = None
        self._last_rig = None

    def _poses(self, cameras: Sequence[CameraInput]) -> FramePoses | None:
        """Ego poses for temporal models; resets the history on a gap or time going back."""
        if not self.cfg.temporal:
            return None
        stamp = cameras[0].stamp_ns
        last = self._last_stamp_ns
        rig = np.concatenate(
            [np.ravel(c.camera_to_base) for c in cameras]
            + [np.ravel(c.intrinsics) for c in cameras]
        )
        if last is not None and stamp <= last:
            self._reset_history("time went backwards")
        elif last is not None and stamp - last > self.max_gap_ns:
            self._reset_history(f"gap longer than {self.max_gap_ns / 1e9:.1f} s")
        elif self._last_rig is not None and not np.array_equal(rig, self._last_rig):
            self._reset_history("calibration changed")
        self._last_stamp_ns = stamp
        self._last_rig = rig
        if any(c.ego_pose is None for c in cameras):
            self._reset_history("missing ego pose")
            raise PipelineError("temporal model needs the ego pose (odom <- base) of every camera")
        poses = np.stack([np.asarray(c.ego_pose, dtype=np.float64) for c in cameras])
        return FramePoses(torch.as_tensor(poses, dtype=torch.float32)[None], stamp)

    def _reset_history(self, reason: str) -> None:
        """Drop the temporal history; each reason is logged once, then only counted."""
        if reason not in self.history_resets:
            LOG.warning("temporal history reset: %s (logged once; counted in diagnostics)", reason)
        self.history_resets[reason] = self.history_resets.get(reason, 0) + 1
        self.backend.reset()

    def check(self, cameras: Sequence[CameraInput]) -> None:
        names = tuple(c.name for c in cameras)
        if names != self.cfg.camera_names:
            raise PipelineError(f"N: expected cameras {self.cfg.camera_names}, got {names}")
        for c in cameras:
            k = np.asarray(c.intrinsics, dtype=np.float64)
            if k.shape != (3, 3) or not np.all(np.isfinite(k)) or k[0, 0] <= 0 or k[1, 1] <= 0:
                raise PipelineError(f"camera {c.name}: intrinsics must be finite with fx, fy > 0")
            if not np.all(np.isfinite(np.asarray(c.camera_to_base))):
                raise PipelineError(f"camera {c.name}: extrinsic is not finite")

    def process(self, cameras: Sequence[CameraInput]) -> OccupancyResult:
        """One bundle (cameras in the model's order) -> OccupancyResult."""
        self.check(cameras)
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        pre = self.preprocess([c.image for c in cameras], self.cfg.input_size)
        key_ego = key_ego_extrinsics(cameras)
        calib = self.calibration(cameras, (pre.post_rot, pre.post_tran), key_ego)
        t1 = time.perf_counter()
        timings["preprocess"] = (t1 - t0) * 1e3
        logits = self.backend.infer(pre.images[None], calib, self._poses(cameras))
        t2 = time.perf_counter()
        timings["network"] = (t2 - t1) * 1e3
        timings.update(self.backend.last_stage_timings_ms())
        labels, conf = labels_from_logits(logits[0], self.confidence)
        timings["postprocess"] = (time.perf_counter() - t2) * 1e3
        key_pose = cameras[0].ego_pose
        return OccupancyResult(
            cameras[0].stamp_ns,
            labels,
            conf,
            timings,
            camera_names=tuple(c.name for c in cameras),
            camera_stamps_ns=tuple(c.stamp_ns for c in cameras),
            ego_pose=None if key_pose is None else np.asarray(key_pose, dtype=np.float64),
            camera_poses=key_ego,
        )


def labels_from_logits(
    logits: torch.Tensor, with_confidence: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """(X, Y, Z, cls) logits -> uint8 labels (X, Y, Z) and optional uint8 confidence."""
    if logits.dim() != 4:
        raise ValueError(f"logits must be (X, Y, Z, cls), got {tuple(logits.shape)}")
    # max().indices: the first maximum like argmax, ~1.5x faster for a last dim of 18 on CPU;
    # on bf16/fp16 logits directly (widening to float32 is exact, so the order is the same)
    labels = logits.max(dim=-1).indices.to(torch.uint8).cpu().numpy()
    if not with_confidence:
        return labels, None
    prob = torch.softmax(logits.float(), dim=-1).amax(dim=-1)
    conf = torch.round(prob * 255).to(torch.uint8).cpu().numpy()
    return labels, conf
