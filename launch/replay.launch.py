"""Replay a recording into the node: `ros2 launch flashocc_ros replay.launch.py bag:=BAG [...]`.
In: a rosbag2 (mcap or sqlite3) and flashocc.launch.py's arguments. Out: the node on the bag's
topics with /clock from the bag, and RViz with config/flashocc.rviz when it is installed.

    ros2 launch flashocc_ros replay.launch.py bag:=out/demo/bag params_file:=my.param.yaml

The bag is played by `flashocc_play` (no `ros2 bag` needed) once the node subscribes to every
camera's image topic named in the cameras file; the node runs with use_sim_time:=true unless
that argument says otherwise. Every argument of flashocc.launch.py applies here too.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from flashocc_ros.camera_topics import load_camera_topics

PACKAGE = "flashocc_ros"
#: Launch argument -> (default, description), besides those of flashocc.launch.py.
ARGUMENTS: dict[str, tuple[str, str]] = {
    "bag": ("", "rosbag2 folder or .mcap/.db3 file to play (required)"),
    "rate": ("1.0", "Playback speed factor"),
    "loop": ("false", "Play the bag again and again"),
    "rviz": ("auto", "Start RViz: auto (when rviz2 is installed), true or false"),
    "rviz_config": ("", "RViz config; empty: share/flashocc_ros/config/flashocc.rviz"),
    "shutdown_at_end": ("false", "Stop everything when the bag has been played once"),
}


def rviz_available() -> bool:
    """True when RViz can be started: `rviz2` on PATH or its package in the ament index."""
    if shutil.which("rviz2"):
        return True
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_prefix
    except ImportError:
        return False
    try:
        get_package_prefix("rviz2")
    except PackageNotFoundError:
        return False
    return True


def generate_launch_description() -> Any:
    from launch.actions import (
        DeclareLaunchArgument,
        IncludeLaunchDescription,
        LogInfo,
        OpaqueFunction,
        RegisterEventHandler,
        Shutdown,
    )
    from launch.event_handlers import OnProcessExit
    from launch.launch_description_sources import PythonLaunchDescriptionSource
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node
    from launch_ros.substitutions import FindPackageShare

    from launch import LaunchDescription

    declared = [
        DeclareLaunchArgument(name, default_value=default, description=doc)
        for name, (default, doc) in ARGUMENTS.items()
    ]
    node = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(Path(__file__).with_name("flashocc.launch.py"))),
    )

    def play(context: Any) -> list[Any]:
        def arg(name: str) -> str:
            return str(LaunchConfiguration(name).perform(context))

        def flag(name: str) -> bool:
            return arg(name).strip().lower() in ("true", "1", "yes")

        share = Path(FindPackageShare(PACKAGE).perform(context))
        bag = arg("bag")
        if not bag:
            raise RuntimeError("replay.launch.py needs bag:=<rosbag2 folder or file>")
        cameras = load_camera_topics(arg("cameras_file") or share / "config" / "cameras.yaml")
        player_args = [bag, "--clock", "--rate", arg("rate"), "--wait-for"]
        player_args += [c.image for c in cameras]
        player_args += ["--loop"] if flag("loop") else []
        player = Node(package=PACKAGE, executable="flashocc_play", arguments=player_args)
        actions: list[Any] = [player]
        if flag("shutdown_at_end"):
            actions.append(
                RegisterEventHandler(
                    OnProcessExit(target_action=player, on_exit=[Shutdown(reason="bag played")])
                )
            )
        want_rviz = arg("rviz").strip().lower()
        if want_rviz == "true" or (want_rviz == "auto" and rviz_available()):
            rviz_config = arg("rviz_config") or str(share / "config" / "flashocc.rviz")
            actions.append(
                Node(
                    package="rviz2",
                    executable="rviz2",
                    arguments=["-d", rviz_config],
                    parameters=[{"use_sim_time": True}],
                )
            )
        elif want_rviz == "auto":
            actions.append(LogInfo(msg="rviz2 is not installed: replaying without RViz"))
        return actions

    return LaunchDescription(
        [
            *declared,
            # /clock comes from the bag: the node follows it unless told otherwise.
            DeclareLaunchArgument("use_sim_time", default_value="true"),
            node,
            OpaqueFunction(function=play),
        ]
    )
