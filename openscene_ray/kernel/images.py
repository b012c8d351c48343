"""Decode and encode the image files of posed RGB-D datasets (colour, 16-bit depth, label maps).

Every decoder takes the file's URI for its error messages, so a corrupt file is reported by name.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

from openscene_ray.kernel.errors import OpenSceneError

__all__ = [
    "ImageDecodeError",
    "decode_color",
    "decode_depth",
    "decode_label",
    "encode_jpeg",
    "encode_png",
    "resize_color",
    "resize_nearest",
]


class ImageDecodeError(OpenSceneError, ValueError):
    """An image file could not be decoded; the message names the file and the reason."""


def _open(data: bytes, source: str) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
        return image
    except Image.DecompressionBombError as exc:  # a header claiming billions of pixels
        raise ImageDecodeError(f"{source}: refused to decode image ({exc})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(f"{source}: cannot decode image ({exc})") from None


def decode_color(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """JPEG/PNG bytes to uint8 [H,W,3] RGB."""
    return np.asarray(_open(data, source).convert("RGB"), dtype=np.uint8)


def decode_depth(data: bytes, depth_scale: float, source: str = "<bytes>") -> np.ndarray:
    """16-bit depth PNG to float32 metres (value / depth_scale); 0 stays 0 (invalid)."""
    image = _open(data, source)
    raw = np.asarray(image)
    if raw.ndim != 2 or raw.dtype not in (np.uint16, np.int32, np.uint8):
        raise ImageDecodeError(f"{source}: expected a single-channel 16-bit depth image, got mode {image.mode}")
    return (raw.astype(np.float32) / np.float32(depth_scale)).astype(np.float32)


def decode_label(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """8-bit label PNG to uint8 [H,W] (255 = ignore)."""
    image = _open(data, source)
    raw = np.asarray(image)
    if raw.ndim != 2:
        raise ImageDecodeError(f"{source}: expected a single-channel label image, got mode {image.mode}")
    return raw.astype(np.uint8)


def resize_color(color: np.ndarray, width: int, height: int) -> np.ndarray:
    if color.shape[1] == width and color.shape[0] == height:
        return color
    return np.asarray(Image.fromarray(color).resize((width, height), Image.BILINEAR), dtype=np.uint8)


def resize_nearest(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Nearest-neighbour resize of a 2D map (depth or labels) using pixel-centre sampling."""
    h, w = image.shape[:2]
    if w == width and h == height:
        return image
    rows = np.minimum(((np.arange(height) + 0.5) * h / height).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(width) + 0.5) * w / width).astype(np.int64), w - 1)
    return image[rows[:, None], cols[None, :]]


def encode_jpeg(color: np.ndarray, quality: int = 95) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(color).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of uint8 RGB/grey or uint16 grey arrays."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()
