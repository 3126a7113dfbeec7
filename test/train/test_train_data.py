"""Training samples: BEV flip sign convention, label flips, augmented calibration, depth maps,
several dataset folders read as one.
In: random points / the tiny generated datasets. Out: assertions.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from flashocc_ros.config import GridConfig, model_config
from flashocc_ros.model.geometry import lift_to_ego
from flashocc_ros.train.data import BevAug, OccupancyDataset, batch_calibration
from flashocc_ros.world.dataset import DatasetError, WorldDataset

TINY = model_config("tiny")


def _voxel(points: np.ndarray, grid: GridConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lower = np.array([grid.x_min, grid.y_min, grid.z_min])
    idx = np.floor((points - lower) / grid.voxel_size).astype(int)
    return idx[:, 0], idx[:, 1], idx[:, 2]


@pytest.mark.parametrize("flip_dx", [False, True])
@pytest.mark.parametrize("flip_dy", [False, True])
def test_lifting_through_bda_matches_flipped_labels(flip_dx: bool, flip_dy: bool) -> None:
    """A camera point lifted with `bda` falls in the voxel whose flipped label is its own."""
    grid = GridConfig()
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 18, grid.shape).astype(np.uint8)  # (X, Y, Z)
    aug = BevAug(flip_dx, flip_dy)
    # Camera-frame points (u, v, d) lifted by an identity-intrinsics camera at the ego origin.
    pts = torch.tensor(rng.uniform([-30, -30, 0.5], [30, 30, 5.0], (500, 3)))  # (M, 3) ego
    cam_to_ego = torch.eye(4, dtype=torch.float64)[None, None]  # (B, N, 4, 4)
    eye3 = torch.eye(3, dtype=torch.float64)[None, None]
    uvd = torch.stack([pts[:, 0] / pts[:, 2], pts[:, 1] / pts[:, 2], pts[:, 2]], -1)
    kwargs = {"camera_to_ego": cam_to_ego, "intrinsics": eye3, "post_rot": eye3}
    plain = lift_to_ego(
        uvd, post_tran=torch.zeros(1, 1, 3, dtype=torch.float64), bda=eye3[0], **kwargs
    )[0, 0]  # (M, 3)
    bda = torch.tensor(aug.matrix())[None]
    flipped = lift_to_ego(
        uvd, post_tran=torch.zeros(1, 1, 3, dtype=torch.float64), bda=bda, **kwargs
    )[0, 0]
    assert torch.allclose(plain, pts)
    own = labels[_voxel(plain.numpy(), grid)]
    seen = aug.flip_grid(labels)[_voxel(flipped.numpy(), grid)]
    np.testing.assert_array_equal(seen, own)
    if flip_dx:  # x -> -x: dim 0 of the labels
        assert np.all(np.sign(flipped[:, 0].numpy()) == -np.sign(pts[:, 0].numpy()))


def test_train_items_flip_labels_with_their_bda(tiny_data: Path) -> None:
    ds = OccupancyDataset(tiny_data, TINY, train=True, seed=1, with_depth=True)
    raw = WorldDataset(tiny_data).sample(0).labels
    assert raw is not None
    seen = set()
    for epoch in range(8):
        item = ds[(epoch, 0)]
        diag = torch.diagonal(item["bda"]).tolist()
        aug = BevAug(diag[0] < 0, diag[1] < 0)
        seen.add((aug.flip_dx, aug.flip_dy))
        np.testing.assert_array_equal(item["semantics"].numpy(), aug.flip_grid(raw.semantics))
        np.testing.assert_array_equal(
            item["mask_camera"].numpy() > 0, aug.flip_grid(raw.mask_camera)
        )
        assert item["images"].shape == (6, 3, *TINY.input_size)
        assert item["depth"].shape == (6, *TINY.input_size)
        assert float(item["depth"].max()) > 0
    assert len(seen) >= 3  # flips are random (p = 0.5 each)
    # Same key, same sample: augmentation is keyed by (seed, epoch, index).
    assert torch.equal(ds[(3, 1)]["images"], ds[(3, 1)]["images"])


def test_eval_items_use_test_geometry(tiny_data: Path) -> None:
    ds = OccupancyDataset(tiny_data, TINY, train=False)
    batch = torch.utils.data.default_collate([ds[0], ds[1]])
    calib = batch_calibration(batch)
    assert calib.batch_size == 2 and calib.num_cameras == 6
    assert torch.equal(calib.bda, torch.eye(3).expand(2, 3, 3))
    # 176 -> 176 wide: scale 1, bottom crop of 99 - 64 = 35 rows.
    assert torch.allclose(calib.post_tran[0, 0], torch.tensor([0.0, -35.0, 0.0]))
    assert "depth" not in batch


def test_several_folders_read_as_one(tiny_data: Path, tiny_data_b: Path) -> None:
    a, b = WorldDataset(tiny_data), WorldDataset(tiny_data_b)
    both = WorldDataset(tiny_data, tiny_data_b)
    assert len(both) == len(a) + len(b) == 4
    assert both.scenes == a.scenes + b.scenes and a.scenes != b.scenes
    for i in range(len(b)):  # b's keyframes follow a's, read from b's folder
        rec = both.keyframes[len(a) + i]
        assert both.labels_path(rec) == b.labels_path(b.keyframes[i])
        assert str(both.labels_path(rec)).startswith(str(tiny_data_b))
        mine, theirs = both.sample(len(a) + i), b.sample(i)
        assert mine.token == theirs.token and np.array_equal(mine.images, theirs.images)
        assert mine.labels is not None and theirs.labels is not None
        assert np.array_equal(mine.labels.semantics, theirs.labels.semantics)
    items = OccupancyDataset([tiny_data, tiny_data_b], TINY, train=False)
    alone = OccupancyDataset(tiny_data_b, TINY, train=False)
    for key in ("images", "semantics", "mask_camera", "camera_to_ego"):
        assert torch.equal(items[3][key], alone[1][key])


def test_folders_that_do_not_fit_together_are_refused(
    tiny_data: Path, tiny_data_b: Path, tmp_path: Path
) -> None:
    with pytest.raises(DatasetError, match="is in both"):
        WorldDataset(tiny_data, tiny_data)
    with pytest.raises(DatasetError, match="stores no depth maps"):
        OccupancyDataset([tiny_data, tiny_data_b], TINY, train=True, with_depth=True)
    with pytest.raises(DatasetError, match="no dataset folder"):
        WorldDataset()
    index = json.loads((tiny_data_b / "world.json").read_text())
    changes = {
        "grid": lambda ix: ix["grid"].update(voxel_size=0.8),
        "camera rig": lambda ix: ix["rig"]["cameras"][0].update(fx=1.0),
    }
    for what, change in changes.items():
        edited = copy.deepcopy(index)
        change(edited)
        folder = tmp_path / what.replace(" ", "_")
        folder.mkdir()
        (folder / "world.json").write_text(json.dumps(edited))
        WorldDataset(folder)  # fine alone
        with pytest.raises(DatasetError, match=what):
            WorldDataset(tiny_data, folder)
