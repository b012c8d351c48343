"""The fused output and its per-scene feature shards: the one owner of their layout and format.

The fused output (``fused`` in every config and ``--fused`` on every command) is a folder::

    features/<scene_id>.parquet   one shard per scene (below)
    index/<run_id>.<scene_id>.parquet   the index row of each processed scene, written as it finishes
    runs/<run_id>.json            each run's summary

Shard schema:

Schema (plain Arrow types, readable by pyarrow, DuckDB and pandas):

| column | type | meaning |
|---|---|---|
| scene_id | string | the scene (constant within a file) |
| point_index | int32 | index of the point in the scene's points Parquet |
| feature | fixed_size_list<float16>[C] | mean 2D feature over the views that saw the point |
| feature_scale | float16 | only with the ``int8`` encoding: ``feature`` is int8 and the value is ``feature * feature_scale / 127`` |
| n_views | uint16 | number of views that saw the point |

Only seen points have rows. File-level metadata (:data:`METADATA_KEYS`) records the digest of
the scene's manifest row, the extractor, feature dim, text model, fusion parameters, point counts
and code version; a file is complete exactly when it exists (writes are atomic) and its metadata
matches the run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from openscene_ray import __version__
from openscene_ray.kernel import storage

__all__ = [
    "ENCODINGS",
    "FEATURE_CHUNK_ROWS",
    "FeatureShard",
    "METADATA_KEYS",
    "decode_features",
    "encode_int8",
    "feature_table",
    "features_dir",
    "index_dir",
    "index_row_uri",
    "list_shard_ids",
    "read_features",
    "run_summary_uri",
    "shard_uri",
    "write_features",
]

METADATA_KEYS = (
    "scene_id",
    "encoding",
    "scene_digest",
    "extractor",
    "feature_dim",
    "text_model",
    "fusion",
    "n_points",
    "n_seen",
    "code_version",
)
ENCODINGS = ("fp16", "int8")
INT8_LEVELS = 127
ROW_GROUP_ROWS = 1 << 20  # one row group for any realistic scene: a scene reads back in one go
FEATURE_CHUNK_ROWS = 65536  # rows of an fp16 feature table converted to float32 at a time when scoring


def features_dir(fused: str) -> str:
    """The folder of a fused output's shards."""
    return storage.join(fused, "features")


def index_dir(fused: str) -> str:
    """The folder of a fused output's index rows."""
    return storage.join(fused, "index")


def index_row_uri(fused: str, run_id: str, scene_id: str) -> str:
    """The index row of one scene in one run (written as the scene finishes)."""
    return storage.join(index_dir(fused), f"{run_id}.{scene_id}.parquet")


def run_summary_uri(fused: str, run_id: str) -> str:
    """The summary of one fusion run."""
    return storage.join(fused, "runs", f"{run_id}.json")


def shard_uri(fused: str, scene_id: str) -> str:
    """The shard of ``scene_id`` in a fused output."""
    return storage.join(features_dir(fused), f"{scene_id}.parquet")


def list_shard_ids(fused: str) -> set[str]:
    """The scene ids that have a shard in a fused output (an absent folder has none)."""
    try:
        names = storage.listdir(features_dir(fused))
    except storage.ObjectNotFound:
        return set()
    return {n.rstrip("/").rsplit("/", 1)[-1][: -len(".parquet")] for n in names if n.endswith(".parquet")}


