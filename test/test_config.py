"""Configuration: presets, YAML round trip, and refusal of bad values with a reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from flashocc_ros.config import (
    PRESETS,
    ConfigError,
    GridConfig,
    load_model_config,
    model_config,
    model_config_from_dict,
)
from flashocc_ros.rig import load_rig, nuscenes_like_rig, rig_from_dict


def test_official_presets_have_the_spec_shapes() -> None:
    m0, m1, m2 = (model_config(n) for n in PRESETS if n.startswith("flashocc"))
    assert (m0.num_depth_bins, m1.num_depth_bins, m2.num_depth_bins) == (44, 88, 88)
    assert m0.feature_size == m1.feature_size == (16, 44)
    assert m1.grid.shape == (200, 200, 16)
    assert m2.temporal and m2.stereo and not m1.temporal
    assert m0.camera_names[0] == "CAM_FRONT_LEFT"


def test_yaml_round_trip_with_a_base_preset(tmp_path: Path) -> None:
    cfg = model_config("demo").replace(context_channels=24)
    path = tmp_path / "model.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    assert load_model_config(path) == cfg
    path.write_text("base: flashocc-r50\nhead_channels: 128\n")
    assert load_model_config(path) == model_config("flashocc-r50").replace(head_channels=128)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"base": "flashocc-r50", "head_chanels": 3}, "unknown model config keys: head_chanels"),
        ({"base": "nope"}, "unknown model config 'nope'"),
        ({"base": "tiny", "input_size": [65, 176]}, "divisible"),
        ({"base": "tiny", "backbone_depth": 42}, "backbone_depth"),
        ({"base": "tiny", "stereo": True}, "stereo"),
        ({"base": "tiny", "grid": {"voxel": 1}}, "unknown grid config keys"),
        ({"base": "tiny", "downsample": 8}, "do not fit downsample 8"),
        ({"base": "tiny", "backbone_out_indices": [3, 2]}, "increasing"),
        # bounds and types, checked before any arithmetic (a weights file embeds this mapping)
        ({"base": "tiny", "neck_channels": 65536}, r"neck_channels must be in \[1, 4096\]"),
        ({"base": "tiny", "neck_channels": "128"}, "neck_channels must be an integer"),
        ({"base": "tiny", "head_channels": 16.0}, "head_channels must be an integer"),
        ({"base": "tiny", "depth_step": float("nan")}, "depth_step must be a finite number"),
        ({"base": "tiny", "depth_stop": 1e6}, r"depth_stop must be in \[0, 1000\]"),
        ({"base": "tiny", "grid": {"voxel_size": 0}}, "voxel_size must be in"),
        ({"base": "tiny", "grid": {"x_max": float("inf")}}, "x_max must be a finite number"),
        ({"base": "tiny", "grid": {"voxel_size": 0.01}}, "voxels; at most 2048"),
        ({"base": "tiny", "camera_names": ["A", "A"]}, "distinct"),
        ({"base": "tiny", "stereo": "yes"}, "stereo must be true or false"),
        ({"base": "tiny", "depth_net": "magic"}, "depth_net must be one of"),
        ({"base": "tiny", "bev_num_layers": [1, 1, 99]}, r"bev_num_layers\[2\] must be in"),
        ({"base": "tiny", "input_size": [2048, 4096], "depth_step": 0.1}, "lifted points"),
    ],
)
def test_bad_model_configs_are_refused_with_a_reason(data: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        model_config_from_dict(data)


def test_grid_must_be_a_whole_number_of_voxels() -> None:
    with pytest.raises(ConfigError, match="X extent"):
        GridConfig(x_max=40.1)


def test_rig_round_trip_and_optical_frame_convention(tmp_path: Path) -> None:
    rig = nuscenes_like_rig()
    path = tmp_path / "rig.yaml"
    path.write_text(yaml.safe_dump(rig.to_dict()))
    assert load_rig(path) == rig
    front = rig.camera("CAM_FRONT").camera_to_base
    # Optical z (viewing direction) of the front camera points along base +x, optical y down.
    np.testing.assert_allclose(front[:3, 2], [1, 0, 0], atol=1e-9)
    np.testing.assert_allclose(front[:3, 1], [0, 0, -1], atol=1e-9)
    left = rig.camera("CAM_FRONT_LEFT").camera_to_base
    assert left[1, 2] > 0.8  # looks to the left (+y)
    half = nuscenes_like_rig(800, 450).camera("CAM_FRONT")
    assert half.fx == pytest.approx(rig.camera("CAM_FRONT").fx / 2)


def test_rig_errors_name_the_camera() -> None:
    with pytest.raises(ConfigError, match="camera #0"):
        rig_from_dict({"cameras": [{"name": "a", "width": 10}]})
    bad = {"name": "a", "width": 10, "height": 10, "fx": 0, "cx": 5, "cy": 5}
    with pytest.raises(ConfigError, match="fx"):
        rig_from_dict({"cameras": [{**bad, "translation": [0, 0, 0], "yaw_deg": 0}]})
