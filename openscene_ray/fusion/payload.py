"""Pack a decoded scene (points + views) into one binary value for a Ray block, and back.

The loading stage decodes a scene's images once and hands the fusion actors a single
``np.savez`` blob (no pickling: arrays only, read back with ``allow_pickle=False``).
"""

from __future__ import annotations

import io

import numpy as np

from openscene_ray.kernel.scene import Scene, View

__all__ = ["pack_scene", "unpack_scene"]


def pack_scene(scene: Scene) -> bytes:
    """Serialise ``scene``'s points and views (all views must share one image size)."""
    views = scene.views
    arrays: dict[str, np.ndarray] = {
        "xyz": scene.xyz,
        "frame_ids": np.array([v.frame_id for v in views], dtype=np.str_),
        "intrinsics": np.stack([v.intrinsics for v in views]) if views else np.zeros((0, 3, 3)),
        "poses": np.stack([v.cam_to_world for v in views]) if views else np.zeros((0, 4, 4)),
    }
    if views:
        arrays["colors"] = np.stack([v.color for v in views])
        if all(v.depth is not None for v in views):
            arrays["depths"] = np.stack([v.depth for v in views])
        if all(v.label is not None for v in views):
            arrays["labels"] = np.stack([v.label for v in views])
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def unpack_scene(scene_id: str, data: bytes) -> tuple[np.ndarray, list[View]]:
    """``(xyz, views)`` from :func:`pack_scene` bytes (views already validated when packed)."""
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        xyz = npz["xyz"]
        frame_ids = [str(f) for f in npz["frame_ids"]]
        colors = npz["colors"] if "colors" in npz else None
        depths = npz["depths"] if "depths" in npz else None
        labels = npz["labels"] if "labels" in npz else None
        views = [
            View(
                frame_id=frame_id,
                color=colors[i],
                depth=None if depths is None else depths[i],
                intrinsics=npz["intrinsics"][i],
                cam_to_world=npz["poses"][i],
                label=None if labels is None else labels[i],
            )
            for i, frame_id in enumerate(frame_ids)
        ]
    return xyz, views
