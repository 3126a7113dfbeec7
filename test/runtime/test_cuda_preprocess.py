"""GPU preprocessing (`cuda_fast.GpuPreprocessor`) against the CPU reference (`preprocess_images`).
In: random and smooth uint8 BGR images of several source sizes. Out: pass/fail.

The GPU code path runs on the CPU device here (same torch ops), and on CUDA when present.
Both resize in two passes with uint8 rounding between them; Pillow in fixed point, torch in
float, so they agree to one grey level (1/57 in normalised units), not bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from flashocc_ros.model.preprocess import STD, inference_aug, preprocess_images
from flashocc_ros.runtime.cuda_fast import GpuPreprocessor, _crop

torch.set_num_threads(1)
CUDA_MISSING = None if torch.cuda.is_available() else "no CUDA device visible to PyTorch"
ONE_LEVEL = 1.0 / min(STD)  # one grey level in normalised units


def smooth_image(h: int, w: int, seed: int) -> np.ndarray:
    """Camera-like content: gradients plus a few edges (pure noise is no real-world case)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([(x * 255 / w), (y * 255 / h), ((x + y) % 97) * 2.6], axis=-1)
    img[h // 3 : h // 2, w // 4 : w // 3] = rng.integers(0, 256, 3)
    return img.astype(np.uint8)


def noise_image(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


SIZES = [(900, 1600), (450, 800), (198, 352), (720, 1280), (301, 533)]


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("input_hw", [(256, 704), (64, 176)])
def test_gpu_preprocessing_matches_pillow(device: str, input_hw: tuple[int, int]) -> None:
    if device == "cuda" and CUDA_MISSING:
        pytest.skip(CUDA_MISSING)
    images = [smooth_image(h, w, i) for i, (h, w) in enumerate(SIZES)]
    images += [noise_image(450, 800, 9)]
    ref = preprocess_images(images, input_hw)
    got = GpuPreprocessor(device)(images, input_hw)
    assert got.images.device.type == device
    assert got.images.shape == ref.images.shape == (len(images), 3, *input_hw)
    assert torch.equal(got.post_rot, ref.post_rot) and torch.equal(got.post_tran, ref.post_tran)
    diff = (got.images.cpu() - ref.images).abs()  # (N, 3, h, w)
    # Fixed point (Pillow) vs float (torch): at most one grey level, almost never that.
    assert float(diff.max()) <= 1.01 * ONE_LEVEL, float(diff.max()) / ONE_LEVEL
    assert float(diff.mean()) <= 0.05 * ONE_LEVEL, float(diff.mean()) / ONE_LEVEL


def test_wrong_images_are_refused() -> None:
    pre = GpuPreprocessor("cpu")
    with pytest.raises(ValueError, match="N: need at least one image"):
        pre([], (64, 176))
    with pytest.raises(ValueError, match="uint8"):
        pre([np.zeros((198, 352, 3), dtype=np.float32)], (64, 176))


def test_crop_pads_outside_the_image_like_pil() -> None:
    img = noise_image(5, 7, 1)
    x = torch.from_numpy(img).permute(2, 0, 1).float()
    for box in [(0, 0, 7, 5), (1, 2, 6, 5), (-2, -1, 5, 4), (3, 2, 10, 9), (8, 6, 10, 9)]:
        want = np.asarray(Image.fromarray(img).crop(box)).astype(np.float32)
        got = _crop(x, box).permute(1, 2, 0).numpy()
        assert np.array_equal(got, want), box


def test_augmentation_geometry_is_the_reference_one() -> None:
    """The preprocessor caches one augmentation per (source size, input size)."""
    pre = GpuPreprocessor("cpu")
    a = pre([smooth_image(900, 1600, 0), smooth_image(900, 1600, 1)], (256, 704))
    rot, tran = inference_aug((900, 1600), (256, 704)).matrices()
    assert torch.allclose(a.post_rot[1], torch.tensor(rot, dtype=torch.float32))
    assert torch.allclose(a.post_tran[1], torch.tensor(tran, dtype=torch.float32))
    assert len(pre._augs) == 1
