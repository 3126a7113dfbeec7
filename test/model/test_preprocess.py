"""Image preprocessing: official test geometry, channel-order quirk, augmentation matrices."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from flashocc_ros.model.preprocess import (
    MEAN,
    STD,
    ImageAug,
    apply_aug,
    inference_aug,
    preprocess_images,
    sample_train_aug,
)


def test_inference_geometry_matches_the_official_table() -> None:
    aug = inference_aug((900, 1600), (256, 704))
    assert aug.resize_dims == (704, 396)
    assert aug.crop == (0, 140, 704, 396)
    rot, tran = aug.matrices()
    np.testing.assert_allclose(rot, np.diag([0.44, 0.44, 1.0]))
    np.testing.assert_allclose(tran, [0.0, -140.0, 0.0])
    big = inference_aug((900, 1600), (512, 1408))
    assert big.crop == (0, 280, 1408, 792)


def test_source_too_short_for_the_input_is_refused() -> None:
    with pytest.raises(ValueError, match="rows"):
        inference_aug((300, 1600), (256, 704))


def test_bgr_input_keeps_its_order_and_gets_the_official_per_index_constants() -> None:
    img = np.zeros((900, 1600, 3), np.uint8)
    img[..., 0] = 255  # blue plane of a bgr8 image
    out = preprocess_images([img], (256, 704))
    assert out.images.shape == (1, 3, 256, 704)
    centre = out.images[0, :, 128, 352]
    np.testing.assert_allclose(
        centre.numpy(),
        [(255 - MEAN[0]) / STD[0], (0 - MEAN[1]) / STD[1], (0 - MEAN[2]) / STD[2]],
        rtol=1e-5,
    )


def test_resize_is_pillow_bicubic_and_crop_keeps_the_bottom_rows() -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (900, 1600, 3), dtype=np.uint8)
    aug = inference_aug((900, 1600), (256, 704))
    got = apply_aug(img, aug)
    want = np.asarray(Image.fromarray(img).resize((704, 396), Image.Resampling.BICUBIC))[140:]
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_augmentation_matrices_map_source_pixels_to_where_the_content_moves(seed: int) -> None:
    """A bright dot drawn in the source ends up where post_rot·(u, v) + post_tran says."""
    rng = np.random.default_rng(seed)
    aug = sample_train_aug(rng, (450, 800), (128, 352))
    if seed == 0:
        aug = ImageAug(aug.resize, aug.resize_dims, aug.crop, True, 4.0)
    rot, tran = aug.matrices()
    src = np.zeros((450, 800, 3), np.uint8)
    # A source point that lands well inside the crop.
    target = np.array([176.0, 64.0])
    uv = np.linalg.solve(rot[:2, :2], target - tran[:2])
    u, v = round(float(uv[0])), round(float(uv[1]))
    src[v - 6 : v + 7, u - 6 : u + 7] = 255
    out = apply_aug(src, aug)[..., 0].astype(float)
    ys, xs = np.nonzero(out > 128)
    centroid = np.array([xs.mean(), ys.mean()])
    expected = rot[:2, :2] @ np.array([u, v]) + tran[:2]
    assert np.linalg.norm(centroid - expected) < 1.5
