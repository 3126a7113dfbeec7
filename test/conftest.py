"""Shared test set-up: the `ros` marker's skip/fail rule and an environment for ROS subprocesses.

Tests marked `ros` need rclpy and the built messages (`make setup`, then `source scripts/env.sh`
before pytest; `make test` does both). Without them they are skipped with the reason, except
under CI (`CI` set to anything but "", "0", "false"), where a missing build is a failure.
"""

from __future__ import annotations

import importlib
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


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("ros") is None:
        return
    missing = _ros_missing()
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
