"""The flashocc ROS 2 node: six camera streams + TF in, occupancy grids and RViz output out.
In: sensor_msgs/Image|CompressedImage + CameraInfo per camera, /tf, /tf_static. Out: ~/output/*.

Concurrency model
-----------------
* The executor (one thread, `rclpy.spin`) runs only cheap callbacks that hand each message to
  the front end (`runtime.frontend.FrontEnd`, shared with offline replay): images feed the
  trigger-cycle synchroniser, CameraInfo and /tf fill their stores. Nothing decodes or infers
  in a callback.
* The bundles one image completes (normally one) go together into a drop-oldest queue of one
  (`LatestQueue`): when inference is slower than the cameras, older bundles are dropped
  (counted as `superseded`), never queued.
* One worker thread moves them into a short `PoseWaitList` (bundles whose /tf samples or
  CameraInfo have not arrived yet; /tf can lag the images by seconds under load). It processes
  the oldest bundle whose inputs are all in, dropping older ones still waiting (counted as
  `superseded_waiting_tf`); a bundle that waited `tf_timeout_s` is processed with extrapolated
  poses (up to `tf_extrapolation_s`) or fails with the TF error. When no image has come for
  `sync_timeout_s` the worker has the synchroniser decide the bundles still waiting for frames.
  Processing = decode the images, pair CameraInfo, look up TF at each camera's stamp, run the
  pipeline (preprocess -> network -> labels) and publish. Publishers are thread-safe in rclpy;
  shared state (front end, counters) is guarded by locks.
* Diagnostics are published from a timer on the executor thread.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import Counter
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Pose
from rcl_interfaces.msg import ParameterDescriptor, ParameterType, SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.exceptions import ParameterException, ParameterUninitializedException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSCompatibility,
    QoSProfile,
    ReliabilityPolicy,
    qos_check_compatible,
)
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from flashocc_ros.classes import CLASS_NAMES, FREE_LABEL, PALETTE_RGB
from flashocc_ros.config import ConfigError
from flashocc_ros.node_config import (
    NodeConfig,
    array_item_type,
    default_values,
    input_topics,
    is_ros_node_parameter,
    node_config_from_mapping,
    parameter_docs,
    unknown_parameters_message,
)
from flashocc_ros.ros import fast_msgs
from flashocc_ros.ros.stop_signals import StopSignals
from flashocc_ros.ros.tf_msgs import TFMessage
from flashocc_ros.runtime.assembler import RawImage
from flashocc_ros.runtime.backend import BackendError
from flashocc_ros.runtime.factory import BuildOnlyDone, create_pipeline
from flashocc_ros.runtime.frontend import FrontEnd
from flashocc_ros.runtime.health import HealthBoard, HealthConfig, InputSpec, Level
from flashocc_ros.runtime.pipeline import OccupancyResult, PipelineError
from flashocc_ros.sensing.image_decode import ImageDecodeError
from flashocc_ros.sensing.queues import LatestQueue, PoseWaitList, QueueClosed
from flashocc_ros.sensing.sync import Bundle
from flashocc_ros.sensing.tf_buffer import TransformError, matrix_to_quaternion
from flashocc_ros.sensing.voxels import bev_image, occupancy_voxels

LOG = logging.getLogger(__name__)
_RUNTIME_PARAMS = {"publish_confidence", "marker_max_voxels"}


class FlashOccNode(Node):
    """FlashOCC occupancy node; see the module docstring for the concurrency model."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("flashocc", **kwargs)
        defaults = default_values()
        self._declare_parameters(defaults)
        unknown = sorted(
            n
            for n in getattr(self, "_parameter_overrides", {})  # rclpy keeps them there
            if n not in defaults and not is_ros_node_parameter(n)
        )
        if unknown:
            raise ConfigError(unknown_parameters_message(unknown))
        raw = {n: self._param_value(n, v) for n, v in defaults.items()}
        self.params: NodeConfig = node_config_from_mapping(raw)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.pipeline = create_pipeline(self.params)
        self.grid = self.pipeline.cfg.grid
        self._lock = threading.Lock()
        self.counters: Counter[str] = Counter()
        self.latency_ms: dict[str, float] = {}
        sim_time = bool(self.get_parameter("use_sim_time").value)
        self.frontend = FrontEnd(
            self.params,
            input_size=self.pipeline.cfg.input_size,
            on_reset=self._on_time_reset,
            on_refuse=self._on_refused,
            wall_clock=not sim_time,
        )
        self.queue: LatestQueue[list[Bundle[RawImage]]] = LatestQueue()
        self.waiting: PoseWaitList[Bundle[RawImage]] = PoseWaitList(self.params.tf_timeout_s)
        self._reset_waiting = threading.Event()
        self._started = self._last_image = time.monotonic()
        self._key_received: dict[int, float] = {}  # key frame stamp -> receive time (steady)
        self._watchdog_done = False
        self._inputs: dict[str, tuple[Any, InputSpec]] = {}  # key -> (subscription, spec)
        self._create_io()
        p = self.params
        self.health = HealthBoard(
            HealthConfig(
                late_s=p.health_late_s,
                missing_s=p.health_missing_s,
                recovery_s=p.health_recovery_s,
                latency_warn_s=p.latency_warn_s,
            ),
            [spec for _, spec in self._inputs.values()],
            self._started,
        )
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._run_worker, name="flashocc-worker")
        self._worker.start()
        # Steady clock: diagnostics keep coming when /clock stalls (paused bag, use_sim_time);
        # their header stamp is still the node's (possibly simulated) time.
        self.create_timer(
            self.params.diagnostics_period_s,
            self._guarded("diagnostics", self._publish_diagnostics),
            clock=Clock(clock_type=ClockType.STEADY_TIME),
        )
        self.get_logger().info(
            f"flashocc ready: model {self.pipeline.cfg.name}, backend "
            f"{self.pipeline.backend.name}, cameras {', '.join(self.params.camera_names)}"
        )

    def _declare_parameters(self, defaults: dict[str, Any]) -> None:
        docs = parameter_docs()
        for name, value in defaults.items():
            desc = ParameterDescriptor(description=docs[name])
            if value == []:  # rclpy cannot infer the type of an empty list: declare it typed
                double = array_item_type(name) == "double"
                desc.type = (
                    ParameterType.PARAMETER_DOUBLE_ARRAY
                    if double
                    else ParameterType.PARAMETER_STRING_ARRAY
                )
                kind = Parameter.Type.DOUBLE_ARRAY if double else Parameter.Type.STRING_ARRAY
                self.declare_parameter(name, kind, desc)
            else:
                self.declare_parameter(name, value, desc)

    def _param_value(self, name: str, default: Any) -> Any:
        try:
            return self.get_parameter(name).value
        except ParameterUninitializedException:  # typed declaration without an override
            return default

    # ------------------------------------------------------------------ setup
    def _create_io(self) -> None:
        p = self.params
        reliability = _reliability(p.input_reliability)
        sensor_qos = QoSProfile(
            history=HistoryPolicy.KEEP_LAST, depth=p.input_queue_depth, reliability=reliability
        )
        info_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5)
        # TF first: the executor serves subscriptions in creation order, so /tf samples
        # published before a bundle's images are in the buffer when the bundle completes.
        # Best effort by default: on a reliable reader one lost sample holds up all later ones
        # until the writer's next heartbeat (measured: /tf in 3 s bursts with images in flight).
        tf_qos = QoSProfile(depth=100, reliability=_reliability(p.tf_reliability))
        self._subscribe("tf", "/tf", TFMessage, tf_qos, lambda m: self._on_tf(m, False))
        static_qos = QoSProfile(
            depth=100,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
            reliability=ReliabilityPolicy.RELIABLE,
        )
        self._subscribe(
            "tf_static", "/tf_static", TFMessage, static_qos, lambda m: self._on_tf(m, True)
        )
        for name in p.camera_names:
            image_topic, info_topic = input_topics(name)
            image_type = CompressedImage if name in p.compressed_cameras else Image
            self._subscribe(
                f"{name}.image",
                image_topic,
                image_type,
                sensor_qos,
                lambda m, n=name: self._on_image(n, m),
                f"{name} image",
            )
            self._subscribe(
                f"{name}.camera_info",
                info_topic,
                CameraInfo,
                info_qos,
                lambda m, n=name: self._on_camera_info(n, m),
                f"{name} camera_info",
            )
        out_qos = QoSProfile(
            depth=p.output_queue_depth, reliability=_reliability(p.output_reliability)
        )
        self.pub_occ = (
            self.create_publisher(self._occupancy_type(), "~/output/occupancy", out_qos)
            if p.publish_occupancy
            else None
        )
        self.pub_markers = (
            self.create_publisher(MarkerArray, "~/output/markers", out_qos)
            if p.publish_markers
            else None
        )
        self.pub_points = (
            self.create_publisher(PointCloud2, "~/output/points", out_qos)
            if p.publish_points
            else None
        )
        self.pub_bev = (
            self.create_publisher(Image, "~/output/bev_image", out_qos)
            if p.publish_bev_image
            else None
        )
        self.pub_latency = self.create_publisher(DiagnosticStatus, "~/debug/latency_ms", out_qos)
        self.pub_diag = self.create_publisher(
            DiagnosticArray, "/diagnostics", QoSProfile(depth=10)
        )

    def _subscribe(
        self,
        key: str,
        topic: str,
        msg_type: Any,
        qos: QoSProfile,
        callback: Any,
        label: str | None = None,
    ) -> None:
        """A subscription whose callback can never raise into the executor, monitored as input
        `key`."""
        sub = self.create_subscription(msg_type, topic, self._guarded(key, callback), qos)
        type_name = f"{msg_type.__module__.split('.')[0]}/msg/{msg_type.__name__}"
        once = key == "tf_static" or key.endswith(".camera_info")  # may well be latched
        spec = InputSpec(key, label or topic.lstrip("/"), sub.topic_name, type_name, once)
        self._inputs[key] = (sub, spec)

    def _guarded(self, key: str, callback: Any) -> Any:
        """`callback` that counts and logs (throttled per input) whatever it raises."""

        def run(*args: Any) -> None:
            try:
                callback(*args)
            except Exception as err:  # a message no check foresaw: never the executor's end
                if self._stop.is_set():
                    return
                now = time.monotonic()
                self._count(f"callback_errors.{key}")
                text = f"{key}: {type(err).__name__}: {err}"
                if self.health.fault(now, f"callback.{key}", text):
                    self.get_logger().error(f"input dropped: {text}")

        return run

    @staticmethod
    def _occupancy_type() -> type:
        from flashocc_ros.msg import Occupancy  # generated by colcon

        return Occupancy  # type: ignore[no-any-return]

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        changes = {p.name: p.value for p in params}
        fixed = sorted(set(changes) - _RUNTIME_PARAMS)
        if fixed:
            return SetParametersResult(
                successful=False,
                reason=f"{', '.join(fixed)} can only be set at start (restart the node)",
            )
        try:
            new = node_config_from_mapping(
                {**{k: v for k, v in vars_of(self.params).items()}, **changes}
            )
        except ConfigError as err:
            return SetParametersResult(successful=False, reason=str(err))
        self.params = new
        self.pipeline.confidence = new.publish_confidence
        return SetParametersResult(successful=True)

    # -------------------------------------------------------------- callbacks
    def _count(self, key: str) -> None:
        with self._lock:
            self.counters[key] += 1

    def _now_ns(self) -> int:
        return int(self.get_clock().now().nanoseconds)

    def _on_image(self, name: str, msg: Image | CompressedImage) -> None:
        self._count(f"images_in.{name}")
        self._last_image = now = time.monotonic()
        self.health.arrived(f"{name}.image", now)
        if name == self.params.camera_names[0]:  # when each key frame came in, for the latency
            stamp = rclpy.time.Time.from_msg(msg.header.stamp).nanoseconds
            self._key_received[stamp] = now
            while len(self._key_received) > 64:
                del self._key_received[next(iter(self._key_received))]
        bundles = self.frontend.on_image(name, msg, self._now_ns())
        if bundles:  # the bundles one frame decides travel together (in stamp order)
            self.queue.put(bundles)

    def _on_refused(self, key: str, text: str) -> None:
        """The front end refused a message of input `key`: health, counters, a log line per
        input at most every 5 s."""
        self._count(f"refused.{key}")
        if self.health.refused(key, time.monotonic(), text):
            self.get_logger().warning(text)

    def _on_time_reset(self, stamp_ns: int) -> None:
        """Camera time went backwards (bag loop): forget the pipeline's history and waiting
        bundles. The TF buffer restarts each link on its own backward jump: clearing it here
        would also drop the new loop's /tf samples that arrived before its first image."""
        self._reset_waiting.set()  # the worker owns the wait list
        if self.queue.take() is not None:  # from before the jump: would fail on the cleared TF
            self._count("dropped_at_time_reset")
        self.pipeline.reset()
        self._count("time_resets")
        self.get_logger().warning(
            f"camera time went backwards to {stamp_ns / 1e9:.3f} s (a recording looped?): "
            "history reset"
        )

    def _on_camera_info(self, name: str, msg: CameraInfo) -> None:
        self.health.arrived(f"{name}.camera_info", time.monotonic())
        self.frontend.on_camera_info(name, msg)

    def _on_tf(self, msg: Any, static: bool) -> None:
        self._count("tf_static_in" if static else "tf_in")
        self.health.arrived("tf_static" if static else "tf", time.monotonic())
        self.frontend.on_tf(msg, static, self._now_ns())

    # ----------------------------------------------------------------- worker
    def _run_worker(self) -> None:
        while not self._stop.is_set():
            try:
                batch = self.queue.get(timeout=0.005 if len(self.waiting) else 0.1)
            except QueueClosed:
                return
            if self._reset_waiting.is_set():
                self._reset_waiting.clear()
                self._count_superseded(len(self.waiting.clear()))
            now = time.monotonic()
            if batch is None and now - self._last_image > self.params.sync_timeout_s:
                # no image for a while (recording ended, driver stopped): decide the bundles
                # still waiting for frames with what came
                batch = self.frontend.flush()
            for bundle in batch or ():
                self._count_superseded(len(self.waiting.add(bundle, now)))
            if not len(self.waiting):
                continue
            released = self.waiting.release(self.frontend.ready, now)
            self._count_superseded(len(released.superseded))
            if released.ready is not None:
                self._process_safely(released.ready, released.timed_out)

    def _count_superseded(self, n: int) -> None:
        if n:
            with self._lock:
                self.counters["superseded_waiting_tf"] += n

    def _process_safely(self, bundle: Bundle[RawImage], waited: bool) -> None:
        try:
            self._process(bundle, waited)
        except (PipelineError, ImageDecodeError, TransformError, ConfigError) as err:
            self._bundle_failed(type(err).__name__, str(err))
        except Exception as err:  # keep the node alive on anything unexpected
            if self._stop.is_set() or not self.context.ok():
                return  # shutting down (Ctrl-C / SIGTERM) while this bundle was published
            self._bundle_failed("unexpected", f"{type(err).__name__}: {err}")

    def _bundle_failed(self, kind: str, text: str) -> None:
        self._count("bundles_failed")
        if self.health.fault(time.monotonic(), f"bundle_failed.{kind}", f"bundle dropped: {text}"):
            self.get_logger().warning(f"bundle dropped: {text}")

    def _process(self, bundle: Bundle[RawImage], waited: bool) -> None:
        t0 = time.perf_counter()
        cameras = self.frontend.assemble(bundle, waited=waited)
        t1 = time.perf_counter()
        result = self.pipeline.process(cameras)
        t2 = time.perf_counter()
        header = Header(frame_id=self.params.ego_frame)
        header.stamp = rclpy.time.Time(nanoseconds=result.stamp_ns).to_msg()
        self._publish(header, result)
        t3 = time.perf_counter()
        timings = {"decode_tf": (t1 - t0) * 1e3, **result.timings_ms}
        timings["publish"] = (t3 - t2) * 1e3
        timings["total"] = (t3 - t0) * 1e3
        with self._lock:
            self.latency_ms = timings
            self.counters["bundles_processed"] += 1
        now = time.monotonic()
        received = self._key_received.get(result.stamp_ns, now)
        self.health.published(now, now - received)  # key frame in -> grid out, seconds
        self.pub_latency.publish(
            DiagnosticStatus(
                name=f"flashocc latency ms, bundle {result.stamp_ns}",
                values=[KeyValue(key=k, value=f"{v:.3f}") for k, v in timings.items()],
            )
        )

    def _publish(self, header: Header, result: OccupancyResult) -> None:
        labels = result.labels
        if self.pub_occ is not None and self.pub_occ.get_subscription_count() > 0:
            self.pub_occ.publish(self._occupancy_msg(header, result))
        need_voxels = any(
            p is not None and p.get_subscription_count() > 0
            for p in (self.pub_markers, self.pub_points)
        )
        if need_voxels:
            xyz, lab = occupancy_voxels(labels, self.grid, FREE_LABEL)
            if self.pub_markers is not None and self.pub_markers.get_subscription_count() > 0:
                cap = self.params.marker_max_voxels
                self.pub_markers.publish(
                    fast_msgs.voxel_markers_bytes(
                        header, xyz, lab, self.grid.voxel_size, max_voxels=cap or None
                    )
                )
            if self.pub_points is not None and self.pub_points.get_subscription_count() > 0:
                self.pub_points.publish(
                    fast_msgs.pointcloud2_from_voxels(header, xyz, lab, PALETTE_RGB[lab])
                )
        if self.pub_bev is not None and self.pub_bev.get_subscription_count() > 0:
            img = bev_image(labels)  # (X, Y, 3) rgb8, top-left = front-left corner
            msg = Image(
                header=header,
                height=img.shape[0],
                width=img.shape[1],
                encoding="rgb8",
                step=img.shape[1] * 3,
            )
            msg.data = img.tobytes()
            self.pub_bev.publish(msg)

    def _occupancy_msg(self, header: Header, result: OccupancyResult) -> Any:
        occ = self._occupancy_type()()
        g = self.grid
        occ.header = header
        occ.model_name = self.pipeline.cfg.name
        occ.origin.position.x, occ.origin.position.y = g.x_min, g.y_min
        occ.origin.position.z = g.z_min
        occ.origin.orientation.w = 1.0
        occ.voxel_size.x = occ.voxel_size.y = occ.voxel_size.z = g.voxel_size
        occ.size_x, occ.size_y, occ.size_z = g.shape
        occ.layout = occ.LAYOUT_XYZ_Z_FASTEST
        occ.labels = result.labels.tobytes()
        occ.class_names = list(CLASS_NAMES)
        occ.free_label = FREE_LABEL
        if result.confidence is not None:
            occ.confidence = result.confidence.tobytes()
        occ.camera_names = list(result.camera_names)
        occ.camera_stamps = [
            rclpy.time.Time(nanoseconds=s).to_msg() for s in result.camera_stamps_ns
        ]
        occ.ego_pose = pose_msg(result.ego_pose)
        if result.camera_poses is not None:
            occ.camera_poses = [pose_msg(m) for m in result.camera_poses]
        return occ

    # ------------------------------------------------------------ diagnostics
    def _publish_diagnostics(self) -> None:
        """One DiagnosticArray: the summary, processing (with every counter), output and one
        status per input (diagnostic_msgs conventions: level, message, key-values)."""
        now = time.monotonic()
        fe = self.frontend
        sync_stats = fe.sync.stats()
        self.health.missing_frames(dict(sync_stats.missing), now)
        statuses = self.health.statuses(now, self._silence_cause)
        self._startup_watchdog(now)
        hardware = self.pipeline.backend.name
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        for st in statuses:
            values = st.values
            if st.name == "flashocc: processing":
                values = tuple(self._processing_values(sync_stats, now).items())
            arr.status.append(
                DiagnosticStatus(
                    level=_LEVELS[st.level],
                    name=st.name,
                    hardware_id=hardware,
                    message=st.message,
                    values=[KeyValue(key=k, value=v) for k, v in values],
                )
            )
        self.pub_diag.publish(arr)

    def _processing_values(self, sync_stats: Any, now: float) -> dict[str, str]:
        with self._lock:
            counters = dict(self.counters)
            latency = dict(self.latency_ms)
        fe = self.frontend
        values = {f"count.{k}": str(v) for k, v in sorted(counters.items())}
        values.update({f"drop.{k.name.lower()}": str(v) for k, v in sync_stats.drops.items()})
        values.update({f"missing_frame.{k}": str(v) for k, v in sync_stats.missing.items()})
        values.update({f"filled_frame.{k}": str(v) for k, v in sync_stats.filled.items()})
        if sync_stats.period_ns:
            values["sync.period_ms"] = f"{sync_stats.period_ns / 1e6:.1f}"
        for cam, phase in sync_stats.phases_ns.items():
            values[f"sync.offset_ms.{cam}"] = "unknown" if phase is None else f"{phase / 1e6:.1f}"
        values["tf.extrapolated"] = str(fe.extrapolated)
        values["tf.odometry_resets"] = str(fe.odometry_resets)
        values["tf.jumps_back"] = str(fe.tf.jumps)
        values["queue.superseded"] = str(self.queue.dropped)
        values.update({f"latency_ms.{k}": f"{v:.1f}" for k, v in latency.items()})
        values["backend"] = self.pipeline.backend.name
        resets = dict(self.pipeline.history_resets)
        values.update({f"history_reset.{k.replace(' ', '_')}": str(v) for k, v in resets.items()})
        active = self.health.faults.active(now, self.params.health_recovery_s)
        values.update({f"fault.{k}": v for k, v in active.items()})
        return values

    def _silence_cause(self, key: str) -> str:
        """Why input `key` may be silent, from the graph: no publisher, another type, QoS."""
        sub, spec = self._inputs[key]
        try:
            pubs = self.get_publishers_info_by_topic(spec.topic)
        except Exception:  # the graph may be unavailable while shutting down
            return ""
        if not pubs:
            return "no publisher"
        types = sorted({p.topic_type for p in pubs})
        if spec.type_name not in types:
            hint = (
                " (list the camera in compressed_cameras, or not)"
                if key.endswith(".image")
                else ""
            )
            return (
                f"it is published as {', '.join(types)}, the node expects {spec.type_name}{hint}"
            )
        for info in pubs:
            compatible, reason = qos_check_compatible(info.qos_profile, sub.qos_profile)
            if compatible == QoSCompatibility.ERROR:
                return f"QoS incompatible with a publisher: {reason}"
        return f"{len(pubs)} publisher(s) of the right type and QoS, nothing received yet"

    def _startup_watchdog(self, now: float) -> None:
        """Once: no grid `startup_watchdog_s` after start -> one line naming the silent inputs."""
        if self._watchdog_done or self.health.output.count:
            return
        if now - self._started < self.params.startup_watchdog_s:
            return
        self._watchdog_done = True
        silent = self.health.silent()
        parts = [f"{m.topic} ({self._silence_cause(k)})" for k, m in self.health.inputs.items()
                 if m in silent]  # fmt: skip
        missing = dict(self.frontend.sync.stats().missing)
        why = f"silent inputs: {'; '.join(parts)}" if parts else "every input has sent messages"
        if missing:
            why += f"; cycles missing frames of {missing}"
        self.get_logger().warning(
            f"no occupancy grid {now - self._started:.0f} s after start: {why}"
        )

    def destroy_node(self) -> None:
        self._stop.set()
        self.queue.close()
        self._worker.join(timeout=5.0)
        self.frontend.close()
        super().destroy_node()


