"""Our message definitions for ROS-free tools (rosbags): finds `Occupancy.msg` and registers it.
In: the installed share folder or the source checkout. Out: a rosbags Typestore with our types.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

OCCUPANCY_TYPE = "flashocc_ros/msg/Occupancy"


def occupancy_msg_path() -> Path:
    """Path of Occupancy.msg: the source checkout first, then every AMENT_PREFIX_PATH share."""
    candidates = [Path(__file__).resolve().parents[1] / "msg" / "Occupancy.msg"]
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            candidates.append(Path(prefix) / "share" / "flashocc_ros" / "msg" / "Occupancy.msg")
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        "Occupancy.msg not found in the source tree or any AMENT_PREFIX_PATH share folder"
    )


@cache
def flashocc_typestore() -> Typestore:
    """ROS 2 Jazzy typestore (incl. tf2_msgs) plus flashocc_ros/msg/Occupancy."""
    store = get_typestore(Stores.ROS2_JAZZY)
    store.register(get_types_from_msg(occupancy_msg_path().read_text(), OCCUPANCY_TYPE))
    return store
