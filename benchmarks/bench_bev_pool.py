"""Row group 2: BEV pooling with precomputed indices vs recomputing geometry vs the reference.
In: seeded depth (1, N, D, fH, fW) and context (1, N, fH, fW, C) of M1 (M0 with --quick) and
the nuScenes-like rig. Out: rows with the speed-up of the fast path over each baseline.

* fast: `bev_pool` with the `PoolingIndices` a `LiftGeometry` cached for the calibration (what
  every frame costs while the calibration is unchanged);
* recompute: lift the frustum and `prepare_pooling` again, then `bev_pool` (a node that
  rebuilt the geometry per frame, e.g. with ego-motion folding while driving);
* index_add: the spec's `bev_pool_index_add` over the same cached indices;
* reference: `bev_pool_reference`, cells from the coordinates, one `index_put_` (plain);
* training: forward + backward of `bev_pool` (its hand-written backward) vs autograd through
  `bev_pool_index_add`, gradients for depth and context.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from benchmarks.common import Row, compare
from flashocc_ros.config import ModelConfig, model_config
from flashocc_ros.model.bev_pool import bev_pool, bev_pool_index_add, bev_pool_reference
from flashocc_ros.model.geometry import Calibration, LiftGeometry, prepare_pooling
from flashocc_ros.model.preprocess import rig_calibration
from flashocc_ros.rig import nuscenes_like_rig

GROUP = "2 bev-pool"


def run(quick: bool, repeats: int) -> list[Row]:
    name = "flashocc-r50-M0" if quick else "flashocc-r50"
    pool_in = inputs(name)
    return [*inference_rows(pool_in, repeats), training_row(pool_in, repeats)]


class PoolInputs(NamedTuple):
    """Seeded pooling inputs of one model on the nuScenes-like rig (made outside inference
    mode, so the training row can take gradients of them)."""

    name: str
    cfg: ModelConfig
    calib: Calibration
    geometry: LiftGeometry
    depth: torch.Tensor  # (B, N, D, fH, fW) probabilities
    feat: torch.Tensor  # (B, N, fH, fW, C) context


def inputs(name: str) -> PoolInputs:
    cfg = model_config(name)
    calib = rig_calibration(nuscenes_like_rig(), cfg.input_size)
    gen = torch.Generator().manual_seed(0)
    n, d, (h, w), c = cfg.num_cameras, cfg.num_depth_bins, cfg.feature_size, cfg.context_channels
    depth = torch.randn(1, n, d, h, w, generator=gen).softmax(2)
    feat = torch.randn(1, n, h, w, c, generator=gen)
    geometry = LiftGeometry(cfg)
    geometry.indices(calib)  # cached now, outside inference mode (autograd saves them)
    return PoolInputs(name, cfg, calib, geometry, depth, feat)


@torch.inference_mode()
def inference_rows(pool_in: PoolInputs, repeats: int) -> list[Row]:
    name, cfg, calib, geometry, depth, feat = pool_in
    c = cfg.context_channels
    indices = geometry.indices(calib)
    coords = geometry.coords(calib)  # (B, N, D, fH, fW, 3)
    fast = bev_pool(depth, feat, indices, cfg.grid)
    torch.testing.assert_close(bev_pool_reference(depth, feat, coords, cfg.grid), fast)

    def recompute() -> torch.Tensor:
        fresh = prepare_pooling(geometry.coords(calib), cfg.grid)
        return bev_pool(depth, feat, fresh, cfg.grid)

    ms = compare(
        {
            "fast": lambda: bev_pool(depth, feat, indices, cfg.grid),
            "recompute": recompute,
            "index_add": lambda: bev_pool_index_add(depth, feat, indices, cfg.grid),
            "reference": lambda: bev_pool_reference(depth, feat, geometry.coords(calib), cfg.grid),
        },
        repeats,
    )
    extra = {"model": name, "points_kept": indices.num_points, "cells": indices.num_cells}
    ours = f"bev_pool, cached indices ({name}, C={c})"
    return [
        Row(GROUP, ours, b, ms["fast"], ms[k], ms[k] / ms["fast"], "speedup", extra=extra)
        for k, b in (
            ("recompute", "recompute geometry + bev_pool every frame"),
            ("index_add", "index_add over cached indices (spec)"),
            ("reference", "lift + bev_pool_reference (plain)"),
        )
    ]


def training_row(pool_in: PoolInputs, repeats: int) -> Row:
    """Forward + backward (training) of the fast path vs autograd through the spec's index_add."""
    name, cfg, calib, geometry, depth, feat = pool_in
    grid, indices = cfg.grid, geometry.indices(calib)
    shape = bev_pool(depth, feat, indices, grid).shape  # (B, C·Dz, Y, X)
    upstream = torch.randn(shape, generator=torch.Generator().manual_seed(1))

    def step(pool: Callable[..., torch.Tensor]) -> Callable[[], None]:
        def run_once() -> None:
            d = depth.clone().requires_grad_()
            f = feat.clone().requires_grad_()
            (pool(d, f, indices, grid) * upstream).sum().backward()

        return run_once

    ms = compare({"fast": step(bev_pool), "index_add": step(bev_pool_index_add)}, repeats)
    return Row(
        GROUP,
        f"bev_pool forward + backward, training ({name})",
        "autograd through index_add (spec)",
        ms["fast"],
        ms["index_add"],
        ms["index_add"] / ms["fast"],
        "speedup",
    )
