"""Object makers: cars, trucks, people, trees, buildings … composed of boxes and cylinders.
In: a pose (x, y, heading), a random generator and a `PrimitiveBuilder`. Out: shapes added to it.

Each class has a colour family (base colours + per-instance jitter) and a texture style, so that
appearance carries the class while instances still vary.
"""

from __future__ import annotations

import math

import numpy as np

from flashocc_ros.classes import CLASS_NAMES
from flashocc_ros.world import primitives as P

C = {name: i for i, name in enumerate(CLASS_NAMES)}

# Base colours per class family, RGB 0..255 (converted to BGR 0..1 by `_color`).
_FAMILIES: dict[str, list[tuple[int, int, int]]] = {
    "car": [
        (180, 20, 20),
        (20, 50, 150),
        (220, 220, 225),
        (30, 30, 35),
        (120, 125, 130),
        (20, 110, 60),
        (200, 160, 40),
        (90, 20, 90),
    ],
    "bus": [(230, 170, 20), (200, 30, 30), (30, 90, 180), (240, 240, 240)],
    "truck": [(235, 235, 235), (70, 90, 120), (150, 40, 30), (60, 60, 60)],
    "trailer": [(150, 150, 145), (110, 70, 40), (200, 200, 190)],
    "construction_vehicle": [(250, 180, 0), (240, 120, 10)],
    "bicycle": [(40, 40, 45), (150, 20, 30), (30, 80, 160)],
    "motorcycle": [(20, 20, 20), (170, 20, 20), (40, 40, 140)],
    "pedestrian": [(40, 60, 120), (150, 30, 40), (60, 120, 60), (200, 200, 190), (30, 30, 30)],
    "traffic_cone": [(255, 100, 0)],
    "barrier": [(210, 40, 30), (190, 190, 185)],
    "others": [(90, 100, 80), (110, 90, 70), (70, 80, 95), (130, 130, 110)],
    "building": [
        (200, 185, 160),
        (170, 90, 70),
        (150, 150, 155),
        (225, 215, 190),
        (110, 110, 120),
    ],
    "pole": [(110, 115, 120), (60, 65, 60)],
    "vegetation": [(45, 110, 35), (60, 130, 40), (35, 90, 45)],
    "trunk": [(90, 60, 35)],
}


def _color(rng: np.random.Generator, family: str, jitter: float = 0.08) -> np.ndarray:
    """BGR in [0, 1]: a family colour with per-instance brightness and channel jitter."""
    opts = _FAMILIES[family]
    rgb = np.array(opts[int(rng.integers(len(opts)))], dtype=np.float64) / 255.0
    rgb = rgb * rng.uniform(0.85, 1.15) + rng.normal(0.0, jitter, 3)
    return np.clip(rgb[::-1], 0.0, 1.0)


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(1, 2**31 - 1))


def _offset(
    x: float, y: float, yaw: float, along: float, side: float = 0.0
) -> tuple[float, float]:
    """A point `along` metres ahead and `side` metres left of (x, y) facing `yaw`."""
    c, s = math.cos(yaw), math.sin(yaw)
    return (x + c * along - s * side, y + s * along + c * side)


def _vel(yaw: float, speed: float) -> tuple[float, float]:
    return (math.cos(yaw) * speed, math.sin(yaw) * speed)


def car(
    b: P.PrimitiveBuilder,
    rng: np.random.Generator,
    x: float,
    y: float,
    yaw: float,
    speed: float = 0.0,
) -> None:
    length, width = rng.uniform(3.9, 4.9), rng.uniform(1.7, 1.95)
    col, v, seed = _color(rng, "car"), _vel(yaw, speed), _seed(rng)
    lab = C["car"]
    b.box((x, y), (0.3, 1.0), (length, width), yaw, lab, col, P.STYLE_BODY, seed, v)
    roof = rng.uniform(1.4, 1.7)
    cab = _offset(x, y, yaw, -0.1 * length)
    b.box(cab, (1.0, roof), (0.55 * length, 0.92 * width), yaw, lab, col, P.STYLE_GLASS, seed, v)


