"""The point transform chain that training and inference share: chunk → augment → voxelise →
network input.

* **chunk** (training only, optional): the reference's random point subsets of a scene
  (:class:`ChunkConfig`; evaluation keeps every point);
* **augment**: :func:`~openscene_ray.models.augment.augment_points` with a caller's generator
  (training augmentation, or the reference's test-time rotation/scale);
* **voxelise**: :func:`~openscene_ray.models.voxelize.voxelize` (the first point of a voxel
  represents it; every point keeps its voxel), on the cartesian grid or, as an option, the
  cylindrical LiDAR grid (ρ and z at ``voxel_size``, φ at ``angle_step_deg``);
* **network input**: :func:`input_features` of each voxel's representative point.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from pydantic import Field

from openscene_ray.kernel.config import StrictModel
from openscene_ray.models.augment import AugmentConfig, augment_points
from openscene_ray.models.voxelize import voxelize

__all__ = ["ChunkConfig", "VoxelInput", "input_features", "random_chunks", "voxel_input"]


def random_chunks(
    n_points: int, n_split_points: int = 20000, num_chunks: int = 5, seed: int = 1457
) -> list[np.ndarray]:
    """``num_chunks`` sorted int64 index arrays, each ``min(n_split_points, n_points)`` distinct points."""
    if n_points < 0 or n_split_points < 1 or num_chunks < 1:
        raise ValueError(
            f"invalid chunking: n_points={n_points}, n_split_points={n_split_points}, num_chunks={num_chunks}"
        )
    rng = np.random.default_rng(seed)
    size = min(n_split_points, n_points)
    return [np.sort(rng.choice(n_points, size=size, replace=False)).astype(np.int64) for _ in range(num_chunks)]


class ChunkConfig(StrictModel):
    """The reference's random point chunks: ``num_chunks`` subsets of ``n_split_points`` per scene
    (drawn with a fixed seed, so a chunk id names the same points in every epoch and process).

    Every chunk is a training row, so an epoch here visits each chunk once: ``num_chunks`` times
    the reference's epoch, which loads one of a scene's chunk files at random.
    """

    n_split_points: int = Field(20000, ge=1)
    num_chunks: int = Field(5, ge=1)
    seed: int = 1457

    def indices(self, num_points: int, chunk: int) -> np.ndarray:
        """The sorted point indices of chunk ``chunk`` of a scene with ``num_points`` points."""
        return _chunk_table(num_points, self.n_split_points, self.num_chunks, self.seed)[chunk]


@functools.lru_cache(maxsize=256)
def _chunk_table(num_points: int, n_split_points: int, num_chunks: int, seed: int) -> tuple[np.ndarray, ...]:
    """A scene's chunks, drawn once per process (a row names one chunk; drawing all of them per row
    would cost ``num_chunks`` full-scene draws per chunk per epoch); read-only, since they are shared."""
    table = tuple(random_chunks(num_points, n_split_points, num_chunks, seed))
    for indices in table:
        indices.flags.writeable = False
    return table


def input_features(rgb: np.ndarray | None, n: int, in_channels: int) -> np.ndarray:
    """Per-point network input: constant 1 (geometry only) or colour in [-1, 1] (+ the constant)."""
    if in_channels == 1:
        return np.ones((n, 1), np.float32)
    if rgb is None:
        raise ValueError(f"the model takes {in_channels} input channels but no colours were given")
    colour = rgb.astype(np.float32) / 127.5 - 1.0
    if in_channels == 3:
        return colour
    if in_channels == 4:
        return np.concatenate([colour, np.ones((n, 1), np.float32)], axis=1)
    raise ValueError(f"unsupported number of input channels: {in_channels}")


@dataclass
class VoxelInput:
    """One scene, voxelised for the network."""

    voxel_coords: np.ndarray  # int32 [V, 3]
    feats: np.ndarray  # float32 [V, Cin]
    rep_index: np.ndarray  # int64 [V]: the point representing each voxel
    inverse: np.ndarray  # int64 [N]: the voxel of each point


def voxel_input(
    xyz: np.ndarray,
    rgb: np.ndarray | None,
    voxel_size: float,
    in_channels: int,
    augment: AugmentConfig | None = None,
    rng: np.random.Generator | None = None,
    training: bool = False,
    coordinates: str = "cartesian",
    angle_step_deg: float = 1.0,
) -> VoxelInput:
    """Augment (when both ``augment`` and ``rng`` are given), voxelise (``coordinates``:
    ``cartesian`` or ``cylindrical``), and encode the network input of each voxel's
    representative point."""
    if augment is not None and rng is not None:
        xyz = augment_points(xyz, rng, augment, training=training)
    voxel_coords, rep_index, inverse = voxelize(xyz, voxel_size, coordinates, angle_step_deg)
    feats = input_features(None if rgb is None else rgb[rep_index], len(rep_index), in_channels)
    return VoxelInput(voxel_coords, feats, rep_index, inverse)
