"""The distributed fusion job: manifest → load scenes (CPU tasks) → extract + fuse (actor pool) →
per-scene feature shards (written by the actors) + a small index (``write_parquet``).

Plan::

    read_parquet(manifest) → filter(todo) → repartition(1 scene/block)
      → map(load_scene_row, num_cpus)                      # fetch + decode views, bounded by one scene
      → map_batches(FuseActor, ActorPoolStrategy(min,max), num_gpus, batch_size=1)
            └─ writes <out>/features/<scene_id>.parquet atomically; returns one small index row
      → write_parquet(<out>/index/)

Feature maps and per-point feature matrices never enter Ray blocks. Scene outputs have
deterministic names and atomic writes, so reruns resume (complete shards are skipped) and
retried tasks never duplicate anything. A bad scene becomes an index row with its error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import Field

from openscene_ray.kernel import storage
from openscene_ray.kernel.config import StrictModel
from openscene_ray.kernel.features import read_metadata, shard_uri, write_features
from openscene_ray.kernel.manifest import (
    SceneRecord,
    load_points,
    load_view,
    read_manifest,
)
from openscene_ray.kernel.ray_runtime import (
    DataContextConfig,
    ResourcesConfig,
    actor_pool_options,
    configure_data_context,
    init_ray,
    scene_blocks,
)
from openscene_ray.kernel.scene import Scene, SceneError

__all__ = [
    "ExtractorConfig",
    "FuseConfig",
    "FuseSummary",
    "FusionSettings",
    "INDEX_COLUMNS",
    "fuse_scene",
    "load_scene_for_fusion",
    "plan_scenes",
    "run_fuse",
]

log = logging.getLogger(__name__)


class ExtractorConfig(StrictModel):
    """Which 2D model to run: a registered name (``openseg``, ``clip-dense``, ``label-oracle``,
    ``rgb``) or a plugin ``package.module:factory``, with its keyword options."""

    name: str = "label-oracle"
    options: dict[str, Any] = Field(default_factory=dict)


class FusionSettings(StrictModel):
    views_per_batch: int = Field(8, ge=1, description="views whose feature maps are held at once")
    depth_test: bool = True
    cut_bound: int | None = Field(None, ge=0, description="override the manifest's cut bound")
    visibility_threshold: float | None = Field(None, gt=0, description="override the manifest's threshold")


class FuseConfig(StrictModel):
    manifest: str = Field(..., description="scene manifest URI written by ingest")
    output: str = Field(..., description="output root URI (features/ and index/ go below it)")
    extractor: ExtractorConfig = Field(default_factory=ExtractorConfig)
    fusion: FusionSettings = Field(default_factory=FusionSettings)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    data: DataContextConfig = Field(default_factory=DataContextConfig)
    scenes: list[str] | None = Field(None, description="only these scene ids (default: all)")
    overwrite: bool = False
    address: str | None = Field(None, description="Ray address; default RAY_ADDRESS or a local Ray")


INDEX_COLUMNS = (
    "run_id", "scene_id", "status", "error", "n_points", "n_seen", "n_views", "n_views_skipped",
    "bytes", "seconds",
)  # fmt: skip


def _index_row(record: SceneRecord, run_id: str, **values) -> dict[str, Any]:
    row = dict.fromkeys(INDEX_COLUMNS, 0)
    row.update(run_id=run_id, scene_id=record.scene_id, status="done", error="", n_points=record.num_points)
    row.update(values)
    return row


# ---------------------------------------------------------------- pure per-scene steps


def load_scene_for_fusion(record: SceneRecord) -> Scene:
    """Read and validate a scene's points and decoded views (label maps where the layout has them)."""
    try:
        xyz, rgb, labels = load_points(record.points_uri)
    except storage.StorageError as exc:
        raise SceneError(record.scene_id, "points", f"cannot read file: {exc.reason}", record.points_uri) from None
    views = [load_view(record, view) for view in record.views]
    return Scene.create(record.scene_id, xyz, rgb, labels, views, source=record.points_uri)


