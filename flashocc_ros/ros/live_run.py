"""Runs the real node on a bag over DDS: node and player as separate processes, recording here.
In: a bag, node parameters, an output folder. Out: npz per received grid, latency, diagnostics.

Used by the demo and the end-to-end test. The node and the player are the installed
executables (what `ros2 run` would start); this process subscribes to the node's outputs.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, PointCloud2
from visualization_msgs.msg import MarkerArray

from flashocc_ros.camera_topics import CameraTopics, default_camera_topics, load_camera_topics
from flashocc_ros.node_config import NodeConfig, input_topics, parse_param_items
from flashocc_ros.ros.recorder import OccupancyRecorder

NODE_NAME = "flashocc"


def executable(name: str) -> Path:
    """Installed launcher `lib/flashocc_ros/<name>` found through AMENT_PREFIX_PATH."""
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        path = Path(prefix) / "lib" / "flashocc_ros" / name
        if prefix and path.is_file():
            return path
    raise FileNotFoundError(f"{name} is not installed; run `make setup` and source scripts/env.sh")


def node_command(params: Mapping[str, Any], topics: Sequence[CameraTopics]) -> list[str]:
    """Command line of the node with parameters and the cameras' topics remapped."""
    cmd = [sys.executable, str(executable("flashocc_node")), "--ros-args"]
    for key, value in params.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, list | tuple):
            text = "[" + ",".join(str(v) for v in value) + "]"
        else:
            text = str(value)
        cmd += ["-p", f"{key}:={text}"]
    for cam in topics:
        image, info = input_topics(cam.name)
        cmd += ["-r", f"/{NODE_NAME}/{image[2:]}:={cam.image}"]
        cmd += ["-r", f"/{NODE_NAME}/{info[2:]}:={cam.camera_info}"]
    return cmd


@dataclass
class LiveRun:
    """What came out of a live run."""

    occupancy: int = 0  # grids received
    stamps: list[int] = field(default_factory=list)
    frame_ids: list[str] = field(default_factory=list)
    model_names: list[str] = field(default_factory=list)
    markers: int = 0
    points: int = 0
    bev_images: int = 0
    diagnostics: dict[str, str] = field(default_factory=dict)  # processing status key -> value
    levels: dict[str, int] = field(default_factory=dict)  # status name -> last level
    diagnostics_stamps: list[int] = field(default_factory=list)  # header stamps, ns
    latency_ms: dict[str, list[float]] = field(default_factory=dict)  # from diagnostics
    node_log: str = ""
    player_log: str = ""
    node_rc: int | None = None

    def latency_median(self) -> dict[str, float]:
        return {k: statistics.median(v) for k, v in self.latency_ms.items() if v}


def awaited_outputs(params: Mapping[str, Any]) -> list[str]:
    """The node's output topics that `params` leave enabled (NodeConfig's publish_* defaults)."""
    defaults = NodeConfig()
    return [
        f"/{NODE_NAME}/output/{name}"
        for name in ("occupancy", "markers", "points", "bev_image")
        if params.get(f"publish_{name}", getattr(defaults, f"publish_{name}"))
    ]


