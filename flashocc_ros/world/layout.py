"""Road network of the synthetic world: a Manhattan grid of roads, sidewalks and city blocks.
In: a seed and block pitch. Out: `RoadLayout` answering "which ground class is at (x, y)".

Road centre lines run along x = i·P and y = j·P (P = block pitch). Each road is 2·road_half wide
(one lane per direction plus a parking strip on each side), flanked by sidewalks; the block
interior between them is terrain, other_flat (parking lots, plazas) or both, per block.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flashocc_ros.classes import CLASS_NAMES

DRIVEABLE = CLASS_NAMES.index("driveable_surface")  # 11
OTHER_FLAT = CLASS_NAMES.index("other_flat")  # 12
SIDEWALK = CLASS_NAMES.index("sidewalk")  # 13
TERRAIN = CLASS_NAMES.index("terrain")  # 14

#: Block kinds (value of `RoadLayout.block_kind`).
BLOCK_BUILT, BLOCK_PARK, BLOCK_LOT, BLOCK_PLAZA = 0, 1, 2, 3


@dataclass(frozen=True, eq=False)
class RoadLayout:
    """A road grid over blocks [i0, i0 + I) x [j0, j0 + J); outside it everything is terrain."""

    pitch: float  # m, distance between parallel road centre lines
    road_half: float  # m, half width of the paved road (lanes + parking strips)
    sidewalk: float  # m, sidewalk width on each side of a road
    verge: float  # m, terrain strip between sidewalk and block interior
    i0: int  # index of the first block column (block i spans x in [i·P, (i+1)·P])
    j0: int  # index of the first block row
    block_kind: np.ndarray  # (I, J) int8, BLOCK_* per block

    @property
    def lane_offset(self) -> float:
        """m, lateral offset of a lane centre from the road centre line."""
        return 1.75

    @property
    def parking_offset(self) -> float:
        """m, lateral offset of parked-car centres from the road centre line."""
        return self.road_half - 1.2

    @property
    def street_half(self) -> float:
        """m, half width of road + sidewalks (where block interiors start, before the verge)."""
        return self.road_half + self.sidewalk

    def block_of(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Block indices (i, j) of points (any shape)."""
        return np.floor(x / self.pitch).astype(np.int64), np.floor(y / self.pitch).astype(np.int64)

    def kind_of(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """BLOCK_* of blocks (i, j); blocks outside the table are parks."""
        ii, jj = i - self.i0, j - self.j0
        inside = (ii >= 0) & (ii < self.block_kind.shape[0]) & (jj >= 0)
        inside &= jj < self.block_kind.shape[1]
        out = np.full(np.shape(i), BLOCK_PARK, dtype=np.int8)
        out[inside] = self.block_kind[ii[inside], jj[inside]]
        return out

    def ground_label(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Ground class (uint8, same shape as x) at world points (x, y)."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        p = self.pitch
        dx = np.abs(x - np.round(x / p) * p)  # distance to the nearest road centre line along x
        dy = np.abs(y - np.round(y / p) * p)
        d = np.minimum(dx, dy)
        kind = self.kind_of(*self.block_of(x, y))
        interior = np.where(kind == BLOCK_LOT, OTHER_FLAT, TERRAIN).astype(np.uint8)
        plaza = kind == BLOCK_PLAZA
        # Plazas: paved (other_flat) ring around a lawn.
        inner = d > self.street_half + self.verge + 8.0
        interior[plaza & ~inner] = OTHER_FLAT
        out = np.where(d < self.road_half, DRIVEABLE, SIDEWALK).astype(np.uint8)
        beyond = d >= self.street_half
        verge = beyond & (d < self.street_half + self.verge) & (kind != BLOCK_LOT)
        out[beyond] = interior[beyond]
        out[verge] = TERRAIN
        return out

    def lane_marking(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Bool mask of painted centre-line dashes on roads (appearance only, still road)."""
        p = self.pitch
        dx = x - np.round(x / p) * p
        dy = y - np.round(y / p) * p
        dash_x = (np.abs(dx) < 0.08) & (np.mod(y, 6.0) < 3.0)  # road along y
        dash_y = (np.abs(dy) < 0.08) & (np.mod(x, 6.0) < 3.0)  # road along x
        near_x = np.abs(dy) > self.street_half  # not inside an intersection
        near_y = np.abs(dx) > self.street_half
        out: np.ndarray = (dash_x & near_x) | (dash_y & near_y)
        return out


def random_layout(
    rng: np.random.Generator, pitch: float, i_range: range, j_range: range
) -> RoadLayout:
    """A layout of block pitch `pitch` (m) over blocks i_range x j_range, random block kinds."""
    kinds = rng.choice(
        [BLOCK_BUILT, BLOCK_PARK, BLOCK_LOT, BLOCK_PLAZA],
        size=(len(i_range), len(j_range)),
        p=[0.5, 0.2, 0.18, 0.12],
    ).astype(np.int8)
    return RoadLayout(
        pitch=pitch,
        road_half=float(rng.uniform(6.5, 7.5)),
        sidewalk=float(rng.uniform(2.5, 4.0)),
        verge=float(rng.uniform(0.0, 2.0)),
        i0=i_range.start,
        j0=j_range.start,
        block_kind=kinds,
    )
