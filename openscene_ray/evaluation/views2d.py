"""The ``2d`` evaluation mode: the 2D model's own per-view predictions, projected to the points.

Each view is run through the 2D extractor the fused shards were made with; every point the view
sees (the fusion's own visibility rule: :func:`~openscene_ray.fusion.core.visible_points`) gets
the class of its pixel's feature. Every (point, view) pair is one sample, so the mode scores the
2D model per view on exactly the points the fusion averages over, and fusion's gain over it is
the gain of averaging views. As in fusion mode, a point that no view sees counts once as unknown
(wrong in the accuracy, left out of the IoU).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from openscene_ray.evaluation.metrics import UNKNOWN, EvalCounts
from openscene_ray.evaluation.predict import labels_from_logits, text_logits
from openscene_ray.fusion.core import FusionParams, visible_points
from openscene_ray.kernel.scene import View
from openscene_ray.kernel.text import TextSpace

__all__ = ["ViewPredictions", "per_view_counts", "shard_extractor", "shard_fusion_params", "view_predictions"]


@dataclass(frozen=True)
class ViewPredictions:
    """One view's predictions: ``points`` (indices of the points it sees) and their ``classes``."""

    points: np.ndarray  # int64 [K]
    classes: np.ndarray  # int64 [K]


def view_predictions(xyz: np.ndarray, view: View, extractor, params: FusionParams, text: TextSpace) -> ViewPredictions:
    """The class the 2D model gives each point ``view`` sees (the pixel it projects to)."""
    points, pixels = visible_points(torch.from_numpy(np.asarray(xyz, np.float64)), view, params)
    if points.numel() == 0:
        return ViewPredictions(np.zeros(0, np.int64), np.zeros(0, np.int64))
    with torch.no_grad():
        features = extractor.extract([view], view.height, view.width)[0]
    picked = features.reshape(-1, features.shape[-1])[pixels.to(features.device)].float()
    logits = text_logits(picked, text.embeddings)
    classes = labels_from_logits(logits, None, text.prompt_to_class, text.num_classes)
    return ViewPredictions(points.cpu().numpy(), classes.cpu().numpy())


def per_view_counts(
    xyz: np.ndarray, labels: np.ndarray, views: Sequence[View], extractor, params: FusionParams, text: TextSpace
) -> tuple[EvalCounts, float]:
    """``(counts over every (point, view) pair plus the unseen points as unknown, coverage)``:
    coverage is the fraction of points that at least one view sees."""
    labels = np.asarray(labels)
    counts = EvalCounts.zeros(text.num_classes)
    seen = np.zeros(len(labels), bool)
    for view in views:
        found = view_predictions(xyz, view, extractor, params, text)
        counts = counts + EvalCounts.from_predictions(found.classes, labels[found.points], text.num_classes)
        seen[found.points] = True
    unseen = labels[~seen]
    counts = counts + EvalCounts.from_predictions(np.full(len(unseen), UNKNOWN), unseen, text.num_classes)
    return counts, float(seen.mean()) if len(seen) else 0.0


def shard_extractor(metadata: dict, device: str):
    """The 2D extractor a fused shard was made with (its recorded name and options) on ``device``."""
    from openscene_ray.extractors import build_extractor

    recorded = metadata.get("extractor") or {}
    if "name" not in recorded:
        raise ValueError("the fused shard does not record its extractor (fused by an older version): re-run fuse")
    options = dict(recorded.get("options") or {}) | {"device": device}
    return build_extractor(recorded["name"], **options)


def shard_fusion_params(metadata: dict) -> FusionParams:
    """The visibility rule a fused shard was made with."""
    fusion = metadata.get("fusion") or {}
    return FusionParams(cut_bound=int(fusion.get("cut_bound", 0)), visibility_threshold=fusion.get("visibility_threshold"),
                        depth_test=bool(fusion.get("depth_test", True)))  # fmt: skip
