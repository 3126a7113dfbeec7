"""launch_testing: the installed flashocc.launch.py with a user's parameter and cameras files.
In: a synthetic bag replayed onto Autoware-style topics. Out: checks of parameters, remaps,
outputs and a clean SIGINT.

Run it with `launch_test test/launch_tests/launch_node.py` (pytest runs it through
test_launch_files.py). The user's parameter file sets the model, weights, sync slop, confidence
output and others; only `backend` is given as a launch argument. The cameras file maps the six
cameras to compressed Autoware-style topics, and the player's topics are remapped onto them.
"""

from __future__ import annotations

import atexit
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path
from typing import Any

import launch_testing
import launch_testing.actions
import launch_testing.asserts
from ament_index_python.packages import get_package_share_directory
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch_ros.actions import Node

from flashocc_ros.camera_topics import (
    CameraTopics,
    camera_topics_yaml,
    default_camera_topics,
    load_camera_topics,
)
from launch import LaunchDescription

SHARE = Path(get_package_share_directory("flashocc_ros"))
#: What the user's parameter file sets (and the node must report back).
FILE_PARAMETERS: dict[str, Any] = {
    "model_config": "tiny",
    "weights": "random",
    "backend": "auto",
    "sync_tolerance_s": 0.0123,
    "publish_confidence": True,
    "marker_max_voxels": 123456,
    "diagnostics_period_s": 0.5,
}
#: Given launch arguments: the only values allowed to win over the file.
LAUNCH_ARGUMENTS = {"backend": "torch"}
OUTPUTS = ("occupancy", "markers", "points", "bev_image")


def user_cameras() -> tuple[CameraTopics, ...]:
    """The six cameras on Autoware-style compressed topics (`camera<i>`)."""
    names = [c.name for c in load_camera_topics(SHARE / "config" / "cameras.yaml")]
    return tuple(
        CameraTopics(
            name,
            f"/sensing/camera/camera{i}/image_rect_color/compressed",
            f"/sensing/camera/camera{i}/camera_info",
            True,
        )
        for i, name in enumerate(names)
    )


def _write_user_files(work: Path) -> tuple[Path, Path, Path]:
    import yaml

    params = work / "my.param.yaml"
    params.write_text(yaml.safe_dump({"flashocc": {"ros__parameters": FILE_PARAMETERS}}))
    cameras = work / "my_cameras.yaml"
    cameras.write_text(camera_topics_yaml(user_cameras()))
    bag = work / "bag"
    cmd = [
        sys.executable, "-m", "flashocc_ros.tools.world", "generate", "--bag", str(bag),
        "--scenes", "1", "--keyframes", "3", "--seed", "11", "--width", "176", "--height", "99",
        "--keyframes-only", "--compressed",
    ]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    return params, cameras, bag


def generate_test_description() -> Any:
    work = Path(tempfile.mkdtemp(prefix="flashocc_launch_"))
    atexit.register(shutil.rmtree, work, True)  # launch_test has no fixture to do it
    params, cameras, bag = _write_user_files(work)
    names = [c.name for c in user_cameras()]
    bag_topics = default_camera_topics(names, names)  # what the bag was recorded on
    remaps = []
    for recorded, wanted in zip(bag_topics, user_cameras(), strict=True):
        remaps += [(recorded.image, wanted.image), (recorded.camera_info, wanted.camera_info)]
    node = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(SHARE / "launch" / "flashocc.launch.py")),
        launch_arguments={
            "params_file": str(params),
            "cameras_file": str(cameras),
            **LAUNCH_ARGUMENTS,
        }.items(),
    )
    # The bag loops until the test has seen every output (the node publishes only to listeners).
    player = Node(
        package="flashocc_ros",
        executable="flashocc_play",
        arguments=[str(bag), "--loop", "--wait-for", *(c.image for c in bag_topics)],
        remappings=remaps,
    )
    return LaunchDescription([node, player, launch_testing.actions.ReadyToTest()]), {}