def truck(
    b: P.PrimitiveBuilder,
    rng: np.random.Generator,
    x: float,
    y: float,
    yaw: float,
    speed: float = 0.0,
) -> None:
    length, width = rng.uniform(6.0, 9.0), rng.uniform(2.3, 2.5)
    lab, v, seed = C["truck"], _vel(yaw, speed), _seed(rng)
    cab_col, box_col = _color(rng, "truck"), _color(rng, "truck")
    cab = _offset(x, y, yaw, 0.5 * length - 1.1)
    b.box(cab, (0.4, 3.0), (2.2, width), yaw, lab, cab_col, P.STYLE_GLASS, seed, v)
    cargo = _offset(x, y, yaw, -1.2)
    b.box(
        cargo,
        (0.8, rng.uniform(3.0, 3.8)),
        (length - 2.4, width),
        yaw,
        lab,
        box_col,
        P.STYLE_PLAIN,
        seed + 1,
        v,
    )


def bus(
    b: P.PrimitiveBuilder,
    rng: np.random.Generator,
    x: float,
    y: float,
    yaw: float,
    speed: float = 0.0,
) -> None:
    b.box(
        (x, y),
        (0.3, rng.uniform(3.0, 3.4)),
        (rng.uniform(10.0, 12.5), 2.55),
        yaw,
        C["bus"],
        _color(rng, "bus"),
        P.STYLE_GLASS,
        _seed(rng),
        _vel(yaw, speed),
    )


def trailer(
    b: P.PrimitiveBuilder, rng: np.random.Generator, x: float, y: float, yaw: float
) -> None:
    b.box(
        (x, y),
        (1.0, rng.uniform(3.4, 4.0)),
        (rng.uniform(6.0, 11.0), 2.5),
        yaw,
        C["trailer"],
        _color(rng, "trailer"),
        P.STYLE_PLAIN,
        _seed(rng),
    )


def construction_vehicle(
    b: P.PrimitiveBuilder, rng: np.random.Generator, x: float, y: float, yaw: float
) -> None:
    lab, col, seed = C["construction_vehicle"], _color(rng, "construction_vehicle"), _seed(rng)
    b.box((x, y), (0.3, 1.8), (4.5, 2.5), yaw, lab, col, P.STYLE_PLAIN, seed)
    b.box(_offset(x, y, yaw, -0.8), (1.8, 3.1), (1.8, 1.8), yaw, lab, col, P.STYLE_GLASS, seed)
    b.box(_offset(x, y, yaw, 2.8), (1.2, 2.6), (3.0, 0.5), yaw, lab, col, P.STYLE_PLAIN, seed)


def _two_wheeler(
    b: P.PrimitiveBuilder,
    rng: np.random.Generator,
    pose: tuple[float, float, float, float],
    rider: bool,
    cls: str,
    frame: tuple[tuple[float, float], tuple[float, float], int],
    rider_z: tuple[float, float],
    rider_size: tuple[float, float],
) -> None:
    """A bicycle or motorcycle at pose (x, y, yaw, speed): its frame box (z range, size, style)
    and, with `rider`, a person box on it labelled as the vehicle (as nuScenes labels riders)."""
    x, y, yaw, speed = pose
    lab, v, seed = C[cls], _vel(yaw, speed), _seed(rng)
    z_range, size, style = frame
    b.box((x, y), z_range, size, yaw, lab, _color(rng, cls), style, seed, v)
    if rider:
        col = _color(rng, "pedestrian")
        b.box((x, y), rider_z, rider_size, yaw, lab, col, P.STYLE_PERSON, seed + 1, v)


def bicycle(
    b: P.PrimitiveBuilder,
    rng: np.random.Generator,
    x: float,
    y: float,
    yaw: float,
    speed: float = 0.0,
    rider: bool = False,
) -> None:
    frame = ((0.25, 1.05), (1.75, 0.45), P.STYLE_METAL)
    _two_wheeler(b, rng, (x, y, yaw, speed), rider, "bicycle", frame, (1.05, 1.75), (0.6, 0.5))


def motorcycle(
    b: P.PrimitiveBuilder,
    rng: np.random.Generator,
    x: float,
    y: float,
    yaw: float,
    speed: float = 0.0,
    rider: bool = False,
) -> None:
    frame = ((0.3, 1.2), (2.1, 0.8), P.STYLE_BODY)
    _two_wheeler(b, rng, (x, y, yaw, speed), rider, "motorcycle", frame, (1.2, 1.85), (0.6, 0.55))


