"""The query stage's driver: embed the queries, then draw one scene's heatmaps or search every
scene of a fused output (a Ray Data job from ``ray_min_shards`` shards on: one shard per task,
only small per-scene results come back)."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from typing import Any

import numpy as np

from openscene_ray.kernel import storage
from openscene_ray.kernel.errors import InputError
from openscene_ray.kernel.manifest import read_manifest
from openscene_ray.kernel.text import check_text_model
from openscene_ray.query.config import QueryConfig, SearchSettings
from openscene_ray.query.database import ShardEntry, scan_shard, search_database
from openscene_ray.query.embed import embed_queries, query_names
from openscene_ray.query.scene import load_scene_features, write_heatmaps

__all__ = ["run_query", "scan_with_ray"]

log = logging.getLogger(__name__)


def _scan_batch(batch: dict[str, np.ndarray], queries: np.ndarray, settings: SearchSettings) -> dict[str, list]:
    """Ray Data task: scan the shards of one batch (one shard with batch_size=1)."""
    results = []
    for scene_id, uri, points_uri in zip(batch["scene_id"], batch["uri"], batch["points_uri"]):
        entry = ShardEntry(str(scene_id), str(uri), str(points_uri) if points_uri else None)
        results.append(json.dumps(scan_shard(entry, queries, settings)))
    return {"result": results}


def scan_with_ray(config: QueryConfig):
    """A ``scan`` for :func:`~openscene_ray.query.database.search_database`: one Ray Data task per shard."""

    def scan(entries: list[ShardEntry], queries: np.ndarray, settings: SearchSettings) -> list[dict[str, Any]]:
        import ray.data

        from openscene_ray.kernel.ray_runtime import configure_data_context, init_ray

        init_ray(config.address)
        configure_data_context(config.data)
        items = [asdict(e) | {"points_uri": e.points_uri or ""} for e in entries]
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        ds = ds.map_batches(_scan_batch, fn_kwargs={"queries": queries, "settings": settings}, batch_size=1,
                            batch_format="numpy", num_cpus=config.scan_cpus)  # fmt: skip
        return [json.loads(row["result"]) for row in ds.take_all()]

    return scan


def _search(config: QueryConfig, queries: np.ndarray, names: list[str]) -> dict[str, Any]:
    def scan(entries, queries, settings):
        if len(entries) >= config.ray_min_shards:
            return scan_with_ray(config)(entries, queries, settings)
        return [scan_shard(e, queries, settings) for e in entries]

    return search_database(config.fused, queries, names, config.search, manifest=config.manifest,
                           text=config.text, scan=scan)  # fmt: skip


def run_query(config: QueryConfig) -> dict[str, Any]:
    """Run a scene or database query, write ``<output>/query.json`` (and heatmaps), return it."""
    start = time.perf_counter()
    queries = embed_queries(config)
    names = query_names(config.texts, config.images)
    result: dict[str, Any] = {"queries": names, "warnings": []}
    if config.scene is not None:
        records = {r.scene_id: r for r in read_manifest(config.manifest)}
        if config.scene not in records:
            raise InputError(f"scene {config.scene!r} is not in {config.manifest}")
        scene = load_scene_features(records[config.scene], config.source, fused=config.fused,
                                    checkpoint=config.checkpoint, text=config.text, device=config.device)  # fmt: skip
        warning = check_text_model(scene.text_model, config.text, f"the {config.source} features")
        result["warnings"] += [warning] if warning else []
        heatmaps = write_heatmaps(scene, scene.scores(queries), names, config.output, config.view, config.image_size)
        result.update(scene=config.scene, source=config.source, heatmaps=heatmaps)
    else:
        result.update(_search(config, queries, names))
    for warning in result["warnings"]:
        log.warning("%s", warning)
    result["seconds"] = round(time.perf_counter() - start, 3)
    storage.write_bytes(storage.join(config.output, "query.json"), json.dumps(result, indent=2).encode())
    return result
