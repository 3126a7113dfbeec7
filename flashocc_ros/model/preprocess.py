"""Image preprocessing exactly as the official weights were trained (FLASHOCC_SPEC.md §1.1, §2.0).
In: N source images (H, W, 3) uint8 BGR, any size. Out: (N, 3, h, w) float32, post_rot/post_tran.

Resize with Pillow's bicubic filter, crop anchored at the bottom, optional flip and rotation
(training), then normalise in the official channel order: the network was trained on B, G, R
planes with the mean/std listed in R, G, B order (mmcv's `to_rgb` swap applied to a PIL RGB
image). A `bgr8` ROS image therefore goes in unswapped.

`preprocess_images` is the plain reference (resize the whole image, then crop, one image after
the other). `preprocess_images_fast` is what the node runs on the CPU: Pillow resamples only
the source region that lands inside the crop (`resize(box=...)`, about 35 % less work at the
official 256×704 crop) and the N images are resampled and normalised in parallel threads
(Pillow and numpy release the GIL; the normalisation is bit-identical to `normalize`).
Pillow's fixed-point rounding for a box differs from the full resize by at most one grey level
on a few pixels in a hundred thousand (test/model/test_preprocess_fast.py).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from flashocc_ros.model.geometry import Calibration
from flashocc_ros.rig import CameraRig

#: Official mean/std, applied per tensor channel index (channel 0 holds the blue plane).
MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class ImageAug:
    """One image augmentation: resize -> crop -> (flip) -> (rotate), and its 3x3/3 matrices."""

    resize: float  # scale factor applied to the source image
    resize_dims: tuple[int, int]  # (W, H) after resizing
    crop: tuple[int, int, int, int]  # (x0, y0, x1, y1) in the resized image
    flip: bool  # horizontal flip after the crop
    rotate_deg: float  # counter-clockwise rotation about the crop centre, degrees

    def matrices(self) -> tuple[np.ndarray, np.ndarray]:
        """(post_rot (3, 3), post_tran (3,)) mapping source pixels to network-input pixels."""
        rot = np.eye(2) * self.resize
        tran = -np.array(self.crop[:2], dtype=np.float64)
        width = self.crop[2] - self.crop[0]
        height = self.crop[3] - self.crop[1]
        if self.flip:
            a = np.array([[-1.0, 0.0], [0.0, 1.0]])
            rot = a @ rot
            tran = a @ tran + np.array([width, 0.0])
        h = math.radians(self.rotate_deg)
        a = np.array([[math.cos(h), math.sin(h)], [-math.sin(h), math.cos(h)]])
        centre = np.array([width, height], dtype=np.float64) / 2
        rot = a @ rot
        tran = a @ tran + (a @ -centre + centre)
        post_rot = np.eye(3)
        post_rot[:2, :2] = rot
        post_tran = np.zeros(3)
        post_tran[:2] = tran
        return post_rot, post_tran


def inference_aug(src_hw: tuple[int, int], input_hw: tuple[int, int]) -> ImageAug:
    """Official test-time geometry: scale to the input width, keep the bottom rows."""
    src_h, src_w = src_hw
    in_h, in_w = input_hw
    resize = float(in_w) / float(src_w)
    new_w, new_h = int(src_w * resize), int(src_h * resize)
    if new_h < in_h:
        raise ValueError(
            f"H: source image {src_w}x{src_h} resized to width {in_w} is only {new_h} rows high, "
            f"need {in_h}"
        )
    crop_h = new_h - in_h
    crop_w = int(max(0, new_w - in_w) / 2)
    return ImageAug(
        resize, (new_w, new_h), (crop_w, crop_h, crop_w + in_w, crop_h + in_h), False, 0
    )


def sample_train_aug(
    rng: np.random.Generator,
    src_hw: tuple[int, int],
    input_hw: tuple[int, int],
    resize_lim: tuple[float, float] = (-0.06, 0.11),
    rot_lim_deg: tuple[float, float] = (-5.4, 5.4),
    flip: bool = True,
) -> ImageAug:
    """Official training augmentation: random scale, bottom crop, x offset, flip, rotation."""
    src_h, src_w = src_hw
    in_h, in_w = input_hw
    resize = float(in_w) / float(src_w) + float(rng.uniform(*resize_lim))
    new_w, new_h = int(src_w * resize), int(src_h * resize)
    crop_h = new_h - in_h
    crop_w = int(rng.uniform(0, max(0, new_w - in_w)))
    do_flip = bool(flip and rng.integers(0, 2))
    rotate = float(rng.uniform(*rot_lim_deg))
    return ImageAug(
        resize, (new_w, new_h), (crop_w, crop_h, crop_w + in_w, crop_h + in_h), do_flip, rotate
    )


def apply_aug(image: np.ndarray, aug: ImageAug) -> np.ndarray:
    """(H, W, 3) uint8 -> (h, w, 3) uint8 with Pillow, like the official pipeline.

    Pillow filters each plane independently, so the channel order (BGR here) is preserved.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    img = Image.fromarray(image)
    img = img.resize(aug.resize_dims, Image.Resampling.BICUBIC)
    img = img.crop(aug.crop)
    if aug.flip:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if aug.rotate_deg:
        img = img.rotate(aug.rotate_deg)
    return np.asarray(img)


