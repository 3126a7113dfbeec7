"""Procedural scenes: a seeded road grid, an ego drive along it and the objects around the route.
In: a seed and the number of keyframes. Out: `Scene` (layout, primitives, trajectory, timing).

Generation is deterministic for a given (seed, num_keyframes, timing). Objects are placed only
near the driven route (within ~70 m) and never where they would collide with the ego.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from flashocc_ros.world import layout as L
from flashocc_ros.world import objects as O
from flashocc_ros.world.primitives import PrimitiveBuilder, Primitives
from flashocc_ros.world.trajectory import EgoTrajectory, Timing, drive, lane_path, random_route

_MAX_SPEED = 15.0  # m/s
_REGION_MARGIN = 70.0  # m, objects are placed this far around the driven route
_EGO_CLEARANCE = 2.8  # m, minimum distance of an object's footprint from the ego centre


@dataclass(frozen=True, eq=False)
class Scene:
    """One synthetic drive: static layout + primitives (some moving) + ego trajectory."""

    name: str
    seed: int
    num_keyframes: int
    layout: L.RoadLayout
    prims: Primitives
    trajectory: EgoTrajectory
    timing: Timing = field(default_factory=Timing)

    @property
    def duration(self) -> float:
        """s, from the first to the last camera stamp."""
        return self.timing.duration(self.num_keyframes)


class _Clearance:
    """Rejects objects that would touch the ego during the drive."""

    def __init__(self, traj: EgoTrajectory, duration: float) -> None:
        self.t = np.arange(0.0, duration + 0.5, 0.2)
        x, y, yaw = traj.xy_yaw(self.t)
        # Ego footprint centre ~1.3 m ahead of base_link (rear axle).
        self.xy = np.stack([x + 1.3 * np.cos(yaw), y + 1.3 * np.sin(yaw)], axis=1)

    def ok(self, x: float, y: float, radius: float, vel: tuple[float, float] = (0, 0)) -> bool:
        px = x + vel[0] * self.t
        py = y + vel[1] * self.t
        d = np.hypot(self.xy[:, 0] - px, self.xy[:, 1] - py)
        return bool(d.min() > radius + _EGO_CLEARANCE)


def generate_scene(
    seed: int, num_keyframes: int, name: str | None = None, timing: Timing | None = None
) -> Scene:
    """A reproducible scene for `num_keyframes` keyframes (>= 1) from integer `seed`."""
    if num_keyframes < 1:
        raise ValueError(f"num_keyframes must be >= 1, got {num_keyframes}")
    timing = timing or Timing()
    rng = np.random.default_rng(seed)
    duration = timing.duration(num_keyframes)
    pitch = float(rng.uniform(60.0, 85.0))
    nodes = random_route(rng, math.ceil((_MAX_SPEED * duration + 40.0) / pitch) + 3)
    margin = math.ceil(_REGION_MARGIN / pitch) + 1
    i_range = range(int(nodes[:, 0].min()) - margin, int(nodes[:, 0].max()) + margin)
    j_range = range(int(nodes[:, 1].min()) - margin, int(nodes[:, 1].max()) + margin)
    lay = L.random_layout(rng, pitch, i_range, j_range)
    path = lane_path(nodes, pitch, lay.lane_offset, turn_radius=7.0)
    traj = drive(rng, path, _stop_positions(rng, nodes, path, lay), duration)
    prims = _populate(rng, lay, traj, duration)
    return Scene(name or f"scene-{seed:06d}", seed, num_keyframes, lay, prims, traj, timing)


def _stop_positions(
    rng: np.random.Generator, nodes: np.ndarray, path: np.ndarray, lay: L.RoadLayout
) -> list[float]:
    """Arc lengths (m) of stop lines before some intersections (always before turns at 50 %)."""
    stops = []
    for k in range(1, len(nodes) - 1):
        d_in = nodes[k] - nodes[k - 1]
        turn = not np.array_equal(d_in, nodes[k + 1] - nodes[k])
        if rng.random() < (0.5 if turn else 0.25):
            right = np.array([d_in[1], -d_in[0]], dtype=np.float64)
            p = nodes[k] * lay.pitch - d_in * (lay.street_half + 3.0) + right * lay.lane_offset
            idx = int(np.argmin(np.linalg.norm(path - p, axis=1)))
            stops.append(idx * 0.2)
    return stops


def _region(traj: EgoTrajectory, duration: float) -> tuple[float, float, float, float]:
    x, y, _ = traj.xy_yaw(np.linspace(0.0, duration, 200))
    m = _REGION_MARGIN
    return float(x.min() - m), float(x.max() + m), float(y.min() - m), float(y.max() + m)


def _populate(
    rng: np.random.Generator, lay: L.RoadLayout, traj: EgoTrajectory, duration: float
) -> Primitives:
    b = PrimitiveBuilder()
    clear = _Clearance(traj, duration)
    x0, x1, y0, y1 = _region(traj, duration)
    p = lay.pitch
    for i in range(math.floor(x0 / p), math.floor(x1 / p) + 1):
        for j in range(math.floor(y0 / p), math.floor(y1 / p) + 1):
            kind = int(lay.kind_of(np.array([i]), np.array([j]))[0])
            _block(b, rng, lay, clear, i, j, kind)
            # The two road edges leaving intersection (i, j): along +x and along +y.
            _edge(b, rng, lay, clear, (i * p, j * p), 0.0)
            _edge(b, rng, lay, clear, (i * p, j * p), math.pi / 2)
    return b.build()


def _edge(
    b: PrimitiveBuilder,
    rng: np.random.Generator,
    lay: L.RoadLayout,
    clear: _Clearance,
    start: tuple[float, float],
    yaw: float,
) -> None:
    """Street furniture, parked and moving traffic along one road edge of length `pitch`."""
    x, y = start
    lo, hi = lay.street_half + 2.0, lay.pitch - lay.street_half - 2.0

    def at(along: float, lat: float) -> tuple[float, float]:
        return O._offset(x, y, yaw, along, lat)

    for side in (-1.0, 1.0):
        heading = yaw if side < 0 else yaw + math.pi  # parked facing the traffic direction
        work_zone = rng.random() < 0.12
        a = lo + rng.uniform(0.0, 4.0)
        while a < hi - 3.0:  # parking strip
            px, py = at(a, side * lay.parking_offset)
            r = rng.random()
            if work_zone:
                O.traffic_cone(b, rng, *at(a, side * (lay.road_half - 2.2)))
                if r < 0.2 and clear.ok(px, py, 3.0):
                    O.construction_vehicle(b, rng, px, py, heading)
                    a += 6.0
                a += 2.5
                continue
            if r < 0.45 and clear.ok(px, py, 2.6):
                O.car(b, rng, px, py, heading)
            elif r < 0.52 and clear.ok(px, py, 4.5):
                O.truck(b, rng, *at(a + 2.0, side * lay.parking_offset), heading)
                a += 4.0
            elif r < 0.58 and clear.ok(px, py, 1.2):
                O.motorcycle(b, rng, px, py, heading + rng.uniform(-0.4, 0.4))
            a += rng.uniform(5.2, 7.0)
        curb = side * (lay.road_half + 0.6)
        outer = side * (lay.street_half - 0.8)
        a = lo + rng.uniform(0.0, 10.0)
        while a < hi:  # sidewalk furniture
            r = rng.random()
            if work_zone:
                O.barrier(b, rng, *at(a, curb), yaw)
            elif r < 0.25:
                O.pole(b, rng, *at(a, curb))
            elif r < 0.5:
                O.tree(b, rng, *at(a, outer))
            elif r < 0.6:
                O.other_object(b, rng, *at(a, outer), yaw)
            elif r < 0.7:
                O.bicycle(b, rng, *at(a, curb), yaw + math.pi / 2 + rng.uniform(-0.3, 0.3))
            a += rng.uniform(3.0, 12.0) if work_zone else rng.uniform(6.0, 16.0)
        for _ in range(int(rng.integers(0, 4))):  # pedestrians on this sidewalk
            lat = side * rng.uniform(lay.road_half + 0.5, lay.street_half - 0.5)
            px, py = at(rng.uniform(lo, hi), lat)
            walk = yaw + (0.0 if rng.random() < 0.5 else math.pi)
            speed = 0.0 if rng.random() < 0.3 else rng.uniform(0.8, 1.6)
            O.pedestrian(b, rng, px, py, walk, speed)
        if rng.random() < 0.6:  # moving traffic in this side's lane
            heading = yaw + (0.0 if side < 0 else math.pi)
            px, py = at(rng.uniform(0.0, lay.pitch), side * lay.lane_offset)
            speed = float(rng.uniform(4.0, 12.0))
            vel = (math.cos(heading) * speed, math.sin(heading) * speed)
            r = rng.random()
            if r < 0.7 and clear.ok(px, py, 2.6, vel):
                O.car(b, rng, px, py, heading, speed)
            elif r < 0.8 and clear.ok(px, py, 4.5, vel):
                O.truck(b, rng, px, py, heading, speed)
            elif r < 0.9 and clear.ok(px, py, 6.5, vel):
                O.bus(b, rng, px, py, heading, speed)
            elif clear.ok(px, py, 1.3, vel):
                rider = O.bicycle if rng.random() < 0.5 else O.motorcycle
                rider(b, rng, px, py, heading, 0.5 * speed, rider=True)


def _block(
    b: PrimitiveBuilder,
    rng: np.random.Generator,
    lay: L.RoadLayout,
    clear: _Clearance,
    i: int,
    j: int,
    kind: int,
) -> None:
    """Contents of block (i, j): buildings, park, parking lot or plaza."""
    e = lay.street_half + lay.verge + 0.5
    lo_x, hi_x = i * lay.pitch + e, (i + 1) * lay.pitch - e
    lo_y, hi_y = j * lay.pitch + e, (j + 1) * lay.pitch - e

    def rand_xy(pad: float) -> tuple[float, float]:
        pad = min(pad, 0.5 * (hi_x - lo_x) - 0.5, 0.5 * (hi_y - lo_y) - 0.5)
        return (
            float(rng.uniform(lo_x + pad, hi_x - pad)),
            float(rng.uniform(lo_y + pad, hi_y - pad)),
        )

    if kind == L.BLOCK_BUILT:
        _buildings(b, rng, lo_x, hi_x, lo_y, hi_y)
        for _ in range(int(rng.integers(0, 4))):
            O.tree(b, rng, *rand_xy(20.0))
    elif kind == L.BLOCK_PARK:
        for _ in range(int(rng.integers(8, 20))):
            O.tree(b, rng, *rand_xy(2.0))
        for _ in range(int(rng.integers(1, 5))):
            O.hedge(b, rng, *rand_xy(5.0), rng.choice([0.0, math.pi / 2]), rng.uniform(3.0, 9.0))
        for _ in range(int(rng.integers(0, 4))):
            O.other_object(b, rng, *rand_xy(2.0), rng.uniform(0, math.pi))
        for _ in range(int(rng.integers(0, 5))):
            O.pedestrian(b, rng, *rand_xy(3.0), rng.uniform(0, 2 * math.pi), rng.uniform(0, 1.4))
    elif kind == L.BLOCK_LOT:
        _parking_lot(b, rng, lo_x, hi_x, lo_y, hi_y)
    else:  # plaza
        for _ in range(int(rng.integers(2, 6))):
            O.other_object(b, rng, *rand_xy(2.0), rng.uniform(0, math.pi))
        for _ in range(int(rng.integers(2, 8))):
            O.pedestrian(b, rng, *rand_xy(2.0), rng.uniform(0, 2 * math.pi), rng.uniform(0, 1.5))
        for _ in range(int(rng.integers(1, 5))):
            O.tree(b, rng, *rand_xy(10.0))
        for _ in range(int(rng.integers(0, 4))):
            O.traffic_cone(b, rng, *rand_xy(2.0))
        for _ in range(int(rng.integers(0, 4))):
            O.bicycle(b, rng, *rand_xy(2.0), rng.uniform(0, math.pi))
    del clear  # blocks are off-road: never on the ego's path


def _buildings(
    b: PrimitiveBuilder,
    rng: np.random.Generator,
    lo_x: float,
    hi_x: float,
    lo_y: float,
    hi_y: float,
) -> None:
    """Rows of buildings along the four sides of a block interior."""
    width = min(hi_x - lo_x, hi_y - lo_y)
    for side in range(4):
        along_lo, along_hi = (lo_x, hi_x) if side < 2 else (lo_y + 16.0, hi_y - 16.0)
        a = along_lo + rng.uniform(0.0, 3.0)
        while a < along_hi - 6.0:
            front = float(min(rng.uniform(8.0, 22.0), along_hi - a))
            depth = float(rng.uniform(8.0, max(8.5, min(16.0, width / 2 - 2.0))))
            setback = float(rng.uniform(0.3, 3.0))
            mid = a + front / 2
            if side == 0:
                xy, yaw = (mid, lo_y + setback + depth / 2), 0.0
            elif side == 1:
                xy, yaw = (mid, hi_y - setback - depth / 2), 0.0
            elif side == 2:
                xy, yaw = (lo_x + setback + depth / 2, mid), math.pi / 2
            else:
                xy, yaw = (hi_x - setback - depth / 2, mid), math.pi / 2
            O.building(b, rng, xy[0], xy[1], yaw, front, depth)
            a += front + rng.uniform(0.0, 5.0)


def _parking_lot(
    b: PrimitiveBuilder,
    rng: np.random.Generator,
    lo_x: float,
    hi_x: float,
    lo_y: float,
    hi_y: float,
) -> None:
    """Rows of perpendicularly parked cars plus heavy vehicles and a barrier line."""
    y = lo_y + 3.0
    row = 0
    while y < hi_y - 3.0:
        x = lo_x + 2.0
        heavy_row = row % 3 == 2
        while x < hi_x - 2.0:
            r = rng.random()
            if heavy_row:
                maker = rng.choice(4)
                if maker == 0:
                    O.trailer(b, rng, x + 5.0, y + 1.5, 0.0)
                elif maker == 1:
                    O.truck(b, rng, x + 4.0, y + 1.5, 0.0)
                elif maker == 2:
                    O.bus(b, rng, x + 6.0, y + 1.5, 0.0)
                else:
                    O.construction_vehicle(b, rng, x + 3.0, y + 1.5, 0.0)
                x += 13.0
                continue
            if r < 0.65:
                O.car(b, rng, x, y + 1.0, math.pi / 2 + rng.choice([0.0, math.pi]))
            elif r < 0.7:
                O.other_object(b, rng, x, y, 0.0)
            x += 2.8
        y += 7.0
        row += 1
    if rng.random() < 0.6:
        x = lo_x + 1.0
        while x < hi_x - 2.0:
            O.barrier(b, rng, x + 1.2, lo_y + 0.3, 0.0)
            x += rng.uniform(2.6, 3.5)