def pedestrian(
    b: P.PrimitiveBuilder,
    rng: np.random.Generator,
    x: float,
    y: float,
    yaw: float,
    speed: float = 0.0,
) -> None:
    lab, v, seed = C["pedestrian"], _vel(yaw, speed), _seed(rng)
    height = rng.uniform(1.55, 1.95)
    b.box(
        (x, y),
        (0.0, 0.52 * height),
        (0.4, 0.5),
        yaw,
        lab,
        _color(rng, "pedestrian"),
        P.STYLE_PERSON,
        seed,
        v,
    )
    b.box(
        (x, y),
        (0.52 * height, 0.87 * height),
        (0.35, 0.55),
        yaw,
        lab,
        _color(rng, "pedestrian"),
        P.STYLE_PERSON,
        seed + 1,
        v,
    )
    skin = np.clip(np.array([0.55, 0.65, 0.8]) * rng.uniform(0.5, 1.1), 0, 1)
    b.cylinder((x, y), (0.87 * height, height), 0.15, lab, skin, P.STYLE_PLAIN, seed + 2, v)


def traffic_cone(b: P.PrimitiveBuilder, rng: np.random.Generator, x: float, y: float) -> None:
    b.cylinder(
        (x, y),
        (0.0, rng.uniform(0.5, 0.8)),
        rng.uniform(0.17, 0.23),
        C["traffic_cone"],
        _color(rng, "traffic_cone", 0.04),
        P.STYLE_STRIPES,
        _seed(rng),
    )


def barrier(
    b: P.PrimitiveBuilder, rng: np.random.Generator, x: float, y: float, yaw: float
) -> None:
    b.box(
        (x, y),
        (0.0, rng.uniform(0.8, 1.1)),
        (rng.uniform(1.8, 3.0), rng.uniform(0.4, 0.6)),
        yaw,
        C["barrier"],
        _color(rng, "barrier", 0.04),
        P.STYLE_STRIPES,
        _seed(rng),
    )


def other_object(
    b: P.PrimitiveBuilder, rng: np.random.Generator, x: float, y: float, yaw: float
) -> None:
    """Bins, benches, kiosks, containers: the Occ3D 'others' class."""
    size = (rng.uniform(0.6, 2.5), rng.uniform(0.5, 1.5))
    b.box(
        (x, y),
        (0.0, rng.uniform(0.6, 2.2)),
        size,
        yaw,
        C["others"],
        _color(rng, "others"),
        P.STYLE_PLAIN,
        _seed(rng),
    )


def pole(b: P.PrimitiveBuilder, rng: np.random.Generator, x: float, y: float) -> None:
    lab, col, seed = C["manmade"], _color(rng, "pole", 0.04), _seed(rng)
    top = rng.uniform(4.0, 8.0)
    b.cylinder((x, y), (0.0, top), rng.uniform(0.15, 0.2), lab, col, P.STYLE_METAL, seed)
    if rng.random() < 0.5:  # lamp head or sign plate
        b.box(
            (x, y),
            (top - 0.4, top),
            (1.0, 0.4),
            rng.uniform(0, math.pi),
            lab,
            col,
            P.STYLE_PLAIN,
            seed + 1,
        )


def tree(b: P.PrimitiveBuilder, rng: np.random.Generator, x: float, y: float) -> None:
    lab, seed = C["vegetation"], _seed(rng)
    trunk = rng.uniform(1.8, 3.0)
    b.cylinder(
        (x, y),
        (0.0, trunk),
        rng.uniform(0.18, 0.3),
        lab,
        _color(rng, "trunk", 0.04),
        P.STYLE_PLAIN,
        seed,
    )
    b.cylinder(
        (x, y),
        (trunk, trunk + rng.uniform(2.0, 5.0)),
        rng.uniform(1.3, 3.0),
        lab,
        _color(rng, "vegetation"),
        P.STYLE_FOLIAGE,
        seed + 1,
    )


def hedge(
    b: P.PrimitiveBuilder, rng: np.random.Generator, x: float, y: float, yaw: float, length: float
) -> None:
    b.box(
        (x, y),
        (0.0, rng.uniform(0.8, 1.6)),
        (length, rng.uniform(0.7, 1.2)),
        yaw,
        C["vegetation"],
        _color(rng, "vegetation"),
        P.STYLE_FOLIAGE,
        _seed(rng),
    )


def building(
    b: P.PrimitiveBuilder,
    rng: np.random.Generator,
    x: float,
    y: float,
    yaw: float,
    frontage: float,
    depth: float,
) -> None:
    b.box(
        (x, y),
        (0.0, rng.uniform(5.0, 25.0)),
        (frontage, depth),
        yaw,
        C["manmade"],
        _color(rng, "building"),
        P.STYLE_FACADE,
        _seed(rng),
    )
