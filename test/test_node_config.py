"""Node parameters: the dataclass, param YAML, JSON schema and README table stay in sync."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from flashocc_ros.config import ConfigError
from flashocc_ros.node_config import (
    NodeConfig,
    default_values,
    json_schema,
    node_config_from_mapping,
    param_yaml,
    parameters_page,
    params_from_ros_file,
    parse_param_items,
)

ROOT = Path(__file__).resolve().parents[1]


def test_generated_files_are_up_to_date() -> None:
    assert (ROOT / "config/flashocc.param.yaml").read_text() == param_yaml(), (
        "regenerate with: python -m flashocc_ros.node_config"
    )
    schema = json.loads((ROOT / "config/flashocc.schema.json").read_text())
    assert schema == json_schema()


def test_param_yaml_validates_against_the_schema_and_builds_the_defaults() -> None:
    data = yaml.safe_load(param_yaml())
    jsonschema.validate(data, json_schema())
    assert node_config_from_mapping(data["/**"]["ros__parameters"]) == NodeConfig()


def test_schema_rejects_unknown_and_out_of_range_values() -> None:
    params = default_values()
    bad = {"/**": {"ros__parameters": {**params, "sync_tolerance_s": -1.0}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, json_schema())
    extra = {"/**": {"ros__parameters": {**params, "typo": 1}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(extra, json_schema())


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"backend": "cuda"}, "backend='cuda': must be one of"),
        ({"sync_tolerance_s": 0.0}, "sync_tolerance_s"),
        ({"camera_names": "CAM_FRONT"}, "list of strings"),
        ({"camera_names": ["A", "A"]}, "unique"),
        ({"compressed_cameras": ["CAM_X"]}, "unknown cameras"),
        ({"publish_markers": "yes"}, "true or false"),
        ({"input_queue_depth": 1.5}, "integer"),
        ({"ego_frame": "/base_link"}, "without '/'"),
        ({"odom_frame": "base_link"}, "must differ"),
        ({"no_such_param": 1}, "unknown parameters: no_such_param"),
        ({"sync_tolerancee_s": 0.01}, r"sync_tolerancee_s \(did you mean sync_tolerance_s"),
        ({"sync_tolerance_s": float("nan")}, "finite"),
        ({"tf_timeout_s": float("inf")}, "finite"),
        ({"sync_tolerance_s": 1.0}, "must be <= 0.25"),
        ({"diagnostics_period_s": 1e9}, "must be <= 60"),
        ({"camera_offsets_s": [0.0, 0.01]}, "one offset per camera"),
        ({"camera_offsets_s": [0.01, 0, 0, 0, 0, 0]}, "the first .key camera. 0.0"),
        ({"camera_offsets_s": [0.0, 0, 0, 0, 0, float("nan")]}, "finite"),
        ({"camera_offsets_s": ["a", 0, 0, 0, 0, 0]}, "list of numbers"),
        ({"sync_missing": "guess"}, "must be one of drop, fill"),
        ({"sync_fill_tolerance_s": 0.005}, "must be >= sync_tolerance_s"),
    ],
)
def test_invalid_values_are_refused_with_a_reason(values: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        node_config_from_mapping(values)


def test_readme_parameter_table_is_current() -> None:
    page = (ROOT / "docs/parameters.md").read_text()
    assert page == parameters_page(), "run `python -m flashocc_ros.node_config`"
    readme = (ROOT / "README.md").read_text()
    short = readme[readme.index("## Parameters") : readme.index("## Results")]
    first_cells = [ln.split("|")[1] for ln in short.splitlines() if ln.startswith("| `")]
    named = {n for cell in first_cells for n in re.findall(r"`([a-z_]+)`", cell)}
    assert len(named) > 10 and named <= set(default_values()), named - set(default_values())


def test_command_line_parameters_are_read_as_yaml_values() -> None:
    items = ["backend=onnxruntime", "sync_tolerance_s=0.05", "publish_points=false", "x=[a, b]"]
    assert parse_param_items(items) == {
        "backend": "onnxruntime",
        "sync_tolerance_s": 0.05,
        "publish_points": False,
        "x": ["a", "b"],
    }
    assert parse_param_items(["weights="]) == {"weights": None}
    for bad in ("backend", "=1", "x=[a"):
        with pytest.raises(ConfigError):
            parse_param_items([bad])


def test_offsets_and_no_odometry_are_accepted() -> None:
    cfg = node_config_from_mapping(
        {"camera_offsets_s": [0, 0.008, 0.017, 0.025, 0.033, 0.042], "odom_frame": ""}
    )
    assert cfg.camera_offsets_s == (0.0, 0.008, 0.017, 0.025, 0.033, 0.042)
    assert cfg.odom_frame == ""


def test_ros_parameter_files_are_read_for_the_node(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        "/**:\n  ros__parameters: {sync_tolerance_s: 0.01, use_sim_time: true}\n"
        "/vehicle/flashocc:\n  ros__parameters: {backend: torch}\n"
        "other_node:\n  ros__parameters: {backend: tensorrt}\n"
    )
    assert params_from_ros_file(path) == {"sync_tolerance_s": 0.01, "backend": "torch"}
    path.write_text("other_node:\n  ros__parameters: {backend: tensorrt}\n")
    with pytest.raises(ConfigError, match="no '/\\*\\*:' or 'flashocc:' block"):
        params_from_ros_file(path)
    path.write_text("/**: {backend: torch}\n")
    with pytest.raises(ConfigError, match="no '/\\*\\*:' or 'flashocc:' block"):
        params_from_ros_file(path)
    path.write_text("vehicle:\n  flashocc:\n    ros__parameters: {backend: torch}\n")
    assert params_from_ros_file(path) == {"backend": "torch"}
    with pytest.raises(ConfigError, match="cannot read"):
        params_from_ros_file(tmp_path / "missing.yaml")
