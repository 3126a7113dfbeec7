"""Appearance: procedural textures per class family, Lambert shading, distance fog and a sky.
In: per-ray hit attributes (class, style, base colour, surface coordinates, normal, distance).
Out: linear BGR colours in [0, 1], (K, 3) float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flashocc_ros.world import primitives as P
from flashocc_ros.world.layout import DRIVEABLE, OTHER_FLAT, SIDEWALK, TERRAIN, RoadLayout


def _hash(ix: np.ndarray, iy: np.ndarray, seed: np.ndarray | int) -> np.ndarray:
    """Uniform [0, 1) float32 per integer lattice point (uint32 integer hash)."""
    h = ix.astype(np.uint32) * np.uint32(374761393)
    h += iy.astype(np.uint32) * np.uint32(668265263)
    h += np.asarray(seed).astype(np.uint32) * np.uint32(2246822519)
    h = (h ^ (h >> np.uint32(13))) * np.uint32(1274126177)
    h ^= h >> np.uint32(16)
    return (h >> np.uint32(8)).astype(np.float32) / np.float32(1 << 24)


def value_noise(x: np.ndarray, y: np.ndarray, seed: np.ndarray | int = 0) -> np.ndarray:
    """Smooth value noise in [0, 1), lattice spacing 1, same shape as x."""
    fx, fy = np.floor(x), np.floor(y)
    ix, iy = fx.astype(np.int64), fy.astype(np.int64)
    tx, ty = (x - fx).astype(np.float32), (y - fy).astype(np.float32)
    tx, ty = tx * tx * (3 - 2 * tx), ty * ty * (3 - 2 * ty)
    a, b = _hash(ix, iy, seed), _hash(ix + 1, iy, seed)
    c, d = _hash(ix, iy + 1, seed), _hash(ix + 1, iy + 1, seed)
    out: np.ndarray = (a + (b - a) * tx) * (1 - ty) + (c + (d - c) * tx) * ty
    return out


def fbm(x: np.ndarray, y: np.ndarray, seed: np.ndarray | int = 0, octaves: int = 3) -> np.ndarray:
    """Fractal noise in about [0, 1): `octaves` value-noise layers, each twice as fine."""
    out = np.zeros(np.shape(x), dtype=np.float32)
    amp, total = 1.0, 0.0
    for k in range(octaves):
        out += amp * value_noise(x * 2**k, y * 2**k, np.asarray(seed) + k)
        total += amp
        amp *= 0.5
    return out / total


@dataclass(frozen=True)
class Look:
    """Per-scene appearance parameters (sun, sky, ground colours), drawn from the scene seed."""

    sun: tuple[float, float, float]  # unit vector towards the sun, world frame
    sky_horizon: tuple[float, float, float]  # BGR
    sky_zenith: tuple[float, float, float]  # BGR
    ground: tuple[tuple[float, float, float], ...]  # BGR for road, other_flat, sidewalk, terrain
    fog_distance: float  # m, e-folding distance of the haze

    @staticmethod
    def from_seed(seed: int) -> Look:
        rng = np.random.default_rng(seed + 7919)
        el, az = rng.uniform(0.5, 1.1), rng.uniform(-np.pi, np.pi)
        sun = (np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el))

        def jit(bgr: tuple[float, float, float], s: float = 0.05) -> tuple[float, float, float]:
            v = np.clip(np.array(bgr) * rng.uniform(0.85, 1.15) + rng.normal(0, s, 3), 0, 1)
            return (float(v[0]), float(v[1]), float(v[2]))

        return Look(
            sun=(float(sun[0]), float(sun[1]), float(sun[2])),
            sky_horizon=jit((0.92, 0.85, 0.78), 0.03),
            sky_zenith=jit((0.85, 0.55, 0.3), 0.05),
            ground=(
                jit((0.3, 0.3, 0.31), 0.02),  # road asphalt
                jit((0.32, 0.38, 0.5)),  # other_flat: brick / gravel
                jit((0.62, 0.62, 0.6), 0.03),  # sidewalk
                jit((0.2, 0.45, 0.35)),  # terrain: grass / soil
            ),
            fog_distance=float(rng.uniform(180.0, 320.0)),
        )


_GROUND_INDEX = {DRIVEABLE: 0, OTHER_FLAT: 1, SIDEWALK: 2, TERRAIN: 3}


def ground_albedo(
    look: Look, layout: RoadLayout, x: np.ndarray, y: np.ndarray, label: np.ndarray
) -> np.ndarray:
    """(K, 3) BGR albedo of the ground at world points (K,) with ground classes (K,)."""
    base = np.array(look.ground, dtype=np.float32)
    idx = np.vectorize(_GROUND_INDEX.get, otypes=[np.int64])(label) if label.size else label
    col = base[idx.astype(np.int64)]
    fine = fbm(x * 4.0, y * 4.0, 11, 2)
    coarse = value_noise(x * 0.15, y * 0.15, 5)
    f = (0.75 + 0.3 * fine + 0.2 * coarse)[:, None]
    col = col * f
    tiles = (np.abs(np.mod(x, 0.6) - 0.3) > 0.27) | (np.abs(np.mod(y, 0.6) - 0.3) > 0.27)
    col[(label == SIDEWALK) & tiles] *= 0.75
    grass = label == TERRAIN
    col[grass] *= (0.7 + 0.6 * fbm(x[grass] * 9.0, y[grass] * 9.0, 3, 2))[:, None]
    paint = (label == DRIVEABLE) & layout.lane_marking(x, y)
    col[paint] = 0.85
    return col


def object_albedo(
    style: np.ndarray, base: np.ndarray, seed: np.ndarray, uv: np.ndarray, height: np.ndarray
) -> np.ndarray:
    """(K, 3) BGR albedo of object surfaces.

    style, seed (K,); base (K, 3); uv (K, 2) m surface coordinates on the hit face; height (K,)
    relative height on the primitive in [0, 1].
    """
    u, v = uv[:, 0], uv[:, 1]
    col = base * (0.85 + 0.3 * fbm(u * 3.0, v * 3.0, seed, 2))[:, None]
    s = style
    glass = (s == P.STYLE_GLASS) & (height > 0.35) & (height < 0.9)
    col[glass] = col[glass] * 0.25 + np.float32(0.08)
    body = s == P.STYLE_BODY
    col[body & (height < 0.25)] *= 0.45  # dark rim / wheels
    facade = s == P.STYLE_FACADE
    win = facade & (np.mod(u, 3.0) > 1.2) & (np.mod(v, 3.2) > 1.0) & (np.mod(v, 3.2) < 2.6)
    col[win] = col[win] * 0.3 + np.float32(0.1)
    leaf = s == P.STYLE_FOLIAGE
    col[leaf] *= (0.5 + 0.9 * fbm(u[leaf] * 6.0, v[leaf] * 6.0, seed[leaf], 2))[:, None]
    stripes = (s == P.STYLE_STRIPES) & (np.mod(height * 4.0, 2.0) > 1.0)
    col[stripes] = 0.9
    person = (s == P.STYLE_PERSON) & (height < 0.5)
    col[person] *= 0.6
    metal = s == P.STYLE_METAL
    col[metal] *= (0.8 + 0.4 * value_noise(u[metal] * 20.0, v[metal] * 0.5, 3))[:, None]
    return np.clip(col, 0.0, 1.0)


def sky(look: Look, dirs: np.ndarray) -> np.ndarray:
    """(K, 3) BGR sky colour for world ray directions (K, 3) with faint clouds."""
    d = dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
    up = np.clip(d[:, 2], 0.0, 1.0)[:, None]
    col = np.array(look.sky_horizon) * (1 - up) + np.array(look.sky_zenith) * up
    h = np.maximum(d[:, 2], 0.05)
    cloud = fbm(d[:, 0] / h * 2.0, d[:, 1] / h * 2.0, 17, 3)
    cloud = np.clip((cloud - 0.55) * 3.0, 0.0, 1.0)[:, None] * np.minimum(up * 4.0, 1.0)
    out: np.ndarray = (col * (1 - cloud) + 0.95 * cloud).astype(np.float32)
    return out


def lit(
    look: Look, albedo: np.ndarray, normal: np.ndarray, dist: np.ndarray, horizon: np.ndarray
) -> np.ndarray:
    """Lambert shading with ambient light and haze towards `horizon` (3,) BGR.

    albedo (K, 3), normals (K, 3), dist (K,) m."""
    sun = np.array(look.sun, dtype=np.float32)
    lambert = np.clip(normal @ sun, 0.0, 1.0)
    col = albedo * (0.45 + 0.65 * lambert)[:, None]
    fog = (1.0 - np.exp(-dist / look.fog_distance))[:, None]
    out: np.ndarray = col * (1 - fog) + horizon * fog
    return out
