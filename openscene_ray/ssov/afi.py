"""AFI (Approximate Flat Interaction): SSOV's training-free spatial post-process of per-point labels
(pure numpy; seed facts §3.6). Evaluation runs it as an option on any mode's predictions.

1. Ground near the ego vehicle (label sets with ground classes, i.e. nuScenes; the points in the
   sensor frame, z up): candidates at horizontal distance ``d`` in (2, 5) m with z < -1.4 m; a
   RANSAC plane z = a·x + b·y + c (10 samples per trial, residual 0.1 m, 20 trials, seeded) gives
   the "round ground" inliers. Those and every point with d ≤ 2 m give no evidence below.
2. Optional (``mix_pseudo``; off, as in the reference): replace a prediction by the 2D
   pseudo-label with probability p = β e^(−d/T) / (1 + β e^(−d/T)), T = same_p_distance / ln β,
   where the pseudo-label is a "thing" class (below ``mix_max_class``).
3. One-hot labels (the K classes after a "no label" slot; unknown points give no evidence) are
   smoothed by the non-parametric network of :mod:`.afi_nn`.
4. Round-ground points keep only the ground classes. The label is the argmax; the "no label" slot
   winning (no evidence at all) gives an unknown point.

Without ground classes (indoor sets) steps 1 and 4 are skipped and every point votes.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import Field

from openscene_ray.kernel.config import StrictModel
from openscene_ray.kernel.scene import UNKNOWN_LABEL
from openscene_ray.ssov.afi_nn import smooth_labels

__all__ = ["AFIConfig", "AFIResult", "apply_afi", "ground_plane_inliers"]


class AFIConfig(StrictModel):
    """AFI's parameters; the defaults are SSOV's (``annotation_free_*.yaml``)."""

    ground_min_distance: float = Field(2.0, ge=0, description="metres from the sensor axis (d > this)")
    ground_max_distance: float = Field(5.0, gt=0, description="del_max_distance: d < this")
    ground_max_z: float = Field(-1.4, description="candidates lie below this height (sensor frame)")
    ransac_min_samples: int = Field(10, ge=3)
    ransac_residual: float = Field(0.1, gt=0)
    ransac_trials: int = Field(20, ge=1)
    seed: int = 42
    mix_pseudo: bool = Field(False, description="if_ovseg: mix in 2D pseudo-labels near the sensor")
    beta: float = Field(4.0, gt=1)
    same_p_distance: float = Field(20.0, gt=0, description="metres where the mixing probability is 0.5")
    mix_max_class: int = Field(10, ge=0, description="pseudo-labels below this class are mixed (things)")
    points: int = Field(4096, ge=3)
    stages: int = Field(4, ge=1)
    k: int = Field(20, ge=2)
    de_k: int = Field(6, ge=1)
    alpha: int = Field(0, ge=0)
    directions: int = Field(20, ge=2, description="beta2: Fibonacci-sphere directions")
    gamma: float = Field(0.995, gt=0, lt=1, description="|cos| of 'the same line' (about 5.7°)")
    delta: int = Field(3, ge=2, description="downsampling ratio between levels")


class AFIResult:
    """AFI's output for one scene: the refined labels, the ground inliers and the changed fraction."""

    def __init__(self, labels: np.ndarray, ground: np.ndarray, changed: float):
        self.labels = labels  # int64 [N], UNKNOWN_LABEL where no evidence
        self.ground = ground  # bool [N]: the round-ground inliers
        self.changed = changed  # fraction of points whose label changed


def ground_plane_inliers(xyz: np.ndarray, config: AFIConfig) -> np.ndarray:
    """bool ``[N]``: the RANSAC ground-plane inliers among the near-ego candidates (step 1)."""
    d = np.hypot(xyz[:, 0], xyz[:, 1])
    candidates = np.flatnonzero((d > config.ground_min_distance) & (d < config.ground_max_distance)
                                & (xyz[:, 2] < config.ground_max_z))  # fmt: skip
    inliers = np.zeros(xyz.shape[0], bool)
    if candidates.size < config.ransac_min_samples:
        return inliers
    a = np.concatenate([xyz[candidates, :2], np.ones((candidates.size, 1))], axis=1).astype(np.float64)
    z = xyz[candidates, 2].astype(np.float64)
    rng = np.random.default_rng(config.seed)
    best, best_count = None, -1
    for _ in range(config.ransac_trials):
        sample = rng.choice(candidates.size, config.ransac_min_samples, replace=False)
        coef = np.linalg.lstsq(a[sample], z[sample], rcond=None)[0]
        mask = np.abs(a @ coef - z) <= config.ransac_residual
        if mask.sum() > best_count:
            best, best_count = mask, int(mask.sum())
    inliers[candidates[best]] = True
    return inliers


def _mix_pseudo(labels: np.ndarray, pseudo: np.ndarray, d: np.ndarray, config: AFIConfig) -> np.ndarray:
    temperature = config.same_p_distance / math.log(config.beta)
    odds = config.beta * np.exp(-d / temperature)
    p = odds / (1.0 + odds) * (pseudo >= 0)
    take = (np.random.default_rng(config.seed).random(labels.shape[0]) < p) & (pseudo >= 0) & (pseudo < config.mix_max_class)
    return np.where(take, pseudo, labels)


def apply_afi(
    xyz: np.ndarray, labels: np.ndarray, num_classes: int, ground_classes: tuple[int, ...] = (),
    config: AFIConfig | None = None, pseudo: np.ndarray | None = None,
) -> AFIResult:  # fmt: skip
    """AFI on one scan's labels (``[N]`` class ids, negative or ≥ ``num_classes`` = unknown)."""
    config = config or AFIConfig()
    xyz = np.asarray(xyz, np.float64)
    labels = np.asarray(labels, np.int64)
    known = (labels >= 0) & (labels < num_classes)
    d = np.hypot(xyz[:, 0], xyz[:, 1])
    vote = np.ones(xyz.shape[0], bool)
    ground = np.zeros(xyz.shape[0], bool)
    if ground_classes:
        ground = ground_plane_inliers(xyz, config)
        vote = ~ground & (d > config.ground_min_distance)
    seg = np.where(known, labels, -1)
    if config.mix_pseudo and pseudo is not None:
        seg = _mix_pseudo(seg, np.where((pseudo >= 0) & (pseudo < num_classes), pseudo, -1), d, config)
    features = np.zeros((xyz.shape[0], num_classes + 1))
    rows = np.flatnonzero((seg >= 0) & vote)
    features[rows, seg[rows] + 1] = 1.0
    out = smooth_labels(xyz, features, config.points, config.stages, config.k, config.de_k, config.alpha,
                        config.directions, config.gamma, config.delta)  # fmt: skip
    if ground.any():
        keep = np.zeros(num_classes + 1, bool)
        keep[[c + 1 for c in ground_classes]] = True
        out[ground] = out[ground] * keep
    best = out.argmax(axis=1)
    result = np.where(best > 0, best - 1, UNKNOWN_LABEL)
    return AFIResult(result, ground, float((result != seg).mean()) if seg.size else 0.0)
