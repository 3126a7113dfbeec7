"""Each image paired with its own CameraInfo: by stamp, not by arrival (ROS-free, thread-safe).
In: CameraInfo values with their header stamps, image stamps. Out: the intrinsics of an image.

A driver publishes CameraInfo with the image's stamp, once per frame, or rarely (latched, with
the stamp of the first frame or of the calibration). The CameraInfo of an image is the one with
the same stamp, else the newest one not newer than the image; an image older than every
CameraInfo of its camera takes the oldest one (counted: `newer_than_image`). When a camera is
seen publishing CameraInfo per frame (a CameraInfo stamp equal to one of its image stamps), an
image's pairing is final only once a CameraInfo at or after the image's stamp has arrived
(`settled`): before that, the image's own CameraInfo may still be on its way.
"""

from __future__ import annotations

import bisect
import collections
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_KEEP = 32  # CameraInfo messages (and image stamps) remembered per camera


@dataclass(frozen=True)
class CameraIntrinsics:
    """The part of a CameraInfo the pipeline uses."""

    width: int  # px, image size the intrinsics belong to
    height: int  # px
    k: tuple[float, ...]  # row-major 3x3 K
    frame_id: str

    def matrix(self) -> np.ndarray:
        """(3, 3) float64 K."""
        return np.asarray(self.k, dtype=np.float64).reshape(3, 3)


class _Camera:
    def __init__(self) -> None:
        self.stamps: list[int] = []  # CameraInfo stamps, sorted
        self.infos: list[CameraIntrinsics] = []
        self.images: collections.deque[int] = collections.deque(maxlen=_KEEP)
        self.per_frame = False


class CameraInfoStore:
    """CameraInfo per camera by stamp (the last `_KEEP` of each camera)."""

    def __init__(self, cameras: Sequence[str]) -> None:
        self._cams = {name: _Camera() for name in cameras}
        self._lock = threading.Lock()
        self.newer_than_image = 0  # images paired with a CameraInfo stamped after them

    def add(self, camera: str, stamp_ns: int, info: CameraIntrinsics) -> None:
        """Store one CameraInfo (already validated); a repeated stamp replaces the older."""
        with self._lock:
            cam = self._cams[camera]
            i = bisect.bisect_left(cam.stamps, stamp_ns)
            if i < len(cam.stamps) and cam.stamps[i] == stamp_ns:
                cam.infos[i] = info
            else:
                cam.stamps.insert(i, stamp_ns)
                cam.infos.insert(i, info)
                if len(cam.stamps) > _KEEP:
                    del cam.stamps[0], cam.infos[0]
            if stamp_ns in cam.images:
                cam.per_frame = True

    def note_image(self, camera: str, stamp_ns: int) -> None:
        """An image of `camera` arrived with this stamp (to recognise per-frame CameraInfo)."""
        with self._lock:
            cam = self._cams[camera]
            cam.images.append(stamp_ns)
            if stamp_ns in cam.stamps:
                cam.per_frame = True

    def has_any(self, camera: str) -> bool:
        """True once `camera` has sent any CameraInfo."""
        with self._lock:
            return bool(self._cams[camera].stamps)

    def settled(self, camera: str, stamp_ns: int) -> bool:
        """True when `select(camera, stamp_ns)` can no longer change."""
        with self._lock:
            cam = self._cams[camera]
            if not cam.stamps:
                return False
            return not cam.per_frame or cam.stamps[-1] >= stamp_ns

    def select(self, camera: str, stamp_ns: int) -> CameraIntrinsics | None:
        """The CameraInfo of an image of `camera` stamped `stamp_ns` (None: none received)."""
        with self._lock:
            cam = self._cams[camera]
            if not cam.stamps:
                return None
            i = bisect.bisect_right(cam.stamps, stamp_ns)  # stamps[:i] are <= the image's
            if i == 0:
                self.newer_than_image += 1
                return cam.infos[0]
            return cam.infos[i - 1]
