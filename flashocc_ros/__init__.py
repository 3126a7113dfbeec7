"""flashocc_ros: FlashOCC camera-only occupancy (ROS-free core; the node layer is `ros/`).

The generated messages (`flashocc_ros.msg`) live in the colcon install tree, beside a copy of
this package. `extend_path` merges every `flashocc_ros` folder on sys.path, so with the source
checkout first on sys.path (pytest, `python -m` from the checkout) and `scripts/env.sh`
sourced, `import flashocc_ros.config` is the checkout's and `flashocc_ros.msg` still imports.
"""

from __future__ import annotations

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
