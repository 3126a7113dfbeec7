"""Voxelisation by positive-volume overlap against the brute-force point sampler: faces on voxel
faces, thin objects, rotated boxes, discs, the ground layer, paint order and a whole scene."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from flashocc_ros.classes import CLASS_NAMES, FREE_LABEL
from flashocc_ros.config import GridConfig
from flashocc_ros.world.primitives import STYLE_PLAIN, PrimitiveBuilder
from flashocc_ros.world.scene import Scene, generate_scene
from flashocc_ros.world.voxelize import PAINT_ORDER, voxelize, voxelize_by_sampling

GRID = GridConfig()  # voxel faces at multiples of 0.4 m in x and y, at -1 + 0.4 k in z
CAR, BUILDING, CONE = (CLASS_NAMES.index(n) for n in ("car", "manmade", "traffic_cone"))
GREY = np.full(3, 0.5)


@pytest.fixture(scope="module")
def base() -> Scene:
    return generate_scene(1, 1)


def _scene(base: Scene, add: list[tuple[str, tuple[object, ...]]]) -> Scene:
    """`base` with its primitives replaced: ("box", (xy, z_range, size, yaw, label)) or
    ("cyl", (xy, z_range, radius, label))."""
    b = PrimitiveBuilder()
    for kind, args in add:
        if kind == "box":
            xy, z, size, yaw, label = args
            b.box(xy, z, size, yaw, label, GREY, STYLE_PLAIN, 1)  # type: ignore[arg-type]
        else:
            xy, z, radius, label = args
            b.cylinder(xy, z, radius, label, GREY, STYLE_PLAIN, 1)  # type: ignore[arg-type]
    return dataclasses.replace(base, prims=b.build())


def _pose(x: float = 0.0, y: float = 0.0, yaw: float = 0.0) -> np.ndarray:
    m = np.eye(4)
    m[:2, :2] = [[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]]
    m[:2, 3] = x, y
    return m


def _objects(sem: np.ndarray) -> set[tuple[int, int, int, int]]:
    """(x, y, z, label) of every voxel outside the ground layer that is not free."""
    above = sem.copy()
    above[:, :, 2] = FREE_LABEL
    return {(*map(int, v), int(above[tuple(v)])) for v in np.argwhere(above != FREE_LABEL)}


def _expect(xs: range, ys: range, zs: range, label: int) -> set[tuple[int, int, int, int]]:
    return {(x, y, z, label) for x in xs for y in ys for z in zs}


def _both(scene: Scene, pose: np.ndarray, spacing: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    return voxelize(scene, 0.0, pose, GRID), voxelize_by_sampling(scene, 0.0, pose, GRID, spacing)


# x/y voxel i spans [-40 + 0.4 i, -39.6 + 0.4 i) m; z layer k spans [-1 + 0.4 k, -0.6 + 0.4 k) m.
def test_box_with_faces_on_voxel_faces_fills_only_the_voxels_inside(base: Scene) -> None:
    """A car body x [0.8, 2.4], y [-0.8, 0.8], z [0.3, 1.0]: 1.0 m, 0.8 m, 2.4 m and -0.8 m are
    voxel faces, so the body fills x 102-105, y 98-101, layers 3-4; the layer above (5, from
    1.0 m), the columns beside it (x 101/106, y 97/102) only touch it and stay free."""
    scene = _scene(base, [("box", ((1.6, 0.0), (0.3, 1.0), (1.6, 1.6), 0.0, CAR))])
    fast, ref = _both(scene, _pose())
    want = _expect(range(102, 106), range(98, 102), range(3, 5), CAR)
    assert _objects(fast) == want
    assert _objects(ref) == want
    assert np.array_equal(fast, ref)


def test_faces_on_voxel_faces_after_the_ego_transform(base: Scene) -> None:
    """The same body seen from an ego turned by 90 degrees and moved: still exactly 4 x 4 x 2."""
    scene = _scene(base, [("box", ((11.6, 5.0), (0.3, 1.0), (1.6, 1.6), 0.0, CAR))])
    pose = _pose(10.0, 5.0, np.pi / 2)  # ego x = world y - 5, ego y = 10 - world x
    fast, ref = _both(scene, pose)
    want = _expect(range(98, 102), range(94, 98), range(3, 5), CAR)
    assert _objects(fast) == want
    assert np.array_equal(fast, ref)


@pytest.mark.parametrize(
    ("z_range", "layers", "resolvable"),
    [
        ((1.05, 1.10), [5], True),  # a 5 cm plate inside layer 5
        ((0.95, 1.05), [4, 5], True),  # straddling the 1.0 m face
        ((1.0, 1.0), [], True),  # zero thickness on a face: no volume
        ((0.6, 1.0), [4], True),  # exactly one layer, both faces on voxel faces
        ((0.6, 1.0 + 2e-6), [4, 5], False),  # 2 µm into layer 5: more than the 1 µm tolerance
        ((0.6, 1.0 + 5e-7), [4], True),  # 0.5 µm into layer 5: rounding, counts as touching
    ],
)
def test_thin_plates(
    base: Scene, z_range: tuple[float, float], layers: list[int], resolvable: bool
) -> None:
    """A 0.2 m square plate inside column (100, 100); `resolvable`: every overlap is either
    nothing or thicker than the sampler's pitch, so the sampler must agree exactly."""
    scene = _scene(base, [("box", ((0.2, 0.2), z_range, (0.2, 0.2), 0.0, CAR))])
    fast, ref = _both(scene, _pose())
    assert _objects(fast) == _expect(range(100, 101), range(100, 101), range(*_span(layers)), CAR)
    assert np.array_equal(fast, ref) == resolvable


