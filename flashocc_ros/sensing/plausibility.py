"""Plausibility checks on inputs, before anything is computed from them (ROS-free).
In: stamps with their receive times, image sizes, CameraInfo values, /tf samples. Out: '' for a
plausible input, else one line saying why it is refused.

Limits are parameters (node_config): a refused input is counted and never reaches a grid.

* Stamps: not positive; delay (receive time - stamp) far from the recent median delay of all
  images and /tf samples (one hostile stamp cannot move it; a bag loop, where every input's
  delay changes at once, is followed after 8 consistent messages); optionally, without sim
  time, far from the clock.
* Images and CameraInfo: smaller than a fraction of the network input; CameraInfo focal lengths
  outside a range relative to the image width, principal point far outside the image, a last
  row of K other than (0, 0, 1).
* /tf: a sample implying a speed or rotation rate of its link above the limits, compared with
  the link's nearest accepted sample. Three refused samples in a row that agree with each other
  are an odometry reset, not an attack: the link starts again from them.
"""

from __future__ import annotations

import bisect
import collections
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from flashocc_ros.sensing.camera_info import CameraIntrinsics
from flashocc_ros.sensing.tf_buffer import quaternion_to_matrix

NS = 1_000_000_000


class StampGuard:
    """Refuses stamps that are not positive or whose delay is off the recent median."""

    REBASE_AFTER = 8  # consistent off-median messages in a row that are a time reset

    def __init__(
        self, max_skew_ns: int, max_age_ns: int = 0, window: int = 64, min_samples: int = 8
    ) -> None:
        """max_skew_ns: largest |delay - median delay| (0 = off); max_age_ns: largest
        |receive time - stamp| on the wall clock (0 = off)."""
        self.max_skew_ns, self.max_age_ns = max_skew_ns, max_age_ns
        self.min_samples = min_samples
        self._delays: collections.deque[int] = collections.deque(maxlen=window)
        self._sorted: list[int] = []
        self._suspects: list[int] = []  # delays of the refused messages in a row

    def check(self, stamp_ns: int, receive_ns: int, wall_clock: bool) -> str:
        """'' when `stamp_ns` (received at `receive_ns`) is plausible, else why not."""
        if stamp_ns <= 0:
            return f"stamp {stamp_ns / NS:.3f} s is not positive"
        delay = receive_ns - stamp_ns
        if wall_clock and self.max_age_ns and abs(delay) > self.max_age_ns:
            return (
                f"stamp is {delay / NS:+.1f} s from the node's clock (max_stamp_age_s "
                f"{self.max_age_ns / NS:g}; a recording needs --clock and use_sim_time)"
            )
        median = self._median()
        if self.max_skew_ns and median is not None and abs(delay - median) > self.max_skew_ns:
            self._suspects.append(delay)
            if len(self._suspects) < self.REBASE_AFTER or (
                max(self._suspects) - min(self._suspects) > self.max_skew_ns
            ):
                if len(self._suspects) >= self.REBASE_AFTER:
                    del self._suspects[0]
                return (
                    f"stamp is {(median - delay) / NS:+.1f} s off the other inputs' stamps "
                    f"(max_stamp_skew_s {self.max_skew_ns / NS:g})"
                )
            self._delays.clear()  # every input moved together: time was reset
            self._sorted.clear()
            for d in self._suspects:
                self._push(d)
            self._suspects.clear()
            return ""
        self._suspects.clear()
        self._push(delay)
        return ""

    def _median(self) -> int | None:
        if len(self._sorted) < self.min_samples:
            return None
        return self._sorted[len(self._sorted) // 2]

    def _push(self, delay: int) -> None:
        if len(self._delays) == self._delays.maxlen:
            old = self._delays[0]
            del self._sorted[bisect.bisect_left(self._sorted, old)]
        self._delays.append(delay)
        bisect.insort(self._sorted, delay)


def image_size_problem(width: int, height: int, min_size: tuple[int, int]) -> str:
    """'' when an image of width x height is large enough (`min_size` = (width, height))."""
    if width < min_size[0] or height < min_size[1]:
        return (
            f"{width}x{height} is smaller than the {min_size[0]}x{min_size[1]} the network can "
            "use (min_image_scale)"
        )
    return ""


def intrinsics_problem(
    info: CameraIntrinsics,
    min_size: tuple[int, int],
    focal_range: Sequence[float],
    margin: float,
) -> str:
    """'' when a CameraInfo can describe a real image, else what is wrong with it."""
    k = info.k
    if len(k) != 9 or not all(math.isfinite(v) for v in k):
        return "K must hold 9 finite numbers"
    if info.width <= 0 or info.height <= 0:
        return f"has no image size ({info.width}x{info.height})"
    small = image_size_problem(info.width, info.height, min_size)
    if small:
        return f"image size {small}"
    w, h = info.width, info.height
    fx, fy, cx, cy = k[0], k[4], k[2], k[5]
    lo, hi = focal_range[0] * w, focal_range[1] * w
    for name, f in (("fx", fx), ("fy", fy)):
        if not lo <= f <= hi:
            return f"{name}={f:g} px lies outside [{lo:g}, {hi:g}] for a {w} px wide image"
    if not (-margin * w <= cx <= (1 + margin) * w and -margin * h <= cy <= (1 + margin) * h):
        return f"principal point ({cx:g}, {cy:g}) lies far outside the {w}x{h} image"
    if (k[6], k[7], k[8]) != (0.0, 0.0, 1.0):
        return f"last row of K is {k[6:]} instead of (0, 0, 1)"
    return ""


@dataclass(frozen=True)
class Sample:
    """One /tf sample of a link."""

    stamp_ns: int
    translation: tuple[float, float, float]
    rotation: tuple[float, float, float, float]  # xyzw


def motion_problem(a: Sample, b: Sample, max_speed: float, max_rate_dps: float) -> str:
    """'' when going from sample a to b is a plausible motion of a link, else why not."""
    dt = abs(b.stamp_ns - a.stamp_ns) / NS
    dist = float(np.linalg.norm(np.subtract(b.translation, a.translation)))
    rel = quaternion_to_matrix(a.rotation).T @ quaternion_to_matrix(b.rotation)
    angle = math.degrees(math.acos(max(-1.0, min(1.0, (float(np.trace(rel)) - 1) / 2))))
    slack = 0.001  # s: samples with nearly equal stamps must still not jump
    if dist > max_speed * (dt + slack):
        return f"moves {dist:.2f} m in {dt * 1e3:.1f} ms (tf_max_speed_mps {max_speed:g})"
    if angle > max_rate_dps * (dt + slack):
        return (
            f"turns {angle:.1f} deg in {dt * 1e3:.1f} ms (tf_max_angular_rate_dps "
            f"{max_rate_dps:g})"
        )
    return ""


class MotionGuard:
    """Per dynamic link: refuses samples that jump, accepts an odometry reset."""

    RESET_AFTER = 3  # consistent refused samples in a row that restart a link

    def __init__(self, max_speed: float, max_rate_dps: float) -> None:
        self.max_speed, self.max_rate_dps = max_speed, max_rate_dps
        self._suspects: dict[str, list[Sample]] = {}

    def check(
        self, child: str, sample: Sample, nearest: Sample | None
    ) -> tuple[str, list[Sample]]:
        """(why refused or '', samples to start the link again from when it was reset).

        `nearest`: the link's accepted sample nearest in time (None: the first sample)."""
        problem = (
            ""
            if nearest is None
            else motion_problem(nearest, sample, self.max_speed, self.max_rate_dps)
        )
        if not problem:
            self._suspects.pop(child, None)
            return "", []
        suspects = self._suspects.setdefault(child, [])
        if suspects and motion_problem(suspects[-1], sample, self.max_speed, self.max_rate_dps):
            suspects.clear()
        suspects.append(sample)
        if len(suspects) >= self.RESET_AFTER:
            restart = sorted(suspects, key=lambda s: s.stamp_ns)
            del self._suspects[child]
            return "", restart
        return problem, []
