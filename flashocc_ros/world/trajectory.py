"""Ego motion and sensor timing: a route over the road grid driven with turns, stops and 0–15 m/s.
In: a seed, the block pitch and a duration. Out: `EgoTrajectory` (pose at any time) and `Timing`.

The ego drives in the right-hand lane; poses are odom <- base_link on the z = 0 plane (yaw only).
Timing follows nuScenes: camera frames at 12 Hz, keyframes (samples) every 6th frame (2 Hz), the
cameras of one frame fire one after another in rig order, camera 0 (CAM_FRONT_LEFT) first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

_STEP = 0.2  # m, spacing of the resampled path
_A_LAT = 2.0  # m/s², comfortable lateral acceleration in turns
_A_ACC = 1.8  # m/s²
_A_DEC = 2.5  # m/s²


@dataclass(frozen=True)
class Timing:
    """When frames and cameras fire, in scene seconds from the start of the recording."""

    camera_hz: float = 12.0  # Hz, camera frame rate
    frames_per_keyframe: int = 6  # 12 Hz / 2 Hz
    camera_stagger: float = 0.0083  # s, delay between consecutive cameras of a frame
    num_cameras: int = 6

    def frame_time(self, frame: int) -> float:
        """s, stamp of camera 0 in frame `frame` (also the keyframe stamp when it is one)."""
        return frame / self.camera_hz

    def camera_times(self, frame: int) -> np.ndarray:
        """(N,) s, stamps of each camera in frame `frame` (rig order)."""
        return self.frame_time(frame) + self.camera_stagger * np.arange(self.num_cameras)

    def is_keyframe(self, frame: int) -> bool:
        return frame % self.frames_per_keyframe == 0

    def num_frames(self, num_keyframes: int) -> int:
        """Camera frames needed for `num_keyframes` keyframes (the last frame is a keyframe)."""
        return (num_keyframes - 1) * self.frames_per_keyframe + 1

    def duration(self, num_keyframes: int) -> float:
        """s, time from the first to the last camera stamp."""
        return self.frame_time(self.num_frames(num_keyframes) - 1) + self.camera_stagger * (
            self.num_cameras - 1
        )


@dataclass(frozen=True, eq=False)
class EgoTrajectory:
    """odom <- base_link as a function of time. Tables: path samples P, time samples T."""

    path_xy: np.ndarray  # (P, 2) m, lane-centre path in odom
    path_yaw: np.ndarray  # (P,) rad, unwrapped heading along the path
    path_s: np.ndarray  # (P,) m, arc length
    time: np.ndarray  # (T,) s
    time_s: np.ndarray  # (T,) m, arc length travelled at each time

    def arc_length(self, t: np.ndarray | float) -> np.ndarray:
        out: np.ndarray = np.interp(t, self.time, self.time_s)
        return out

    def speed(self, t: np.ndarray | float) -> np.ndarray:
        """m/s at time(s) t (finite difference of the arc-length table)."""
        v = np.gradient(self.time_s, self.time)
        out: np.ndarray = np.interp(t, self.time, v)
        return out

    def xy_yaw(self, t: np.ndarray | float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x, y, yaw) of base_link in odom at time(s) t."""
        s = self.arc_length(t)
        x = np.interp(s, self.path_s, self.path_xy[:, 0])
        y = np.interp(s, self.path_s, self.path_xy[:, 1])
        return x, y, np.interp(s, self.path_s, self.path_yaw)

    def pose(self, t: float) -> np.ndarray:
        """(4, 4) float64 odom <- base_link at time t."""
        out: np.ndarray = self.poses(np.array([t]))[0]
        return out

    def poses(self, t: np.ndarray) -> np.ndarray:
        """(T, 4, 4) float64 odom <- base_link at times t (T,)."""
        x, y, yaw = self.xy_yaw(np.asarray(t, dtype=np.float64))
        out = np.zeros((len(x), 4, 4))
        c, s = np.cos(yaw), np.sin(yaw)
        out[:, 0, 0], out[:, 0, 1], out[:, 1, 0], out[:, 1, 1] = c, -s, s, c
        out[:, 2, 2] = out[:, 3, 3] = 1.0
        out[:, 0, 3], out[:, 1, 3] = x, y
        return out


