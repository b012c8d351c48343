"""Point arrays of a scene: read from point cloud files, converted from the reference's colour and
label conventions, and validated.

Every layout hands its points through :func:`validated_points`: xyz float32 [N,3], rgb uint8
[N,3] and labels int16 [N] with 255 = ignore; empty or non-finite clouds are errors.
"""

from __future__ import annotations

import pickle

import numpy as np

from openscene_ray.datasets.files import read_scene_file
from openscene_ray.datasets.layouts import Points
from openscene_ray.kernel import manifest, safe_load, storage
from openscene_ray.kernel.ply import PlyError, read_ply_points
from openscene_ray.kernel.scene import IGNORE_LABEL, Scene, SceneError

__all__ = ["colors_to_rgb", "labels_to_int16", "load_points_file", "load_pth_points", "validated_points"]


def colors_to_rgb(colors, n: int, scene_id: str, source: str) -> np.ndarray:
    """Reference colours to uint8 RGB: floats in [-1,1] (rgb/127.5-1), uint8, or a scalar (0)."""
    if colors is None or np.ndim(colors) == 0:
        return np.zeros((n, 3), np.uint8)  # nuScenes stores the scalar 0: colour unknown
    colors = np.asarray(colors)
    if colors.shape != (n, 3):
        raise SceneError(scene_id, "colors", f"expected shape [{n},3], got {list(colors.shape)}", source)
    if colors.dtype == np.uint8:
        return colors.copy()
    if np.issubdtype(colors.dtype, np.integer):
        if colors.min(initial=0) < 0 or colors.max(initial=0) > 255:
            raise SceneError(scene_id, "colors", "integer colours outside 0..255", source)
        return colors.astype(np.uint8)
    if not np.issubdtype(colors.dtype, np.floating) or not np.all(np.isfinite(colors)):
        raise SceneError(scene_id, "colors", f"expected finite floats in [-1,1], got dtype {colors.dtype}", source)
    if colors.min(initial=0) < -1.0 - 1e-3 or colors.max(initial=0) > 1.0 + 1e-3:
        raise SceneError(
            scene_id, "colors", f"float colours outside [-1,1] (range {colors.min():.3g}..{colors.max():.3g})", source
        )
    return np.clip(np.rint((colors.astype(np.float64) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def labels_to_int16(labels, n: int, scene_id: str, source: str) -> np.ndarray:
    """Reference labels to int16 with 255 = ignore (255 and -100 both mean ignore)."""
    if labels is None or np.ndim(labels) == 0:
        return np.full(n, IGNORE_LABEL, np.int16)
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.shape != (n,):
        raise SceneError(scene_id, "labels", f"expected shape [{n}], got {list(labels.shape)}", source)
    values = labels.astype(np.float64)
    ignore = (values == IGNORE_LABEL) | (values == -100)
    valid = values[~ignore]
    bad = ~np.isfinite(valid) | (valid != np.round(valid)) | (valid < 0) | (valid >= IGNORE_LABEL)
    if bad.any():
        example = valid[bad][0]
        raise SceneError(
            scene_id,
            "labels",
            f"{int(bad.sum())} labels are not integers in 0..254 (e.g. {example}); 255 and -100 mean ignore",
            source,
        )
    out = np.full(n, IGNORE_LABEL, np.int16)
    out[~ignore] = valid.astype(np.int16)
    return out


def validated_points(scene_id: str, xyz, colors, labels, source: str) -> Points:
    """Convert and validate reference point arrays (empty or non-finite clouds are errors)."""
    xyz = np.asarray(xyz)
    if xyz.ndim != 2 or xyz.shape[1] != 3 or not np.issubdtype(xyz.dtype, np.number):
        raise SceneError(scene_id, "xyz", f"expected a numeric [N,3] array, got shape {list(xyz.shape)}", source)
    xyz = np.ascontiguousarray(xyz, dtype=np.float32)
    n = xyz.shape[0]
    rgb = colors_to_rgb(colors, n, scene_id, source)
    out_labels = labels_to_int16(labels, n, scene_id, source)
    Scene.create(scene_id, xyz, rgb, out_labels, source=source)  # raises on empty / non-finite
    return xyz, rgb, out_labels


def load_pth_points(uri: str, scene_id: str) -> Points:
    """``(xyz, rgb, labels)`` from a reference ``.pth`` tuple, unpickled with the safe loader."""
    data = read_scene_file(scene_id, "points", uri)
    try:
        obj = safe_load.loads(data, uri)
    except pickle.UnpicklingError as exc:
        raise SceneError(scene_id, "points", str(exc).removeprefix(f"{uri}: "), uri) from None
    if not isinstance(obj, (tuple, list)) or not 1 <= len(obj) <= 3:
        raise SceneError(scene_id, "points", f"expected a tuple (coords, colors, labels), got {type(obj).__name__}", uri)
    coords, colors, labels = (*obj, None, None)[:3]
    return validated_points(scene_id, coords, colors, labels, uri)


def load_points_file(uri: str, scene_id: str) -> Points:
    """``(xyz, rgb, labels)`` from a point cloud file: a reference ``.pth``, a points ``.parquet``
    (as ingest writes them) or a PLY (ASCII or binary; colours and labels optional)."""
    if uri.endswith(".pth"):
        return load_pth_points(uri, scene_id)
    if uri.endswith(".parquet"):
        try:
            xyz, rgb, labels = manifest.load_points(uri)
        except storage.StorageError as exc:
            raise SceneError(scene_id, "points", f"cannot read file: {exc.reason}", uri) from None
        return validated_points(scene_id, xyz, rgb, labels, uri)
    try:
        cloud = read_ply_points(read_scene_file(scene_id, "points", uri), uri)
    except PlyError as exc:
        raise SceneError(scene_id, "points", exc.reason, uri) from None
    return validated_points(scene_id, cloud.xyz, cloud.rgb, cloud.labels, uri)
