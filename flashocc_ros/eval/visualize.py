"""Pictures of occupancy grids: BEV map, isometric voxel view, voxels projected into cameras.
In: semantics (X, Y, Z) uint8 (Occ3D, [x, y, z]); camera images and calibration for overlays.
Out: BGR uint8 images (numpy + OpenCV only), official FlashOCC palette.
"""

from __future__ import annotations

import cv2
import numpy as np

from flashocc_ros.classes import FREE_LABEL, PALETTE_RGB
from flashocc_ros.config import GridConfig

PALETTE_BGR: np.ndarray = PALETTE_RGB[:, ::-1].copy()


def _check(sem: np.ndarray) -> None:
    if sem.ndim != 3:
        raise ValueError(f"semantics must be (X, Y, Z), got shape {sem.shape}")


def bev_image(semantics: np.ndarray, scale: int = 3, mask: np.ndarray | None = None) -> np.ndarray:
    """(X·s, Y·s, 3) top-down map: per column the class of the highest non-free voxel.

    Image up = ego +x (forward), image left = ego +y; free columns are white (palette 17),
    voxels outside `mask` (X, Y, Z) are treated as free. A black triangle marks the ego.
    """
    _check(semantics)
    sem = semantics if mask is None else np.where(mask, semantics, FREE_LABEL)
    occ = sem != FREE_LABEL
    top = sem.shape[2] - 1 - np.argmax(occ[:, :, ::-1], axis=2)  # (X, Y) highest occupied z
    cls = np.take_along_axis(sem, top[..., None], axis=2)[..., 0]
    cls = np.where(occ.any(axis=2), cls, FREE_LABEL)
    img = PALETTE_BGR[cls[::-1, ::-1]]  # rows: x descending, cols: y descending
    img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    cx, cy = img.shape[1] // 2, img.shape[0] // 2
    tri = np.array([[cx, cy - 4 * scale], [cx - 2 * scale, cy + 3 * scale],
                    [cx + 2 * scale, cy + 3 * scale]], dtype=np.int32)  # fmt: skip
    cv2.fillConvexPoly(img, tri, (0, 0, 0))
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
    shade = np.array([0.0, 1.0, 0.78, 0.58])[canvas[ys, xs]]
    return xs - 16, ys - 16, shade


def voxel_view(semantics: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Isometric picture of the non-free voxels (painter's order, three shaded faces per cube).

    Viewed from the ego's front-left above; only voxels with a free +x, +y or +z neighbour are
    drawn (the others are hidden). Background white.
    """
    _check(semantics)
    sem = semantics if mask is None else np.where(mask, semantics, FREE_LABEL)
    sem = sem[::-1, ::-1]  # view from +x +y: flip so that the visible faces are +i, +j
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
    last = np.r_[flat[1:] != flat[:-1], True]
    img = np.full((height * width, 3), 255, dtype=np.uint8)
    img[flat[last]] = np.clip(col[last], 0, 255).astype(np.uint8)
    return img.reshape(height, width, 3)


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


def camera_mosaic(images: list[np.ndarray], width: int = 480) -> np.ndarray:
    """Six images (rig order FL, F, FR, BL, B, BR) tiled 3 x 2, each resized to `width`."""
    if len(images) != 6:
        raise ValueError(f"camera_mosaic needs N = 6 images, got {len(images)}")
    h = round(width * images[0].shape[0] / images[0].shape[1])
    tiles = [cv2.resize(im, (width, h), interpolation=cv2.INTER_AREA) for im in images]
    return np.concatenate([np.concatenate(tiles[:3], 1), np.concatenate(tiles[3:], 1)], 0)


def side_by_side(left: np.ndarray, right: np.ndarray, titles: tuple[str, str]) -> np.ndarray:
    """Two BGR images next to each other (padded to the same height) with titles."""
    h = max(left.shape[0], right.shape[0])
    parts = []
    for img, title in ((left, titles[0]), (right, titles[1])):
        pad = np.full((h + 30, img.shape[1], 3), 255, dtype=np.uint8)
        pad[30 : 30 + img.shape[0]] = img
        cv2.putText(pad, title, (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 0), 2)
        parts.append(pad)
    return np.concatenate(parts, axis=1)
