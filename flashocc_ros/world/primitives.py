"""Solid primitives of the synthetic world: oriented boxes and vertical cylinders, some moving.
In: shapes added by the scene generator. Out: `Primitives` arrays (M,) queried at a time t.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KIND_BOX, KIND_CYLINDER = 0, 1

# Appearance styles (how render.py textures a primitive's surface).
STYLE_PLAIN = 0  # noisy paint
STYLE_BODY = 1  # vehicle body: smooth paint, darker lower rim
STYLE_GLASS = 2  # vehicle cabin / bus: window band
STYLE_FACADE = 3  # building: window grid
STYLE_FOLIAGE = 4  # vegetation: high-frequency blotches
STYLE_STRIPES = 5  # cones and barriers: horizontal bands
STYLE_PERSON = 6  # pedestrians: clothes two-tone by height
STYLE_METAL = 7  # poles: vertical streaks


@dataclass(frozen=True, eq=False)
class Primitives:
    """M primitives in the world (odom) frame. Boxes are yawed; cylinders have a vertical axis."""

    kind: np.ndarray  # (M,) int8, KIND_BOX or KIND_CYLINDER
    center: np.ndarray  # (M, 3) m, centre at t = 0
    half: np.ndarray  # (M, 3) m, half extents (cylinder: radius, radius, half height)
    yaw: np.ndarray  # (M,) rad, box heading about +z (cylinders: 0)
    velocity: np.ndarray  # (M, 2) m/s, constant ground velocity in x, y
    label: np.ndarray  # (M,) uint8, Occ3D class
    color: np.ndarray  # (M, 3) float32, base colour BGR in [0, 1]
    style: np.ndarray  # (M,) int8, STYLE_*
    seed: np.ndarray  # (M,) int64, texture noise seed of the instance

    def __len__(self) -> int:
        return len(self.kind)

    def centers_at(self, t: float) -> np.ndarray:
        """(M, 3) centres at scene time t (s)."""
        c = self.center.copy()
        c[:, :2] += self.velocity * t
        return c

    def bounding_radius(self) -> np.ndarray:
        """(M,) m, radius of a sphere around each primitive's centre that contains it."""
        out: np.ndarray = np.linalg.norm(self.half, axis=1)
        return out

    def corners_at(self, t: float) -> np.ndarray:
        """(M, 8, 3) corners of each primitive's oriented bounding box at time t."""
        signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
        local = signs[None] * self.half[:, None, :]  # (M, 8, 3)
        c, s = np.cos(self.yaw)[:, None], np.sin(self.yaw)[:, None]
        x = c * local[..., 0] - s * local[..., 1]
        y = s * local[..., 0] + c * local[..., 1]
        out: np.ndarray = np.stack([x, y, local[..., 2]], axis=-1) + self.centers_at(t)[:, None, :]
        return out

    def contains(self, index: int, points: np.ndarray, t: float, eps: float = 1e-6) -> np.ndarray:
        """(P,) bool: which world points (P, 3) lie inside (or on) primitive `index` at time t."""
        c = self.centers_at(t)[index]
        d = points - c
        h = self.half[index]
        inside_z = np.abs(d[:, 2]) <= h[2] + eps
        if self.kind[index] == KIND_CYLINDER:
            out: np.ndarray = inside_z & (d[:, 0] ** 2 + d[:, 1] ** 2 <= (h[0] + eps) ** 2)
            return out
        cy, sy = np.cos(self.yaw[index]), np.sin(self.yaw[index])
        lx = cy * d[:, 0] + sy * d[:, 1]
        ly = -sy * d[:, 0] + cy * d[:, 1]
        box: np.ndarray = inside_z & (np.abs(lx) <= h[0] + eps) & (np.abs(ly) <= h[1] + eps)
        return box


class PrimitiveBuilder:
    """Accumulates shapes, then freezes them into `Primitives`."""

    def __init__(self) -> None:
        self._rows: list[tuple[object, ...]] = []

    def box(
        self,
        center_xy: tuple[float, float],
        z_range: tuple[float, float],
        size_xy: tuple[float, float],
        yaw: float,
        label: int,
        color: np.ndarray,
        style: int,
        seed: int,
        velocity: tuple[float, float] = (0.0, 0.0),
    ) -> None:
        """A box of length size_xy[0] along its heading `yaw`, width size_xy[1], z in z_range."""
        half_xy = (0.5 * size_xy[0], 0.5 * size_xy[1])
        self._add(KIND_BOX, center_xy, z_range, half_xy, yaw, velocity, label, color, style, seed)

    def cylinder(
        self,
        center_xy: tuple[float, float],
        z_range: tuple[float, float],
        radius: float,
        label: int,
        color: np.ndarray,
        style: int,
        seed: int,
        velocity: tuple[float, float] = (0.0, 0.0),
    ) -> None:
        half_xy = (radius, radius)
        self._add(
            KIND_CYLINDER, center_xy, z_range, half_xy, 0.0, velocity, label, color, style, seed
        )

    def _add(
        self,
        kind: int,
        center_xy: tuple[float, float],
        z_range: tuple[float, float],
        half_xy: tuple[float, float],
        yaw: float,
        velocity: tuple[float, float],
        label: int,
        color: np.ndarray,
        style: int,
        seed: int,
    ) -> None:
        z0, z1 = z_range
        center = (center_xy[0], center_xy[1], 0.5 * (z0 + z1))
        half = (half_xy[0], half_xy[1], 0.5 * (z1 - z0))
        self._rows.append((kind, center, half, yaw, velocity, label, color, style, seed))

    def build(self) -> Primitives:
        if not self._rows:
            empty = np.zeros((0, 3))
            return Primitives(
                np.zeros(0, np.int8),
                empty,
                empty,
                np.zeros(0),
                np.zeros((0, 2)),
                np.zeros(0, np.uint8),
                empty.astype(np.float32),
                np.zeros(0, np.int8),
                np.zeros(0, np.int64),
            )
        cols = list(zip(*self._rows, strict=True))
        return Primitives(
            kind=np.array(cols[0], dtype=np.int8),
            center=np.array(cols[1], dtype=np.float64),
            half=np.array(cols[2], dtype=np.float64),
            yaw=np.array(cols[3], dtype=np.float64),
            velocity=np.array(cols[4], dtype=np.float64),
            label=np.array(cols[5], dtype=np.uint8),
            color=np.clip(np.array(cols[6], dtype=np.float32), 0.0, 1.0),
            style=np.array(cols[7], dtype=np.int8),
            seed=np.array(cols[8], dtype=np.int64),
        )
