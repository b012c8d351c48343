"""TMP batches: scene rows in; sparse batches with their point–superpixel pairs out.

Per row (one scene) the collate reads the points, the lifted pairs (every view's projections)
and, for each view that paired points, that view's mask embeddings and superpixel phrases from
the segments store; it augments and voxelises the points. Superpixels are numbered across the
batch (one per (scene, view, id) that received points), so every other superpixel of the batch is
a negative of InfoNCE::

    coords int32 [M, 4]   feats float32 [M, Cin]   num_scenes int64 []
    pair_point int64 [P]  the voxel (row of the network output) of each paired point
    pair_superpixel int64 [P]  its superpixel in the batch
    mask_embeddings float32 [S, D]   phrases int64 [S]
"""

from __future__ import annotations

import numpy as np
import torch
from ray.data.collate_fn import NumpyBatchCollateFn

from openscene_ray.kernel.errors import InputError
from openscene_ray.kernel.manifest import load_points
from openscene_ray.models.augment import AugmentConfig
from openscene_ray.models.voxelize import batch_voxels
from openscene_ray.ssov.lifted import read_pairs
from openscene_ray.ssov.network import GridConfig, network_input
from openscene_ray.ssov.store import read_frame
from openscene_ray.ssov.train.data import sample_rng

__all__ = ["TmpCollate", "scene_superpixels"]

_ID_STRIDE = 1 << 16  # superpixel ids of one view are < 65536 (uint16 maps)


def scene_superpixels(segments: str, scene_id: str, frames: list[str], view: np.ndarray, superpixel: np.ndarray,
                      vocabulary_size: int):  # fmt: skip
    """``(local index [P], embeddings [S, D], phrases [S])`` of the superpixels the pairs name."""
    keys, local = np.unique(view * _ID_STRIDE + superpixel, return_inverse=True)
    embeddings, phrases, cache = [], [], {}
    for key in keys.tolist():
        v, sp = divmod(key, _ID_STRIDE)
        if v >= len(frames):
            raise InputError(f"scene {scene_id!r}: pairs name view {v} but the lift recorded {len(frames)} views")
        if v not in cache:
            cache[v] = read_frame(segments, scene_id, frames[v], vocabulary_size)
        frame = cache[v]
        embeddings.append(frame.embeddings[sp])
        phrases.append(int(frame.categories[sp - 1]))
    dim = next(iter(cache.values())).embeddings.shape[1] if cache else 0
    stacked = np.stack(embeddings).astype(np.float32) if embeddings else np.zeros((0, dim), np.float32)
    return local.astype(np.int64), stacked, np.asarray(phrases, np.int64)


class TmpCollate(NumpyBatchCollateFn):
    """Ray Data collate for TMP (thread-safe; seeded per seed, epoch and scene)."""

    def __init__(self, grid: GridConfig, in_channels: int, augment: AugmentConfig | None, seed: int, epoch: int,
                 segments: str, vocabulary_size: int):  # fmt: skip
        self.grid, self.in_channels, self.augment, self.seed, self.epoch = grid, in_channels, augment, seed, epoch
        self.segments, self.vocabulary_size = segments, vocabulary_size

    def sample(self, row: dict) -> dict[str, np.ndarray]:
        scene_id = str(row["scene_id"])
        xyz, rgb, _ = load_points(str(row["points_uri"]))
        view, point, superpixel, meta = read_pairs(str(row["pairs_uri"]))
        if point.size and int(point.max()) >= xyz.shape[0]:
            raise InputError(f"{row['pairs_uri']}: pairs name point {int(point.max())} of {xyz.shape[0]} (a stale lift)")
        local, embeddings, phrases = scene_superpixels(self.segments, scene_id, list(meta.get("frames", [])), view,
                                                       superpixel, self.vocabulary_size)  # fmt: skip
        rng = sample_rng(self.seed, self.epoch, scene_id)
        scene = network_input(xyz, rgb, self.grid, self.in_channels, self.augment, rng, training=True)
        return {"coords": scene.voxel_coords, "feats": scene.feats, "pair_point": scene.inverse[point],
                "pair_superpixel": local, "mask_embeddings": embeddings, "phrases": phrases}  # fmt: skip

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        samples = [self.sample({k: batch[k][i] for k in batch}) for i in range(len(batch["scene_id"]))]
        voxel_offsets = np.cumsum([0] + [len(s["coords"]) for s in samples[:-1]])
        sp_offsets = np.cumsum([0] + [len(s["phrases"]) for s in samples[:-1]])
        return {
            "coords": torch.from_numpy(batch_voxels([s["coords"] for s in samples])),
            "feats": torch.from_numpy(np.concatenate([s["feats"] for s in samples])),
            "num_scenes": torch.tensor(len(samples), dtype=torch.int64),
            "pair_point": torch.from_numpy(np.concatenate([s["pair_point"] + o for s, o in zip(samples, voxel_offsets)])),
            "pair_superpixel": torch.from_numpy(
                np.concatenate([s["pair_superpixel"] + o for s, o in zip(samples, sp_offsets)])
            ),
            "mask_embeddings": torch.from_numpy(np.concatenate([s["mask_embeddings"] for s in samples])),
            "phrases": torch.from_numpy(np.concatenate([s["phrases"] for s in samples])),
        }
