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
        ({"sync_tolerance_s": ".nan"}, "must be a finite number"),
        ({"tf_timeout_s": ".inf"}, "must be a finite number"),
        ({"diagnostics_period_s": ".inf"}, "diagnostics_period_s"),
        ({"sync_tolerance_s": "1.0"}, "sync_tolerance_s=1.0: must be <= 0.25"),
        ({"sync_tolerancee_s": "0.01"}, "did you mean sync_tolerance_s"),
        ({"camera_offsets_s": "[0.0, 0.1]"}, "one offset per camera"),
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
    lines = [ln for ln in out.splitlines() if "cannot start" in ln]
    assert len(lines) == 1, out


def test_sigterm_and_sigint_end_the_node_with_exit_0_and_no_traceback(
    ros_env: dict[str, str],
) -> None:
    """Also two signals in a row (launch's SIGINT, then a supervisor's SIGTERM)."""
    import signal
    import time

    from flashocc_ros.ros.live_run import executable

    cmd = [sys.executable, str(executable("flashocc_node")), "--ros-args"]
    cmd += ["-p", "model_config:=tiny", "-p", "weights:=random"]
    for signals in ([signal.SIGTERM], [signal.SIGINT, signal.SIGTERM]):
        proc = subprocess.Popen(
            cmd, env=ros_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert proc.stdout is not None
        started = time.monotonic()
        for line in proc.stdout:  # wait until it is up
            if "flashocc ready" in line or time.monotonic() - started > 120:
                break
        for sig in signals:
            proc.send_signal(sig)
            time.sleep(0.05)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
        assert "Traceback" not in out, out
