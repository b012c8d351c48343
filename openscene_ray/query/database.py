"""Search a database of per-point feature shards for text or image queries ("rare object search").

A database is a folder of ``<scene_id>.parquet`` shards with ``point_index`` and a fixed-size-list
``feature`` column: the fusion job's ``features/`` (a fusion output root is accepted too) or the
evaluation job's ``point_features/``. Each shard is scanned with pyarrow batch by batch (row
groups, ``batch_rows`` rows at a time), so memory holds one batch of features plus the per-point
scores ``[N, Q]`` of one scene; the feature matrices are never collected anywhere. From
``ray_min_shards`` shards on, the shards are scanned by Ray Data tasks (one shard per task) and
the driver merges the small per-scene results.

Per query and scene:

* **scene score**: the mean of the scene's ``scene_points`` best point scores (robust to a single
  stray point, still sensitive to small objects); the maximum is reported too;
* **points**: the ``top_points`` best points (scene, point index, score, and xyz with a manifest);
* **regions** (need the manifest for point positions): the points scoring at least the scene's
  ``region.quantile`` quantile (or the absolute ``region.threshold``) are put on a grid of
  ``region.voxel`` metres; occupied cells that touch (26-neighbourhood) form one region. A region
  with at least ``region.min_points`` points is reported with its mean score, size, centroid and
  bounding box; regions are ranked by mean score.
"""

from __future__ import annotations

import json
import logging
import posixpath
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from openscene_ray.kernel import storage
from openscene_ray.kernel.errors import InputError, describe_error
from openscene_ray.kernel.features import (
    FEATURE_CHUNK_ROWS,
    decode_features,
    features_dir,
)
from openscene_ray.kernel.manifest import read_manifest
from openscene_ray.kernel.text import check_text_model
from openscene_ray.query.config import RegionSettings, SearchSettings

__all__ = ["ShardEntry", "cosine_scores", "list_shards", "scan_shard", "search_database", "voxel_components"]

log = logging.getLogger(__name__)


