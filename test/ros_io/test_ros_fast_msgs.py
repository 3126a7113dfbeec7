"""Fast message construction vs the plain references: PointCloud2 and MarkerArray CDR bytes.
In: random voxels. Out: pass/fail, plus the measured marker speed-up (printed with -s).
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import pytest

pytest.importorskip("rclpy")

from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header
from visualization_msgs.msg import Marker, MarkerArray

from flashocc_ros.classes import CLASS_NAMES, PALETTE_RGB
from flashocc_ros.ros import fast_msgs as fm


def header(frame: str = "ego") -> Header:
    h = Header(frame_id=frame)
    h.stamp.sec, h.stamp.nanosec = 1_700_000_123, 456_789
    return h


def voxels(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    xyz = rng.uniform(-40, 40, (n, 3)).astype(np.float32)
    labels = rng.integers(0, 17, n).astype(np.uint8)
    return xyz, labels


def test_pointcloud_fast_equals_reference_and_reads_back() -> None:
    xyz, labels = voxels(257)
    rgb = PALETTE_RGB[labels]
    fast = fm.pointcloud2_from_voxels(header(), xyz, labels, rgb)
    ref = fm.pointcloud2_from_voxels_reference(header(), xyz, labels, rgb)
    assert fast == ref
    # (serialize_message leaves CDR padding uninitialised, so bytes are not compared here)
    assert (fast.width, fast.height, fast.point_step, fast.row_step) == (257, 1, 20, 257 * 20)
    assert [f.name for f in fast.fields] == ["x", "y", "z", "label", "rgb"]
    pts = fm.read_points(deserialize_message(serialize_message(fast), PointCloud2))
    np.testing.assert_array_equal(np.stack([pts["x"], pts["y"], pts["z"]], axis=1), xyz)
    np.testing.assert_array_equal(pts["label"], labels)
    packed = pts["rgb"].astype("<f4").view("<u4")  # PCL: float bits hold 0x00RRGGBB
    unpacked = np.stack([(packed >> 16) & 255, (packed >> 8) & 255, packed & 255], axis=1)
    np.testing.assert_array_equal(unpacked, rgb)


def test_pointcloud_empty_and_bad_shapes() -> None:
    empty = fm.pointcloud2_from_voxels(
        header(), np.zeros((0, 3), np.float32), np.zeros(0, np.uint8), np.zeros((0, 3), np.uint8)
    )
    assert empty.width == 0 and len(empty.data) == 0 and fm.read_points(empty).shape == (0,)
    with pytest.raises(ValueError, match=r"\(P, 3\)"):
        fm.pointcloud2_from_voxels(
            header(),
            np.zeros((4, 2), np.float32),
            np.zeros(4, np.uint8),
            np.zeros((4, 3), np.uint8),
        )


def test_read_points_big_endian_and_row_padding() -> None:
    msg = PointCloud2()
    msg.height, msg.width, msg.point_step, msg.row_step, msg.is_bigendian = 2, 2, 8, 20, True
    msg.fields = [
        PointField(name="a", offset=0, datatype=PointField.FLOAT32, count=1),
        PointField(name="b", offset=4, datatype=PointField.INT16, count=1),
    ]
    dt = np.dtype(
        {"names": ["a", "b"], "formats": [">f4", ">i2"], "offsets": [0, 4], "itemsize": 8}
    )
    row0 = np.array([(1.5, -2), (2.5, 3)], dtype=dt)
    row1 = np.array([(3.5, 4), (4.5, -5)], dtype=dt)
    msg.data = row0.tobytes() + bytes(4) + row1.tobytes() + bytes(4)
    pts = fm.read_points(msg)
    np.testing.assert_array_equal(pts["a"], [1.5, 2.5, 3.5, 4.5])
    np.testing.assert_array_equal(pts["b"], [-2, 3, 4, -5])


def fast_equals_reference(
    h: Header,
    xyz: np.ndarray,
    labels: np.ndarray,
    alpha: float = 1.0,
    max_voxels: int | None = None,
) -> None:
    writer = fm._voxel_markers_writer(
        h, xyz, labels, 0.4, CLASS_NAMES, PALETTE_RGB, alpha, max_voxels
    )
    fast = fm.voxel_markers_bytes(h, xyz, labels, 0.4, alpha=alpha, max_voxels=max_voxels)
    assert fast == writer.getvalue()
    ref = fm.voxel_markers_reference(h, xyz, labels, 0.4, alpha=alpha, max_voxels=max_voxels)
    assert deserialize_message(fast, MarkerArray) == ref
    ref_bytes = serialize_message(ref)
    assert len(fast) == len(ref_bytes)
    # byte for byte, except padding bytes (rmw leaves them uninitialised, we write zeros)
    patched = bytearray(fast)
    for i in writer.padding:
        patched[i] = ref_bytes[i]
    assert bytes(patched) == ref_bytes
    assert all(fast[i] == 0 for i in writer.padding)


@pytest.mark.parametrize("n", [0, 1, 5, 3000])
@pytest.mark.parametrize("frame", ["ego", "base_link_xyz"])  # two frame-id lengths: alignment
def test_markers_fast_bytes_equal_reference(n: int, frame: str) -> None:
    xyz, labels = voxels(n, seed=n)
    fast_equals_reference(header(frame), xyz, labels)


def test_markers_content() -> None:
    xyz, labels = voxels(500)
    msg = deserialize_message(fm.voxel_markers_bytes(header(), xyz, labels, 0.4), MarkerArray)
    first, rest = msg.markers[0], msg.markers[1:]
    assert first.action == Marker.DELETEALL and first.header.frame_id == "ego"
    assert [m.id for m in rest] == sorted(set(labels.tolist()))
    for m in rest:
        assert m.type == Marker.CUBE_LIST and m.action == Marker.ADD
        assert m.ns == CLASS_NAMES[m.id] and m.header == header()
        assert (m.scale.x, m.scale.y, m.scale.z) == pytest.approx((0.4, 0.4, 0.4))
        want = PALETTE_RGB[m.id] / 255.0
        assert (m.color.r, m.color.g, m.color.b, m.color.a) == pytest.approx((*want, 1.0))
        assert m.pose.orientation.w == 1.0
        pts = np.array([(p.x, p.y, p.z) for p in m.points], dtype=np.float32)
        np.testing.assert_array_equal(pts, xyz[labels == m.id])


def test_markers_cap_alpha_and_label_check() -> None:
    xyz, labels = voxels(1000, seed=9)
    fast_equals_reference(header(), xyz, labels, max_voxels=100, alpha=0.5)
    msg = deserialize_message(
        fm.voxel_markers_bytes(header(), xyz, labels, 0.4, max_voxels=100), MarkerArray
    )
    assert sum(len(m.points) for m in msg.markers) == 100
    with pytest.raises(ValueError, match="label 18"):
        fm.voxel_markers_bytes(header(), xyz[:1], np.array([18], np.uint8), 0.4)


def test_scratch_reuse_across_sizes_and_threads() -> None:
    import threading

    results: dict[int, bytes] = {}
    inputs = {seed: voxels(n, seed) for seed, n in ((1, 300), (2, 50), (3, 300), (4, 900))}
    expected = {
        seed: fm.voxel_markers_reference(header(), xyz, lab, 0.4)
        for seed, (xyz, lab) in inputs.items()
    }

    def work(seed: int) -> None:
        xyz, lab = inputs[seed]
        for _ in range(3):
            results[seed] = fm.voxel_markers_bytes(header(), xyz, lab, 0.4)

    threads = [threading.Thread(target=work, args=(s,)) for s in inputs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for seed in inputs:
        work(seed)  # sequential: the scratch shrinks and grows in one thread
        assert deserialize_message(results[seed], MarkerArray) == expected[seed]


def median_s(fn: object, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def test_marker_speedup_40k() -> None:
    xyz, labels = voxels(40_000)
    h = header()
    naive = median_s(lambda: fm.voxel_markers_reference(h, xyz, labels, 0.4), 3)
    naive_ser = median_s(
        lambda: serialize_message(fm.voxel_markers_reference(h, xyz, labels, 0.4)), 3
    )
    fast = median_s(lambda: fm.voxel_markers_bytes(h, xyz, labels, 0.4), 21)
    print(
        f"\n40k voxels: naive build {naive * 1e3:.1f} ms, naive build+serialise "
        f"{naive_ser * 1e3:.1f} ms, fast bytes {fast * 1e3:.2f} ms: {naive / fast:.0f}x "
        f"(build), {naive_ser / fast:.0f}x (build+serialise)"
    )
    assert naive / fast > 10  # loose: the machine is shared


def test_publish_serialized_bytes_over_dds() -> None:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    xyz, labels = voxels(2000)
    payload = fm.voxel_markers_bytes(header(), xyz, labels, 0.4)
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    try:
        node = rclpy.create_node("fast_msgs_test", context=ctx)
        got: list[MarkerArray] = []
        topic = "fast_msgs_test_markers"
        node.create_subscription(MarkerArray, topic, got.append, 10)
        pub = node.create_publisher(MarkerArray, topic, 10)
        executor = SingleThreadedExecutor(context=ctx)
        executor.add_node(node)
        deadline = time.monotonic() + 10.0
        while not got and time.monotonic() < deadline:
            pub.publish(payload)
            executor.spin_once(timeout_sec=0.1)
        assert got, "no message received"
        assert got[0] == deserialize_message(payload, MarkerArray)
        executor.shutdown()
        node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)
