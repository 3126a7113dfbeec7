"""Rendered depth lifted by the model's `lift_to_ego` lands in ground-truth voxels of its class."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
geometry = pytest.importorskip("flashocc_ros.model.geometry")

from flashocc_ros.config import GridConfig  # noqa: E402
from flashocc_ros.rig import nuscenes_like_rig  # noqa: E402
from flashocc_ros.world.render import Renderer  # noqa: E402
from flashocc_ros.world.scene import generate_scene  # noqa: E402
from flashocc_ros.world.voxelize import voxelize  # noqa: E402

W, H = 400, 225  # render size; intrinsics passed at the 1600x900 source size


def test_rendered_depth_lifts_into_matching_voxels() -> None:
    scene = generate_scene(seed=11, num_keyframes=3)
    rig = nuscenes_like_rig(W, H)
    renderer = Renderer(scene, rig)
    grid = GridConfig()
    frame = 6  # second keyframe
    images = renderer.render_frame(frame)
    t_key = scene.timing.frame_time(frame)
    key_ego = scene.trajectory.pose(t_key)
    sem = voxelize(scene, t_key, key_ego, grid)

    rng = np.random.default_rng(0)
    source = nuscenes_like_rig()
    n = len(rig)
    # sensor2keyego_n = inv(E_0) · E_n · S_n with E_n the ego pose at camera n's own stamp.
    cam_to_key = np.stack(
        [np.linalg.inv(key_ego) @ img.camera_to_world for img in images]
    )  # (N, 4, 4)
    samples, expected = [], []
    for img in images:
        ok = np.isfinite(img.depth) & (img.depth < 40.0) & (img.label != 17)
        rows, cols = np.nonzero(ok)
        pick = rng.choice(len(rows), size=300, replace=False)
        r, c = rows[pick], cols[pick]
        samples.append(np.stack([c, r, img.depth[r, c]], axis=1))
        expected.append(img.label[r, c])
    points = torch.tensor(np.concatenate(samples), dtype=torch.float64)  # (N*P, 3)
    s = W / 1600.0
    ego = geometry.lift_to_ego(
        points,
        torch.tensor(cam_to_key[None]),
        torch.tensor(source.intrinsics()[None]),
        torch.tensor(np.diag([s, s, 1.0]))[None, None].repeat(1, n, 1, 1),
        torch.zeros(1, n, 3, dtype=torch.float64),
        torch.eye(3, dtype=torch.float64)[None],
    )  # (1, N, N*P, 3)
    per = 300
    own = torch.cat([ego[0, k, k * per : (k + 1) * per] for k in range(n)]).numpy()
    idx = np.floor((own - [grid.x_min, grid.y_min, grid.z_min]) / grid.voxel_size).astype(int)
    inside = ((idx >= 0) & (idx < grid.shape)).all(1)
    want = np.concatenate(expected)
    got = sem[idx[inside, 0], idx[inside, 1], idx[inside, 2]]
    agreement = (got == want[inside]).mean()
    assert inside.mean() > 0.6  # the rest are surfaces above 5.4 m (building tops)
    print(f"lift agreement {agreement:.4f} inside {inside.mean():.3f}")
    assert agreement >= 0.95, f"only {agreement:.3f} of lifted pixels hit a voxel of their class"
