"""TF buffer: interpolation, chain composition vs direct matrix products, errors, cache bounds.
In: random transforms (hypothesis). Out: pass/fail.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flashocc_ros.sensing.tf_buffer import (
    ConnectivityError,
    ExtrapolationError,
    TfBuffer,
    TransformError,
    UnknownFrameError,
    invert_transform,
    matrix_to_quaternion,
    quaternion_to_matrix,
    slerp,
    transform_matrix,
)

S = 1_000_000_000
coord = st.floats(-50.0, 50.0, allow_nan=False)
translations = st.tuples(coord, coord, coord)
quats = (
    st.tuples(*(st.floats(-1.0, 1.0, allow_nan=False) for _ in range(4)))
    .filter(lambda q: sum(v * v for v in q) > 0.05)
    .map(lambda q: tuple(np.asarray(q) / np.linalg.norm(q)))
)
FAST = settings(max_examples=40, deadline=None)


def qmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product of xyzw quaternions."""
    ax, ay, az, aw = a
    bx, by, bz, bw = b
    return np.array(
        [
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
            aw * bw - ax * bx - ay * by - az * bz,
        ]
    )


def geodesic(q0: np.ndarray, q1: np.ndarray, alpha: float) -> np.ndarray:
    """R0 @ exp(alpha * log(R0^T R1)) along the shorter arc, via a well-conditioned atan2."""
    rel = qmul(q0 * np.array([-1, -1, -1, 1]), q1)
    if rel[3] < 0:
        rel = -rel
    v = rel[:3]
    s = float(np.linalg.norm(v))
    angle = 2.0 * math.atan2(s, rel[3])
    axis = v / s if s > 1e-12 else np.array([1.0, 0.0, 0.0])
    half = alpha * angle / 2.0
    step = np.array([*(axis * math.sin(half)), math.cos(half)])
    return quaternion_to_matrix(qmul(q0, step))


@FAST
@given(t0=translations, t1=translations, q0=quats, q1=quats, alpha=st.floats(0.0, 1.0))
def test_interpolation_linear_translation_and_slerp(
    t0: tuple[float, ...],
    t1: tuple[float, ...],
    q0: tuple[float, ...],
    q1: tuple[float, ...],
    alpha: float,
) -> None:
    buf = TfBuffer()
    buf.set_transform("map", "ego", 10 * S, t0, q0)
    buf.set_transform("map", "ego", 11 * S, t1, q1)
    stamp = 10 * S + round(alpha * S)
    a = stamp / S - 10.0  # the alpha actually used after rounding to ns
    m = buf.lookup("map", "ego", stamp)
    np.testing.assert_allclose(m[:3, 3], np.add(t0, a * np.subtract(t1, t0)), atol=1e-6)
    r = m[:3, :3]
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-9)
    np.testing.assert_allclose(r, geodesic(np.asarray(q0), np.asarray(q1), a), atol=1e-6)


@FAST
@given(q0=quats, q1=quats)
def test_slerp_endpoints_and_unit_norm(q0: tuple[float, ...], q1: tuple[float, ...]) -> None:
    a, b = np.asarray(q0), np.asarray(q1)
    for alpha in (0.0, 0.3, 1.0):
        q = slerp(a, b, alpha)
        assert np.linalg.norm(q) == pytest.approx(1.0, abs=1e-9)
    # endpoints up to the sign ambiguity of quaternions
    for alpha, end in ((0.0, a), (1.0, b)):
        got = quaternion_to_matrix(slerp(a, b, alpha))
        np.testing.assert_allclose(got, quaternion_to_matrix(end), atol=1e-9)
    # nearly parallel quaternions take the normalised-lerp branch: still on the geodesic
    c = a + 1e-3 * np.array([0.3, -0.2, 0.1, 0.0])
    c /= np.linalg.norm(c)
    np.testing.assert_allclose(
        quaternion_to_matrix(slerp(a, c, 0.4)), geodesic(a, c, 0.4), atol=1e-7
    )


Edge = tuple[str, str, tuple[float, ...], tuple[float, ...]]  # parent, child, t, q


@st.composite
def trees(draw: st.DrawFn) -> tuple[list[Edge], list[str]]:
    """A random tree of 2..7 frames: edges parent <- child and the frame names (root first)."""
    n = draw(st.integers(2, 7))
    names = [f"f{i}" for i in range(n)]
    edges: list[Edge] = []
    for i in range(1, n):
        parent = names[draw(st.integers(0, i - 1))]
        edges.append((parent, names[i], draw(translations), draw(quats)))
    return edges, names


