"""Decode raw (sensor_msgs/Image-like) and compressed (CompressedImage-like) buffers, ROS-free.
In: encoding/format, width, height, step, bytes. Out: (H, W, 3) uint8 BGR arrays (writable copies).

Raw encodings (ROS `sensor_msgs/image_encodings` names): rgb8, bgr8, rgba8, bgra8, mono8, mono16
(scaled to 8 bit as round(v / 257)), yuv422 (= UYVY byte order, as ROS defines it), uyvy, yuyv and
yuv422_yuy2 (= YUYV). Compressed: JPEG and PNG (any format string naming one, e.g. "jpeg",
"bgr8; jpeg compressed bgr8", "png"); compressedDepth is refused.
"""

from __future__ import annotations

import struct
from typing import Final

import cv2
import numpy as np
import numpy.typing as npt

U8 = npt.NDArray[np.uint8]

#: Default refusal threshold: 8K UHD (7680 x 4320) is the largest image we accept.
DEFAULT_MAX_PIXELS: Final[int] = 7680 * 4320

# bytes per pixel of each raw encoding
_BPP: Final[dict[str, int]] = {
    "rgb8": 3,
    "bgr8": 3,
    "rgba8": 4,
    "bgra8": 4,
    "mono8": 1,
    "mono16": 2,
    "yuv422": 2,
    "uyvy": 2,
    "yuyv": 2,
    "yuv422_yuy2": 2,
}
_CVT: Final[dict[str, int]] = {
    "rgb8": cv2.COLOR_RGB2BGR,
    "rgba8": cv2.COLOR_RGBA2BGR,
    "bgra8": cv2.COLOR_BGRA2BGR,
    "mono8": cv2.COLOR_GRAY2BGR,
    "mono16": cv2.COLOR_GRAY2BGR,
    "yuv422": cv2.COLOR_YUV2BGR_UYVY,
    "uyvy": cv2.COLOR_YUV2BGR_UYVY,
    "yuyv": cv2.COLOR_YUV2BGR_YUYV,
    "yuv422_yuy2": cv2.COLOR_YUV2BGR_YUYV,
}
_JPEG_MAGIC: Final[bytes] = b"\xff\xd8\xff"
_PNG_MAGIC: Final[bytes] = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers carrying the image size (C4, C8 and CC are not SOF markers)
_SOF_MARKERS: Final[frozenset[int]] = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


class ImageDecodeError(ValueError):
    """An image buffer cannot be decoded; the message names the problem."""


SUPPORTED_ENCODINGS: Final[tuple[str, ...]] = tuple(_BPP)


