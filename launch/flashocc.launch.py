"""Launch the flashocc node: `ros2 launch flashocc_ros flashocc.launch.py [arg:=value ...]`.

Arguments: params_file, model_config, weights, backend, device, namespace, use_sim_time, and for
every camera <cam>_image / <cam>_camera_info (e.g. cam_front_image:=/my/front/image_raw).
Compressed inputs: list the camera in the `compressed_cameras` parameter and remap
<cam>_image to the CompressedImage topic (e.g. /cam_front/image_raw/compressed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flashocc_ros.config import NUSCENES_CAMERAS
from flashocc_ros.node_config import input_topics

PACKAGE = "flashocc_ros"
EXECUTABLE = "flashocc_node"
NODE_NAME = "flashocc"
CAMERAS = NUSCENES_CAMERAS
#: Launch argument -> (default, description). Parameter overrides are applied after params_file.
ARGUMENTS: dict[str, tuple[str, str]] = {
    "params_file": ("", "Parameter YAML (default: share/flashocc_ros/config/flashocc.param.yaml)"),
    "model_config": ("demo", "Model preset or model YAML path"),
    "weights": ("", "Weights file (.pth official or .safetensors); empty = demo weights"),
    "backend": ("auto", "auto, torch, onnxruntime or tensorrt"),
    "device": ("cpu", "cpu, cuda or cuda:N"),
    "namespace": ("", "Namespace of the node"),
    "use_sim_time": ("false", "Use /clock (bag replay)"),
}
#: Parameters set from launch arguments of the same name.
PARAMETER_ARGUMENTS = ("model_config", "weights", "backend", "device")


def camera_remappings() -> dict[str, tuple[str, str, str]]:
    """Launch argument -> (node-side topic, default source topic, description)."""
    out: dict[str, tuple[str, str, str]] = {}
    for cam in CAMERAS:
        low = cam.lower()
        image, info = input_topics(cam)
        out[f"{low}_image"] = (image, f"/{low}/image_raw", f"{cam} image")
        out[f"{low}_camera_info"] = (info, f"/{low}/camera_info", f"{cam} CameraInfo")
    return out


def generate_launch_description() -> Any:
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node
    from launch_ros.substitutions import FindPackageShare

    from launch import LaunchDescription

    declared = [
        DeclareLaunchArgument(name, default_value=default, description=doc)
        for name, (default, doc) in ARGUMENTS.items()
    ]
    declared += [
        DeclareLaunchArgument(name, default_value=src, description=doc)
        for name, (_, src, doc) in camera_remappings().items()
    ]

    def make_node(context: Any) -> list[Any]:
        params_file = LaunchConfiguration("params_file").perform(context) or str(
            Path(FindPackageShare(PACKAGE).perform(context)) / "config" / "flashocc.param.yaml"
        )
        overrides = {n: LaunchConfiguration(n).perform(context) for n in PARAMETER_ARGUMENTS}
        use_sim_time = LaunchConfiguration("use_sim_time").perform(context).lower() == "true"
        remaps = [
            (node_topic, LaunchConfiguration(arg).perform(context))
            for arg, (node_topic, _, _) in camera_remappings().items()
        ]
        return [
            Node(
                package=PACKAGE,
                executable=EXECUTABLE,
                name=NODE_NAME,
                namespace=LaunchConfiguration("namespace").perform(context),
                parameters=[params_file, {**overrides, "use_sim_time": use_sim_time}],
                remappings=remaps,
                output="screen",
            )
        ]

    return LaunchDescription([*declared, OpaqueFunction(function=make_node)])
