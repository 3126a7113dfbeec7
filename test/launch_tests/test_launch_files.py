"""The installed launch files, run for real by launch_testing: one `launch_test` process each.
In: launch_*.py beside this file (launch_testing descriptions). Out: results and launch logs.

`launch_test` runs them as ament's add_launch_test does; its pytest plugin is not used (the
jazzy plugin predates pytest 9, see pyproject.toml). They need launch_ros and launch_testing:
an apt ROS 2 has them, scripts/setup.sh builds them from ../shared/ros2-kit; without either
these tests skip and say so (test/conftest.py, marker `ros_tools`).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# Several OS processes over DDS on a loaded 2-core machine: rerun a failure once.
pytestmark = [pytest.mark.ros, pytest.mark.ros_tools, pytest.mark.flaky(reruns=1)]

LAUNCH_TESTS = sorted(Path(__file__).parent.glob("launch_*.py"))
TIMEOUT_S = 400


def test_every_launch_test_is_collected() -> None:
    assert [p.stem for p in LAUNCH_TESTS] == ["launch_node", "launch_replay"]


@pytest.mark.parametrize("path", LAUNCH_TESTS, ids=[p.stem for p in LAUNCH_TESTS])
def test_launch_file(path: Path, ros_env: dict[str, str], tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "launch_testing.launch_test", str(path)]
    cmd += ["--junit-xml", str(tmp_path / "results.xml")]
    proc = subprocess.run(
        cmd,
        env=ros_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-12000:]
    assert "FAILED" not in out and "Ran " in out, out[-12000:]
