"""Pictures: class colours appear where the voxels are, PNGs have the expected sizes."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from flashocc_ros.classes import FREE_LABEL
from flashocc_ros.eval import visualize as vis
from flashocc_ros.rig import nuscenes_like_rig


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
