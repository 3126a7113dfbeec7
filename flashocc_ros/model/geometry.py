"""Lift geometry: frustum, camera-to-ego lifting and BEV pooling indices (official semantics).
In: model config + calibration (B, N, ...). Out: ego points (B, N, D, fH, fW, 3), PoolingIndices.

Follows FLASHOCC_SPEC.md §2.4-2.6: frustum pixel positions are `linspace(0, W-1, fW)` (not cell
centres), image augmentation is undone with inv(post_rot)·(p - post_tran) while intrinsics stay at
source resolution, voxel indices use truncation toward zero (`.long()`), a single height layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from flashocc_ros.config import GridConfig, ModelConfig


@dataclass(frozen=True)
class Calibration:
    """Per-camera geometry of one batch, as the network consumes it (float32 tensors).

    camera_to_ego: (B, N, 4, 4) camera optical frame -> key-ego frame ("sensor2keyego").
    intrinsics:    (B, N, 3, 3) pinhole K at the *source* image resolution.
    post_rot:      (B, N, 3, 3) image augmentation (resize/crop/flip/rotate) rotation part.
    post_tran:     (B, N, 3)    image augmentation translation part (pixels).
    bda:           (B, 3, 3)    BEV augmentation, identity at inference.
    """

    camera_to_ego: Tensor
    intrinsics: Tensor
    post_rot: Tensor
    post_tran: Tensor
    bda: Tensor

    def __post_init__(self) -> None:
        b, n = self.camera_to_ego.shape[:2]
        expected = {
            "camera_to_ego": (b, n, 4, 4),
            "intrinsics": (b, n, 3, 3),
            "post_rot": (b, n, 3, 3),
            "post_tran": (b, n, 3),
            "bda": (b, 3, 3),
        }
        for name, shape in expected.items():
            got = tuple(getattr(self, name).shape)
            if got != shape:
                raise ValueError(f"Calibration.{name}: expected (B, N, ...) = {shape}, got {got}")

    @property
    def batch_size(self) -> int:
        return int(self.camera_to_ego.shape[0])

    @property
    def num_cameras(self) -> int:
        return int(self.camera_to_ego.shape[1])

    def to(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> Calibration:
        return Calibration(
            *(t.to(device=device, dtype=dtype) for t in self.tensors()),
        )

    def tensors(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        return (self.camera_to_ego, self.intrinsics, self.post_rot, self.post_tran, self.bda)

    def equals(self, other: Calibration | None) -> bool:
        """Exact equality of every tensor (used to decide whether geometry must be rebuilt)."""
        if other is None:
            return False
        return all(
            a.shape == b.shape and a.device == b.device and torch.equal(a, b)
            for a, b in zip(self.tensors(), other.tensors(), strict=True)
        )

    @staticmethod
    def from_numpy_like(
        camera_to_ego: Tensor,
        intrinsics: Tensor,
        post_rot: Tensor,
        post_tran: Tensor,
        bda: Tensor | None = None,
    ) -> Calibration:
        """Build from unbatched (N, ...) tensors or arrays: adds B = 1 and an identity bda."""
        c2e = torch.as_tensor(camera_to_ego, dtype=torch.float32)[None]
        k = torch.as_tensor(intrinsics, dtype=torch.float32)[None]
        pr = torch.as_tensor(post_rot, dtype=torch.float32)[None]
        pt = torch.as_tensor(post_tran, dtype=torch.float32)[None]
        b = torch.eye(3)[None] if bda is None else torch.as_tensor(bda, dtype=torch.float32)
        return Calibration(c2e, k, pr, pt, b.reshape(1, 3, 3))


def depth_values(cfg: ModelConfig) -> Tensor:
    """(D,) depth of each bin in metres: linear `arange` or log-spaced (SID) like the official."""
    d = torch.arange(cfg.depth_start, cfg.depth_stop, cfg.depth_step, dtype=torch.float32)
    if not cfg.depth_sid:
        return d
    n = d.shape[0]
    k = torch.arange(n, dtype=torch.float32)
    start = torch.tensor(cfg.depth_start, dtype=torch.float32)
    stop = torch.tensor(cfg.depth_stop, dtype=torch.float32)
    # Official SID: exp(log(start) + k/(D-1) * log((stop - 1) / start)).
    return torch.exp(torch.log(start) + k / (n - 1) * torch.log((stop - 1) / start))


def create_frustum(cfg: ModelConfig, downsample: int | None = None) -> Tensor:
    """(D, fH, fW, 3) frustum points (u, v, d) in network-input pixels and metres."""
    h_in, w_in = cfg.input_size
    ds = cfg.downsample if downsample is None else downsample
    fh, fw = h_in // ds, w_in // ds
    d = depth_values(cfg).view(-1, 1, 1).expand(-1, fh, fw)  # (D, fH, fW)
    n_d = d.shape[0]
    u = torch.linspace(0, w_in - 1, fw, dtype=torch.float32).view(1, 1, fw).expand(n_d, fh, fw)
    v = torch.linspace(0, h_in - 1, fh, dtype=torch.float32).view(1, fh, 1).expand(n_d, fh, fw)
    return torch.stack((u, v, d), dim=-1)  # (D, fH, fW, 3)


def lift_to_ego(
    points: Tensor,
    camera_to_ego: Tensor,
    intrinsics: Tensor,
    post_rot: Tensor,
    post_tran: Tensor,
    bda: Tensor,
) -> Tensor:
    """(..., 3) image points (u, v, depth) -> (B, N, ..., 3) ego points, metres.

    Same operation order as the official `get_ego_coor`: undo the image augmentation, scale by
    depth, apply R·inv(K), add the camera position, then the BEV augmentation.
    """
    if points.shape[-1] != 3:
        raise ValueError(f"points: last axis must be (u, v, d), got shape {tuple(points.shape)}")
    b, n = camera_to_ego.shape[:2]
    lead = points.shape[:-1]
    ones = (1,) * len(lead)
    p = points.to(camera_to_ego) - post_tran.view(b, n, *ones, 3)  # (B, N, ..., 3)
    p = torch.inverse(post_rot).view(b, n, *ones, 3, 3).matmul(p.unsqueeze(-1))  # (B,N,...,3,1)
    p = torch.cat((p[..., :2, :] * p[..., 2:3, :], p[..., 2:3, :]), dim=-2)  # (u·d, v·d, d)
    combine = camera_to_ego[:, :, :3, :3].matmul(torch.inverse(intrinsics))  # (B, N, 3, 3)
    p = combine.view(b, n, *ones, 3, 3).matmul(p).squeeze(-1)  # (B, N, ..., 3)
    p = p + camera_to_ego[:, :, :3, 3].view(b, n, *ones, 3)
    return bda.view(b, 1, *ones, 3, 3).matmul(p.unsqueeze(-1)).squeeze(-1)


def pooling_grid(grid: GridConfig) -> tuple[Tensor, Tensor, tuple[int, int, int]]:
    """Lower bound (3,), interval (3,) and size (X, Y, Dz) of the BEV pooling grid."""
    lower = torch.tensor([grid.x_min, grid.y_min, grid.z_min], dtype=torch.float32)
    interval = torch.tensor(
        [grid.voxel_size, grid.voxel_size, grid.bev_z_interval], dtype=torch.float32
    )
    return lower, interval, (grid.size_x, grid.size_y, grid.bev_z_cells)


def voxel_coords(points: Tensor, grid: GridConfig) -> tuple[Tensor, Tensor]:
    """(..., 3) ego points -> (..., 3) int64 pooling-cell indices (x, y, z) and a kept mask (...).

    Truncation toward zero (`.long()`), as the official code: x in (-40.4, -40) maps to cell 0.
    """
    lower, interval, (sx, sy, sz) = pooling_grid(grid)
    idx = ((points - lower.to(points)) / interval.to(points)).long()
    kept = (
        (idx[..., 0] >= 0)
        & (idx[..., 0] < sx)
        & (idx[..., 1] >= 0)
        & (idx[..., 1] < sy)
        & (idx[..., 2] >= 0)
        & (idx[..., 2] < sz)
    )
    return idx, kept


class PoolingIndices(NamedTuple):
    """Pooling indices of one calibration, sorted by BEV cell (`voxel_pooling_prepare_v2`).

    ranks_bev (M,): flat output cell b·Dz·Y·X + z·Y·X + y·X + x of each kept frustum point.
    ranks_depth (M,): index into the flattened depth probabilities (B, N, D, fH, fW).
    ranks_feat (M,): index into the flattened context pixels (B, N, fH, fW).
    interval_starts / interval_lengths (P,): one interval of points per non-empty cell.
    pair_of_point (M,), pair_crow (P+1,), pair_col (Q,): the points merged into unique
    (cell, pixel) pairs in CSR form, for the sparse-matmul fast path (`bev_pool`).
    """

    ranks_bev: Tensor
    ranks_depth: Tensor
    ranks_feat: Tensor
    interval_starts: Tensor
    interval_lengths: Tensor
    pair_of_point: Tensor
    pair_crow: Tensor
    pair_col: Tensor
    batch_size: int

    @property
    def num_points(self) -> int:
        return int(self.ranks_bev.shape[0])

    @property
    def num_cells(self) -> int:
        return int(self.interval_starts.shape[0])


def prepare_pooling(coords: Tensor, grid: GridConfig) -> PoolingIndices:
    """(B, N, D, fH, fW, 3) ego points -> PoolingIndices (int64 tensors on coords' device)."""
    if coords.dim() != 6 or coords.shape[-1] != 3:
        raise ValueError(f"coords must be (B, N, D, fH, fW, 3), got {tuple(coords.shape)}")
    b, n, d, h, w, _ = coords.shape
    dev = coords.device
    num_points = b * n * d * h * w
    ranks_depth = torch.arange(num_points, device=dev)
    ranks_feat = (
        torch.arange(b * n * h * w, device=dev).view(b, n, 1, h, w).expand(b, n, d, h, w).flatten()
    )
    idx, kept = voxel_coords(coords, grid)
    idx = idx.view(num_points, 3)
    batch = torch.arange(b, device=dev).view(b, 1).expand(b, num_points // b).reshape(-1)
    _, _, (sx, sy, sz) = pooling_grid(grid)
    ranks_bev = batch * (sz * sy * sx) + idx[:, 2] * (sy * sx) + idx[:, 1] * sx + idx[:, 0]
    kept = kept.view(-1)
    ranks_bev, ranks_depth, ranks_feat = ranks_bev[kept], ranks_depth[kept], ranks_feat[kept]
    # Stable sort by (cell, pixel) so equal pairs are adjacent; cells stay sorted as officially.
    num_pix = b * n * h * w
    order = torch.argsort(ranks_bev * num_pix + ranks_feat, stable=True)
    ranks_bev, ranks_depth, ranks_feat = ranks_bev[order], ranks_depth[order], ranks_feat[order]
    m = ranks_bev.shape[0]
    if m == 0:
        empty = torch.zeros(0, dtype=torch.long, device=dev)
        return PoolingIndices(
            empty, empty, empty, empty, empty, empty, torch.zeros(1, dtype=torch.long), empty, b
        )
    cell_start = torch.ones(m, dtype=torch.bool, device=dev)
    cell_start[1:] = ranks_bev[1:] != ranks_bev[:-1]
    interval_starts = torch.nonzero(cell_start).flatten()
    interval_lengths = torch.diff(interval_starts, append=torch.tensor([m], device=dev))
    pair_start = cell_start.clone()
    pair_start[1:] |= ranks_feat[1:] != ranks_feat[:-1]
    pair_of_point = torch.cumsum(pair_start.long(), 0) - 1  # (M,) pair id of each point
    pair_col = ranks_feat[pair_start]  # (Q,) pixel of each pair
    pairs_per_cell = torch.zeros(interval_starts.shape[0], dtype=torch.long, device=dev)
    pairs_per_cell.index_add_(
        0, torch.cumsum(cell_start.long(), 0)[pair_start] - 1, torch.ones_like(pair_col)
    )
    pair_crow = torch.cat([torch.zeros(1, dtype=torch.long, device=dev), pairs_per_cell.cumsum(0)])
    return PoolingIndices(
        ranks_bev,
        ranks_depth,
        ranks_feat,
        interval_starts,
        interval_lengths,
        pair_of_point,
        pair_crow,
        pair_col,
        b,
    )


class LiftGeometry(nn.Module):
    """Owns the frustum and the pooling indices of the current calibration.

    The frustum is a non-persistent buffer (no state_dict key, like the official model). The
    indices are recomputed only when the calibration changes (`indices`), never per frame.
    """

    frustum: Tensor

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.grid = cfg.grid
        self.register_buffer("frustum", create_frustum(cfg), persistent=False)
        self._calib: Calibration | None = None
        self._indices: PoolingIndices | None = None
        self.rebuilds = 0  # how often indices were recomputed (observable by tests/diagnostics)

    def coords(self, calib: Calibration) -> Tensor:
        """(B, N, D, fH, fW, 3) ego coordinates of every frustum point."""
        return lift_to_ego(self.frustum, *calib.tensors())

    def indices(self, calib: Calibration) -> PoolingIndices:
        """PoolingIndices for `calib`, cached while the calibration stays exactly the same."""
        if self._indices is None or not calib.equals(self._calib):
            self._indices = prepare_pooling(self.coords(calib), self.grid)
            self._calib = Calibration(*(t.detach().clone() for t in calib.tensors()))
            self.rebuilds += 1
        return self._indices

    def invalidate(self) -> None:
        """Forget the cached indices (the next call recomputes them)."""
        self._calib = None
        self._indices = None
