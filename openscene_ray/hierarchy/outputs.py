"""The hierarchy stage's output folder, written atomically scene by scene.

Layout under ``output``::

    segments/<scene_id>.parquet          per point: point_index int32, seen bool, level_00 .. level_49 uint8
                                         (segment id; max_segments = unassigned or unseen); file metadata
                                         (JSON): thresholds, scene_digest, max_segments
    views/<scene_id>/<frame_id>/<t>.png  per view and level (threshold t, e.g. 0.100): uint8 segment ids
    views/<scene_id>/<frame_id>/preview.png   colours of the preview level (black: unassigned)
    ply/<scene_id>.ply                   the points coloured by the preview level
    fields/<scene_id>.safetensors        the trained field (weights + position normalisation)
    scenes/<scene_id>.json               the scene's summary (metrics, training, timings): written last,
                                         so it marks the scene complete for reruns
    index/<run_id>.<scene_id>.parquet    one row per processed scene and run (also failed ones)
    runs/<run_id>.json                   the run's summary
"""

from __future__ import annotations

import hashlib
import io
import json
from typing import Any

import numpy as np
import pyarrow as pa
from PIL import Image

from openscene_ray.hierarchy.config import HierarchyConfig
from openscene_ray.hierarchy.scene import SceneResult
from openscene_ray.kernel import images, storage
from openscene_ray.kernel.manifest import SceneRecord, select_records
from openscene_ray.kernel.ply import write_ply
from openscene_ray.kernel.visual import label_colors

__all__ = [
    "INDEX_SCHEMA",
    "index_row",
    "mean_metrics",
    "plan_scenes",
    "read_summary",
    "scene_digest",
    "summary_uri",
    "write_index_row",
    "write_scene",
]

INDEX_SCHEMA = pa.schema([
    ("run_id", pa.string()), ("scene_id", pa.string()), ("status", pa.string()), ("error", pa.string()),
    ("n_points", pa.int64()), ("n_seen", pa.int64()), ("n_views", pa.int64()), ("n_views_trained", pa.int64()),
    ("view_errors", pa.string()), ("steps", pa.int64()), ("seconds", pa.float64()), ("metrics", pa.string()),
])  # fmt: skip


def summary_uri(output: str, scene_id: str) -> str:
    return storage.join(output, "scenes", f"{scene_id}.json")


def scene_digest(record: SceneRecord, config: HierarchyConfig) -> str:
    """Fingerprint of the scene's manifest row and every setting that changes its outputs."""
    settings = config.model_dump(mode="json", include={"field", "train", "segment", "metrics", "visibility_threshold"})
    settings["masks"] = config.masks_root
    if config.sam is not None:  # masks computed by SAM: its model and settings shape them
        settings["sam"] = config.sam.model_dump(mode="json", exclude={"resources", "overwrite"})
    settings["train"].pop("threads", None)
    text = json.dumps({"record": record.to_row(), "settings": settings}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def read_summary(output: str, scene_id: str) -> dict[str, Any] | None:
    try:
        return json.loads(storage.read_bytes(summary_uri(output, scene_id)))
    except (storage.StorageError, ValueError):
        return None


def index_row(record: SceneRecord, run_id: str, **values) -> dict[str, Any]:
    row = dict.fromkeys(INDEX_SCHEMA.names, 0)
    row.update(run_id=run_id, scene_id=record.scene_id, status="done", error="", n_points=record.num_points,
               n_views=len(record.views), view_errors="{}", metrics="{}", seconds=0.0)  # fmt: skip
    row.update(values)
    return row


def write_index_row(output: str, row: dict[str, Any]) -> None:
    table = pa.Table.from_pylist([{k: row[k] for k in INDEX_SCHEMA.names}], schema=INDEX_SCHEMA)
    storage.write_parquet(storage.join(output, "index", f"{row['run_id']}.{row['scene_id']}.parquet"), table)


def _segments_table(result: SceneResult, config: HierarchyConfig) -> pa.Table:
    n = result.scene.num_points
    seen = np.zeros(n, dtype=bool)
    seen[result.seen] = True
    columns: dict[str, Any] = {"point_index": np.arange(n, dtype=np.int32), "seen": seen}
    for level in range(len(result.levels)):
        labels = np.full(n, config.segment.max_segments, dtype=np.uint8)
        labels[result.seen] = result.levels[level]
        columns[f"level_{level:02d}"] = labels
    return pa.table(columns)


def _field_bytes(result: SceneResult, config: HierarchyConfig) -> bytes:
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous() for k, v in result.field.state_dict().items()}
    metadata = {
        "field": json.dumps(config.field.model_dump(mode="json")),
        "center": json.dumps(result.normaliser.center.tolist()),
        "scale": json.dumps(result.normaliser.scale),
    }
    return save(state, metadata=metadata)


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _write_views(output: str, result: SceneResult, config: HierarchyConfig) -> int:
    thresholds, segment = config.segment.thresholds, config.segment
    levels = segment.view_levels if segment.view_levels is not None else range(len(thresholds))
    count = 0
    for view, stack in zip(result.scene.views, result.stacks):
        folder = storage.join(output, "views", result.scene.scene_id, view.frame_id)
        for level in levels:
            storage.write_bytes(storage.join(folder, f"{thresholds[level]:.3f}.png"), images.encode_png(stack[level]))
            count += 1
        colours = label_colors(stack[segment.preview_level], segment.max_segments).reshape(*stack.shape[1:], 3)
        storage.write_bytes(storage.join(folder, "preview.png"), _png(colours))
    return count


