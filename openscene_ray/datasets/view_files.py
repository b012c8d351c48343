"""Checks of a view's files at ingest: image headers or decoded sizes, and camera matrices.

Images are not decoded at ingest: each view's colour, depth and label files are checked by
reading their image header (``decode=True`` decodes them fully instead). A problem with one view
is a :class:`ViewProblem` naming the field, the reason and the file; the layout decides whether it
fails the scene or skips the view. Every file access goes through :mod:`openscene_ray.kernel.storage`.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image, UnidentifiedImageError

from openscene_ray.kernel import images, storage
from openscene_ray.kernel.npy import load_npy
from openscene_ray.kernel.scene import SceneError

__all__ = [
    "ASPECT_TOLERANCE",
    "VIEW_CHECK_THREADS",
    "ViewProblem",
    "check_image",
    "parallel_map",
    "pinhole_intrinsics",
    "read_camera_matrix",
    "read_matrix",
    "scale_intrinsics",
    "stored_image_size",
]

# Threads that check one scene's view files concurrently (object-store latency bound).
VIEW_CHECK_THREADS = 8
# A stored image may differ in size from the fusion size (it is resized on load), but its aspect
# ratio must agree to within this fraction, or the intrinsics would not describe it.
ASPECT_TOLERANCE = 0.03

# The image modes a view file of each kind may have.
_MODES = {
    "color": {"RGB", "RGBA", "RGBX", "L", "LA", "P", "CMYK", "YCbCr"},
    "depth": {"I;16", "I;16B", "I;16L", "I;16N", "I", "L"},
    "label": {"L", "P", "I", "I;16", "I;16B", "I;16L", "I;16N"},
}


class ViewProblem(Exception):
    """A single view is unusable: which field, why, and the file."""

    def __init__(self, field_name: str, reason: str, uri: str | None = None, lost_tracking: bool = False):
        super().__init__(reason)
        self.field = field_name
        self.reason = reason
        self.uri = uri
        self.lost_tracking = lost_tracking


def check_image(uri: str, kind: str, image_size: tuple[int, int], decode: bool) -> tuple[int, int]:
    """The stored ``(width, height)`` of a ``kind`` (color, depth, label) image; its aspect ratio must match
    ``image_size``. Reads the header only (the image mode must suit the kind), or decodes the whole image."""
    if decode:
        size = _decoded_size(uri, kind)
    else:
        size, mode = _image_header(uri, kind)
        if mode not in _MODES[kind]:
            raise ViewProblem(kind, f"unexpected image mode {mode!r} for a {kind} image", uri)
    w, h = size
    if w <= 0 or h <= 0:
        raise ViewProblem(kind, "empty image", uri)
    want = image_size[0] / image_size[1]
    if abs((w / h) / want - 1.0) > ASPECT_TOLERANCE:
        raise ViewProblem(
            kind, f"stored size {w}x{h} does not match the fusion size {image_size[0]}x{image_size[1]}", uri
        )
    return size


def stored_image_size(scene_id: str, frame_id: str, uri: str) -> tuple[int, int]:
    """``(width, height)`` of a colour image from its header; SceneError naming the file if unreadable."""
    try:
        return _image_header(uri, "color")[0]
    except ViewProblem as problem:
        raise SceneError(scene_id, f"view {frame_id}.color", problem.reason, uri) from None


def _image_header(uri: str, kind: str) -> tuple[tuple[int, int], str]:
    """``((width, height), mode)`` from the image header, reading only the first block."""
    fs, path = storage.filesystem(uri)
    try:
        with fs.open(path, "rb", block_size=1 << 16) as f, Image.open(f) as image:
            return image.size, image.mode
    except FileNotFoundError:
        raise ViewProblem(kind, "missing file", uri) from None
    except UnidentifiedImageError:
        raise ViewProblem(kind, "cannot decode image header (not a recognised image format)", uri) from None
    except Image.DecompressionBombError as exc:
        raise ViewProblem(kind, f"refused: the header claims an oversized image ({exc})", uri) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ViewProblem(kind, f"cannot read image header ({type(exc).__name__}: {exc})", uri) from None


def _decoded_size(uri: str, kind: str) -> tuple[int, int]:
    data = _read_view_file(uri, kind)
    try:
        if kind == "color":
            array = images.decode_color(data, uri)
        elif kind == "depth":
            array = images.decode_depth(data, 1.0, uri)
        else:
            array = images.decode_label(data, uri)
    except images.ImageDecodeError as exc:
        raise ViewProblem(kind, str(exc).removeprefix(f"{uri}: "), uri) from None
    return int(array.shape[1]), int(array.shape[0])


def _read_view_file(uri: str, kind: str) -> bytes:
    try:
        return storage.read_bytes(uri)
    except storage.ObjectNotFound:
        raise ViewProblem(kind, "missing file", uri) from None
    except storage.StorageError as exc:
        raise ViewProblem(kind, f"cannot read file: {exc.reason}", uri) from None


def read_camera_matrix(uri: str | None, shape: tuple[int, int], kind: str) -> np.ndarray:
    """A view's pose or intrinsics matrix from its file (see :func:`read_matrix`); ViewProblem if unusable."""
    if uri is None:
        raise ViewProblem(kind, "no file given")
    data = _read_view_file(uri, kind)
    try:
        return read_matrix(data, uri, shape)
    except ValueError as exc:
        raise ViewProblem(kind, str(exc), uri) from None


