"""The lift stage's pure per-scene steps (no Ray): where a scene's files go, whether they are
complete for this run, and lifting one scene.

Per scene, under the ``lifted`` folder: ``scenes/<id>.safetensors`` (the representation,
:mod:`openscene_ray.fit3d.representation`) and then ``scenes/<id>.json`` (its header plus the size
and time), each written atomically: the JSON exists only once the scene is complete, and a rerun
skips a scene whose JSON carries this run's fingerprint (the manifest row, the backbone, the
representation and its settings, the render scale, the held-out views and the seed).
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import numpy as np

from openscene_ray import __version__
from openscene_ray.fit3d.fitting import fit_gaussians, fuse_points, heldout_quality
from openscene_ray.fit3d.lift.config import LiftConfig
from openscene_ray.fit3d.representation import save_representation
from openscene_ray.fit3d.views import split_holdout, target_views
from openscene_ray.fusion.core import FusionParams
from openscene_ray.fusion.scene import scene_digest
from openscene_ray.kernel import storage
from openscene_ray.kernel.errors import InputError
from openscene_ray.kernel.manifest import SceneRecord, load_scene

__all__ = ["ROW_KEYS", "fingerprint", "lift_scene", "marker_uri", "read_marker", "scene_is_complete", "scene_uri"]

ROW_KEYS = ("scene_id", "status", "error", "kind", "count", "heldout_l1", "heldout_cosine", "heldout_coverage",
            "heldout_views", "bytes", "seconds")  # fmt: skip


def scene_uri(lifted: str, scene_id: str) -> str:
    return storage.join(lifted, "scenes", f"{scene_id}.safetensors")


def marker_uri(lifted: str, scene_id: str) -> str:
    return storage.join(lifted, "scenes", f"{scene_id}.json")


def _settings(config: LiftConfig) -> dict[str, Any]:
    chosen = config.gaussians if config.representation == "gaussians" else config.points
    return chosen.model_dump(mode="json")


def fingerprint(record: SceneRecord, config: LiftConfig) -> str:
    """What the scene's files depend on, hashed (see the module docstring)."""
    backbone = config.backbone.model_dump(mode="json", exclude={"model_cache"})
    parts = {"scene": scene_digest(record), "representation": config.representation, "backbone": backbone,
             "settings": _settings(config), "render_scale": config.render_scale,
             "holdout_every": config.holdout_every, "seed": config.seed}  # fmt: skip
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def read_marker(lifted: str, scene_id: str) -> dict[str, Any] | None:
    """The scene's JSON marker (None when absent or unreadable)."""
    try:
        return json.loads(storage.read_bytes(marker_uri(lifted, scene_id)))
    except (storage.StorageError, json.JSONDecodeError):
        return None


def scene_is_complete(lifted: str, record: SceneRecord, config: LiftConfig) -> bool:
    marker = read_marker(lifted, record.scene_id)
    return bool(marker) and marker.get("fingerprint") == fingerprint(record, config) and storage.exists(
        scene_uri(lifted, record.scene_id)
    )


def fusion_params(record: SceneRecord, config: LiftConfig) -> FusionParams:
    """The points' fusion parameters: the manifest's thresholds unless the config overrides them."""
    s = config.points
    return FusionParams(
        cut_bound=record.cut_bound if s.cut_bound is None else s.cut_bound,
        visibility_threshold=record.visibility_threshold if s.visibility_threshold is None else s.visibility_threshold,
        depth_test=s.depth_test,
        views_per_batch=s.views_per_batch,
    )


def _lift(record: SceneRecord, scene, backbone, config: LiftConfig, device):
    """``(representation, fit-loss history, held-out quality, fit frame ids, held-out frame ids)``."""
    views = target_views(scene.views, backbone, config.render_scale, config.feature_batch)
    fit, held = split_holdout(len(views), config.holdout_every)
    if config.representation == "gaussians":
        representation, history = fit_gaussians(scene.xyz, scene.rgb, [views[i] for i in fit], config.gaussians,
                                                config.seed, device)  # fmt: skip
    else:
        tokens = {v.frame_id: v.tokens for v in views}
        representation = fuse_points(scene.xyz, [scene.views[i] for i in fit], tokens,
                                     fusion_params(record, config), config.points)  # fmt: skip
        history = []
    quality = heldout_quality(representation, [views[i] for i in held])
    return representation, history, quality, [views[i].frame_id for i in fit], [views[i].frame_id for i in held]


def lift_scene(record: SceneRecord, backbone, config: LiftConfig, device="cpu") -> dict[str, Any]:
    """Lift one scene with ``backbone`` and write its files; returns its row (:data:`ROW_KEYS`)."""
    start = time.perf_counter()
    scene = load_scene(record, with_labels=False)
    if not scene.views:
        raise InputError(f"scene {record.scene_id!r}: no usable view to lift features from")
    representation, history, quality, fit, held = _lift(record, scene, backbone, config, device)
    count = representation.model.num if config.representation == "gaussians" else int(representation.xyz.shape[0])
    header = {
        "scene_id": record.scene_id, "fingerprint": fingerprint(record, config), "code_version": __version__,
        "backbone": config.backbone.model_dump(mode="json", exclude={"model_cache"}), "text_model": backbone.text_model,
        "settings": _settings(config), "render_scale": config.render_scale, "seed": config.seed,
        "fit_views": fit, "heldout_views": held, "metrics": quality, "count": count, "history": history,
    }  # fmt: skip
    size = save_representation(scene_uri(config.lifted, record.scene_id), representation, header)
    seconds = time.perf_counter() - start
    marker = header | {"kind": config.representation, "bytes": size, "seconds": round(seconds, 2)}
    storage.write_bytes(marker_uri(config.lifted, record.scene_id), json.dumps(marker, indent=2).encode())
    return {"scene_id": record.scene_id, "status": "done", "error": "", "kind": config.representation,
            "count": count, **{k: quality[k] for k in ROW_KEYS if k in quality}, "bytes": size,
            "seconds": seconds}  # fmt: skip


def failed_row(scene_id: str, error: str, kind: str) -> dict[str, Any]:
    """The row of a scene that could not be lifted."""
    nan = float(np.nan)
    return {"scene_id": scene_id, "status": "failed", "error": error, "kind": kind, "count": 0, "heldout_l1": nan,
            "heldout_cosine": nan, "heldout_coverage": nan, "heldout_views": 0, "bytes": 0, "seconds": 0.0}  # fmt: skip
