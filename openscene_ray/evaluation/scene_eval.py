"""Per-scene zero-shot scoring shared by Train-time validation and the evaluation job.

Validation during distillation and the final evaluation call the same functions with the same
prompts and label set, which removes the reference's mismatch between the two.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from openscene_ray.evaluation.metrics import EvalCounts
from openscene_ray.evaluation.predict import labels_from_logits, mode_logits
from openscene_ray.kernel.labels import get_label_set
from openscene_ray.kernel.text import build_text_encoder
from openscene_ray.models.augment import AugmentConfig, augment_points
from openscene_ray.models.voxelize import voxelize

__all__ = ["TextSpace", "build_text_space", "distill_features", "input_features", "scene_counts"]


@dataclass(frozen=True)
class TextSpace:
    """The prompts of a label set embedded by one text encoder."""

    label_set: str
    prompts: tuple[str, ...]
    embeddings: np.ndarray  # float32 [P, C], L2-normalised
    prompt_to_class: tuple[int, ...]
    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def build_text_space(
    label_set: str, text_encoder: str, text_options: dict | None = None, openscene_compat: bool = False
) -> TextSpace:
    """Embed ``label_set``'s prompts (the reference's "other" substitution only under compat)."""
    labels = get_label_set(label_set)
    prompts = labels.prompts(openscene_compat=openscene_compat)
    embeddings = build_text_encoder(text_encoder, **(text_options or {})).encode(prompts)
    return TextSpace(label_set, tuple(prompts), embeddings, tuple(labels.prompt_to_class()), labels.class_names)


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


@torch.no_grad()
def distill_features(
    model,
    xyz: np.ndarray,
    voxel_size: float,
    rgb: np.ndarray | None = None,
    rng: np.random.Generator | None = None,
    augment: AugmentConfig | None = None,
) -> torch.Tensor:
    """The 3D network's per-point features ``[N, C]`` (voxel features mapped back to points).

    With ``rng`` and an ``augment`` config whose ``test_time_augmentation`` is on, the points are
    randomly rotated/scaled first (the reference's test-time augmentation); otherwise deterministic.
    """
    device = next(model.parameters()).device
    points = augment_points(xyz, rng, augment, training=False) if rng is not None else xyz
    voxel_coords, rep_index, inverse = voxelize(points, voxel_size)
    in_channels = model.config.in_channels
    feats = input_features(None if rgb is None else rgb[rep_index], len(rep_index), in_channels)
    coords = np.concatenate([np.zeros((len(voxel_coords), 1), np.int32), voxel_coords], axis=1)
    out = model(torch.from_numpy(coords).to(device), torch.from_numpy(feats).to(device), batch_size=1)
    return out[torch.from_numpy(inverse).to(device)].float()


def scene_counts(
    mode: str,
    labels: np.ndarray,
    text: TextSpace,
    *,
    f2d: np.ndarray | None = None,
    has2d: np.ndarray | None = None,
    model=None,
    xyz: np.ndarray | None = None,
    rgb: np.ndarray | None = None,
    voxel_size: float | None = None,
    tta_repeats: int = 1,
    tta_seed: int | None = None,
    augment: AugmentConfig | None = None,
    f3d: torch.Tensor | None = None,
) -> EvalCounts:
    """One scene's confusion counts for ``mode`` (fusion / distill / ensemble).

    Logits are summed over ``tta_repeats`` passes; repeats after the first rotate/scale the
    points with a generator seeded by ``tta_seed`` (deterministic given the seed). ``f3d``: the
    first, deterministic pass's 3D features when the caller already has them (one network pass
    then serves several modes and the saved outputs).
    """
    needs_3d = mode in ("distill", "ensemble")
    if needs_3d and (model is None or xyz is None or voxel_size is None):
        raise ValueError(f"{mode} mode needs the 3D model, the points and the voxel size")
    rng = np.random.default_rng(tta_seed) if tta_repeats > 1 else None
    tta = (augment or AugmentConfig()).model_copy(update={"test_time_augmentation": True})
    total = known = None
    for repeat in range(tta_repeats if needs_3d else 1):
        features_3d = None
        if needs_3d:
            reuse = repeat == 0 and f3d is not None
            features_3d = f3d if reuse else distill_features(model, xyz, voxel_size, rgb, rng if repeat else None, tta)
        logits, known = mode_logits(mode, text.embeddings, f2d=f2d, has2d=has2d, f3d=features_3d)
        total = logits if total is None else total + logits
    pred = labels_from_logits(total, known, text.prompt_to_class, text.num_classes)
    return EvalCounts.from_predictions(pred.cpu().numpy(), labels, text.num_classes)
