"""SSOV's 3D network on points: the voxel grid, the network input, per-point outputs, and the
checkpoint metadata that lets evaluation run a trained network the way it was trained.

The grid is SSOV's cylindrical LiDAR grid by default (ρ and z at 0.1 m, φ at 1°; seed facts
§3.4-3.5); indoor scenes use the cartesian grid. A voxel is represented by its first point, whose
input feature (a constant 1: SSOV feeds the LiDAR intensity, which the points files do not hold)
it carries, and whose pseudo-label it is trained on; outputs go back to every point of the voxel.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from openscene_ray.kernel.config import StrictModel
from openscene_ray.models.augment import AugmentConfig
from openscene_ray.models.transforms import VoxelInput, voxel_input

__all__ = ["GridConfig", "grid_from_metadata", "network_input", "point_outputs", "predict_labels"]


class GridConfig(StrictModel):
    """The voxel grid: ``cylindrical`` (ρ, z at ``voxel_size``, φ at ``angle_step_deg``) or ``cartesian``."""

    voxel_size: float = Field(0.1, gt=0, description="metres (ρ and z for the cylindrical grid)")
    coordinates: Literal["cartesian", "cylindrical"] = "cylindrical"
    angle_step_deg: float = Field(1.0, gt=0, description="azimuth step of the cylindrical grid")


def grid_from_metadata(extra: dict[str, Any], voxel_size: float) -> GridConfig:
    """The grid a checkpoint was trained on (its ``extra.grid``; cartesian at ``voxel_size`` if absent)."""
    grid = extra.get("grid")
    return GridConfig.model_validate(grid) if grid else GridConfig(voxel_size=voxel_size, coordinates="cartesian")


def network_input(
    xyz: np.ndarray,
    rgb: np.ndarray | None,
    grid: GridConfig,
    in_channels: int,
    augment: AugmentConfig | None = None,
    rng: np.random.Generator | None = None,
    training: bool = False,
) -> VoxelInput:
    """Augment (with ``augment`` and ``rng``), voxelise on ``grid``, encode the input features."""
    return voxel_input(xyz, rgb, grid.voxel_size, in_channels, augment, rng, training, grid.coordinates,
                       grid.angle_step_deg)  # fmt: skip


@torch.no_grad()
def point_outputs(model, xyz: np.ndarray, rgb: np.ndarray | None, grid: GridConfig) -> torch.Tensor:
    """The network's per-point outputs ``[N, C]`` (float32; each voxel's row for all its points)."""
    device = next(model.parameters()).device
    scene = network_input(xyz, rgb, grid, model.config.in_channels)
    coords = np.concatenate([np.zeros((len(scene.voxel_coords), 1), np.int32), scene.voxel_coords], axis=1)
    out = model(torch.from_numpy(coords).to(device), torch.from_numpy(scene.feats).to(device), batch_size=1)
    return out[torch.from_numpy(scene.inverse).to(device)].float()


def predict_labels(model, xyz: np.ndarray, rgb: np.ndarray | None, grid: GridConfig) -> np.ndarray:
    """int64 ``[N]``: the argmax class of a classifier network at every point."""
    return point_outputs(model, xyz, rgb, grid).argmax(dim=1).cpu().numpy()