def cosine_scores(features: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """float32 ``[M, Q]`` cosines of features (any float dtype, e.g. fp16) to unit query embeddings;
    a zero feature scores 0. Works in row chunks, so fp16 tables are never copied whole. Each row's
    score is bit-identical whatever the batching (einsum's loops; BLAS picks other kernels for
    other matrix shapes), so rankings do not depend on ``batch_rows`` or on Ray."""
    features = np.asarray(features)
    queries = np.asarray(queries, np.float32)
    if features.ndim != 2 or queries.ndim != 2 or features.shape[1] != queries.shape[1]:
        raise ValueError(f"features [M,C] and queries [Q,C] disagree: {features.shape} vs {queries.shape}")
    out = np.empty((features.shape[0], queries.shape[0]), np.float32)
    for start in range(0, features.shape[0], FEATURE_CHUNK_ROWS):
        chunk = features[start : start + FEATURE_CHUNK_ROWS].astype(np.float32)
        norm = np.maximum(np.linalg.norm(chunk, axis=1, keepdims=True), 1e-6)
        out[start : start + FEATURE_CHUNK_ROWS] = np.einsum("ij,kj->ik", chunk / norm, queries)
    return out


@dataclass(frozen=True)
class ShardEntry:
    scene_id: str
    uri: str
    points_uri: str | None = None


def list_shards(database: str, manifest: str | None = None) -> list[ShardEntry]:
    """The shards of ``database`` (a folder of shards, or a fusion output root with ``features/``),
    with each scene's points URI when a manifest is given."""
    uris = storage.glob(storage.join(database, "*.parquet")) or storage.glob(
        storage.join(features_dir(database), "*.parquet")
    )
    if not uris:
        raise InputError(f"no feature shards (*.parquet) in {database} or {features_dir(database)}")
    points = {}
    if manifest is not None:
        points = {r.scene_id: r.points_uri for r in read_manifest(manifest)}
    entries = []
    for uri in uris:
        scene_id = posixpath.basename(uri.replace("\\", "/"))[: -len(".parquet")]
        entries.append(ShardEntry(scene_id, uri, points.get(scene_id)))
    return entries


def voxel_components(cells: np.ndarray) -> np.ndarray:
    """Connected-component id per row of ``cells`` (int [V,3] grid cells, duplicates allowed),
    26-neighbourhood; ids are 0..n-1 in order of first appearance."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    cells = np.asarray(cells, np.int64)
    cells = cells - cells.min(axis=0) + 1  # a margin of one cell: neighbour keys never wrap
    dims = cells.max(axis=0) + 2
    keys = (cells[:, 0] * dims[1] + cells[:, 1]) * dims[2] + cells[:, 2]
    unique, inverse = np.unique(keys, return_inverse=True)
    src, dst = [], []
    for dx, dy, dz in np.ndindex(3, 3, 3):
        shifted = unique + ((dx - 1) * dims[1] + dy - 1) * dims[2] + dz - 1
        pos = np.minimum(np.searchsorted(unique, shifted), len(unique) - 1)
        hit = unique[pos] == shifted
        src.append(np.flatnonzero(hit))
        dst.append(pos[hit])
    src, dst = np.concatenate(src), np.concatenate(dst)
    graph = coo_matrix((np.ones(len(src), np.int8), (src, dst)), shape=(len(unique), len(unique)))
    _, label = connected_components(graph, directed=False)
    _, first, ids = np.unique(label[inverse.reshape(-1)], return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))  # renumber by first appearance
    return order[ids.reshape(-1)]


def _regions(xyz: np.ndarray, point_index: np.ndarray, scores: np.ndarray, settings: RegionSettings,
             limit: int) -> list[dict[str, Any]]:
    if limit == 0 or scores.size == 0:
        return []
    threshold = settings.threshold if settings.threshold is not None else float(np.quantile(scores, settings.quantile))
    high = np.flatnonzero(scores >= threshold)
    if high.size < settings.min_points:
        return []
    pos = xyz[point_index[high]].astype(np.float64)
    comp = voxel_components(np.floor(pos / settings.voxel).astype(np.int64))
    order = np.argsort(comp, kind="stable")
    regions = []
    for members in np.split(order, np.flatnonzero(np.diff(comp[order])) + 1):
        if members.size < settings.min_points:
            continue
        s, p = scores[high[members]], pos[members]
        best = high[members][int(np.argmax(s))]
        regions.append({
            "score": float(s.mean()), "max": float(s.max()), "n_points": int(members.size),
            "best_point": int(point_index[best]), "centroid": p.mean(axis=0).round(4).tolist(),
            "bbox_min": p.min(axis=0).round(4).tolist(), "bbox_max": p.max(axis=0).round(4).tolist(),
        })  # fmt: skip
    regions.sort(key=lambda r: (-r["score"], r["best_point"]))
    return regions[:limit]


def scan_shard(entry: ShardEntry, queries: np.ndarray, settings: SearchSettings) -> dict[str, Any]:
    """One scene's per-query results (JSON-able); a failure is returned as ``error``."""
    result: dict[str, Any] = {"scene_id": entry.scene_id, "uri": entry.uri, "n_points": 0, "text_model": None,
                              "queries": [], "error": ""}  # fmt: skip
    try:
        fs, path = storage.filesystem(entry.uri)
        index_parts, score_parts = [], []
        with fs.open(path, "rb") as f:
            shard = pq.ParquetFile(f)
            meta = shard.schema_arrow.metadata or {}
            if b"text_model" in meta:
                result["text_model"] = json.loads(meta[b"text_model"])
            columns = ["point_index", "feature"] + (["feature_scale"] if "feature_scale" in shard.schema_arrow.names else [])
            for batch in shard.iter_batches(batch_size=settings.batch_rows, columns=columns):
                scale = batch.column("feature_scale") if "feature_scale" in batch.schema.names else None
                score_parts.append(cosine_scores(decode_features(batch.column("feature"), scale), queries))
                index_parts.append(batch.column("point_index").to_numpy().astype(np.int64))
        point_index = np.concatenate(index_parts) if index_parts else np.zeros(0, np.int64)
        scores = np.concatenate(score_parts) if score_parts else np.zeros((0, len(queries)), np.float32)
        xyz = None
        if entry.points_uri is not None:
            table = storage.read_parquet(entry.points_uri, columns=["x", "y", "z"])
            xyz = np.stack([table.column(c).to_numpy() for c in ("x", "y", "z")], axis=1)
        result["n_points"] = int(len(point_index))
        for q in range(len(queries)):
            result["queries"].append(_scene_result(entry.scene_id, point_index, scores[:, q], xyz, settings))
    except Exception as exc:  # noqa: BLE001 - one bad shard is reported, the search goes on
        result["error"] = f"{entry.scene_id}: {describe_error(exc)}"
    return result


def _scene_result(scene_id: str, point_index: np.ndarray, scores: np.ndarray, xyz: np.ndarray | None,
                  settings: SearchSettings) -> dict[str, Any]:
    if scores.size == 0:
        return {"score": None, "max": None, "points": [], "regions": []}
    top = np.lexsort((point_index, -scores))[: settings.top_points]  # ties: lower point index first
    points = []
    for i in top:
        point = {"scene_id": scene_id, "point_index": int(point_index[i]), "score": float(scores[i])}
        if xyz is not None:
            point["xyz"] = xyz[point_index[i]].round(4).tolist()
        points.append(point)
    m = min(settings.scene_points, scores.size)
    best = np.partition(scores, scores.size - m)[scores.size - m :]
    regions = []
    if xyz is not None:
        regions = [{"scene_id": scene_id, **r} for r in _regions(xyz, point_index, scores, settings.region,
                                                                  settings.top_regions)]  # fmt: skip
    return {"score": float(best.mean()), "max": float(scores.max()), "points": points, "regions": regions}


def search_database(database: str, queries: np.ndarray, names: list[str], settings: SearchSettings | None = None, *,
                    manifest: str | None = None, text=None, scan=None) -> dict[str, Any]:
    """Top scenes, regions and points per query over every shard of ``database``.

    ``queries`` are unit embeddings ``[Q, C]`` named by ``names``; ``text`` (a
    :class:`~openscene_ray.kernel.text.TextSpaceConfig`) enables the text-model check; ``scan``
    replaces the in-process scan of the shards (``scan(entries, queries, settings)``, e.g. a
    Ray Data job). Returns ``{"results": [per query], "scanned", "failed", "warnings"}``.
    """
    settings = settings or SearchSettings()
    queries = np.asarray(queries, np.float32)
    if len(names) != len(queries):
        raise ValueError(f"{len(names)} names for {len(queries)} queries")
    entries = list_shards(database, manifest)
    scanned = scan(entries, queries, settings) if scan else [scan_shard(e, queries, settings) for e in entries]
    scanned.sort(key=lambda r: r["scene_id"])
    failed = {r["scene_id"]: r["error"] for r in scanned if r["error"]}
    good = [r for r in scanned if not r["error"]]
    warnings = []
    if text is not None:
        for model in sorted({r["text_model"] for r in good if r["text_model"]}):
            warning = check_text_model(model, text, f"shards of {database}")
            warnings += [warning] if warning else []
    results = []
    for q, name in enumerate(names):
        per_scene = [(r["scene_id"], r["queries"][q]) for r in good if r["queries"][q]["score"] is not None]
        per_scene.sort(key=lambda s: (-s[1]["score"], s[0]))
        points = sorted((p for _, s in per_scene for p in s["points"]),
                        key=lambda p: (-p["score"], p["scene_id"], p["point_index"]))
        regions = sorted((g for _, s in per_scene for g in s["regions"]),
                         key=lambda g: (-g["score"], g["scene_id"], g["best_point"]))  # fmt: skip
        results.append({
            "query": name,
            "scenes": [{"scene_id": sid, "score": s["score"], "max": s["max"]}
                       for sid, s in per_scene[: settings.top_scenes]],
            "points": points[: settings.top_points],
            "regions": regions[: settings.top_regions],
        })  # fmt: skip
    return {"database": database, "scanned": len(scanned), "results": results, "failed": failed, "warnings": warnings}
