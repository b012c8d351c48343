"""What the page draws: the display subsample of a scene, the point size, the starting camera,
and which point a click hits (pure numpy)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["VIEWS", "CameraPose", "display_indices", "initial_camera", "pick_point", "point_size"]

VIEWS = ("oblique", "top")
DEFAULT_FOV = math.radians(50.0)  # vertical field of view of the page's camera


def display_indices(n: int, cap: int, seed: int = 0) -> np.ndarray:
    """Sorted int64 indices of the points drawn: all ``n`` up to ``cap``, else a seeded uniform
    subsample of ``cap`` (density stays proportional, so small objects keep their share)."""
    if cap < 1:
        raise ValueError(f"the display cap must be >= 1, got {cap}")
    if n <= cap:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(n, cap, replace=False)).astype(np.int64)


def point_size(xyz: np.ndarray) -> float:
    """A point size (metres) that closes the gaps between drawn points: 1.5 × the mean spacing of
    ``len(xyz)`` points spread over the surface of the cloud's bounding box, clipped to
    [4 mm, 25 cm]."""
    xyz = np.asarray(xyz, np.float64)
    if len(xyz) < 2:
        return 0.05
    dx, dy, dz = np.maximum(xyz.max(axis=0) - xyz.min(axis=0), 1e-3)
    area = 2.0 * (dx * dy + dx * dz + dy * dz)
    return float(np.clip(1.5 * math.sqrt(area / len(xyz)), 0.004, 0.25))


@dataclass(frozen=True)
class CameraPose:
    """A look-at camera (world z up); ``fov`` is the vertical field of view in radians."""

    position: tuple[float, float, float]
    look_at: tuple[float, float, float]
    up: tuple[float, float, float] = (0.0, 0.0, 1.0)
    fov: float = DEFAULT_FOV


def initial_camera(xyz: np.ndarray, view: str = "oblique", aspect: float = 1.6, fov: float = DEFAULT_FOV) -> CameraPose:
    """The camera a scene opens with, framing the whole cloud in an image of ``aspect`` (w/h).

    ``top``: straight down onto the cloud (tilted 0.6° so that image up is +y), far enough that
    the cloud's top fits; ``oblique``: from the -y side, 60° above the horizon (over the near
    wall of a room), the bounding sphere in view.
    """
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; expected one of {', '.join(VIEWS)}")
    xyz = np.asarray(xyz, np.float64)
    lo, hi = xyz.min(axis=0), xyz.max(axis=0)
    center = (lo + hi) / 2
    tan_half = math.tan(fov / 2)
    if view == "top":
        half_x, half_y = (hi - lo)[:2] / 2
        height = max(half_y / tan_half, half_x / (tan_half * max(aspect, 1e-3))) * 1.15 + 1e-3
        position = center + np.array([0.0, -0.01 * height, hi[2] - center[2] + height])
    else:
        radius = float(np.linalg.norm(hi - lo)) / 2 + 1e-3
        distance = radius / math.sin(min(fov, fov * max(aspect, 1e-3)) / 2)
        elevation = math.radians(60.0)
        position = center + distance * np.array([0.0, -math.cos(elevation), math.sin(elevation)])
    return CameraPose(tuple(float(v) for v in position), tuple(float(v) for v in center), fov=fov)


def pick_point(xyz: np.ndarray, origin, direction, radius: float) -> int | None:
    """Index of the point a click ray hits: among the points within ``radius`` of the ray (in
    front of its origin), the one nearest the origin; None when the ray passes no point."""
    d = np.asarray(direction, np.float64)
    norm = np.linalg.norm(d)
    if len(xyz) == 0 or not np.isfinite(norm) or norm == 0:
        return None
    d = d / norm
    v = np.asarray(xyz, np.float64) - np.asarray(origin, np.float64)
    along = v @ d
    off2 = np.einsum("ij,ij->i", v, v) - along**2
    hit = np.flatnonzero((along > 0) & (off2 <= radius**2))
    if hit.size == 0:
        return None
    return int(hit[np.argmin(along[hit])])
