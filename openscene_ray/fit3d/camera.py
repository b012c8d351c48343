"""Pinhole cameras at a render resolution.

Conventions (the fusion stage's): OpenCV camera frame (x right, y down, z forward), camera-to-world
poses, and pixel ``(u, v)`` centred at integer coordinates, ``u = fx * x / z + cx``. Rendering at
another resolution than the view's scales the intrinsics so that the image plane is resampled as
bilinear interpolation with ``align_corners=False`` resamples an image: a pixel centre ``u`` at
``W0`` maps to ``(u + 0.5) * W1 / W0 - 0.5`` at ``W1``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Camera", "render_size", "scale_intrinsics"]


def render_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """``(width, height)`` scaled by ``scale`` and rounded (at least 1 pixel each)."""
    return max(1, round(width * scale)), max(1, round(height * scale))


def scale_intrinsics(intrinsics: np.ndarray, width: int, height: int, new_width: int, new_height: int) -> np.ndarray:
    """The 3x3 intrinsics of an ``width x height`` image resampled to ``new_width x new_height``."""
    k = np.array(intrinsics, dtype=np.float64).reshape(3, 3).copy()
    sx, sy = new_width / width, new_height / height
    k[0, 0] *= sx
    k[1, 1] *= sy
    k[0, 2] = (k[0, 2] + 0.5) * sx - 0.5
    k[1, 2] = (k[1, 2] + 0.5) * sy - 0.5
    return k


@dataclass(frozen=True)
class Camera:
    """One view's camera at a render size: ``cam_to_world`` (4x4) and ``intrinsics`` (3x3, at
    ``width x height``), both float64."""

    cam_to_world: np.ndarray
    intrinsics: np.ndarray
    width: int
    height: int

    @classmethod
    def from_view(cls, cam_to_world, intrinsics, width: int, height: int, scale: float = 1.0) -> Camera:
        """The camera of a ``width x height`` view rendered at ``scale`` times its size."""
        new_width, new_height = render_size(width, height, scale)
        k = scale_intrinsics(intrinsics, width, height, new_width, new_height)
        return cls(np.asarray(cam_to_world, dtype=np.float64).reshape(4, 4), k, new_width, new_height)

    @property
    def world_to_cam(self) -> np.ndarray:
        return np.linalg.inv(self.cam_to_world)

    @property
    def center(self) -> np.ndarray:
        """The camera centre in world coordinates."""
        return self.cam_to_world[:3, 3].copy()

    def flipped(self) -> Camera:
        """The camera of the horizontally flipped image: ``u' = W - 1 - u``."""
        k = self.intrinsics.copy()
        k[0, 0] = -k[0, 0]
        k[0, 2] = self.width - 1 - k[0, 2]
        return Camera(self.cam_to_world, k, self.width, self.height)

    def tensors(self, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """``(world_to_cam [4,4], intrinsics [3,3])`` as float32 tensors on ``device``."""
        return (torch.as_tensor(self.world_to_cam, dtype=torch.float32, device=device),
                torch.as_tensor(self.intrinsics, dtype=torch.float32, device=device))  # fmt: skip
