"""Two-frame temporal fusion of the 4D-stereo model (M2): history cache, exact official path.
In: frames (images, static calibration, per-camera ego poses). Out: logits (B, X, Y, Z, cls).

FLASHOCC_SPEC.md §3. The previous frame is re-lifted into the current key-ego frame with the
ego motion (camera_to_keyego = inv(E_t[cam0])·E_{t-1}[n]·S_n, float64), no BEV warp; BEVs are
concatenated [previous, current]. `TemporalHistory` caches each frame's stereo feature, depth,
context and geometry so a step runs the image network once (§3.4); `forward_stereo4d` recomputes
all three frames (t, t−1, t−2) exactly as `BEVStereo4D.extract_img_feat` does.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from flashocc_ros.model.flashocc import FlashOCC, StereoInput
from flashocc_ros.model.geometry import Calibration


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
    if len(frames) != 3:
        raise ValueError(f"T: forward_stereo4d needs frames (t, t-1, t-2), got {len(frames)}")
    key = frames[0]
    key_ext = camera_to_keyego(key.ego_to_global, key.calib, key.ego_to_global)
    prev_stereo = model.stereo_feature(frames[2].images)
    bevs = []
    for fid in (1, 0):
        f, older = frames[fid], frames[fid + 1]
        features = model.encode_images(f.images)
        assert features.stereo is not None
        k2s = curr_to_adj(f.calib, f.ego_to_global, older.calib, older.ego_to_global)
        stereo = StereoInput(prev_stereo, k2s.to(f.images), key_ext.to(f.images))
        ext = camera_to_keyego(key.ego_to_global, f.calib, f.ego_to_global)
        depth, context = model.depth_context(features, f.calib, stereo)
        vt = model.img_view_transformer
        geom = vt.geometry if fid == 0 else vt.prev_geometry
        bev = vt.splat(depth, context, geom.indices(_with_extrinsic(f.calib, ext)))
        bevs.append(model.frame_bev(bev))
        prev_stereo = features.stereo
    return model.bev_to_logits(torch.cat(bevs, dim=1))  # [BEV(t−1), BEV(t)] on channels


class TemporalHistory:
    """History of the 4D-stereo model: feed frames in time order with `step`.

    The caller chooses the past frame: `step(frame)` uses the entry closest to
    `target_gap_ns` before the frame (official training gap: one keyframe ≈ 0.5 s), or pass
    `previous=` explicitly. Without history (start, after `reset`) the frame is duplicated
    with identity motion, as the official dataset does at scene starts.

    Exactness: the cached depth/context of t−1 were computed with t−1's own key-ego extrinsic
    in the DepthNet input; the official model uses t's. They are equal when the per-camera ego
    poses of a bundle are equal (no intra-bundle motion); otherwise they differ slightly.
    """

    def __init__(self, model: FlashOCC, max_frames: int = 4, target_gap_ns: int = 500_000_000):
        if not model.cfg.stereo or not model.cfg.temporal:
            raise ValueError(f"model {model.cfg.name!r} is not a 4D-stereo model")
        self.model = model
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

    @torch.no_grad()
    def step(
        self, frame: TemporalFrame, previous: FrameCache | str | None = "auto"
    ) -> TemporalOutput:
        """Process `frame` against a past frame; the frame's cache is appended to the history."""
        prev = self.select(frame.stamp_ns) if isinstance(previous, str) else previous
        model, vt = self.model, self.model.img_view_transformer
        calib, ego = frame.calib, frame.ego_to_global
        key_ext = camera_to_keyego(ego, calib, ego).to(frame.images)
        features = model.encode_images(frame.images)
        assert features.stereo is not None
        if prev is None:
            b, n = calib.batch_size, calib.num_cameras
            eye = torch.eye(4, dtype=frame.images.dtype, device=frame.images.device)
            stereo = StereoInput(features.stereo, eye.expand(b, n, 4, 4), key_ext)
        else:
            k2s = curr_to_adj(calib, ego, prev.calib, prev.ego_to_global)
            stereo = StereoInput(prev.stereo, k2s.to(frame.images), key_ext)
        depth, context = model.depth_context(features, calib, stereo)
        bev_curr = vt.splat(depth, context, vt.geometry.indices(_with_extrinsic(calib, key_ext)))
        if prev is None:
            bev_prev = bev_curr
        else:
            prev_ext = camera_to_keyego(ego, prev.calib, prev.ego_to_global)
            prev_calib = _with_extrinsic(prev.calib, prev_ext)
            bev_prev = vt.splat(prev.depth, prev.context, vt.prev_geometry.indices(prev_calib))
        fused = torch.cat([model.frame_bev(bev_prev), model.frame_bev(bev_curr)], dim=1)
        logits = model.bev_to_logits(fused)  # (B, X, Y, Z, cls)
        cache = FrameCache(features.stereo, depth, context, calib, ego, frame.stamp_ns)
        self.frames.append(cache)
        return TemporalOutput(logits, bev_prev, bev_curr, cache)
