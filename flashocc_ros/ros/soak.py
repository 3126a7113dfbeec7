"""Soak run: the node on a looping bag for thousands of bundles; memory and queues over time.
In: bundle count, model (tiny by default). Out: a table of node RSS, processed and dropped counts.

`python -m flashocc_ros.ros.soak --bundles 2000`. The node and a looping player run as separate
processes; this process subscribes to every output (so the node does all its publishing work)
and samples the node's resident memory from /proc every few seconds.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, PointCloud2
from visualization_msgs.msg import MarkerArray

from flashocc_ros.camera_topics import default_camera_topics
from flashocc_ros.config import NUSCENES_CAMERAS
from flashocc_ros.ros.live_run import NODE_NAME, executable, node_command


def rss_mib(pid: int) -> float:
    """Resident set size of a process in MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _row(row: tuple[float, int, float, int, int, int]) -> str:
    t, n, rss, sup, drops, failed = row
    return f"{t:7.0f} {n:8d} {rss:13.1f} {sup:11d} {drops:11d} {failed:7d}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flashocc-soak", description=__doc__)
    parser.add_argument("--bundles", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=4.0, help="player speed factor")
    parser.add_argument("--sample-every", type=float, default=10.0, help="seconds")
    parser.add_argument("--model-config", default="tiny")
    parser.add_argument("--max-seconds", type=float, default=1800.0, help="stop after this")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="flashocc_soak_"))
    bag = work / "bag"
    subprocess.run(
        [
            sys.executable, "-m", "flashocc_ros.tools.world", "generate", "--bag", str(bag),
            "--scenes", "1", "--keyframes", "20", "--seed", "5", "--width", "176",
            "--height", "99", "--keyframes-only",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    params = {"model_config": args.model_config, "weights": "random"}
    node_log = open(work / "node.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        node_command(params, default_camera_topics(NUSCENES_CAMERAS)),
        stdout=node_log,
        stderr=subprocess.STDOUT,
    )
    rclpy.init()
    me = Node("flashocc_soak")
    qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    diag: dict[str, str] = {}

    def on_diag(msg: DiagnosticArray) -> None:
        for st in msg.status:
            if st.name == "flashocc: processing":
                diag.clear()
                diag.update({kv.key: kv.value for kv in st.values})

    me.create_subscription(DiagnosticArray, "/diagnostics", on_diag, qos)
    for typ, topic in ((MarkerArray, "markers"), (PointCloud2, "points"), (Image, "bev_image")):
        me.create_subscription(typ, f"/{NODE_NAME}/output/{topic}", lambda _m: None, qos)
    player = subprocess.Popen(
        [
            sys.executable, str(executable("flashocc_play")), str(bag), "--loop",
            "--rate", str(args.rate), "--wait-for", "/cam_front_left/image_raw",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    rows = []
    head = ("t (s)", "bundles", "node RSS MiB", "superseded", "sync drops", "failed")
    print(
        f"{head[0]:>7} {head[1]:>8} {head[2]:>13} {head[3]:>11} {head[4]:>11} {head[5]:>7}",
        flush=True,
    )
    start = time.monotonic()
    next_sample = start
    try:
        while proc.poll() is None and rclpy.ok():
            try:
                rclpy.spin_once(me, timeout_sec=0.2)
            except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
                break
            done = int(diag.get("count.bundles_processed", "0"))
            finished = done >= args.bundles or time.monotonic() - start > args.max_seconds
            if time.monotonic() >= next_sample or finished:  # always a last row at the end
                drops = sum(int(v) for k, v in diag.items() if k.startswith("drop."))
                rows.append(
                    (
                        time.monotonic() - start,
                        done,
                        rss_mib(proc.pid),
                        int(diag.get("queue.superseded", "0")),
                        drops,
                        int(diag.get("count.bundles_failed", "0")),
                    )
                )
                print(_row(rows[-1]), flush=True)  # progress as it happens
                next_sample += args.sample_every
            if finished:
                break
    finally:
        player.terminate()
        proc.terminate()
        proc.wait(15)
        me.destroy_node()
        rclpy.try_shutdown()
    if len(rows) >= 4:
        warm = rows[len(rows) // 4]
        print(
            f"RSS growth after warm-up ({warm[1]} -> {rows[-1][1]} bundles): "
            f"{rows[-1][2] - warm[2]:+.1f} MiB"
        )
    print(f"node log: {work / 'node.log'}")
    return 0 if rows and rows[-1][1] >= args.bundles else 1


if __name__ == "__main__":
    sys.exit(main())
