"""A recording through the node's own front end and pipeline, without ROS (offline replay).
In: a rosbag2 (mcap or sqlite3) with camera images, CameraInfo, /tf, /tf_static. Out: results.

The messages go, in log order, into the same `FrontEnd` the node feeds from its callbacks, and the
bundles into the same pipeline; the node's wall-clock waits become waits in log time (a bundle
waits for its /tf samples up to `tf_timeout_s` of log time, then is processed with the node's
extrapolation rule; at the end of the recording every waiting bundle is decided). So a recording
gives the grids the node gives when it is played to it over DDS.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flashocc_ros.camera_topics import CameraTopics, default_camera_topics, is_compressed_topic
from flashocc_ros.config import ConfigError
from flashocc_ros.node_config import NodeConfig
from flashocc_ros.runtime.assembler import RawImage
from flashocc_ros.runtime.frontend import FrontEnd
from flashocc_ros.runtime.pipeline import OccupancyPipeline, OccupancyResult, PipelineError
from flashocc_ros.sensing.image_decode import ImageDecodeError
from flashocc_ros.sensing.sync import Bundle
from flashocc_ros.sensing.tf_buffer import TransformError

LOG = logging.getLogger(__name__)
IMAGE_TYPES = {
    "sensor_msgs/msg/Image": False,  # -> compressed?
    "sensor_msgs/msg/CompressedImage": True,
}
INFO_TYPE = "sensor_msgs/msg/CameraInfo"
TF_TYPE = "tf2_msgs/msg/TFMessage"


class RecordingError(ConfigError):
    """A recording cannot be replayed as asked (no such topics, unreadable file)."""


@dataclass
class ReplayStats:
    """What a replay did: messages read, bundles processed, failures by kind."""

    messages: int = 0
    bundles: int = 0
    failures: dict[str, int] = field(default_factory=dict)  # error kind -> bundles
    unreadable: int = 0  # messages that could not be deserialised


def camera_topics_in_bag(connections: Sequence[Any]) -> list[str]:
    """'topic (type)' of every image or CameraInfo topic of a recording."""
    return sorted(
        f"{c.topic} ({c.msgtype.rsplit('/', 1)[-1]})"
        for c in connections
        if c.msgtype in IMAGE_TYPES or c.msgtype == INFO_TYPE
    )


def resolve_topics(
    cameras: Sequence[CameraTopics], connections: Sequence[Any], explicit: bool
) -> tuple[CameraTopics, ...]:
    """The cameras' topics as found in a recording. Without an explicit mapping (`explicit`
    False: project defaults), a camera whose raw topic is absent but whose `/compressed` one is
    present uses that. Image topics take raw/compressed from the recorded message type."""
    types = {c.topic: c.msgtype for c in connections}
    out = []
    for cam in cameras:
        image = cam.image
        if not explicit and image not in types:
            other = image[: -len("/compressed")] if cam.compressed else image + "/compressed"
            image = other if other in types else image
        compressed = IMAGE_TYPES.get(types.get(image, ""), is_compressed_topic(image))
        out.append(CameraTopics(cam.name, image, cam.camera_info, compressed))
    return tuple(out)


def missing_topics_message(cameras: Sequence[CameraTopics], connections: Sequence[Any]) -> str:
    """One line: the topics looked for and the camera topics the recording has."""
    wanted = [t for c in cameras for t in (c.image, c.camera_info)]
    have = camera_topics_in_bag(connections)
    return (
        f"looked for {', '.join(wanted)}; the recording's camera topics: "
        f"{', '.join(have) if have else 'none'} (map them with --cameras FILE or "
        "--remap ~/input/<camera>/image:=TOPIC)"
    )


class OfflineReplay:
    """Feeds a recording's messages in log order through the front end into the pipeline."""

    def __init__(
        self,
        params: NodeConfig,
        pipeline: OccupancyPipeline,
        topics: Sequence[CameraTopics] | None = None,
        *,
        explicit_topics: bool = False,
    ) -> None:
        """topics: each camera's topics (default `/<camera lower>/image_raw[/compressed]`,
        `/<camera lower>/camera_info`); explicit_topics: taken as given, no raw/compressed
        fallback."""
        self.params = params
        self.pipeline = pipeline
        self.topics = tuple(
            topics or default_camera_topics(params.camera_names, params.compressed_cameras)
        )
        if tuple(t.name for t in self.topics) != params.camera_names:
            raise ConfigError(
                f"camera topics name {[t.name for t in self.topics]}, the parameters "
                f"camera_names {list(params.camera_names)}: they must be the same, in order"
            )
        self.explicit = explicit_topics
        self.stats = ReplayStats()
        self.frontend: FrontEnd | None = None
        self._waiting: list[tuple[Bundle[RawImage], int]] = []

    def run(
        self, bag: Path, progress: Callable[[int, int], None] | None = None
    ) -> Iterator[OccupancyResult]:
        """Results of the recording's bundles in stamp order; `progress(done, total)` after
        each message read.

        RecordingError when the recording cannot be opened or lacks every camera topic."""
        from rosbags.rosbag2 import Reader

        from flashocc_ros.msgdefs import flashocc_typestore

        store = flashocc_typestore()
        try:
            reader = Reader(bag)
            reader.open()
        except Exception as err:  # rosbags raises several untyped errors for bad files
            raise RecordingError(f"cannot open recording {bag}: {err}") from err
        try:
            topics = resolve_topics(self.topics, reader.connections, self.explicit)
            routes = self._routes(topics, reader.connections)
            params = self.params.replace(
                compressed_cameras=tuple(t.name for t in topics if t.compressed)
            )
            self.frontend = FrontEnd(
                params, input_size=self.pipeline.cfg.input_size, on_reset=self._on_reset
            )
            wanted = [c for c in reader.connections if c.topic in routes]
            total = sum(c.msgcount for c in wanted)
            for conn, log_ns, data in reader.messages(connections=wanted):
                self.stats.messages += 1
                if progress is not None:
                    progress(self.stats.messages, total)
                try:
                    msg: Any = store.deserialize_cdr(data, conn.msgtype)
                except Exception as err:  # a corrupt message: counted, the replay goes on
                    self.stats.unreadable += 1
                    LOG.debug("unreadable %s message at %d: %s", conn.topic, log_ns, err)
                    continue
                self._feed(routes[conn.topic], msg, log_ns)
                yield from self._release(log_ns, final=False)
            for bundle in self.frontend.flush():
                self._waiting.append((bundle, 0))
            yield from self._release(0, final=True)
        finally:
            reader.close()
            if self.frontend is not None:
                self.frontend.close()

    def _routes(
        self, topics: Sequence[CameraTopics], connections: Sequence[Any]
    ) -> dict[str, tuple[str, str]]:
        """topic -> (camera or '', 'image' | 'info' | 'tf' | 'tf_static') for the topics used."""
        routes: dict[str, tuple[str, str]] = {}
        types = {c.topic: c.msgtype for c in connections}
        for cam in topics:
            if types.get(cam.image) in IMAGE_TYPES:
                routes[cam.image] = (cam.name, "image")
            if types.get(cam.camera_info) == INFO_TYPE:
                routes[cam.camera_info] = (cam.name, "info")
        if not any(kind == "image" for _, kind in routes.values()):
            raise RecordingError(
                f"no camera topic found: {missing_topics_message(topics, connections)}"
            )
        for topic in ("/tf", "/tf_static"):
            if types.get(topic) == TF_TYPE:
                routes[topic] = ("", topic[1:])
        return routes

    def _feed(self, route: tuple[str, str], msg: Any, log_ns: int) -> None:
        assert self.frontend is not None
        camera, kind = route
        if kind == "image":
            for bundle in self.frontend.on_image(camera, msg, log_ns):
                self._waiting.append((bundle, log_ns))
        elif kind == "info":
            self.frontend.on_camera_info(camera, msg)
        else:
            self.frontend.on_tf(msg, kind == "tf_static", log_ns)

    def _on_reset(self, stamp_ns: int) -> None:
        """Time went backwards (the recording loops): as the node, forget history and waits."""
        self._waiting.clear()
        self.pipeline.reset()

    def _release(self, now_ns: int, *, final: bool) -> Iterator[OccupancyResult]:
        """Process waiting bundles in order: ready ones, and ones that waited tf_timeout_s of
        log time (or all, at the end)."""
        assert self.frontend is not None
        timeout_ns = round(self.params.tf_timeout_s * 1e9)
        while self._waiting:
            bundle, since = self._waiting[0]
            ready = self.frontend.ready(bundle)
            if not (ready or final or now_ns - since >= timeout_ns):
                return
            self._waiting.pop(0)
            result = self._process(bundle, waited=not ready)
            if result is not None:
                yield result

    def _process(self, bundle: Bundle[RawImage], waited: bool) -> OccupancyResult | None:
        assert self.frontend is not None
        try:
            cameras = self.frontend.assemble(bundle, waited=waited)
            result = self.pipeline.process(cameras)
        except (PipelineError, ImageDecodeError, TransformError) as err:
            key = type(err).__name__
            self.stats.failures[key] = self.stats.failures.get(key, 0) + 1
            LOG.warning("bundle %d dropped: %s", bundle.stamp_ns, err)
            return None
        self.stats.bundles += 1
        return result
