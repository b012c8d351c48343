"""The lift stage's pure per-scene step (no Ray): read a scene's points, cameras and superpixels,
lift, score against the ground truth, write its labels and pairs shards."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from openscene_ray.kernel import images, storage
from openscene_ray.kernel.manifest import SceneRecord, ViewRecord, load_points
from openscene_ray.kernel.scene import SceneError
from openscene_ray.ssov.dictionary import Dictionary
from openscene_ray.ssov.lift.config import LiftSettings
from openscene_ray.ssov.lift.core import (
    LiftFrame,
    agreement,
    lift_frames,
    order_frames,
    scale_intrinsics,
)
from openscene_ray.ssov.lifted import (
    labels_uri,
    pairs_uri,
    read_labels_metadata,
    write_labels,
    write_pairs,
)
from openscene_ray.ssov.store import SegmentsError, read_frame, read_scene_marker

__all__ = ["fingerprint", "lift_scene", "shard_is_complete"]


def fingerprint(marker: dict, dictionary: Dictionary, settings: LiftSettings, segments: str) -> dict[str, Any]:
    """What makes a scene's lifted labels: its superpixels, the dictionary and the settings."""
    return {"segments": segments, "superpixels": marker.get("fingerprint"), "dictionary": dictionary.name,
            "phrases": len(dictionary.phrases), "settings": settings.model_dump(mode="json")}  # fmt: skip


def shard_is_complete(lifted: str, scene_id: str, expected: dict[str, Any]) -> bool:
    """True when the scene's labels shard exists and was written with the ``expected`` fingerprint."""
    try:
        return read_labels_metadata(labels_uri(lifted, scene_id)).get("fingerprint") == expected
    except (storage.StorageError, ValueError):
        return False


def _depth(record: SceneRecord, view: ViewRecord, width: int, height: int) -> np.ndarray | None:
    if view.depth_uri is None or record.depth_scale is None:
        return None
    try:
        depth = images.decode_depth(storage.read_bytes(view.depth_uri), record.depth_scale, view.depth_uri)
    except (storage.StorageError, images.ImageDecodeError) as exc:
        raise SceneError(record.scene_id, f"view {view.frame_id}.depth", str(exc), view.depth_uri) from None
    return images.resize_nearest(depth, width, height)


def load_frames(record: SceneRecord, segments: str, vocabulary_size: int, with_depth: bool) -> list[LiftFrame]:
    """Every view's superpixels, with its camera scaled to the superpixel map's size."""
    marker = read_scene_marker(segments, record.scene_id)
    if marker is None:
        raise SegmentsError(f"{segments}: scene {record.scene_id!r} is not segmented (run openscene-ray segment)")
    frames = []
    for view in record.views:
        sp = read_frame(segments, record.scene_id, view.frame_id, vocabulary_size, with_embeddings=False)
        height, width = sp.ids.shape
        k = scale_intrinsics(view.intrinsics_matrix, (record.image_width, record.image_height), (width, height))
        depth = _depth(record, view, width, height) if with_depth else None
        frames.append(LiftFrame(view.frame_id, sp.ids, sp.categories, k, view.pose_matrix, depth))
    return frames


def lift_scene(
    record: SceneRecord, segments: str, lifted: str, dictionary: Dictionary, settings: LiftSettings,
    expected_fingerprint: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    """Lift one scene and write its shards; returns its index row (with the agreement stats)."""
    start = time.perf_counter()
    xyz, _, gt = load_points(record.points_uri)
    if xyz.shape[0] != record.num_points:
        raise SceneError(record.scene_id, "points", f"{xyz.shape[0]} points, the manifest says {record.num_points}",
                         record.points_uri)  # fmt: skip
    frames = load_frames(record, segments, dictionary.size, settings.depth_test)
    ordered = [frames[i] for i in order_frames([f.frame_id for f in frames], settings.camera_order)]
    cut = record.cut_bound if settings.cut_bound is None else settings.cut_bound
    result = lift_frames(xyz, ordered, dictionary.phrase_class, settings, cut, record.visibility_threshold)
    stats = agreement(result.superpoint, result.label, gt)
    meta = {"scene_id": record.scene_id, "n_points": int(xyz.shape[0]), "dictionary": dictionary.name,
            "label_set": dictionary.label_set, "segments": segments, "fingerprint": expected_fingerprint,
            "stats": stats}  # fmt: skip
    size = write_pairs(pairs_uri(lifted, record.scene_id), result.pair_view, result.pair_point,
                       result.pair_superpixel, dict(meta, frames=result.frame_ids))  # fmt: skip
    size += write_labels(labels_uri(lifted, record.scene_id), result.superpoint, result.vocab, result.label, meta)
    return {"scene_id": record.scene_id, "status": "done", "error": "", "bytes": size,
            "seconds": time.perf_counter() - start, "pairs": int(result.pair_point.size), **stats}  # fmt: skip
