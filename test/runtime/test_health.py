"""Health rules: input levels by age, refusals and missing frames; output; faults that expire; a
summary that needs a window of OK to recover; log throttling per reason.
In: events on a fake clock. Out: pass/fail.
"""

from __future__ import annotations

from flashocc_ros.runtime.health import (
    HealthBoard,
    HealthConfig,
    InputMonitor,
    InputSpec,
    Level,
    OutputMonitor,
    Summary,
    ThrottledLog,
)

CFG = HealthConfig(late_s=1.0, missing_s=3.0, recovery_s=3.0, latency_warn_s=0.5)


def test_an_input_that_never_arrives_goes_warn_then_error_and_says_why() -> None:
    m = InputMonitor("CAM_FRONT image", "/front/image_raw", "sensor_msgs/msg/Image")
    cause = lambda: "no publisher"  # noqa: E731
    assert m.status(0.5, 0.0, CFG, cause).level == Level.OK
    warn = m.status(1.5, 0.0, CFG, cause)
    assert warn.level == Level.WARN and "no publisher" in warn.message
    err = m.status(3.5, 0.0, CFG, cause)
    assert err.level == Level.ERROR
    assert (
        "/front/image_raw (sensor_msgs/msg/Image)" in err.message and "no publisher" in err.message
    )


def test_an_input_is_ok_while_fresh_then_late_then_missing() -> None:
    m = InputMonitor("tf", "/tf", "tf2_msgs/msg/TFMessage")
    for i in range(20):
        m.arrived(i * 0.05)
    st = m.status(1.0, 0.0, CFG, None)
    assert st.level == Level.OK and dict(st.values)["rate_hz"] == "20.00"
    assert m.status(2.0, 0.0, CFG, None).level == Level.WARN  # 1.05 s old
    assert "late" in m.status(2.0, 0.0, CFG, None).message
    assert m.status(4.0, 0.0, CFG, None).level == Level.ERROR
    m.arrived(4.1)
    assert m.status(4.2, 0.0, CFG, None).level == Level.OK


def test_refused_and_missing_frames_warn_for_the_recovery_window() -> None:
    m = InputMonitor("CAM_BACK image", "/back", "sensor_msgs/msg/Image")
    m.arrived(0.0)
    m.refused(0.0, "stamp is not positive")
    st = m.status(0.5, 0.0, CFG, None)
    assert st.level == Level.WARN and "stamp is not positive" in st.message
    m.arrived(3.4)
    assert m.status(3.5, 0.0, CFG, None).level == Level.OK  # 3.5 s after the refusal
    m.missing_frame(3.5)
    assert "dropping" in m.status(3.6, 0.0, CFG, None).message


def test_output_warns_when_inputs_flow_but_no_grid_comes_and_on_latency() -> None:
    out = OutputMonitor()
    assert out.status(2.5, 0.0, CFG, inputs_flow=True).level == Level.OK
    assert out.status(3.5, 0.0, CFG, inputs_flow=True).level == Level.WARN
    assert out.status(3.5, 0.0, CFG, inputs_flow=False).level == Level.OK  # nothing to do
    out.published(2.0, 0.2)
    assert out.status(2.1, 0.0, CFG, inputs_flow=True).level == Level.OK
    out.published(2.2, 0.9)
    assert "latency 0.90 s" in out.status(2.3, 0.0, CFG, inputs_flow=True).message


def test_summary_is_the_worst_and_recovers_only_after_a_window_of_ok() -> None:
    from flashocc_ros.runtime.health import Status

    ok, bad = Status("flashocc: a", Level.OK, "ok"), Status("flashocc: b", Level.ERROR, "gone")
    s = Summary()
    assert s.update(0.0, [ok, bad], 3.0).level == Level.ERROR
    assert "b: gone" in s.update(0.0, [ok, bad], 3.0).message
    held = s.update(1.0, [ok, ok], 3.0)
    assert held.level == Level.ERROR and held.message.startswith("recovering")
    assert s.update(2.9, [ok, ok], 3.0).level == Level.ERROR
    assert s.update(3.0, [ok, ok], 3.0).level == Level.OK


def test_log_throttle_is_per_reason() -> None:
    log = ThrottledLog(5.0)
    assert log.due("tf", 0.0) and not log.due("tf", 1.0)
    assert log.due("CAM_FRONT.image", 1.0)  # a second, different fault is not hidden
    assert log.due("tf", 5.0) and log.suppressed["tf"] == 1


def test_board_faults_expire_and_missing_frames_reach_their_camera() -> None:
    board = HealthBoard(
        CFG,
        [InputSpec("CAM_FRONT.image", "CAM_FRONT image", "/f", "sensor_msgs/msg/Image")],
        started=0.0,
    )
    board.arrived("CAM_FRONT.image", 0.0)
    assert board.fault(0.0, "bundle_failed.TransformError", "no tf") is True
    assert board.fault(0.5, "bundle_failed.TransformError", "no tf") is False  # throttled
    names = {s.name: s for s in board.statuses(0.6)}
    assert names["flashocc: processing"].level == Level.WARN
    assert names["flashocc: summary"].level == Level.WARN
    board.missing_frames({"CAM_FRONT": 2}, 0.6)
    board.missing_frames({"CAM_FRONT": 2}, 0.7)  # cumulative: no new ones
    assert dict(board.statuses(0.8)[-1].values)["missing_frames_recent"] == "2"
    for t in (3.6, 3.8, 4.0, 4.2, 4.4, 6.6, 6.8, 7.0):
        board.arrived("CAM_FRONT.image", t)
        board.published(t, 0.1)
    assert {s.name: s.level for s in board.statuses(7.0)}["flashocc: summary"] == Level.OK
