"""Soak run: the node on a looping bag, optionally attacked; memory, health and grids over time.
In: bundle count or duration, model (tiny by default), hostile message period. Out: a table of
node RSS, processed and dropped counts, and a verdict line per check.

`python -m flashocc_ros.ros.soak --max-seconds 1800 --hostile-every 1`. The node and a looping
player run as separate processes; this process subscribes to every output (so the node does all
its publishing work), samples the node's resident memory from /proc, and with `--hostile-every`
publishes one hostile message (`ros.hostile`, a different kind each time) per period. Checks:
the node stays alive, no grid contains a refused image, the diagnostics summary comes back to OK
after each fault, RSS after warm-up stays within 5 %.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, PointCloud2
from visualization_msgs.msg import MarkerArray

from flashocc_ros.camera_topics import default_camera_topics
from flashocc_ros.config import NUSCENES_CAMERAS
from flashocc_ros.ros.hostile import HostileInjector
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
    parser.add_argument(
        "--hostile-every",
        type=float,
        default=0.0,
        help="seconds between hostile messages (0: none)",
    )
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
    params: dict[str, object] = {"model_config": args.model_config, "weights": "random"}
    if args.hostile_every:  # a fault clears quicker than the next one comes
        params |= {
            "health_recovery_s": min(0.5, args.hostile_every / 2),
            "diagnostics_period_s": 0.2,
        }
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

    levels: list[tuple[float, int]] = []  # (time, summary level)
    reasons: collections.Counter[str] = collections.Counter()  # what a non-OK summary named
    grid_stamps: set[int] = set()  # every camera stamp of every grid

    def on_diag(msg: DiagnosticArray) -> None:
        for st in msg.status:
            if st.name == "flashocc: processing":
                diag.clear()
                diag.update({kv.key: kv.value for kv in st.values})
            if st.name == "flashocc: summary":
                levels.append((time.monotonic(), int.from_bytes(st.level, "little")))
                if levels[-1][1]:
                    reasons[st.message.split(":")[0]] += 1

    def on_grid(msg: Any) -> None:
        grid_stamps.update(t.sec * 1_000_000_000 + t.nanosec for t in msg.camera_stamps)

    from flashocc_ros.msg import Occupancy

    me.create_subscription(Occupancy, f"/{NODE_NAME}/output/occupancy", on_grid, qos)
    hostile = HostileInjector(me, NUSCENES_CAMERAS) if args.hostile_every else None
    injected: list[tuple[float, str]] = []

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
            now = time.monotonic()
            if (
                hostile is not None
                and hostile.latest_ns
                and (not injected or now - injected[-1][0] >= args.hostile_every)
            ):
                injected.append((now, hostile.inject()))
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
    ok = bool(rows)
    alive = proc.returncode in (0, -15)  # ended by our terminate, not before
    print(f"node alive until the end: {alive}")
    ok &= alive
    if len(rows) >= 4:
        warm = rows[len(rows) // 4]
        growth = (rows[-1][2] - warm[2]) / warm[2] * 100
        print(
            f"RSS after warm-up ({warm[1]} -> {rows[-1][1]} bundles): {warm[2]:.1f} -> "
            f"{rows[-1][2]:.1f} MiB ({growth:+.1f} %)"
        )
        ok &= abs(growth) <= 5.0
    if hostile is not None:
        kinds = {k: sum(1 for _, x in injected if x == k) for k in HostileInjector.KINDS}
        leaked = grid_stamps & hostile.refused_image_stamps
        recovered = _recoveries(injected, levels)
        print(f"hostile messages: {len(injected)} ({kinds})")
        print(f"grids containing a refused image: {len(leaked)}")
        print(f"summary back to OK before the next fault: {recovered} of {len(injected) - 1}")
        print(f"non-OK summaries named: {dict(reasons.most_common(6))}")
        ok &= not leaked and recovered >= 0.9 * (len(injected) - 1)
    print(f"node log: {work / 'node.log'}")
    return 0 if ok and rows[-1][1] >= min(args.bundles, 1) else 1


def _recoveries(injected: list[tuple[float, str]], levels: list[tuple[float, int]]) -> int:
    """How many faults were followed by an OK summary before the next fault."""
    count = 0
    for (t0, _), (t1, _) in itertools.pairwise(injected):
        if any(t0 < t < t1 and level == 0 for t, level in levels):
            count += 1
    return count


if __name__ == "__main__":
    sys.exit(main())