def apply_aug_boxed(image: np.ndarray, aug: ImageAug) -> np.ndarray:
    """`apply_aug` resampling only the crop's source region (within one grey level of it).

    Falls back to `apply_aug` when the crop reaches outside the resized image (Pillow pads
    such crops with black, which a box cannot express).
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    width, height = aug.resize_dims
    x0, y0, x1, y1 = aug.crop
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        return apply_aug(image, aug)
    sx, sy = image.shape[1] / width, image.shape[0] / height
    box = (x0 * sx, y0 * sy, x1 * sx, y1 * sy)
    img = Image.fromarray(image).resize((x1 - x0, y1 - y0), Image.Resampling.BICUBIC, box=box)
    if aug.flip:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if aug.rotate_deg:
        img = img.rotate(aug.rotate_deg)
    return np.asarray(img)


def normalize(images: np.ndarray) -> Tensor:
    """(N, h, w, 3) uint8 BGR -> (N, 3, h, w) float32 with the official per-index mean/std."""
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be (N, H, W, 3), got {images.shape}")
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()  # (N,3,h,w)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std


@dataclass(frozen=True)
class Preprocessed:
    """Network-ready images of one frame and the augmentation that produced them."""

    images: Tensor  # (N, 3, h, w) float32, normalised
    post_rot: Tensor  # (N, 3, 3) float32
    post_tran: Tensor  # (N, 3) float32


def preprocess_images(
    images: Sequence[np.ndarray],
    input_hw: tuple[int, int],
    augs: Sequence[ImageAug] | None = None,
) -> Preprocessed:
    """N BGR uint8 images (H_n, W_n, 3), any sizes -> Preprocessed (test-time aug by default)."""
    return _preprocess(images, input_hw, augs, fast=False)


def preprocess_images_fast(
    images: Sequence[np.ndarray],
    input_hw: tuple[int, int],
    augs: Sequence[ImageAug] | None = None,
) -> Preprocessed:
    """`preprocess_images` with boxed resampling in a thread pool (see the module docstring)."""
    return _preprocess(images, input_hw, augs, fast=True)


_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(min(6, os.cpu_count() or 1), thread_name_prefix="preprocess")
    return _POOL


def _preprocess(
    images: Sequence[np.ndarray],
    input_hw: tuple[int, int],
    augs: Sequence[ImageAug] | None,
    fast: bool,
) -> Preprocessed:
    if not images:
        raise ValueError("N: need at least one image")
    if augs is None:
        augs = [inference_aug(img.shape[:2], input_hw) for img in images]
    if len(augs) != len(images):
        raise ValueError(f"N: {len(images)} images but {len(augs)} augmentations")
    if fast:
        h, w = input_hw
        planes = np.empty((len(images), 3, h, w), dtype=np.float32)
        list(_pool().map(_resample_normalize_into, images, augs, planes))
        normalized = torch.from_numpy(planes)
    else:
        out = np.stack([apply_aug(img, aug) for img, aug in zip(images, augs, strict=True)])
        normalized = normalize(out)
    mats = [aug.matrices() for aug in augs]
    post_rot = torch.tensor(np.stack([m[0] for m in mats]), dtype=torch.float32)
    post_tran = torch.tensor(np.stack([m[1] for m in mats]), dtype=torch.float32)
    return Preprocessed(normalized, post_rot, post_tran)


_MEAN_PLANES = np.asarray(MEAN, dtype=np.float32)[:, None, None]
_STD_PLANES = np.asarray(STD, dtype=np.float32)[:, None, None]


def _resample_normalize_into(image: np.ndarray, aug: ImageAug, out: np.ndarray) -> None:
    """`apply_aug_boxed` then `normalize` of one image, written into `out` (3, h, w) float32.
    The same float32 subtract and divide as `normalize`, so bit-identical to it, but run in
    the worker thread (numpy releases the GIL) and without torch's per-op dispatch."""
    small = apply_aug_boxed(image, aug)
    if small.shape[:2] != out.shape[1:]:
        raise ValueError(f"h, w: augmented image {small.shape[:2]} != input {out.shape[1:]}")
    np.subtract(small.transpose(2, 0, 1), _MEAN_PLANES, out=out, dtype=np.float32)
    np.divide(out, _STD_PLANES, out=out)


def rig_calibration(rig: CameraRig, input_hw: tuple[int, int]) -> Calibration:
    """Inference Calibration (B = 1) of a static rig: camera_to_ego = the rig's extrinsics."""
    mats = [inference_aug((c.height, c.width), input_hw).matrices() for c in rig.cameras]
    return Calibration.from_numpy_like(
        torch.as_tensor(rig.camera_to_base()),
        torch.as_tensor(rig.intrinsics()),
        torch.as_tensor(np.stack([m[0] for m in mats])),
        torch.as_tensor(np.stack([m[1] for m in mats])),
    )
