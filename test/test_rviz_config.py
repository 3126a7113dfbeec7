"""config/flashocc.rviz, checked without RViz: it parses, shows every node output and the six
cameras on the right topics, in the ego frame. In: the file, the node's source, cameras.yaml.
Out: pass/fail.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from flashocc_ros.camera_topics import load_camera_topics
from flashocc_ros.node_config import NodeConfig

ROOT = Path(__file__).resolve().parents[1]
NODE = "flashocc"  # the node's name in launch/flashocc.launch.py
#: Node output -> the RViz display that shows it.
OUTPUT_DISPLAYS = {
    "markers": "rviz_default_plugins/MarkerArray",
    "points": "rviz_default_plugins/PointCloud2",
    "bev_image": "rviz_default_plugins/Image",
}
KNOWN_CLASSES = {
    "rviz_default_plugins/Grid",
    "rviz_default_plugins/TF",
    *OUTPUT_DISPLAYS.values(),
}


def _displays() -> list[dict[str, Any]]:
    config = yaml.safe_load((ROOT / "config" / "flashocc.rviz").read_text())
    displays: list[dict[str, Any]] = config["Visualization Manager"]["Displays"]
    return displays


def test_fixed_frame_is_the_ego_frame_of_the_grids() -> None:
    config = yaml.safe_load((ROOT / "config" / "flashocc.rviz").read_text())
    assert config["Visualization Manager"]["Global Options"]["Fixed Frame"] == (
        NodeConfig().ego_frame
    )


def test_every_display_is_a_known_rviz_plugin_with_a_unique_name() -> None:
    displays = _displays()
    assert {d["Class"] for d in displays} <= KNOWN_CLASSES
    names = [d["Name"] for d in displays]
    assert len(set(names)) == len(names)


def test_node_outputs_are_shown_on_the_topics_the_node_publishes() -> None:
    node_source = (ROOT / "flashocc_ros" / "ros" / "node.py").read_text()
    published = set(re.findall(r'"~/output/(\w+)"', node_source))
    by_topic = {d["Topic"]["Value"]: d for d in _displays() if "Topic" in d}
    for output, cls in OUTPUT_DISPLAYS.items():
        assert output in published, f"the node no longer publishes ~/output/{output}"
        display = by_topic[f"/{NODE}/output/{output}"]
        assert display["Class"] == cls
    enabled = {d["Topic"]["Value"] for d in _displays() if "Topic" in d and d["Enabled"]}
    assert {f"/{NODE}/output/markers", f"/{NODE}/output/bev_image"} <= enabled


def test_the_six_cameras_are_shown_on_the_default_cameras_file_topics() -> None:
    cameras = load_camera_topics(ROOT / "config" / "cameras.yaml")
    images = [
        d
        for d in _displays()
        if d["Class"] == "rviz_default_plugins/Image" and "/output/" not in d["Topic"]["Value"]
    ]
    assert [(d["Name"], d["Topic"]["Value"]) for d in images] == [
        (c.name, c.image) for c in cameras
    ]
    assert len(images) == 6 and all(d["Enabled"] for d in images)
