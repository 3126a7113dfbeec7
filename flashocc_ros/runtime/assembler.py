"""Turns a synchronised bundle of raw camera frames + TF into pipeline inputs (ROS-free).
In: per camera (stamp, RawImage), a CameraInfoStore and a TfBuffer. Out: list[CameraInput].

Part of the front end (`runtime.frontend`) the node and offline replay share. The N images of a
bundle are decoded in a small thread pool (`decode_all`; OpenCV releases the GIL, so JPEG
decoding uses every core); `decode_all_reference` is the plain sequential loop beside it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from flashocc_ros.runtime.pipeline import CameraInput, PipelineError
from flashocc_ros.sensing.camera_info import CameraInfoStore
from flashocc_ros.sensing.image_decode import ImageDecodeError, decode_compressed, decode_image
from flashocc_ros.sensing.tf_buffer import TfBuffer, TransformError


@dataclass(frozen=True)
class RawImage:
    """An undecoded image as it arrived: raw (`encoding` set) or compressed (`format` set)."""

    frame_id: str
    data: bytes | memoryview  # raw: a view of the message's buffer (no copy)
    encoding: str = ""
    width: int = 0
    height: int = 0
    step: int = 0
    is_bigendian: bool = False
    format: str = ""  # CompressedImage.format ("jpeg", "png", "bgr8; jpeg compressed bgr8")

    @property
    def compressed(self) -> bool:
        return bool(self.format)


class BundleAssembler:
    """Decodes images, pairs each with its CameraInfo and looks up TF at each camera's stamp."""

    def __init__(
        self,
        camera_names: Sequence[str],
        tf: TfBuffer,
        infos: CameraInfoStore,
        *,
        ego_frame: str = "base_link",
        odom_frame: str = "odom",
        max_pixels: int = 16_000_000,
        decode_threads: int = 0,
    ) -> None:
        """odom_frame: '' = no odometry (static extrinsics, no ego poses); decode_threads:
        images decoded in parallel; 0 = one per camera up to the CPU count, 1 = sequential
        (`decode_all_reference`)."""
        self.camera_names = tuple(camera_names)
        self.tf = tf
        self.infos = infos
        self.ego_frame = ego_frame
        self.odom_frame = odom_frame
        self.max_pixels = max_pixels
        cpus = os.cpu_count() or 1
        self.decode_threads = decode_threads or min(len(self.camera_names), cpus)
        self._pool: ThreadPoolExecutor | None = None

    def decode(self, camera: str, image: RawImage) -> np.ndarray:
        """(H, W, 3) uint8 BGR; ImageDecodeError names the camera and the problem."""
        try:
            if image.compressed:
                return decode_compressed(image.format, image.data, max_pixels=self.max_pixels)
            return decode_image(
                image.encoding,
                image.width,
                image.height,
                image.step,
                image.data,
                is_bigendian=image.is_bigendian,
                max_pixels=self.max_pixels,
            )
        except ImageDecodeError as err:
            raise ImageDecodeError(f"camera {camera}: {err}") from err

    def decode_all(self, images: Sequence[tuple[str, RawImage]]) -> list[np.ndarray]:
        """(camera, image) pairs -> BGR arrays in the same order, decoded in the thread pool.

        Equal to `decode_all_reference`; when several images fail, the error of the first one
        in the given order is raised (all are decoded first).
        """
        if self.decode_threads <= 1 or len(images) <= 1:
            return self.decode_all_reference(images)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.decode_threads, thread_name_prefix="decode")
        futures = [self._pool.submit(self.decode, name, raw) for name, raw in images]
        return [f.result() for f in futures]

    def decode_all_reference(self, images: Sequence[tuple[str, RawImage]]) -> list[np.ndarray]:
        """Plain sequential decoding of (camera, image) pairs (reference of `decode_all`)."""
        return [self.decode(name, raw) for name, raw in images]

    def close(self) -> None:
        """Stop the decoding threads (a later `decode_all` starts new ones)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def assemble(
        self, frames: Sequence[tuple[str, int, RawImage]], extrapolate_ns: int = 0
    ) -> list[CameraInput]:
        """(camera, stamp_ns, image) per camera, any order -> CameraInputs in model order.

        Checks run stage by stage over all cameras: CameraInfo present, images decoded (in
        parallel), image size vs CameraInfo and TF per camera (interpolated at its stamp;
        `extrapolate_ns` > 0 allows that far beyond the /tf samples).
        """
        by_name = {name: (stamp, img) for name, stamp, img in frames}
        missing = [n for n in self.camera_names if n not in by_name]
        if missing:
            raise PipelineError(f"bundle lacks cameras {missing}")
        infos = []
        for name in self.camera_names:
            info = self.infos.select(name, by_name[name][0])
            if info is None:
                raise PipelineError(f"camera {name}: no CameraInfo received yet")
            infos.append(info)
        images = self.decode_all([(name, by_name[name][1]) for name in self.camera_names])
        out = []
        for name, info, image in zip(self.camera_names, infos, images, strict=True):
            stamp, raw = by_name[name]
            if (info.width, info.height) != (image.shape[1], image.shape[0]):
                raise PipelineError(
                    f"camera {name}: image {image.shape[1]}x{image.shape[0]} does not match its "
                    f"CameraInfo {info.width}x{info.height}"
                )
            frame = raw.frame_id or info.frame_id
            try:
                extrinsic = self.tf.lookup(self.ego_frame, frame, stamp, extrapolate_ns)
                pose = (
                    self.tf.lookup(self.odom_frame, self.ego_frame, stamp, extrapolate_ns)
                    if self.odom_frame
                    else None
                )
            except TransformError as err:
                raise TransformError(f"camera {name}: {err}") from err
            out.append(CameraInput(name, image, info.matrix(), extrinsic, pose, stamp))
        return out
