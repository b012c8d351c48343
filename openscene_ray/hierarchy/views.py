"""Per-view geometry: which points a view sees (the fusion geometry), the surface point behind
each pixel (its depth back-projected), and pixel correspondences between two views.

Training samples are (point, pixel) pairs of one view: the points :func:`visible_points` keeps
(projection, cut bound and relative depth test of :mod:`openscene_ray.fusion.core`) and the pixels
they land on, so each sampled pixel's feature is that of its visible surface point. Projection
rounds half to even, like fusion.
"""

from __future__ import annotations

import numpy as np
import torch

from openscene_ray.fusion.core import FusionParams, visible_points
from openscene_ray.kernel.scene import View

__all__ = ["back_project", "correspondence", "partner_views", "visibility"]


def visibility(xyz: np.ndarray, views: list[View], params: FusionParams) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per view, (indices of the points it sees, their flat pixels ``v * W + u``), int64 each."""
    coords = torch.as_tensor(np.asarray(xyz, dtype=np.float64))
    out = []
    for view in views:
        index, pixel = visible_points(coords, view, params)
        out.append((index.numpy().astype(np.int64), pixel.numpy().astype(np.int64)))
    return out


def back_project(view: View, stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(flat pixels with depth > 0, their world surface points float64 [P, 3]); every ``stride``-th
    row and column only when ``stride`` > 1."""
    if view.depth is None:
        raise ValueError(f"view {view.frame_id}: no depth map to back-project")
    depth = np.asarray(view.depth, dtype=np.float64)
    rows, cols = np.nonzero(depth[::stride, ::stride] > 0)
    rows, cols = rows * stride, cols * stride
    z = depth[rows, cols]
    k = view.intrinsics
    camera = np.stack([(cols - k[0, 2]) / k[0, 0] * z, (rows - k[1, 2]) / k[1, 1] * z, z], axis=1)
    pose = np.asarray(view.cam_to_world, dtype=np.float64)
    return rows * view.width + cols, camera @ pose[:3, :3].T + pose[:3, 3]


def correspondence(a: View, b: View, threshold: float, stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(pixels of ``a``, the pixels of ``b`` they map to) for the surface points of ``a`` that ``b``
    sees: in front of it, inside its image, and agreeing with its depth (relative ``threshold``)."""
    pix_a, world = back_project(a, stride)
    world_to_cam = np.linalg.inv(np.asarray(b.cam_to_world, dtype=np.float64))
    cam = world @ world_to_cam[:3, :3].T + world_to_cam[:3, 3]
    z = cam[:, 2]
    front = z > 1e-9
    safe = np.where(front, z, 1.0)
    u = np.rint(cam[:, 0] / safe * b.intrinsics[0, 0] + b.intrinsics[0, 2])
    v = np.rint(cam[:, 1] / safe * b.intrinsics[1, 1] + b.intrinsics[1, 2])
    inside = front & (u >= 0) & (u < b.width) & (v >= 0) & (v < b.height)
    pix_b = np.where(inside, v * b.width + u, 0).astype(np.int64)
    depth_b = np.asarray(b.depth, dtype=np.float64).reshape(-1)[pix_b] if b.depth is not None else np.zeros(len(z))
    agree = inside & (depth_b > 0) & (np.abs(depth_b - z) <= threshold * depth_b)
    return pix_a[agree], pix_b[agree]


def partner_views(views: list[View], threshold: float, min_overlap: float, stride: int = 4) -> list[int | None]:
    """For each view, the other view that sees most of its surface (pixels subsampled by ``stride``),
    or None when even that one sees less than ``min_overlap`` of it."""
    partners: list[int | None] = []
    for i, view in enumerate(views):
        total = max(len(back_project(view, stride)[0]), 1)
        best, best_count = None, 0
        for j, other in enumerate(views):
            if j != i:
                count = len(correspondence(view, other, threshold, stride)[0])
                if count > best_count:
                    best, best_count = j, count
        partners.append(best if best_count >= min_overlap * total else None)
    return partners
