"""The lifted output (``openscene-ray lift``): superpoints and pseudo-labels per point, and the
point–superpixel pairs TMP trains on. A folder, like the fused output::

    labels/<scene_id>.parquet   one row per point of the scene's points file, in its order:
                                superpoint int32 (-1: no superpixel hit the point),
                                vocab int16 (the phrase, -1 none), label int16 (the label set's
                                class through the dictionary; 255 = none or ignored)
    pairs/<scene_id>.parquet    every (view, point, superpixel) projection of the scene (all views,
                                not only the last writer): view int16, point int32, superpixel int16
    index/<run>.<scene>.parquet, runs/<run>.json   per-run rows and summary

File-level metadata (JSON values): ``scene_id``, ``n_points``, ``dictionary``, ``label_set``,
``segments``, ``fingerprint``, the agreement with the ground truth (``stats``) and, in pairs,
``frames`` (view index → frame id). Writes are atomic; a shard is complete when it exists with
this run's fingerprint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from openscene_ray.kernel import storage
from openscene_ray.kernel.errors import InputError

__all__ = [
    "LiftedLabels",
    "labels_uri",
    "pairs_uri",
    "read_labels",
    "read_labels_metadata",
    "read_pairs",
    "write_labels",
    "write_pairs",
]


def labels_uri(lifted: str, scene_id: str) -> str:
    """``<lifted>/labels/<scene_id>.parquet``: one scene's per-point lifted labels."""
    return storage.join(lifted, "labels", f"{scene_id}.parquet")


def pairs_uri(lifted: str, scene_id: str) -> str:
    """``<lifted>/pairs/<scene_id>.parquet``: one scene's (view, point, superpixel) pairs."""
    return storage.join(lifted, "pairs", f"{scene_id}.parquet")


@dataclass
class LiftedLabels:
    """One scene's lifted labels per point and the shard's metadata."""

    superpoint: np.ndarray  # int32 [N]
    vocab: np.ndarray  # int16 [N]
    label: np.ndarray  # int16 [N], 255 = none
    metadata: dict[str, Any]


def write_labels(uri: str, superpoint: np.ndarray, vocab: np.ndarray, label: np.ndarray, metadata: dict) -> int:
    """Write one scene's lifted labels (metadata as JSON in the Parquet footer); returns the bytes written."""
    table = pa.table({
        "superpoint": pa.array(np.asarray(superpoint, np.int32)),
        "vocab": pa.array(np.asarray(vocab, np.int16)),
        "label": pa.array(np.asarray(label, np.int16)),
    })  # fmt: skip
    return storage.write_parquet(uri, storage.with_json_metadata(table, metadata))


def read_labels(uri: str, num_points: int | None = None) -> LiftedLabels:
    """One scene's lifted labels; errors name the file (absent, wrong columns, wrong length)."""
    try:
        table = storage.read_parquet(uri)
    except storage.ObjectNotFound:
        raise InputError(f"{uri}: no lifted labels for this scene (run openscene-ray lift first)") from None
    missing = [c for c in ("superpoint", "vocab", "label") if c not in table.column_names]
    if missing:
        raise InputError(f"{uri}: not a lifted-labels file (missing columns {missing})")
    if num_points is not None and table.num_rows != num_points:
        raise InputError(f"{uri}: {table.num_rows} rows but the scene has {num_points} points (a stale lift: rerun it)")
    columns = {c: table.column(c).to_numpy() for c in ("superpoint", "vocab", "label")}
    return LiftedLabels(columns["superpoint"].astype(np.int32), columns["vocab"].astype(np.int16),
                        columns["label"].astype(np.int16), storage.json_metadata(table.schema.metadata or {}))  # fmt: skip


def read_labels_metadata(uri: str) -> dict[str, Any]:
    """The labels shard's metadata (footer only)."""
    return storage.json_metadata(storage.read_parquet_metadata(uri))


def write_pairs(uri: str, view: np.ndarray, point: np.ndarray, superpixel: np.ndarray, metadata: dict) -> int:
    """Write one scene's point-superpixel pairs (metadata as JSON in the footer); returns the bytes written."""
    table = pa.table({
        "view": pa.array(np.asarray(view, np.int16)),
        "point": pa.array(np.asarray(point, np.int32)),
        "superpixel": pa.array(np.asarray(superpixel, np.int16)),
    })  # fmt: skip
    return storage.write_parquet(uri, storage.with_json_metadata(table, metadata))


def read_pairs(uri: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """``(view int64, point int64, superpixel int64, metadata)`` of one scene's pairs."""
    try:
        table = storage.read_parquet(uri)
    except storage.ObjectNotFound:
        raise InputError(f"{uri}: no point-superpixel pairs for this scene (run openscene-ray lift first)") from None
    if any(c not in table.column_names for c in ("view", "point", "superpixel")):
        raise InputError(f"{uri}: not a pairs file (columns view, point, superpixel)")
    cols = [table.column(c).to_numpy().astype(np.int64) for c in ("view", "point", "superpixel")]
    return cols[0], cols[1], cols[2], storage.json_metadata(table.schema.metadata or {})
