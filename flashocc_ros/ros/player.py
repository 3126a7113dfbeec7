"""Bag replay without `ros2 bag`: publishes a rosbag2 (mcap or sqlite3) into the live graph.
In: a bag path (read with `rosbags`). Out: the bag's messages on their topics, original timing.

Messages are published as the serialised bytes stored in the bag (no decode/encode), with the
recorded time spacing scaled by `rate`, optionally looped, optionally driving `/clock` for
nodes with `use_sim_time`. Topics recorded as transient-local (e.g. `/tf_static`) are
re-published latched. On a vehicle, `ros2 bag play` does the same job.

`flashocc_play` ends cleanly on SIGINT and SIGTERM (exit 0, no traceback): a signal stops the
playback at the next message; exit 2 for a missing or unreadable bag, 3 when `--wait-for` timed
out.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rclpy
from rclpy.duration import Duration
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.node import Node
from rclpy.publisher import Publisher
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from rclpy.utilities import remove_ros_args
from rosbags.interfaces import ConnectionExtRosbag2, QosDurability
from rosbags.rosbag2 import Reader, ReaderError

from flashocc_ros.ros.stop_signals import StopSignals

LOG = logging.getLogger(__name__)
#: Seconds to wait after our publishers matched their subscribers, for the readers' side of
#: DDS discovery (see `BagPlayer.wait_for_subscribers`).
SETTLE_S = 0.5


def message_class(msgtype: str) -> type:
    """'sensor_msgs/msg/Image' -> the generated rclpy class; ImportError names the package."""
    pkg, kind, name = msgtype.split("/")
    module = importlib.import_module(f"{pkg}.{kind}")
    cls: type = getattr(module, name)
    return cls


def _is_latched(conn: Any) -> bool:
    ext = conn.ext
    if not isinstance(ext, ConnectionExtRosbag2):
        return False
    return any(q.durability == QosDurability.TRANSIENT_LOCAL for q in ext.offered_qos_profiles)


@dataclass
class PlayStats:
    published: dict[str, int] = field(default_factory=dict)  # topic -> messages sent
    skipped_topics: dict[str, str] = field(default_factory=dict)  # topic -> reason
    loops: int = 0


class BagPlayer:
    """Publishes one bag through `node`. `play()` blocks until done or `stop()` is called."""

    def __init__(
        self,
        node: Node,
        bag: Path,
        *,
        rate: float = 1.0,
        loop: bool = False,
        clock: bool = False,
        topics: list[str] | None = None,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        if not Path(bag).exists():
            raise FileNotFoundError(f"bag not found: {bag}")
        self.node = node
        self.bag = Path(bag)
        self.rate = rate
        self.loop = loop
        self.topics = set(topics) if topics else None
        self.stats = PlayStats()
        self._stop = threading.Event()
        self._clock_pub: Publisher | None = None
        if clock:
            from rosgraph_msgs.msg import Clock

            self._clock_pub = node.create_publisher(Clock, "/clock", 10)

    def stop(self) -> None:
        self._stop.set()

    def wait_for_subscribers(
        self, topics: list[str], timeout_s: float, pubs: Mapping[str, Publisher]
    ) -> bool:
        """Block until every topic in `topics` has a matched subscriber (True) or the timeout
        (False), then SETTLE_S more. Matching is checked on our own publishers (`pubs`, by
        topic) once they exist: a graph-level subscriber count says nothing about whether a
        publisher created later has matched it yet, and a sample published before that is
        lost. The settle time lets each reader discover our writer too (discovery is
        asymmetric; a best-effort reader drops samples from writers it does not know yet)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not self._stop.is_set():
            if all(
                (pubs[t].get_subscription_count() if t in pubs else self.node.count_subscribers(t))
                > 0
                for t in topics
            ):
                time.sleep(SETTLE_S)
                return True
            time.sleep(0.1)
        return False

    def play(self, wait_for: list[str] | None = None, wait_timeout_s: float = 60.0) -> PlayStats:
        """Publish the bag (once, or until `stop()` with loop). `wait_for`: topics that must
        have a matched subscriber first; TimeoutError when they have none after
        `wait_timeout_s` (none when `stop()` came first)."""
        with Reader(self.bag) as reader:
            wanted = self.topics
            conns = [c for c in reader.connections if wanted is None or c.topic in wanted]
            pubs: dict[int, Publisher] = {}
            for conn in conns:
                try:
                    cls = message_class(conn.msgtype)
                except (ImportError, AttributeError, ValueError) as err:
                    self.stats.skipped_topics[conn.topic] = f"type {conn.msgtype}: {err}"
                    LOG.warning("skipping %s: cannot import %s", conn.topic, conn.msgtype)
                    continue
                if _is_latched(conn):
                    qos = QoSProfile(
                        depth=max(10, conn.msgcount),
                        durability=DurabilityPolicy.TRANSIENT_LOCAL,
                        reliability=ReliabilityPolicy.RELIABLE,
                    )
                else:
                    qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
                pubs[conn.id] = self.node.create_publisher(cls, conn.topic, qos)
            by_topic = {c.topic: pubs[c.id] for c in conns if c.id in pubs}
            if wait_for and not self.wait_for_subscribers(wait_for, wait_timeout_s, by_topic):
                if self._stop.is_set():
                    return self.stats
                raise TimeoutError(f"no subscriber on {wait_for} after {wait_timeout_s:.0f} s")
            while not self._stop.is_set():
                self._play_once(reader, [c for c in conns if c.id in pubs], pubs)
                self.stats.loops += 1
                if not self.loop:
                    break
            self._flush(pubs.values())
        return self.stats

    def _flush(self, pubs: Any, timeout_s: float = 5.0) -> None:
        """Wait until reliable readers acknowledged everything: DDS sends asynchronously, and a
        player that exits right after its last `publish` loses the samples still in flight."""
        deadline = time.monotonic() + timeout_s
        for pub in pubs:
            if self._stop.is_set():
                return
            left = max(0.0, deadline - time.monotonic())
            try:
                acked = pub.wait_for_all_acked(Duration(nanoseconds=int(left * 1e9)))
            except _rclpy.RCLError:  # shut down (Ctrl-C / SIGTERM) while waiting
                return
            if not acked:
                LOG.warning("%s: not every reader acknowledged the last samples", pub.topic_name)

    def _play_once(self, reader: Reader, conns: list[Any], pubs: dict[int, Publisher]) -> None:
        start_wall = time.monotonic()
        start_bag: int | None = None
        for conn, stamp, data in reader.messages(connections=conns):
            if self._stop.is_set():
                return
            if start_bag is None:
                start_bag = stamp
            due = start_wall + (stamp - start_bag) / 1e9 / self.rate
            delay = due - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            if self._clock_pub is not None:
                from rosgraph_msgs.msg import Clock

                msg = Clock()
                msg.clock.sec, msg.clock.nanosec = divmod(stamp, 1_000_000_000)
                self._clock_pub.publish(msg)
            pubs[conn.id].publish(bytes(data))
            self.stats.published[conn.topic] = self.stats.published.get(conn.topic, 0) + 1


