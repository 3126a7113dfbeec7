"""Training the 4D-stereo layout (M2): older keyframes in the samples, the official training
forward (history under no_grad), evaluation with history, and a short run whose loss falls.
In: the tiny generated datasets and the `tiny-stereo` config. Out: assertions (seconds).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_config import input_sensitive

from flashocc_ros.config import ConfigError, model_config
from flashocc_ros.model.flashocc import StereoInput, build_model
from flashocc_ros.model.temporal import camera_to_keyego, curr_to_adj, forward_stereo4d_train
from flashocc_ros.train.data import (
    OccupancyDataset,
    batch_calibration,
    batch_logits,
    temporal_frames,
)
from flashocc_ros.train.trainer import TrainConfig, evaluate, train
from flashocc_ros.world.dataset import WorldDataset

STEREO = model_config("tiny-stereo")


def _batch(ds: OccupancyDataset, *keys: int | tuple[int, int]) -> dict[str, torch.Tensor]:
    return dict(torch.utils.data.default_collate([ds[k] for k in keys]))


def test_older_keyframes_follow_the_official_rule(tiny_data: Path, tiny_data_b: Path) -> None:
    """max(index − k, 0) when in the same scene, else the key frame itself (two scenes of two
    keyframes; the clamp at 0 gives the dataset's first scene t−2 = t−1, as the official)."""
    ds = OccupancyDataset([tiny_data, tiny_data_b], STEREO, train=False)
    assert [ds.older_keyframes(i) for i in range(4)] == [(0, 0), (0, 0), (2, 2), (2, 3)]


def test_temporal_items_carry_the_older_keyframes(tiny_data: Path, tiny_data_b: Path) -> None:
    test = OccupancyDataset(tiny_data, STEREO, train=False)
    first, second = test[0], test[1]
    h, w = STEREO.input_size
    assert second["adj_images"].shape == (2, 6, 3, h, w)
    assert second["ego_poses"].shape == (3, 6, 4, 4) and second["ego_poses"].dtype == torch.float64
    # t−1 and (clamped) t−2 of keyframe 1 are keyframe 0: its pixels and poses.
    for k in (0, 1):
        assert torch.equal(second["adj_images"][k], first["images"])
        assert torch.equal(second["ego_poses"][k + 1], first["ego_poses"][0])
    raw = WorldDataset(tiny_data).sample(1)
    np.testing.assert_allclose(second["sensor_to_ego"].numpy(), raw.sensor_to_ego, atol=1e-6)
    # The static extrinsics and key poses give back the single-frame key-ego extrinsics.
    frames = temporal_frames(_batch(test, 1))
    key = frames[0]
    folded = camera_to_keyego(key.ego_to_global, key.calib, key.ego_to_global)
    torch.testing.assert_close(folded[0], second["camera_to_ego"], rtol=0, atol=1e-5)
    # Training items: the older frames go through the key frame's augmentation (keyframe 3's
    # t−2 is keyframe 3 itself: the same pixels through the same augmentation).
    aug = OccupancyDataset([tiny_data, tiny_data_b], STEREO, train=True, seed=3)
    item = aug[(2, 3)]
    assert torch.equal(item["adj_images"][1], item["images"])
    assert torch.equal(item["ego_poses"][2], item["ego_poses"][0])
    plain = OccupancyDataset([tiny_data, tiny_data_b], STEREO, train=False)[3]
    assert not torch.equal(item["images"], plain["images"])  # it was augmented


def test_non_stereo_temporal_configs_are_refused(tiny_data: Path) -> None:
    with pytest.raises(ConfigError, match="4D-stereo"):
        OccupancyDataset(tiny_data, STEREO.replace(num_adj_frames=2), train=False)


def test_training_forward_returns_key_depth_and_keeps_history_out_of_the_graph(
    tiny_data: Path,
) -> None:
    torch.manual_seed(0)
    net = build_model(STEREO)
    ds = OccupancyDataset(tiny_data, STEREO, train=False)
    batch = _batch(ds, 1)
    frames = temporal_frames(batch)
    for f in frames:
        f.images.requires_grad_(True)
    net.eval()
    logits, depth_logits = forward_stereo4d_train(net, frames)
    assert logits.shape == (1, *STEREO.grid.shape, STEREO.num_classes)
    logits.float().square().mean().backward()
    assert frames[0].images.grad is not None and float(frames[0].images.grad.abs().sum()) > 0
    assert frames[1].images.grad is None  # t−1 (keyframe 0) ran under no_grad
    # The depth returned is frame t's, as FlashOCC's own stereo depth step computes it.
    key, older = frames[0], frames[1]
    with torch.no_grad():
        feats = net.encode_images(key.images)
        prev = net.encode_images(older.images).stereo
        assert prev is not None
        k2s = curr_to_adj(key.calib, key.ego_to_global, older.calib, older.ego_to_global)
        key_ext = camera_to_keyego(key.ego_to_global, key.calib, key.ego_to_global)
        depth, _ = net.depth_context(feats, key.calib, StereoInput(prev, k2s, key_ext))
    torch.testing.assert_close(depth_logits.detach().softmax(dim=2), depth, rtol=1e-4, atol=1e-5)


def test_evaluation_uses_history_and_a_scene_start_is_the_plain_forward(tiny_data: Path) -> None:
    torch.manual_seed(1)
    net = build_model(STEREO).eval()
    input_sensitive(net, running_var=0.1)  # logits ~50, so history changes them
    ds = OccupancyDataset(tiny_data, STEREO, train=False)
    with torch.no_grad():
        start, moved = batch_logits(net, _batch(ds, 0)), batch_logits(net, _batch(ds, 1))
        plain = [net(ds[i]["images"][None], batch_calibration(_batch(ds, i))) for i in (0, 1)]
    torch.testing.assert_close(start, plain[0], rtol=1e-4, atol=2e-3)  # t = t−1 = t−2
    assert float((moved.argmax(-1) != plain[1].argmax(-1)).float().mean()) > 0.01  # t−1 used
    result = evaluate(net, ds, torch.device("cpu"))
    assert result.num_frames == 2


def test_stereo_training_loss_falls_and_records(tiny_data: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(
        train_dirs=(tiny_data,), out_dir=tmp_path / "run", model_config="tiny-stereo",
        steps=8, batch_size=2, augment=False, min_lr_ratio=1.0, lr=2e-3, warmup_steps=1,
        depth_weight=0.5, log_every=1, checkpoint_every=0, val_dir=tiny_data, class_balance=True,
    )  # fmt: skip
    result = train(cfg, "test")
    first, last = result.losses[0], sum(result.losses[-2:]) / 2
    assert last < 0.85 * first, result.losses
    record = json.loads((tmp_path / "run" / "train_record.json").read_text())
    assert record["model_config"]["stereo"] and record["eval_frames"] == 2
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["loss_depth"] > 0