def write_scene(output: str, record: SceneRecord, result: SceneResult, config: HierarchyConfig, run_id: str) -> dict:
    """Write every output of one scene, the summary last; returns the summary."""
    scene_id = result.scene.scene_id
    digest = scene_digest(record, config)
    table = _segments_table(result, config)
    metadata = {"thresholds": config.segment.thresholds, "scene_digest": digest,
                "max_segments": config.segment.max_segments}  # fmt: skip
    table = storage.with_json_metadata(table, metadata)
    storage.write_parquet(storage.join(output, "segments", f"{scene_id}.parquet"), table)
    n_view_files = _write_views(output, result, config)
    point_labels = np.full(result.scene.num_points, config.segment.max_segments, dtype=np.int64)
    point_labels[result.seen] = result.levels[config.segment.preview_level]
    write_ply(storage.join(output, "ply", f"{scene_id}.ply"), result.scene.xyz,
              label_colors(point_labels, config.segment.max_segments))  # fmt: skip
    if config.save_field:
        storage.write_bytes(storage.join(output, "fields", f"{scene_id}.safetensors"), _field_bytes(result, config))
    summary = {
        "scene_id": scene_id, "run_id": run_id, "status": "done", "scene_digest": digest,
        "n_points": result.scene.num_points, "n_seen": int(len(result.seen)), "n_views": len(result.scene.views),
        "view_files": n_view_files, "view_errors": result.view_errors, "transfer_max_distance": result.max_distance,
        "train": result.stats.summary(), "seconds": result.seconds, "metrics": result.metrics,
        "views_trained": result.views_trained, "device": str(next(result.field.parameters()).device),
    }  # fmt: skip
    storage.write_bytes(summary_uri(output, scene_id), json.dumps(summary, indent=2).encode())
    return summary


def plan_scenes(config: HierarchyConfig, records: list[SceneRecord]) -> tuple[list[SceneRecord], list[str]]:
    """``(scenes to process, scene ids already complete with this config)``."""
    records = select_records(records, config.scenes, config.manifest)
    todo, skipped = [], []
    for record in records:
        summary = None if config.overwrite else read_summary(config.output, record.scene_id)
        if summary and summary.get("scene_digest") == scene_digest(record, config):
            skipped.append(record.scene_id)
        else:
            todo.append(record)
    return todo, skipped


def mean_metrics(summaries: list[dict]) -> dict[str, dict[str, dict[str, float]]]:
    """Mean NC/VC per method and GT level over scene summaries (scenes without a value are left out)."""
    values: dict[tuple[str, str, str], list[float]] = {}
    for summary in summaries:
        for method, levels in (summary.get("metrics") or {}).items():
            for level, scores in levels.items():
                for name in ("nc", "vc"):
                    if scores.get(name) == scores.get(name):  # not NaN
                        values.setdefault((method, level, name), []).append(float(scores[name]))
    out: dict[str, dict[str, dict[str, float]]] = {}
    for (method, level, name), found in sorted(values.items()):
        out.setdefault(method, {}).setdefault(level, {})[name] = round(sum(found) / len(found), 4)
    return out
