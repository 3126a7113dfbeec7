"""Stereo cost volume of the 4D-stereo DepthNet (FLASHOCC_SPEC.md §3.3, `calculate_cost_volumn`).
In: stage-0 features of two frames (B·N, Cs, h, w) + calibration. Out: (B·N, D, h, w) probs.

For every pixel of the current frame's stride-4 frustum and every depth bin, the point is moved
into the same camera at the older frame (`curr2adj`), projected, and the older feature is
sampled there; the cost is the L1 distance over all channels, in groups of 4 channels as the
official code (which also takes the invalid mask from the last group).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

#: Channels per grid_sample call; the official code processes 4 at a time (and the invalid mask
#: comes from channel 0 of the last group), so it is part of the numerics, not a tuning knob.
GROUP_SIZE = 4


def stereo_grid(
    cv_frustum: Tensor,
    curr_to_adj: Tensor,
    intrinsics: Tensor,
    post_rot: Tensor,
    post_tran: Tensor,
) -> Tensor:
    """Sampling grid of the current stride-4 frustum in the older image.

    cv_frustum (D, h, w, 3) of (u, v, d) in network-input pixels; curr_to_adj (B, N, 4, 4)
    camera at the current frame -> same camera at the older frame; intrinsics, post_rot
    (B, N, 3, 3); post_tran (B, N, 3). Returns (B·N, D·h, w, 2) normalised to [−1, 1] with
    align_corners=True over the input size (4h, 4w); points behind the camera get −2.
    """
    if cv_frustum.dim() != 4 or cv_frustum.shape[-1] != 3:
        raise ValueError(f"cv_frustum must be (D, h, w, 3), got {tuple(cv_frustum.shape)}")
    b, n = curr_to_adj.shape[:2]
    d, h, w, _ = cv_frustum.shape
    p = cv_frustum.to(post_tran) - post_tran.view(b, n, 1, 1, 1, 3)  # (B, N, D, h, w, 3)
    p = torch.inverse(post_rot).view(b, n, 1, 1, 1, 3, 3).matmul(p.unsqueeze(-1))  # (..., 3, 1)
    p = torch.cat((p[..., :2, :] * p[..., 2:3, :], p[..., 2:3, :]), dim=5)  # (u·d, v·d, d)
    rot = curr_to_adj[:, :, :3, :3]
    trans = curr_to_adj[:, :, :3, 3]
    combine = rot.matmul(torch.inverse(intrinsics))  # (B, N, 3, 3)
    p = combine.view(b, n, 1, 1, 1, 3, 3).matmul(p)  # (B, N, D, h, w, 3, 1) older camera
    p = p + trans.view(b, n, 1, 1, 1, 3, 1)
    behind = p[..., 2, 0] < 1e-3  # (B, N, D, h, w)
    p = intrinsics.view(b, n, 1, 1, 1, 3, 3).matmul(p)
    uv = p[..., :2, :] / p[..., 2:3, :]  # (B, N, D, h, w, 2, 1) source pixels
    uv = post_rot[..., :2, :2].view(b, n, 1, 1, 1, 2, 2).matmul(uv).squeeze(-1)  # (.., 2)
    uv = uv + post_tran[..., :2].view(b, n, 1, 1, 1, 2)
    h_img, w_img = 4 * h, 4 * w  # official: feature size × cv_downsample
    px = uv[..., 0] / (w_img - 1.0) * 2.0 - 1.0
    py = uv[..., 1] / (h_img - 1.0) * 2.0 - 1.0
    px = torch.where(behind, torch.full_like(px, -2.0), px)
    py = torch.where(behind, torch.full_like(py, -2.0), py)
    grid = torch.stack((px, py), dim=-1)  # (B, N, D, h, w, 2)
    return grid.view(b * n, d * h, w, 2)


def cost_volume(prev: Tensor, curr: Tensor, grid: Tensor, bias: float) -> Tensor:
    """(B·N, Cs, h, w) older and current features + grid (B·N, D·h, w, 2) -> (B·N, D, h, w).

    L1 matching cost summed over channel groups, `bias` added where the warped older feature
    is exactly zero (outside the older image), then softmax(−cost) over D.
    """
    if prev.shape != curr.shape or prev.dim() != 4:
        raise ValueError(
            f"prev/curr must both be (B·N, Cs, h, w), got {tuple(prev.shape)}/{tuple(curr.shape)}"
        )
    bn, cs, h, w = curr.shape
    if cs % GROUP_SIZE:
        raise ValueError(f"Cs (stereo channels) must be a multiple of {GROUP_SIZE}, got {cs}")
    if grid.shape[0] != bn or grid.shape[2] != w or grid.shape[1] % h:
        raise ValueError(f"grid must be (B·N, D·h, w, 2), got {tuple(grid.shape)}")
    d = grid.shape[1] // h
    grid = grid.to(curr.dtype)
    # The sum starts from the first group, not from zeros: equal to the official zeros + ...
    # (0 + x == x), and an exported graph then carries no (B·N, D, h, w) zero constant.
    cost: Tensor | None = None
    warped = curr  # replaced in the loop (Cs >= GROUP_SIZE)
    for g in range(cs // GROUP_SIZE):
        sl = slice(g * GROUP_SIZE, (g + 1) * GROUP_SIZE)
        warped = F.grid_sample(
            prev[:, sl], grid, mode="bilinear", padding_mode="zeros", align_corners=True
        )  # (B·N, 4, D·h, w)
        diff = curr[:, sl].unsqueeze(2) - warped.view(bn, GROUP_SIZE, d, h, w)
        term = diff.abs().sum(dim=1)  # (B·N, D, h, w)
        cost = term if cost is None else cost + term
    if cost is None:
        raise ValueError(f"Cs (stereo channels) must be at least {GROUP_SIZE}, got {cs}")
    if bias != 0.0:
        invalid = warped[:, 0].view(bn, d, h, w) == 0
        cost = cost + invalid.to(cost.dtype) * bias
    return torch.softmax(-cost, dim=1)
