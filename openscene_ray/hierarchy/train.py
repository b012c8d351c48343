"""Per-scene training of the feature field from one view's mask hierarchy per step (pure torch).

A step draws one view, ``samples_per_step`` of its visible (point, pixel) samples, the masks'
memberships of those pixels and the training pairs (:mod:`.sampling`); the field's features of
the samples' points give the Euclidean and the ultrametric contrastive losses and the norm
regulariser, weighted by the config. Adam (eps 1e-15) with a cosine decay from ``lr`` to
``lr * lr_final_ratio``, as the original.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from openscene_ray.hierarchy.config import TrainConfig
from openscene_ray.hierarchy.field import FeatureField
from openscene_ray.hierarchy.losses import (
    contrastive_loss,
    cosine_similarity,
    norm_loss,
)
from openscene_ray.hierarchy.sampling import kept_masks, sample_pairs
from openscene_ray.hierarchy.ultrametric import ultrametric_similarity

__all__ = ["TrainStats", "TrainingView", "pick_device", "train_field"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingView:
    """One view's visible samples and masks: ``points``/``pixels`` int64 [K] (flat ``v * W + u``),
    ``masks`` bool [M, H * W], ``inside`` bool [M, M]."""

    frame_id: str
    points: np.ndarray
    pixels: np.ndarray
    masks: np.ndarray
    inside: np.ndarray
    width: int


@dataclass
class TrainStats:
    steps: int = 0
    skipped_steps: int = 0  # steps whose view had no usable mask among its samples
    seconds: float = 0.0
    losses: dict[str, list[float]] = field(default_factory=dict)

    def summary(self, window: int = 50) -> dict[str, float | int]:
        """Steps, seconds and each loss averaged over the first and the last ``window`` steps."""
        out: dict[str, float | int] = {"steps": self.steps, "skipped_steps": self.skipped_steps,
                                       "seconds": round(self.seconds, 2)}  # fmt: skip
        for name, values in self.losses.items():
            if values:
                out[f"{name}_first"] = round(float(np.mean(values[:window])), 5)
                out[f"{name}_last"] = round(float(np.mean(values[-window:])), 5)
        return out


def pick_device(choice: str) -> torch.device:
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def _step_losses(field_: FeatureField, unit_xyz: torch.Tensor, view: TrainingView, config: TrainConfig,
                 rng: np.random.Generator) -> dict[str, torch.Tensor] | None:  # fmt: skip
    """The weighted losses of one step on ``view`` (None when no mask is usable)."""
    count = min(config.samples_per_step, len(view.points))
    chosen = rng.choice(len(view.points), size=count, replace=False)
    pixels = view.pixels[chosen]
    sample_masks = view.masks[:, pixels]
    keep = kept_masks(sample_masks, config.min_mask_samples)
    pairs = sample_pairs(sample_masks, view.inside, rng, config.pairs_per_mask, config.negative_ratio,
                         config.hierarchical_sampling, config.min_mask_samples)  # fmt: skip
    if pairs.groups == 0:
        return None
    index = torch.as_tensor(view.points[chosen], device=unit_xyz.device)
    features, norms = field_(unit_xyz[index])
    losses = {"norm": config.norm_weight * norm_loss(norms)}
    if config.euclidean_weight:
        positive = cosine_similarity(features, pairs.positives)
        negative = cosine_similarity(features, pairs.negatives)
        losses["euclidean"] = config.euclidean_weight * contrastive_loss(positive, negative, config.temperature)
    if config.ultrametric_weight:
        uv = np.stack([pixels % view.width, pixels // view.width], axis=1).astype(np.float64)
        both = np.concatenate([pairs.positives.reshape(-1, 2), pairs.negatives.reshape(-1, 2)])
        similarity = ultrametric_similarity(features, uv, sample_masks[keep], both, config.graph_neighbours,
                                            config.boundary_penalty)  # fmt: skip
        split = pairs.positives.shape[0] * pairs.positives.shape[1]
        positive = similarity[:split].reshape(pairs.positives.shape[:2])
        negative = similarity[split:].reshape(pairs.negatives.shape[:2])
        losses["ultrametric"] = config.ultrametric_weight * contrastive_loss(positive, negative, config.temperature)
    return losses


def _optimisers(field_: FeatureField, config: TrainConfig, mlp_lr_scale: float = 1.0) -> list[torch.optim.Optimizer]:
    """Adam (eps 1e-15) for the field; a sparse hash table gets SparseAdam (same lr and betas); the
    MLP's learning rate is ``lr * mlp_lr_scale``."""
    table = field_.encoding.table
    rest = [p for p in field_.parameters() if p is not table]
    mlp = torch.optim.Adam(rest, lr=config.lr * mlp_lr_scale, eps=1e-15)
    if not field_.encoding.sparse:
        return [torch.optim.Adam([table], lr=config.lr, eps=1e-15), mlp]
    return [torch.optim.SparseAdam([table], lr=config.lr, eps=1e-15), mlp]


def train_field(
    field_: FeatureField,
    unit_xyz: np.ndarray,
    views: list[TrainingView],
    config: TrainConfig,
    device: torch.device,
    log_every: int = 200,
    mlp_lr_scale: float = 1.0,
) -> TrainStats:
    """Train ``field_`` in place on ``views`` (points in the unit cube: ``unit_xyz`` float32 [N, 3])."""
    usable = [v for v in views if len(v.points) and len(v.masks)]
    if not usable:
        raise ValueError("no view has both visible points and masks to train on")
    field_.to(device).train()
    optimisers = _optimisers(field_, config, mlp_lr_scale)
    schedules = [
        torch.optim.lr_scheduler.CosineAnnealingLR(o, config.steps, o.param_groups[0]["lr"] * config.lr_final_ratio)
        for o in optimisers
    ]
    points = torch.as_tensor(unit_xyz, device=device)
    rng = np.random.default_rng(config.seed)
    stats, start = TrainStats(), time.perf_counter()
    for step in range(config.steps):
        losses = _step_losses(field_, points, usable[int(rng.integers(len(usable)))], config, rng)
        if losses is None:
            stats.skipped_steps += 1
        else:
            total = sum(losses.values())
            for optimiser in optimisers:
                optimiser.zero_grad(set_to_none=True)
            total.backward()
            for optimiser in optimisers:
                optimiser.step()
            for name, value in [*losses.items(), ("total", total)]:
                stats.losses.setdefault(name, []).append(float(value.detach()))
        for schedule in schedules:
            schedule.step()
        stats.steps = step + 1
        if log_every and (step + 1) % log_every == 0 and stats.losses.get("total"):
            log.info("step %d/%d: loss %.4f", step + 1, config.steps, np.mean(stats.losses["total"][-log_every:]))
    stats.seconds = time.perf_counter() - start
    field_.eval()
    return stats
