"""Training/evaluation samples over a world dataset folder, with the official augmentations.
In: a `WorldDataset` folder + ModelConfig. Out: dicts of tensors (images, calibration, labels).

Training (FLASHOCC_SPEC.md §1.1): per camera a random `sample_train_aug` (scale, bottom crop,
x offset, flip, rotation), the BEV augmentation flip_dx / flip_dy (p = 0.5 each) as a 3×3 `bda`
applied to the lifted points, with the labels flipped on the matching grid axes (dim 0 for x,
dim 1 for y). Evaluation uses `inference_aug` and an identity `bda`. Depth maps, when stored, are
warped with the same image augmentation (nearest, no interpolation of depth values).

Augmentation randomness is keyed by (seed, epoch, keyframe index), not by worker state, so a
resumed or distributed run sees exactly the same samples.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from flashocc_ros.config import ConfigError, ModelConfig
from flashocc_ros.model.flashocc import FlashOCC
from flashocc_ros.model.geometry import Calibration
from flashocc_ros.model.preprocess import (
    ImageAug,
    apply_aug,
    inference_aug,
    normalize,
    sample_train_aug,
)
from flashocc_ros.model.temporal import TemporalFrame, forward_stereo4d
from flashocc_ros.world.dataset import DatasetError, WorldDataset

#: A sample key: (epoch, keyframe index). The epoch only seeds the augmentation.
SampleKey = tuple[int, int]


@dataclass(frozen=True)
class BevAug:
    """BEV augmentation of one sample: mirror the ego x and/or y axis."""

    flip_dx: bool  # x -> -x (labels flipped on dim 0)
    flip_dy: bool  # y -> -y (labels flipped on dim 1)

    def matrix(self) -> np.ndarray:
        """(3, 3) `bda` applied to lifted ego points (float64)."""
        return np.diag([-1.0 if self.flip_dx else 1.0, -1.0 if self.flip_dy else 1.0, 1.0])

    def flip_grid(self, grid: np.ndarray) -> np.ndarray:
        """(X, Y, Z) labels/mask -> the same array seen through this augmentation."""
        if self.flip_dx:
            grid = grid[::-1]
        if self.flip_dy:
            grid = grid[:, ::-1]
        return np.ascontiguousarray(grid)


def sample_bev_aug(rng: np.random.Generator, p_flip: float = 0.5) -> BevAug:
    """Official train-time BEV augmentation: flip_dx, flip_dy with probability `p_flip` each."""
    return BevAug(bool(rng.random() < p_flip), bool(rng.random() < p_flip))


def warp_depth(depth: np.ndarray, aug: ImageAug, input_hw: tuple[int, int]) -> np.ndarray:
    """(H, W) float32 metres (0 = none) -> (h, w) at the network input, nearest sampling.

    Uses the augmentation's own post_rot/post_tran (the matrices the lift inverts), so a depth
    pixel lands where the network sees it; pixels from outside the source image are 0.
    """
    if depth.ndim != 2:
        raise ValueError(f"depth must be (H, W), got {depth.shape}")
    post_rot, post_tran = aug.matrices()
    affine = np.concatenate([post_rot[:2, :2], post_tran[:2, None]], axis=1)  # (2, 3)
    h, w = input_hw
    out = cv2.warpAffine(
        depth.astype(np.float32),
        affine.astype(np.float64),
        (w, h),
        flags=cv2.INTER_NEAREST,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0.0,
    )
    return np.asarray(out, dtype=np.float32)


class OccupancyDataset(Dataset[dict[str, Tensor]]):
    """Keyframes of a dataset folder as network-ready tensors (one item = N images).

    Item keys (N cameras, h/w network input, X/Y/Z occupancy grid):
    images (N, 3, h, w) float32 normalised BGR; camera_to_ego (N, 4, 4); intrinsics (N, 3, 3);
    post_rot (N, 3, 3); post_tran (N, 3); bda (3, 3); semantics (X, Y, Z) int64;
    mask_camera (X, Y, Z) float32 0/1; index () int64; and with `with_depth`
    depth (N, h, w) float32 metres after the image augmentation (0 = no target).

    4D-stereo configs (M2) add the older frames of FLASHOCC_SPEC.md §3.1: adj_images
    (2, N, 3, h, w) of t−1 and t−2, the previous keyframes of the same scene (where the scene
    has none, the key frame itself, as the official dataset does; `older_keyframes`), augmented
    with the key frame's image augmentation; ego_poses (3, N, 4, 4) float64, E at each camera's
    stamp for t, t−1, t−2; sensor_to_ego (N, 4, 4) the static extrinsics S. `temporal_frames`
    turns a batch into the (t, t−1, t−2) frames of `forward_stereo4d`; depth and labels are t's.
    """

    def __init__(
        self,
        root: str | Path | Sequence[str | Path],
        cfg: ModelConfig,
        train: bool,
        seed: int = 0,
        with_depth: bool = False,
        augment: bool = True,
    ) -> None:
        roots = (root,) if isinstance(root, str | Path) else tuple(root)
        self.data = WorldDataset(*roots)
        where = ", ".join(str(r) for r in roots)
        self.cfg = cfg
        self.train = train
        self.seed = seed
        self.with_depth = with_depth
        self.augment = augment and train
        if len(self.data) == 0:
            raise DatasetError(f"{where} holds no keyframes")
        names = tuple(self.data.rig.names)
        if names != tuple(cfg.camera_names):
            raise DatasetError(
                f"N: dataset cameras {names} differ from the model's {tuple(cfg.camera_names)}"
            )
        if self.data.grid.shape != cfg.grid.shape:
            raise DatasetError(
                f"X, Y, Z: dataset grid {self.data.grid.shape} != model grid {cfg.grid.shape}"
            )
        if with_depth and not self.has_depth:
            raise DatasetError(f"{where} stores no depth maps (generate with --depth)")
        if cfg.temporal and not (cfg.stereo and cfg.num_adj_frames == 1):
            raise ConfigError(
                f"model {cfg.name!r}: only the 4D-stereo layout (stereo, one adjacent frame) "
                "has a temporal training path"
            )

    @property
    def has_depth(self) -> bool:
        """True when every camera of every keyframe has a stored depth map."""
        return all(c.depth_path is not None for k in self.data.keyframes for c in k.cams)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, key: int | SampleKey) -> dict[str, Tensor]:
        epoch, index = (0, key) if isinstance(key, int) else key
        rec = self.data.keyframes[index]
        sample = self.data.sample(index)
        if sample.labels is None:
            raise DatasetError(f"keyframe {rec.token} has no labels")
        rng = np.random.default_rng([self.seed, epoch, index])
        input_hw = self.cfg.input_size
        src_hw = (int(sample.images.shape[1]), int(sample.images.shape[2]))
        if self.augment:
            augs = [sample_train_aug(rng, src_hw, input_hw) for _ in sample.images]
            bev = sample_bev_aug(rng)
        else:
            augs = [inference_aug(src_hw, input_hw) for _ in sample.images]
            bev = BevAug(False, False)
        images = np.stack([apply_aug(img, a) for img, a in zip(sample.images, augs, strict=True)])
        mats = [a.matrices() for a in augs]
        item = {
            "images": normalize(images),  # (N, 3, h, w)
            "camera_to_ego": torch.tensor(sample.sensor_to_keyego, dtype=torch.float32),
            "intrinsics": torch.tensor(sample.intrinsics, dtype=torch.float32),
            "post_rot": torch.tensor(np.stack([m[0] for m in mats]), dtype=torch.float32),
            "post_tran": torch.tensor(np.stack([m[1] for m in mats]), dtype=torch.float32),
            "bda": torch.tensor(bev.matrix(), dtype=torch.float32),
            "semantics": torch.from_numpy(bev.flip_grid(sample.labels.semantics).astype(np.int64)),
            "mask_camera": torch.from_numpy(
                bev.flip_grid(sample.labels.mask_camera).astype(np.float32)
            ),
            "index": torch.tensor(index, dtype=torch.int64),
        }
        if self.cfg.temporal:
            item["adj_images"], older_poses = self._older_frames(index, images, augs)
            poses = np.concatenate([sample.ego_poses[None], older_poses])  # (3, N, 4, 4)
            item["ego_poses"] = torch.tensor(poses, dtype=torch.float64)
            item["sensor_to_ego"] = torch.tensor(sample.sensor_to_ego, dtype=torch.float32)
        if self.with_depth:
            depths = self.data.depths(rec)
            if depths is None:
                raise DatasetError(f"keyframe {rec.token} has no depth maps")
            warped = [warp_depth(d, a, input_hw) for d, a in zip(depths, augs, strict=True)]
            item["depth"] = torch.from_numpy(np.stack(warped))  # (N, h, w)
        return item

    def older_keyframes(self, index: int) -> tuple[int, int]:
        """Keyframe indices of t−1 and t−2 for keyframe `index`: max(index − k, 0) when it is
        in the same scene, else `index` itself (the official `get_adj_info` rule, clamp
        included: keyframe 1 of the first scene gets t−2 = t−1 = keyframe 0)."""
        scene = self.data.keyframes[index].scene
        out = []
        for k in (1, 2):
            j = max(index - k, 0)
            out.append(j if self.data.keyframes[j].scene == scene else index)
        return out[0], out[1]

    def _older_frames(
        self, index: int, key_images: np.ndarray, augs: Sequence[ImageAug]
    ) -> tuple[Tensor, np.ndarray]:
        """adj_images (2, N, 3, h, w) and ego poses (2, N, 4, 4) float64 of t−1, t−2. A keyframe
        is read and augmented once even when it serves several slots (the key frame itself at a
        scene start, or t−1 = t−2 after the clamp)."""
        done = {index: key_images}  # the same pixels through the same augmentation
        frames, poses = [], []
        for j in self.older_keyframes(index):
            rec = self.data.keyframes[j]
            if j not in done:
                pairs = zip(self.data.images(rec), augs, strict=True)
                done[j] = np.stack([apply_aug(im, a) for im, a in pairs])
            frames.append(done[j])
            poses.append(np.stack([c.ego_pose for c in rec.cams]))
        h, w = self.cfg.input_size
        n = len(augs)
        adj = normalize(np.concatenate(frames)).view(len(frames), n, 3, h, w)
        return adj, np.stack(poses)


def temporal_frames(batch: Mapping[str, Tensor]) -> list[TemporalFrame]:
    """The (t, t−1, t−2) `TemporalFrame`s of a collated 4D-stereo batch. Older frames reuse
    the key frame's intrinsics, image and BEV augmentation (FLASHOCC_SPEC.md §3.1)."""
    calib = replace(batch_calibration(batch), camera_to_ego=batch["sensor_to_ego"])
    images = [batch["images"], batch["adj_images"][:, 0], batch["adj_images"][:, 1]]
    poses = batch["ego_poses"]  # (B, 3, N, 4, 4)
    return [TemporalFrame(img, calib, poses[:, f]) for f, img in enumerate(images)]


