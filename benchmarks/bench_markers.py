"""Row group 3: RViz output for a 40,000-voxel frame, our numpy/CDR path vs naive rclpy objects.
In: 40,000 distinct random voxels of a 200 x 200 x 16 grid (17 classes). Out: speed-up rows.

* MarkerArray: `fast_msgs.voxel_markers_bytes` (serialised CDR, published as bytes) vs
  `voxel_markers_reference` (Marker + geometry_msgs/Point objects) + `serialize_message`, which
  is what `publisher.publish(msg)` does before handing bytes to DDS; also vs the object
  construction alone.
* PointCloud2: `pointcloud2_from_voxels` (structured numpy array) vs the per-point
  `struct.pack` reference, each + `serialize_message`.
Needs rclpy and visualization_msgs (`source scripts/env.sh`); skipped with the reason otherwise.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks.common import Row, compare, skipped_row
from flashocc_ros.classes import FREE_LABEL, PALETTE_RGB
from flashocc_ros.config import GridConfig
from flashocc_ros.sensing.voxels import occupancy_voxels

GROUP = "3 markers"
NUM_VOXELS = 40_000


def frame_voxels(count: int = NUM_VOXELS) -> tuple[np.ndarray, np.ndarray]:
    """(P, 3) float32 centres and (P,) uint8 labels of `count` occupied voxels of a grid."""
    grid = GridConfig()
    rng = np.random.default_rng(0)
    labels = np.full(grid.shape, FREE_LABEL, dtype=np.uint8)  # (X, Y, Z)
    flat = rng.choice(labels.size, count, replace=False)
    labels.reshape(-1)[flat] = rng.integers(0, FREE_LABEL, count)
    return occupancy_voxels(labels, grid, FREE_LABEL)


def ros_modules() -> tuple[Any, Any, Any] | str:
    """(fast_msgs, serialize_message, Header) or the reason they cannot be imported."""
    try:
        from rclpy.serialization import serialize_message
        from std_msgs.msg import Header

        from flashocc_ros.ros import fast_msgs
    except ImportError as err:
        return f"skipped: rclpy/visualization_msgs not importable ({err}); source scripts/env.sh"
    return fast_msgs, serialize_message, Header


def check_markers(fm: Any, header: Any, xyz: np.ndarray, labels: np.ndarray, size: float) -> None:
    """Our bytes decode to exactly the reference message (padding bytes are not compared)."""
    from rclpy.serialization import deserialize_message
    from visualization_msgs.msg import MarkerArray

    ours = deserialize_message(fm.voxel_markers_bytes(header, xyz, labels, size), MarkerArray)
    if ours != fm.voxel_markers_reference(header, xyz, labels, size):
        raise RuntimeError("voxel_markers_bytes disagrees with voxel_markers_reference")


def run(quick: bool, repeats: int) -> list[Row]:
    mods = ros_modules()
    if isinstance(mods, str):
        return [
            skipped_row(GROUP, "MarkerArray bytes", "rclpy objects", mods, ">= 40"),
            skipped_row(GROUP, "PointCloud2 numpy", "per-point struct", mods),
        ]
    fm, serialize, Header = mods
    header = Header(frame_id="base_link")
    header.stamp.sec, header.stamp.nanosec = 1_700_000_000, 5
    xyz, labels = frame_voxels()
    rgb = PALETTE_RGB[labels]
    size = 0.4
    check_markers(fm, header, xyz, labels, size)
    ms = compare(
        {
            "markers": lambda: fm.voxel_markers_bytes(header, xyz, labels, size),
            "markers_objects": lambda: fm.voxel_markers_reference(header, xyz, labels, size),
            "markers_naive": lambda: serialize(
                fm.voxel_markers_reference(header, xyz, labels, size)
            ),
            "cloud": lambda: serialize(fm.pointcloud2_from_voxels(header, xyz, labels, rgb)),
            "cloud_naive": lambda: serialize(
                fm.pointcloud2_from_voxels_reference(header, xyz, labels, rgb)
            ),
        },
        repeats,
    )
    extra = {"voxels": len(xyz)}
    return [
        Row(
            GROUP,
            "MarkerArray CDR bytes (voxel_markers_bytes)",
            "Marker/Point objects + serialize_message",
            ms["markers"],
            ms["markers_naive"],
            ms["markers_naive"] / ms["markers"],
            "speedup",
            ">= 40",
            extra=extra,
        ),
        Row(
            GROUP,
            "MarkerArray CDR bytes (voxel_markers_bytes)",
            "Marker/Point objects only (not yet serialised)",
            ms["markers"],
            ms["markers_objects"],
            ms["markers_objects"] / ms["markers"],
            "speedup",
            extra=extra,
        ),
        Row(
            GROUP,
            "PointCloud2 numpy + serialize",
            "per-point struct.pack + serialize",
            ms["cloud"],
            ms["cloud_naive"],
            ms["cloud_naive"] / ms["cloud"],
            "speedup",
            extra=extra,
        ),
    ]
