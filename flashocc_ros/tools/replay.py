"""Offline replay: runs a rosbag2 through the node's own pipeline without any ROS install.
In: a bag with camera images, CameraInfo, /tf, /tf_static. Out: <out>/<stamp_ns>.npz per bundle.

Uses the same synchroniser, TF buffer, assembler and pipeline objects as the node, so its labels
equal the node's for the same bundles. `python -m flashocc_ros.tools.replay BAG --out DIR
[--param backend=onnxruntime --param engine_path=EXPORT ...]`: any node parameter, so every
backend (and M2's history) can be checked on a bag without ROS.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flashocc_ros.config import ConfigError
from flashocc_ros.msgdefs import flashocc_typestore
from flashocc_ros.node_config import NodeConfig, node_config_from_mapping, parse_param_items
from flashocc_ros.runtime.assembler import BundleAssembler, CameraIntrinsics, RawImage
from flashocc_ros.runtime.pipeline import OccupancyPipeline, OccupancyResult, PipelineError
from flashocc_ros.safe_io import OutputExistsError, disk_error_line, save_npz
from flashocc_ros.sensing.image_decode import ImageDecodeError
from flashocc_ros.sensing.sync import Bundle, BundleSynchronizer
from flashocc_ros.sensing.tf_buffer import TfBuffer, TransformError

LOG = logging.getLogger(__name__)


def _stamp(header: Any) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def _camera_by_topic(reader: Any, cameras: tuple[str, ...]) -> dict[str, tuple[str, str]]:
    """topic -> (camera, kind) with kind 'image' | 'compressed' | 'info', by topic name."""
    out: dict[str, tuple[str, str]] = {}
    for conn in reader.connections:
        for cam in cameras:
            low = cam.lower()
            if conn.topic == f"/{low}/camera_info":
                out[conn.topic] = (cam, "info")
            elif conn.topic == f"/{low}/image_raw":
                out[conn.topic] = (cam, "image")
            elif conn.topic == f"/{low}/image_raw/compressed":
                out[conn.topic] = (cam, "compressed")
    return out


@dataclass
class ReplayStats:
    bundles: int = 0
    failures: dict[str, int] = field(default_factory=dict)


class OfflineReplay:
    """Feeds bag messages in log order into sync/TF/assembler/pipeline; yields results."""

    def __init__(self, params: NodeConfig, pipeline: OccupancyPipeline) -> None:
        self.params = params
        self.pipeline = pipeline
        self.tf = TfBuffer(tolerance_ns=int(params.tf_tolerance_s * 1e9))
        self.sync: BundleSynchronizer[RawImage] = BundleSynchronizer(
            params.camera_names, slop_ns=int(params.sync_slop_s * 1e9)
        )
        self.assembler = BundleAssembler(
            params.camera_names,
            self.tf,
            ego_frame=params.ego_frame,
            odom_frame=params.odom_frame,
            max_pixels=params.max_image_pixels,
        )
        self.stats = ReplayStats()

    def run(self, bag: Path) -> Iterator[OccupancyResult]:
        from rosbags.rosbag2 import Reader

        store = flashocc_typestore()
        with Reader(bag) as reader:
            routes = _camera_by_topic(reader, self.params.camera_names)
            wanted = [c for c in reader.connections if c.topic in routes or "tf" in c.topic]
            pending: Bundle[RawImage] | None = None
            for conn, _, data in reader.messages(connections=wanted):
                msg: Any = store.deserialize_cdr(data, conn.msgtype)
                if conn.topic in ("/tf", "/tf_static"):
                    for t in msg.transforms:
                        tr, q = t.transform.translation, t.transform.rotation
                        self.tf.set_transform(
                            t.header.frame_id,
                            t.child_frame_id,
                            _stamp(t.header),
                            (tr.x, tr.y, tr.z),
                            (q.x, q.y, q.z, q.w),
                            static=conn.topic == "/tf_static",
                        )
                    continue
                cam, kind = routes[conn.topic]
                if kind == "info":
                    info = CameraIntrinsics(
                        int(msg.width), int(msg.height), tuple(msg.k), msg.header.frame_id
                    )
                    self.assembler.set_camera_info(cam, info)
                    continue
                # A completed bundle runs when the next image arrives, so CameraInfo messages
                # logged right after their image are in (the node's worker lags the same way).
                if pending is not None:
                    yield from self._process(pending)
                pending = self.sync.add(cam, _stamp(msg.header), _raw(msg, kind))
            if pending is not None:
                yield from self._process(pending)

    def _process(self, bundle: Bundle[RawImage]) -> Iterator[OccupancyResult]:
        try:
            cameras = self.assembler.assemble(
                [(f.camera, f.stamp_ns, f.payload) for f in bundle.frames]
            )
            result = self.pipeline.process(cameras)
        except (PipelineError, ImageDecodeError, TransformError) as err:
            key = type(err).__name__
            self.stats.failures[key] = self.stats.failures.get(key, 0) + 1
            LOG.warning("bundle %d dropped: %s", bundle.stamp_ns, err)
            return
        self.stats.bundles += 1
        yield result


def _raw(msg: Any, kind: str) -> RawImage:
    data = bytes(np.asarray(msg.data, dtype=np.uint8))
    if kind == "compressed":
        return RawImage(msg.header.frame_id, data, format=msg.format)
    return RawImage(
        msg.header.frame_id,
        data,
        encoding=msg.encoding,
        width=int(msg.width),
        height=int(msg.height),
        step=int(msg.step),
        is_bigendian=bool(msg.is_bigendian),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flashocc-replay", description=__doc__)
    parser.add_argument("bag", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="folder for <stamp_ns>.npz")
    parser.add_argument("--model-config", default="demo")
    parser.add_argument("--weights", default="")
    parser.add_argument("--compressed", action="store_true", help="cameras are jpeg/png")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace .npz files already in --out"
    )
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any node parameter, e.g. --param backend=onnxruntime --param engine_path=DIR",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from flashocc_ros.runtime.backend import BackendError
    from flashocc_ros.runtime.factory import create_pipeline

    try:
        params = node_config_from_mapping(
            {
                "model_config": args.model_config,
                "weights": args.weights,
                **parse_param_items(args.param),
            }
        )
        if args.compressed:
            params = params.replace(compressed_cameras=params.camera_names)
        if not args.bag.exists():
            raise ConfigError(f"bag not found: {args.bag}")
        old = sorted(args.out.glob("*.npz")) if args.out.is_dir() and not args.overwrite else []
        if old:
            raise OutputExistsError(
                f"--out {args.out} already holds {len(old)} .npz files (e.g. {old[0].name}); "
                "pass --overwrite to replace them, or choose another --out"
            )
        pipeline = create_pipeline(params)
    except (ConfigError, BackendError, OSError) as err:
        LOG.error("flashocc-replay: %s", err)
        return 2
    replay = OfflineReplay(params, pipeline)
    t0 = time.perf_counter()
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        LOG.error("flashocc-replay: %s", disk_error_line(err, args.out))
        return 1
    for written, result in enumerate(replay.run(args.bag)):
        target = args.out / f"{result.stamp_ns}.npz"
        try:
            save_npz(target, {"semantics": result.labels})  # the whole file or none (atomic)
        except OSError as err:
            LOG.error(
                "flashocc-replay: %s; the %d grids written before it are complete",
                disk_error_line(err, target),
                written,
            )
            return 1
    LOG.info(
        "%d bundles in %.1f s -> %s (dropped: %s)",
        replay.stats.bundles,
        time.perf_counter() - t0,
        args.out,
        replay.stats.failures or "none",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
