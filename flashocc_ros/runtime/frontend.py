"""The one front end of the node and of offline replay: messages in, network inputs out (ROS-free).
In: image, CameraInfo and TF messages (rclpy or rosbags objects: the same field names), one at a
time in arrival order. Out: synchronised bundles and, per bundle, `CameraInput`s for the pipeline.

Owns everything between the wire and the pipeline, so that a recording gives the same grids
live and offline: input checks (a refused message is counted and never reaches a grid), the
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
        on_reset: Callable[[int], None] | None = None,
        decode_threads: int = 0,
    ) -> None:
        """on_reset(stamp_ns): camera time went backwards (bag loop); called outside locks."""
        self.params = params
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

    # -- input ---------------------------------------------------------------------------------

    def _reject(self, key: str, text: str) -> None:
        with self._lock:
            self.rejected[key] += 1
            self.last_rejection[key] = text

    def on_image(self, camera: str, msg: Any) -> list[Bundle[RawImage]]:
        """One Image / CompressedImage of `camera`; returns the bundles it completes."""
        stamp = stamp_ns(msg.header)
        if stamp <= 0:
            self._reject(f"image_stamp.{camera}", f"camera {camera}: image stamp {stamp} ns")
            return []
        self.infos.note_image(camera, stamp)
        return self.sync.add(camera, stamp, raw_image(msg, camera in self.compressed))

    def on_camera_info(self, camera: str, msg: Any) -> None:
        """One CameraInfo of `camera` (refused when it cannot describe an image)."""
        k = tuple(float(v) for v in msg.k)
        info = CameraIntrinsics(int(msg.width), int(msg.height), k, str(msg.header.frame_id))
        problem = check_intrinsics(info)
        if problem:
            self._reject(f"camera_info.{camera}", f"camera {camera}: CameraInfo {problem}")
            return
        self.infos.add(camera, stamp_ns(msg.header), info)

    def on_tf(self, msg: Any, static: bool) -> None:
        """A tf2_msgs/TFMessage from /tf or (static) /tf_static."""
        for t in msg.transforms:
            tr, q = t.transform.translation, t.transform.rotation
            try:
                self.tf.set_transform(
                    str(t.header.frame_id),
                    str(t.child_frame_id),
                    stamp_ns(t.header),
                    (tr.x, tr.y, tr.z),
                    (q.x, q.y, q.z, q.w),
                    static=static,
                )
            except (ValueError, TransformError) as err:
                self._reject("tf", str(err))

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


def check_intrinsics(info: CameraIntrinsics) -> str:
    """'' when a CameraInfo can describe an image, else what is wrong with it."""
    if len(info.k) != 9 or not all(math.isfinite(v) for v in info.k):
        return "K must hold 9 finite numbers"
    if info.width <= 0 or info.height <= 0:
        return f"has no image size ({info.width}x{info.height})"
    fx, fy = info.k[0], info.k[4]
    if fx <= 0 or fy <= 0:
        return f"focal lengths fx={fx}, fy={fy} must be > 0"
    return ""
