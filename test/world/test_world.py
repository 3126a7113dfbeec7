"""Scenes, trajectory, renderer and ground truth: reproducibility and physical sanity."""

from __future__ import annotations

import numpy as np
import pytest

from flashocc_ros.classes import FREE_LABEL
from flashocc_ros.config import GridConfig
from flashocc_ros.rig import nuscenes_like_rig
from flashocc_ros.world.ground_truth import GroundTruthMaker
from flashocc_ros.world.render import Renderer
from flashocc_ros.world.scene import generate_scene


def test_scene_is_reproducible_and_has_every_class() -> None:
    a, b = generate_scene(7, 10), generate_scene(7, 10)
    assert np.array_equal(a.prims.center, b.prims.center)
    assert not np.array_equal(generate_scene(8, 10).prims.center[:5], a.prims.center[:5])
    labels: set[int] = set()
    for seed in range(6):
        s = generate_scene(seed, 20)
        labels |= set(np.unique(s.prims.label).tolist())
        x, y = np.meshgrid(np.arange(-200, 200, 1.0), np.arange(-200, 200, 1.0))
        labels |= set(np.unique(s.layout.ground_label(x, y)).tolist())
    assert labels == set(range(17))


def test_trajectory_speed_turns_and_stamps() -> None:
    s = generate_scene(2, 40)
    t = np.linspace(0, s.duration, 400)
    v = s.trajectory.speed(t)
    assert v.min() >= 0 and v.max() <= 15.01
    assert s.timing.camera_times(6)[0] == pytest.approx(0.5)
    stagger = np.diff(s.timing.camera_times(0))
    assert (stagger > 0.003).all() and s.timing.camera_times(0)[-1] < 0.06
    pose = s.trajectory.pose(3.0)
    assert np.allclose(pose[:3, :3] @ pose[:3, :3].T, np.eye(3)) and pose[2, 3] == 0


def test_render_depth_is_camera_z_of_the_ground() -> None:
    s = generate_scene(4, 2)
    rig = nuscenes_like_rig(160, 90)
    img = Renderer(s, rig).render(1, 0.0)
    assert img.image.shape == (90, 160, 3) and img.image.dtype == np.uint8
    # Bottom-centre pixel sees road: depth from the pinhole model and a flat ground.
    cam = rig.cameras[1]
    v = 89
    assert img.label[v, 80] == 11
    expected = cam.translation[2] * cam.fy / (v - cam.cy)  # level camera: z = h·fy / (v − cy)
    assert img.depth[v, 80] == pytest.approx(expected, rel=1e-4)
    assert (img.label[0] == FREE_LABEL).any() or img.depth[0].min() > 0


def test_ground_truth_layers_and_masks() -> None:
    s = generate_scene(6, 2)
    lab = GroundTruthMaker(s, nuscenes_like_rig(160, 90), GridConfig(), mask_width=64).make(0.0)
    sem = lab.semantics
    assert sem.shape == (200, 200, 16) and sem.dtype == np.uint8
    assert (sem[:, :, 2] != FREE_LABEL).all()  # the ground layer is full
    assert (sem[:, :, :2] == FREE_LABEL).all()  # nothing below the ground
    assert sem[100, 100, 2] == 11  # the ego stands on road
    for mask in (lab.mask_camera, lab.mask_lidar):
        assert mask.dtype == bool and 0.05 < mask.mean() < 0.9
        assert not mask[:, :, :2].any()  # rays stop at the ground
    assert lab.mask_camera[120, 100, 2] and lab.mask_lidar[120, 100, 2]