def run_live(
    bag: Path,
    params: Mapping[str, Any],
    topics: Sequence[CameraTopics],
    out_npz: Path,
    *,
    expected: int,
    rate: float = 1.0,
    timeout_s: float = 300.0,
    log_dir: Path | None = None,
    sim_time: bool = False,
) -> LiveRun:
    """Start the node, wait until it subscribes, play the bag, record until `expected` grids.

    `sim_time`: the player publishes /clock from bag time and the node runs with
    use_sim_time:=true (as `ros2 bag play --clock` with a sim-time node)."""
    rclpy.init()
    node = Node("flashocc_live_run")
    result = LiveRun()
    rec = OccupancyRecorder(node, f"/{NODE_NAME}/output/occupancy", npz_dir=out_npz)
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)

    def on_diag(msg: DiagnosticArray) -> None:
        result.diagnostics_stamps.append(
            msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        )
        for status in msg.status:
            if status.name.startswith("flashocc"):
                result.levels[status.name] = int.from_bytes(bytes(status.level), "little")
            if status.name == "flashocc: processing":
                result.diagnostics = {kv.key: kv.value for kv in status.values}

    def on_latency(msg: DiagnosticStatus) -> None:
        for kv in msg.values:
            result.latency_ms.setdefault(kv.key, []).append(float(kv.value))

    def count(attr: str) -> Any:
        return lambda _msg: setattr(result, attr, getattr(result, attr) + 1)

    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, qos)
    node.create_subscription(DiagnosticStatus, f"/{NODE_NAME}/debug/latency_ms", on_latency, qos)
    node.create_subscription(MarkerArray, f"/{NODE_NAME}/output/markers", count("markers"), qos)
    node.create_subscription(PointCloud2, f"/{NODE_NAME}/output/points", count("points"), qos)
    node.create_subscription(Image, f"/{NODE_NAME}/output/bev_image", count("bev_images"), qos)
    logs = log_dir or out_npz.parent
    logs.mkdir(parents=True, exist_ok=True)
    node_log = open(logs / "node.log", "w")  # noqa: SIM115 - closed in finally
    # The player publishes reliably and an evaluation must see every bundle: the node reads
    # images and /tf reliably too unless told otherwise (best effort loses fragments of large
    # images on a loaded host: a bundle then vanishes; a lost /tf sample changes the poses).
    node_params = {"input_reliability": "reliable", "tf_reliability": "reliable", **params}
    if sim_time:
        node_params["use_sim_time"] = True
    proc = subprocess.Popen(
        node_command(node_params, topics), stdout=node_log, stderr=subprocess.STDOUT
    )
    player: subprocess.Popen[bytes] | None = None
    try:
        # Every input of the node: it subscribes one topic after the other, and a sample
        # published before its reader matched is lost (volatile QoS; /tf_static arrives late),
        # which cost the first bundles when only the first camera was waited for.
        inputs = ["/tf_static", "/tf"] + [t for c in topics for t in (c.image, c.camera_info)]
        player_cmd = [
            sys.executable,
            str(executable("flashocc_play")),
            str(bag),
            "--rate",
            str(rate),
            "--wait-for",
            *inputs,
            "--wait-timeout",
            str(timeout_s),
            *(["--clock"] if sim_time else []),
        ]
        # The node's outputs likewise: a grid published before this reader matched the node's
        # writer is lost, which cost a first grid on a loaded host. Wait until this process
        # sees the publisher of every output the node has enabled before anything is played.
        outputs = awaited_outputs(node_params)
        seen_by = time.monotonic() + timeout_s
        while (
            time.monotonic() < seen_by
            and proc.poll() is None
            and any(node.count_publishers(t) < 1 for t in outputs)
        ):
            rclpy.spin_once(node, timeout_sec=0.1)
        player_log = open(logs / "player.log", "w")  # noqa: SIM115
        player = subprocess.Popen(player_cmd, stdout=player_log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        played_at: float | None = None
        while time.monotonic() < deadline and rec.count < expected:
            rclpy.spin_once(node, timeout_sec=0.1)
            if proc.poll() is not None:
                break
            if played_at is None and player.poll() is not None:
                played_at = time.monotonic()
            if played_at is not None and time.monotonic() - played_at > 30.0:
                break  # the player is done and nothing new arrived for a while
        # The last visual outputs, and diagnostics that count every grid received (they come
        # every diagnostics_period_s, later still on a loaded host).
        settle, end = time.monotonic() + 2.0, time.monotonic() + 15.0
        while time.monotonic() < end and (
            time.monotonic() < settle
            or int(result.diagnostics.get("count.bundles_processed", "0")) < rec.count
        ):
            rclpy.spin_once(node, timeout_sec=0.1)
    finally:
        if player is not None and player.poll() is None:
            player.terminate()
            player.wait(10)
        proc.terminate()
        try:
            result.node_rc = proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            result.node_rc = proc.wait(5)
        node_log.close()
        rec.close()
        result.occupancy = rec.count
        result.stamps = list(rec.stamps)
        result.frame_ids = sorted(rec.frame_ids)
        result.model_names = sorted(rec.model_names)
        node.destroy_node()
        rclpy.try_shutdown()
    result.node_log = (logs / "node.log").read_text()
    result.player_log = (logs / "player.log").read_text()
    return result


def main(argv: list[str] | None = None) -> int:
    """`python -m flashocc_ros.ros.live_run --bag B --out DIR [--param k=v ...]`: JSON summary."""
    import argparse
    import json

    from flashocc_ros.config import NUSCENES_CAMERAS

    parser = argparse.ArgumentParser(prog="flashocc-live-run", description=__doc__)
    parser.add_argument("--bag", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="npz folder + logs + run.json")
    parser.add_argument("--param", action="append", default=[], help="node parameter k=v")
    parser.add_argument("--cameras", type=Path, help="cameras YAML (default: the bag's names)")
    parser.add_argument("--expected", type=int, required=True, help="grids to wait for")
    parser.add_argument("--rate", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument(
        "--sim-time", action="store_true", help="player publishes /clock, node use_sim_time"
    )
    args = parser.parse_args(argv)
    params = parse_param_items(args.param)
    if args.cameras is not None:
        topics = load_camera_topics(args.cameras)
        params["camera_names"] = [t.name for t in topics]
        params["compressed_cameras"] = [t.name for t in topics if t.compressed]
    else:
        cams = tuple(params.get("camera_names", NUSCENES_CAMERAS))
        topics = default_camera_topics(cams, params.get("compressed_cameras", ()))
    res = run_live(
        args.bag,
        params,
        topics,
        args.out / "npz",
        expected=args.expected,
        rate=args.rate,
        timeout_s=args.timeout,
        log_dir=args.out,
        sim_time=args.sim_time,
    )
    summary = {k: v for k, v in res.__dict__.items() if k not in ("node_log", "player_log")}
    (args.out / "run.json").write_text(json.dumps(summary, indent=1))
    return 0 if res.occupancy else 1


if __name__ == "__main__":
    sys.exit(main())
