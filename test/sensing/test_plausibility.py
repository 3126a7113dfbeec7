"""Plausibility limits: stamps, image and CameraInfo sizes and intrinsics, /tf motion.
In: crafted inputs around each limit. Out: pass/fail.
"""

from __future__ import annotations

import math

from flashocc_ros.sensing.camera_info import CameraIntrinsics
from flashocc_ros.sensing.plausibility import (
    MotionGuard,
    Sample,
    StampGuard,
    image_size_problem,
    intrinsics_problem,
)

S = 1_000_000_000
MS = 1_000_000


def test_stamps_not_positive_are_refused() -> None:
    g = StampGuard(5 * S)
    assert "not positive" in g.check(-5 * S, 10 * S, wall_clock=False)
    assert "not positive" in g.check(0, 10 * S, wall_clock=False)


def test_a_stamp_off_the_others_is_refused_a_loop_is_followed() -> None:
    g = StampGuard(5 * S)
    t = 1000 * S
    for i in range(20):  # a steady stream, 30 ms delay
        assert g.check(t + i * 100 * MS, t + i * 100 * MS + 30 * MS, False) == ""
    now = t + 2 * S + 30 * MS
    assert "off the other inputs" in g.check(now + 3600 * S, now, False)  # an hour ahead
    assert "off the other inputs" in g.check(now - 60 * S, now, False)  # a minute behind
    assert g.check(now - 30 * MS, now, False) == ""  # the stream goes on
    # The recording loops: every stamp is 30 s older from now on; 7 messages are refused, the
    # 8th in a row agrees with them: time was reset, the stream is followed from there.
    verdicts = [g.check(now + k * MS - 30 * S, now + k * MS + 30 * MS, False) for k in range(20)]
    assert all(verdicts[:7]) and not any(verdicts[7:])
    # One hostile stamp a second among good ones never re-bases.
    h = StampGuard(5 * S)
    for i in range(400):
        stamp = t + i * 10 * MS
        hostile = i % 20 == 0
        verdict = h.check(stamp + (3600 * S if hostile else 0), stamp + 30 * MS, False)
        assert bool(verdict) == (hostile and i > 0), i  # i = 0: before there is a median


def test_the_wall_clock_limit_applies_only_without_sim_time_and_when_set() -> None:
    assert StampGuard(0, 0).check(1 * S, 10**9 * S, True) == ""
    g = StampGuard(0, 2 * S)
    assert "node's clock" in g.check(1 * S, 10 * S, wall_clock=True)
    assert g.check(1 * S, 10 * S, wall_clock=False) == ""


def test_images_smaller_than_the_network_can_use_are_refused() -> None:
    assert "1x1 is smaller" in image_size_problem(1, 1, (176, 32))
    assert image_size_problem(176, 99, (176, 32)) == ""


def k(fx: float, fy: float, cx: float, cy: float) -> tuple[float, ...]:
    return (fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0)


def test_intrinsics_limits() -> None:
    good = CameraIntrinsics(1600, 900, k(1266, 1266, 816, 491), "cam")
    args = ((64, 32), (0.1, 10.0), 0.5)
    assert intrinsics_problem(good, *args) == ""
    tiny = CameraIntrinsics(1, 1, k(1, 1, 0.5, 0.5), "cam")
    assert "smaller" in intrinsics_problem(tiny, *args)
    for bad, text in (
        (k(1e-30, 1266, 816, 491), "fx=1e-30"),
        (k(1266, 1e9, 816, 491), "fy=1e+09"),
        (k(1266, 1266, 1e6, 491), "principal point"),
        (k(1266, 1266, 816, -900), "principal point"),
        (k(1266, math.nan, 816, 491), "finite"),
        ((1266, 0, 816, 0, 1266, 491, 0, 0, 2.0), "last row"),
    ):
        assert text in intrinsics_problem(CameraIntrinsics(1600, 900, bad, "cam"), *args), bad


def sample(stamp_ms: int, x: float, yaw_deg: float = 0.0) -> Sample:
    h = math.radians(yaw_deg) / 2
    return Sample(stamp_ms * MS, (x, 0.0, 0.0), (0.0, 0.0, math.sin(h), math.cos(h)))


def test_a_sample_a_kilometre_off_is_refused_and_the_link_goes_on() -> None:
    guard = MotionGuard(70.0, 180.0)
    good = sample(20, 0.2)  # 10 m/s
    assert guard.check("base_link", good, sample(0, 0.0)) == ("", [])
    problem, restart = guard.check("base_link", sample(40, 1000.0), good)
    assert "moves 999.80 m in 20.0 ms" in problem and restart == []
    assert guard.check("base_link", sample(60, 0.6), good) == ("", [])
    problem, _ = guard.check("base_link", sample(80, 0.8, yaw_deg=90), sample(60, 0.6))
    assert "turns 90.0 deg" in problem


def test_three_consistent_refused_samples_are_an_odometry_reset() -> None:
    guard = MotionGuard(70.0, 180.0)
    last = sample(0, 0.0)
    assert guard.check("base_link", sample(20, 500.0), last)[0]
    assert guard.check("base_link", sample(40, 500.2), last)[0]
    problem, restart = guard.check("base_link", sample(60, 500.4), last)
    assert problem == "" and [s.translation[0] for s in restart] == [500.0, 500.2, 500.4]
    # A jump that does not stay (each suspect far from the one before) never resets
    guard2 = MotionGuard(70.0, 180.0)
    for i, x in enumerate((900.0, -900.0, 900.0, -900.0)):
        problem, restart = guard2.check("base_link", sample(20 * (i + 1), x), last)
        assert problem and not restart
