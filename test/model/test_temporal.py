"""M2 temporal fusion: history cache vs the exact official 3-frame path, ego-motion geometry."""

from __future__ import annotations

import torch
from tiny_flashocc import TINY_STEREO, images, randomize_bn, rig_calib

from flashocc_ros.model.flashocc import FlashOCC, build_model
from flashocc_ros.model.temporal import (
    TemporalFrame,
    TemporalHistory,
    camera_to_keyego,
    forward_stereo4d,
)

torch.set_num_threads(2)
SECOND = 1_000_000_000


def model() -> FlashOCC:
    torch.manual_seed(0)
    m = build_model(TINY_STEREO).eval()
    randomize_bn(m)
    return m


def pose(x: float = 0.0, yaw: float = 0.0) -> torch.Tensor:
    """(1, 6, 4, 4) ego -> global, the same for all cameras of a bundle."""
    c, s = torch.cos(torch.tensor(yaw)), torch.sin(torch.tensor(yaw))
    e = torch.eye(4)
    e[0, 0], e[0, 1], e[1, 0], e[1, 1] = c, -s, s, c
    e[0, 3] = x
    return e.expand(1, 6, 4, 4).clone()


def frame(seed: int, ego: torch.Tensor, t: int) -> TemporalFrame:
    return TemporalFrame(images(TINY_STEREO, seed), rig_calib(TINY_STEREO), ego, t)


def test_first_frame_equals_forward_and_official_scene_start() -> None:
    m = model()
    f = frame(0, pose(3.0, 0.2), 0)
    out = TemporalHistory(m).step(f)
    torch.testing.assert_close(out.bev_prev, out.bev_curr, rtol=0, atol=0)
    with torch.no_grad():
        scene_start = forward_stereo4d(m, [f, f, f])
        plain = m(f.images, f.calib)  # static extrinsics = key-ego extrinsics here
    torch.testing.assert_close(out.logits, scene_start, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.logits, plain, rtol=1e-4, atol=1e-4)


def test_history_equals_the_exact_three_frame_path_while_moving() -> None:
    m = model()
    frames = [
        frame(0, pose(0.0, 0.0), 0),
        frame(1, pose(1.3, 0.05), SECOND // 2),
        frame(2, pose(2.7, 0.12), SECOND),
    ]
    hist = TemporalHistory(m)
    outs = [hist.step(f) for f in frames]
    with torch.no_grad():
        exact = forward_stereo4d(m, [frames[2], frames[1], frames[0]])
    torch.testing.assert_close(outs[2].logits, exact, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(outs[2].bev_prev, outs[2].bev_curr)


def test_identity_motion_and_identical_images_give_identical_bevs() -> None:
    m = model()
    hist = TemporalHistory(m)
    hist.step(frame(0, pose(5.0, 0.3), 0))
    out = hist.step(frame(0, pose(5.0, 0.3), SECOND // 2))
    torch.testing.assert_close(out.bev_prev, out.bev_curr, rtol=1e-5, atol=1e-5)


def test_forward_translation_of_k_cells_shifts_the_previous_bev_by_k_columns() -> None:
    m = model()
    k = 3
    for_prev = TemporalHistory(m)
    first = for_prev.step(frame(0, pose(0.0), 0))
    out = for_prev.step(frame(0, pose(k * 0.4), SECOND // 2), previous=first.cache)
    # the car drove k cells forward (+x): old content appears k columns further back (−x)
    prev, old = out.bev_prev[0], first.bev_curr[0]  # (C, Y, X)
    a, b = prev[:, :, 1 : -k - 1], old[:, :, 1 + k : -1]  # interior columns
    close = torch.isclose(a, b, rtol=1e-4, atol=1e-5).all(dim=0)  # (Y, X') per cell
    assert close.float().mean() > 0.97  # rounding at cell borders may move a few points
    assert old.abs().sum() > 0 and (prev[:, :, -k:].abs().sum() < old[:, :, -k:].abs().sum())


def test_history_selection_and_reset() -> None:
    m = model()
    hist = TemporalHistory(m, max_frames=3)
    for i in range(4):
        hist.step(frame(0, pose(0.1 * i), i * SECOND // 4))
    assert [c.stamp_ns for c in hist.frames] == [SECOND // 4, SECOND // 2, 3 * SECOND // 4]
    chosen = hist.select(SECOND)
    assert chosen is not None and chosen.stamp_ns == SECOND // 2  # closest to 0.5 s old
    hist.reset()
    assert hist.select(SECOND) is None


def test_camera_to_keyego_folds_per_camera_poses() -> None:
    calib = rig_calib(TINY_STEREO)
    ego = pose(1.0)
    ego[0, 3, 0, 3] = 1.5  # camera 3 captured 0.5 m later
    ext = camera_to_keyego(ego, calib, ego)
    torch.testing.assert_close(ext[0, :3], calib.camera_to_ego[0, :3])
    expect = calib.camera_to_ego[0, 3].clone()
    expect[0, 3] += 0.5
    torch.testing.assert_close(ext[0, 3], expect)
