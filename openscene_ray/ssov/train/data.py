"""Training batches for annotation-free training: scene rows in, sparse batches with pseudo-labels out.

Per row (one scene) the collate reads the points and the lifted labels, augments (seeded per
seed, epoch and scene), voxelises on the configured grid, and labels each voxel with the
pseudo-label of its representative point (255: none, ignored by the loss)::

    coords int32 [M, 4]  (batch, x, y, z)     feats float32 [M, Cin]
    target int64 [M]     pseudo-label per voxel (255 = ignore)      num_scenes int64 []
"""

from __future__ import annotations

import zlib

import numpy as np
import torch
from ray.data.collate_fn import NumpyBatchCollateFn

from openscene_ray.kernel.manifest import load_points
from openscene_ray.models.augment import AugmentConfig
from openscene_ray.models.voxelize import batch_voxels
from openscene_ray.ssov.lifted import read_labels
from openscene_ray.ssov.network import GridConfig, network_input

__all__ = ["PseudoLabelCollate", "sample_rng"]


def sample_rng(seed: int, epoch: int, scene_id: str) -> np.random.Generator:
    """The augmentation generator of one scene in one epoch (independent of batching and rank)."""
    return np.random.default_rng([seed, epoch, zlib.crc32(scene_id.encode())])


class PseudoLabelCollate(NumpyBatchCollateFn):
    """Ray Data collate: scene rows → one sparse batch with voxel pseudo-labels (thread-safe)."""

    def __init__(self, grid: GridConfig, in_channels: int, augment: AugmentConfig | None, seed: int, epoch: int):
        self.grid, self.in_channels, self.augment, self.seed, self.epoch = grid, in_channels, augment, seed, epoch

    def sample(self, row: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        scene_id = str(row["scene_id"])
        xyz, rgb, _ = load_points(str(row["points_uri"]))
        lifted = read_labels(str(row["labels_uri"]), int(row["num_points"]))
        rng = sample_rng(self.seed, self.epoch, scene_id)
        scene = network_input(xyz, rgb, self.grid, self.in_channels, self.augment, rng, training=True)
        return scene.voxel_coords, scene.feats, lifted.label[scene.rep_index].astype(np.int64)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        samples = [self.sample({k: batch[k][i] for k in batch}) for i in range(len(batch["scene_id"]))]
        return {
            "coords": torch.from_numpy(batch_voxels([s[0] for s in samples])),
            "feats": torch.from_numpy(np.concatenate([s[1] for s in samples])),
            "target": torch.from_numpy(np.concatenate([s[2] for s in samples])),
            "num_scenes": torch.tensor(len(samples), dtype=torch.int64),
        }
