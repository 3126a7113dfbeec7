"""Node parameters: one frozen dataclass that is the single source of truth (ROS-free).
In: a mapping (ROS parameters or YAML). Out: a validated `NodeConfig`, its YAML, JSON schema, docs.

`config/flashocc.param.yaml`, `config/flashocc.schema.json` and the README parameter table are
generated from `NodeConfig` (`python -m flashocc_ros.node_config`) and a test keeps them in sync.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from flashocc_ros.config import NUSCENES_CAMERAS, ConfigError

_ENUMS: dict[str, tuple[str, ...]] = {
    "backend": ("auto", "torch", "onnxruntime", "tensorrt"),
    "precision": ("fp32", "fp16", "bf16", "int8"),
    "input_reliability": ("best_effort", "reliable"),
    "tf_reliability": ("best_effort", "reliable"),
    "output_reliability": ("best_effort", "reliable"),
    "engine_mismatch": ("refuse", "rebuild"),
}
_ENUMS["sync_missing"] = ("drop", "fill")
_MIN: dict[str, float] = {
    "sync_tolerance_s": 0.001,
    "sync_timeout_s": 0.01,
    "sync_fill_tolerance_s": 0.001,
    "history_spacing_s": 0.05,
    "history_max_gap_s": 0.1,
    "tf_extrapolation_s": 0.0,
    "tf_timeout_s": 0.0,
    "input_queue_depth": 1,
    "output_queue_depth": 1,
    "marker_max_voxels": 0,
    "max_image_pixels": 1,
    "diagnostics_period_s": 0.1,
    "health_late_s": 0.05,
    "health_missing_s": 0.1,
    "health_recovery_s": 0.0,
    "latency_warn_s": 0.001,
    "startup_watchdog_s": 0.1,
    "min_image_scale": 0.0,
    "principal_point_margin_rel": 0.0,
    "tf_max_speed_mps": 0.1,
    "tf_max_angular_rate_dps": 0.1,
    "max_stamp_skew_s": 0.0,
    "max_stamp_age_s": 0.0,
}


#: Upper bounds: beyond them a value is a mistake (a timeout of hours, a tolerance of a second).
_MAX: dict[str, float] = {
    "sync_tolerance_s": 0.25,
    "sync_timeout_s": 10.0,
    "sync_fill_tolerance_s": 0.5,
    "tf_timeout_s": 10.0,
    "tf_extrapolation_s": 1.0,
    "history_spacing_s": 10.0,
    "history_max_gap_s": 60.0,
    "diagnostics_period_s": 60.0,
    "input_queue_depth": 1000,
    "output_queue_depth": 1000,
    "health_late_s": 600.0,
    "health_missing_s": 3600.0,
    "health_recovery_s": 600.0,
    "latency_warn_s": 600.0,
    "startup_watchdog_s": 3600.0,
    "min_image_scale": 1.0,
    "principal_point_margin_rel": 10.0,
    "tf_max_speed_mps": 1e4,
    "tf_max_angular_rate_dps": 1e5,
    "max_stamp_skew_s": 3600.0,
    "max_stamp_age_s": 1e9,
}


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


@dataclass(frozen=True)
class NodeConfig:
    """Parameters of the flashocc node (names are the ROS parameter names)."""

    camera_names: tuple[str, ...] = field(
        default=NUSCENES_CAMERAS,
        metadata=_doc(
            "Cameras in the model's order; each subscribes ~/input/<name lower>/image and "
            "~/input/<name lower>/camera_info (remap them in the launch file)."
        ),
    )
    compressed_cameras: tuple[str, ...] = field(
        default=(),
        metadata=_doc(
            "Cameras whose ~/input/<name lower>/image is a sensor_msgs/CompressedImage (jpeg or "
            "png; remap it to e.g. /cam/image_raw/compressed) instead of a sensor_msgs/Image."
        ),
    )
    model_config: str = field(
        default="demo", metadata=_doc("Model preset name or path to a model YAML file.")
    )
    weights: str = field(
        default="",
        metadata=_doc(
            "Weights file: official FlashOCC .pth or our .safetensors; empty = the shipped demo "
            "weights when model_config is 'demo'."
        ),
    )
    backend: str = field(
        default="auto",
        metadata=_doc("Inference backend: auto, torch, onnxruntime or tensorrt."),
    )
    device: str = field(default="cpu", metadata=_doc("Torch device: cpu, cuda or cuda:N."))
    precision: str = field(
        default="fp32",
        metadata=_doc(
            "fp32, fp16 (GPU), bf16 (CPU autocast; fast on AVX-512 CPUs only) or int8 (TensorRT)."
        ),
    )
    engine_path: str = field(
        default="",
        metadata=_doc(
            "backend onnxruntime: the folder written by `python -m flashocc_ros.tools.export`; "
            "backend tensorrt (and auto): the engine folder written by `python -m "
            "flashocc_ros.tools.build_engine` (docs/deployment.md)."
        ),
    )
    engine_mismatch: str = field(
        default="refuse",
        metadata=_doc(
            "TensorRT engines missing or not matching the model, precision, TensorRT version or "
            "GPU: refuse (error with the build command) or rebuild at start-up."
        ),
    )
    build_only: bool = field(
        default=False,
        metadata=_doc(
            "backend tensorrt: build the engines in engine_path when missing or stale, load "
            "them once, then exit (no topics)."
        ),
    )
    ego_frame: str = field(
        default="base_link", metadata=_doc("Ego frame of the output grids (header.frame_id).")
    )
    odom_frame: str = field(
        default="odom",
        metadata=_doc(
            "Odometry frame: the ego pose (odom <- ego) is interpolated from /tf at each "
            "camera's stamp and each camera is placed in the key camera's ego frame. '' = no "
            "odometry: static extrinsics only (single-frame models)."
        ),
    )
    camera_offsets_s: tuple[float, ...] = field(
        default=(),
        metadata=_doc(
            "Trigger offset of each camera after the key camera (camera_names order, first 0), "
            "seconds; [] = measured from the streams at start and after a time jump (logged and "
            "in diagnostics). A camera's frame of a cycle is the one nearest key stamp + offset."
        ),
    )
    sync_tolerance_s: float = field(
        default=0.015,
        metadata=_doc(
            "Largest distance of a camera's frame from its expected stamp (key stamp + offset), "
            "seconds; keep it below half the frame period."
        ),
    )
    sync_timeout_s: float = field(
        default=0.5,
        metadata=_doc(
            "A camera's frame is given up once the key camera's stamps are this far past its "
            "expected stamp (a silent or lagging camera), seconds."
        ),
    )
    sync_missing: str = field(
        default="drop",
        metadata=_doc(
            "A cycle without some camera's frame: drop (no grid) or fill (use that camera's "
            "frame nearest its expected stamp within sync_fill_tolerance_s; counted)."
        ),
    )
    sync_fill_tolerance_s: float = field(
        default=0.1,
        metadata=_doc("sync_missing fill: largest distance of a stand-in frame, seconds."),
    )
    tf_timeout_s: float = field(
        default=0.5,
        metadata=_doc(
            "How long a complete bundle waits for /tf samples on both sides of every camera "
            "stamp before it is processed with extrapolation (tf_extrapolation_s) or dropped, "
            "seconds. Newer bundles are not held up."
        ),
    )
    tf_extrapolation_s: float = field(
        default=0.05,
        metadata=_doc(
            "After tf_timeout_s, how far past the /tf samples a pose may be extrapolated "
            "(constant velocity; counted), seconds; 0 = never."
        ),
    )
    history_spacing_s: float = field(
        default=0.5, metadata=_doc("Temporal models: age of the past frame to fuse, seconds.")
    )
    history_max_gap_s: float = field(
        default=1.5, metadata=_doc("Temporal models: reset the history after a gap this long.")
    )
    input_reliability: str = field(
        default="best_effort", metadata=_doc("QoS reliability of image inputs.")
    )
    input_queue_depth: int = field(default=2, metadata=_doc("QoS history depth of image inputs."))
    tf_reliability: str = field(
        default="best_effort",
        metadata=_doc(
            "QoS reliability of the /tf subscription (depth 100). best_effort: a lost sample "
            "is skipped and interpolated over; reliable: it holds up every later sample until "
            "DDS repairs it (seconds on a loaded host)."
        ),
    )
    output_reliability: str = field(
        default="reliable", metadata=_doc("QoS reliability of the ~/output/* publishers.")
    )
    output_queue_depth: int = field(
        default=2, metadata=_doc("QoS history depth of the ~/output/* publishers.")
    )
    publish_occupancy: bool = field(
        default=True, metadata=_doc("Publish ~/output/occupancy (flashocc_ros/msg/Occupancy).")
    )
    publish_confidence: bool = field(
        default=False, metadata=_doc("Fill Occupancy.confidence (costs a softmax).")
    )
    publish_markers: bool = field(
        default=True, metadata=_doc("Publish ~/output/markers (visualization_msgs/MarkerArray).")
    )
    publish_points: bool = field(
        default=True, metadata=_doc("Publish ~/output/points (sensor_msgs/PointCloud2).")
    )
    publish_bev_image: bool = field(
        default=True, metadata=_doc("Publish ~/output/bev_image (sensor_msgs/Image, rgb8).")
    )
    marker_max_voxels: int = field(
        default=0, metadata=_doc("Cap on drawn voxels per frame (0 = no cap).")
    )
    max_image_pixels: int = field(
        default=16_000_000, metadata=_doc("Images larger than this are refused (pixels).")
    )
    diagnostics_period_s: float = field(
        default=1.0, metadata=_doc("Period of /diagnostics messages, seconds.")
    )
    health_late_s: float = field(
        default=1.0,
        metadata=_doc("An input whose last message is older than this is WARN (late), seconds."),
    )
    health_missing_s: float = field(
        default=3.0,
        metadata=_doc(
            "An input with no message for this long (or none since start) is ERROR, seconds."
        ),
    )
    health_recovery_s: float = field(
        default=3.0,
        metadata=_doc(
            "A fault (refused or failed input) counts this long; the summary returns to OK after "
            "everything was OK this long, seconds."
        ),
    )
    latency_warn_s: float = field(
        default=1.0,
        metadata=_doc(
            "Latency from a key frame coming in to its grid going out above this is WARN, s."
        ),
    )
    startup_watchdog_s: float = field(
        default=5.0,
        metadata=_doc("No grid this long after start: one log line naming the silent inputs, s."),
    )
    min_image_scale: float = field(
        default=0.5,
        metadata=_doc(
            "Images (and CameraInfo) smaller than this fraction of the network input, in width or "
            "height, are refused."
        ),
    )
    focal_range_rel: tuple[float, ...] = field(
        default=(0.1, 10.0),
        metadata=_doc(
            "[min, max] of fx / image width and fy / image width in CameraInfo; outside: refused."
        ),
    )
    principal_point_margin_rel: float = field(
        default=0.5,
        metadata=_doc(
            "cx, cy may lie this fraction of the image size outside the image; beyond: refused."
        ),
    )
    tf_max_speed_mps: float = field(
        default=70.0,
        metadata=_doc(
            "A /tf sample implying a faster motion of its link than this is refused, m/s (three "
            "consistent refused samples in a row restart the link: an odometry reset)."
        ),
    )
    tf_max_angular_rate_dps: float = field(
        default=180.0,
        metadata=_doc("Like tf_max_speed_mps, for the rotation rate of a link, degrees/s."),
    )
    max_stamp_skew_s: float = field(
        default=5.0,
        metadata=_doc(
            "An image or /tf stamp whose delay (receive time - stamp) differs by more than this "
            "from the recent median delay is refused, seconds; 0 = off."
        ),
    )
    max_stamp_age_s: float = field(
        default=0.0,
        metadata=_doc(
            "Without use_sim_time: stamps further than this from the node's clock are refused, "
            "seconds; 0 = off (bags played without /clock keep working)."
        ),
    )

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            values = value if isinstance(value, tuple) else (value,)
            bad = [v for v in values if isinstance(v, float) and not math.isfinite(v)]
            if bad:
                raise ConfigError(f"parameter {f.name}={value!r}: must be a finite number")
        for name, hi in _MAX.items():
            if getattr(self, name) > hi:
                raise ConfigError(f"parameter {name}={getattr(self, name)}: must be <= {hi}")
        for name, allowed in _ENUMS.items():
            if getattr(self, name) not in allowed:
                value = getattr(self, name)
                raise ConfigError(
                    f"parameter {name}={value!r}: must be one of {', '.join(allowed)}"
                )
        for name, lo in _MIN.items():
            if getattr(self, name) < lo:
                raise ConfigError(f"parameter {name}={getattr(self, name)}: must be >= {lo}")
        if not self.camera_names or len(set(self.camera_names)) != len(self.camera_names):
            raise ConfigError("parameter camera_names: must be a non-empty list of unique names")
        unknown = sorted(set(self.compressed_cameras) - set(self.camera_names))
        if unknown:
            raise ConfigError(f"parameter compressed_cameras: unknown cameras {unknown}")
        if not self.ego_frame or self.ego_frame.startswith("/"):
            raise ConfigError("parameter ego_frame: must be a non-empty frame id without '/'")
        if self.odom_frame.startswith("/"):
            raise ConfigError("parameter odom_frame: must be a frame id without '/' (or '')")
        if self.ego_frame == self.odom_frame:
            raise ConfigError("parameters ego_frame and odom_frame must differ")
        offsets = self.camera_offsets_s
        if offsets and (len(offsets) != len(self.camera_names) or offsets[0] != 0.0):
            raise ConfigError(
                f"parameter camera_offsets_s: needs one offset per camera "
                f"({len(self.camera_names)}), the first (key camera) 0.0, got {list(offsets)}"
            )
        if any(abs(o) > 0.5 for o in offsets):
            raise ConfigError("parameter camera_offsets_s: offsets must lie within +-0.5 s")
        if self.sync_fill_tolerance_s < self.sync_tolerance_s:
            raise ConfigError("parameter sync_fill_tolerance_s: must be >= sync_tolerance_s")
        lo_hi = self.focal_range_rel
        if len(lo_hi) != 2 or not 0 < lo_hi[0] < lo_hi[1]:
            raise ConfigError(
                f"parameter focal_range_rel: needs [min, max], 0 < min < max, got {list(lo_hi)}"
            )
        if self.health_missing_s < self.health_late_s:
            raise ConfigError("parameter health_missing_s: must be >= health_late_s")

    def replace(self, **changes: Any) -> NodeConfig:
        return dataclasses.replace(self, **changes)


_FIELDS: dict[str, dataclasses.Field[Any]] = {f.name: f for f in dataclasses.fields(NodeConfig)}


def input_topics(camera: str) -> tuple[str, str]:
    """(image topic, camera_info topic) the node subscribes for `camera` (private names)."""
    base = f"~/input/{camera.lower()}"
    return f"{base}/image", f"{base}/camera_info"


def array_item_type(name: str) -> str | None:
    """'string' or 'double' for a list parameter, None for a scalar one."""
    kind = str(_FIELDS[name].type)
    return {"tuple[str, ...]": "string", "tuple[float, ...]": "double"}.get(kind)


def _type_name(f: dataclasses.Field[Any]) -> str:
    item = array_item_type(f.name)
    return f"{item}[]" if item else str(f.type)


def closest_names(name: str) -> list[str]:
    """Known parameter names that look like `name` (for "did you mean" messages)."""
    return difflib.get_close_matches(name, list(_FIELDS), n=2, cutoff=0.6)


def unknown_parameters_message(names: Sequence[str]) -> str:
    """One line naming unknown parameters and, where one looks alike, the known name."""
    parts = []
    for n in sorted(names):
        near = closest_names(n)
        parts.append(f"{n} (did you mean {' or '.join(near)}?)" if near else n)
    return f"unknown parameters: {', '.join(parts)}"


def node_config_from_mapping(values: Mapping[str, Any]) -> NodeConfig:
    """Validated NodeConfig from parameter values; unknown names and wrong types are refused."""
    unknown = sorted(set(values) - set(_FIELDS))
    if unknown:
        raise ConfigError(unknown_parameters_message(unknown))
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        default = _FIELDS[name].default
        if array_item_type(name) == "double":
            if isinstance(value, str) or not isinstance(value, list | tuple):
                raise ConfigError(f"parameter {name}: must be a list of numbers")
            if any(isinstance(v, bool) or not isinstance(v, int | float) for v in value):
                raise ConfigError(f"parameter {name}: must be a list of numbers, got {value!r}")
            kwargs[name] = tuple(float(v) for v in value)
        elif isinstance(default, tuple):
            if isinstance(value, str) or not isinstance(value, list | tuple):
                raise ConfigError(f"parameter {name}: must be a list of strings")
            kwargs[name] = tuple(str(v) for v in value)
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"parameter {name}: must be true or false, got {value!r}")
            kwargs[name] = value
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"parameter {name}: must be an integer, got {value!r}")
            kwargs[name] = value
        elif isinstance(default, float):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"parameter {name}: must be a number, got {value!r}")
            kwargs[name] = float(value)
        else:
            if not isinstance(value, str):
                raise ConfigError(f"parameter {name}: must be a string, got {value!r}")
            kwargs[name] = value
    return NodeConfig(**kwargs)


#: Parameters rclpy itself reads for every node; a parameter file may set them for the node.
ROS_NODE_PARAMETERS = frozenset({"use_sim_time", "start_type_description_service"})


def is_ros_node_parameter(name: str) -> bool:
    """True for rclpy's own parameters (use_sim_time, qos_overrides...)."""
    return name in ROS_NODE_PARAMETERS or name.startswith("qos_overrides")


