"""Running a trained 3D network on a scene's points (evaluation, validation, queries, the viewer)."""

from __future__ import annotations

import numpy as np
import torch

from openscene_ray.models.augment import AugmentConfig
from openscene_ray.models.transforms import voxel_input

__all__ = ["distill_features"]


@torch.no_grad()
def distill_features(
    model,
    xyz: np.ndarray,
    voxel_size: float,
    rgb: np.ndarray | None = None,
    rng: np.random.Generator | None = None,
    augment: AugmentConfig | None = None,
) -> torch.Tensor:
    """The 3D network's per-point features ``[N, C]`` (voxel features mapped back to points).

    With ``rng`` and an ``augment`` config whose ``test_time_augmentation`` is on, the points are
    randomly rotated/scaled first (the reference's test-time augmentation); otherwise deterministic.
    """
    device = next(model.parameters()).device
    scene = voxel_input(xyz, rgb, voxel_size, model.config.in_channels, augment, rng, training=False)
    coords = np.concatenate([np.zeros((len(scene.voxel_coords), 1), np.int32), scene.voxel_coords], axis=1)
    out = model(torch.from_numpy(coords).to(device), torch.from_numpy(scene.feats).to(device), batch_size=1)
    return out[torch.from_numpy(scene.inverse).to(device)].float()