def _check_size(width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise ImageDecodeError(f"image size must be positive, got width={width} height={height}")
    if width * height > max_pixels:
        raise ImageDecodeError(
            f"image {width}x{height} has {width * height} pixels, "
            f"more than max_pixels={max_pixels}"
        )


def check_raw_layout(
    encoding: str, width: int, height: int, step: int, nbytes: int, max_pixels: int
) -> None:
    """ImageDecodeError unless a raw buffer of `nbytes` can hold the image the fields describe
    (known encoding, size within max_pixels, step >= row, enough data): the cheap checks,
    before any pixel is touched."""
    enc = encoding.strip().lower()
    bpp = _BPP.get(enc)
    if bpp is None:
        raise ImageDecodeError(
            f"unsupported encoding {encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}"
        )
    _check_size(width, height, max_pixels)
    if bpp == 2 and enc != "mono16" and width % 2:
        raise ImageDecodeError(f"{enc} needs an even width (2 pixels per 4 bytes), got {width}")
    if step < width * bpp:
        raise ImageDecodeError(f"step {step} < width {width} * {bpp} bytes per pixel ({enc})")
    if nbytes < step * height:
        raise ImageDecodeError(
            f"data has {nbytes} bytes, {enc} {width}x{height} with step {step} needs "
            f"{step * height}"
        )


def compressed_size(fmt: str, data: bytes | bytearray | memoryview) -> tuple[int, int]:
    """(width, height) from a JPEG / PNG header without decoding; ImageDecodeError when the
    format is not supported or the header is not there."""
    kind = _compressed_kind(fmt)
    raw = bytes(data)
    if kind == "jpeg":
        if not raw.startswith(_JPEG_MAGIC):
            raise ImageDecodeError(f"format {fmt!r} says JPEG but the data has no JPEG header")
        return _jpeg_size(raw)
    if not raw.startswith(_PNG_MAGIC):
        raise ImageDecodeError(f"format {fmt!r} says PNG but the data has no PNG signature")
    return _png_size(raw)


def decode_image(
    encoding: str,
    width: int,
    height: int,
    step: int,
    data: bytes | bytearray | memoryview,
    *,
    is_bigendian: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> U8:
    """Raw buffer (height rows of `step` bytes) -> (H, W, 3) uint8 BGR.

    Raises ImageDecodeError for unknown encodings, bad sizes, short steps or short data.
    """
    check_raw_layout(encoding, width, height, step, memoryview(data).nbytes, max_pixels)
    enc = encoding.strip().lower()
    bpp = _BPP[enc]
    row = width * bpp
    need = step * height
    buf = np.frombuffer(data, dtype=np.uint8, count=need)
    rows = buf.reshape(height, step)[:, :row]  # (H, W*bpp) view, padding dropped
    if enc == "mono16":
        dtype = ">u2" if is_bigendian else "<u2"
        wide = np.ascontiguousarray(rows).view(dtype).reshape(height, width)
        gray = np.rint(wide.astype(np.float32) / 257.0).astype(np.uint8)
        return np.asarray(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR), dtype=np.uint8)
    img = rows.reshape(height, width, bpp)  # view into the message buffer
    if enc == "bgr8":
        return img.copy()  # (H, W, 3) owned, writable
    src = np.ascontiguousarray(img[:, :, 0] if bpp == 1 else img)
    return np.asarray(cv2.cvtColor(src, _CVT[enc]), dtype=np.uint8)


def _compressed_kind(fmt: str) -> str:
    f = fmt.lower()
    if "compresseddepth" in f:
        raise ImageDecodeError(f"compressedDepth images are not supported (format {fmt!r})")
    if "jpeg" in f or "jpg" in f:
        return "jpeg"
    if "png" in f:
        return "png"
    raise ImageDecodeError(f"unsupported compressed format {fmt!r}; expected jpeg or png")


def _png_size(data: bytes) -> tuple[int, int]:
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise ImageDecodeError("truncated PNG: no IHDR chunk")
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def _jpeg_size(data: bytes) -> tuple[int, int]:
    """Walk the JPEG marker segments up to the first SOF and read its (width, height)."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise ImageDecodeError(f"corrupt JPEG: expected a marker at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if marker in _SOF_MARKERS:
            if pos + 9 > len(data):
                break
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return int(width), int(height)
        if marker == 0xDA or length < 2:  # start of scan before any frame header
            raise ImageDecodeError("corrupt JPEG: no frame header (SOF) before the scan")
        pos += 2 + length
    raise ImageDecodeError("truncated JPEG: no frame header (SOF) found")


def decode_compressed(
    fmt: str,
    data: bytes | bytearray | memoryview,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> U8:
    """CompressedImage `format` and payload -> (H, W, 3) uint8 BGR (grey images are expanded).

    The size is read from the header and checked against `max_pixels` before decoding; truncated
    JPEGs (no end-of-image marker) and undecodable payloads raise ImageDecodeError.
    """
    kind = _compressed_kind(fmt)
    raw = bytes(data)
    width, height = compressed_size(fmt, raw)
    if kind == "jpeg" and not raw.rstrip(b"\x00").endswith(b"\xff\xd9"):
        raise ImageDecodeError("truncated JPEG: missing end-of-image marker")
    _check_size(width, height, max_pixels)
    try:
        img = cv2.imdecode(np.frombuffer(raw, dtype=np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as err:
        raise ImageDecodeError(f"corrupt {kind.upper()}: {err}") from err
    if img is None:
        raise ImageDecodeError(f"corrupt {kind.upper()}: OpenCV could not decode {len(raw)} bytes")
    if img.shape[:2] != (height, width):
        raise ImageDecodeError(
            f"corrupt {kind.upper()}: header says {width}x{height}, decoded {img.shape[1]}x"
            f"{img.shape[0]}"
        )
    return np.asarray(img, dtype=np.uint8)