def _span(layers: list[int]) -> tuple[int, int]:
    return (layers[0], layers[-1] + 1) if layers else (0, 0)


@pytest.mark.parametrize(
    ("xy", "radius", "columns"),
    [
        ((0.2, 0.2), 0.05, {(100, 100)}),  # a thin pole inside one column
        ((0.0, 0.0), 0.05, {(99, 99), (99, 100), (100, 99), (100, 100)}),  # on a voxel corner
        ((0.15, 0.2), 0.15, {(100, 100)}),  # tangent to the x = 0 face: touches column 99
        ((0.0, 0.2), 0.4, {(99, 100), (100, 100), (99, 99), (99, 101), (100, 99), (100, 101)}),
        ((0.4, 0.4), 0.4 * np.sqrt(2) / 2, {(100, 100), (101, 100), (100, 101), (101, 101)}),
    ],
)
def test_discs(
    base: Scene, xy: tuple[float, float], radius: float, columns: set[tuple[int, int]]
) -> None:
    """Vertical cylinders: a column is filled when the disc reaches into its square; the disc of
    radius 0.4 centred on the x = 0 face is tangent to columns x 98 and 101 (free)."""
    scene = _scene(base, [("cyl", (xy, (0.3, 0.5), radius, CONE))])
    fast, ref = _both(scene, _pose(), spacing=0.01)
    assert {(x, y) for x, y, _, _ in _objects(fast)} == columns
    assert {z for _, _, z, _ in _objects(fast)} == {3}
    assert np.array_equal(fast, ref)


def test_ground_layer(base: Scene) -> None:
    """The ground fills layer 2 ([-0.2, 0.2) m) with the ground class under each column centre;
    a building from z = 0 overlaps layer 2 by 0.2 m and takes it over, a box starting at 0.2 m
    (layer 2's top face) leaves it to the ground; nothing lies below the ground."""
    scene = _scene(
        base,
        [
            ("box", ((-4.0, -4.0), (0.0, 3.0), (1.6, 1.6), 0.0, BUILDING)),
            ("box", ((4.0, 4.0), (0.2, 1.0), (1.6, 1.6), 0.0, CAR)),
        ],
    )
    pose = _pose(3.0, -7.1, np.pi / 2)  # boxes stay axis-aligned, 0.1 m off the voxel faces
    fast, ref = _both(scene, pose)
    assert np.array_equal(fast, ref)
    assert (fast[:, :, :2] == FREE_LABEL).all()
    xs = GRID.x_min + (np.arange(200) + 0.5) * 0.4
    ex, ey = np.meshgrid(xs, xs, indexing="ij")
    wx = pose[0, 0] * ex + pose[0, 1] * ey + pose[0, 3]
    wy = pose[1, 0] * ex + pose[1, 1] * ey + pose[1, 3]
    ground = scene.layout.ground_label(wx, wy)
    building = fast[:, :, 3] == BUILDING
    assert building.sum() >= 16 and (fast[:, :, 2][building] == BUILDING).all()
    assert np.array_equal(fast[:, :, 2][~building], ground[~building])
    assert (fast[:, :, 3] == CAR).sum() >= 16  # the car is there, above the ground layer
    # Another ground height: a grid from -1.2 m puts z = 0 on a face; the layer above holds it.
    low = dataclasses.replace(GRID, z_min=-1.2, z_max=5.2)
    sem = voxelize(scene, 0.0, pose, low)
    assert (sem[:, :, :3] == FREE_LABEL).all() and (sem[:, :, 3] != FREE_LABEL).all()


def test_paint_order_small_things_win(base: Scene) -> None:
    scene = _scene(
        base,
        [
            ("box", ((0.2, 0.2), (0.1, 0.9), (0.2, 0.2), 0.0, CAR)),
            ("box", ((0.0, 0.0), (0.0, 3.0), (4.0, 4.0), 0.0, BUILDING)),  # listed later
        ],
    )
    fast, ref = _both(scene, _pose())
    assert np.array_equal(fast, ref)
    assert fast[100, 100, 3] == CAR and fast[100, 100, 5] == BUILDING
    assert PAINT_ORDER.index("car") > PAINT_ORDER.index("manmade")