def node_parameter_blocks(data: Any, node_name: str, keys: tuple[str, ...] = ()) -> Iterator[Any]:
    """The `ros__parameters` values of a parsed ROS 2 parameter file that apply to node
    `node_name`, in file order: under `/**`, `name`, `/ns/name`, `/**/name`, `ns: {name: ...}`."""
    if not isinstance(data, Mapping):
        return
    for key, value in data.items():
        if key == "ros__parameters":
            last = "/".join(keys).strip("/").rsplit("/", 1)[-1]
            if last in (node_name, "*", "**"):
                yield value
        else:
            yield from node_parameter_blocks(value, node_name, (*keys, str(key)))


def params_from_ros_file(path: str | Path, node_name: str = "flashocc") -> dict[str, Any]:
    """The parameters a ROS 2 parameter file gives node `node_name` (any namespace), later
    blocks winning like in rcl; rclpy's own parameters are left out. ConfigError when the file
    cannot be read or has no block for the node."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read parameter file {path}: {err}") from err
    blocks = list(node_parameter_blocks(data, node_name))
    if not blocks:
        raise ConfigError(
            f"parameter file {path}: no '/**:' or '{node_name}:' block with ros__parameters"
        )
    out: dict[str, Any] = {}
    for block in blocks:
        if not isinstance(block, Mapping):
            raise ConfigError(f"parameter file {path}: ros__parameters must be a mapping")
        out.update(block)
    return {k: v for k, v in out.items() if not is_ros_node_parameter(str(k))}


def parse_param_items(items: Sequence[str]) -> dict[str, Any]:
    """Command-line `KEY=VALUE` items -> {KEY: value}, each value read as YAML like
    `ros2 run ... -p KEY:=VALUE` does ("true" -> True, "[a, b]" -> a list, "1.5" -> 1.5)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"parameter {item!r}: expected KEY=VALUE")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise ConfigError(f"parameter {key.strip()}: cannot read {value!r}: {err}") from err
    return out


