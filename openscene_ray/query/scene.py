"""A scene's per-point features from one source, scored against queries and drawn as heatmaps.

Sources:

* ``fusion``: the fused output's shard (points no view saw have no feature: grey in heatmaps);
* ``distill``: the 3D checkpoint run on the points (every point);
* ``ensemble``: per point the more confident of the two over the label set's prompts, the rule
  the evaluation uses.

The score of a point is the cosine between its feature and the query embedding. Heatmaps use
:func:`~openscene_ray.kernel.visual.heatmap_colors` (blue = low, yellow = high) scaled to each
query's own min..max over the scene.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from openscene_ray.evaluation.metrics import MODES, Mode
from openscene_ray.kernel import storage
from openscene_ray.kernel.errors import InputError
from openscene_ray.kernel.manifest import SceneRecord, load_points
from openscene_ray.kernel.text import TextSpaceConfig
from openscene_ray.query.database import cosine_scores

__all__ = ["SceneFeatures", "load_scene_features", "write_heatmaps"]


@dataclass
class SceneFeatures:
    """A scene's points and one source's per-point features (zero rows where ``mask`` is false)."""

    scene_id: str
    xyz: np.ndarray  # float32 [N, 3]
    rgb: np.ndarray  # uint8 [N, 3]
    labels: np.ndarray  # int16 [N]
    features: np.ndarray  # [N, C]
    mask: np.ndarray  # bool [N]
    source: str
    text_model: str | None

    def scores(self, queries: np.ndarray) -> np.ndarray:
        """float32 ``[Q, N]`` cosine of each point to each query; NaN where there is no feature."""
        scores = cosine_scores(self.features, queries).T.copy()
        scores[:, ~self.mask] = np.nan
        return scores


def load_scene_features(record: SceneRecord, source: Mode = "fusion", *, fused: str | None = None,
                        checkpoint: str | None = None, text: TextSpaceConfig | None = None,
                        device: str = "cpu") -> SceneFeatures:
    """Points plus per-point features of ``source`` (see the module docstring). ``ensemble``
    needs ``text`` (the label set whose prompts decide between 2D and 3D)."""
    if source not in MODES:
        raise InputError(f"unknown feature source {source!r}; expected one of {', '.join(MODES)}")
    missing = [what for what, needed, given in (
        ("the fused output", source in ("fusion", "ensemble"), fused),
        ("a checkpoint", source in ("distill", "ensemble"), checkpoint),
        ("the text space config (its label set's prompts)", source == "ensemble", text),
    ) if needed and given is None]  # fmt: skip
    if missing:  # checked before any points, shards or network are loaded
        raise InputError(f"source {source!r} needs {' and '.join(missing)}")
    xyz, rgb, labels = load_points(record.points_uri)
    n = len(xyz)
    f2d = has2d = f3d = None
    text_model = None
    if source in ("fusion", "ensemble"):
        from openscene_ray.kernel.features import read_features, shard_uri

        shard = read_features(shard_uri(fused, record.scene_id))
        f2d, has2d = shard.dense(n)
        text_model = shard.metadata.get("text_model")
    if source in ("distill", "ensemble"):
        from openscene_ray.models.checkpoint import load_checkpoint
        from openscene_ray.models.inference import distill_features

        model, _, meta = load_checkpoint(checkpoint, device)
        f3d = distill_features(model, xyz, meta.voxel_size, rgb)
        if text_model is not None and text_model != meta.text_model:
            raise InputError(f"the fusion shard ({text_model!r}) and the checkpoint ({meta.text_model!r}) were "
                             "made for different text models: their ensemble is meaningless")
        text_model = meta.text_model
    if source == "fusion":
        features, mask = f2d, has2d
    elif source == "distill":
        features, mask = f3d.cpu().numpy(), np.ones(n, bool)
    else:
        from openscene_ray.evaluation.predict import ensemble
        from openscene_ray.kernel.text import build_text_space

        space = build_text_space(text)
        features, mask = ensemble(f2d, has2d, f3d, space.embeddings)[0].cpu().numpy(), np.ones(n, bool)
    return SceneFeatures(record.scene_id, xyz, rgb, labels, features, mask, source, text_model)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[:80] or "query"


def write_heatmaps(scene: SceneFeatures, scores: np.ndarray, names: Sequence[str], output: str,
                   view="top", size: int = 800) -> list[dict[str, Any]]:
    """Per query: ``<output>/<nn>_<name>.ply`` coloured blue→yellow by score (grey: no feature) and
    a ``.png`` rendering of it; returns one summary dict per query."""
    from openscene_ray.kernel.ply import write_ply
    from openscene_ray.kernel.visual import heatmap_colors, render_points_png

    results = []
    for q, name in enumerate(names):
        colors = heatmap_colors(scores[q])
        stem = storage.join(output, f"{q:02d}_{_slug(name)}")
        write_ply(stem + ".ply", scene.xyz, colors)
        render_points_png(scene.xyz, colors, stem + ".png", width=size, height=size, view=view)
        finite = np.isfinite(scores[q])
        best = int(np.nanargmax(scores[q])) if finite.any() else None
        results.append({
            "query": name, "ply": stem + ".ply", "png": stem + ".png",
            "max": float(scores[q][best]) if best is not None else None,
            "mean": float(scores[q][finite].mean()) if finite.any() else None,
            "best_point": best, "points_with_feature": int(finite.sum()),
        })  # fmt: skip
    return results
