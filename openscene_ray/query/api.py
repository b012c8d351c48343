"""Queries from code: embed texts or images, score a scene's points, draw heatmaps, search a database.

Queries live in the 2D model's embedding space. Texts go through the configured text encoder
(optionally a ``template`` such as ``"a {} in a scene"``, the evaluation prompts' form); images go
through the image tower of the same open_clip model (arch and checkpoint) as the text side, so an
image query is CLIP image-to-3D retrieval. Random CLIP weights are used only with
``random_init: true`` in the encoder options.

A scene's per-point features come from one of three sources:

* ``fusion``: the fusion job's shard (points no view saw have no feature: grey in heatmaps);
* ``distill``: the 3D checkpoint run on the points (every point);
* ``ensemble``: per point the more confident of the two over the label set's prompts, the rule
  the evaluation uses.

The score of a point is the cosine between its feature and the query embedding. Heatmaps use
:func:`~openscene_ray.kernel.ply.heatmap_colors` (blue = low, yellow = high) scaled to each
query's own min..max over the scene.
"""

from __future__ import annotations

import io
import json
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import Field, model_validator

from openscene_ray.evaluation.job import TextSpaceConfig, check_text_model
from openscene_ray.evaluation.metrics import MODES, Mode
from openscene_ray.kernel import storage
from openscene_ray.kernel.config import StrictModel
from openscene_ray.kernel.manifest import SceneRecord, load_points, read_manifest
from openscene_ray.kernel.ray_runtime import DataContextConfig
from openscene_ray.query.database import SearchSettings, cosine_scores, search_database

__all__ = [
    "QueryConfig",
    "SceneFeatures",
    "cosine_scores",
    "embed_images",
    "embed_queries",
    "embed_texts",
    "load_scene_features",
    "query_names",
    "run_query",
    "write_heatmaps",
]

log = logging.getLogger(__name__)


def embed_texts(texts: Sequence[str], encoder: str, options: dict[str, Any] | None = None,
                template: str | None = None) -> np.ndarray:
    """float32 ``[Q, C]`` L2-normalised text embeddings (``template.format(text)`` when given)."""
    from openscene_ray.kernel.text import build_text_encoder

    prompts = [template.format(t) if template else t for t in texts]
    return build_text_encoder(encoder, **(options or {})).encode(prompts)


def _pil(image):
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, np.ndarray):
        return Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("RGB")
    return Image.open(io.BytesIO(storage.read_bytes(str(image)))).convert("RGB")


def embed_images(images: Sequence, options: dict[str, Any], device: str = "cpu") -> np.ndarray:
    """float32 ``[Q, C]`` L2-normalised CLIP image embeddings of ``images`` (URIs, PIL images or
    uint8 arrays) from the open_clip model that ``options`` (the ``open_clip`` text encoder's:
    arch, checkpoint or random_init, seed, quick_gelu, model_cache) names."""
    import open_clip
    import torch

    from openscene_ray.kernel.clip import load_clip_model, resolve_clip_weights

    weights = resolve_clip_weights(
        options.get("arch", "ViT-L-14-336"), options.get("checkpoint"), bool(options.get("random_init", False)),
        int(options.get("seed", 0)), options.get("quick_gelu"), options.get("model_cache"),
    )  # fmt: skip
    model = load_clip_model(weights, device)
    cfg = open_clip.get_model_preprocess_cfg(model)
    preprocess = open_clip.image_transform(
        cfg["size"], is_train=False, mean=cfg["mean"], std=cfg["std"], resize_mode=cfg.get("resize_mode"),
        interpolation=cfg.get("interpolation"), fill_color=cfg.get("fill_color", 0),
    )  # fmt: skip
    batch = torch.stack([preprocess(_pil(image)) for image in images]).to(device)
    with torch.inference_mode():
        embeddings = torch.nn.functional.normalize(model.encode_image(batch).float(), dim=-1)
    return embeddings.cpu().numpy().astype(np.float32)


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


def load_scene_features(record: SceneRecord, source: Mode = "fusion", *, fusion_output: str | None = None,
                        checkpoint: str | None = None, text: TextSpaceConfig | None = None,
                        device: str = "cpu") -> SceneFeatures:
    """Points plus per-point features of ``source`` (see the module docstring). ``ensemble``
    needs ``text`` (the label set whose prompts decide between 2D and 3D)."""
    if source not in MODES:
        raise ValueError(f"unknown feature source {source!r}; expected one of {', '.join(MODES)}")
    missing = [what for what, needed, given in (
        ("fusion_output", source in ("fusion", "ensemble"), fusion_output),
        ("a checkpoint", source in ("distill", "ensemble"), checkpoint),
        ("the text space config (its label set's prompts)", source == "ensemble", text),
    ) if needed and given is None]  # fmt: skip
    if missing:  # checked before any points, shards or network are loaded
        raise ValueError(f"source {source!r} needs {' and '.join(missing)}")
    xyz, rgb, labels = load_points(record.points_uri)
    n = len(xyz)
    f2d = has2d = f3d = None
    text_model = None
    if source in ("fusion", "ensemble"):
        from openscene_ray.kernel.features import read_features, shard_uri

        shard = read_features(shard_uri(fusion_output, record.scene_id))
        f2d, has2d = shard.dense(n)
        text_model = shard.metadata.get("text_model")
    if source in ("distill", "ensemble"):
        from openscene_ray.evaluation.scene_eval import distill_features
        from openscene_ray.models.checkpoint import load_checkpoint

        model, _, meta = load_checkpoint(checkpoint, device)
        f3d = distill_features(model, xyz, meta.voxel_size, rgb)
        if text_model is not None and text_model != meta.text_model:
            raise ValueError(f"the fusion shard ({text_model!r}) and the checkpoint ({meta.text_model!r}) were "
                             "made for different text models: their ensemble is meaningless")
        text_model = meta.text_model
    if source == "fusion":
        features, mask = f2d, has2d
    elif source == "distill":
        features, mask = f3d.cpu().numpy(), np.ones(n, bool)
    else:
        from openscene_ray.evaluation.predict import ensemble
        from openscene_ray.evaluation.scene_eval import build_text_space

        space = build_text_space(text.label_set, text.encoder, text.options)
        features, mask = ensemble(f2d, has2d, f3d, space.embeddings)[0].cpu().numpy(), np.ones(n, bool)
    return SceneFeatures(record.scene_id, xyz, rgb, labels, features, mask, source, text_model)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[:80] or "query"


