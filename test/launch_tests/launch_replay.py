"""launch_testing: the installed replay.launch.py plays a bag into the node on bag time.
In: a synthetic bag on the default topics, a parameter file. Out: checks that the node follows
/clock and turns the bag's frames into occupancy stamped with them, and exits on SIGINT.

Run it with `launch_test test/launch_tests/launch_replay.py` (pytest runs it through
test_launch_files.py). RViz is switched off (`rviz:=false`); the bag loops until the test has
seen a grid.
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
import yaml
from ament_index_python.packages import get_package_share_directory
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource

from launch import LaunchDescription

SHARE = Path(get_package_share_directory("flashocc_ros"))
PARAMETERS = {"model_config": "tiny", "weights": "random"}


def _bag_stamps(bag: Path) -> set[int]:
    from rosbags.highlevel import AnyReader

    with AnyReader([bag]) as reader:
        conns = [c for c in reader.connections if c.topic == "/cam_front_left/image_raw"]
        msgs = [reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages(conns)]
    return {m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in msgs}


def generate_test_description() -> Any:
    work = Path(tempfile.mkdtemp(prefix="flashocc_replay_"))
    atexit.register(shutil.rmtree, work, True)  # launch_test has no fixture to do it
    params = work / "my.param.yaml"
    params.write_text(yaml.safe_dump({"/**": {"ros__parameters": PARAMETERS}}))
    bag = work / "bag"
    cmd = [
        sys.executable, "-m", "flashocc_ros.tools.world", "generate", "--bag", str(bag),
        "--scenes", "1", "--keyframes", "2", "--seed", "12", "--width", "176", "--height", "99",
        "--keyframes-only",
    ]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    replay = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(SHARE / "launch" / "replay.launch.py")),
        launch_arguments={
            "bag": str(bag),
            "params_file": str(params),
            "rviz": "false",
            "loop": "true",
        }.items(),
    )
    return LaunchDescription([replay, launch_testing.actions.ReadyToTest()]), {
        "stamps": _bag_stamps(bag)
    }


class TestReplay(unittest.TestCase):
    """The node on bag time: use_sim_time from the launch file, grids with the bag's stamps."""

    def test_grids_carry_the_bag_stamps(self, proc_output: Any, stamps: set[int]) -> None:
        import rclpy
        from rcl_interfaces.srv import GetParameters
        from rclpy.executors import SingleThreadedExecutor

        from flashocc_ros.msg import Occupancy

        proc_output.assertWaitFor("flashocc ready", timeout=120)
        context = rclpy.Context()
        rclpy.init(context=context)
        node = rclpy.create_node("replay_checker", context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        try:
            grids: list[Any] = []
            node.create_subscription(Occupancy, "/flashocc/output/occupancy", grids.append, 10)
            client = node.create_client(GetParameters, "/flashocc/get_parameters")
            self.assertTrue(client.wait_for_service(timeout_sec=30))
            future = client.call_async(GetParameters.Request(names=["use_sim_time"]))
            deadline = time.monotonic() + 120
            while (not grids or not future.done()) and time.monotonic() < deadline:
                executor.spin_once(timeout_sec=0.1)
            self.assertTrue(future.done() and future.result().values[0].bool_value)
            self.assertTrue(grids, "no occupancy grid within 120 s")
            stamp = grids[0].header.stamp.sec * 10**9 + grids[0].header.stamp.nanosec
            self.assertIn(stamp, stamps)
        finally:
            executor.shutdown()
            node.destroy_node()
            context.try_shutdown()


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):
    def test_node_exits_cleanly_on_sigint(self, proc_info: Any) -> None:
        launch_testing.asserts.assertExitCodes(proc_info, process="flashocc_node")
