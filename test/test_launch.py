"""The launch files' rules without ROS: the parameter file wins unless an argument is given,
cameras and remaps come from the cameras file, bad files are refused in one line.
In: launch argument values, parameter and cameras YAML texts. Out: what the node would get.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from flashocc_ros.camera_topics import (
    CameraTopics,
    camera_topics_yaml,
    default_camera_topics,
    load_camera_topics,
)
from flashocc_ros.config import NUSCENES_CAMERAS, ConfigError
from flashocc_ros.launch_args import (
    CAMERA_PARAMETERS,
    NOT_GIVEN,
    camera_parameters,
    camera_remappings,
    check_parameter_file,
    override_arguments,
    parameter_overrides,
)
from flashocc_ros.node_config import NodeConfig, input_topics

ROOT = Path(__file__).resolve().parents[1]
AUTOWARE = load_camera_topics(ROOT / "config" / "cameras_autoware.yaml")


def _launch_module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "launch" / f"{name}.launch.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_node_parameter_but_the_cameras_is_a_launch_argument() -> None:
    fields = [f.name for f in dataclasses.fields(NodeConfig)]
    args = override_arguments()
    assert list(args) == [n for n in fields if n not in CAMERA_PARAMETERS] + ["use_sim_time"]
    launch = _launch_module("flashocc")
    assert not set(args) & set(launch.ARGUMENTS)  # no argument declared twice


def test_arguments_not_given_leave_the_parameter_file_alone() -> None:
    given = dict.fromkeys(override_arguments(), NOT_GIVEN)
    assert parameter_overrides(given) == {}
    given |= {"weights": "/w/flashocc-r50-256x704.pth", "sync_tolerance_s": "0.05"}
    given |= {"publish_points": "false", "input_queue_depth": "4", "use_sim_time": "true"}
    assert parameter_overrides(given) == {
        "weights": "/w/flashocc-r50-256x704.pth",
        "sync_tolerance_s": 0.05,
        "publish_points": False,
        "input_queue_depth": 4,
        "use_sim_time": True,
    }


def test_string_parameters_stay_strings_and_unknown_arguments_are_refused() -> None:
    # YAML would read these as a number and a boolean; the parameters are strings.
    assert parameter_overrides({"weights": "123", "ego_frame": "on"}) == {
        "weights": "123",
        "ego_frame": "on",
    }
    with pytest.raises(ConfigError, match="not a node parameter: sync_tolerancee_s"):
        parameter_overrides({"sync_tolerancee_s": "0.1"})
    with pytest.raises(ConfigError, match="camera_names"):
        parameter_overrides({"camera_names": "[A, B]"})


def test_cameras_file_sets_names_compression_and_one_remap_per_input() -> None:
    params = camera_parameters(AUTOWARE)
    assert params["camera_names"] == list(NUSCENES_CAMERAS)
    assert params["compressed_cameras"] == list(NUSCENES_CAMERAS)
    remaps = dict(camera_remappings(AUTOWARE))
    assert len(remaps) == 2 * len(AUTOWARE)
    for cam in AUTOWARE:
        image, info = input_topics(cam.name)
        assert remaps[image] == cam.image and remaps[info] == cam.camera_info
    assert remaps["~/input/cam_front/image"] == (
        "/sensing/camera/camera0/image_rect_color/compressed"
    )


def test_a_four_camera_rig_needs_only_a_cameras_file(tmp_path: Path) -> None:
    rig = (
        CameraTopics("front", "/f/image_raw", "/f/camera_info", False),
        CameraTopics("left", "/l/image_raw/compressed", "/l/camera_info", True),
        CameraTopics("right", "/r/image_raw", "/r/camera_info", False),
        CameraTopics("rear", "/b/image_raw", "/b/camera_info", False),
    )
    path = tmp_path / "cameras.yaml"
    path.write_text(camera_topics_yaml(rig))
    cams = load_camera_topics(path)
    assert camera_parameters(cams) == {
        "camera_names": ["front", "left", "right", "rear"],
        "compressed_cameras": ["left"],
    }
    # The node accepts what the launch file hands it.
    NodeConfig(camera_names=("front", "left", "right", "rear"), compressed_cameras=("left",))


def test_no_compressed_camera_passes_no_empty_list() -> None:
    # launch_ros refuses an empty list as a parameter value; the node's default is empty.
    params = camera_parameters(default_camera_topics(NUSCENES_CAMERAS))
    assert params == {"camera_names": list(NUSCENES_CAMERAS)}


def test_default_cameras_file_matches_the_project_bags() -> None:
    assert load_camera_topics(ROOT / "config" / "cameras.yaml") == default_camera_topics(
        NUSCENES_CAMERAS
    )
    default_cameras = load_camera_topics(ROOT / "config" / "cameras.yaml")
    assert check_parameter_file(ROOT / "config" / "flashocc.param.yaml", default_cameras) == []


def _param_file(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "my.param.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_parameter_files_for_this_node_are_checked(tmp_path: Path) -> None:
    ok = {"flashocc": {"ros__parameters": {"model_config": "flashocc-r50", "weights": "/w.pth"}}}
    assert check_parameter_file(_param_file(tmp_path, ok), AUTOWARE) == []
    # Another node's block in a shared vehicle file is none of our business.
    other = {**ok, "lidar": {"ros__parameters": {"range_m": 80}}}
    assert check_parameter_file(_param_file(tmp_path, other), AUTOWARE) == []
    typo = {"/**": {"ros__parameters": {"sync_tolerancee_s": 0.1}}}
    with pytest.raises(ConfigError, match="no parameter sync_tolerancee_s"):
        check_parameter_file(_param_file(tmp_path, typo), AUTOWARE)
    nested = {"car1": {"flashocc": {"ros__parameters": {"ego_frame": 5, "bogus": 1}}}}
    with pytest.raises(ConfigError, match="no parameter bogus"):
        check_parameter_file(_param_file(tmp_path, nested), AUTOWARE)
    with pytest.raises(ConfigError, match="no '/\\*\\*:' or 'flashocc:' block"):
        check_parameter_file(_param_file(tmp_path, other | {"flashocc": {}}), AUTOWARE)


def test_camera_lists_in_the_parameter_file_give_way_to_the_cameras_file(
    tmp_path: Path,
) -> None:
    names = list(NUSCENES_CAMERAS)
    same = {"/**": {"ros__parameters": {"camera_names": names, "compressed_cameras": names}}}
    assert check_parameter_file(_param_file(tmp_path, same), AUTOWARE) == []
    # The generated default file lists no compressed camera: the Autoware example overrides it.
    (warning,) = check_parameter_file(ROOT / "config" / "flashocc.param.yaml", AUTOWARE)
    assert warning.startswith("compressed_cameras comes from the cameras file")
    other = {"/**": {"ros__parameters": {"camera_names": names[:4]}}}
    (warning,) = check_parameter_file(_param_file(tmp_path, other), AUTOWARE)
    assert warning.startswith("camera_names comes from the cameras file")


def test_unreadable_parameter_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read parameter file") as err:
        check_parameter_file(tmp_path / "missing.yaml", AUTOWARE)
    assert "\n" not in str(err.value)


def test_launch_files_install_where_cmake_puts_them() -> None:
    cmake = (ROOT / "CMakeLists.txt").read_text()
    assert "install(DIRECTORY launch config DESTINATION share/${PROJECT_NAME})" in cmake
    launch = _launch_module("flashocc")
    assert (ROOT / "scripts/ros" / launch.EXECUTABLE).is_file()
    assert "scripts/ros/" in cmake and "lib/${PROJECT_NAME}" in cmake
    # The replay launch file starts the installed player and includes the node's launch file.
    replay = (ROOT / "launch" / "replay.launch.py").read_text()
    assert (ROOT / "scripts/ros/flashocc_play").is_file() and '"flashocc_play"' in replay
    assert 'with_name("flashocc.launch.py")' in replay
    for name in ("flashocc", "replay"):
        ast.parse((ROOT / "launch" / f"{name}.launch.py").read_text())


@pytest.mark.ros_tools
def test_launch_descriptions_build_where_launch_is_installed() -> None:
    for name in ("flashocc", "replay"):
        assert _launch_module(name).generate_launch_description() is not None
