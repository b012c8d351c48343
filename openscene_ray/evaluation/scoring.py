"""Per-scene zero-shot scoring shared by Train-time validation and the evaluation job.

Validation during distillation and the final evaluation call the same function with the same
prompts and label set, which removes the reference's mismatch between the two.
"""

from __future__ import annotations

import numpy as np
import torch

from openscene_ray.evaluation.metrics import EvalCounts
from openscene_ray.evaluation.predict import labels_from_logits, mode_logits
from openscene_ray.kernel.text import TextSpace
from openscene_ray.models.augment import AugmentConfig
from openscene_ray.models.inference import distill_features

__all__ = ["scene_counts"]


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
