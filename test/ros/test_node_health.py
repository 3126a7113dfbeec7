"""The node over real DDS: hostile inputs refused before anything is computed, grids that stay
right, health statuses that follow the inputs (OK, WARN, ERROR and back), the reason for a
silent input, one log line per fault kind.
In: the real node process (tiny model, random weights) fed by a synthetic rig (node_injector).
Out: pass/fail.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from node_injector import CAMS, Injector, node_cmd

pytestmark = [pytest.mark.ros, pytest.mark.flaky(reruns=2)]

OK, WARN, ERROR = 0, 1, 2
FAST = {  # seconds, so that the test does not wait long for each level
    "health_late_s": "0.6",
    "health_missing_s": "1.5",
    "health_recovery_s": "1.0",
    "startup_watchdog_s": "2.0",
    "latency_warn_s": "30.0",  # a loaded test machine: latency is not what these tests check
}
STEP = 500_000_000


LOG = Path("node.log")  # the running test's node log (set by start)


def start(tmp_path: Path, ros_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, **params: str):  # type: ignore[no-untyped-def]
    global LOG
    monkeypatch.setenv("ROS_DOMAIN_ID", ros_env["ROS_DOMAIN_ID"])
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    LOG = tmp_path / "node.log"
    log = open(LOG, "w")  # noqa: SIM115
    proc = subprocess.Popen(
        node_cmd(**FAST, **params), env=ros_env, stdout=log, stderr=subprocess.STDOUT
    )
    inj = Injector()
    return proc, log, inj


def stop(proc: subprocess.Popen, log, inj: Injector) -> None:  # type: ignore[type-arg, no-untyped-def]
    inj.close()
    proc.terminate()
    proc.wait(20)
    log.close()


def refused(inj: Injector, key: str, text: str) -> bool:
    """A refusal of input `key` is counted, and its reason was shown as a fault or logged
    (a fault is shown only for health_recovery_s: a slow check may miss it)."""
    if int(inj.diag.get(f"count.refused.{key}", "0")) < 1:
        return False
    return text in inj.diag.get(f"fault.refused.{key}", "") or text in LOG.read_text()


def test_hostile_inputs_are_refused_and_grids_stay_right(
    tmp_path: Path, ros_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    proc, log, inj = start(tmp_path, ros_env, monkeypatch)
    try:
        assert inj.wait(lambda: inj.node.count_subscribers("/fi/cam_front/image") > 0, 60)
        inj.publish_static()
        inj.spin(0.5)
        t = 10 * 10**9
        for _ in range(3):  # a steady start: stamps, phases, poses
            inj.bundle(t)
            t += STEP
        assert inj.wait(lambda: len(inj.stamps) >= 2), (tmp_path / "node.log").read_text()

        # An image stamped sec = -5: refused, counted, the node lives, the next bundle comes.
        bad = inj.good("CAM_FRONT")
        bad.header.stamp.sec = -5
        inj.pub_img["CAM_FRONT"].publish(bad)
        assert inj.wait(lambda: refused(inj, "CAM_FRONT.image", "not positive")), inj.diag

        # One /tf sample 1 km off between good ones: refused; the grid's ego pose is the car's.
        t += STEP
        inj.bundle(t, hostile_tf=t + 10_000_000)
        assert inj.wait(lambda: t in inj.stamps), inj.diag
        assert inj.wait(lambda: refused(inj, "tf", "moves 1000")), inj.diag
        assert abs(inj.ego_x[t] - t / 1e9) < 0.005

        # A 1x1 image with a 1x1 CameraInfo: both refused, no grid from that cycle.
        small = np.zeros((1, 1, 3), np.uint8)
        info = inj.CameraInfo(width=1, height=1, k=[1.0, 0, 0.5, 0, 1.0, 0.5, 0, 0, 1.0])
        info.header.frame_id = "cam_front_left_optical"
        inj.pub_info["CAM_FRONT_LEFT"].publish(info)
        t += STEP
        inj.bundle(t, {"CAM_FRONT_LEFT": inj.raw("bgr8", small)})
        assert inj.wait(lambda: refused(inj, "CAM_FRONT_LEFT.image", "smaller")), inj.diag
        assert inj.wait(lambda: refused(inj, "CAM_FRONT_LEFT.camera_info", "smaller")), inj.diag
        # fx = 1e-30: refused; the good CameraInfo stays in use.
        inj.camera_info("CAM_FRONT", np.array([[1e-30, 0, 88], [0, 1e-30, 50], [0, 0, 1]]))
        assert inj.wait(lambda: refused(inj, "CAM_FRONT.camera_info", "fx=1e-30")), inj.diag
        t += STEP
        inj.camera_info("CAM_FRONT_LEFT")
        inj.bundle(t)
        assert inj.wait(lambda: t in inj.stamps), inj.diag
        assert t - STEP not in inj.stamps  # the 1x1 cycle gave no grid
        assert proc.poll() is None
        # Different faults within seconds: each logged (the throttle is per input).
        text = (tmp_path / "node.log").read_text()
        for needle in ("not positive", "moves 1000", "smaller than", "fx=1e-30"):
            assert needle in text, (needle, text)
    finally:
        stop(proc, log, inj)


def test_health_follows_the_inputs_down_and_back(
    tmp_path: Path, ros_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    proc, log, inj = start(tmp_path, ros_env, monkeypatch)
    summary, back = "flashocc: summary", "flashocc: input CAM_BACK image"
    try:
        assert inj.wait(lambda: inj.node.count_subscribers("/fi/cam_front/image") > 0, 60)
        inj.publish_static()
        inj.spin(0.5)
        t = 10 * 10**9

        def run(seconds: float, skip: set[str] = frozenset()) -> None:  # type: ignore[assignment]
            """Publish the rig at 4 Hz for `seconds` (without the cameras in `skip`)."""
            nonlocal t
            end = inj.node.get_clock().now().nanoseconds + seconds * 1e9
            while inj.node.get_clock().now().nanoseconds < end:
                inj.bundle(t, {c: None for c in skip})
                for c in CAMS:
                    if c not in skip:
                        inj.camera_info(c)
                t += STEP // 2
                inj.spin(0.25)

        run(4.0)
        assert inj.levels.get(summary) == OK, inj.messages
        run(2.5, skip={"CAM_BACK"})  # one camera dead: its input ERROR, no grid, summary ERROR
        assert inj.levels.get(back) == ERROR, inj.messages
        assert "missing" in inj.messages[back]
        assert inj.levels.get(summary) == ERROR and "CAM_BACK" in inj.messages[summary]
        run(0.5)
        assert inj.levels.get(summary) != OK, inj.messages  # not before a window of all OK
        run(3.0)  # OK again once everything was OK for health_recovery_s
        assert inj.levels.get(summary) == OK, inj.messages
        assert inj.levels.get(back) == OK
    finally:
        stop(proc, log, inj)


def test_a_silent_input_says_why(
    tmp_path: Path, ros_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """CAM_FRONT remapped to a topic nobody publishes; CAM_BACK_LEFT's topic carries
    CompressedImage while the node expects Image: both ERROR with the cause, and one start-up
    watchdog line names them."""
    proc, log, inj = start(tmp_path, ros_env, monkeypatch)
    front = "flashocc: input CAM_FRONT image"
    back_left = "flashocc: input CAM_BACK_LEFT image"
    try:
        assert inj.wait(lambda: inj.node.count_subscribers("/fi/cam_back_left/image") > 0, 60)
        for cam in ("CAM_FRONT", "CAM_BACK_LEFT"):
            inj.node.destroy_publisher(inj.pub_img.pop(cam))
        wrong = inj.node.create_publisher(inj.CompressedImage, "/fi/cam_back_left/image", 10)
        assert wrong is not None
        inj.wait(lambda: inj.levels.get(front) == ERROR and inj.levels.get(back_left) == ERROR, 30)
        assert inj.levels.get(front) == ERROR, inj.messages
        assert "no publisher" in inj.messages[front]
        assert "CompressedImage" in inj.messages[back_left], inj.messages
        assert inj.levels.get("flashocc: summary") == ERROR
        inj.spin(1.0)
        text = (tmp_path / "node.log").read_text()
        watchdog = [ln for ln in text.splitlines() if "no occupancy grid" in ln]
        assert len(watchdog) == 1 and "/fi/cam_front/image (no publisher)" in watchdog[0], text
    finally:
        stop(proc, log, inj)
