"""Start the flashocc node: `ros2 launch flashocc_ros flashocc.launch.py [arg:=value ...]`.
In: a parameter file, a cameras file, optional overrides. Out: the node, its inputs remapped.

    ros2 launch flashocc_ros flashocc.launch.py params_file:=my.param.yaml \
        cameras_file:=my_cameras.yaml [weights:=/path/x.pth ...]

* `params_file` (default: share/flashocc_ros/config/flashocc.param.yaml) is authoritative:
  every node parameter can be set there.
* Every node parameter is also a launch argument (`--show-args` lists them); one that is given
  overrides the file, one that is not leaves the file's value alone.
* `cameras_file` (default: share/flashocc_ros/config/cameras.yaml, the project's bags) maps each
  camera, in the model's order, to its image topic (raw, or compressed when it ends in
  /compressed) and camera_info topic; it sets `camera_names` and `compressed_cameras` (whatever
  the parameter file says) and remaps the node's inputs. A 4-, 5- or 6-camera rig or
  Autoware-style names need only another file (config/cameras_autoware.yaml is an example).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flashocc_ros.camera_topics import load_camera_topics
from flashocc_ros.launch_args import (
    camera_parameters,
    camera_remappings,
    check_parameter_file,
    override_arguments,
    parameter_overrides,
)

PACKAGE = "flashocc_ros"
EXECUTABLE = "flashocc_node"
#: Launch argument -> (default, description), besides one per node parameter.
ARGUMENTS: dict[str, tuple[str, str]] = {
    "params_file": ("", "Parameter YAML; empty: share/flashocc_ros/config/flashocc.param.yaml"),
    "cameras_file": ("", "Cameras YAML (name, image, camera_info); empty: config/cameras.yaml"),
    "node_name": ("flashocc", "Name of the node"),
    "namespace": ("", "Namespace of the node"),
    "log_level": ("info", "Log level of the node: debug, info, warn, error"),
}


def _share(context: Any, *parts: str) -> str:
    from launch_ros.substitutions import FindPackageShare

    return str(Path(FindPackageShare(PACKAGE).perform(context), *parts))


def generate_launch_description() -> Any:
    from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    from launch import LaunchDescription

    declared = [
        DeclareLaunchArgument(name, default_value=default, description=doc)
        for name, (default, doc) in ARGUMENTS.items()
    ]
    declared += [
        DeclareLaunchArgument(name, default_value="", description=doc)
        for name, doc in override_arguments().items()
    ]

    def make_node(context: Any) -> list[Any]:
        def arg(name: str) -> str:
            return str(LaunchConfiguration(name).perform(context))

        params_file = arg("params_file") or _share(context, "config", "flashocc.param.yaml")
        cameras = load_camera_topics(
            arg("cameras_file") or _share(context, "config", "cameras.yaml")
        )
        warnings = check_parameter_file(params_file, cameras, arg("node_name"))
        overrides = parameter_overrides({name: arg(name) for name in override_arguments()})
        return [
            *(LogInfo(msg=f"flashocc.launch.py: {w}") for w in warnings),
            Node(
                package=PACKAGE,
                executable=EXECUTABLE,
                name=arg("node_name"),
                namespace=arg("namespace"),
                # Later entries win: the file, the cameras file's names, given overrides.
                parameters=[
                    params_file,
                    camera_parameters(cameras),
                    *([overrides] * bool(overrides)),
                ],
                remappings=camera_remappings(cameras),
                arguments=["--ros-args", "--log-level", arg("log_level")],
                output="screen",
            ),
        ]

    return LaunchDescription([*declared, OpaqueFunction(function=make_node)])
