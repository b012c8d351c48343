"""Training samples for distillation: small Ray Data rows in, sparse batches out.

A row names one scene (or one reference-style random chunk of it) and where its inputs live:
``scene_id, points_uri, features_uri, num_points, chunk`` (``chunk = -1``: all points). Points
and fused features never enter Ray blocks; :class:`SparseCollate` reads them through the storage
layer inside the Train worker's collate thread, augments, voxelises and packs a batch of scenes::

    coords     int32   [M, 4]  (batch, x, y, z) voxel coordinates, one row per voxel
    feats      float32 [M, Cin] network input (constant 1, or colour; see ``input_features``)
    target     float16 [M, C]  fused 2D feature of each voxel's representative point
    has_target bool    [M]     the representative point was seen by some view
    num_scenes int64   []      batch size of the sparse tensor

The representative of a voxel is its first point (smallest index), as in the reference.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from ray.data.collate_fn import NumpyBatchCollateFn

from openscene_ray.kernel.features import read_features, shard_uri
from openscene_ray.kernel.manifest import SceneRecord, load_points
from openscene_ray.models.augment import AugmentConfig
from openscene_ray.models.transforms import ChunkConfig, voxel_input
from openscene_ray.models.voxelize import batch_voxels

__all__ = ["SceneSample", "SparseCollate", "build_sample", "training_rows"]

ALL_POINTS = -1


def training_rows(
    records: Iterable[SceneRecord], fused: str, chunks: ChunkConfig | None = None
) -> list[dict[str, Any]]:
    """One row per scene, or one row per (scene, chunk id) with chunking."""
    chunk_ids = [ALL_POINTS] if chunks is None else list(range(chunks.num_chunks))
    return [
        {
            "scene_id": r.scene_id,
            "points_uri": r.points_uri,
            "features_uri": shard_uri(fused, r.scene_id),
            "num_points": int(r.num_points),
            "chunk": chunk,
        }
        for r in records
        for chunk in chunk_ids
    ]


@dataclass
class SceneSample:
    """One scene's voxelised training sample (numpy)."""

    voxel_coords: np.ndarray  # int32 [V, 3]
    feats: np.ndarray  # float32 [V, Cin]
    target: np.ndarray  # float16 [V, C]
    has_target: np.ndarray  # bool [V]


def sample_rng(seed: int, epoch: int, scene_id: str, chunk: int) -> np.random.Generator:
    """The augmentation generator of one row in one epoch: reproducible, independent of batching."""
    return np.random.default_rng([seed, epoch, zlib.crc32(scene_id.encode()), chunk + 1])


def build_sample(
    row: dict[str, Any],
    voxel_size: float,
    in_channels: int,
    augment: AugmentConfig | None,
    rng: np.random.Generator | None,
    chunks: ChunkConfig | None = None,
) -> SceneSample:
    """Read one row's points and fused features, select its chunk, augment, voxelise.

    ``augment=None`` skips augmentation (the points are used as stored).
    """
    scene_id, num_points, chunk = str(row["scene_id"]), int(row["num_points"]), int(row["chunk"])
    xyz, rgb, _ = load_points(str(row["points_uri"]))
    shard = read_features(str(row["features_uri"]))
    if xyz.shape[0] != num_points:
        raise ValueError(f"{scene_id}: the manifest says {num_points} points, the points file has {xyz.shape[0]}")
    features, seen = shard.dense(num_points)
    if chunk != ALL_POINTS:
        if chunks is None:
            raise ValueError(f"{scene_id}: row asks for chunk {chunk} but no chunking is configured")
        keep = chunks.indices(num_points, chunk)
        xyz, rgb, features, seen = xyz[keep], rgb[keep], features[keep], seen[keep]
    scene = voxel_input(xyz, rgb, voxel_size, in_channels, augment, rng, training=True)
    return SceneSample(scene.voxel_coords, scene.feats, features[scene.rep_index], seen[scene.rep_index])


class SparseCollate(NumpyBatchCollateFn):
    """Ray Data collate: a numpy batch of scene rows → one sparse batch (dict of tensors).

    Augmentation is seeded per (seed, epoch, scene, chunk), so a batch is reproducible whatever
    the rank, batching or collate thread; make a new instance per epoch. Thread-safe (no state).
    """

    def __init__(
        self,
        voxel_size: float,
        in_channels: int,
        augment: AugmentConfig | None = None,
        seed: int = 0,
        epoch: int = 0,
        chunks: ChunkConfig | None = None,
    ):
        self.voxel_size = voxel_size
        self.in_channels = in_channels
        self.augment = augment
        self.seed = seed
        self.epoch = epoch
        self.chunks = chunks

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        samples = []
        for i in range(len(batch["scene_id"])):
            row = {key: batch[key][i] for key in ("scene_id", "points_uri", "features_uri", "num_points", "chunk")}
            rng = sample_rng(self.seed, self.epoch, str(row["scene_id"]), int(row["chunk"]))
            samples.append(build_sample(row, self.voxel_size, self.in_channels, self.augment, rng, self.chunks))
        return {
            "coords": torch.from_numpy(batch_voxels([s.voxel_coords for s in samples])),
            "feats": torch.from_numpy(np.concatenate([s.feats for s in samples])),
            "target": torch.from_numpy(np.concatenate([s.target for s in samples])),
            "has_target": torch.from_numpy(np.concatenate([s.has_target for s in samples])),
            "num_scenes": torch.tensor(len(samples), dtype=torch.int64),
        }
