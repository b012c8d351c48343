"""Multi-view consistency of dense 2D features, measured with known geometry (pure torch).

Two views of a scene see the same 3D point at two pixels: the fusion stage's visibility
(:func:`openscene_ray.fusion.core.visible_points`: projection, cut bound and the relative depth test
against each view's depth map) gives, for every pair of views, the points both see and their
pixels. A backbone is consistent when its features at the two pixels agree: the score is the mean
cosine similarity over all such pixel pairs. Its baseline is the same pixels paired at random
(each pixel of one view with the pixel of another point in the other view): features that only
grew more alike everywhere raise both. Features are read at the pixels from the token grid by
bilinear interpolation, which equals upsampling the map to the view's size
(``align_corners=False``) and reading the pixel.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import numpy as np
import torch
import torch.nn.functional as F

from openscene_ray.fusion.core import FusionParams, visible_points
from openscene_ray.kernel.scene import View

__all__ = ["correspondences", "pair_cosine", "sample_features", "scene_consistency"]


def correspondences(xyz: torch.Tensor, a: View, b: View, params: FusionParams) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat pixels ``(in a, in b)`` of the points (float64 ``[N, 3]``) both views see."""
    idx_a, pix_a = visible_points(xyz, a, params)
    idx_b, pix_b = visible_points(xyz, b, params)
    _, where_a, where_b = np.intersect1d(idx_a.cpu().numpy(), idx_b.cpu().numpy(), assume_unique=True,
                                         return_indices=True)  # fmt: skip
    return pix_a[torch.from_numpy(where_a)], pix_b[torch.from_numpy(where_b)]


def sample_features(tokens: torch.Tensor, pixels: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """``[K, D]`` features of a ``[D, h, w]`` token map at flat pixels of a ``width x height`` view."""
    u = (pixels % width).to(tokens.dtype)
    v = torch.div(pixels, width, rounding_mode="floor").to(tokens.dtype)
    grid = torch.stack([(u + 0.5) / width * 2 - 1, (v + 0.5) / height * 2 - 1], dim=-1).to(tokens.device)
    out = F.grid_sample(tokens[None], grid[None, None], mode="bilinear", padding_mode="border", align_corners=False)
    return out[0, :, 0].T


def pair_cosine(tokens_a, tokens_b, pix_a, pix_b, a: View, b: View) -> torch.Tensor:
    """Cosine similarity ``[K]`` of two views' features at corresponding pixels."""
    fa = sample_features(tokens_a, pix_a, a.width, a.height)
    fb = sample_features(tokens_b, pix_b, b.width, b.height)
    return F.cosine_similarity(fa, fb, dim=-1)


def scene_consistency(xyz: np.ndarray, views: Sequence[View], tokens: Sequence[torch.Tensor], params: FusionParams,
                      max_pairs: int = 2000, seed: int = 0) -> tuple[float, float, int]:  # fmt: skip
    """``(sum of cosines, sum of shuffled-pair cosines, number of pixel pairs)`` over every pair of
    views of one scene, at most ``max_pairs`` seeded pixel pairs per view pair."""
    xyz_t = torch.as_tensor(np.asarray(xyz, np.float64))
    rng = np.random.default_rng(seed)
    total, shuffled, count = 0.0, 0.0, 0
    for i, j in combinations(range(len(views)), 2):
        pix_a, pix_b = correspondences(xyz_t, views[i], views[j], params)
        if pix_a.numel() == 0:
            continue
        if pix_a.numel() > max_pairs:
            keep = torch.from_numpy(np.sort(rng.choice(pix_a.numel(), max_pairs, replace=False)))
            pix_a, pix_b = pix_a[keep], pix_b[keep]
        cosine = pair_cosine(tokens[i], tokens[j], pix_a, pix_b, views[i], views[j])
        permuted = pix_b[torch.from_numpy(rng.permutation(pix_b.numel()))]
        shuffled += float(pair_cosine(tokens[i], tokens[j], pix_a, permuted, views[i], views[j]).sum())
        total += float(cosine.sum())
        count += int(cosine.numel())
    return total, shuffled, count
