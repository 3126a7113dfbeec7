"""The project's TF buffer answers like tf2_ros.Buffer: same transforms, same refusals.
In: random trees of dynamic and static links, random lookup stamps. Out: pass/fail.

The node and the offline replay share `TfBuffer` (ROS-free, so replay needs no ROS install, and
both give bit-identical poses); this test holds it to the semantics of the real tf2 buffer.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from flashocc_ros.sensing.tf_buffer import TfBuffer, TransformError, quaternion_to_matrix

tf2_ros = pytest.importorskip(
    "tf2_ros", reason="tf2_ros not built here (make setup builds it from ../shared/ros2-kit)"
)

S = 1_000_000_000
coord = st.floats(-30.0, 30.0, allow_nan=False)
unit_quats = (
    st.tuples(*(st.floats(-1.0, 1.0, allow_nan=False) for _ in range(4)))
    .filter(lambda q: sum(v * v for v in q) > 0.05)
    .map(lambda q: tuple(float(v) for v in np.asarray(q) / np.linalg.norm(q)))
)


def _msg(parent: str, child: str, stamp: int, t: tuple, q: tuple):  # type: ignore[no-untyped-def]
    from geometry_msgs.msg import TransformStamped

    m = TransformStamped()
    m.header.frame_id, m.child_frame_id = parent, child
    m.header.stamp.sec, m.header.stamp.nanosec = divmod(stamp, S)
    tr, rot = m.transform.translation, m.transform.rotation
    tr.x, tr.y, tr.z = t
    rot.x, rot.y, rot.z, rot.w = q
    return m


def _matrix(ts) -> np.ndarray:  # type: ignore[no-untyped-def]
    tr, q = ts.transform.translation, ts.transform.rotation
    m = np.eye(4)
    m[:3, :3] = quaternion_to_matrix((q.x, q.y, q.z, q.w))
    m[:3, 3] = (tr.x, tr.y, tr.z)
    return m


@settings(max_examples=40, deadline=None)
@given(
    samples=st.lists(
        st.tuples(st.integers(0, 9 * S // 10), coord, coord, unit_quats), min_size=2, max_size=12
    ),
    static_t=st.tuples(coord, coord, coord),
    static_q=unit_quats,
    queries=st.lists(st.integers(-S // 10, S), min_size=1, max_size=10),
)
def test_lookups_agree_with_tf2(
    samples: list[tuple[int, float, float, tuple]],
    static_t: tuple,
    static_q: tuple,
    queries: list[int],
) -> None:
    from rclpy.duration import Duration
    from rclpy.time import Time

    # One sample per stamp: tf2 keeps repeated stamps side by side and answers with either.
    assume(len({s[0] for s in samples}) == len(samples))
    by_stamp = dict(sorted((s[0], s) for s in samples))
    ordered = [np.asarray(s[3]) for s in by_stamp.values()]
    # Neighbouring samples half a turn apart have no shorter arc: tf2 and we may each pick a side.
    assume(all(abs(float(a @ b)) > 0.2 for a, b in itertools.pairwise(ordered)))
    stamp0 = 1_700_000_000 * S
    ours = TfBuffer()
    ref = tf2_ros.Buffer(cache_time=Duration(seconds=100))
    for stamp, x, y, q in samples:
        t = (x, y, 0.5)
        ours.set_transform("odom", "base_link", stamp0 + stamp, t, q)
        ref.set_transform(_msg("odom", "base_link", stamp0 + stamp, t, q), "test")
    ours.set_transform("base_link", "cam_optical", 0, static_t, static_q, static=True)
    ref.set_transform_static(_msg("base_link", "cam_optical", 0, static_t, static_q), "test")
    for q_stamp in queries:
        stamp = stamp0 + q_stamp
        for target, source in (
            ("odom", "base_link"),
            ("odom", "cam_optical"),
            ("cam_optical", "odom"),
        ):
            try:
                expected = _matrix(ref.lookup_transform(target, source, Time(nanoseconds=stamp)))
            except tf2_ros.ExtrapolationException:
                with pytest.raises(TransformError):
                    ours.lookup(target, source, stamp)
                continue
            got = ours.lookup(target, source, stamp)
            np.testing.assert_allclose(got[:3, 3], expected[:3, 3], atol=1e-6)
            # rotation: angle of R_got^T R_expected
            rel = got[:3, :3].T @ expected[:3, :3]
            angle = math.degrees(math.acos(max(-1.0, min(1.0, (np.trace(rel) - 1) / 2))))
            assert angle < 1e-4
