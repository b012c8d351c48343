"""Z-buffered splatting of points: the renderer of the point representation (pure torch).

Each point is projected with the fusion stage's own projection (:func:`openscene_ray.fusion.core.project`:
float64, pixel centres at integers, rounded half to even), optionally widened to a
``(2r+1) x (2r+1)`` square of pixels, and every pixel keeps the nearest point (smallest camera z;
ties go to the lowest point index). Pixels no point reaches are outside the mask.
"""

from __future__ import annotations

import numpy as np
import torch

from openscene_ray.fit3d.camera import Camera
from openscene_ray.fusion.core import project

__all__ = ["render_points", "zbuffer"]


def zbuffer(xyz: torch.Tensor, camera: Camera, radius: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(winner, depth)``: per pixel (flat ``v*W + u``), the index of the nearest point (-1: none)
    and its camera z (inf: none). ``xyz`` is float64 ``[N, 3]`` world."""
    if radius < 0:
        raise ValueError(f"splat radius must be >= 0, got {radius}")
    width, height = camera.width, camera.height
    proj = project(xyz, camera.cam_to_world, camera.intrinsics, height, width)
    index, u, v, z = proj.index, proj.u, proj.v, proj.z
    if radius > 0:
        steps = torch.arange(-radius, radius + 1, device=u.device)
        du, dv = (s.reshape(-1) for s in torch.meshgrid(steps, steps, indexing="xy"))
        u, v = (u[:, None] + du).reshape(-1), (v[:, None] + dv).reshape(-1)
        index, z = index.repeat_interleave(du.numel()), z.repeat_interleave(du.numel())
        inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)
        index, u, v, z = index[inside], u[inside], v[inside], z[inside]
    pixel = v * width + u
    depth = torch.full((width * height,), float("inf"), dtype=torch.float64, device=xyz.device)
    depth = depth.scatter_reduce(0, pixel, z, reduce="amin")
    nearest = z == depth[pixel]
    winner = torch.full((width * height,), np.iinfo(np.int64).max, dtype=torch.int64, device=xyz.device)
    winner = winner.scatter_reduce(0, pixel[nearest], index[nearest], reduce="amin")
    winner[winner == np.iinfo(np.int64).max] = -1
    return winner, depth


def render_points(xyz: torch.Tensor, features: torch.Tensor, camera: Camera, radius: int = 0):
    """``(features [D, H, W], mask [H, W] bool)``: each pixel takes its nearest point's feature."""
    winner, _ = zbuffer(xyz, camera, radius)
    mask = winner >= 0
    out = torch.zeros(features.shape[1], camera.height * camera.width, dtype=features.dtype, device=features.device)
    out[:, mask] = features[winner[mask]].T
    return out.reshape(-1, camera.height, camera.width), mask.reshape(camera.height, camera.width)
