"""Generation driver: scenes -> rendered frames + keyframe labels -> dataset folder and/or bag.
In: `GenerateConfig` and optional `DatasetWriter` / `BagWriter`. Out: files written by those.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from flashocc_ros.config import GridConfig
from flashocc_ros.rig import CameraRig, nuscenes_like_rig
from flashocc_ros.world.bag import BagWriter
from flashocc_ros.world.dataset import DatasetWriter
from flashocc_ros.world.ground_truth import GroundTruthMaker
from flashocc_ros.world.render import Renderer
from flashocc_ros.world.scene import Scene, generate_scene

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerateConfig:
    """What to generate. Scene i uses seed `seed * 1000 + i`."""

    num_scenes: int = 1
    num_keyframes: int = 20  # keyframes (2 Hz samples) per scene
    seed: int = 0
    width: int = 1600  # px, rendered image width
    height: int = 900  # px
    keyframes_only: bool = False  # render only the 2 Hz keyframes, not all 12 Hz frames
    stamp_base_ns: int = 1_700_000_000 * 10**9  # absolute stamp of the first scene's start
    scene_gap_s: float = 5.0  # s between the end of one scene and the start of the next
    tf_hz: float = 50.0  # Hz, odom -> base_link rate in bags
    mask_width: int = 200  # px, width of the subsampled ray grid for mask_camera
    save_depth: bool = False  # also store per-pixel depth maps in the dataset folder

    def __post_init__(self) -> None:
        for name in ("num_scenes", "num_keyframes", "width", "height", "mask_width"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.tf_hz <= 0:
            raise ValueError("tf_hz must be > 0")

    def scene_seed(self, i: int) -> int:
        return self.seed * 1000 + i

    def frames_per_scene(self) -> int:
        """Camera frames rendered per scene."""
        return self.num_keyframes if self.keyframes_only else (self.num_keyframes - 1) * 6 + 1


def generate(
    cfg: GenerateConfig,
    dataset: DatasetWriter | None = None,
    bag: BagWriter | None = None,
    rig: CameraRig | None = None,
    grid: GridConfig | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[Scene]:
    """Render every scene and write it; `progress(1)` is called after each camera frame."""
    rig = rig or nuscenes_like_rig(cfg.width, cfg.height)
    grid = grid or GridConfig()
    start_ns = cfg.stamp_base_ns
    scenes = []
    if bag is not None:
        bag.write_static(start_ns)
    for i in range(cfg.num_scenes):
        scene = generate_scene(cfg.scene_seed(i), cfg.num_keyframes)
        scenes.append(scene)
        log.info("scene %s: %d primitives, %.1f s", scene.name, len(scene.prims), scene.duration)
        _write_scene(cfg, scene, rig, grid, start_ns, dataset, bag, progress)
        start_ns += int((scene.duration + cfg.scene_gap_s) * 1e9)
    return scenes


def _write_scene(
    cfg: GenerateConfig,
    scene: Scene,
    rig: CameraRig,
    grid: GridConfig,
    start_ns: int,
    dataset: DatasetWriter | None,
    bag: BagWriter | None,
    progress: Callable[[int], None] | None,
) -> None:
    timing = scene.timing
    renderer = Renderer(scene, rig)
    gt = GroundTruthMaker(scene, rig, grid, mask_width=cfg.mask_width)
    if dataset is not None:
        dataset.begin_scene(scene.name, scene.seed)

    def ns(t: float) -> int:
        return start_ns + round(t * 1e9)

    tf_times = np.arange(0.0, scene.duration + 1e-9, 1.0 / cfg.tf_hz)
    tf_poses = scene.trajectory.poses(tf_times)
    tf_next = 0
    for frame in range(timing.num_frames(cfg.num_keyframes)):
        key = timing.is_keyframe(frame)
        if cfg.keyframes_only and not key:
            continue
        times = timing.camera_times(frame)
        if bag is not None:  # /tf up to the end of this frame, in time order
            while tf_next < len(tf_times) and tf_times[tf_next] <= times[-1] + 1e-9:
                bag.write_pose(ns(tf_times[tf_next]), tf_poses[tf_next])
                tf_next += 1
        images = renderer.render_frame(frame)
        stamps = [ns(float(t)) for t in times]
        token = f"{scene.name}_{frame // timing.frames_per_keyframe:04d}" if key else None
        labels = gt.make(float(times[0])) if key else None
        if dataset is not None:
            poses = scene.trajectory.poses(times)
            dataset.add_frame(
                frame,
                token,
                stamps,
                poses,
                [im.image for im in images],
                [im.depth for im in images] if cfg.save_depth else None,
            )
            if token is not None and labels is not None:
                dataset.add_labels(token, labels)
        if bag is not None:
            for n, im in enumerate(images):
                bag.write_camera(n, stamps[n], im.image)
            if labels is not None:
                bag.write_ground_truth(stamps[0], labels)
        if progress is not None:
            progress(1)
    if bag is not None:
        while tf_next < len(tf_times):
            bag.write_pose(ns(tf_times[tf_next]), tf_poses[tf_next])
            tf_next += 1
