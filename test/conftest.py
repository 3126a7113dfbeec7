"""Shared test set-up: the `ros` / `ros_tools` markers' skip rules and an environment for ROS.

Tests marked `ros` need rclpy and the built messages (`make setup`, then `source scripts/env.sh`
before pytest; `make test` does both). Without them they are skipped with the reason, except
under CI (`CI` set to anything but "", "0", "false"), where a missing build is a failure.
Tests marked `ros_tools` also need launch_ros, launch_testing, tf2_ros, message_filters,
diagnostic_updater and sensor_msgs_py, which PyPI does not carry: an apt ROS 2 has them and
scripts/setup.sh builds them from ../shared/ros2-kit. Without them these tests are skipped with
the reason, under CI too unless that kit exists (then its missing build is a failure).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import random
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _ros_missing() -> str | None:
    """Why the ROS part cannot run here, or None when rclpy and flashocc_ros.msg import."""
    try:
        importlib.import_module("rclpy")
        importlib.import_module("flashocc_ros.msg")
    except ImportError as err:
        return (
            f"built ROS package not importable ({err}); run `make setup` and "
            "`source scripts/env.sh` before pytest, or use `make test`"
        )
    return None


#: The ROS 2 tools the `ros_tools` tests import.
ROS_TOOLS = (
    "launch_ros",
    "launch_testing",
    "tf2_ros",
    "message_filters",
    "diagnostic_updater",
    "sensor_msgs_py",
)


def ros2_kit() -> Path:
    """Where scripts/setup.sh looks for the kit (FLASHOCC_ROS2_KIT, default ../shared/ros2-kit)."""
    return Path(os.environ.get("FLASHOCC_ROS2_KIT") or ROOT.parent / "shared" / "ros2-kit")


def _ros_tools_missing() -> str | None:
    """Why the `ros_tools` tests cannot run here, or None."""
    absent = [name for name in ROS_TOOLS if importlib.util.find_spec(name) is None]
    if not absent:
        return None
    return (
        f"{', '.join(absent)} not importable: PyPI has no wheels for them; an apt ROS 2 has them, "
        f"and scripts/setup.sh builds them when {ros2_kit()} exists (it does not here)"
        if not (ros2_kit() / "build.sh").is_file()
        else f"{', '.join(absent)} not importable although {ros2_kit()} exists: run "
        "`make setup` and `source scripts/env.sh` before pytest, or use `make test`"
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("ros") is None and item.get_closest_marker("ros_tools") is None:
        return
    missing = _ros_missing()
    if missing is None and item.get_closest_marker("ros_tools") is not None:
        tools_missing = _ros_tools_missing()
        if tools_missing is not None:
            if _in_ci() and (ros2_kit() / "build.sh").is_file():
                pytest.fail(f"CI is set, so this is an error: {tools_missing}", pytrace=False)
            pytest.skip(tools_missing)
    if missing is None:
        return
    if _in_ci():
        pytest.fail(f"CI is set, so this is an error: {missing}", pytrace=False)
    pytest.skip(missing)


@pytest.fixture
def ros_env() -> dict[str, str]:
    """Environment for ROS subprocesses: this one, with a DDS domain of its own, localhost only.

    The domain id is drawn per test so concurrent test runs on one machine do not talk to each
    other. The ROS wheels re-exec Python once to set LD_LIBRARY_PATH; children inherit the
    finished environment, so they start directly.
    """
    env = dict(os.environ)
    env["ROS_DOMAIN_ID"] = str(random.SystemRandom().randint(1, 100))
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env.pop("ROS_LOCALHOST_ONLY", None)  # deprecated in Jazzy; conflicts with the line above
    env.pop("ROS_STATIC_PEERS", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env