def scene_digest(record: SceneRecord) -> str:
    """A fingerprint of the scene's manifest row (points URI and count, views, poses, intrinsics,
    thresholds): a shard fused from another version of the row is not complete for this one."""
    return hashlib.sha256(json.dumps(record.to_row(), sort_keys=True).encode()).hexdigest()


def _output_affecting(params) -> dict[str, Any]:
    """The fusion parameters that change the fused features (batching does not)."""
    return {"cut_bound": params.cut_bound, "visibility_threshold": params.visibility_threshold,
            "depth_test": params.depth_test}  # fmt: skip


def fusion_params(record: SceneRecord, settings: FusionSettings):
    from openscene_ray.fusion.core import FusionParams

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
    output: str,
    run_id: str,
) -> dict[str, Any]:
    """Fuse one scene's views onto its points and write its shard; returns its index row."""
    from openscene_ray.fusion.core import fuse_views

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
        shard_uri(output, record.scene_id),
        record.scene_id,
        point_index,
        result.features.numpy(),
        result.n_views[point_index],
        metadata,
    )
    return _index_row(
        record,
        run_id,
        n_points=int(xyz.shape[0]),
        n_seen=int(point_index.size),
        n_views=result.n_views_used,
        n_views_skipped=result.n_views_no_points + result.n_views_invalid + len(record.skipped_views),
        bytes=size,
        seconds=time.perf_counter() - start,
    )


def shard_is_complete(
    record: SceneRecord, output: str, extractor: ExtractorConfig, settings: FusionSettings
) -> bool:
    """True when the scene's shard exists and was written from this manifest row (same digest),
    with this extractor (name and options) and the same output-affecting fusion parameters."""
    try:
        meta = read_metadata(shard_uri(output, record.scene_id))
    except (storage.StorageError, ValueError):  # absent (ObjectNotFound) or unreadable: fuse it again
        return False
    written_fusion = meta.get("fusion") or {}
    return (
        meta.get("scene_id") == record.scene_id
        and meta.get("scene_digest") == scene_digest(record)
        and meta.get("extractor") == extractor.model_dump(mode="json")
        and all(written_fusion.get(k) == v for k, v in _output_affecting(fusion_params(record, settings)).items())
    )


def plan_scenes(config: FuseConfig, records: list[SceneRecord]) -> tuple[list[SceneRecord], list[str]]:
    """``(scenes to process, scene ids skipped as already complete)``."""
    if config.scenes is not None:
        wanted = set(config.scenes)
        unknown = wanted - {r.scene_id for r in records}
        if unknown:
            raise ValueError(f"scenes not in the manifest {config.manifest}: {sorted(unknown)}")
        records = [r for r in records if r.scene_id in wanted]
    if config.overwrite:
        return records, []
    todo, skipped = [], []
    for record in records:
        if shard_is_complete(record, config.output, config.extractor, config.fusion):
            skipped.append(record.scene_id)
        else:
            todo.append(record)
    return todo, skipped


# ---------------------------------------------------------------- Ray stages


def load_scene_row(row: dict[str, Any], run_id: str) -> dict[str, Any]:
    """CPU stage: one manifest row → the packed, validated scene (or an error)."""
    from openscene_ray.fusion.payload import pack_scene

    record = SceneRecord.from_row(row)
    start = time.perf_counter()
    try:
        payload = pack_scene(load_scene_for_fusion(record))
        error = ""
    except Exception as exc:  # noqa: BLE001 - a bad scene is data, never a failed job
        payload, error = b"", _describe(exc)
    return {
        "record": json.dumps(record.to_row()),
        "payload": payload,
        "error": error,
        "load_seconds": time.perf_counter() - start,
        "run_id": run_id,
    }


def _describe(exc: Exception) -> str:
    text = str(exc) if isinstance(exc, (SceneError, storage.StorageError)) else f"{type(exc).__name__}: {exc}"
    return text[:2000]