def encode_int8(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(q int8 [M, C], scale float16 [M])`` with ``features ≈ q * scale / 127`` per row (the
    row's largest magnitude is the scale, so every row uses the full int8 range)."""
    features = np.asarray(features, np.float32)
    scale = np.abs(features).max(axis=1).astype(np.float16)
    safe = np.where(scale > 0, scale.astype(np.float32), 1.0)[:, None]
    q = np.clip(np.rint(features / safe * INT8_LEVELS), -INT8_LEVELS, INT8_LEVELS).astype(np.int8)
    return q, scale


def decode_features(feature: pa.Array, scale: pa.Array | None) -> np.ndarray:
    """float16 ``[M, C]`` from a shard's ``feature`` column (fp16, or int8 with its ``feature_scale``)."""
    column = feature.combine_chunks() if isinstance(feature, pa.ChunkedArray) else feature
    values = column.flatten().to_numpy(zero_copy_only=False).reshape(-1, column.type.list_size)
    if scale is None:
        return values.astype(np.float16, copy=False)
    scale = np.asarray(scale.to_numpy(zero_copy_only=False), np.float32)[:, None] / INT8_LEVELS
    return (values.astype(np.float32) * scale).astype(np.float16)


def feature_table(
    scene_id: str,
    point_index: np.ndarray,
    features: np.ndarray,
    n_views: np.ndarray | None,
    metadata: dict[str, object],
    extra_columns: dict[str, pa.Array] | None = None,
    encoding: str = "fp16",
) -> pa.Table:
    """The Arrow table of one scene's shard; ``metadata`` values are JSON-encoded. ``n_views`` is
    None for features that do not come from views (the 3D network's per-point features),
    ``extra_columns`` adds per-row columns (e.g. predictions), and ``encoding`` is one of
    :data:`ENCODINGS` (recorded in the metadata; readers decode transparently)."""
    m, c = features.shape
    columns = {
        "scene_id": pa.array([scene_id] * m, pa.string()),
        "point_index": pa.array(point_index.astype(np.int32), pa.int32()),
    }
    if encoding == "fp16":
        values = pa.array(np.ascontiguousarray(features, dtype=np.float16).reshape(-1), type=pa.float16())
        columns["feature"] = pa.FixedSizeListArray.from_arrays(values, c)
    elif encoding == "int8":
        q, scale = encode_int8(features)
        columns["feature"] = pa.FixedSizeListArray.from_arrays(pa.array(q.reshape(-1), type=pa.int8()), c)
        columns["feature_scale"] = pa.array(scale, pa.float16())
    else:
        raise ValueError(f"unknown shard encoding {encoding!r}; expected one of {ENCODINGS}")
    metadata = dict(metadata, encoding=encoding)
    if n_views is not None:
        columns["n_views"] = pa.array(n_views.astype(np.uint16), pa.uint16())
    table = pa.table(columns | dict(extra_columns or {}))
    return storage.with_json_metadata(table, metadata)


def write_features(
    uri: str,
    scene_id: str,
    point_index: np.ndarray,
    features: np.ndarray,
    n_views: np.ndarray | None,
    metadata: dict[str, object],
    extra_columns: dict[str, pa.Array] | None = None,
    encoding: str = "fp16",
) -> int:
    """Write one scene's shard atomically; returns its size in bytes."""
    meta = {"scene_id": scene_id, "code_version": __version__, **metadata}
    table = feature_table(scene_id, point_index, features, n_views, meta, extra_columns, encoding)
    return storage.write_parquet(uri, table, row_group_size=ROW_GROUP_ROWS)


@dataclass
class FeatureShard:
    scene_id: str
    point_index: np.ndarray  # int32 [M]
    features: np.ndarray  # float16 [M, C]
    n_views: np.ndarray  # uint16 [M]
    metadata: dict[str, object]

    def dense(self, num_points: int) -> tuple[np.ndarray, np.ndarray]:
        """``(features [N, C] float16 with zeros for unseen points, mask bool [N])``.

        Raises ValueError when the shard was fused for another number of points (a stale shard,
        or a manifest re-ingested since fusion).
        """
        fused_for = self.metadata.get("n_points")
        if fused_for is not None and fused_for != num_points:
            raise ValueError(
                f"{self.scene_id}: the feature shard was fused for {fused_for} points, the scene has "
                f"{num_points}; re-run fusion for this manifest"
            )
        out = np.zeros((num_points, self.features.shape[1]), np.float16)
        out[self.point_index] = self.features
        mask = np.zeros(num_points, bool)
        mask[self.point_index] = True
        return out, mask


def read_metadata(uri: str) -> dict[str, object]:
    """The shard's metadata without reading its data (footer only)."""
    return storage.json_metadata(storage.read_parquet_metadata(uri), METADATA_KEYS)


def read_features(uri: str) -> FeatureShard:
    """A whole shard, decoded (fp16 features whatever the encoding)."""
    table = storage.read_parquet(uri)
    metadata = storage.json_metadata(table.schema.metadata or {}, METADATA_KEYS)
    scale = table.column("feature_scale") if "feature_scale" in table.column_names else None
    features = decode_features(table.column("feature"), scale)
    return FeatureShard(
        scene_id=str(metadata.get("scene_id", "")),
        point_index=table.column("point_index").to_numpy().astype(np.int32),
        features=features,
        n_views=table.column("n_views").to_numpy().astype(np.uint16) if "n_views" in table.column_names
        else np.ones(table.num_rows, np.uint16),
        metadata=metadata,
    )
