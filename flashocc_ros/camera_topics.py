"""Which topic carries each camera: one YAML shared by the launch files, the node and replay.
In: a cameras YAML file (or camera names). Out: `CameraTopics` per camera, in the model's order.

A rig is described once, in the file a user keeps beside their parameter file:

    cameras:                      # model order; the first camera is the key camera
      - name: CAM_FRONT_LEFT
        image: /sensing/camera/front_left/image_raw/compressed
        camera_info: /sensing/camera/front_left/camera_info
      - name: CAM_FRONT
        image: /sensing/camera/front/image_raw   # sensor_msgs/Image
        camera_info: /sensing/camera/front/camera_info

`compressed` may be given per camera; by default an image topic whose last part is
`compressed` carries `sensor_msgs/CompressedImage`, any other `sensor_msgs/Image`. The launch file
turns this into the node's `camera_names` / `compressed_cameras` parameters and one remapping
per input; `tools.replay --cameras FILE` reads the same file to find the topics in a bag.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from flashocc_ros.config import ConfigError

#: A ROS 2 topic name as a user writes it in a file: absolute, or relative / private to the node.
_TOPIC = re.compile(r"^[~/]?[A-Za-z_{][A-Za-z0-9_{}/]*$")


@dataclass(frozen=True)
class CameraTopics:
    """One camera: its name in the model's order and the two topics it arrives on."""

    name: str  # camera name, e.g. CAM_FRONT (node inputs: ~/input/<name lower>/...)
    image: str  # sensor_msgs/Image or, when `compressed`, sensor_msgs/CompressedImage topic
    camera_info: str  # sensor_msgs/CameraInfo topic
    compressed: bool  # True: `image` carries sensor_msgs/CompressedImage


def default_image_topic(camera: str, compressed: bool = False) -> str:
    """`/<camera lower>/image_raw` (+ `/compressed`): the topic names of the project's bags."""
    return f"/{camera.lower()}/image_raw" + ("/compressed" if compressed else "")


def default_camera_topics(
    names: Sequence[str], compressed: Iterable[str] = ()
) -> tuple[CameraTopics, ...]:
    """Topics `/<name lower>/image_raw[/compressed]` and `/<name lower>/camera_info`."""
    packed = set(compressed)
    return tuple(
        CameraTopics(
            n, default_image_topic(n, n in packed), f"/{n.lower()}/camera_info", n in packed
        )
        for n in names
    )


def is_compressed_topic(topic: str) -> bool:
    """True when the last part of `topic` is `compressed` (image_transport's naming)."""
    return topic.rstrip("/").rsplit("/", 1)[-1] == "compressed"


def _topic(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _TOPIC.match(value) or "//" in value:
        raise ConfigError(f"{where}: {value!r} is not a topic name")
    return value


def camera_topics_from_dict(data: Any, source: str = "cameras") -> tuple[CameraTopics, ...]:
    """`{cameras: [{name, image, camera_info[, compressed]}, ...]}` -> CameraTopics per camera."""
    if not isinstance(data, Mapping) or "cameras" not in data:
        raise ConfigError(f"{source}: expected a mapping with a 'cameras' list")
    cams = data["cameras"]
    if not isinstance(cams, list) or not cams:
        raise ConfigError(f"{source}: 'cameras' must be a non-empty list")
    out: list[CameraTopics] = []
    for i, entry in enumerate(cams):
        where = f"{source}: camera #{i}"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where}: expected a mapping with name, image, camera_info")
        unknown = sorted(set(entry) - {"name", "image", "camera_info", "compressed"})
        if unknown:
            raise ConfigError(f"{where}: unknown keys {unknown}")
        missing = [k for k in ("name", "image", "camera_info") if k not in entry]
        if missing:
            raise ConfigError(f"{where}: missing {', '.join(missing)}")
        name = entry["name"]
        if not isinstance(name, str) or not re.match(r"^[A-Za-z][A-Za-z0-9_]*$", name):
            raise ConfigError(f"{where}: name {name!r} must be letters, digits and _")
        image = _topic(entry["image"], f"{where} ({name}) image")
        info = _topic(entry["camera_info"], f"{where} ({name}) camera_info")
        compressed = entry.get("compressed", is_compressed_topic(image))
        if not isinstance(compressed, bool):
            raise ConfigError(f"{where} ({name}): compressed must be true or false")
        out.append(CameraTopics(name, image, info, compressed))
    lowered = [c.name.lower() for c in out]
    if len(set(lowered)) != len(lowered):
        raise ConfigError(f"{source}: camera names must be unique (case-insensitive)")
    return tuple(out)


def load_camera_topics(path: str | Path) -> tuple[CameraTopics, ...]:
    """Read a cameras YAML file (format in the module docstring)."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read cameras file {path}: {err}") from err
    return camera_topics_from_dict(data, str(path))


def camera_topics_yaml(cameras: Sequence[CameraTopics]) -> str:
    """The cameras YAML text for `cameras` (what `load_camera_topics` reads back)."""
    body = [
        {"name": c.name, "image": c.image, "camera_info": c.camera_info}
        | ({"compressed": c.compressed} if c.compressed != is_compressed_topic(c.image) else {})
        for c in cameras
    ]
    return yaml.safe_dump({"cameras": body}, sort_keys=False)


def _input_key(name: str, node_name: str) -> tuple[str, str] | None:
    """('cam_front', 'image' | 'camera_info') for a node input name as a remap rule writes it:
    `~/input/cam_front/image` or `/<namespace>/<node>/input/cam_front/image`; else None."""
    if name.startswith("~/"):
        rest = name[2:]
    else:
        parts = name.strip("/").split("/")
        if node_name not in parts:
            return None
        rest = "/".join(parts[parts.index(node_name) + 1 :])
    parts = rest.split("/")
    if len(parts) != 3 or parts[0] != "input" or parts[2] not in ("image", "camera_info"):
        return None
    return parts[1], parts[2]


def apply_remaps(
    cameras: Sequence[CameraTopics], remaps: Sequence[str], node_name: str = "flashocc"
) -> tuple[CameraTopics, ...]:
    """The cameras' topics after `FROM:=TO` rules, as `--ros-args -r` gives them to the node.

    FROM names a node input (`~/input/<camera lower>/image` or `.../camera_info`, or the same
    under `/<namespace>/<node>/`; a `<node>:` prefix is allowed); an image topic whose last part
    is `compressed` carries CompressedImage. ConfigError names a rule that matches no input.
    """
    by_low = {c.name.lower(): c for c in cameras}
    for rule in remaps:
        src, sep, dst = rule.partition(":=")
        if not sep or not src or not dst:
            raise ConfigError(f"remap {rule!r}: expected FROM:=TO")
        if src.startswith(f"{node_name}:"):
            src = src[len(node_name) + 1 :]
        key = _input_key(src, node_name)
        if key is None or key[0] not in by_low:
            valid = ", ".join(f"~/input/{low}/image" for low in by_low)
            raise ConfigError(
                f"remap {rule!r}: {src} is not an input of the node (inputs: {valid} and their "
                "camera_info)"
            )
        dst = _topic(dst, f"remap {rule!r}")
        cam = by_low[key[0]]
        if key[1] == "image":
            cam = CameraTopics(cam.name, dst, cam.camera_info, is_compressed_topic(dst))
        else:
            cam = CameraTopics(cam.name, cam.image, dst, cam.compressed)
        by_low[key[0]] = cam
    return tuple(by_low[c.name.lower()] for c in cameras)
