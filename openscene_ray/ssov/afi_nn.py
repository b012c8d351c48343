"""AFI's non-parametric smoothing network (SSOV's ``Point_NN_Seg``, adapted from Point-NN), in numpy
(seed facts §3.6 step 3). Nothing is learned: label distributions are pooled along locally flat or
linear structure and propagated back to every point.

**Encoder**, ``stages`` levels with ``points // delta``, ``// delta`` ... centres (1365, 455, 151,
50 for 4096 and 3). Each level: farthest point sampling (from index 0) on the previous level, then
the ``k`` nearest previous-level points of every centre. Neighbour offsets are binned into
``directions`` Fibonacci-sphere directions (argmax cosine; the centre itself, at offset 0, falls
into bin 0 and is taken out of its count). Per bin: the mean offset, the count, and the sum of
the neighbours' features, normalised.

* Level 1: a bin's share is its count share (bins with ``count <= alpha`` dropped); influence 1.
* Later levels, the flatness test: a neighbour lies on the same line as a previous-level bin
  when the |cosine| between its direction and that bin's mean direction exceeds ``gamma``. Its
  weight is (Σ the centre's shares of bins on its line) × (Σ the neighbour's shares of bins on
  its line) × (the centre's forward and reverse collinear extents + the neighbour's) / (its
  distance + the centre's reverse extent + the neighbour's forward extent), zero unless both
  sides have a collinear bin; an extent is the largest length of a previous-level mean bin
  offset. Weights are normalised per centre and summed per bin into the shares; the influence is
  the unnormalised sum over the mean of all centres.
* Pooling: ``influence · Σ_b w_b f_b + 0.1 · own feature`` (+1e-8 · the neighbours' max),
  normalised, with ``w_b ∝ share_b / |mean offset_b|``.

**Decoder**, coarse to fine: each finer point takes its ``de_k`` nearest coarser points; a coarse
point counts with the shares of its bins (anti)parallel (|cos| > gamma) to the fine→coarse
direction; the new feature is ``normalise(Σ w f_coarse · W + c · mean(W) · f_own)`` with ``W`` the
point's total agreement and ``c = 0.3`` when the finer level has exactly ``delta`` times the
coarser one's points, else 0.01. "Normalise" divides by the sum (the L2 norm above 100 channels).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

__all__ = ["Level", "farthest_point_sample", "fibonacci_sphere", "smooth_labels"]


def fibonacci_sphere(samples: int) -> np.ndarray:
    """``[samples, 3]`` unit directions spread over the sphere (the golden-angle spiral)."""
    i = np.arange(samples, dtype=np.float64)
    y = 1.0 - i / max(samples - 1, 1) * 2.0
    radius = np.sqrt(np.clip(1.0 - y * y, 0.0, None))
    theta = math.pi * (3.0 - math.sqrt(5.0)) * i
    return np.stack([np.cos(theta) * radius, y, np.sin(theta) * radius], axis=1)


def farthest_point_sample(xyz: np.ndarray, count: int) -> np.ndarray:
    """Indices of ``count`` points chosen by farthest point sampling, starting from index 0."""
    n = xyz.shape[0]
    count = min(count, n)
    chosen = np.zeros(count, np.int64)
    distance = np.full(n, np.inf)
    current = 0
    for i in range(count):
        chosen[i] = current
        distance = np.minimum(distance, ((xyz - xyz[current]) ** 2).sum(axis=1))
        current = int(np.argmax(distance))
    return chosen


def _normalise(x: np.ndarray) -> np.ndarray:
    if x.shape[-1] > 100:
        return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    return x / (x.sum(axis=-1, keepdims=True) + 1e-9)


def _unit(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    length = np.linalg.norm(vectors, axis=-1)
    return vectors / (length[..., None] + 1e-8), length


@dataclass
class Level:
    """One level of the downsampled neighbourhood pyramid: centres and their pooled descriptors."""

    xyz: np.ndarray  # [C, 3] centres
    features: np.ndarray  # [C, F] pooled features
    share: np.ndarray  # [C, A] bin shares
    direction: np.ndarray  # [C, A, 3] mean offset per bin
    bin_features: np.ndarray  # [C, A, F]
    influence: np.ndarray  # [C]


def _flat_weights(prev: Level, centres: np.ndarray, knn: np.ndarray, unit: np.ndarray, dist: np.ndarray, gamma: float):
    """``[C, k]`` neighbour weights of a later level (the flatness test; module docstring)."""
    lc_unit, lc_len = _unit(prev.direction[centres])  # [C, A, 3], [C, A]
    nb_unit, nb_len = _unit(prev.direction[knn])  # [C, k, A, 3], [C, k, A]
    cos_lc = np.einsum("cks,cas->cka", unit, lc_unit)
    cos_nb = np.einsum("cks,ckas->cka", unit, nb_unit)
    fw_lc, rv_lc, fw_nb, rv_nb = cos_lc > gamma, -cos_lc > gamma, cos_nb > gamma, -cos_nb > gamma
    share = (prev.share[centres][:, None, :] * (fw_lc | rv_lc)).sum(-1) * (prev.share[knn] * (fw_nb | rv_nb)).sum(-1)
    lc_d, lc_dr = (lc_len[:, None, :] * fw_lc).max(-1), (lc_len[:, None, :] * rv_lc).max(-1)
    nb_d, nb_dr = (nb_len * fw_nb).max(-1), (nb_len * rv_nb).max(-1)
    both = ((lc_d + lc_dr) != 0) & ((nb_d + nb_dr) != 0)
    extent = (lc_d + lc_dr + nb_d + nb_dr) * both / (dist + lc_dr + nb_d + 1e-8)
    return share * extent


def encode_level(xyz: np.ndarray, features: np.ndarray, prev: Level | None, centres_count: int, k: int,
                 sphere: np.ndarray, alpha: int, gamma: float) -> Level:  # fmt: skip
    """One encoder level over the previous level's points ``xyz`` / ``features``."""
    centres = farthest_point_sample(xyz, centres_count)
    k = min(k, xyz.shape[0])
    knn = cKDTree(xyz).query(xyz[centres], k=k)[1].reshape(len(centres), k)
    unit, dist = _unit(xyz[knn] - xyz[centres][:, None, :])
    bins = np.argmax(unit @ sphere.T, axis=-1)  # [C, k]; the zero offset of the centre itself -> bin 0
    onehot = np.eye(len(sphere))[bins]  # [C, k, A]
    counts = onehot.sum(1)
    counts[:, 0] -= 1
    direction = np.einsum("cka,cks->cas", onehot, xyz[knn] - xyz[centres][:, None, :]) / (counts + 1e-8)[..., None]
    bin_features = _normalise(np.einsum("cka,ckf->caf", onehot, features[knn]))
    if prev is None:
        kept = counts * (counts > alpha)
        share, influence = kept / (kept.sum(-1, keepdims=True) + 1e-8), np.ones(len(centres))
    else:
        weights = _flat_weights(prev, centres, knn, unit, dist, gamma)
        total = weights.sum(-1)
        share = np.einsum("ck,cka->ca", weights / (total + 1e-7)[:, None], onehot)
        influence = total / (total.mean() + 1e-8)
    pool = _normalise(share / (np.linalg.norm(direction, axis=-1) + 1e-8))
    pooled = influence[:, None] * np.einsum("ca,caf->cf", pool, bin_features) + 0.1 * features[centres]
    pooled = _normalise(pooled + 1e-8 * features[knn].max(axis=1))
    return Level(xyz[centres], pooled, share, direction, bin_features, influence)