def batch_logits(net: FlashOCC, batch: Mapping[str, Tensor]) -> Tensor:
    """Logits (B, X, Y, Z, cls) of a collated batch: the single-frame forward, or for a
    4D-stereo model the official three-frame path over the batch's older keyframes."""
    if net.cfg.temporal:
        return forward_stereo4d(net, temporal_frames(batch))
    out: Tensor = net(batch["images"], batch_calibration(batch))
    return out


def class_counts(data: WorldDataset, num_classes: int) -> np.ndarray:
    """Voxels per class (num_classes,) int64 inside `mask_camera` over every keyframe."""
    counts = np.zeros(num_classes, dtype=np.int64)
    for rec in data.keyframes:
        labels = data.labels(rec)
        seen = labels.semantics[labels.mask_camera.astype(bool)].astype(np.int64)
        counts += np.bincount(seen[seen < num_classes], minlength=num_classes)[:num_classes]
    return counts


def batch_calibration(batch: Mapping[str, Tensor]) -> Calibration:
    """Calibration (B, N, ...) of a collated batch."""
    return Calibration(
        batch["camera_to_ego"],
        batch["intrinsics"],
        batch["post_rot"],
        batch["post_tran"],
        batch["bda"],
    )


class EpochKeys:
    """Sampler of (epoch, index) keys: the indices of a (Distributed)Sampler for one epoch,
    optionally skipping the first `skip` of them (exact mid-epoch resume)."""

    def __init__(self, indices: list[int], epoch: int, skip: int = 0) -> None:
        self.keys: list[SampleKey] = [(epoch, i) for i in indices[skip:]]

    def __iter__(self) -> Iterator[SampleKey]:
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)


__all__ = [
    "BevAug",
    "EpochKeys",
    "OccupancyDataset",
    "SampleKey",
    "batch_calibration",
    "batch_logits",
    "sample_bev_aug",
    "temporal_frames",
    "warp_depth",
]
