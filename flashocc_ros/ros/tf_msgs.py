"""The tf2_msgs/TFMessage type: the real one where ROS provides it, else our test shim package.
In: nothing. Out: `TFMessage` (a generated rclpy message class with `transforms`).
"""

from __future__ import annotations

try:
    from tf2_msgs.msg import TFMessage
except ImportError as err:  # pragma: no cover - depends on the installation
    raise ImportError(
        "tf2_msgs is not importable: on a ROS 2 machine install ros-<distro>-tf2-msgs; in this "
        "repository run scripts/setup.sh, which builds a minimal tf2_msgs for tests"
    ) from err

__all__ = ["TFMessage"]
