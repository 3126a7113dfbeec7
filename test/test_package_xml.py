"""A workspace install gets every dependency: package.xml names each import by its rosdep key,
requirements-workspace.txt pins the pip side. In: the sources' imports, package.xml, the
requirements files. Out: pass/fail, naming what is missing.
"""

from __future__ import annotations

import ast
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [
    *sorted((ROOT / "flashocc_ros").rglob("*.py")),
    *sorted((ROOT / "launch").glob("*.py")),
    *sorted((ROOT / "scripts" / "ros").iterdir()),
]
#: Python import -> (rosdep key or None, pip distribution or None). The keys were looked up in
#: ros/rosdistro rosdep/python.yaml (commit 8468e88c, 2026-08-22); `*-pip` where only pip has it.
#: pip None: apt's ROS brings it. rosdep None: no key exists, only the requirements file has it.
PYTHON_DEPENDENCIES: dict[str, tuple[str | None, str | None]] = {
    "numpy": ("python3-numpy", "numpy"),
    "yaml": ("python3-yaml", None),
    "cv2": ("python3-opencv", "opencv-python-headless"),
    "PIL": ("python3-pil", "pillow"),
    "tqdm": ("python3-tqdm", "tqdm"),
    "torch": ("python3-torch", "torch"),
    "rosbags": ("python3-rosbags-pip", "rosbags"),
    "safetensors": (None, "safetensors"),
}
#: Python imports that are ROS 2 packages of the same name (all in jazzy/distribution.yaml).
ROS_PACKAGES = {
    "rclpy", "rcl_interfaces", "std_msgs", "geometry_msgs", "sensor_msgs", "visualization_msgs",
    "diagnostic_msgs", "tf2_msgs", "rosgraph_msgs", "launch", "launch_ros", "ament_index_python",
}  # fmt: skip
#: Imported only on optional paths, each guarded where it is used.
OPTIONAL = {
    "onnx": "ONNX export (tools.export)",
    "onnxruntime": "the onnxruntime backend",
    "tensorrt": "the TensorRT backend (NVIDIA's wheels)",
    "typing_extensions": "the TensorRT builder only",
}


def third_party_imports() -> dict[str, str]:
    """Top-level module -> first file importing it, over the package, launch files, launchers."""
    found: dict[str, str] = {}
    for path in SOURCES:
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in (
                    "flashocc_ros",
                    "__future__",
                ):
                    found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def declared() -> set[str]:
    root = ET.parse(ROOT / "package.xml").getroot()
    tags = ("depend", "exec_depend", "build_depend", "buildtool_depend")
    return {el.text.strip() for tag in tags for el in root.iter(tag) if el.text}


def pinned(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==(\S+)", line.strip())
        if match:
            out[match.group(1).lower().replace("_", "-")] = match.group(2)
    return out


def test_every_import_is_known() -> None:
    unknown = {
        module: where
        for module, where in third_party_imports().items()
        if module not in PYTHON_DEPENDENCIES and module not in ROS_PACKAGES
        and module not in OPTIONAL
    }  # fmt: skip
    assert not unknown, f"add these imports to package.xml and this test: {unknown}"


def test_package_xml_declares_every_import_by_its_rosdep_key() -> None:
    deps = declared()
    imports = third_party_imports()
    missing = [
        f"{module} ({imports[module]}) -> {key}"
        for module in imports
        for key in [PYTHON_DEPENDENCIES.get(module, (module, None))[0]]
        if module not in OPTIONAL and key is not None and key not in deps
    ]
    assert not missing, f"package.xml lacks: {missing}"


def test_workspace_requirements_have_the_pip_side_and_no_ros() -> None:
    req = pinned(ROOT / "requirements-workspace.txt")
    wanted = {pip for _, pip in PYTHON_DEPENDENCIES.values() if pip is not None}
    assert not wanted - set(req), f"requirements-workspace.txt lacks {wanted - set(req)}"
    assert req["numpy"].startswith("1.26."), "Ubuntu 24.04 (apt's ROS 2 Jazzy) has numpy 1.26"
    ros = sorted(n for n in req if n.startswith("ros-") or n in ("rclpy", "empy", "lark-parser"))
    assert not ros, f"ROS packages would shadow apt's: {ros}"


def test_self_contained_requirements_use_the_same_versions_where_numpy_allows() -> None:
    # requirements.txt (numpy 2) and requirements-workspace.txt (numpy 1.26) pin the same
    # versions except where a release needs numpy 2; those are listed here with that reason.
    numpy2_only = {"numpy", "opencv-python-headless", "ml-dtypes"}
    full = pinned(ROOT / "requirements.txt")
    work = pinned(ROOT / "requirements-workspace.txt")
    differ = {n: (full.get(n), v) for n, v in work.items() if full.get(n) != v}
    assert set(differ) == numpy2_only, differ
