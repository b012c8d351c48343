"""Views with their cameras at a render size and their backbone targets (pure torch).

A target is FiT3D's: the backbone's features of the original image at its own resolution
(resized to a patch multiple by the backbone), kept at token resolution and **bilinearly
upsampled** to the render size when used (``align_corners=False``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from openscene_ray.fit3d.camera import Camera
from openscene_ray.kernel.scene import View

__all__ = ["TargetView", "backbone_tokens", "image_tensor", "split_holdout", "target_views", "upsample"]


def upsample(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``[D, h, w]`` (or ``[B, D, h, w]``) bilinearly resized to ``height x width``."""
    batch = tokens if tokens.ndim == 4 else tokens[None]
    out = F.interpolate(batch, size=(height, width), mode="bilinear", align_corners=False)
    return out if tokens.ndim == 4 else out[0]


def image_tensor(color: np.ndarray, width: int, height: int, device="cpu") -> torch.Tensor:
    """uint8 ``[H, W, 3]`` -> float ``[3, height, width]`` in [0, 1] (bilinear, antialiased when shrinking)."""
    image = torch.tensor(np.asarray(color), device=device).permute(2, 0, 1).float().div_(255.0)
    if tuple(image.shape[1:]) == (height, width):
        return image
    shrink = height < image.shape[1] or width < image.shape[2]
    return F.interpolate(image[None], size=(height, width), mode="bilinear", align_corners=False,
                         antialias=shrink)[0].clamp_(0.0, 1.0)  # fmt: skip


@torch.no_grad()
def backbone_tokens(backbone, colors: Sequence[np.ndarray], batch: int = 4) -> list[torch.Tensor]:
    """The backbone's features ``[D, h, w]`` of each uint8 image (same-size runs batched)."""
    device = next(backbone.parameters()).device
    out: list[torch.Tensor] = []
    start = 0
    while start < len(colors):
        stop = start + 1
        while stop < len(colors) and stop - start < batch and colors[stop].shape == colors[start].shape:
            stop += 1
        images = torch.from_numpy(np.stack(colors[start:stop])).to(device)
        out.extend(backbone.features(images).float())
        start = stop
    return out


@dataclass
class TargetView:
    """One view at the render size: its camera, image and backbone features (token resolution)."""

    frame_id: str
    camera: Camera
    image: torch.Tensor  # float [3, h, w] in [0, 1]
    tokens: torch.Tensor  # float [D, ht, wt]

    def target(self) -> torch.Tensor:
        """The backbone's features upsampled to the render size ``[D, h, w]``."""
        return upsample(self.tokens, self.camera.height, self.camera.width)


def target_views(views: Sequence[View], backbone, scale: float, batch: int = 4) -> list[TargetView]:
    """:class:`TargetView` of every view, rendered at ``scale`` times its size."""
    was_training = backbone.training
    backbone.eval()
    tokens = backbone_tokens(backbone, [v.color for v in views], batch)
    backbone.train(was_training)
    out = []
    for view, token in zip(views, tokens):
        camera = Camera.from_view(view.cam_to_world, view.intrinsics, view.width, view.height, scale)
        image = image_tensor(view.color, camera.width, camera.height, token.device)
        out.append(TargetView(view.frame_id, camera, image, token))
    return out


def split_holdout(count: int, every: int) -> tuple[list[int], list[int]]:
    """``(fit, held out)`` view positions: every ``every``-th view from the first is held out
    (3DGS's convention); ``every = 0`` holds none out."""
    held = [i for i in range(count) if every > 0 and i % every == 0]
    fit = [i for i in range(count) if i not in set(held)]
    if not fit:
        raise ValueError(f"holdout_every={every} holds out all {count} views; nothing is left to fit")
    return fit, held
