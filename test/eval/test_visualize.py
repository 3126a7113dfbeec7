"""Pictures: class colours where the voxels are, PNG sizes, and the reading aids (background,
distance rings, ego and heading, legend, camera names, title with stamp and mIoU)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from flashocc_ros.classes import FREE_LABEL
from flashocc_ros.eval import visualize as vis
from flashocc_ros.rig import nuscenes_like_rig
from flashocc_ros.tools import world
from flashocc_ros.world.dataset import WorldDataset


def _grid() -> np.ndarray:
    sem = np.full((200, 200, 16), FREE_LABEL, np.uint8)
    sem[:, :, 2] = 11  # road everywhere
    sem[150:160, 95:105, 3:6] = 4  # a car 20 m ahead (x index 150 -> x = +20 m)
    return sem


def test_bev_shows_car_ahead_over_road() -> None:
    img = vis.bev_image(_grid(), scale=2)
    assert img.shape == (400, 400, 3)
    # x index 150..159 -> rows (199-159..199-150)*2 = 80..99; y 95..104 -> cols 190..209.
    assert tuple(img[90, 200]) == tuple(vis.PALETTE_BGR[4])
    assert tuple(img[20, 20]) == tuple(vis.PALETTE_BGR[11])


def test_voxel_view_contains_class_colours() -> None:
    img = vis.voxel_view(_grid())
    colours = {tuple(c) for c in img.reshape(-1, 3)[::7]}
    road, car = vis.PALETTE_BGR[11], vis.PALETTE_BGR[4]
    assert tuple(road) in colours or tuple((road * 1.0).astype(np.uint8)) in colours
    assert tuple(car) in colours  # top faces are unshaded


def test_camera_overlay_paints_car_in_front_camera(tmp_path: Path) -> None:
    rig = nuscenes_like_rig(320, 180)
    cam = rig.cameras[1]  # CAM_FRONT
    image = np.zeros((180, 320, 3), np.uint8)
    out = vis.camera_overlay(image, _grid(), cam.intrinsics, cam.camera_to_base, alpha=1.0)
    car = np.all(out == vis.PALETTE_BGR[4], axis=2)
    _, cols = np.nonzero(car)
    assert car.sum() > 20
    assert abs(cols.mean() - cam.cx) < 15  # straight ahead
    back = vis.camera_overlay(image, _grid(), rig.cameras[4].intrinsics,
                              rig.cameras[4].camera_to_base, alpha=1.0)  # fmt: skip
    assert not np.all(back == vis.PALETTE_BGR[4], axis=2).any()
    mosaic = vis.camera_mosaic([out] * 6, width=160)
    assert mosaic.shape == (180, 480, 3)
    path = tmp_path / "m.png"
    cv2.imwrite(str(path), vis.side_by_side(mosaic, mosaic, ("gt", "pred")))
    assert cv2.imread(str(path)).shape == (210, 960, 3)


# --- reading aids: background, rings, ego, legend, camera names, title -------------------------


def _lab(bgr: np.ndarray) -> np.ndarray:
    """(P, 3) BGR uint8-valued -> (P, 3) CIELAB (L 0..100)."""
    return cv2.cvtColor(np.asarray(bgr, np.float32).reshape(1, -1, 3) / 255, cv2.COLOR_BGR2LAB)[0]


def test_background_keeps_every_class_colour_and_shaded_face_apart() -> None:
    faces = np.concatenate([vis.PALETTE_BGR[:FREE_LABEL] * s for s in vis.FACE_SHADES])
    dist = np.linalg.norm(_lab(faces) - _lab(np.array(vis.BACKGROUND_BGR)), axis=1)
    assert dist.min() > 30  # CIELAB units; manmade on white is 13
    manmade = vis.PALETTE_BGR[15]
    assert np.linalg.norm(_lab(manmade) - _lab(np.array([255, 255, 255]))) < 15
    # The pictures keep the official colours: a manmade column is drawn in PALETTE_BGR[15].
    sem = np.full((200, 200, 16), FREE_LABEL, np.uint8)
    sem[10:20, 10:20, 3:9] = 15
    img = vis.bev_image(sem, scale=1)
    assert tuple(img[199 - 15, 199 - 15]) == tuple(manmade)
    assert tuple(img[5, 100]) == vis.BACKGROUND_BGR


def _empty() -> np.ndarray:
    return np.full((200, 200, 16), FREE_LABEL, np.uint8)


def test_bev_rings_lie_at_their_radius_in_pixels() -> None:
    img = vis.bev_image(_empty(), scale=3)  # 0.4 m voxels: 7.5 px per m, ego origin at (300, 300)
    row = img[300, 310:]  # towards ego -y, right of the ego box
    ring = np.flatnonzero(np.all(row == vis.RING_BGR, axis=1)) + 10  # px from the origin
    assert vis.RING_RADII_M == (10.0, 20.0, 30.0, 40.0)
    for r in (75, 150, 225):  # 10, 20, 30 m (40 m touches the border)
        assert np.abs(ring - r).min() <= 1, (r, ring)
    assert all(np.abs(ring[:, None] - [75, 150, 225, 300]).min(axis=1) <= 1), ring
    assert np.all(img[300, 311:370] == vis.BACKGROUND_BGR)  # nothing else on the way


def _ego_pixels(img: np.ndarray, u: int, v: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, col) centroids of the white and of the black pixels within 40 px of (u, v)."""
    crop = img[v - 40 : v + 40, u - 40 : u + 40]
    white = np.argwhere(np.all(crop == 255, axis=2))
    black = np.argwhere(np.all(crop == 0, axis=2))
    assert len(white) > 30 and len(black) > 10, (len(white), len(black))
    return white.mean(0), black.mean(0)


