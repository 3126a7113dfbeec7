"""The launch file names the installed executable, real parameters and the node's topics."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from flashocc_ros.node_config import NodeConfig, default_values, input_topics

ROOT = Path(__file__).resolve().parents[1]


def _launch_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "flashocc_launch", ROOT / "launch/flashocc.launch.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_launch_executable_is_installed_by_cmake() -> None:
    launch = _launch_module()
    cmake = (ROOT / "CMakeLists.txt").read_text()
    assert (ROOT / "scripts/ros" / launch.EXECUTABLE).is_file()
    assert "scripts/ros/" in cmake and "lib/${PROJECT_NAME}" in cmake
    assert launch.PACKAGE == "flashocc_ros"


def test_launch_parameters_exist_on_the_node() -> None:
    launch = _launch_module()
    params = default_values()
    for name in launch.PARAMETER_ARGUMENTS:
        assert name in params
        assert launch.ARGUMENTS[name][0] == str(params[name])


def test_launch_remaps_exactly_the_node_input_topics() -> None:
    launch = _launch_module()
    assert launch.CAMERAS == NodeConfig().camera_names
    remapped = {node_topic for node_topic, _, _ in launch.camera_remappings().values()}
    expected = {t for cam in launch.CAMERAS for t in input_topics(cam)}
    assert remapped == expected


def test_launch_description_builds_where_launch_is_installed() -> None:
    pytest.importorskip("launch_ros", reason="launch_ros is not installable here (no apt ROS)")
    assert _launch_module().generate_launch_description() is not None
