"""BEV pooling (lift-splat "bev_pool_v2"): sum of depth-weighted context features per BEV cell.
In: depth (B, N, D, fH, fW), context (B, N, fH, fW, C) + indices. Out: BEV (B, C·Dz, Y, X).

Three implementations of the same sum (FLASHOCC_SPEC.md §2.7), tested to agree:
`bev_pool_reference` recomputes cells from coordinates (plain, slow), `bev_pool_index_add` is the
spec's index_add formulation over precomputed indices, `bev_pool` (the fast CPU/GPU path) merges
points into unique (cell, pixel) pairs and runs one sparse-dense matrix product.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor

from flashocc_ros.config import GridConfig
from flashocc_ros.model.geometry import PoolingIndices, pooling_grid, voxel_coords

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")


def _check(depth: Tensor, feat: Tensor) -> tuple[int, int, int, int, int, int]:
    if depth.dim() != 5:
        raise ValueError(f"depth must be (B, N, D, fH, fW), got {tuple(depth.shape)}")
    b, n, d, h, w = depth.shape
    if feat.dim() != 5 or tuple(feat.shape[:4]) != (b, n, h, w):
        raise ValueError(
            f"feat must be (B, N, fH, fW, C) = ({b}, {n}, {h}, {w}, C), got {tuple(feat.shape)}"
        )
    return b, n, d, h, w, int(feat.shape[-1])


def _to_bev(flat: Tensor, b: int, grid: GridConfig) -> Tensor:
    """(B·Dz·Y·X, C) cell features -> (B, C·Dz, Y, X) (collapse_z: Dz stacked on channels)."""
    _, _, (sx, sy, sz) = pooling_grid(grid)
    c = flat.shape[1]
    out = flat.view(b, sz, sy, sx, c).permute(0, 4, 1, 2, 3)  # (B, C, Dz, Y, X)
    # Official collapse_z: cat(out.unbind(dim=2), 1) -> channel index = z·C + c.
    return torch.cat(out.unbind(dim=2), dim=1)  # (B, Dz·C, Y, X)


def bev_pool_reference(depth: Tensor, feat: Tensor, coords: Tensor, grid: GridConfig) -> Tensor:
    """Plain reference: cells from the (B, N, D, fH, fW, 3) coordinates, accumulate every point."""
    b, *_, c = _check(depth, feat)
    idx, kept = voxel_coords(coords, grid)  # (B, N, D, fH, fW, 3), (B, N, D, fH, fW)
    _, _, (sx, sy, sz) = pooling_grid(grid)
    out = torch.zeros(b, sz, sy, sx, c, dtype=feat.dtype, device=feat.device)
    bi, ni, di, hi, wi = torch.nonzero(kept, as_tuple=True)
    cell = idx[bi, ni, di, hi, wi]  # (M, 3) x, y, z
    contrib = depth[bi, ni, di, hi, wi, None] * feat[bi, ni, hi, wi]  # (M, C)
    out.index_put_((bi, cell[:, 2], cell[:, 1], cell[:, 0]), contrib, accumulate=True)
    return _to_bev(out.view(-1, c), b, grid)


def bev_pool_index_add(
    depth: Tensor, feat: Tensor, indices: PoolingIndices, grid: GridConfig
) -> Tensor:
    """Spec formulation: zeros.index_add_(ranks_bev, depth[ranks_depth] · feat[ranks_feat])."""
    b, _, _, _, _, c = _check(depth, feat)
    _, _, (sx, sy, sz) = pooling_grid(grid)
    depth_flat = depth.reshape(-1)
    feat_flat = feat.reshape(-1, c)
    out = torch.zeros(b * sz * sy * sx, c, dtype=feat.dtype, device=feat.device)
    contrib = depth_flat[indices.ranks_depth, None] * feat_flat[indices.ranks_feat]  # (M, C)
    out.index_add_(0, indices.ranks_bev, contrib)
    return _to_bev(out, b, grid)


class _PairPool(torch.autograd.Function):
    """(cell, pixel)-pair pooling with a hand-written backward.

    forward: depth (B·N·D·fH·fW,), feat (B·N·fH·fW, C) -> (P, C) sums of the non-empty cells,
    one CSR (cells × pixels) @ (pixels, C) product with per-pair weights w.
    backward (training): autograd through `torch.sparse.mm` builds a dense (cells × pixels)
    mask to get the gradient of the CSR values (~200 ms of a ~1 s demo training step on this
    CPU). Here the same gradients are two sparse products: d feat = Wᵀ @ g, and d w = g @ featᵀ
    sampled at the pairs (`sampled_addmm`); d depth of a point = d w of its pair.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, depth_flat: Tensor, feat: Tensor, indices: PoolingIndices
    ) -> Tensor:
        weights = torch.zeros(
            indices.pair_col.shape[0], dtype=depth_flat.dtype, device=depth_flat.device
        )
        weights.index_add_(0, indices.pair_of_point, depth_flat[indices.ranks_depth])
        matrix = torch.sparse_csr_tensor(
            indices.pair_crow,
            indices.pair_col,
            weights.to(feat.dtype),
            size=(indices.num_cells, feat.shape[0]),
            check_invariants=False,  # built by prepare_pooling: sorted, in range
        )
        ctx.indices, ctx.matrix = indices, matrix
        ctx.depth_numel = depth_flat.numel()
        ctx.save_for_backward(feat)
        pooled: Tensor = torch.sparse.mm(matrix, feat)  # (P, C)
        return pooled

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, grad: Tensor
    ) -> tuple[Tensor | None, Tensor | None, None]:
        indices: PoolingIndices = ctx.indices
        (feat,) = ctx.saved_tensors
        grad = grad.contiguous()
        grad_depth = grad_feat = None
        if ctx.needs_input_grad[0]:
            # beta = 0: only the forward matrix's pattern is used, not its values
            grad_w = torch.sparse.sampled_addmm(ctx.matrix, grad, feat.t(), beta=0.0).values()
            grad_depth = grad.new_zeros(ctx.depth_numel)
            grad_depth[indices.ranks_depth] = grad_w[indices.pair_of_point]
        if ctx.needs_input_grad[1]:
            grad_feat = torch.sparse.mm(ctx.matrix.t(), grad)  # (pixels, C)
        return grad_depth, grad_feat, None


def bev_pool(depth: Tensor, feat: Tensor, indices: PoolingIndices, grid: GridConfig) -> Tensor:
    """Fast path: per-pair depth weights, then one CSR (cells × pixels) @ (pixels, C) product.

    Per frame it gathers M scalars and sums them into Q ≤ M pair weights; the (M, C) product
    tensor of the index_add formulation is never materialised. Differentiable (`_PairPool`).
    """
    b, *_, c = _check(depth, feat)
    _, _, (sx, sy, sz) = pooling_grid(grid)
    out = torch.zeros(b * sz * sy * sx, c, dtype=feat.dtype, device=feat.device)
    if indices.num_points == 0:
        return _to_bev(out, b, grid)
    cells = indices.ranks_bev[indices.interval_starts]  # (P,) unique, sorted
    pooled = _PairPool.apply(  # type: ignore[no-untyped-call]
        depth.reshape(-1), feat.reshape(-1, c), indices
    )
    out[cells] = pooled  # (P, C)
    return _to_bev(out, b, grid)