def test_bev_draws_the_ego_with_its_heading_up() -> None:
    img = vis.bev_image(_empty(), scale=3)
    white, black = _ego_pixels(img, 300, 300)
    assert abs(white[1] - 40) < 2 and abs(black[1] - 40) < 2  # on the centre column
    assert black[0] < white[0] - 8  # the arrow points up (ego +x)


def test_voxel_view_draws_the_ego_rings_on_the_ground_and_hides_them_behind_walls() -> None:
    # Iso pixel of ego point (x, y, z) m: a = (40-x)/0.4, b = (40-y)/0.4, c = (z+1)/0.4,
    # u = 3(a-b) + 604, v = 2(a+b) - 4c + 68 (default grid 200 x 200 x 16).
    img = vis.voxel_view(_empty())
    white, black = _ego_pixels(img, 598, 436)  # roof centre (1.3, 0, 1.56)
    assert black[0] < white[0] and black[1] < white[1]  # heading: upper left = ego forward
    ring = np.all(img[405:408, 528:531] == vis.RING_BGR, axis=2)  # (10, 0, 0.2): u 529, v 406
    assert ring.any()
    wall = _empty()
    wall[117, :, 3:] = 15  # manmade wall at x = 7 m, between the viewer and that ring point
    hidden = vis.voxel_view(wall)[405:408, 528:531]
    assert not np.all(hidden == vis.RING_BGR, axis=2).any()
    assert np.all(
        hidden == (vis.PALETTE_BGR[15] * vis.FACE_SHADES[1]).astype(np.uint8), axis=2
    ).any()


def test_legend_shows_the_colour_of_each_listed_class_only() -> None:
    img = np.zeros((50, 60, 3), np.uint8)
    out = vis.with_legend(img, [4, 15, FREE_LABEL], vis.BEV_NOTES)
    panel = out[:, 60:]
    assert np.array_equal(out[:50, :60], img)
    colours = {tuple(c) for c in panel.reshape(-1, 3)}
    for c in (4, 15):
        assert tuple(vis.PALETTE_BGR[c]) in colours
    assert vis.BACKGROUND_BGR in colours
    assert tuple(vis.PALETTE_BGR[16]) not in colours  # vegetation is not listed
    assert vis.legend([4]).shape[0] < vis.legend([4, 15]).shape[0]  # one row per class
    swatch = np.all(panel == vis.PALETTE_BGR[4], axis=2)
    assert swatch.sum() == 16 * 16
    assert vis.present_labels([_grid()]) == [4, 11]
    assert vis.present_labels([_grid()], _grid() == 11) == [11]


def test_camera_mosaic_writes_each_camera_name_in_its_tile() -> None:
    images = [np.full((90, 160, 3), 128, np.uint8) for _ in range(6)]
    names = [f"CAM_{n}" for n in range(6)]
    plain = vis.camera_mosaic(images, width=160)
    named = vis.camera_mosaic(images, width=160, names=names)
    other = vis.camera_mosaic(images, width=160, names=[f"CAM_BACK_{n}" for n in range(6)])
    assert named.shape == plain.shape
    changed = np.any(named != plain, axis=2)
    for t in range(6):
        r0, c0 = 90 * (t // 3), 160 * (t % 3)
        corner = named[r0 : r0 + 25, c0 : c0 + 100]
        assert np.all(corner > 200, axis=2).sum() > 20, t  # light letters ...
        assert np.all(corner < 30, axis=2).sum() > 100, t  # ... on a dark box
        assert not np.array_equal(corner, other[r0 : r0 + 25, c0 : c0 + 100])  # per name
        assert not changed[r0 + 30 : r0 + 90, c0 : c0 + 160].any()  # the rest of the tile
    with pytest.raises(ValueError, match="6 camera names"):
        vis.camera_mosaic(images, names=names[:5])


def test_titled_adds_a_bar_with_text_above() -> None:
    img = np.full((20, 300, 3), 90, np.uint8)
    out = vis.titled(img, "stamp 1.000000000 s")
    assert out.shape == (60, 300, 3) and np.array_equal(out[40:], img)
    assert (out[:40] < 128).any()  # dark text on the white bar
    long = vis.titled(img, "x" * 200)  # shrinks the font, stays in the picture
    assert long.shape == (60, 300, 3)


def test_render_pictures_adds_legend_title_stamp_and_miou(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["--keyframes", "1", "--width", "160", "--height", "90", "--mask-width", "32"]
    assert world.main(["generate", "--out", str(tmp_path / "d"), "--keyframes-only", *args]) == 0
    ds = WorldDataset(tmp_path / "d")
    sample = ds.sample(0)
    assert sample.labels is not None
    titles: list[str] = []
    real_titled = vis.titled
    monkeypatch.setattr(vis, "titled", lambda img, t: titles.append(t) or real_titled(img, t))
    monkeypatch.setattr(vis, "camera_overlay", lambda img, *a, **k: img)  # the slow part
    paths = world.render_pictures(ds, 0, sample.labels.semantics, tmp_path / "pics")
    stamp = f"{sample.stamp_ns // 10**9}.{sample.stamp_ns % 10**9:09d} s"
    assert len(titles) == 3
    assert all(stamp in t and "mIoU 100.0 %" in t for t in titles), titles
    bev = cv2.imread(str(paths[0]))
    assert bev.shape[0] == 40 + 30 + 600 and bev.shape[1] > 2 * 600 + 150  # title, legend
    assert world.picture_title("s_0001", 1_700_000_000_500_000_000, None) == (
        "s_0001   stamp 1700000000.500000000 s"
    )
