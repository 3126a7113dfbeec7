"""Two-frame temporal fusion of the 4D-stereo model (M2): history cache, exact official path.
In: frames (images, static calibration, per-camera ego poses). Out: logits (B, X, Y, Z, cls).

FLASHOCC_SPEC.md §3. The previous frame is re-lifted into the current key-ego frame with the
ego motion (camera_to_keyego = inv(E_t[cam0])·E_{t-1}[n]·S_n, float64), no BEV warp; BEVs are
concatenated [previous, current]. `TemporalHistory` caches each frame's stereo feature, depth,
context and geometry so a step runs the image network once (§3.4); `forward_stereo4d` recomputes
all three frames (t, t−1, t−2) exactly as `BEVStereo4D.extract_img_feat` does.

`TemporalHistory` owns everything pose-, calibration- and history-dependent (selection, matrices,
DepthNet input, cost-volume grid, pooling); the network runs behind `TemporalNet` (image step and
BEV step): `TorchTemporalNet` (the model's layers) or the onnxruntime graphs.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple, Protocol

import torch
from torch import Tensor, nn

from flashocc_ros.config import ModelConfig
from flashocc_ros.model.depth_net import mlp_input
from flashocc_ros.model.flashocc import FlashOCC
from flashocc_ros.model.geometry import Calibration, LiftGeometry, create_frustum
from flashocc_ros.model.stereo import stereo_grid
from flashocc_ros.model.view_transformer import STEREO_DOWNSAMPLE, splat


@dataclass(frozen=True)
class TemporalFrame:
    """One synchronised camera bundle with the poses the temporal model needs.

    images: (B, N, 3, H, W) normalised.
    calib: Calibration whose camera_to_ego is the *static* extrinsic S_n (camera -> ego at the
        camera's own capture time), not key-ego folded.
    ego_to_global: (B, N, 4, 4) E_n, ego pose at each camera's capture time.
    stamp_ns: capture time of camera 0 (used to pick a history entry).
    """

    images: Tensor
    calib: Calibration
    ego_to_global: Tensor
    stamp_ns: int = 0

    def __post_init__(self) -> None:
        b, n = self.calib.batch_size, self.calib.num_cameras
        if tuple(self.ego_to_global.shape) != (b, n, 4, 4):
            raise ValueError(f"ego_to_global must be (B, N, 4, 4) = ({b}, {n}, 4, 4)")
        if tuple(self.images.shape[:2]) != (b, n):
            raise ValueError(f"images must be (B, N, 3, H, W) with B, N = {b}, {n}")


@dataclass(frozen=True)
class FrameCache:
    """What a processed frame leaves for the next one (§3.4)."""

    stereo: Tensor  # (B, N, Cs, H/4, W/4)
    depth: Tensor  # (B, N, D, fH, fW) probabilities
    context: Tensor  # (B, N, Cctx, fH, fW)
    calib: Calibration  # static extrinsics S_n, intrinsics, post-aug of that frame
    ego_to_global: Tensor  # (B, N, 4, 4)
    stamp_ns: int


class StepInputs(NamedTuple):
    """Pose- and calibration-dependent inputs of one step, computed outside any network graph."""

    key_extrinsic: Tensor  # (B, N, 4, 4) camera -> key ego of this frame
    mlp_in: Tensor  # (B, N, 27) DepthNet input (built with key_extrinsic)
    grid: Tensor  # (B·N, D·H/4, W/4, 2) cost-volume sampling grid in the older frame


@dataclass(frozen=True)
class TemporalOutput:
    logits: Tensor  # (B, X, Y, Z, cls)
    bev_prev: Tensor  # (B, Cctx, Y, X) previous frame splatted in the current key ego
    bev_curr: Tensor  # (B, Cctx, Y, X) current frame (both before pre_process_net)
    cache: FrameCache


def _pose(calib: Calibration, ego_to_global: Tensor) -> Tensor:
    """(B, N, 4, 4) camera -> global, float64."""
    out: Tensor = ego_to_global.double() @ calib.camera_to_ego.double()
    return out


def camera_to_keyego(
    key_ego_to_global: Tensor, calib: Calibration, ego_to_global: Tensor
) -> Tensor:
    """inv(E_key[cam 0])·E_n·S_n in float64, cast to float32: (B, N, 4, 4).

    key_ego_to_global: (B, N, 4, 4) poses of the key frame (camera 0 defines the key ego).
    """
    key = torch.linalg.inv(key_ego_to_global[:, :1].double())  # (B, 1, 4, 4)
    out: Tensor = (key @ _pose(calib, ego_to_global)).float()
    return out


def curr_to_adj(
    calib: Calibration, ego_to_global: Tensor, adj_calib: Calibration, adj_ego: Tensor
) -> Tensor:
    """Camera n at this frame -> camera n at the older frame: inv(E'·S')·E·S, (B, N, 4, 4)."""
    out: Tensor = torch.linalg.inv(_pose(adj_calib, adj_ego)) @ _pose(calib, ego_to_global)
    return out.float()


def _with_extrinsic(calib: Calibration, camera_to_ego: Tensor) -> Calibration:
    return replace(calib, camera_to_ego=camera_to_ego.to(calib.camera_to_ego))


def forward_stereo4d(model: FlashOCC, frames: Sequence[TemporalFrame]) -> Tensor:
    """Official BEVStereo4D inference: frames = (t, t−1, t−2) -> logits (B, X, Y, Z, cls).

    t−2 only gives a stereo feature; t−1 and t run the full image network, each with the key
    frame's extrinsic in the DepthNet input and lifted with its own poses into the key ego.
    """
    return forward_stereo4d_train(model, frames)[0]


def forward_stereo4d_train(
    model: FlashOCC, frames: Sequence[TemporalFrame]
) -> tuple[Tensor, Tensor]:
    """`forward_stereo4d` with the official training semantics, also returning the key frame's
    depth logits (B, N, D, fH, fW) for the depth loss: the older frames (t−1, t−2) run under
    no_grad, as `BEVStereo4D.extract_img_feat` runs them, and so do the cost volumes
    (`DepthNet.calculate_cost_volumn`); gradients reach the weights through frame t only.
    """
    if len(frames) != 3:
        raise ValueError(f"T: forward_stereo4d needs frames (t, t-1, t-2), got {len(frames)}")
    key = frames[0]
    key_ext = camera_to_keyego(key.ego_to_global, key.calib, key.ego_to_global)
    vt = model.img_view_transformer
    with torch.no_grad():
        prev_stereo = model.stereo_feature(frames[2].images)
    bevs = []
    depth_logits = torch.empty(0)
    for fid in (1, 0):
        f, older = frames[fid], frames[fid + 1]
        with torch.set_grad_enabled(torch.is_grad_enabled() and fid == 0):
            features = model.encode_images(f.images)
            assert features.stereo is not None
            k2s = curr_to_adj(f.calib, f.ego_to_global, older.calib, older.ego_to_global)
            with torch.no_grad():
                cost = vt.stereo_cost(prev_stereo, features.stereo, k2s.to(f.images), f.calib)
            depth_logits, context = vt.depth_logits_context(
                features.feat, f.calib, key_ext.to(f.images), cost
            )
            ext = camera_to_keyego(key.ego_to_global, f.calib, f.ego_to_global)
            geom = vt.geometry if fid == 0 else vt.prev_geometry
            depth = depth_logits.float().softmax(dim=2)  # as vt.depth_context
            bev = vt.splat(depth, context, geom.indices(_with_extrinsic(f.calib, ext)))
            bevs.append(model.frame_bev(bev))
        prev_stereo = features.stereo.detach()
    logits = model.bev_to_logits(torch.cat(bevs, dim=1))  # [BEV(t−1), BEV(t)] on channels
    return logits, depth_logits


class ImageStep(NamedTuple):
    """What the image half of the 4D-stereo network gives for one frame."""

    depth: Tensor  # (B, N, D, fH, fW) probabilities
    context: Tensor  # (B, N, Cctx, fH, fW)
    stereo: Tensor  # (B, N, Cs, H/4, W/4) this frame's stereo feature (next frame's prev)


class TemporalNet(Protocol):
    """The network parts of one 4D-stereo step; everything else lives in `TemporalHistory`."""

    cfg: ModelConfig

    def image_step(
        self, images: Tensor, mlp_in: Tensor, prev_stereo: Tensor | None, grid: Tensor
    ) -> ImageStep:
        """images (B, N, 3, H, W), mlp_in (B, N, 27), prev_stereo (B, N, Cs, H/4, W/4) of the
        older frame or None (scene start: this frame's own stereo feature), grid
        (B·N, D·H/4, W/4, 2) -> ImageStep (backbone, neck, cost volume, DepthNet, softmax)."""
        ...

    def bev_step(self, bev_prev: Tensor, bev_curr: Tensor) -> Tensor:
        """(B, Cctx·Dz, Y, X) each -> logits (B, X, Y, Z, cls): pre_process_net on each,
        concatenated [prev, curr], BEV encoder, occupancy head."""
        ...


class TorchTemporalNet:
    """`TemporalNet` of a FlashOCC module (the reference; also what the ONNX graphs trace)."""

    def __init__(self, model: FlashOCC) -> None:
        if not model.cfg.stereo or not model.cfg.temporal:
            raise ValueError(f"model {model.cfg.name!r} is not a 4D-stereo model")
        self.model = model
        self.cfg = model.cfg

    def image_step(
        self, images: Tensor, mlp_in: Tensor, prev_stereo: Tensor | None, grid: Tensor
    ) -> ImageStep:
        features = self.model.encode_images(images)
        assert features.stereo is not None
        prev = features.stereo if prev_stereo is None else prev_stereo
        vt = self.model.img_view_transformer
        cost = vt.stereo_cost_on_grid(prev, features.stereo, grid)  # (B·N, D, H/4, W/4)
        depth, context = vt.depth_context_mlp(features.feat, mlp_in, cost)
        return ImageStep(depth, context, features.stereo)

    def bev_step(self, bev_prev: Tensor, bev_curr: Tensor) -> Tensor:
        m = self.model
        fused = torch.cat([m.frame_bev(bev_prev), m.frame_bev(bev_curr)], dim=1)
        return m.bev_to_logits(fused)  # (B, X, Y, Z, cls)


class StereoLiftGeometry(nn.Module):
    """Calibration-dependent constants of a 4D-stereo step: the stride-4 cost-volume frustum
    and the pooling indices of the current frame and of the re-lifted previous frame."""

    cv_frustum: Tensor

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.geometry = LiftGeometry(cfg)  # current (key) frame, cached per calibration
        self.prev_geometry = LiftGeometry(cfg)  # previous frame re-lifted into the key ego
        frustum = create_frustum(cfg, downsample=STEREO_DOWNSAMPLE)  # (D, H/4, W/4, 3)
        self.register_buffer("cv_frustum", frustum, persistent=False)


class TemporalHistory:
    """History of the 4D-stereo model: feed frames in time order with `step`.

    The caller chooses the past frame: `step(frame)` uses the entry closest to
    `target_gap_ns` before the frame (official training gap: one keyframe ≈ 0.5 s), or pass
    `previous=` explicitly. Without history (start, after `reset`) the frame is duplicated
    with identity motion, as the official dataset does at scene starts.

    `net` is a FlashOCC (run by `TorchTemporalNet`) or any `TemporalNet` (e.g. onnxruntime).

    Exactness: the cached depth/context of t−1 were computed with t−1's own key-ego extrinsic
    in the DepthNet input; the official model uses t's. They are equal when the per-camera ego
    poses of a bundle are equal (no intra-bundle motion); otherwise they differ slightly.
    """

    def __init__(
        self,
        net: FlashOCC | TemporalNet,
        max_frames: int = 4,
        target_gap_ns: int = 500_000_000,
    ):
        cfg = net.cfg
        if not cfg.stereo or not cfg.temporal:
            raise ValueError(f"model {cfg.name!r} is not a 4D-stereo model")
        self.net: TemporalNet = TorchTemporalNet(net) if isinstance(net, FlashOCC) else net
        self.cfg = cfg
        self.lift = StereoLiftGeometry(cfg)
        self.target_gap_ns = target_gap_ns
        self.frames: deque[FrameCache] = deque(maxlen=max_frames)

    def reset(self) -> None:
        """Forget all history (e.g. after a time jump or a localisation reset)."""
        self.frames.clear()

    def select(self, stamp_ns: int) -> FrameCache | None:
        """The cached frame whose age is closest to `target_gap_ns` (None when empty)."""
        older = [c for c in self.frames if c.stamp_ns < stamp_ns]
        if not older:
            return None
        return min(older, key=lambda c: abs(stamp_ns - c.stamp_ns - self.target_gap_ns))

    def inputs(self, frame: TemporalFrame, prev: FrameCache | None) -> StepInputs:
        """DepthNet input, cost-volume grid and key-ego extrinsic of `frame` against `prev`
        (identity motion and no previous stereo feature when `prev` is None)."""
        calib, ego, like = frame.calib, frame.ego_to_global, frame.images
        key_ext = camera_to_keyego(ego, calib, ego).to(like)  # (B, N, 4, 4)
        m = mlp_input(key_ext, calib.intrinsics, calib.post_rot, calib.post_tran, calib.bda)
        if prev is None:
            b, n = calib.batch_size, calib.num_cameras
            k2s = torch.eye(4, dtype=like.dtype, device=like.device).expand(b, n, 4, 4)
        else:
            k2s = curr_to_adj(calib, ego, prev.calib, prev.ego_to_global).to(like)
        frustum = self.lift.cv_frustum
        grid = stereo_grid(frustum, k2s, calib.intrinsics, calib.post_rot, calib.post_tran)
        return StepInputs(key_ext, m, grid)  # grid (B·N, D·H/4, W/4, 2)

    @torch.no_grad()
    def step(
        self, frame: TemporalFrame, previous: FrameCache | str | None = "auto"
    ) -> TemporalOutput:
        """Process `frame` against a past frame; the frame's cache is appended to the history."""
        prev = self.select(frame.stamp_ns) if isinstance(previous, str) else previous
        self.lift.to(frame.images.device)
        calib, ego, grid_cfg = frame.calib, frame.ego_to_global, self.cfg.grid
        inp = self.inputs(frame, prev)
        prev_stereo = None if prev is None else prev.stereo
        out = self.net.image_step(frame.images, inp.mlp_in, prev_stereo, inp.grid)
        indices = self.lift.geometry.indices(_with_extrinsic(calib, inp.key_extrinsic))
        bev_curr = splat(out.depth, out.context, indices, grid_cfg)  # (B, Cctx·Dz, Y, X)
        if prev is None:
            bev_prev = bev_curr
        else:
            prev_ext = camera_to_keyego(ego, prev.calib, prev.ego_to_global)
            prev_indices = self.lift.prev_geometry.indices(_with_extrinsic(prev.calib, prev_ext))
            bev_prev = splat(prev.depth, prev.context, prev_indices, grid_cfg)
        logits = self.net.bev_step(bev_prev, bev_curr)  # (B, X, Y, Z, cls)
        cache = FrameCache(out.stereo, out.depth, out.context, calib, ego, frame.stamp_ns)
        self.frames.append(cache)
        return TemporalOutput(logits, bev_prev, bev_curr, cache)