class TestRunningNode(unittest.TestCase):
    """While the node runs: parameters, subscriptions and outputs, seen over DDS."""

    @classmethod
    def setUpClass(cls) -> None:
        import rclpy

        cls.context = rclpy.Context()
        rclpy.init(context=cls.context)
        cls.node = rclpy.create_node("launch_checker", context=cls.context)

    @classmethod
    def tearDownClass(cls) -> None:
        cls.node.destroy_node()
        cls.context.try_shutdown()

    def _spin_until(self, done: Any, timeout_s: float) -> bool:
        from rclpy.executors import SingleThreadedExecutor

        executor = SingleThreadedExecutor(context=self.context)
        executor.add_node(self.node)
        deadline = time.monotonic() + timeout_s
        try:
            while not done() and time.monotonic() < deadline:
                executor.spin_once(timeout_sec=0.1)
        finally:
            executor.remove_node(self.node)
        return bool(done())

    def test_1_file_values_win_unless_an_argument_is_given(self, proc_output: Any) -> None:
        from rcl_interfaces.srv import GetParameters
        from rclpy.parameter import parameter_value_to_python

        proc_output.assertWaitFor("flashocc ready", timeout=120)
        client = self.node.create_client(GetParameters, "/flashocc/get_parameters")
        self.assertTrue(client.wait_for_service(timeout_sec=30), "no /flashocc parameters")
        wanted = {**FILE_PARAMETERS, **LAUNCH_ARGUMENTS}
        names = [*wanted, "camera_names", "compressed_cameras", "use_sim_time"]
        future = client.call_async(GetParameters.Request(names=names))
        self.assertTrue(self._spin_until(future.done, 30), "get_parameters did not answer")
        got = dict(
            zip(names, (parameter_value_to_python(v) for v in future.result().values), strict=True)
        )
        user = [c.name for c in user_cameras()]
        self.assertEqual({k: got[k] for k in wanted}, wanted)
        self.assertEqual(list(got["camera_names"]), user)
        self.assertEqual(list(got["compressed_cameras"]), user)
        self.assertIs(got["use_sim_time"], False)

    def test_2_inputs_are_remapped_to_the_cameras_file(self, proc_output: Any) -> None:
        proc_output.assertWaitFor("flashocc ready", timeout=120)
        wanted = {c.image: "sensor_msgs/msg/CompressedImage" for c in user_cameras()}
        wanted |= {c.camera_info: "sensor_msgs/msg/CameraInfo" for c in user_cameras()}
        subs: dict[str, list[str]] = {}

        def seen() -> bool:
            from rclpy.node import NodeNameNonExistentError

            try:
                subs.update(self.node.get_subscriber_names_and_types_by_node("flashocc", "/"))
            except NodeNameNonExistentError:  # not discovered yet
                return False
            return set(wanted) <= set(subs)

        self.assertTrue(self._spin_until(seen, 30), f"subscriptions: {sorted(subs)}")
        self.assertEqual({t: subs[t] for t in wanted}, {t: [ty] for t, ty in wanted.items()})
        self.assertFalse([t for t in subs if t.startswith("/flashocc/input")], subs)

    def test_3_every_output_appears_as_the_file_asks(self, proc_output: Any) -> None:
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
        from sensor_msgs.msg import Image, PointCloud2
        from visualization_msgs.msg import MarkerArray

        from flashocc_ros.msg import Occupancy

        types = {
            "occupancy": Occupancy,
            "markers": MarkerArray,
            "points": PointCloud2,
            "bev_image": Image,
        }
        got: dict[str, list[Any]] = {name: [] for name in (*OUTPUTS, "latency", "diagnostics")}
        for name in OUTPUTS:
            self.node.create_subscription(
                types[name], f"/flashocc/output/{name}", got[name].append, 10
            )
        self.node.create_subscription(
            DiagnosticStatus, "/flashocc/debug/latency_ms", got["latency"].append, 10
        )
        self.node.create_subscription(
            DiagnosticArray, "/diagnostics", got["diagnostics"].append, 10
        )
        self.assertTrue(
            self._spin_until(lambda: all(got.values()), 120),
            f"outputs received: { {k: len(v) for k, v in got.items()} }",
        )
        grid = got["occupancy"][0]
        self.assertEqual((grid.size_x, grid.size_y, grid.size_z), (200, 200, 16))
        self.assertEqual(grid.header.frame_id, "base_link")
        # publish_confidence: true in the file (the node's default is false).
        self.assertEqual(len(grid.confidence), 200 * 200 * 16)


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):
    """After launch_testing's SIGINT: the node exits 0 without a traceback."""

    def test_node_exits_cleanly_on_sigint(self, proc_info: Any, proc_output: Any) -> None:
        launch_testing.asserts.assertExitCodes(proc_info, process="flashocc_node")
        for out in proc_output:
            if "flashocc_node" in out.process_name:
                self.assertNotIn("Traceback", out.text.decode(errors="replace"))
