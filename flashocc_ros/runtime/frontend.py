"""The one front end of the node and of offline replay: messages in, network inputs out (ROS-free).
In: image, CameraInfo and TF messages (rclpy or rosbags objects: the same field names), one at a
time in arrival order. Out: synchronised bundles and, per bundle, `CameraInput`s for the pipeline.

Owns everything between the wire and the pipeline, so that a recording gives the same grids
live and offline: plausibility checks (`sensing.plausibility`; a refused message is counted,
reported through `on_refuse` and never reaches a grid), the
trigger-cycle synchroniser (`sensing.sync`), the TF buffer (`sensing.tf_buffer`), CameraInfo
pairing by stamp (`sensing.camera_info`), decoding and the per-camera TF lookups
(`runtime.assembler`). Callers decide only *when* a bundle is assembled: as soon as `ready` says
its /tf samples and CameraInfo are in, or after waiting `tf_timeout_s` for them (`waited=True`:
then a stamp up to `tf_extrapolation_s` past the /tf samples is extrapolated, counted).

Thread-safety: the `on_*` methods may be called from several executor threads; `ready` and
`assemble` from one worker thread.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
from collections.abc import Callable
from typing import Any

from flashocc_ros.node_config import NodeConfig
from flashocc_ros.runtime.assembler import BundleAssembler, RawImage
from flashocc_ros.runtime.pipeline import CameraInput
from flashocc_ros.sensing.camera_info import CameraInfoStore, CameraIntrinsics
from flashocc_ros.sensing.image_decode import ImageDecodeError, check_raw_layout, compressed_size
from flashocc_ros.sensing.plausibility import (
    MotionGuard,
    Sample,
    StampGuard,
    image_size_problem,
    intrinsics_problem,
)
from flashocc_ros.sensing.sync import Bundle, BundleSynchronizer, MissingRule, SyncConfig
from flashocc_ros.sensing.tf_buffer import TfBuffer, TransformError

LOG = logging.getLogger(__name__)
NS = 1_000_000_000


def stamp_ns(header: Any) -> int:
    """builtin_interfaces/Time of a header -> integer nanoseconds (may be negative)."""
    return int(header.stamp.sec) * NS + int(header.stamp.nanosec)


def sync_config(params: NodeConfig) -> SyncConfig:
    """The synchroniser settings of the node parameters."""
    offsets = params.camera_offsets_s
    return SyncConfig(
        params.camera_names,
        tolerance_ns=round(params.sync_tolerance_s * NS),
        offsets_ns=tuple(round(o * NS) for o in offsets) if offsets else None,
        timeout_ns=round(params.sync_timeout_s * NS),
        missing=MissingRule(params.sync_missing),
        fill_tolerance_ns=max(
            round(params.sync_fill_tolerance_s * NS), round(params.sync_tolerance_s * NS)
        ),
    )


def raw_image(msg: Any, compressed: bool) -> RawImage:
    """An Image / CompressedImage message -> RawImage. Raw pixels stay a view of the message's
    buffer (no copy of a 4 MB 1600x900 image; the view keeps the buffer alive)."""
    if compressed:
        return RawImage(str(msg.header.frame_id), bytes(msg.data), format=str(msg.format))
    data = msg.data
    return RawImage(
        str(msg.header.frame_id),
        bytes(data) if isinstance(data, list | tuple) else memoryview(data).cast("B"),
        encoding=str(msg.encoding),
        width=int(msg.width),
        height=int(msg.height),
        step=int(msg.step),
        is_bigendian=bool(msg.is_bigendian),
    )


class FrontEnd:
    """Input checks, synchroniser, TF buffer, CameraInfo pairing and assembly of bundles."""

    def __init__(
        self,
        params: NodeConfig,
        *,
        input_size: tuple[int, int] | None = None,
        on_reset: Callable[[int], None] | None = None,
        on_refuse: Callable[[str, str], None] | None = None,
        decode_threads: int = 0,
        wall_clock: bool = False,
    ) -> None:
        """input_size: the network input (H, W), for the smallest usable image;
        on_reset(stamp_ns): camera time went backwards (bag loop); called outside locks;
        on_refuse(input, why): a message of input '<camera>.image', '<camera>.camera_info',
        'tf' or 'tf_static' was refused; wall_clock: receive times are the wall clock (not sim
        time), so `max_stamp_age_s` applies."""
        self.params = params
        scale = params.min_image_scale
        h, w = input_size if input_size is not None else (1, 1)
        self.min_size = (max(1, math.ceil(scale * w)), max(1, math.ceil(scale * h)))
        self.stamp_guard = StampGuard(
            round(params.max_stamp_skew_s * NS), round(params.max_stamp_age_s * NS)
        )
        self.motion_guard = MotionGuard(params.tf_max_speed_mps, params.tf_max_angular_rate_dps)
        self.wall_clock = wall_clock
        self._on_refuse = on_refuse
        self.cameras = params.camera_names
        self.compressed = frozenset(params.compressed_cameras)
        self.tf = TfBuffer()
        self.infos = CameraInfoStore(self.cameras)
        self.sync: BundleSynchronizer[RawImage] = BundleSynchronizer(
            sync_config(params), on_reset=on_reset
        )
        self.assembler = BundleAssembler(
            self.cameras,
            self.tf,
            self.infos,
            ego_frame=params.ego_frame,
            odom_frame=params.odom_frame,
            max_pixels=params.max_image_pixels,
            decode_threads=decode_threads,
        )
        self._extrapolate_ns = round(params.tf_extrapolation_s * NS)
        self._lock = threading.Lock()
        self.rejected: collections.Counter[str] = collections.Counter()  # reason key -> count
        self.last_rejection: dict[str, str] = {}  # reason key -> the latest message text
        self.extrapolated = 0  # bundles whose poses were extrapolated after waiting
        self.odometry_resets = 0  # dynamic links restarted after a consistent jump

    # -- input ---------------------------------------------------------------------------------

    def _reject(self, key: str, text: str) -> None:
        with self._lock:
            self.rejected[key] += 1
            self.last_rejection[key] = text
        if self._on_refuse is not None:
            self._on_refuse(key, text)

    def on_image(self, camera: str, msg: Any, receive_ns: int) -> list[Bundle[RawImage]]:
        """One Image / CompressedImage of `camera` received at `receive_ns` (the node's clock,
        or the recording's log time); returns the bundles it completes."""
        stamp = stamp_ns(msg.header)
        raw = raw_image(msg, camera in self.compressed)
        problem = self.stamp_guard.check(stamp, receive_ns, self.wall_clock)
        if not problem:
            problem = self._image_problem(raw)
        if problem:
            self._reject(f"{camera}.image", f"camera {camera}: image refused: {problem}")
            return []
        self.infos.note_image(camera, stamp)
        return self.sync.add(camera, stamp, raw)

    def _image_problem(self, raw: RawImage) -> str:
        """'' when the image's layout and size are usable (header only, no decoding)."""
        try:
            if raw.compressed:
                width, height = compressed_size(raw.format, raw.data)
            else:
                width, height = raw.width, raw.height
                check_raw_layout(
                    raw.encoding,
                    width,
                    height,
                    raw.step,
                    memoryview(raw.data).nbytes,
                    self.params.max_image_pixels,
                )
        except ImageDecodeError as err:
            return str(err)
        return image_size_problem(width, height, self.min_size)

    def on_camera_info(self, camera: str, msg: Any) -> None:
        """One CameraInfo of `camera` (refused when it cannot describe a usable image)."""
        k = tuple(float(v) for v in msg.k)
        info = CameraIntrinsics(int(msg.width), int(msg.height), k, str(msg.header.frame_id))
        p = self.params
        problem = intrinsics_problem(
            info, self.min_size, p.focal_range_rel, p.principal_point_margin_rel
        )
        if problem:
            self._reject(f"{camera}.camera_info", f"camera {camera}: CameraInfo {problem}")
            return
        self.infos.add(camera, stamp_ns(msg.header), info)

    def on_tf(self, msg: Any, static: bool, receive_ns: int = 0) -> None:
        """A tf2_msgs/TFMessage from /tf or (static) /tf_static, received at `receive_ns`."""
        key = "tf_static" if static else "tf"
        for t in msg.transforms:
            parent, child = str(t.header.frame_id), str(t.child_frame_id)
            tr, q = t.transform.translation, t.transform.rotation
            sample = Sample(
                stamp_ns(t.header),
                (float(tr.x), float(tr.y), float(tr.z)),
                (float(q.x), float(q.y), float(q.z), float(q.w)),
            )
            problem = "" if static else self._dynamic_problem(parent, child, sample, receive_ns)
            if problem:
                self._reject(key, f"{parent} <- {child}: {problem}")
                continue
            try:
                self.tf.set_transform(
                    parent, child, sample.stamp_ns, sample.translation, sample.rotation,
                    static=static,
                )  # fmt: skip
            except (ValueError, TransformError) as err:
                self._reject(key, str(err))

    def _dynamic_problem(self, parent: str, child: str, sample: Sample, receive_ns: int) -> str:
        """Stamp and motion checks of a /tf sample; restarts the link on an odometry reset."""
        problem = self.stamp_guard.check(sample.stamp_ns, receive_ns, self.wall_clock)
        if problem or not all(math.isfinite(v) for v in (*sample.translation, *sample.rotation)):
            return problem or "non-finite transform"
        if max(abs(v) for v in sample.translation) > 1e8:  # 100,000 km: UTM and ECEF fit
            return f"translation {sample.translation} m is not on this planet"
        near = self.tf.nearest_sample(parent, child, sample.stamp_ns)
        nearest = None
        if near is not None:
            t, q = near[1], near[2]
            nearest = Sample(near[0], (t[0], t[1], t[2]), (q[0], q[1], q[2], q[3]))
        problem, restart = self.motion_guard.check(child, sample, nearest)
        if restart:
            LOG.warning(
                "%s <- %s: odometry jumped and stayed: the link starts again", parent, child
            )
            with self._lock:
                self.odometry_resets += 1
            self.tf.restart_link(child)
            for s in restart[:-1]:
                self.tf.set_transform(parent, child, s.stamp_ns, s.translation, s.rotation)
        return problem

    def flush(self) -> list[Bundle[RawImage]]:
        """The input ended: the bundles that were waiting for frames, decided with what came."""
        return self.sync.flush()

    # -- worker --------------------------------------------------------------------------------

    def ready(self, bundle: Bundle[RawImage]) -> bool:
        """True once every camera's CameraInfo is final and /tf covers every stamp (samples on
        both sides: interpolation, no extrapolation)."""
        for f in bundle.frames:
            if not self.infos.settled(f.camera, f.stamp_ns):
                return False
        odom, ego = self.params.odom_frame, self.params.ego_frame
        return not odom or all(self.tf.can_transform(odom, ego, s) for s in bundle.stamps_ns)

    def assemble(self, bundle: Bundle[RawImage], *, waited: bool = False) -> list[CameraInput]:
        """Decode and look up a bundle -> CameraInputs in model order. `waited`: the caller
        gave up waiting for /tf, so poses may be extrapolated up to `tf_extrapolation_s`.

        Raises PipelineError, ImageDecodeError or TransformError naming the camera."""
        extrapolate = self._extrapolate_ns if waited else 0
        cameras = self.assembler.assemble(
            [(f.camera, f.stamp_ns, f.payload) for f in bundle.frames], extrapolate
        )
        if waited and not self.ready(bundle):
            with self._lock:
                self.extrapolated += 1
        return cameras

    def close(self) -> None:
        """Stop the decoding threads."""
        self.assembler.close()