def propagate(fine_xyz: np.ndarray, fine_features: np.ndarray, coarse: Level, coarse_features: np.ndarray,
              de_k: int, gamma: float, delta: int) -> np.ndarray:  # fmt: skip
    """One decoder step: the coarse level's features onto the finer points (module docstring)."""
    de_k = min(de_k, coarse.xyz.shape[0])
    idx = cKDTree(coarse.xyz).query(fine_xyz, k=de_k)[1].reshape(len(fine_xyz), de_k)
    unit, _ = _unit(coarse.xyz[idx] - fine_xyz[:, None, :])
    bin_unit, _ = _unit(coarse.direction[idx])  # [N, de_k, A, 3]
    agree = np.abs(np.einsum("nds,ndas->nda", unit, bin_unit)) > gamma
    weight = (agree * coarse.share[idx]).sum(-1)  # [N, de_k]
    total = weight.sum(-1) + 1e-8
    weight = weight / total[:, None] + 1e-6 + 1e-10
    weight = weight / (weight.sum(-1, keepdims=True) + 1e-8)
    interpolated = np.einsum("nd,ndf->nf", weight, coarse_features[idx])
    own = 0.3 if fine_xyz.shape[0] == delta * coarse.xyz.shape[0] else 0.01
    return _normalise(interpolated * total[:, None] + (1e-8 + own * total.mean()) * fine_features)


def smooth_labels(xyz: np.ndarray, features: np.ndarray, points: int = 4096, stages: int = 4, k: int = 20,
                  de_k: int = 6, alpha: int = 0, directions: int = 20, gamma: float = 0.995,
                  delta: int = 3) -> np.ndarray:  # fmt: skip
    """The smoothed ``[N, F]`` label distributions of points ``xyz`` with input ``features``."""
    xyz = np.asarray(xyz, np.float64)
    x = np.asarray(features, np.float64)
    sphere = fibonacci_sphere(directions)
    levels, inputs, group, prev = [], [], points, None
    level_xyz = xyz
    for _ in range(stages):
        group //= delta
        if group < 1:
            break
        inputs.append((level_xyz, x))
        prev = encode_level(level_xyz, x, prev, group, k, sphere, alpha, gamma)
        levels.append(prev)
        level_xyz, x = prev.xyz, prev.features
    for level, (fine_xyz, fine_x) in zip(reversed(levels), reversed(inputs)):
        x = propagate(fine_xyz, fine_x, level, x, de_k, gamma, delta)
    return x
