"""The installed node refuses bad start-up parameters with one log line and exit 2 (no trace).
In: the built `flashocc_node` executable with wrong parameters. Out: exit status and output.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.ros


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"model_config": "no-such-preset"}, "no-such-preset"),
        ({"backend": "tensorrt"}, "tensorrt"),
        ({"sync_tolerance_s": "-1.0"}, "sync_tolerance_s"),
    ],
)
def test_bad_parameters_exit_2_with_one_reason(
    ros_env: dict[str, str], params: dict[str, str], reason: str
) -> None:
    from flashocc_ros.ros.live_run import executable

    cmd = [sys.executable, str(executable("flashocc_node")), "--ros-args"]
    for k, v in {"model_config": "tiny", "weights": "random", **params}.items():
        cmd += ["-p", f"{k}:={v}"]
    proc = subprocess.run(
        cmd, env=ros_env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "Traceback" not in out, out
    assert "cannot start" in out and reason in out, out
