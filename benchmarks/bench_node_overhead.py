"""Row group 4: the node's work around the network per bundle, as a share of the network time.
In: six synthetic 1600x900 images as rgb8, bgr8 and JPEG messages, a TF tree with 100 Hz ego
poses, a 200x200x16 grid with 40,000 occupied voxels. Out: one row per encoding (overhead /
network ms) with the per-step medians.

The steps are the node's own objects in the node's order (FlashOccNode._on_image, _process,
_publish), without DDS:
* receive: rclpy `deserialize_message` (the executor, per image);
* sync: `FrontEnd.on_image` (message -> RawImage, trigger-cycle synchroniser) + `LatestQueue`;
* decode + TF: `FrontEnd.ready` and `assemble`;
* preprocess, postprocess: `OccupancyPipeline.process` with a backend that returns fixed
  logits at once (the network costs nothing here);
* publish: Occupancy message, `occupancy_voxels`, `voxel_markers_bytes`,
  `pointcloud2_from_voxels`, `bev_image`, latency diagnostics, each serialised as `publish`
  would, every output assumed subscribed.
The network time is this run's measurement from row group 5 (M0/M1 fp32 and fastest CPU path).
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
import torch

from benchmarks.common import Row, compare, median_stages
from flashocc_ros.classes import CLASS_NAMES, FREE_LABEL, PALETTE_RGB
from flashocc_ros.config import NUSCENES_CAMERAS, ModelConfig, model_config
from flashocc_ros.model.geometry import Calibration
from flashocc_ros.model.preprocess import preprocess_images, preprocess_images_fast
from flashocc_ros.node_config import NodeConfig
from flashocc_ros.rig import nuscenes_like_rig
from flashocc_ros.runtime.assembler import RawImage
from flashocc_ros.runtime.backend import FramePoses
from flashocc_ros.runtime.frontend import FrontEnd, raw_image
from flashocc_ros.runtime.pipeline import OccupancyPipeline, OccupancyResult, labels_from_logits
from flashocc_ros.sensing.camera_info import CameraIntrinsics
from flashocc_ros.sensing.queues import LatestQueue
from flashocc_ros.sensing.sync import Bundle
from flashocc_ros.sensing.tf_buffer import TfBuffer, matrix_to_quaternion
from flashocc_ros.sensing.voxels import (
    bev_image,
    bev_image_reference,
    occupancy_voxels,
    occupancy_voxels_reference,
)

GROUP = "4 node-overhead"
WIDTH, HEIGHT = 1600, 900
OCCUPIED = 40_000
EGO, ODOM = "base_link", "odom"
BUNDLE_PERIOD_NS = 100_000_000


def synthetic_image(seed: int) -> np.ndarray:
    """(900, 1600, 3) uint8 BGR with smooth gradients, edges and mild noise (JPEG-realistic)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    img = np.empty((HEIGHT, WIDTH, 3), dtype=np.float32)
    for c in range(3):
        fx, fy = rng.uniform(0.002, 0.02, 2).tolist()
        ph = float(rng.uniform(0, 6))
        img[..., c] = 110 + 60 * np.sin(xx * fx + ph) * np.cos(yy * fy)
    for _ in range(40):  # boxes: sharp edges like buildings and cars
        x0, y0 = int(rng.integers(0, WIDTH - 100)), int(rng.integers(0, HEIGHT - 100))
        w, h = (int(v) for v in rng.integers(20, 300, 2))
        img[y0 : y0 + h, x0 : x0 + w] = rng.uniform(0, 255, 3)
    img += rng.normal(0, 4, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


class FixedLogitsBackend:
    """Backend stand-in: returns the same logits at once (the network is timed elsewhere)."""

    name = "fixed-logits"

    def __init__(self, logits: torch.Tensor) -> None:
        self.logits = logits  # (1, X, Y, Z, cls)

    def infer(
        self, images: torch.Tensor, calib: Calibration, poses: FramePoses | None = None
    ) -> torch.Tensor:
        return self.logits

    def reset(self) -> None:
        """No history."""

    def last_stage_timings_ms(self) -> dict[str, float]:
        return {}


def frame_logits(cfg: ModelConfig) -> torch.Tensor:
    """(1, X, Y, Z, cls) logits whose arg-max has OCCUPIED non-free voxels."""
    rng = np.random.default_rng(0)
    labels = np.full(cfg.grid.shape, FREE_LABEL, dtype=np.int64)
    flat = rng.choice(labels.size, OCCUPIED, replace=False)
    labels.reshape(-1)[flat] = rng.integers(0, FREE_LABEL, OCCUPIED)
    noise = torch.from_numpy(rng.normal(0, 1, (*cfg.grid.shape, cfg.num_classes))).float()
    onehot = torch.nn.functional.one_hot(torch.from_numpy(labels), cfg.num_classes).float()
    return (noise + 8 * onehot)[None]


def tf_tree(tf: TfBuffer, frames: dict[str, str], start_ns: int, seconds: float) -> None:
    """Static base_link <- camera links (nuScenes-like rig) and odom <- base_link at 100 Hz."""
    rig = nuscenes_like_rig(WIDTH, HEIGHT)
    for cam in rig.cameras:
        m = cam.camera_to_base
        quat = matrix_to_quaternion(m[:3, :3])
        tf.set_transform(EGO, frames[cam.name], 0, m[:3, 3], quat, static=True)
    for i in range(int(seconds * 100)):
        t = i * 0.01
        yaw = 0.05 * t
        q = (0.0, 0.0, float(np.sin(yaw / 2)), float(np.cos(yaw / 2)))
        tf.set_transform(ODOM, EGO, start_ns + i * 10_000_000, (5.0 * t, 0.2 * t, 0.0), q)


def message(raw: RawImage, stamp_ns: int) -> Any:
    """A stand-in for an Image / CompressedImage message holding `raw` (no rclpy needed)."""
    header = SimpleNamespace(
        frame_id=raw.frame_id,
        stamp=SimpleNamespace(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9),
    )
    return SimpleNamespace(
        header=header, **{k: v for k, v in raw.__dict__.items() if k != "frame_id"}
    )


class RosParts:
    """The node-layer pieces when rclpy is importable (else None: bytes-only stand-ins)."""

    def __init__(self) -> None:
        try:
            from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
            from rclpy.serialization import deserialize_message, serialize_message
            from sensor_msgs.msg import CompressedImage, Image
            from std_msgs.msg import Header

            from flashocc_ros.ros import fast_msgs
        except ImportError as err:
            self.reason: str | None = f"rclpy not importable ({err}): receive/publish partial"
            return
        self.reason = None
        self.deserialize, self.serialize = deserialize_message, serialize_message
        self.Image, self.CompressedImage, self.Header = Image, CompressedImage, Header
        self.DiagnosticStatus, self.KeyValue = DiagnosticStatus, KeyValue
        self.fast_msgs = fast_msgs
        try:
            from flashocc_ros.msg import Occupancy

            self.Occupancy: Any = Occupancy
        except ImportError:
            self.Occupancy = None


class NodeBench:
    """Drives one bundle through the node's objects, timing each step."""

    def __init__(
        self, cfg: ModelConfig, encoding: str, ros: RosParts, reference: bool = False
    ) -> None:
        """reference: run the plain reference paths (sequential decoding, reference
        preprocessing and voxel outputs) instead of the fast ones, as before/after."""
        self.cfg, self.encoding, self.ros = cfg, encoding, ros
        self.voxels = occupancy_voxels_reference if reference else occupancy_voxels
        self.bev_image = bev_image_reference if reference else bev_image
        self.names = NUSCENES_CAMERAS
        self.frames = {n: f"{n.lower()}_optical" for n in self.names}
        self.start_ns = 1_700_000_000_000_000_000
        params = NodeConfig(
            camera_names=self.names,
            compressed_cameras=self.names if encoding == "jpeg" else (),
            camera_offsets_s=tuple(i * 1e-4 for i in range(len(self.names))),
            ego_frame=EGO,
            odom_frame=ODOM,
        )
        self.frontend = FrontEnd(params, decode_threads=int(reference))
        tf_tree(self.frontend.tf, self.frames, self.start_ns, 8.0)
        self.queue: LatestQueue[Bundle[RawImage]] = LatestQueue()
        rig = nuscenes_like_rig(WIDTH, HEIGHT)
        for cam in rig.cameras:
            k = tuple(float(v) for v in cam.intrinsics.ravel())
            self.frontend.infos.add(
                cam.name, 0, CameraIntrinsics(WIDTH, HEIGHT, k, self.frames[cam.name])
            )
        self.pipeline = OccupancyPipeline(
            cfg,
            FixedLogitsBackend(frame_logits(cfg)),
            preprocess=preprocess_images if reference else preprocess_images_fast,
        )
        self.payloads = [self._payload(i, n) for i, n in enumerate(self.names)]
        self.bundle_index = 0

    def _payload(self, i: int, name: str) -> bytes | RawImage:
        """Serialised image message (rclpy present) or the RawImage the node would build."""
        bgr = synthetic_image(i)
        if self.encoding == "jpeg":
            ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
            assert ok
            data, kw = buf.tobytes(), {"format": "jpeg"}
        else:
            img = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if self.encoding == "rgb8" else bgr
            data = img.tobytes()
            kw = {"encoding": self.encoding, "width": WIDTH, "height": HEIGHT, "step": WIDTH * 3}
        if self.ros.reason is not None:
            return RawImage(self.frames[name], data, **kw)  # type: ignore[arg-type]
        ros = self.ros
        if self.encoding == "jpeg":
            msg = ros.CompressedImage(format="jpeg")
        else:
            msg = ros.Image(height=HEIGHT, width=WIDTH, encoding=self.encoding, step=WIDTH * 3)
        msg.header.frame_id = self.frames[name]
        msg.data = data
        return bytes(ros.serialize(msg))

    def payload_bytes(self) -> int:
        return sum(len(p) if isinstance(p, bytes) else len(p.data) for p in self.payloads)

    def step(self) -> dict[str, float]:
        """One bundle: stage name -> ms. 'total' is the sum of the node's steps."""
        ros = self.ros
        stamp = self.start_ns + 1_000_000_000 + self.bundle_index * BUNDLE_PERIOD_NS
        self.bundle_index += 1
        ms: dict[str, float] = {}
        t0 = time.perf_counter()
        msgs = []
        for p in self.payloads:  # executor: deserialise
            if isinstance(p, RawImage):
                msgs.append(message(RawImage(**{**p.__dict__, "data": bytes(p.data)}), 0))
            else:
                kind = ros.CompressedImage if self.encoding == "jpeg" else ros.Image
                msgs.append(ros.deserialize(p, kind))
        t1 = time.perf_counter()
        bundle = None
        for i, (name, msg) in enumerate(zip(self.names, msgs, strict=True)):
            s = stamp + i * 100_000
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(s, 10**9)
            for done in self.frontend.on_image(name, msg, s):
                bundle = done
        assert bundle is not None, "bundle did not complete"
        self.queue.put(bundle)
        bundle = self.queue.get(timeout=0)
        assert bundle is not None
        t2 = time.perf_counter()
        if not self.frontend.ready(bundle):  # the node's PoseWaitList check
            raise RuntimeError("TF not available at the bundle stamps")
        cameras = self.frontend.assemble(bundle)
        t3 = time.perf_counter()
        result = self.pipeline.process(cameras)
        t4 = time.perf_counter()
        self.publish(result)
        t5 = time.perf_counter()
        ms["receive"] = (t1 - t0) * 1e3
        ms["sync"] = (t2 - t1) * 1e3
        ms["decode+tf"] = (t3 - t2) * 1e3
        ms["preprocess"] = result.timings_ms["preprocess"]
        ms["postprocess"] = result.timings_ms["postprocess"]
        ms["publish"] = (t5 - t4) * 1e3
        ms["total"] = (t5 - t0) * 1e3 - result.timings_ms["network"]
        return ms

    def publish(self, result: OccupancyResult) -> None:
        """The node's `_publish` with every output subscribed; messages serialised."""
        ros, grid, labels = self.ros, self.cfg.grid, result.labels
        if ros.reason is not None:
            labels.tobytes()
            self.voxels(labels, grid, FREE_LABEL)
            self.bev_image(labels).tobytes()
            return
        header = ros.Header(frame_id=EGO)
        header.stamp.sec, header.stamp.nanosec = divmod(result.stamp_ns, 1_000_000_000)
        if ros.Occupancy is not None:
            occ = ros.Occupancy()
            occ.header = header
            occ.model_name = self.cfg.name
            occ.size_x, occ.size_y, occ.size_z = grid.shape
            occ.labels = labels.tobytes()
            occ.class_names = list(CLASS_NAMES)
            occ.free_label = FREE_LABEL
            ros.serialize(occ)
        xyz, lab = self.voxels(labels, grid, FREE_LABEL)
        ros.fast_msgs.voxel_markers_bytes(header, xyz, lab, grid.voxel_size)
        cloud = ros.fast_msgs.pointcloud2_from_voxels(header, xyz, lab, PALETTE_RGB[lab])
        ros.serialize(cloud)
        img = self.bev_image(labels)
        msg = ros.Image(header=header, height=img.shape[0], width=img.shape[1], encoding="rgb8")
        msg.step = img.shape[1] * 3
        msg.data = img.tobytes()
        ros.serialize(msg)
        status = ros.DiagnosticStatus(
            name="latency", values=[ros.KeyValue(key=str(i), value="1.0") for i in range(8)]
        )
        ros.serialize(status)


def breakdown(ms: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.1f}" for k, v in ms.items() if k != "total")


def run(quick: bool, repeats: int, network_ms: dict[str, dict[str, float]]) -> list[Row]:
    """One row per encoding: median overhead / network ms of this run (M0 fastest first)."""
    cfg = model_config("flashocc-r50-M0")
    ros = RosParts()
    refs = [
        (n, k) for n in ("flashocc-r50-M0", "flashocc-r50", "tiny") for k in ("fastest", "fp32")
    ]
    refs = [(n, k) for n, k in refs if n in network_ms]
    if not refs:
        raise RuntimeError("node overhead needs a network time from row group 5")
    ref_name, ref_kind = refs[0]
    ref_ms = network_ms[ref_name][ref_kind]
    rows = []
    after: dict[str, float] = {}
    for encoding in ("rgb8", "bgr8", "jpeg"):
        bench = NodeBench(cfg, encoding, ros)
        med = median_stages(bench.step, repeats)
        after[encoding] = med["total"]
        fractions = {f"{n} {k}": med["total"] / network_ms[n][k] for n, k in refs}
        extra: dict[str, Any] = {
            "steps_ms": med,
            "breakdown": breakdown(med),
            "fraction_of": fractions,
            "payload_mb": bench.payload_bytes() / 1e6,
            "network_ms": network_ms,
        }
        if ros.reason is not None:
            extra["note"] = ros.reason
        rows.append(
            Row(
                GROUP,
                f"node overhead, six {WIDTH}x{HEIGHT} {encoding}",
                f"{ref_name} network ({ref_kind} CPU path, this run)",
                med["total"],
                ref_ms,
                med["total"] / ref_ms,
                "fraction",
                "<= 0.1",
                extra=extra,
            )
        )
    rows += optimisation_rows(cfg, ros, repeats)
    return rows


def optimisation_rows(cfg: ModelConfig, ros: RosParts, repeats: int) -> list[Row]:
    """Before/after of this package's node-side optimisations, measured side by side."""
    fast, plain = NodeBench(cfg, "jpeg", ros), NodeBench(cfg, "jpeg", ros, reference=True)
    raws = [
        (
            name,
            p
            if isinstance(p, RawImage)
            else raw_image(ros.deserialize(p, ros.CompressedImage), True),
        )
        for name, p in zip(fast.names, fast.payloads, strict=True)
    ]
    labels = fast.pipeline.process(
        fast.frontend.assembler.assemble([(n, 0, r) for n, r in raws])  # stamp 0: latest TF
    ).labels
    grid = cfg.grid
    decoded = fast.frontend.assembler.decode_all(raws)
    logits = frame_logits(cfg)[0]
    ms = compare(
        {
            "decode": lambda: fast.frontend.assembler.decode_all(raws),
            "decode_ref": lambda: plain.frontend.assembler.decode_all_reference(raws),
            "pre": lambda: preprocess_images_fast(decoded, cfg.input_size),
            "pre_ref": lambda: preprocess_images(decoded, cfg.input_size),
            "labels": lambda: labels_from_logits(logits, with_confidence=False),
            "labels_ref": lambda: logits.float().argmax(dim=-1).to(torch.uint8).numpy(),
            "voxels": lambda: (occupancy_voxels(labels, grid), bev_image(labels)),
            "voxels_ref": lambda: (
                occupancy_voxels_reference(labels, grid),
                bev_image_reference(labels),
            ),
        },
        repeats,
    )
    totals = compare(
        {"after": lambda: fast.step()["total"], "before": lambda: plain.step()["total"]}, repeats
    )
    fast.frontend.assembler.close()
    return [
        Row(
            GROUP,
            f"decode six JPEG, thread pool ({fast.frontend.assembler.decode_threads} threads)",
            "sequential decode (decode_all_reference)",
            ms["decode"],
            ms["decode_ref"],
            ms["decode_ref"] / ms["decode"],
            "speedup",
        ),
        Row(
            GROUP,
            "preprocess six images, boxed resampling in a thread pool",
            "preprocess_images (reference: full resize, then crop)",
            ms["pre"],
            ms["pre_ref"],
            ms["pre_ref"] / ms["pre"],
            "speedup",
        ),
        Row(
            GROUP,
            "labels: max(dim=-1).indices",
            "argmax(dim=-1) (before)",
            ms["labels"],
            ms["labels_ref"],
            ms["labels_ref"] / ms["labels"],
            "speedup",
        ),
        Row(
            GROUP,
            "occupancy_voxels + bev_image (fast paths)",
            "*_reference (before)",
            ms["voxels"],
            ms["voxels_ref"],
            ms["voxels_ref"] / ms["voxels"],
            "speedup",
        ),
        Row(
            GROUP,
            "node overhead jpeg, after optimisations",
            "same, reference paths (before)",
            totals["after"],
            totals["before"],
            totals["before"] / totals["after"],
            "speedup",
        ),
    ]