class FuseActor:
    """Loads the 2D extractor once, then extracts and fuses one scene per call."""

    def __init__(self, extractor: ExtractorConfig, settings: FusionSettings, output: str, use_gpu: bool):
        import torch

        from openscene_ray.extractors import build_extractor

        options = dict(extractor.options)
        options.setdefault("device", "cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        self.extractor = build_extractor(extractor.name, **options)
        self.extractor_config = extractor
        self.settings = settings
        self.output = output

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        from openscene_ray.fusion.payload import unpack_scene

        rows = []
        for record_json, payload, error, load_seconds, run_id in zip(
            batch["record"], batch["payload"], batch["error"], batch["load_seconds"], batch["run_id"]
        ):
            record = SceneRecord.from_row(json.loads(record_json))
            if error:
                rows.append(_index_row(record, run_id, status="failed", error=error, seconds=float(load_seconds)))
                continue
            try:
                xyz, views = unpack_scene(record.scene_id, payload)
                row = fuse_scene(
                    record, xyz, views, self.extractor, self.extractor_config, self.settings, self.output, run_id
                )
                row["seconds"] += float(load_seconds)
            except Exception as exc:  # noqa: BLE001 - recorded as the scene's error row
                row = _index_row(record, run_id, status="failed", error=_describe(exc))
            rows.append(row)
        return {key: [r[key] for r in rows] for key in INDEX_COLUMNS}


@dataclass
class FuseSummary:
    run_id: str
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    points: int = 0

    @property
    def ok(self) -> bool:
        return not self.failed

    def as_dict(self) -> dict[str, Any]:
        minutes = self.seconds / 60 if self.seconds else 0.0
        return {
            "run_id": self.run_id,
            "done": len(self.done),
            "skipped": len(self.skipped),
            "failed": len(self.failed),
            "failures": self.failed,
            "seconds": round(self.seconds, 2),
            "scenes_per_minute": round(len(self.done) / minutes, 2) if minutes else 0.0,
            "points_per_second": round(self.points / self.seconds, 1) if self.seconds else 0.0,
        }


def build_dataset(config: FuseConfig, todo: list[SceneRecord], run_id: str):
    """The lazy Ray Data plan for ``todo`` (see the module docstring)."""
    import ray.data

    res = config.resources
    ds = scene_blocks(config.manifest, [r.scene_id for r in todo]).map(
        load_scene_row,
        fn_kwargs={"run_id": run_id},
        num_cpus=res.loader_cpus,
        compute=ray.data.TaskPoolStrategy(size=res.loader_concurrency) if res.loader_concurrency else None,
    )
    return ds.map_batches(
        FuseActor,
        fn_constructor_kwargs={
            "extractor": config.extractor,
            "settings": config.fusion,
            "output": config.output,
            "use_gpu": res.gpus_per_actor > 0,
        },
        batch_size=1,
        batch_format="numpy",
        **actor_pool_options(res),
    )


def run_fuse(config: FuseConfig) -> FuseSummary:
    """Run the fusion job (connecting to or starting Ray) and return its summary."""
    start = time.perf_counter()
    run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    summary = FuseSummary(run_id=run_id)
    todo, summary.skipped = plan_scenes(config, read_manifest(config.manifest))
    log.info("fuse %s: %d scene(s) to process, %d already complete", run_id, len(todo), len(summary.skipped))
    if todo:
        init_ray(config.address)
        configure_data_context(config.data)
        index = build_dataset(config, todo, run_id).materialize()
        fs, index_path = storage.to_pyarrow_filesystem(storage.join(config.output, "index"))
        index.write_parquet(index_path, filesystem=fs)
        for row in index.take_all():
            if row["status"] == "done":
                summary.done.append(row["scene_id"])
                summary.points += int(row["n_points"])
            else:
                summary.failed[row["scene_id"]] = row["error"]
    summary.seconds = time.perf_counter() - start
    storage.write_bytes(
        storage.join(config.output, "runs", f"{run_id}.json"), json.dumps(summary.as_dict(), indent=2).encode()
    )
    return summary
