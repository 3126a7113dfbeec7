"""BundleAssembler: the thread-pool decoding equals the sequential reference, errors included.
In: six small rgb8/bgr8/JPEG images + a static TF tree. Out: pass/fail.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from flashocc_ros.runtime.assembler import BundleAssembler, RawImage
from flashocc_ros.sensing.camera_info import CameraInfoStore, CameraIntrinsics
from flashocc_ros.sensing.image_decode import ImageDecodeError
from flashocc_ros.sensing.tf_buffer import TfBuffer

NAMES = tuple(f"cam{i}" for i in range(6))
H, W = 48, 64


def images(encoding: str) -> list[RawImage]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(len(NAMES)):
        img = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        if encoding == "jpeg":
            ok, buf = cv2.imencode(".jpg", img)
            assert ok
            out.append(RawImage(f"f{i}", buf.tobytes(), format="jpeg"))
        else:
            out.append(RawImage(f"f{i}", img.tobytes(), encoding, W, H, W * 3))
    return out


def assembler(threads: int) -> BundleAssembler:
    tf = TfBuffer()
    for i in range(len(NAMES)):
        tf.set_transform("base_link", f"f{i}", 0, (i, 0, 1), (0, 0, 0, 1), static=True)
    tf.set_transform("odom", "base_link", 0, (0, 0, 0), (0, 0, 0, 1), static=True)
    infos = CameraInfoStore(NAMES)
    for n in NAMES:
        infos.add(n, 0, CameraIntrinsics(W, H, (50, 0, 32, 0, 50, 24, 0, 0, 1), ""))
    return BundleAssembler(NAMES, tf, infos, decode_threads=threads)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "jpeg"])
def test_parallel_decode_equals_reference(encoding: str) -> None:
    fast, plain = assembler(0), assembler(1)
    assert fast.decode_threads >= 1 and plain.decode_threads == 1
    pairs = list(zip(NAMES, images(encoding), strict=True))
    got = fast.decode_all(pairs)
    want = plain.decode_all_reference(pairs)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)
    frames = [(n, 1000 + i, img) for i, (n, img) in enumerate(pairs)][::-1]  # any order
    for a, b in zip(fast.assemble(frames), plain.assemble(frames), strict=True):
        assert a.name == b.name
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.camera_to_base, b.camera_to_base)
    fast.close()


def test_parallel_decode_raises_the_first_camera_error() -> None:
    fast = assembler(4)
    fast.decode_threads = 4
    imgs = images("jpeg")
    imgs[2] = RawImage("f2", b"\xff\xd8\xff" + bytes(50), format="jpeg")
    imgs[4] = RawImage("f4", b"nope", format="jpeg")
    pairs = list(zip(NAMES, imgs, strict=True))
    for fn in (fast.decode_all, fast.decode_all_reference):
        with pytest.raises(ImageDecodeError, match="camera cam2"):
            fn(pairs)
    fast.close()