@FAST
@given(tree=trees(), data=st.data())
def test_chain_composition_matches_matrix_products(
    tree: tuple[list[Edge], list[str]], data: st.DataObject
) -> None:
    edges, names = tree
    buf = TfBuffer()
    world = {names[0]: np.eye(4)}  # root <- frame
    for k, (parent, child, t, q) in enumerate(edges):
        static = k % 2 == 0
        buf.set_transform(parent, child, 5 * S, t, q, static=static)
        world[child] = world[parent] @ transform_matrix(t, q)
    target = data.draw(st.sampled_from(names))
    source = data.draw(st.sampled_from(names))
    expected = invert_transform(world[target]) @ world[source]
    np.testing.assert_allclose(buf.lookup(target, source, 5 * S), expected, atol=1e-6)
    np.testing.assert_allclose(
        buf.lookup(source, target, 5 * S), np.linalg.inv(expected), atol=1e-6
    )


def test_static_never_expires_dynamic_is_pruned() -> None:
    buf = TfBuffer(cache_ns=2 * S)
    buf.set_transform("base_link", "cam", 0, (1, 0, 0), (0, 0, 0, 1), static=True)
    for k in range(100):
        buf.set_transform("odom", "base_link", k * S // 10, (k, 0, 0), (0, 0, 0, 1))
    link = buf._links["base_link"]
    assert link.stamps[0] >= link.stamps[-1] - 2 * S and len(link.stamps) <= 21
    m = buf.lookup("odom", "cam", 99 * S // 10)
    np.testing.assert_allclose(m[:3, 3], (100, 0, 0))
    with pytest.raises(ExtrapolationError, match="past"):
        buf.lookup("odom", "cam", 1 * S)
    buf.clear()
    assert buf.lookup("base_link", "cam", 123)[0, 3] == 1.0
    with pytest.raises(UnknownFrameError):
        buf.lookup("odom", "cam", 99 * S // 10)


def test_backward_jump_restarts_the_link_and_keeps_the_new_samples() -> None:
    buf = TfBuffer(cache_ns=20 * S)
    for k in range(101):  # 0 .. 10 s at 10 Hz, moving at 1 m/s
        buf.set_transform("odom", "base_link", k * S // 10, (k / 10, 0, 0), (0, 0, 0, 1))
    buf.set_transform("odom", "base_link", 9 * S, (50, 0, 0), (0, 0, 0, 1))  # late, not a jump
    assert buf.jumps == 0
    for k in range(3):  # the bag loops: 0.0, 0.1, 0.2 s again, 100 m further on
        buf.set_transform("odom", "base_link", k * S // 10, (100 + k / 10, 0, 0), (0, 0, 0, 1))
    assert buf.jumps == 1
    np.testing.assert_allclose(buf.lookup("odom", "base_link", S // 20)[:3, 3], (100.05, 0, 0))
    with pytest.raises(ExtrapolationError, match="future"):
        buf.lookup("odom", "base_link", 9 * S)  # the old loop's samples are gone


def test_max_samples_cap() -> None:
    buf = TfBuffer(cache_ns=1000 * S, max_samples_per_link=5)
    for k in range(50):
        buf.set_transform("odom", "base_link", k, (k, 0, 0), (0, 0, 0, 1))
    assert buf._links["base_link"].stamps == [45, 46, 47, 48, 49]


def test_errors_name_frames_and_times() -> None:
    buf = TfBuffer()
    buf.set_transform("odom", "base_link", 100, (0, 0, 0), (0, 0, 0, 1))
    buf.set_transform("odom", "base_link", 200, (1, 0, 0), (0, 0, 0, 1))
    buf.set_transform("other_root", "thing", 0, (0, 0, 0), (0, 0, 0, 1), static=True)
    with pytest.raises(UnknownFrameError, match="'nowhere'"):
        buf.lookup("odom", "nowhere", 150)
    with pytest.raises(ConnectivityError, match="not connected"):
        buf.lookup("thing", "base_link", 150)
    with pytest.raises(ExtrapolationError, match=r"future.*\[100, 200\]"):
        buf.lookup("odom", "base_link", 201)
    with pytest.raises(ExtrapolationError, match="past"):
        buf.lookup("base_link", "odom", 99)
    assert isinstance(ExtrapolationError("x"), LookupError)
    assert issubclass(UnknownFrameError, TransformError)
    assert buf.can_transform("odom", "base_link", 150)
    assert not buf.can_transform("odom", "base_link", 201)


def test_no_sample_is_held_extrapolation_is_explicit_and_bounded() -> None:
    """Beyond the samples a lookup fails unless extrapolation is asked for; then the motion of
    the two nearest samples goes on at constant velocity (translation and rotation), never a
    held edge sample, and only as far as allowed."""
    buf = TfBuffer()
    yaw = lambda a: (0.0, 0.0, math.sin(a / 2), math.cos(a / 2))  # noqa: E731
    buf.set_transform("odom", "base_link", 100, (0, 0, 0), yaw(0.0))
    buf.set_transform("odom", "base_link", 200, (1, 0, 0), yaw(0.1))
    m = buf.lookup("odom", "base_link", 250, extrapolate_ns=50)
    assert m[0, 3] == pytest.approx(1.5)
    assert math.atan2(m[1, 0], m[0, 0]) == pytest.approx(0.15)
    before = buf.lookup("odom", "base_link", 60, extrapolate_ns=50)
    assert before[0, 3] == pytest.approx(-0.4)
    with pytest.raises(ExtrapolationError, match=r"allowed: 0\.0 ms"):
        buf.lookup("odom", "base_link", 251, extrapolate_ns=50)
    single = TfBuffer()
    single.set_transform("odom", "base_link", 100, (0, 0, 0), (0, 0, 0, 1))
    with pytest.raises(ExtrapolationError):  # one sample: nothing to carry on
        single.lookup("odom", "base_link", 101, extrapolate_ns=10**9)
    assert single.lookup("odom", "base_link", 100)[0, 3] == 0.0


def test_latest_common_time_and_leading_slash() -> None:
    buf = TfBuffer()
    buf.set_transform("/map", "odom", 10, (0, 0, 0), (0, 0, 0, 1))
    buf.set_transform("map", "odom", 20, (2, 0, 0), (0, 0, 0, 1))
    buf.set_transform("odom", "base_link", 15, (0, 1, 0), (0, 0, 0, 1))
    np.testing.assert_allclose(buf.lookup("map", "base_link", 0)[:3, 3], (1, 1, 0))
    assert buf.frames() == {"map", "odom", "base_link"}


def test_out_of_order_insert_and_a_repeated_stamp_replaces() -> None:
    buf = TfBuffer()
    buf.set_transform("odom", "base_link", 300, (3, 0, 0), (0, 0, 0, 1))
    buf.set_transform("odom", "base_link", 100, (1, 0, 0), (0, 0, 0, 1))
    buf.set_transform("odom", "base_link", 200, (5, 0, 0), (0, 0, 0, 1))
    buf.set_transform("odom", "base_link", 200, (2, 0, 0), (0, 0, 0, 1))  # repeated: replaces
    assert buf.lookup("odom", "base_link", 250)[0, 3] == pytest.approx(2.5)
    assert buf.repeated == 1


def test_rejects_bad_input() -> None:
    buf = TfBuffer()
    with pytest.raises(ValueError, match="non-finite"):
        buf.set_transform("a", "b", 0, (0, 0, 0), (0, 0, 0, 0))
    with pytest.raises(ValueError, match="invalid frame"):
        buf.set_transform("a", "a", 0, (0, 0, 0), (0, 0, 0, 1))


@FAST
@given(q=quats)
def test_matrix_to_quaternion_inverts_quaternion_to_matrix(q: tuple[float, ...]) -> None:
    back = np.asarray(matrix_to_quaternion(quaternion_to_matrix(q)))
    assert back[3] >= 0 and abs(abs(float(back @ np.asarray(q))) - 1.0) < 1e-9  # q or -q
    for turn in (np.diag([1.0, -1.0, -1.0]), np.diag([-1.0, 1.0, -1.0]), np.diag([-1, -1, 1.0])):
        np.testing.assert_allclose(quaternion_to_matrix(matrix_to_quaternion(turn)), turn)


def test_a_frame_keeps_its_parent_and_no_loop_can_be_made() -> None:
    buf = TfBuffer()
    buf.set_transform("base_link", "cam", 0, (1, 0, 0), (0, 0, 0, 1), static=True)
    buf.set_transform("odom", "base_link", 10, (0, 0, 0), (0, 0, 0, 1))
    with pytest.raises(ValueError, match="already has the static parent 'base_link'"):
        buf.set_transform("0", "cam", 0, (0, 0, 0), (0, 0, 0, 1), static=True)
    with pytest.raises(ValueError, match="already has the static parent"):
        buf.set_transform("base_link", "cam", 10, (0, 0, 0), (0, 0, 0, 1))  # static -> dynamic
    with pytest.raises(ValueError, match="close a loop"):
        buf.set_transform("cam", "odom", 0, (0, 0, 0), (0, 0, 0, 1), static=True)
    assert buf.lookup("odom", "cam", 10)[0, 3] == 1.0
    buf.set_transform("base_link", "cam", 0, (2, 0, 0), (0, 0, 0, 1), static=True)  # recalibrated
    assert buf.lookup("odom", "cam", 10)[0, 3] == 2.0