_LEVELS = {
    Level.OK: DiagnosticStatus.OK,
    Level.WARN: DiagnosticStatus.WARN,
    Level.ERROR: DiagnosticStatus.ERROR,
}


def pose_msg(m: Any) -> Pose:
    """(4, 4) rigid transform (or None: identity) -> geometry_msgs/Pose."""
    pose = Pose()
    pose.orientation.w = 1.0
    if m is None:
        return pose
    pose.position.x, pose.position.y, pose.position.z = (float(v) for v in m[:3, 3])
    o = pose.orientation
    o.x, o.y, o.z, o.w = matrix_to_quaternion(m[:3, :3])
    return pose


def _reliability(name: str) -> ReliabilityPolicy:
    """'best_effort' | 'reliable' (validated by NodeConfig) -> the rclpy policy."""
    return ReliabilityPolicy.BEST_EFFORT if name == "best_effort" else ReliabilityPolicy.RELIABLE


def vars_of(cfg: NodeConfig) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.__dict__.items()}


def main(args: list[str] | None = None) -> int:
    """Entry point of `ros2 run flashocc_ros flashocc_node`: exit 0 after SIGINT / SIGTERM (no
    traceback, however many arrive), 2 when it cannot start (one line saying why)."""
    logging.basicConfig(level=logging.INFO)
    with StopSignals() as stop:
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
        try:
            node = FlashOccNode()
        except BuildOnlyDone as done:
            logging.getLogger("flashocc").info("%s", done.message)
            rclpy.try_shutdown()
            return 0
        except (ConfigError, OSError, ParameterException, BackendError) as err:
            logging.getLogger("flashocc").error("cannot start: %s", err)
            rclpy.try_shutdown()
            return 2
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        try:
            while not stop.requested and rclpy.ok():
                executor.spin_once(timeout_sec=0.1)
        except ExternalShutdownException:
            pass
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):  # stopping already: later ones too
                signal.signal(sig, signal.SIG_IGN)
            executor.shutdown()
            node.destroy_node()
            rclpy.try_shutdown()
    for sig in (signal.SIGINT, signal.SIGTERM):  # StopSignals restored the defaults
        signal.signal(sig, signal.SIG_IGN)
    return 0
