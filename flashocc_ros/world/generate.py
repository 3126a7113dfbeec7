"""Generation driver: scenes -> rendered frames + keyframe labels -> dataset folder and/or bag.
In: `GenerateConfig` and optional `DatasetWriter` / `BagWriter`. Out: files written by those.
`generate_parallel` renders a dataset folder's scenes in worker processes, the same files.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    save_classes: bool = False  # also store per-pixel class maps (the surface each pixel sees)

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
    scenes = _scenes(cfg)
    if bag is not None:
        bag.write_static(cfg.stamp_base_ns)
    for scene, start_ns in zip(scenes, _start_stamps(cfg, scenes), strict=True):
        _log_scene(scene)
        _write_scene(cfg, scene, rig, grid, start_ns, dataset, bag, progress)
    return scenes


def generate_parallel(
    cfg: GenerateConfig,
    dataset: DatasetWriter,
    workers: int,
    rig: CameraRig | None = None,
    grid: GridConfig | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[Scene]:
    """`generate` into a dataset folder (no bag) with the scenes rendered by `workers` processes:
    the same files and index as `generate` (scene layouts and stamps are fixed before any
    rendering). `progress(n)` is called with a scene's frame count as its result comes in (in
    scene order)."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    rig = rig or nuscenes_like_rig(cfg.width, cfg.height)
    grid = grid or GridConfig()
    scenes = _scenes(cfg)
    jobs = list(zip(range(cfg.num_scenes), _start_stamps(cfg, scenes), strict=True))
    spawn = multiprocessing.get_context("spawn")  # no forked copies of OpenCV's thread pools
    with ProcessPoolExecutor(max_workers=workers, mp_context=spawn) as pool:
        futures = [
            pool.submit(_render_scene, cfg, i, start_ns, dataset.root, rig, grid, dataset.ext)
            for i, start_ns in jobs
        ]
        entries = []
        for scene, future in zip(scenes, futures, strict=True):  # in scene order, like `generate`
            entries.append(future.result())
            _log_scene(scene)
            if progress is not None:
                progress(cfg.frames_per_scene())
    dataset.add_scenes(entries)
    return scenes


def _log_scene(scene: Scene) -> None:
    log.info("scene %s: %d primitives, %.1f s", scene.name, len(scene.prims), scene.duration)


def _scenes(cfg: GenerateConfig) -> list[Scene]:
    """Every scene's layout and trajectory (cheap: rendering is the costly part)."""
    return [generate_scene(cfg.scene_seed(i), cfg.num_keyframes) for i in range(cfg.num_scenes)]


def _start_stamps(cfg: GenerateConfig, scenes: list[Scene]) -> list[int]:
    """Absolute start stamp (ns) of each scene: one after the other, `scene_gap_s` apart."""
    stamps, start_ns = [], cfg.stamp_base_ns
    for scene in scenes:
        stamps.append(start_ns)
        start_ns += int((scene.duration + cfg.scene_gap_s) * 1e9)
    return stamps


def _render_scene(
    cfg: GenerateConfig,
    i: int,
    start_ns: int,
    root: Path,
    rig: CameraRig,
    grid: GridConfig,
    image_format: str,
) -> dict[str, Any]:
    """Worker of `generate_parallel`: render scene i into `root`, return its index entry."""
    scene = generate_scene(cfg.scene_seed(i), cfg.num_keyframes)
    writer = DatasetWriter(root, rig, grid, image_format)
    _write_scene(cfg, scene, rig, grid, start_ns, writer, None, None)
    (entry,) = writer.scene_entries()
    return entry


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

    tf_times = tf_sample_times(scene.duration, cfg.tf_hz)
    poses_tf = _PoseStream(bag, [ns(float(t)) for t in tf_times], scene.trajectory.poses(tf_times))
    for frame in range(timing.num_frames(cfg.num_keyframes)):
        key = timing.is_keyframe(frame)
        if cfg.keyframes_only and not key:
            continue
        times = timing.camera_times(frame)
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
                [im.label for im in images] if cfg.save_classes else None,
            )
            if token is not None and labels is not None:
                dataset.add_labels(token, labels)
        if bag is not None:  # each message logged at its header stamp, in stamp order
            for n, im in enumerate(images):
                poses_tf.write_until(stamps[n])
                bag.write_camera(n, stamps[n], im.image)
                if n == 0 and labels is not None:
                    bag.write_ground_truth(stamps[0], labels)
        if progress is not None:
            progress(1)
    poses_tf.write_until(None)


class _PoseStream:
    """One scene's odom -> base_link samples, written to /tf of a bag (if any) up to a stamp at
    a time, so that they interleave with the images in log-time order."""

    def __init__(self, bag: BagWriter | None, stamps_ns: list[int], poses: np.ndarray) -> None:
        self.bag, self.stamps, self.poses = bag, stamps_ns, poses  # poses (T, 4, 4)
        self.next = 0

    def write_until(self, stamp_ns: int | None) -> None:
        """Write the samples stamped at or before `stamp_ns` (None: all that are left)."""
        while self.next < len(self.stamps) and (
            stamp_ns is None or self.stamps[self.next] <= stamp_ns
        ):
            if self.bag is not None:
                self.bag.write_pose(self.stamps[self.next], self.poses[self.next])
            self.next += 1


def tf_sample_times(duration: float, hz: float) -> np.ndarray:
    """(T,) s, odom -> base_link sample times 0, 1/hz, ... up to the first at or after
    `duration` (the last camera stamp), so every image stamp has a sample on each side."""
    count = int(np.ceil(duration * hz - 1e-9)) + 1
    out: np.ndarray = np.arange(count) / hz
    return out
