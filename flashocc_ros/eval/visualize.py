"""Pictures of occupancy grids: BEV map, isometric voxel view, voxels projected into cameras.
In: semantics (X, Y, Z) uint8 (Occ3D, [x, y, z]); camera images and calibration for overlays.
Out: BGR uint8 images (numpy + OpenCV only) in the official FlashOCC class colours, and the aids
that make them readable: class legend, distance rings, ego and heading, camera names, title bar.

The maps are drawn on dark grey (`BACKGROUND_BGR`), not on white: the official colour of
`manmade`, (230, 230, 250), lies 13 CIELAB units from white, so buildings all but vanish on a
white page; on this grey every class colour, shaded voxel faces included, lies at least 32 units
from the background. The palette itself stays official here as in the node's RViz markers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import cv2
import numpy as np

from flashocc_ros.classes import CLASS_NAMES, FREE_LABEL, PALETTE_RGB
from flashocc_ros.config import GridConfig
from flashocc_ros.eval.metrics import DEFAULT_RANGE_EDGES
from flashocc_ros.sensing.voxels import bev_image as bev_rgb

PALETTE_BGR: np.ndarray = PALETTE_RGB[:, ::-1].copy()
#: Free or unobserved space in the BEV and the voxel view: the grey level (in steps of 8) that
#: keeps the 17 class colours and the voxel view's shaded faces farthest from it in CIELAB
#: (smallest distance 32 units; manmade on white: 13).
BACKGROUND_BGR: tuple[int, int, int] = (80, 80, 80)
#: Brightness factors of the voxel view's faces: top, rear (-x) face, right (-y) face.
FACE_SHADES: tuple[float, float, float] = (1.0, 0.85, 0.7)
#: Distance rings around the ego origin, m: the edges of `RangeMiou`'s rings.
RING_RADII_M: tuple[float, ...] = tuple(r for r in DEFAULT_RANGE_EDGES if r > 0)
RING_BGR: tuple[int, int, int] = (255, 255, 255)
PANEL_BGR: tuple[int, int, int] = (255, 255, 255)  # legend panel and title bar
TEXT_BGR: tuple[int, int, int] = (0, 0, 0)
FONT = cv2.FONT_HERSHEY_SIMPLEX
#: Ego body in base_link (x forward, y left, z up, origin on the ground below the rear axle), m:
#: about nuScenes' car (Renault Zoe, 4.1 x 1.7 x 1.6 m), its footprint centre 1.3 m ahead of the
#: origin as in the synthetic world's clearance check.
EGO_REAR_M, EGO_FRONT_M, EGO_HALF_WIDTH_M, EGO_HEIGHT_M = -0.75, 3.35, 0.87, 1.56
_HEADING_M = 2.5  # m the heading arrow reaches beyond the ego's front

_rings = ", ".join(f"{r:g}" for r in RING_RADII_M)
#: Legend notes of the two map views (what the drawn aids mean).
BEV_NOTES: tuple[str, ...] = (
    "up = ego forward (+x)",
    "white box + arrow: ego, heading",
    f"rings: {_rings} m",
)
VOXEL_NOTES: tuple[str, ...] = (
    "white box + arrow: ego, heading",
    f"rings on the ground: {_rings} m",
)

Project = Callable[[np.ndarray], np.ndarray]  # (P, 3) ego-frame metres -> (P, 2) pixels (u, v)


def _check(sem: np.ndarray) -> None:
    if sem.ndim != 3:
        raise ValueError(f"semantics must be (X, Y, Z), got shape {sem.shape}")


def _grid_for(sem: np.ndarray, grid: GridConfig | None) -> GridConfig:
    """The grid of `sem` (X, Y, Z): `grid` or the default, checked axis by axis."""
    _check(sem)
    grid = grid or GridConfig()
    for axis, got, want in zip("XYZ", sem.shape, grid.shape, strict=True):
        if got != want:
            raise ValueError(f"semantics axis {axis} has {got} cells, the grid has {want}")
    return grid


def present_labels(grids: Iterable[np.ndarray], mask: np.ndarray | None = None) -> list[int]:
    """Sorted labels other than free that occur in any of the (X, Y, Z) grids (inside `mask`)."""
    found: set[int] = set()
    for g in grids:
        found.update(int(c) for c in np.unique(g if mask is None else g[mask]))
    return sorted(found - {FREE_LABEL})


def _text(
    img: np.ndarray,
    text: str,
    org: tuple[int, int],
    scale: float,
    colour: tuple[int, int, int] = TEXT_BGR,
    outline: tuple[int, int, int] | None = None,
    thickness: int = 1,
) -> None:
    """Hershey text at `org` (bottom-left), optionally on a 2 px outline for any background."""
    if outline is not None:
        cv2.putText(img, text, org, FONT, scale, outline, thickness + 2, cv2.LINE_AA)
    cv2.putText(img, text, org, FONT, scale, colour, thickness, cv2.LINE_AA)


def _fixed(points: np.ndarray) -> np.ndarray:
    """(P, 2) float pixels -> int32 with 4 fractional bits (OpenCV's `shift=4`)."""
    return np.round(points * 16).astype(np.int32)


def _draw_rings(
    img: np.ndarray, project: Project, z: float, label_angle: float, visible: np.ndarray | None
) -> None:
    """Circles of RING_RADII_M around the ego origin at height z (m), 1 px, labelled in metres
    at `label_angle` (rad, from ego +x towards +y); drawn only where `visible` (H, W) allows."""
    h, w = img.shape[:2]
    layer = np.zeros((h, w), np.uint8)
    theta = np.linspace(0.0, 2 * np.pi, 361)
    for r in RING_RADII_M:
        pts = np.stack([r * np.cos(theta), r * np.sin(theta), np.full_like(theta, z)], axis=1)
        cv2.polylines(layer, [_fixed(project(pts))], True, 255, 1, cv2.LINE_8, shift=4)
    if visible is not None:
        layer[~visible] = 0
    img[layer > 0] = RING_BGR
    for r in RING_RADII_M:
        at = np.array([[r * np.cos(label_angle), r * np.sin(label_angle), z]])
        u, v = project(at)[0]
        if 0 <= u < w and 0 <= v < h:
            _text(img, f"{r:g} m", (int(u) + 3, int(v) - 3), 0.5, RING_BGR, (0, 0, 0))


#: (8, 3) corners of the ego body, m; index bits: 4 = front, 2 = left, 1 = roof.
_EGO_CORNERS = np.array(
    [
        [x, y, z]
        for x in (EGO_REAR_M, EGO_FRONT_M)
        for y in (-EGO_HALF_WIDTH_M, EGO_HALF_WIDTH_M)
        for z in (0.0, EGO_HEIGHT_M)
    ]
)
#: Faces of the ego body (indices into `_EGO_CORNERS`) with their `FACE_SHADES` index.
_ROOF, _REAR, _RIGHT = ((1, 3, 7, 5), 0), ((0, 2, 3, 1), 1), ((0, 4, 5, 1), 2)


def _draw_ego(
    img: np.ndarray, project: Project, faces: Sequence[tuple[tuple[int, ...], int]]
) -> None:
    """The ego body (`faces`, drawn in order, white shaded, black outline) and a black arrow
    along its heading (+x) from the middle of the roof to beyond the front."""
    px = project(_EGO_CORNERS)
    for face, shade in faces:
        poly = _fixed(px[list(face)])
        grey = round(255 * FACE_SHADES[shade])
        cv2.fillPoly(img, [poly], (grey, grey, grey), cv2.LINE_AA, shift=4)
        cv2.polylines(img, [poly], True, (0, 0, 0), 1, cv2.LINE_AA, shift=4)
    mid, tip = 0.5 * (EGO_REAR_M + EGO_FRONT_M), EGO_FRONT_M + _HEADING_M
    ends = project(np.array([[mid, 0.0, EGO_HEIGHT_M], [tip, 0.0, EGO_HEIGHT_M]]))
    length = float(np.hypot(*(ends[1] - ends[0])))
    thick = max(1, round(length / 20))
    p0, p1 = (tuple(int(c) for c in _fixed(e)) for e in ends)
    cv2.arrowedLine(img, p0, p1, (0, 0, 0), thick, cv2.LINE_AA, shift=4,
                    tipLength=min(0.5, 8 / max(length, 1)))  # fmt: skip


def bev_image(
    semantics: np.ndarray,
    scale: int = 3,
    mask: np.ndarray | None = None,
    grid: GridConfig | None = None,
) -> np.ndarray:
    """(X·s, Y·s, 3) top-down map: per column the class of the highest non-free voxel.

    Image up = ego +x (forward), image left = ego +y; free columns and voxels outside `mask`
    (X, Y, Z) show the background. Drawn over it: distance rings around the ego origin labelled
    in metres (scale / voxel_size px per m) and the ego as a white box with a heading arrow.
    """
    grid = _grid_for(semantics, grid)
    sem = semantics if mask is None else np.where(mask, semantics, FREE_LABEL)
    rgb = bev_rgb(sem, palette=PALETTE_RGB, free_rgb=BACKGROUND_BGR[::-1])  # (X, Y, 3)
    img = cv2.resize(rgb[:, :, ::-1], None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    per_m = scale / grid.voxel_size

    def project(p: np.ndarray) -> np.ndarray:  # (P, 3) -> (P, 2) (u = col, v = row)
        return np.stack([(grid.y_max - p[:, 1]) * per_m, (grid.x_max - p[:, 0]) * per_m], 1)

    _draw_rings(img, project, 0.0, -np.pi / 4, None)
    _draw_ego(img, project, [_ROOF])
    return np.ascontiguousarray(img)


_W, _H, _V = 3, 2, 4  # px: iso projection of one voxel step in x/y and in z


def _cube_sprite() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel offsets (S,), (S,) and face shade (S,) of one isometric unit cube."""

    def proj(dx: int, dy: int, dz: int) -> tuple[int, int]:
        return ((dx - dy) * _W + 16, (dx + dy) * _H - dz * _V + 16)

    canvas = np.zeros((40, 40), dtype=np.uint8)
    faces = (
        (2, [(1, 0, 0), (1, 1, 0), (1, 1, 1), (1, 0, 1)]),  # +x
        (3, [(0, 1, 0), (1, 1, 0), (1, 1, 1), (0, 1, 1)]),  # +y
        (1, [(0, 0, 1), (1, 0, 1), (1, 1, 1), (0, 1, 1)]),  # top
    )
    for face_id, corners in faces:
        cv2.fillConvexPoly(canvas, np.array([proj(*c) for c in corners], np.int32), face_id)
    ys, xs = np.nonzero(canvas)
    shade = np.array((0.0, *FACE_SHADES))[canvas[ys, xs]]
    return xs - 16, ys - 16, shade


def voxel_view(
    semantics: np.ndarray, mask: np.ndarray | None = None, grid: GridConfig | None = None
) -> np.ndarray:
    """Isometric picture of the non-free voxels (painter's order, three shaded faces per cube).

    Viewed from above, behind the ego's right: ego forward points to the upper left, ego left
    to the upper right. Only voxels with a free +x, +y or +z neighbour are drawn (the others are
    hidden). Distance rings lie on the top of the ground layer (hidden behind higher voxels),
    the ego box and its heading arrow are drawn over everything. Background dark grey.
    """
    grid = _grid_for(semantics, grid)
    sem = semantics if mask is None else np.where(mask, semantics, FREE_LABEL)
    sem = sem[::-1, ::-1]  # view from -x -y: flip so that the visible faces are +i, +j
    occ = sem != FREE_LABEL
    pad = np.pad(occ, ((0, 1), (0, 1), (0, 1)))
    exposed = occ & ~(pad[1:, :-1, :-1] & pad[:-1, 1:, :-1] & pad[:-1, :-1, 1:])
    i, j, k = np.nonzero(exposed)
    nx, ny, nz = sem.shape
    width = (nx + ny) * _W + 8
    height = (nx + ny) * _H + nz * _V + 8
    ox, oy = ny * _W + 4, nz * _V + 4
    sx, sy, shade = _cube_sprite()
    px = ((i - j) * _W + ox)[:, None] + sx[None]  # (K, S)
    py = ((i + j) * _H - k * _V + oy)[:, None] + sy[None]
    depth = np.broadcast_to((i + j + k)[:, None], px.shape)
    colour = PALETTE_BGR[sem[i, j, k]][:, None, :] * shade[None, :, None]  # (K, S, 3)
    ok = (px >= 0) & (px < width) & (py >= 0) & (py < height)
    flat = (py * width + px)[ok]
    order = np.lexsort((depth[ok], flat))  # by pixel, then depth: the last per pixel is nearest
    flat, col = flat[order], colour[ok][order]
    last = np.diff(flat, append=-1) != 0  # (an empty grid has no pixel to draw)
    img = np.empty((height * width, 3), dtype=np.uint8)
    img[:] = BACKGROUND_BGR
    img[flat[last]] = np.clip(col[last], 0, 255).astype(np.uint8)
    top_k = np.full(height * width, -1)  # (H·W,) layer of the voxel each pixel shows
    top_k[flat[last]] = np.broadcast_to(k[:, None], px.shape)[ok][order][last]
    img = img.reshape(height, width, 3)
    v = grid.voxel_size
    ground = min(max(int(np.floor(-grid.z_min / v)), 0), nz - 1)  # layer holding z = 0

    def project(p: np.ndarray) -> np.ndarray:  # (P, 3) ego metres -> (P, 2) pixels
        a, b = (grid.x_max - p[:, 0]) / v, (grid.y_max - p[:, 1]) / v
        c = (p[:, 2] - grid.z_min) / v
        return np.stack([(a - b) * _W + ox, (a + b) * _H - c * _V + oy], axis=1)

    z_ring = grid.z_min + (ground + 1) * v  # top of the ground layer
    _draw_rings(img, project, z_ring, -3 * np.pi / 4, (top_k <= ground).reshape(height, width))
    _draw_ego(img, project, [_REAR, _RIGHT, _ROOF])
    return img


def camera_overlay(
    image: np.ndarray,
    semantics: np.ndarray,
    intrinsics: np.ndarray,
    camera_to_ego: np.ndarray,
    grid: GridConfig | None = None,
    alpha: float = 0.55,
    max_depth: float = 60.0,
) -> np.ndarray:
    """Image (H, W, 3) BGR with the non-free voxels of `semantics` (X, Y, Z) painted over it.

    intrinsics (3, 3) belong to the image size; camera_to_ego (4, 4) is ego <- optical frame.
    Voxels are drawn far to near as squares the size of their projection.
    """
    _check(semantics)
    grid = grid or GridConfig()
    occ = semantics != FREE_LABEL
    i, j, k = np.nonzero(occ)
    vs = grid.voxel_size
    centres = np.stack([grid.x_min + (i + 0.5) * vs, grid.y_min + (j + 0.5) * vs,
                        grid.z_min + (k + 0.5) * vs], axis=1)  # fmt: skip
    ego_to_cam = np.linalg.inv(camera_to_ego)
    pc = centres @ ego_to_cam[:3, :3].T + ego_to_cam[:3, 3]
    front = (pc[:, 2] > 0.5) & (pc[:, 2] < max_depth)
    pc, labels = pc[front], semantics[i, j, k][front]
    u = intrinsics[0, 0] * pc[:, 0] / pc[:, 2] + intrinsics[0, 2]
    v = intrinsics[1, 1] * pc[:, 1] / pc[:, 2] + intrinsics[1, 2]
    half = 0.5 * intrinsics[0, 0] * vs / pc[:, 2]
    h, w = image.shape[:2]
    vis = (u + half >= 0) & (u - half < w) & (v + half >= 0) & (v - half < h)
    layer = image.copy()
    painted = np.zeros((h, w), dtype=np.uint8)
    for n in np.flatnonzero(vis)[np.argsort(-pc[vis, 2])]:
        p0 = (int(u[n] - half[n]), int(v[n] - half[n]))
        p1 = (int(u[n] + half[n]), int(v[n] + half[n]))
        colour = tuple(int(c) for c in PALETTE_BGR[labels[n]])
        cv2.rectangle(layer, p0, p1, colour, thickness=-1)
        cv2.rectangle(painted, p0, p1, 1, thickness=-1)
    out = image.copy()
    m = painted.astype(bool)
    out[m] = (alpha * layer[m] + (1 - alpha) * image[m]).astype(np.uint8)
    return out


def camera_mosaic(
    images: list[np.ndarray], width: int = 480, names: Sequence[str] | None = None
) -> np.ndarray:
    """Six images (rig order FL, F, FR, BL, B, BR) tiled 3 x 2, each resized to `width`;
    `names` (6 camera names) are written in each tile's top-left corner."""
    if len(images) != 6:
        raise ValueError(f"camera_mosaic needs N = 6 images, got {len(images)}")
    if names is not None and len(names) != 6:
        raise ValueError(f"camera_mosaic needs N = 6 camera names, got {len(names)}")
    h = round(width * images[0].shape[0] / images[0].shape[1])
    tiles = [cv2.resize(im, (width, h), interpolation=cv2.INTER_AREA) for im in images]
    for tile, name in zip(tiles, names or (), strict=False):
        scale = max(0.35, width / 900)
        (tw, th), base = cv2.getTextSize(name, FONT, scale, 1)
        cv2.rectangle(tile, (0, 0), (tw + 10, th + base + 8), (0, 0, 0), -1)
        _text(tile, name, (5, th + 4), scale, (255, 255, 255))
    return np.concatenate([np.concatenate(tiles[:3], 1), np.concatenate(tiles[3:], 1)], 0)


def side_by_side(left: np.ndarray, right: np.ndarray, titles: tuple[str, str]) -> np.ndarray:
    """Two BGR images next to each other (padded to the same height) with titles."""
    h = max(left.shape[0], right.shape[0])
    parts = []
    for img, title in ((left, titles[0]), (right, titles[1])):
        pad = np.full((h + 30, img.shape[1], 3), 255, dtype=np.uint8)
        pad[30 : 30 + img.shape[0]] = img
        cv2.putText(pad, title, (8, 22), FONT, 0.7, TEXT_BGR, 2)
        parts.append(pad)
    return np.concatenate(parts, axis=1)


_ROW = 22  # px, legend row height


def legend(labels: Iterable[int], notes: Sequence[str] = ()) -> np.ndarray:
    """(H, W, 3) white panel: a swatch and the class name per label, then the `notes` lines.

    Swatches are 16 x 16 px of the exact class colour in a grey frame; label 17 (free) is shown
    in the background colour as "free / unobserved".
    """
    rows = [(int(c), "free / unobserved" if c == FREE_LABEL else CLASS_NAMES[c]) for c in labels]
    lines = ["classes", *(n for _, n in rows), *notes]
    width = 44 + max(cv2.getTextSize(t, FONT, 0.5, 1)[0][0] for t in lines)
    height = _ROW * (2 + len(rows) + len(notes)) + 8
    panel = np.full((height, width, 3), PANEL_BGR, np.uint8)
    _text(panel, "classes", (10, 18), 0.55, thickness=2)
    for n, (c, name) in enumerate(rows):
        y = _ROW * (n + 1) + 4
        colour = BACKGROUND_BGR if c == FREE_LABEL else tuple(int(v) for v in PALETTE_BGR[c])
        cv2.rectangle(panel, (9, y - 1), (26, y + 16), (128, 128, 128), 1)
        panel[y : y + 16, 10:26] = colour
        _text(panel, name, (34, y + 13), 0.5)
    for n, note in enumerate(notes):
        _text(panel, note, (10, _ROW * (len(rows) + 2 + n) + 12), 0.45)
    return panel


def with_legend(img: np.ndarray, labels: Iterable[int], notes: Sequence[str] = ()) -> np.ndarray:
    """`img` with `legend(labels, notes)` to its right (both padded white to equal height)."""
    panel = legend(labels, notes)
    h = max(img.shape[0], panel.shape[0])
    out = np.full((h, img.shape[1] + panel.shape[1], 3), PANEL_BGR, np.uint8)
    out[: img.shape[0], : img.shape[1]] = img
    out[: panel.shape[0], img.shape[1] :] = panel
    return out


def titled(img: np.ndarray, title: str) -> np.ndarray:
    """`img` under a 40 px white title bar (the font shrinks to fit the width)."""
    scale = 0.8
    while scale > 0.3 and cv2.getTextSize(title, FONT, scale, 2)[0][0] > img.shape[1] - 16:
        scale -= 0.05
    bar = np.full((40, img.shape[1], 3), PANEL_BGR, np.uint8)
    _text(bar, title, (8, 28), scale, thickness=2)
    return np.concatenate([bar, img], axis=0)