def parameter_docs() -> dict[str, str]:
    """Parameter name -> one-line description (ROS parameter descriptors, docs)."""
    return {f.name: str(f.metadata["doc"]) for f in dataclasses.fields(NodeConfig)}


def default_values() -> dict[str, Any]:
    """Parameter name -> default (lists as lists), in declaration order."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(NodeConfig):
        out[f.name] = list(f.default) if isinstance(f.default, tuple) else f.default
    return out


def param_yaml() -> str:
    """The documented `config/flashocc.param.yaml` (ROS 2 parameter file form)."""
    lines = ["# Generated from flashocc_ros/node_config.py by: python -m flashocc_ros.node_config"]
    lines += ["/**:", "  ros__parameters:"]
    for f in dataclasses.fields(NodeConfig):
        lines.append(f"    # {f.metadata['doc']}")
        value = yaml.safe_dump(
            {f.name: default_values()[f.name]}, default_flow_style=True, width=10_000
        )
        lines.append("    " + value.strip()[1:-1])
    return "\n".join(lines) + "\n"


def json_schema() -> dict[str, Any]:
    """JSON schema of the parameter file (Autoware style)."""
    props: dict[str, Any] = {}
    for f in dataclasses.fields(NodeConfig):
        d = f.default
        prop: dict[str, Any] = {"description": f.metadata["doc"]}
        if isinstance(d, tuple):
            item = "number" if array_item_type(f.name) == "double" else "string"
            prop.update(type="array", items={"type": item}, default=list(d))
        elif isinstance(d, bool):
            prop.update(type="boolean", default=d)
        elif isinstance(d, int):
            prop.update(type="integer", default=d)
        elif isinstance(d, float):
            prop.update(type="number", default=d)
        else:
            prop.update(type="string", default=d)
        if f.name in _ENUMS:
            prop["enum"] = list(_ENUMS[f.name])
        if f.name in _MIN:
            prop["minimum"] = _MIN[f.name]
        if f.name in _MAX:
            prop["maximum"] = _MAX[f.name]
        props[f.name] = prop
    params = {
        "type": "object",
        "properties": props,
        "required": list(props),
        "additionalProperties": False,
    }
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "Parameters for the flashocc_ros node",
        "type": "object",
        "properties": {
            "/**": {
                "type": "object",
                "properties": {"ros__parameters": params},
                "required": ["ros__parameters"],
            }
        },
        "required": ["/**"],
    }


def markdown_table() -> str:
    """The README parameter table."""
    rows = ["| parameter | type | default | meaning |", "|---|---|---|---|"]
    for f in dataclasses.fields(NodeConfig):
        default = json.dumps(default_values()[f.name])
        rows.append(f"| `{f.name}` | {_type_name(f)} | `{default}` | {f.metadata['doc']} |")
    return "\n".join(rows)


def parameters_page() -> str:
    """docs/parameters.md: every parameter with its type, default and meaning."""
    return (
        "# Node parameters\n\n"
        "Generated from `flashocc_ros/node_config.py` by `python -m flashocc_ros.node_config` "
        "(do not edit); the same fields make `config/flashocc.param.yaml` and "
        "`config/flashocc.schema.json`. Every parameter can be set in the parameter file or as "
        "a launch argument; values are checked at start (one line naming the parameter, exit "
        "code 2), and a name the node does not know is reported with the nearest known name.\n\n"
        + markdown_table()
        + "\n"
    )


def write_generated(root: Path) -> None:
    """Regenerate the param YAML and the JSON schema under `root/config`, and
    `root/docs/parameters.md`."""
    (root / "config" / "flashocc.param.yaml").write_text(param_yaml())
    schema = json.dumps(json_schema(), indent=2) + "\n"
    (root / "config" / "flashocc.schema.json").write_text(schema)
    (root / "docs" / "parameters.md").write_text(parameters_page())


if __name__ == "__main__":
    write_generated(Path(sys.argv[1]) if len(sys.argv) > 1 else Path.cwd())
    sys.stdout.write(markdown_table() + "\n")