def query_names(texts: Sequence[str], images: Sequence[str]) -> list[str]:
    """Display names: the texts, then ``image:<file name>`` per image."""
    return [*texts, *(f"image:{str(i).rstrip('/').rsplit('/', 1)[-1]}" for i in images)]


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


class QueryConfig(StrictModel):
    """One scene (``scene``: heatmaps) or a database (``database``: top-k search) per run."""

    texts: list[str] = Field(default_factory=list)
    images: list[str] = Field(default_factory=list, description="image URIs (CLIP image queries)")
    template: str | None = Field(None, description="text template, e.g. 'a {} in a scene'")
    text: TextSpaceConfig = Field(default_factory=TextSpaceConfig)
    output: str = Field(..., description="folder for query.json (and heatmaps)")
    device: str = "cpu"
    # one scene
    scene: str | None = None
    manifest: str | None = Field(None, description="scene manifest (points; xyz for database results)")
    source: Mode = "fusion"
    fusion_output: str | None = None
    checkpoint: str | None = None
    view: str = Field("top", description="rendering view: top, front, side, oblique")
    image_size: int = Field(800, ge=100)
    # database
    database: str | None = Field(None, description="folder of feature shards, or a fusion output root")
    search: SearchSettings = Field(default_factory=SearchSettings)
    ray_min_shards: int = Field(8, ge=1, description="scan with Ray Data from this many shards on")
    scan_cpus: float = Field(1.0, gt=0)
    data: DataContextConfig = Field(default_factory=DataContextConfig)
    address: str | None = None

    @model_validator(mode="after")
    def _one_target(self) -> QueryConfig:
        if not self.texts and not self.images:
            raise ValueError("give at least one text or image query")
        if (self.scene is None) == (self.database is None):
            raise ValueError("give exactly one of scene (heatmaps) and database (search)")
        if self.scene is not None and self.manifest is None:
            raise ValueError("a scene query needs the manifest")
        if self.images and self.text.encoder != "open_clip":
            raise ValueError("image queries need the open_clip encoder (its image tower)")
        return self


def embed_queries(config: QueryConfig) -> np.ndarray:
    """``[Q, C]``: the texts, then the images."""
    parts = []
    if config.texts:
        parts.append(embed_texts(config.texts, config.text.encoder, config.text.options, config.template))
    if config.images:
        parts.append(embed_images(config.images, config.text.options, config.device))
    return np.concatenate(parts).astype(np.float32)


def run_query(config: QueryConfig) -> dict[str, Any]:
    """Run a scene or database query, write ``<output>/query.json`` (and heatmaps), return it."""
    start = time.perf_counter()
    queries = embed_queries(config)
    names = query_names(config.texts, config.images)
    result: dict[str, Any] = {"queries": names, "warnings": []}
    if config.scene is not None:
        records = {r.scene_id: r for r in read_manifest(config.manifest)}
        if config.scene not in records:
            raise ValueError(f"scene {config.scene!r} is not in {config.manifest}")
        scene = load_scene_features(records[config.scene], config.source, fusion_output=config.fusion_output,
                                    checkpoint=config.checkpoint, text=config.text, device=config.device)  # fmt: skip
        warning = check_text_model(scene.text_model, config.text, f"the {config.source} features")
        result["warnings"] += [warning] if warning else []
        heatmaps = write_heatmaps(scene, scene.scores(queries), names, config.output, config.view, config.image_size)
        result.update(scene=config.scene, source=config.source, heatmaps=heatmaps)
    else:
        found = search_database(
            config.database, queries, names, config.search, manifest=config.manifest, text=config.text,
            ray_min_shards=config.ray_min_shards, scan_cpus=config.scan_cpus, data=config.data, address=config.address,
        )  # fmt: skip
        result.update(found)
    for warning in result["warnings"]:
        log.warning("%s", warning)
    result["seconds"] = round(time.perf_counter() - start, 3)
    storage.write_bytes(storage.join(config.output, "query.json"), json.dumps(result, indent=2).encode())
    return result