def main(argv: list[str] | None = None) -> int:
    """`ros2 run flashocc_ros flashocc_play BAG [--rate R] [--loop] [--clock]`."""
    parser = argparse.ArgumentParser(prog="flashocc_play", description=__doc__)
    parser.add_argument("bag", type=Path, help="rosbag2 folder or .mcap/.db3 file")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed factor")
    parser.add_argument("--loop", action="store_true", help="play again and again")
    parser.add_argument("--clock", action="store_true", help="publish /clock from bag time")
    parser.add_argument("--topics", nargs="*", help="only these topics")
    parser.add_argument(
        "--wait-for",
        nargs="*",
        default=[],
        help="topics that must have a subscriber before playing starts",
    )
    parser.add_argument("--wait-timeout", type=float, default=60.0, help="seconds, for --wait-for")
    # `--ros-args ...` (remappings from a launch file) are rclpy's, not ours.
    args = parser.parse_args(remove_ros_args(sys.argv)[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with StopSignals() as stop:
        return _play(args, stop)


def _play(args: argparse.Namespace, stop: StopSignals) -> int:
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    node = Node("flashocc_player")
    try:
        player = BagPlayer(
            node, args.bag, rate=args.rate, loop=args.loop, clock=args.clock, topics=args.topics
        )
        stop.add(player.stop)
        stats = player.play(args.wait_for, args.wait_timeout)
    except TimeoutError as err:
        LOG.error("flashocc_play: %s", err)
        return 3
    except (FileNotFoundError, ValueError, ReaderError) as err:
        LOG.error("flashocc_play: cannot play %s: %s", args.bag, err)
        return 2
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    total = sum(stats.published.values())
    how = f" (stopped by {stop.received})" if stop.received else ""
    LOG.info("published %d messages on %d topics%s", total, len(stats.published), how)
    for topic, reason in stats.skipped_topics.items():
        LOG.info("skipped %s (%s)", topic, reason)
    return 0


if __name__ == "__main__":
    sys.exit(main())
