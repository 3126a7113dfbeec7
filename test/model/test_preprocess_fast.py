"""The node's CPU preprocessing fast path agrees with the plain reference, and so does the
fast arg-max of the pipeline.
In: seeded smooth images at nuScenes and demo sizes, random training augmentations, logits
with ties. Out: assertions (max one grey level, on almost no pixels; identical matrices).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from flashocc_ros.model.preprocess import (
    ImageAug,
    apply_aug,
    apply_aug_boxed,
    inference_aug,
    normalize,
    preprocess_images,
    preprocess_images_fast,
    sample_train_aug,
)
from flashocc_ros.runtime.pipeline import labels_from_logits


def _images(n: int, h: int, w: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    noise = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]
    return [cv2.GaussianBlur(img, (0, 0), 2.0) for img in noise]  # camera-like, not white noise


@pytest.mark.parametrize(
    ("src_hw", "input_hw"), [((900, 1600), (256, 704)), ((396, 704), (128, 352))]
)
def test_fast_preprocessing_is_within_one_grey_level(
    src_hw: tuple[int, int], input_hw: tuple[int, int]
) -> None:
    images = _images(3, *src_hw, seed=0)
    ref = preprocess_images(images, input_hw)
    fast = preprocess_images_fast(images, input_hw)
    torch.testing.assert_close(fast.post_rot, ref.post_rot, rtol=0, atol=0)
    torch.testing.assert_close(fast.post_tran, ref.post_tran, rtol=0, atol=0)
    diff = (fast.images - ref.images).abs()
    assert float(diff.max()) <= 1.0 / 57.0 + 1e-6  # one grey level over the smallest std
    assert float((diff > 1e-6).float().mean()) < 1e-3


def test_boxed_augmentation_matches_for_training_augs_and_falls_back_outside() -> None:
    rng = np.random.default_rng(3)
    (image,) = _images(1, 396, 704, seed=1)
    differing = 0.0
    for _ in range(6):
        aug = sample_train_aug(rng, (396, 704), (128, 352))
        ref, fast = apply_aug(image, aug), apply_aug_boxed(image, aug)
        assert ref.shape == fast.shape
        assert int(np.abs(ref.astype(np.int16) - fast).max()) <= 1, aug
        differing = max(differing, float((ref != fast).mean()))
    assert differing < 1e-3
    outside = ImageAug(0.5, (352, 198), (-10, 40, 342, 168), False, 0.0)  # left of the image
    np.testing.assert_array_equal(apply_aug_boxed(image, outside), apply_aug(image, outside))


def test_fast_labels_equal_argmax_including_ties() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randint(0, 4, (20, 20, 4, 18), generator=gen).float()  # many ties
    labels, conf = labels_from_logits(logits, with_confidence=True)
    np.testing.assert_array_equal(labels, logits.argmax(-1).to(torch.uint8).numpy())
    assert conf is not None and conf.shape == labels.shape
    bf16 = torch.randn(10, 10, 4, 18, generator=gen).to(torch.bfloat16)
    labels, _ = labels_from_logits(bf16, with_confidence=False)
    np.testing.assert_array_equal(labels, bf16.float().argmax(-1).to(torch.uint8).numpy())


def test_fast_normalisation_is_bit_identical_to_normalize() -> None:
    """Same resampled pixels in, the threaded numpy normalisation equals `normalize` exactly."""
    images = _images(6, 396, 704, seed=2)
    fast = preprocess_images_fast(images, (128, 352))
    aug = inference_aug((396, 704), (128, 352))
    resampled = np.stack([apply_aug_boxed(img, aug) for img in images])
    assert fast.images.dtype == torch.float32 and fast.images.is_contiguous()
    torch.testing.assert_close(fast.images, normalize(resampled), rtol=0, atol=0)
