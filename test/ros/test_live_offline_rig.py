"""Live over DDS equals offline, on a recording of a real-looking rig (issue: exact inputs).
In: a 12 Hz staggered, jittered, vehicle-topic recording with drops, a silent camera, a /tf gap,
played into the real node (own process, remapped by a cameras file) by the real player.
Out: every live grid bit-identical to `tools.replay`'s, from the right frames, with /tf poses.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rig_recording import check_results, load_grids, write_rig_recording, write_test_weights

from flashocc_ros.camera_topics import camera_topics_yaml

# Several OS processes over DDS on a loaded 2-core machine: rerun a failure up to twice.
pytestmark = [pytest.mark.ros, pytest.mark.flaky(reruns=2)]


def test_live_grids_equal_offline_grids_on_a_staggered_rig(
    tmp_path: Path, ros_env: dict[str, str]
) -> None:
    rec = write_rig_recording(tmp_path / "bag")
    cams = tmp_path / "cameras.yaml"
    cams.write_text(camera_topics_yaml(rec.topics))
    weights = tmp_path / "tiny.safetensors"
    write_test_weights(weights)
    params = {"model_config": "tiny", "weights": str(weights)}

    # Offline: the user's command, in its own process like the node (same torch settings).
    replay = [
        sys.executable, "-m", "flashocc_ros.tools.replay", str(tmp_path / "bag"),
        "--out", str(tmp_path / "offline"), "--cameras", str(cams), "--quiet",
    ]  # fmt: skip
    replay += [f"--param={k}={json.dumps(v)}" for k, v in params.items()]
    done = subprocess.run(replay, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr
    offline = load_grids(tmp_path / "offline")
    check_results(rec, offline)

    out = tmp_path / "live"
    cmd = [
        sys.executable, "-m", "flashocc_ros.ros.live_run", "--bag", str(tmp_path / "bag"),
        "--out", str(out), "--cameras", str(cams), "--expected", str(len(offline)),
        "--rate", "0.1", "--timeout", "200",
    ]  # fmt: skip
    cmd += [f"--param={k}={json.dumps(v)}" for k, v in params.items()]
    proc = subprocess.run(cmd, env=ros_env, capture_output=True, text=True, timeout=400)
    node_log = (out / "node.log").read_text() if (out / "node.log").exists() else ""
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}\nnode:\n{node_log}"
    live = load_grids(out / "npz")

    # >= 90 % of the complete six-camera sets give a grid live (the rest superseded under load)
    assert len(live) >= 0.9 * len(offline), (sorted(live), sorted(offline), node_log)
    assert set(live) <= set(offline)
    for stamp, arrays in live.items():
        want = offline[stamp]
        assert list(arrays["camera_names"]) == list(want["camera_names"])
        np.testing.assert_array_equal(arrays["camera_stamps_ns"], want["camera_stamps_ns"])
        np.testing.assert_allclose(arrays["ego_pose"], want["ego_pose"], atol=1e-9)
        np.testing.assert_allclose(arrays["camera_poses"], want["camera_poses"], atol=1e-9)
        np.testing.assert_array_equal(arrays["semantics"], want["semantics"], err_msg=str(stamp))
