"""The fusion stage's pure per-scene steps (no Ray): which scenes still need fusing, and fusing one
scene into its shard and its index row."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import numpy as np
import pyarrow as pa

from openscene_ray.fusion.config import ExtractorConfig, FuseConfig, FusionSettings
from openscene_ray.fusion.core import FusionParams, fuse_views
from openscene_ray.kernel import storage
from openscene_ray.kernel.features import (
    index_row_uri,
    read_metadata,
    shard_uri,
    write_features,
)
from openscene_ray.kernel.manifest import SceneRecord, select_records

__all__ = [
    "INDEX_COLUMNS",
    "INDEX_SCHEMA",
    "fuse_scene",
    "fusion_params",
    "index_row",
    "plan_scenes",
    "scene_digest",
    "shard_is_complete",
    "write_index_row",
]


INDEX_COLUMNS = (
    "run_id", "scene_id", "status", "error", "n_points", "n_seen", "n_views", "n_views_skipped",
    "bytes", "seconds",
)  # fmt: skip
INDEX_SCHEMA = pa.schema([
    ("run_id", pa.string()), ("scene_id", pa.string()), ("status", pa.string()), ("error", pa.string()),
    ("n_points", pa.int64()), ("n_seen", pa.int64()), ("n_views", pa.int64()), ("n_views_skipped", pa.int64()),
    ("bytes", pa.int64()), ("seconds", pa.float64()),
])  # fmt: skip


def index_row(record: SceneRecord, run_id: str, **values) -> dict[str, Any]:
    """The index row of one scene in one run (``status`` done unless ``values`` say otherwise)."""
    row = dict.fromkeys(INDEX_COLUMNS, 0)
    row.update(run_id=run_id, scene_id=record.scene_id, status="done", error="", n_points=record.num_points)
    row.update(values)
    return row


def write_index_row(fused: str, row: dict[str, Any]) -> None:
    """Write one scene's index row (its own small Parquet object, atomically) as the scene finishes,
    so a run that dies later keeps the rows of the scenes it finished."""
    table = pa.Table.from_pylist([row], schema=INDEX_SCHEMA)
    storage.write_parquet(index_row_uri(fused, row["run_id"], row["scene_id"]), table)


def scene_digest(record: SceneRecord) -> str:
    """A fingerprint of the scene's manifest row (points URI and count, views, poses, intrinsics,
    thresholds): a shard fused from another version of the row is not complete for this one."""
    return hashlib.sha256(json.dumps(record.to_row(), sort_keys=True).encode()).hexdigest()


def _output_affecting(params) -> dict[str, Any]:
    """The fusion parameters that change the fused features (batching does not)."""
    return {"cut_bound": params.cut_bound, "visibility_threshold": params.visibility_threshold,
            "depth_test": params.depth_test}  # fmt: skip


def fusion_params(record: SceneRecord, settings: FusionSettings) -> FusionParams:
    """The scene's fusion parameters: the manifest's thresholds unless ``settings`` override them."""
    return FusionParams(
        cut_bound=record.cut_bound if settings.cut_bound is None else settings.cut_bound,
        visibility_threshold=record.visibility_threshold
        if settings.visibility_threshold is None
        else settings.visibility_threshold,
        depth_test=settings.depth_test,
        views_per_batch=settings.views_per_batch,
    )


def fuse_scene(
    record: SceneRecord,
    xyz: np.ndarray,
    views,
    extractor,
    extractor_config: ExtractorConfig,
    settings: FusionSettings,
    fused: str,
    run_id: str,
) -> dict[str, Any]:
    """Fuse one scene's views onto its points and write its shard; returns its index row."""
    start = time.perf_counter()
    params = fusion_params(record, settings)
    result = fuse_views(xyz, views, extractor, params)
    point_index = np.flatnonzero(result.mask).astype(np.int32)
    metadata = {
        "extractor": extractor_config.model_dump(mode="json"),
        "feature_dim": int(extractor.feature_dim),
        "text_model": extractor.text_model,
        "fusion": _output_affecting(params) | {"views_per_batch": params.views_per_batch},
        "scene_digest": scene_digest(record),
        "n_points": int(xyz.shape[0]),
        "n_seen": int(point_index.size),
    }
    size = write_features(
        shard_uri(fused, record.scene_id),
        record.scene_id,
        point_index,
        result.features.numpy(),
        result.n_views[point_index],
        metadata,
        encoding=settings.encoding,
    )
    return index_row(
        record,
        run_id,
        n_points=int(xyz.shape[0]),
        n_seen=int(point_index.size),
        n_views=result.n_views_used,
        # views dropped by ingest, when loading (a non-finite pose in the manifest) and by fusion
        n_views_skipped=len(record.skipped_views) + len(record.views) - len(views) + result.n_views_no_points
        + result.n_views_invalid,
        bytes=size,
        seconds=time.perf_counter() - start,
    )


def shard_is_complete(
    record: SceneRecord, fused: str, extractor: ExtractorConfig, settings: FusionSettings
) -> bool:
    """True when the scene's shard exists and was written from this manifest row (same digest),
    with this extractor (name and options), the same output-affecting fusion parameters and the
    same shard encoding."""
    try:
        meta = read_metadata(shard_uri(fused, record.scene_id))
    except (storage.StorageError, ValueError):  # absent (ObjectNotFound) or unreadable: fuse it again
        return False
    written_fusion = meta.get("fusion") or {}
    return (
        meta.get("scene_id") == record.scene_id
        and meta.get("scene_digest") == scene_digest(record)
        and meta.get("extractor") == extractor.model_dump(mode="json")
        and all(written_fusion.get(k) == v for k, v in _output_affecting(fusion_params(record, settings)).items())
        and meta.get("encoding", "fp16") == settings.encoding
    )


def plan_scenes(config: FuseConfig, records: list[SceneRecord]) -> tuple[list[SceneRecord], list[str]]:
    """``(scenes to process, scene ids skipped as already complete)``."""
    records = select_records(records, config.scenes, config.manifest)
    if config.overwrite:
        return records, []
    todo, skipped = [], []
    for record in records:
        if shard_is_complete(record, config.fused, config.extractor, config.fusion):
            skipped.append(record.scene_id)
        else:
            todo.append(record)
    return todo, skipped
