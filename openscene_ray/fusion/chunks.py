"""Reference-style training chunks: a few random point subsets per scene (eval keeps all points)."""

from __future__ import annotations

import numpy as np

__all__ = ["chunk_masks", "random_chunks"]


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


def chunk_masks(chunks: list[np.ndarray], seen: np.ndarray) -> list[np.ndarray]:
    """Per chunk, the bool mask over all points of the chunk's points that have a fused feature."""
    masks = []
    for chunk in chunks:
        mask = np.zeros(seen.shape[0], dtype=bool)
        mask[chunk] = True
        masks.append(mask & seen)
    return masks
