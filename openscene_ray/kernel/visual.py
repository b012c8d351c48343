"""Pictures of point clouds: heatmap and label colours and a small z-buffered PNG renderer.

Heatmap colours follow the paper's open-vocabulary query figures (low = blue, high = yellow):
matplotlib's ``viridis`` (dark blue -> green -> yellow), which is perceptually uniform and
monotonic in lightness, so a grey-scale print keeps the order.
"""

from __future__ import annotations

import colorsys
import io

import numpy as np

from openscene_ray.kernel import storage
from openscene_ray.kernel.ply import check_points
from openscene_ray.kernel.scene import UNKNOWN_LABEL

__all__ = [
    "IGNORE_COLOR",
    "UNKNOWN_COLOR",
    "heatmap_colors",
    "label_colors",
    "label_palette",
    "project_points",
    "render_camera",
    "render_points",
    "render_points_png",
]

IGNORE_COLOR = (0, 0, 0)
UNKNOWN_COLOR = (128, 128, 128)


def heatmap_colors(values, vmin: float | None = None, vmax: float | None = None) -> np.ndarray:
    """uint8 ``[N,3]`` viridis colours (low = blue, high = yellow) for scalar values.

    Values are scaled linearly from ``[vmin, vmax]`` (default: their finite min and max) to [0,1]
    and clipped; NaN values get :data:`UNKNOWN_COLOR`.
    """
    from matplotlib import colormaps

    v = np.asarray(values, dtype=np.float64).reshape(-1)
    finite = np.isfinite(v)
    if vmin is None:
        vmin = float(v[finite].min()) if finite.any() else 0.0
    if vmax is None:
        vmax = float(v[finite].max()) if finite.any() else 1.0
    lo, hi = float(vmin), float(vmax)
    scaled = np.clip((v - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.full_like(v, 0.5)
    lut = (colormaps["viridis"](np.linspace(0.0, 1.0, 256))[:, :3] * 255.0).round().astype(np.uint8)
    out = lut[np.round(np.nan_to_num(scaled) * 255).astype(np.int64)]
    out[~finite] = UNKNOWN_COLOR
    return out


def label_palette(num_classes: int) -> np.ndarray:
    """A fixed uint8 ``[K,3]`` palette: golden-ratio hues with alternating saturation/brightness.

    Saturation stays >= 0.55, so no class colour is black or grey.
    """
    colors = []
    for k in range(num_classes):
        hue = (k * 0.6180339887498949) % 1.0
        sat = (0.85, 0.55)[k % 2]
        val = (0.95, 0.75, 0.85)[(k // 2) % 3]
        colors.append(colorsys.hsv_to_rgb(hue, sat, val))
    return (np.asarray(colors, dtype=np.float64).reshape(-1, 3) * 255.0).round().astype(np.uint8)


def label_colors(labels, num_classes: int) -> np.ndarray:
    """uint8 ``[N,3]`` colours of class ids; ignore (255 or any other id outside [0,K)) is black,
    UNKNOWN (-1) is grey."""
    lab = np.asarray(labels).reshape(-1).astype(np.int64)
    out = np.empty((lab.size, 3), dtype=np.uint8)
    out[:] = IGNORE_COLOR
    valid = (lab >= 0) & (lab < num_classes)
    out[valid] = label_palette(num_classes)[lab[valid]]
    out[lab == UNKNOWN_LABEL] = UNKNOWN_COLOR
    return out


_VIEWS = {"top": (0.0, 90.0), "front": (0.0, 0.0), "side": (90.0, 0.0), "oblique": (-35.0, 40.0)}


def _camera_axes(view) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(right, up, toward_camera) unit vectors for a named view or ``(azimuth_deg, elevation_deg)``.

    World z is up. ``front`` looks along +y, ``side`` along -x, ``top`` down -z with +y up in the image.
    """
    if isinstance(view, str):
        if view not in _VIEWS:
            raise ValueError(f"unknown view {view!r}; expected one of {sorted(_VIEWS)} or (azimuth, elevation)")
        view = _VIEWS[view]
    az, el = np.radians(view[0]), np.radians(view[1])
    toward = np.array([np.cos(el) * np.sin(az), -np.cos(el) * np.cos(az), np.sin(el)])
    right = np.array([np.cos(az), np.sin(az), 0.0])
    up = np.cross(toward, right)
    return right, up, toward


def project_points(xyz, width: int, height: int, view="top", margin: int = 4
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Orthographic projection fitted to the image: ``(col int [N], row int [N], depth [N])``.

    The cloud's projected bounding box is scaled uniformly (aspect kept) into the image minus
    ``margin`` pixels and centred; larger ``depth`` is closer to the viewer.
    """
    xyz = np.asarray(xyz, dtype=np.float64)
    right, up, toward = _camera_axes(view)
    u, v, depth = xyz @ right, xyz @ up, xyz @ toward
    if len(xyz) == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, depth
    span_u, span_v = u.max() - u.min(), v.max() - v.min()
    usable_w, usable_h = width - 1 - 2 * margin, height - 1 - 2 * margin
    if usable_w < 0 or usable_h < 0:
        raise ValueError(f"image {width}x{height} is too small for margin {margin}")
    scale = min(usable_w / span_u if span_u > 0 else np.inf, usable_h / span_v if span_v > 0 else np.inf)
    scale = 1.0 if not np.isfinite(scale) else scale
    cu, cv = (u.max() + u.min()) / 2, (v.max() + v.min()) / 2
    col = np.round((u - cu) * scale + (width - 1) / 2).astype(np.int64)
    row = np.round((cv - v) * scale + (height - 1) / 2).astype(np.int64)
    return col, row, depth


def _splat(col, row, nearness, rgb, width: int, height: int, point_radius: int, background) -> np.ndarray:
    """uint8 ``[H,W,3]``: each point covers a square of ``2*point_radius+1`` pixels around
    ``(row, col)`` and, per pixel, the point with the largest ``nearness`` wins (a z-buffer)."""
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[:] = background
    offsets = np.arange(-point_radius, point_radius + 1)
    dr, dc = np.meshgrid(offsets, offsets, indexing="ij")
    rows = (row[:, None] + dr.reshape(1, -1)).reshape(-1)
    cols = (col[:, None] + dc.reshape(1, -1)).reshape(-1)
    point = np.repeat(np.arange(len(col)), dr.size)
    inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    pixel, point = rows[inside] * width + cols[inside], point[inside]
    order = np.lexsort((-nearness[point], pixel))  # per pixel, nearest point first
    pixel, point = pixel[order], point[order]
    first = np.ones(len(pixel), dtype=bool)
    first[1:] = pixel[1:] != pixel[:-1]
    image.reshape(-1, 3)[pixel[first]] = rgb[point[first]]
    return image


def render_points(xyz, rgb, width: int, height: int, view="top", point_radius: int = 1,
                  background=(255, 255, 255)) -> np.ndarray:
    """uint8 ``[H,W,3]`` orthographic splat rendering (see :func:`project_points`) with a z-buffer:
    each point covers a square of ``2*point_radius+1`` pixels and the nearest point wins."""
    xyz, rgb = check_points(xyz, rgb)
    col, row, depth = project_points(xyz, width, height, view)
    return _splat(col, row, depth, rgb, width, height, point_radius, background)


def render_camera(xyz, rgb, intrinsics, cam_to_world, width: int, height: int, point_radius: int = 1,
                  background=(255, 255, 255)) -> np.ndarray:
    """uint8 ``[H,W,3]``: the points as a pinhole camera sees them (OpenCV convention: x right,
    y down, z forward; ``cam_to_world`` 4x4, ``intrinsics`` 3x3 for a ``width`` x ``height``
    image), splatted with a z-buffer; points behind the camera are left out."""
    xyz, rgb = check_points(xyz, rgb)
    world_to_cam = np.linalg.inv(np.asarray(cam_to_world, np.float64))
    p = xyz.astype(np.float64) @ world_to_cam[:3, :3].T + world_to_cam[:3, 3]
    front = p[:, 2] > 1e-6
    p, rgb = p[front], rgb[front]
    k = np.asarray(intrinsics, np.float64)
    col = np.rint(p[:, 0] * k[0, 0] / p[:, 2] + k[0, 2]).astype(np.int64)
    row = np.rint(p[:, 1] * k[1, 1] / p[:, 2] + k[1, 2]).astype(np.int64)
    return _splat(col, row, -p[:, 2], rgb, width, height, point_radius, background)


def render_points_png(xyz, rgb, uri: str, width: int = 800, height: int = 800, view="top",
                      point_radius: int = 1) -> np.ndarray:
    """Render with :func:`render_points` and write a PNG to ``uri``; returns the image array."""
    from PIL import Image

    image = render_points(xyz, rgb, width, height, view, point_radius)
    buffer = io.BytesIO()
    Image.fromarray(image, "RGB").save(buffer, format="PNG")
    storage.write_bytes(uri, buffer.getvalue())
    return image