def random_route(rng: np.random.Generator, num_nodes: int) -> np.ndarray:
    """(K, 2) int intersection indices of a random walk without U-turns, starting at (0, 0) +x."""
    nodes = [(0, 0), (1, 0)]
    heading = (1, 0)
    while len(nodes) < num_nodes:
        r = rng.random()
        if r < 0.3:
            heading = (-heading[1], heading[0])  # left
        elif r < 0.6:
            heading = (heading[1], -heading[0])  # right
        last = nodes[-1]
        nodes.append((last[0] + heading[0], last[1] + heading[1]))
    return np.array(nodes, dtype=np.int64)


def lane_path(
    nodes: np.ndarray, pitch: float, lane_offset: float, turn_radius: float
) -> np.ndarray:
    """(P, 2) right-hand lane-centre polyline through intersection `nodes`, 0.2 m spacing."""
    pts = nodes.astype(np.float64) * pitch
    dirs = np.diff(pts, axis=0)
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    right = np.stack([dirs[:, 1], -dirs[:, 0]], axis=1)
    pieces: list[np.ndarray] = [pts[:1] + right[:1] * lane_offset]
    for k in range(1, len(pts) - 1):
        d_in, d_out = dirs[k - 1], dirs[k]
        if np.allclose(d_in, d_out):
            continue
        corner = pts[k] + right[k - 1] * lane_offset + right[k] * lane_offset
        a, b = corner - d_in * turn_radius, corner + d_out * turn_radius
        u = np.linspace(0.0, 1.0, 24)[:, None]
        # Quadratic Bezier from a to b with control point at the corner: a smooth fillet.
        pieces.append((1 - u) ** 2 * a + 2 * u * (1 - u) * corner + u**2 * b)
    pieces.append(pts[-1:] + right[-1:] * lane_offset)
    poly = np.concatenate(pieces)
    seg = np.linalg.norm(np.diff(poly, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    keep = np.concatenate([[True], seg > 1e-9])
    s, poly = s[keep], poly[keep]
    grid = np.arange(0.0, s[-1], _STEP)
    return np.stack([np.interp(grid, s, poly[:, 0]), np.interp(grid, s, poly[:, 1])], axis=1)


def _speed_limit(path: np.ndarray, cruise: float) -> tuple[np.ndarray, np.ndarray]:
    """Heading (P,) and a curvature- and braking-aware speed limit (P,) along the path."""
    d = np.gradient(path, axis=0)
    yaw = np.unwrap(np.arctan2(d[:, 1], d[:, 0]))
    curvature = np.abs(np.gradient(yaw)) / _STEP
    kernel = np.ones(15) / 15.0
    curvature = np.convolve(curvature, kernel, mode="same")
    limit = np.minimum(cruise, np.sqrt(_A_LAT / np.maximum(curvature, 1e-6)))
    for k in range(len(limit) - 2, -1, -1):  # brake ahead of turns
        limit[k] = min(limit[k], math.sqrt(limit[k + 1] ** 2 + 2 * _A_DEC * _STEP))
    return yaw, limit


def drive(
    rng: np.random.Generator,
    path: np.ndarray,
    stop_s: list[float],
    duration: float,
    dt: float = 0.02,
) -> EgoTrajectory:
    """Drive `path` for `duration` s, stopping 1–3 s at arc lengths `stop_s` (m)."""
    cruise = float(rng.uniform(9.0, 15.0))
    yaw, limit = _speed_limit(path, cruise)
    s_path = np.arange(len(path)) * _STEP
    v = float(rng.choice([0.0, rng.uniform(3.0, cruise)]))
    s, t, dwell = 0.0, 0.0, 0.0
    stops = sorted(x for x in stop_s if x > 5.0)
    times, arcs = [0.0], [0.0]
    while t < duration + 1.0:
        if dwell > 0.0:
            dwell -= dt
            v = 0.0
        else:
            target = float(np.interp(s, s_path, limit))
            if stops:
                gap = max(stops[0] - s, 0.0)
                target = min(target, math.sqrt(2 * _A_DEC * gap))
                if gap < 0.5 and v < 0.5:
                    stops.pop(0)
                    dwell = float(rng.uniform(1.0, 3.0))
                    v = 0.0
            a = float(np.clip((target - v) / dt, -_A_DEC * 1.6, _A_ACC))
            v = max(0.0, v + a * dt)
        s = min(s + v * dt, s_path[-1])
        t += dt
        times.append(t)
        arcs.append(s)
    return EgoTrajectory(path, yaw, s_path, np.array(times), np.array(arcs))
