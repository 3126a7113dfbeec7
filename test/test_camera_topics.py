"""The cameras YAML: camera order, topics, raw vs compressed, and one-line errors for bad files.
In: YAML texts. Out: CameraTopics tuples or ConfigError messages.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from flashocc_ros.camera_topics import (
    CameraTopics,
    camera_topics_from_dict,
    camera_topics_yaml,
    default_camera_topics,
    load_camera_topics,
)
from flashocc_ros.config import ConfigError

AUTOWARE = """
cameras:
  - name: CAM_FRONT
    image: /sensing/camera/front/image_raw/compressed
    camera_info: /sensing/camera/front/camera_info
  - name: CAM_BACK
    image: /sensing/camera/back/image_raw
    camera_info: /sensing/camera/back/camera_info
  - name: cam_left
    image: /left/image
    camera_info: /left/info
    compressed: true
"""


def test_order_topics_and_compression_come_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "cameras.yaml"
    path.write_text(AUTOWARE)
    cams = load_camera_topics(path)
    assert [c.name for c in cams] == ["CAM_FRONT", "CAM_BACK", "cam_left"]
    assert cams[0] == CameraTopics(
        "CAM_FRONT",
        "/sensing/camera/front/image_raw/compressed",
        "/sensing/camera/front/camera_info",
        True,
    )
    assert cams[1].compressed is False and cams[2].compressed is True
    assert load_camera_topics_roundtrip(cams, tmp_path) == cams


def load_camera_topics_roundtrip(
    cams: tuple[CameraTopics, ...], tmp_path: Path
) -> tuple[CameraTopics, ...]:
    out = tmp_path / "again.yaml"
    out.write_text(camera_topics_yaml(cams))
    return load_camera_topics(out)


def test_defaults_name_the_project_bag_topics() -> None:
    cams = default_camera_topics(["CAM_FRONT", "CAM_BACK"], compressed=["CAM_BACK"])
    assert cams[0].image == "/cam_front/image_raw" and not cams[0].compressed
    assert cams[1].image == "/cam_back/image_raw/compressed" and cams[1].compressed
    assert cams[1].camera_info == "/cam_back/camera_info"


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({}, "'cameras' list"),
        ({"cameras": []}, "non-empty"),
        ({"cameras": ["CAM_FRONT"]}, "expected a mapping"),
        ({"cameras": [{"name": "A", "image": "/a"}]}, "missing camera_info"),
        ({"cameras": [{"name": "A", "image": "/a", "camera_info": "/b", "x": 1}]}, "unknown"),
        ({"cameras": [{"name": "A", "image": "a b", "camera_info": "/b"}]}, "not a topic"),
        ({"cameras": [{"name": "A", "image": 3, "camera_info": "/b"}]}, "not a topic"),
        ({"cameras": [{"name": "1A", "image": "/a", "camera_info": "/b"}]}, "letters"),
        (
            {"cameras": [{"name": "A", "image": "/a", "camera_info": "/b", "compressed": "y"}]},
            "true or false",
        ),
        (
            {
                "cameras": [
                    {"name": "A", "image": "/a", "camera_info": "/b"},
                    {"name": "a", "image": "/c", "camera_info": "/d"},
                ]
            },
            "unique",
        ),
    ],
)
def test_bad_files_say_what_is_wrong(data: object, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        camera_topics_from_dict(data)


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_camera_topics(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("cameras: [\n")
    with pytest.raises(ConfigError, match="cannot read"):
        load_camera_topics(bad)
