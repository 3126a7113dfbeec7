"""What the launch files hand the node: the user's parameter file, given overrides, camera topics.
In: launch argument values (text), a cameras YAML, a parameter YAML. Out: node parameters in the
order launch_ros applies them, and one remapping per camera input.

Rules (launch/flashocc.launch.py):
* The parameter file is authoritative: every node parameter can be set there.
* A launch argument named like a node parameter overrides the file only when it is given
  (its default, the empty text, means "not given").
* `camera_names` and `compressed_cameras` come from the cameras file, with one remapping per
  input (`~/input/<name lower>/image` and `.../camera_info`), so that topics and camera order
  cannot disagree; values for them in the parameter file are overridden (with a warning).
ROS-free: the launch files import this, and so do its tests.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from flashocc_ros.camera_topics import CameraTopics
from flashocc_ros.config import ConfigError
from flashocc_ros.node_config import (
    NodeConfig,
    default_values,
    input_topics,
    is_ros_node_parameter,
    node_parameter_blocks,
    parameter_docs,
    unknown_parameters_message,
)

#: A launch argument left at this value does not override the parameter file.
NOT_GIVEN = ""
#: Node parameters set from the cameras file, never from launch arguments.
CAMERA_PARAMETERS = ("camera_names", "compressed_cameras")
#: rclpy's own parameter, overridable like the node's.
SIM_TIME = "use_sim_time"


def override_arguments() -> dict[str, str]:
    """Launch argument -> description: one per node parameter (but the camera ones) and
    `use_sim_time`, in the node's declaration order."""
    docs = parameter_docs()
    out = {
        name: f"Overrides the parameter file when given. {docs[name]}"
        for name in default_values()
        if name not in CAMERA_PARAMETERS
    }
    out[SIM_TIME] = "Overrides the parameter file when given: true to follow /clock (bag replay)."
    return out


def _typed(name: str, text: str) -> Any:
    """Launch argument text -> the parameter's type (strings stay as typed, e.g. weights:=123)."""
    default = False if name == SIM_TIME else default_values()[name]
    if isinstance(default, str):
        return text
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"launch argument {name}:={text!r} cannot be read: {err}") from err


def parameter_overrides(given: Mapping[str, str]) -> dict[str, Any]:
    """The launch arguments that were given (not NOT_GIVEN) -> node parameter values.
    The node validates them at start, together with the file's values."""
    known = override_arguments()
    unknown = sorted(set(given) - set(known))
    if unknown:
        text = unknown_parameters_message(unknown).removeprefix("unknown parameters: ")
        raise ConfigError(f"not a node parameter: {text}")
    return {name: _typed(name, text) for name, text in given.items() if text != NOT_GIVEN}


def camera_parameters(cameras: Sequence[CameraTopics]) -> dict[str, list[str]]:
    """`camera_names` in the file's order and `compressed_cameras` for the node; an empty
    `compressed_cameras` is left out (launch_ros cannot pass an empty list, and the node's
    default is empty)."""
    out = {"camera_names": [c.name for c in cameras]}
    compressed = [c.name for c in cameras if c.compressed]
    return out | ({"compressed_cameras": compressed} if compressed else {})


def camera_remappings(cameras: Sequence[CameraTopics]) -> list[tuple[str, str]]:
    """(node input, topic) for each camera's image and camera_info."""
    out: list[tuple[str, str]] = []
    for cam in cameras:
        image, info = input_topics(cam.name)
        out += [(image, cam.image), (info, cam.camera_info)]
    return out


def check_parameter_file(
    path: str | Path, cameras: Sequence[CameraTopics], node_name: str = "flashocc"
) -> list[str]:
    """Refuse a parameter file that does not parse, has nothing for the node, or sets a
    parameter the node does not have (rclpy would ignore a misspelt one silently): one-line
    ConfigError. Returns warnings: camera lists that the cameras file overrides."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read parameter file {path}: {err}") from err
    blocks = list(node_parameter_blocks(data, node_name))
    if not blocks:
        raise ConfigError(
            f"parameter file {path}: no '/**:' or '{node_name}:' block with ros__parameters"
        )
    fields = {f.name for f in dataclasses.fields(NodeConfig)}
    wanted = camera_parameters(cameras)
    warnings: list[str] = []
    for block in blocks:
        if not isinstance(block, Mapping):
            raise ConfigError(f"parameter file {path}: ros__parameters must be a mapping")
        unknown = sorted(
            name for name in block if name not in fields and not is_ros_node_parameter(str(name))
        )
        if unknown:
            raise ConfigError(
                f"parameter file {path}: the node has no parameter "
                f"{unknown_parameters_message(unknown).removeprefix('unknown parameters: ')}"
            )
        for name in CAMERA_PARAMETERS:
            value = wanted.get(name, [])
            if name in block and list(block[name] or []) != value:
                warnings.append(
                    f"{name} comes from the cameras file ({value}), not from {path} "
                    f"({block[name]})"
                )
    return warnings
