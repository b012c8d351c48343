"""The distributed fusion job: manifest → load scenes (CPU tasks) → extract + fuse (actor pool) →
per-scene feature shards and index rows (written by the actors as scenes finish).

Plan::

    the driver's manifest rows to fuse (Arrow columns, one scene per block)
      → map(load_scene_row, num_cpus)                      # fetch + decode views, bounded by one scene
      → map_batches(FuseActor, ActorPoolStrategy(min,max), num_gpus, batch_size=1)
            └─ writes <fused>/features/<scene_id>.parquet, then <fused>/index/<run>.<scene>.parquet,
               each atomically, as the scene finishes; returns the small index row
      → the driver streams the rows (summary; rows an actor could not write are written here)

Feature maps and per-point feature matrices never enter Ray blocks. Scene outputs have
deterministic names and atomic writes, so reruns resume (complete shards are skipped) and
retried tasks never duplicate anything. A bad scene becomes an index row with its error.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from openscene_ray.fusion.config import ExtractorConfig, FuseConfig, FusionSettings
from openscene_ray.fusion.scene import (
    INDEX_COLUMNS,
    fuse_scene,
    index_row,
    plan_scenes,
    write_index_row,
)
from openscene_ray.kernel import storage
from openscene_ray.kernel.errors import describe_error, scene_error
from openscene_ray.kernel.features import run_summary_uri
from openscene_ray.kernel.manifest import SceneRecord, load_scene, read_manifest
from openscene_ray.kernel.ray_runtime import (
    actor_pool_options,
    configure_data_context,
    init_ray,
    scene_blocks,
)
from openscene_ray.kernel.run_summary import SceneRunSummary

__all__ = ["FuseActor", "FuseSummary", "build_dataset", "load_scene_row", "run_fuse"]

log = logging.getLogger(__name__)


def load_scene_row(row: dict[str, Any], run_id: str) -> dict[str, Any]:
    """CPU stage: one manifest row → the packed, validated scene (or an error)."""
    from openscene_ray.fusion.payload import pack_scene

    record = SceneRecord.from_row(row)
    start = time.perf_counter()
    try:
        payload = pack_scene(load_scene(record))
        error = ""
    except Exception as exc:  # noqa: BLE001 - a bad scene is data, never a failed job
        payload, error = b"", scene_error(record.scene_id, exc)
    return {
        **record.to_row(),
        "payload": payload,
        "error": error,
        "load_seconds": time.perf_counter() - start,
        "run_id": run_id,
    }


class FuseActor:
    """Loads the 2D extractor once, then extracts and fuses one scene per call."""

    def __init__(self, extractor: ExtractorConfig, settings: FusionSettings, fused: str, use_gpu: bool):
        import torch

        from openscene_ray.extractors import build_extractor

        options = dict(extractor.options)
        options.setdefault("device", "cuda" if use_gpu and torch.cuda.is_available() else "cpu")
        self.extractor = build_extractor(extractor.name, **options)
        self.extractor_config = extractor
        self.settings = settings
        self.fused = fused

    def __call__(self, batch) -> dict[str, list]:
        from openscene_ray.fusion.payload import unpack_scene

        rows = []
        for loaded in batch.to_pylist():  # Arrow rows: the manifest columns plus the loaded scene
            record = SceneRecord.from_row(loaded)
            payload, error, load_seconds, run_id = (loaded[k] for k in ("payload", "error", "load_seconds", "run_id"))
            if error:
                rows.append(index_row(record, run_id, status="failed", error=error, seconds=float(load_seconds)))
                continue
            try:
                xyz, views = unpack_scene(record.scene_id, payload)
                row = fuse_scene(
                    record, xyz, views, self.extractor, self.extractor_config, self.settings, self.fused, run_id
                )
                row["seconds"] += float(load_seconds)
            except Exception as exc:  # noqa: BLE001 - recorded as the scene's error row
                row = index_row(record, run_id, status="failed", error=scene_error(record.scene_id, exc))
            rows.append(row)
        return {key: [r[key] for r in rows] for key in INDEX_COLUMNS} | {"index_error": [self._index(r) for r in rows]}

    def _index(self, row: dict[str, Any]) -> str:
        """Write the scene's index row now; the error text when that fails (the driver retries it)."""
        try:
            write_index_row(self.fused, row)
        except Exception as exc:  # noqa: BLE001 - the driver writes the rows that could not be written here
            return describe_error(exc)
        return ""


@dataclass
class FuseSummary(SceneRunSummary):
    """What one fusion run did (written as ``runs/<run_id>.json`` in the fused output)."""

    points: int = 0

    def as_dict(self) -> dict[str, Any]:
        minutes = self.seconds / 60 if self.seconds else 0.0
        return {
            **self.scene_counts(),
            "seconds": round(self.seconds, 2),
            "scenes_per_minute": round(len(self.done) / minutes, 2) if minutes else 0.0,
            "points_per_second": round(self.points / self.seconds, 1) if self.seconds else 0.0,
        }


def build_dataset(config: FuseConfig, todo: list[SceneRecord], run_id: str):
    """The lazy Ray Data plan for ``todo`` (see the module docstring)."""
    import ray.data

    res = config.resources
    ds = scene_blocks(todo).map(
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
            "fused": config.fused,
            "use_gpu": res.gpus_per_actor > 0,
        },
        batch_size=1,
        batch_format="pyarrow",
        **actor_pool_options(res),
    )


def run_fuse(config: FuseConfig) -> FuseSummary:
    """Run the fusion job (connecting to or starting Ray) and return its summary.

    The manifest is read once, here; the rows to fuse travel to the workers as Arrow columns."""
    start = time.perf_counter()
    summary = FuseSummary()
    run_id = summary.run_id
    todo, summary.skipped = plan_scenes(config, read_manifest(config.manifest))
    log.info("fuse %s: %d scene(s) to process, %d already complete", run_id, len(todo), len(summary.skipped))
    if todo:
        init_ray(config.address)
        configure_data_context(config.data)
        unwritten = []
        for row in build_dataset(config, todo, run_id).iter_rows():  # rows stream in as scenes finish
            row = dict(row)
            if row.pop("index_error"):
                unwritten.append(row)
            if row["status"] == "done":
                summary.done.append(row["scene_id"])
                summary.points += int(row["n_points"])
            else:
                summary.failed[row["scene_id"]] = row["error"]
        for row in unwritten:  # the actor could not write it (a storage outage): one more try, here
            write_index_row(config.fused, row)
    summary.seconds = time.perf_counter() - start
    storage.write_bytes(run_summary_uri(config.fused, run_id), json.dumps(summary.as_dict(), indent=2).encode())
    return summary