def _sampler_gap(fast: np.ndarray, ref: np.ndarray) -> int:
    """Voxels only the fast voxeliser fills. Fails if the sampler put a point where the fast one
    sees nothing, or a class the fast one paints over with an earlier one."""
    rank = {CLASS_NAMES.index(n): i for i, n in enumerate(PAINT_ORDER)}
    differ = np.argwhere(fast != ref)
    for v in differ:
        f, r = int(fast[tuple(v)]), int(ref[tuple(v)])
        assert f != FREE_LABEL and f in rank, f"voxel {v}: sampler {r}, fast {f}"
        assert r not in rank or rank[f] > rank[r], f"voxel {v}: sampler {r} over fast {f}"
    return len(differ)


def test_rotated_boxes_and_discs_converge_to_the_sampler(base: Scene) -> None:
    """Random yaws and positions: the sampler never fills a voxel the fast voxeliser leaves free,
    and the voxels only the fast one fills are overlaps thinner than the sampler's pitch: their
    number about halves with the pitch, and random points thrown into each of those left at the
    finest pitch find the primitive inside (the overlap is real)."""
    rng = np.random.default_rng(4)
    add: list[tuple[str, tuple[object, ...]]] = []
    for k in range(6):
        xy = (float(rng.uniform(-10, 10)), float(rng.uniform(-10, 10)))
        z = (float(rng.uniform(0.0, 0.6)), float(rng.uniform(0.9, 2.0)))
        size = (float(rng.uniform(0.3, 3.0)), float(rng.uniform(0.2, 2.0)))
        add.append(("box", (xy, z, size, float(rng.uniform(-np.pi, np.pi)), CAR)))
        if k % 2:
            add.append(("cyl", (xy, (0.0, 0.7), float(rng.uniform(0.1, 0.9)), CONE)))
    add.append(("box", ((1.0, 1.0), (0.0, 2.0), (3.0, 1.0), np.radians(45.0), BUILDING)))
    scene = _scene(base, add)
    pose = _pose(0.3, -0.2, 0.1)
    fast = voxelize(scene, 0.0, pose, GRID)
    refs = [voxelize_by_sampling(scene, 0.0, pose, GRID, s) for s in (0.1, 0.05, 0.025)]
    gaps = [_sampler_gap(fast, ref) for ref in refs]
    filled = int((fast[:, :, 3:] != FREE_LABEL).sum())
    assert filled > 300
    assert all(b <= 0.7 * a for a, b in itertools.pairwise(gaps)), gaps
    assert gaps[-1] <= 0.1 * filled, gaps
    for v in np.argwhere(fast != refs[-1]):
        assert _overlap_found(scene, pose, v, int(fast[tuple(v)])), v


def _overlap_found(scene: Scene, pose: np.ndarray, voxel: np.ndarray, label: int) -> bool:
    """Whether random points in the voxel (up to 200,000) find a primitive of class `label`."""
    prims, rng = scene.prims, np.random.default_rng(0)
    corner = np.array([GRID.x_min, GRID.y_min, GRID.z_min]) + GRID.voxel_size * voxel
    middle = pose[:3, :3] @ (corner + GRID.voxel_size / 2) + pose[:3, 3]
    reach = prims.bounding_radius() + GRID.voxel_size
    near = (prims.label == label) & (np.linalg.norm(prims.center - middle, axis=1) < reach)
    for _ in range(10):
        world = (corner + GRID.voxel_size * rng.random((20_000, 3))) @ pose[:3, :3].T + pose[:3, 3]
        if any(prims.contains(int(m), world, 0.0, eps=0.0).any() for m in np.flatnonzero(near)):
            return True
    return False


def test_a_generated_scene_against_the_sampler() -> None:
    """A whole keyframe of a generated scene (moving objects placed at t, a turned ego)."""
    scene = generate_scene(11, 5)
    t = scene.timing.frame_time(18)
    pose = scene.trajectory.pose(t)
    fast = voxelize(scene, t, pose, GRID)
    gap = _sampler_gap(fast, voxelize_by_sampling(scene, t, pose, GRID, 0.2))
    filled = int((fast[:, :, 3:] != FREE_LABEL).sum())
    assert filled > 20_000 and gap < 0.06 * filled
    # Car bodies end on the 1.0 m face: most of their top layer has no car above it (only the
    # cabin, narrower and shorter than the body, continues into the 1.0-1.4 m layer).
    body_top = (fast[:, :, 4] == CAR) & (fast[:, :, 5] != CAR)
    assert body_top.sum() > 0.2 * (fast[:, :, 4] == CAR).sum()