def read_matrix(data: bytes, uri: str, shape: tuple[int, int]) -> np.ndarray:
    """A float64 matrix from a text file (whitespace separated) or a ``.npy`` file.

    A 3x3 ``shape`` also accepts a 4x4 matrix (its top-left block), as intrinsics are often
    stored homogeneous. Raises ValueError on anything else. ``.npy`` never unpickles.
    """
    if uri.endswith(".npy"):
        matrix = load_npy(data)
    else:
        try:
            matrix = np.loadtxt(io.StringIO(data.decode("utf-8")), dtype=np.float64, ndmin=2)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"not a numeric text matrix ({exc})") from None
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape == (4, 4) and shape == (3, 3):
        matrix = matrix[:3, :3]
    if matrix.shape != shape:
        raise ValueError(f"expected a {shape[0]}x{shape[1]} matrix, got shape {list(matrix.shape)}")
    return matrix


def pinhole_intrinsics(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """The 3x3 float64 K of focal lengths ``fx, fy`` and principal point ``cx, cy`` (pixels)."""
    return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], dtype=np.float64)


def scale_intrinsics(intrinsics: np.ndarray, from_size: tuple[int, int], to_size: tuple[int, int]) -> np.ndarray:
    """Rescale a 3x3 K from image size (W0, H0) to (W1, H1) with the reference's formula.

    ``fx *= floor(H1*W0/H0)/W0; fy *= H1/H0; cx *= (W1-1)/(W0-1); cy *= (H1-1)/(H0-1)``.
    """
    k = np.array(intrinsics, dtype=np.float64).reshape(3, 3)
    (w0, h0), (w1, h1) = from_size, to_size
    if (w0, h0) == (w1, h1):
        return k
    k[0, 0] *= math.floor(h1 * w0 / h0) / w0
    k[1, 1] *= h1 / h0
    k[0, 2] *= (w1 - 1) / (w0 - 1)
    k[1, 2] *= (h1 - 1) / (h0 - 1)
    return k


def parallel_map(fn: Callable, items: Sequence) -> list:
    """``[fn(x) for x in items]`` on up to ``VIEW_CHECK_THREADS`` threads, in order."""
    if len(items) <= 1:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(VIEW_CHECK_THREADS, len(items))) as pool:
        return list(pool.map(fn, items))
