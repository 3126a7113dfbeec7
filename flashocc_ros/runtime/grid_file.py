"""One grid as an Occ3D-style npz file, with what it was computed from (ROS-free).
In: an OccupancyResult (replay) or the arrays of an Occupancy message (recorder). Out: npz.

Keys: `semantics` (X, Y, Z) uint8 labels in Occ3D [x][y][z] order (what `tools.world evaluate`
reads) and, when known, `confidence` (X, Y, Z) uint8, `camera_names` (N,) str (key camera first),
`camera_stamps_ns` (N,) int64, `ego_pose` (4, 4) float64 odom <- ego at the grid's stamp (the
identity without odometry, as in the Occupancy message), `camera_poses` (N, 4, 4) float64 key
ego <- camera optical frame. The file is named `<stamp_ns>.npz` after the key camera's stamp.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from flashocc_ros.runtime.pipeline import OccupancyResult
from flashocc_ros.safe_io import save_npz


def result_arrays(result: OccupancyResult) -> dict[str, np.ndarray]:
    """The npz arrays of one pipeline result."""
    out = {"semantics": result.labels}
    if result.confidence is not None:
        out["confidence"] = result.confidence
    if result.camera_names:
        out["camera_names"] = np.asarray(result.camera_names, dtype=str)
        out["camera_stamps_ns"] = np.asarray(result.camera_stamps_ns, dtype=np.int64)
        pose = np.eye(4) if result.ego_pose is None else result.ego_pose
        out["ego_pose"] = np.asarray(pose, dtype=np.float64)
    if result.camera_poses is not None:
        out["camera_poses"] = np.asarray(result.camera_poses, dtype=np.float64)
    return out


def grid_path(folder: Path, stamp_ns: int) -> Path:
    """`<folder>/<stamp_ns>.npz`."""
    return folder / f"{stamp_ns}.npz"


def write_grid(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write one grid's arrays (compressed npz), atomically: a crash or a full disk leaves the
    whole file or none."""
    save_npz(path, arrays)
